//! `top`: the top dropped sources, source prefixes, destination ports and reasons, with each
//! reason's rate and a sparkline of its history, redrawn in place every interval until `q`,
//! Esc, Ctrl-C or SIGTERM; or, with `--json`, N snapshots one per line. It reads the samples
//! (as one more reader: it takes the operator's sampling setting and never raises it) and the
//! counters; it changes neither the policy nor the setting. The numbers are
//! `observe::top`'s; this module only reads, prints and draws.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use filter_common::sample::{SampleRecord, DROP_REASONS, RING_BYTES};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use ratatui::{DefaultTerminal, Frame};
use tokio::signal::unix::{signal, SignalKind};

use crate::error::usage;
use crate::observe::collect::collect;
use crate::observe::samples::{self, Reader};
use crate::observe::top::{self, Sample, Sampling, Snapshot, Top, TOP_ROWS};
use crate::outln;
use crate::state::pins::{Access, Locked};
use crate::state::PinDir;

/// CLOCK_MONOTONIC in ns: the clock of the records' times.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sampling(pins: &PinDir) -> Result<Sampling> {
    let s = samples::status(pins)?;
    Ok(Sampling {
        every: s.effective_every,
        cap_per_second: s.cap_per_second,
    })
}

pub fn top(pins: &PinDir, interval: f64, json: bool, count: Option<u64>) -> Result<()> {
    if !json && !std::io::stdout().is_terminal() {
        return Err(usage(
            "top draws on a terminal and standard output is not one: use --json (with --count N) for snapshots as JSON",
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let period = Duration::from_secs_f64(interval);
    rt.block_on(async {
        // Signals first: a SIGTERM while the screen is taken must end through the restore.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        // A closed terminal (ssh gone) ends top as q does.
        let mut hup = signal(SignalKind::hangup())?;
        // The first counter reading before the claim: every sample top gets belongs to a
        // drop counted after it.
        let first = collect(pins)?.ok_or_else(|| pins.not_loaded())?;
        let first_at = monotonic_ns();
        let locked = Locked::loaded(pins, Access::Read)?;
        // Drops only, at the operator's setting: top never raises sampling.
        let mut reader = Reader::claim(pins, DROP_REASONS, false)?;
        drop(locked);
        let result = async {
            let fd = reader.readable()?;
            let mut top = Top::default();
            top.reading(first_at, top::totals(&first.counters));
            let mut now = sampling(pins)?;
            let (mut screen, mut keys) = if json {
                (None, None)
            } else {
                let (screen, keys) = Screen::open()?;
                (Some(screen), Some(keys))
            };
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            let mut renew = tokio::time::interval(Duration::from_secs(1));
            renew.tick().await;
            let mut shown = 0u64;
            let mut snapshot = top.snapshot(now, TOP_ROWS);
            if let Some(s) = &mut screen {
                s.draw(&snapshot)?;
            }
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                drain(&mut reader, &mut top);
                let key = async {
                    match &mut keys {
                        Some(k) => k.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ready = fd.readable() => ready?.clear_ready(),
                    _ = renew.tick() => reader.renew()?,
                    _ = ticker.tick() => {
                        // What is already in the ring belongs to this snapshot.
                        drain(&mut reader, &mut top);
                        now = sampling(pins)?;
                        let obs = collect(pins)?.ok_or_else(|| pins.not_loaded())?;
                        top.reading(monotonic_ns(), top::totals(&obs.counters));
                        snapshot = top.snapshot(now, TOP_ROWS);
                        shown += 1;
                        match &mut screen {
                            Some(s) => s.draw(&snapshot)?,
                            None => outln!("{}", serde_json::to_string(&snapshot)?)?,
                        }
                        if json && shown >= count.unwrap_or(1) {
                            break;
                        }
                    }
                    key = key => match key {
                        Some(Key::Quit) | None => break,
                        Some(Key::Redraw) => {
                            if let Some(s) = &mut screen {
                                s.draw(&snapshot)?;
                            }
                        }
                    },
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => break,
                }
            }
            drop(screen);
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let released = reader.release();
        result?;
        released.context("cannot end this reader's sampling")
    })
}

/// Add what the ring holds to `top`, each sample weighing the 1 in N it was taken at (the
/// program writes it in the record: a capture raising sampling meanwhile changes no weight).
fn drain(reader: &mut Reader, top: &mut Top) {
    // At most one ring's worth: a flood refilling it as fast as it is read never keeps top
    // from its keys, signals and redraws.
    let most = RING_BYTES as usize / std::mem::size_of::<SampleRecord>();
    for _ in 0..most {
        let Some(item) = reader.ring().next() else {
            break;
        };
        let rec = SampleRecord::from_bytes(&item);
        drop(item);
        if let Some(s) = rec.and_then(|r| Sample::from_record(&r, u64::from(r.every))) {
            top.add(s);
        }
    }
}

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    Redraw,
}

/// Whether a terminal event ends `top`: q, Esc, Ctrl-C (raw mode delivers it as a key).
fn key_of(ev: &Event) -> Option<Key> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Some(Key::Quit),
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
            _ => None,
        },
        Event::Resize(..) => Some(Key::Redraw),
        _ => None,
    }
}

