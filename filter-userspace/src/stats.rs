//! Reading the per-CPU counters: totals per interface and reason, and per-second rates.

use std::collections::BTreeMap;

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use filter_common::{Counter, Reason, REASON_SLOTS};
use serde::Serialize;

use crate::attach::attached;
use crate::pins::PinDir;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IfaceStats {
    /// Interface name; "other" collects packets from interfaces without a slot.
    pub interface: String,
    pub reasons: BTreeMap<&'static str, Totals>,
}

impl IfaceStats {
    pub fn get(&self, reason: Reason) -> Totals {
        self.reasons.get(reason.name()).cloned().unwrap_or_default()
    }
}

/// Counters summed over CPUs, one entry per attached interface plus "other".
pub fn read(pins: &PinDir) -> Result<Vec<IfaceStats>> {
    pins.require_loaded()?;
    let counters: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(pins.open_map("COUNTERS")?))?;
    let mut slots: Vec<(u32, String)> = attached(pins)?
        .into_iter()
        .map(|a| (a.slot, a.name))
        .collect();
    slots.push((0, "other".to_string()));
    let mut out = Vec::new();
    for (slot, name) in slots {
        let mut reasons = BTreeMap::new();
        for reason in Reason::ALL {
            let values = counters.get(&(slot * REASON_SLOTS + reason as u32), 0)?;
            let mut t = Totals::default();
            for c in values.iter() {
                t.packets += c.packets;
                t.bytes += c.bytes;
            }
            reasons.insert(reason.name(), t);
        }
        out.push(IfaceStats {
            interface: name,
            reasons,
        });
    }
    Ok(out)
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
                iface.interface,
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
                iface.interface,
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

    #[test]
    fn human_units() {
        assert_eq!(human_bits(0.0), "0.0");
        assert_eq!(human_bits(1500.0), "1.5k");
        assert_eq!(human_bits(2.5e9), "2.5G");
    }
}
