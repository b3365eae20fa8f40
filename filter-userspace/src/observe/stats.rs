//! Collecting the per-CPU counters: totals per interface and reason (printing them is the
//! `stats` command's business).

use std::collections::BTreeMap;

use anyhow::Result;
use filter_common::{Counter, Reason, MAX_INTERFACES, REASON_SLOTS};
use serde::Serialize;

use crate::state::attach::{attached, LinkState};
use crate::state::{maps, PinDir};

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
    // Every counter in one syscall, summed over CPUs.
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let sums = crate::state::raw::percpu_array_sums::<Counter>(
        &maps::counters_raw(pins)?,
        MAX_INTERFACES * REASON_SLOTS,
        cpus,
        |a, b| {
            a.packets += b.packets;
            a.bytes += b.bytes;
        },
    )?;
    // Interfaces with a counter slot; a stale record (nothing attached) counts nothing.
    let mut slots: Vec<(u32, String)> = attached(pins)?
        .into_iter()
        .filter(|a| a.state != LinkState::Stale)
        .filter_map(|a| Some((a.slot?, a.name)))
        .collect();
    slots.push((0, "other".to_string()));
    let mut out = Vec::new();
    for (slot, name) in slots {
        let mut reasons = BTreeMap::new();
        for reason in Reason::ALL {
            let c = sums[(slot * REASON_SLOTS + reason as u32) as usize];
            reasons.insert(
                reason.name(),
                Totals {
                    packets: c.packets,
                    bytes: c.bytes,
                },
            );
        }
        out.push(IfaceStats {
            interface: name,
            reasons,
        });
    }
    Ok(out)
}

/// What one rule or limit of the policy in force counted: packets and bytes it matched (a
/// rule) or refused, or would have in monitor mode (a limit).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PolicyCounter {
    pub name: String,
    pub mode: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Counters of the rules and limits in force, in policy order, summed over CPUs.
pub fn read_policy(
    pins: &PinDir,
    snapshot: &crate::state::Snapshot,
) -> Result<(Vec<PolicyCounter>, Vec<PolicyCounter>)> {
    use filter_common::maps::{self as names, LIMIT_COUNTER_SLOTS, RULE_COUNTER_SLOTS};
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let sums = |name: &str, n: u32| -> Result<Vec<Counter>> {
        Ok(crate::state::raw::percpu_array_sums::<Counter>(
            &pins.open_map(name)?,
            n,
            cpus,
            |a, b| {
                a.packets += b.packets;
                a.bytes += b.bytes;
            },
        )?)
    };
    let applied = &snapshot.policy;
    let rule_sums = sums(names::RULE_COUNTERS, RULE_COUNTER_SLOTS)?;
    let limit_sums = sums(names::LIMIT_COUNTERS, LIMIT_COUNTER_SLOTS)?;
    let pick = |slots: &BTreeMap<String, u32>, all: &[Counter], name: &str, mode| {
        let c = slots
            .get(name)
            .and_then(|&s| all.get(s as usize))
            .copied()
            .unwrap_or_default();
        PolicyCounter {
            name: name.to_string(),
            mode,
            packets: c.packets,
            bytes: c.bytes,
        }
    };
    let rules = applied
        .policy
        .rules
        .iter()
        .map(|r| pick(&applied.rule_slots, &rule_sums, &r.name, r.mode.name()))
        .collect();
    let limits = applied
        .policy
        .limits
        .iter()
        .map(|l| pick(&applied.limit_slots, &limit_sums, &l.name, l.mode.name()))
        .collect();
    Ok((rules, limits))
}