/// The terminal, taken (raw mode, alternate screen) for as long as this lives; dropping it
/// gives the terminal back, on an error as on a normal end (a panic restores it through the
/// hook ratatui installs).
struct Screen {
    terminal: Option<DefaultTerminal>,
    stop: Arc<AtomicBool>,
    events: Option<std::thread::JoinHandle<()>>,
}

impl Screen {
    /// The screen, and the keys pressed on it.
    fn open() -> Result<(Screen, tokio::sync::mpsc::UnboundedReceiver<Key>)> {
        let terminal = match ratatui::try_init() {
            Ok(t) => t,
            Err(e) => {
                // try_init may have turned raw mode on before it failed: give it back.
                let _ = ratatui::try_restore();
                return Err(anyhow::Error::new(e).context("cannot take the terminal"));
            }
        };
        let (tx, keys) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // crossterm reads keys with blocking calls: a thread of its own, polling so that it
        // notices the end.
        let events = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                let Ok(ev) = event::read() else { break };
                if let Some(k) = key_of(&ev) {
                    if tx.send(k).is_err() {
                        break;
                    }
                }
            }
        });
        let screen = Screen {
            terminal: Some(terminal),
            stop,
            events: Some(events),
        };
        Ok((screen, keys))
    }

    fn draw(&mut self, s: &Snapshot) -> Result<()> {
        if let Some(t) = &mut self.terminal {
            t.draw(|f| render(f, s)).context("cannot draw")?;
        }
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(events) = self.events.take() {
            let _ = events.join();
        }
        // The terminal shows its cursor again as it is dropped; then raw mode and the
        // alternate screen end.
        drop(self.terminal.take());
        let _ = ratatui::try_restore();
        let _ = std::io::stdout().flush();
    }
}

/// Packets per second, short: 950, 12.3k, 4.5M.
fn rate(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// One frame of `top`.
pub fn render(f: &mut Frame, s: &Snapshot) {
    let reasons = s.reasons.len() as u16;
    let [head, by_reason, tables] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(reasons + 3),
        Constraint::Min(4),
    ])
    .areas(f.area());
    let sampling = match s.sampling.every {
        0 => "sampling off (no samples: set it with `floodgate sampling --every N`)".to_string(),
        n => format!(
            "sampled 1 in {n} drops (at most {}/s); est. = samples x {n}, an estimate",
            s.sampling.cap_per_second
        ),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(vec![
                "floodgate top".bold(),
                format!(
                    "  last {} s: {} samples, est. {} drops   q quits",
                    s.window_seconds, s.samples, s.estimated_packets
                )
                .into(),
            ]),
            Line::from(sampling).dim(),
        ]),
        head,
    );
    render_reasons(f, by_reason, s);
    let [sources, prefixes, ports] = Layout::horizontal([
        Constraint::Percentage(36),
        Constraint::Percentage(36),
        Constraint::Percentage(28),
    ])
    .areas(tables);
    let table = |title: &'static str, head: &'static str, area: Rect, rows: Vec<[String; 3]>| {
        // The numbers whole, in columns as wide as their longest; the key gets the rest, and
        // what does not fit of it is cut with a visible `~` (never a shorter, plausible value).
        let width = |i: usize, min: &str| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([min.len()])
                .max()
                .unwrap_or(0)
        };
        let (nw, ew) = (width(1, "SAMPLES"), width(2, "EST. PKTS"));
        let kw = usize::from(area.width.saturating_sub(2)).saturating_sub(nw + ew + 2);
        let row = |k: &str, n: &str, e: &str| {
            Row::new([elide(k, kw), format!("{n:>nw$}"), format!("{e:>ew$}")])
        };
        let header =
            row(head, "SAMPLES", "EST. PKTS").style(Style::new().add_modifier(Modifier::BOLD));
        let rows: Vec<Row> = rows.iter().map(|[k, n, e]| row(k, n, e)).collect();
        let widths = [
            Constraint::Length(kw as u16),
            Constraint::Length(nw as u16),
            Constraint::Length(ew as u16),
        ];
        Table::new(rows, widths)
            .column_spacing(1)
            .header(header)
            .block(Block::bordered().title(title))
    };
    f.render_widget(
        table(
            " top sources ",
            "SOURCE",
            sources,
            s.sources
                .iter()
                .map(|r| {
                    [
                        r.source.clone(),
                        r.samples.to_string(),
                        r.estimated_packets.to_string(),
                    ]
                })
                .collect(),
        ),
        sources,
    );
    f.render_widget(
        table(
            " top prefixes ",
            "PREFIX",
            prefixes,
            s.prefixes
                .iter()
                .map(|r| {
                    [
                        r.prefix.clone(),
                        r.samples.to_string(),
                        r.estimated_packets.to_string(),
                    ]
                })
                .collect(),
        ),
        prefixes,
    );
    f.render_widget(
        table(
            " top destination ports ",
            "PORT",
            ports,
            s.ports
                .iter()
                .map(|r| {
                    [
                        format!("{}/{}", r.port, r.protocol),
                        r.samples.to_string(),
                        r.estimated_packets.to_string(),
                    ]
                })
                .collect(),
        ),
        ports,
    );
}

