//! `capture`: sampled dropped frames into a pcap file, until `--count` frames or `--duration`
//! seconds (whichever comes first), Ctrl-C or SIGTERM. While it runs it raises sampling for
//! the reasons it captures to every drop (the cap still holds); when it ends, however it
//! ends, sampling returns to the setting (see `observe::samples`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use filter_common::sample::{sampleable, SampleRecord, RING_BYTES, SAMPLE_BYTES};
use filter_common::Reason;
use tokio::signal::unix::{signal, SignalKind};

use crate::error::usage;
use crate::lists::entries::{parse_entry, Prefix};
use crate::observe::pcap::PcapWriter;
use crate::observe::samples::Reader;
use crate::state::pins::{Access, Locked};
use crate::state::PinDir;
use crate::text;

/// Reasons a capture can ask for: drops and monitored packets (passes are never sampled).
pub fn parse_reason(s: &str) -> Result<Reason, String> {
    let names = || {
        Reason::ALL
            .iter()
            .filter(|r| sampleable(1 << **r as u32) != 0)
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match Reason::ALL.iter().find(|r| r.name() == s) {
        Some(r) if sampleable(1 << *r as u32) != 0 => Ok(*r),
        Some(_) => Err(format!(
            "'{}' packets pass and are never sampled; choose one of {}",
            text::name(s),
            names()
        )),
        None => Err(format!(
            "'{}' is not a reason; choose one of {}",
            text::name(s),
            names()
        )),
    }
}

pub fn parse_duration(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "'{}' is not a number of seconds above 0 and at most 86400",
            text::name(s)
        )),
    }
}

