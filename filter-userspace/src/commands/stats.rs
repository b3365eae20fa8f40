//! `stats`: counters once, as JSON, or redrawn in place as rates.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use filter_common::limits::CLASS_NAMES;
use filter_common::Reason;
use serde_json::json;

use crate::observe::collect::{collect, Observation};
use crate::observe::metrics;
use crate::observe::stats::{self, IfaceStats};
use crate::outln;
use crate::state::PinDir;

pub fn stats(
    pins: &PinDir,
    watch: bool,
    json: bool,
    interval: f64,
    count: Option<u64>,
) -> Result<()> {
    if watch {
        return watch_stats(pins, json, interval, count);
    }
    let obs = collect(pins)?.ok_or_else(|| pins.not_loaded())?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&document(&obs))?)?;
    } else {
        crate::commands::out(format_args!(
            "{}{}",
            render_table(&obs.counters),
            render_policy(&obs.rules, &obs.limits)
        ))?;
    }
    Ok(())
}

/// The `stats --json` document (docs/json.md): counters per interface and reason, per rule and
/// per limit of the policy in force, and the generation that policy belongs to. Names and
/// shapes follow `status --json`'s rules and limits.
pub fn document(obs: &Observation) -> serde_json::Value {
    let policy = &obs.snapshot.policy.policy;
    // `obs.rules` and `obs.limits` are read in policy order, one per rule and limit.
    let rules: Vec<serde_json::Value> = policy
        .rules
        .iter()
        .zip(&obs.rules)
        .map(|(r, c)| {
            json!({
                "name": r.name,
                "action": if r.drop { "drop" } else { "pass" },
                "mode": c.mode,
                "matched": {"packets": c.packets, "bytes": c.bytes},
            })
        })
        .collect();
    let limits: Vec<serde_json::Value> = policy
        .limits
        .iter()
        .zip(&obs.limits)
        .map(|(l, c)| {
            json!({
                "name": l.name,
                "class": CLASS_NAMES[l.class as usize],
                "mode": c.mode,
                "refused": {"packets": c.packets, "bytes": c.bytes},
            })
        })
        .collect();
    json!({
        "interfaces": obs.counters,
        "rules": rules,
        "limits": limits,
        "generation": obs.generation(),
    })
}

/// `stats --prometheus`: every metric once, in the text format 0.0.4. A filter that is not
/// loaded gives `floodgate_up 0` (and exit 0): a textfile collector then shows it down
/// instead of keeping the last file.
pub fn prometheus(pins: &PinDir) -> Result<()> {
    let obs = collect(pins)?;
    crate::commands::out(format_args!(
        "{}",
        metrics::encode(obs.as_ref(), None, metrics::Format::Text)
    ))?;
    Ok(())
}

/// Per-rule and per-limit counters of the policy in force (none without a policy).
pub fn render_policy(rules: &[stats::PolicyCounter], limits: &[stats::PolicyCounter]) -> String {
    let mut out = String::new();
    for (what, list, verb) in [("RULE", rules, "MATCHED"), ("LIMIT", limits, "REFUSED")] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n{what:<26} {:<8} {:>16} {:>16}\n",
            "MODE",
            format!("PACKETS {verb}"),
            "BYTES"
        ));
        for c in list {
            out.push_str(&format!(
                "{:<26} {:<8} {:>16} {:>16}\n",
                crate::text::name(&c.name),
                c.mode,
                c.packets,
                c.bytes
            ));
        }
    }
    out
}

/// Rule and limit counters of the policy in force.
type PolicyCounters = (Vec<stats::PolicyCounter>, Vec<stats::PolicyCounter>);

fn read_policy(pins: &PinDir) -> Result<PolicyCounters> {
    let snapshot = crate::state::Session::open(pins)?.current()?;
    stats::read_policy(pins, &snapshot)
}

/// Per-second rates of each rule and limit between two readings taken `secs` apart (a rule
/// or limit new since the first reading counts from zero).
pub fn render_policy_rates(prev: &PolicyCounters, now: &PolicyCounters, secs: f64) -> String {
    let mut out = String::new();
    for (what, before, list, verb) in [
        ("RULE", &prev.0, &now.0, "MATCHED"),
        ("LIMIT", &prev.1, &now.1, "REFUSED"),
    ] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n{what:<26} {:<8} {:>16} {:>14} {:>14}\n",
            "MODE",
            format!("PACKETS {verb}"),
            "PKTS/S",
            "BITS/S"
        ));
        for c in list {
            let (p0, b0) = before
                .iter()
                .find(|b| b.name == c.name)
                .map_or((0, 0), |b| (b.packets, b.bytes));
            let pps = c.packets.saturating_sub(p0) as f64 / secs;
            let bps = c.bytes.saturating_sub(b0) as f64 * 8.0 / secs;
            out.push_str(&format!(
                "{:<26} {:<8} {:>16} {:>14.0} {:>14}\n",
                crate::text::name(&c.name),
                c.mode,
                c.packets,
                pps,
                human_bits(bps)
            ));
        }
    }
    out
}