/// Columns of a reason's numbers (the sparkline follows), and of the short form a narrow
/// terminal gets (rate, samples, estimate), so that the sparkline keeps room.
const REASON_TEXT: u16 = 76;
const REASON_TEXT_SHORT: u16 = 50;
/// Below this width the short form.
const WIDE: u16 = REASON_TEXT + 24;

/// `s` in at most `width` characters: whole, or cut with a `~` at the end.
fn elide(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('~');
    }
    out
}

/// The reasons: exact rates from the counters, samples and estimates, and a sparkline of
/// each reason's rate history.
fn render_reasons(f: &mut Frame, area: Rect, s: &Snapshot) {
    let block = Block::bordered().title(format!(
        " drops by reason: counted rate (per {:.1} s), last {} s ",
        s.interval_seconds, s.window_seconds
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut rows = vec![Constraint::Length(1); s.reasons.len() + 1];
    rows.push(Constraint::Min(0));
    let lines = Layout::vertical(rows).split(inner);
    let wide = inner.width >= WIDE;
    let text_width = if wide { REASON_TEXT } else { REASON_TEXT_SHORT };
    let cols =
        |r: Rect| Layout::horizontal([Constraint::Length(text_width), Constraint::Min(0)]).areas(r);
    let columns = |reason: &str, rate: &str, window: &str, total: &str, n: &str, e: &str| {
        if wide {
            format!("{reason:<20} {rate:>9} {window:>10} {total:>12} {n:>8} {e:>10}")
        } else {
            format!("{reason:<20} {rate:>9} {n:>8} {e:>10}")
        }
    };
    let [text, spark] = cols(lines[0]);
    f.render_widget(
        Line::from(columns(
            "REASON",
            "PKTS/S",
            "IN WINDOW",
            "TOTAL",
            "SAMPLES",
            "EST. PKTS",
        ))
        .bold(),
        text,
    );
    f.render_widget(Line::from("RATE HISTORY").bold(), spark);
    for (row, line) in s.reasons.iter().zip(lines.iter().skip(1)) {
        let [text, spark] = cols(*line);
        f.render_widget(
            Line::from(columns(
                row.reason,
                &rate(row.packets_per_second),
                &row.packets_in_window.to_string(),
                &row.packets_total.to_string(),
                &row.samples.to_string(),
                &row.estimated_packets.to_string(),
            )),
            text,
        );
        // The newest rates that fit, on a scale shared by nothing else: each reason's shape.
        let fit = usize::from(spark.width);
        let tail = &row.history[row.history.len().saturating_sub(fit)..];
        let data: Vec<u64> = tail.iter().map(|v| v.round() as u64).collect();
        f.render_widget(
            Sparkline::default()
                .data(&data)
                .max(data.iter().copied().max().unwrap_or(0).max(1)),
            spark,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::top::{PortRow, PrefixRow, ReasonRow, SourceRow};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyEvent, KeyEventState};
    use ratatui::Terminal;

    fn snapshot() -> Snapshot {
        let reason = |name, pps: f64, history: Vec<f64>| ReasonRow {
            reason: name,
            packets_per_second: pps,
            packets_in_window: 4200,
            packets_total: 99_000,
            samples: 42,
            estimated_packets: 42_000,
            history,
        };
        Snapshot {
            window_seconds: 10,
            interval_seconds: 1.0,
            sampling: Sampling {
                every: 1000,
                cap_per_second: 1000,
            },
            samples: 42,
            estimated_packets: 42_000,
            sources: vec![SourceRow {
                source: "198.18.0.66".into(),
                samples: 40,
                estimated_packets: 40_000,
            }],
            prefixes: vec![PrefixRow {
                prefix: "198.18.0.0/24".into(),
                samples: 42,
                estimated_packets: 42_000,
            }],
            ports: vec![PortRow {
                port: 7000,
                protocol: "udp".into(),
                samples: 42,
                estimated_packets: 42_000,
            }],
            reasons: vec![
                reason("dropped-blocklist", 4321.0, vec![0.0, 2000.0, 4321.0]),
                reason("dropped-rule", 0.0, vec![]),
            ],
        }
    }

    fn drawn(width: u16, height: u16, s: &Snapshot) -> (Vec<String>, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| render(f, s)).unwrap();
        let buf = t.backend().buffer().clone();
        let lines = (0..height)
            .map(|y| (0..width).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect();
        (lines, buf)
    }

    #[test]
    fn a_frame_shows_the_top_source_prefix_port_and_a_reasons_rate() {
        let (lines, _) = drawn(140, 30, &snapshot());
        let screen = lines.join("\n");
        let row = lines
            .iter()
            .find(|l| l.contains("dropped-blocklist"))
            .unwrap_or_else(|| panic!("no reason row in\n{screen}"));
        assert!(row.contains("4.3k"), "{row}");
        assert!(row.contains("42000"), "{row}");
        assert!(screen.contains("198.18.0.66"), "{screen}");
        assert!(screen.contains("198.18.0.0/24"), "{screen}");
        assert!(screen.contains("7000/udp"), "{screen}");
        assert!(screen.contains("an estimate"), "{screen}");
    }

    #[test]
    fn an_80_column_terminal_shows_whole_numbers_and_marks_what_it_cuts() {
        let mut s = snapshot();
        s.sources[0].source = "2001:db8:99:0:1234:5678:9abc:def0".into();
        s.sources[0].estimated_packets = 1_234_567;
        let (lines, _) = drawn(80, 24, &s);
        let screen = lines.join("\n");
        // Numbers are never cut.
        assert!(screen.contains("1234567"), "{screen}");
        assert!(screen.contains("42000"), "{screen}");
        // An address that does not fit ends in `~`, never as another plausible address.
        assert!(
            screen.contains("198.18.0.0/24") || screen.contains("198.18.0~"),
            "{screen}"
        );
        assert!(
            !screen.contains("2001:db8:99:0:1234:5678:9abc:def0"),
            "{screen}"
        );
        assert!(screen.contains('~'), "{screen}");
        // The short reason form leaves the sparkline room.
        let head = lines.iter().find(|l| l.contains("REASON")).unwrap();
        assert!(head.contains("RATE HISTORY"), "{head}");
    }

    #[test]
    fn elide_keeps_what_fits_and_marks_a_cut() {
        assert_eq!(elide("198.18.0.0/24", 13), "198.18.0.0/24");
        assert_eq!(elide("198.18.0.0/24", 10), "198.18.0.~");
        assert_eq!(elide("abc", 0), "");
    }

    #[test]
    fn a_reasons_history_is_drawn_as_a_sparkline() {
        let (lines, _) = drawn(140, 30, &snapshot());
        let row = lines
            .iter()
            .find(|l| l.contains("dropped-blocklist"))
            .unwrap();
        // After the border and the numbers: 0 (no bar), 2000 (a middling one), 4321 (full).
        let spark: Vec<char> = row
            .chars()
            .skip(1 + usize::from(REASON_TEXT))
            .take(3)
            .collect();
        assert_eq!(spark[0], ' ', "{row}");
        assert!(!matches!(spark[1], ' ' | '█'), "{row}");
        assert_eq!(spark[2], '█', "{row}");
    }

    #[test]
    fn a_frame_says_when_sampling_is_off() {
        let mut s = snapshot();
        s.sampling.every = 0;
        let (lines, _) = drawn(140, 30, &s);
        assert!(lines.join("\n").contains("sampling off"));
    }

    #[test]
    fn a_small_terminal_draws_without_panicking() {
        drawn(20, 5, &snapshot());
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, modifiers| {
            Event::Key(KeyEvent {
                code,
                modifiers,
                kind: KeyEventKind::Press,
                state: KeyEventState::NONE,
            })
        };
        assert_eq!(
            key_of(&key(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Key::Quit)
        );
        assert_eq!(
            key_of(&key(KeyCode::Esc, KeyModifiers::NONE)),
            Some(Key::Quit)
        );
        assert_eq!(
            key_of(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        );
        assert_eq!(key_of(&key(KeyCode::Char('c'), KeyModifiers::NONE)), None);
        assert_eq!(key_of(&Event::Resize(80, 24)), Some(Key::Redraw));
    }
}