/// The offset from CLOCK_MONOTONIC (the records' clock) to the wall clock, in ns.
fn wall_offset() -> i128 {
    let mono = {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime into a valid struct.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    wall - mono
}

/// What a capture keeps.
pub struct Filter {
    pub reasons: u32,
    pub sources: Vec<Prefix>,
}

impl Filter {
    pub fn new(reasons: &[Reason], sources: &[String]) -> Result<Filter> {
        let mut prefixes = Vec::new();
        for s in sources {
            prefixes.push(parse_entry(s).map_err(|e| usage(format!("--source: {e}")))?);
        }
        let reasons = if reasons.is_empty() {
            sampleable(u32::MAX)
        } else {
            reasons.iter().fold(0, |m, r| m | 1 << *r as u32)
        };
        Ok(Filter {
            reasons,
            sources: prefixes,
        })
    }

    pub fn keeps(&self, r: &SampleRecord) -> bool {
        if r.reason >= 32 || self.reasons & (1 << r.reason) == 0 {
            return false;
        }
        if self.sources.is_empty() {
            return true;
        }
        r.src_addr()
            .is_some_and(|a| self.sources.iter().any(|p| p.to_ipnet().contains(&a)))
    }
}

/// Where the captured records go, and how many went.
struct Output<W: Write> {
    pcap: PcapWriter<W>,
    filter: Filter,
    /// Wall clock minus the program's monotonic clock, in ns.
    offset: i128,
    written: u64,
    count: Option<u64>,
}

impl<W: Write> Output<W> {
    /// Write what the ring holds, at most one ring's worth (a flood refilling it as fast as
    /// it is read never keeps the capture from its signals); true once `count` frames are in.
    fn drain(&mut self, reader: &mut Reader) -> Result<bool> {
        let most = RING_BYTES as usize / std::mem::size_of::<SampleRecord>();
        for _ in 0..most {
            let Some(item) = reader.ring().next() else {
                break;
            };
            let Some(rec) = SampleRecord::from_bytes(&item) else {
                continue;
            };
            drop(item);
            if !self.filter.keeps(&rec) {
                continue;
            }
            let ts = (i128::from(rec.time_ns) + self.offset).max(0) as u64;
            self.pcap
                .packet(ts, rec.bytes(), rec.wire_len)
                .context("cannot write the capture file")?;
            self.written += 1;
            if self.count.is_some_and(|c| self.written >= c) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub fn capture(
    pins: &PinDir,
    reasons: &[Reason],
    sources: &[String],
    file: &Path,
    count: Option<u64>,
    duration: Option<f64>,
) -> Result<()> {
    let filter = Filter::new(reasons, sources)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Signals first: a SIGTERM right after sampling is raised must end the capture
        // through the restore below, not kill it.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        // A closed terminal (ssh gone) ends the capture as Ctrl-C does: file complete,
        // sampling restored.
        let mut hup = signal(SignalKind::hangup())?;
        let locked = Locked::loaded(pins, Access::Read)?;
        // The slot first: with every slot taken, an existing file is left as it was.
        let mut reader = Reader::claim(pins, filter.reasons, true)?;
        drop(locked);
        let out: Box<dyn Write> =
            if file == Path::new("-") {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(File::create(file).with_context(|| {
                    format!("cannot create the capture file {}", text::path(file))
                })?)
            };
        let mut out = Output {
            pcap: PcapWriter::new(BufWriter::new(out), SAMPLE_BYTES as u32)
                .context("cannot write the capture file")?,
            filter,
            offset: wall_offset(),
            written: 0,
            count,
        };
        let _ = writeln!(
            std::io::stderr(),
            "floodgate: capturing sampled drops into {} (reader slot {})",
            text::path(file),
            reader.slot()
        );
        let fd = reader.readable()?;
        let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
        let mut renew = tokio::time::interval(Duration::from_secs(1));
        renew.tick().await;
        let result: Result<()> = async {
            loop {
                if out.drain(&mut reader)? {
                    break;
                }
                out.pcap.flush().context("cannot write the capture file")?;
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    break;
                }
                let sleep = tokio::time::sleep(left.unwrap_or(Duration::from_secs(86_400)));
                let stop = tokio::select! {
                    ready = fd.readable() => {
                        ready?.clear_ready();
                        false
                    }
                    _ = renew.tick() => {
                        reader.renew()?;
                        false
                    }
                    _ = sleep => true,
                    _ = int.recv() => true,
                    _ = term.recv() => true,
                    _ = hup.recv() => true,
                };
                if stop {
                    // What the program wrote before the stop is the capture's too.
                    out.drain(&mut reader)?;
                    break;
                }
            }
            out.pcap.flush().context("cannot write the capture file")?;
            Ok(())
        }
        .await;
        drop(fd);
        let released = reader.release();
        result?;
        released.context("cannot return sampling to its setting")?;
        let written = out.written;
        let _ = writeln!(
            std::io::stderr(),
            "floodgate: {written} frame{} written to {}",
            if written == 1 { "" } else { "s" },
            text::path(file)
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;
    use filter_common::sample::FAMILY_V4;

    fn record(reason: Reason, src: [u8; 4]) -> SampleRecord {
        let mut r = SampleRecord::zeroed();
        r.reason = reason as u32;
        r.family = FAMILY_V4;
        r.src[..4].copy_from_slice(&src);
        r
    }

    #[test]
    fn passes_are_not_reasons_to_capture() {
        assert!(parse_reason("passed")
            .unwrap_err()
            .contains("never sampled"));
        assert!(parse_reason("nonsense")
            .unwrap_err()
            .contains("dropped-blocklist"));
        assert_eq!(parse_reason("monitored"), Ok(Reason::Monitored));
    }

    #[test]
    fn filter_by_reason_and_source() {
        let f = Filter::new(&[Reason::DroppedRule], &["10.0.0.0/8".to_string()]).unwrap();
        assert!(f.keeps(&record(Reason::DroppedRule, [10, 1, 2, 3])));
        assert!(!f.keeps(&record(Reason::DroppedRule, [11, 1, 2, 3])));
        assert!(!f.keeps(&record(Reason::DroppedBlocklist, [10, 1, 2, 3])));
        let all = Filter::new(&[], &[]).unwrap();
        assert!(all.keeps(&record(Reason::DroppedMalformed, [0; 4])));
    }

    #[test]
    fn a_bad_source_is_a_usage_error() {
        let err = Filter::new(&[], &["10.1.2.3/8".to_string()]).err().unwrap();
        assert_eq!(crate::error::exit_code(&err), 2);
    }
}