/// `stats --watch --json`: one [`document`] per line, each from a reading of its own.
fn watch_json(pins: &PinDir, interval: f64, count: Option<u64>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(interval));
        ticker.tick().await;
        let mut shown = 0u64;
        while count.is_none_or(|c| shown < c) {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            let obs = collect(pins)?.ok_or_else(|| pins.not_loaded())?;
            outln!("{}", serde_json::to_string(&document(&obs))?)?;
            shown += 1;
        }
        Ok(())
    })
}

fn watch_stats(pins: &PinDir, json: bool, interval: f64, count: Option<u64>) -> Result<()> {
    if json {
        return watch_json(pins, interval, count);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let period = Duration::from_secs_f64(interval);
        let mut prev = stats::read(pins)?;
        let mut prev_policy = read_policy(pins)?;
        let mut last = Instant::now();
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        let mut shown = 0u64;
        let tty = std::io::stdout().is_terminal();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            let now = stats::read(pins)?;
            let now_policy = read_policy(pins)?;
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let mut out = std::io::stdout().lock();
            if tty {
                // Redraw in place: cursor home, clear screen.
                write!(out, "\x1b[H\x1b[2J")?;
            } else if shown > 0 {
                // A pipe or file gets the tables one after another.
                writeln!(out)?;
            }
            write!(
                out,
                "{}{}",
                render_rates(&prev, &now, secs),
                render_policy_rates(&prev_policy, &now_policy, secs)
            )?;
            out.flush()?;
            prev = now;
            prev_policy = now_policy;
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
    })
}

pub fn render_table(stats: &[IfaceStats]) -> String {
    let mut s = format!(
        "{:<16} {:<20} {:>14} {:>16}\n",
        "INTERFACE", "REASON", "PACKETS", "BYTES"
    );
    for iface in stats {
        for reason in Reason::ALL {
            let t = iface.get(reason);
            if iface.interface == "other" && t.packets == 0 {
                continue;
            }
            s.push_str(&format!(
                "{:<16} {:<20} {:>14} {:>16}\n",
                crate::text::name(&iface.interface),
                reason.name(),
                t.packets,
                t.bytes
            ));
        }
    }
    s
}

/// Per-second rates between two readings taken `secs` apart.
pub fn render_rates(prev: &[IfaceStats], now: &[IfaceStats], secs: f64) -> String {
    let mut s = format!(
        "{:<16} {:<20} {:>14} {:>14} {:>14}\n",
        "INTERFACE", "REASON", "PACKETS", "PKTS/S", "BITS/S"
    );
    for iface in now {
        let before = prev.iter().find(|p| p.interface == iface.interface);
        for reason in Reason::ALL {
            let t = iface.get(reason);
            if iface.interface == "other" && t.packets == 0 {
                continue;
            }
            let b = before.map(|p| p.get(reason)).unwrap_or_default();
            let pps = t.packets.saturating_sub(b.packets) as f64 / secs;
            let bps = t.bytes.saturating_sub(b.bytes) as f64 * 8.0 / secs;
            s.push_str(&format!(
                "{:<16} {:<20} {:>14} {:>14.0} {:>14}\n",
                crate::text::name(&iface.interface),
                reason.name(),
                t.packets,
                pps,
                human_bits(bps)
            ));
        }
    }
    s
}

fn human_bits(bps: f64) -> String {
    let units = ["", "k", "M", "G", "T"];
    let mut v = bps;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1}{}", units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, packets: u64, bytes: u64) -> stats::PolicyCounter {
        stats::PolicyCounter {
            name: name.into(),
            mode: "enforce",
            packets,
            bytes,
        }
    }

    #[test]
    fn watch_shows_each_rule_and_limit_with_its_rate() {
        let prev = (vec![counter("syn", 100, 6_000)], vec![counter("udp", 0, 0)]);
        let now = (
            vec![counter("syn", 300, 18_000), counter("new", 10, 1_000)],
            vec![counter("udp", 50, 75_000)],
        );
        let got = render_policy_rates(&prev, &now, 2.0);
        let row = |name: &str| {
            got.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{got}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(
            got.contains("PACKETS MATCHED") && got.contains("PACKETS REFUSED"),
            "{got}"
        );
        assert_eq!(row("syn"), ["syn", "enforce", "300", "100", "48.0k"]);
        assert_eq!(row("new"), ["new", "enforce", "10", "5", "4.0k"]);
        assert_eq!(row("udp"), ["udp", "enforce", "50", "25", "300.0k"]);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bits(0.0), "0.0");
        assert_eq!(human_bits(1500.0), "1.5k");
        assert_eq!(human_bits(2.5e9), "2.5G");
    }
}
