//! One reading of everything the controller reports about a loaded filter: what is attached,
//! the generation and policy in force, the counters (per interface and reason, per rule, per
//! limit), list sizes, bans, how full the maps are and the kernel memory they take. `status`,
//! `stats` and the metrics (`stats --prometheus`, the daemon's `/metrics`) all print from an
//! [`Observation`]: there is one reading path, and three ways of showing it.

use std::collections::BTreeMap;

use anyhow::Result;
use filter_common::maps as names;
use filter_common::trie::Family;
use filter_common::ListKind;

use super::samples::{self, SampleTotals};
use super::stats::{self, IfaceStats, PolicyCounter};
use crate::error::is_not_loaded;
use crate::state::attach::{program_status, AttachedIface};
use crate::state::{bans, raw, PinDir, Session, Snapshot};

/// Entries of one list and address family (the union of command and policy entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSize {
    pub list: &'static str,
    /// "ipv4" or "ipv6".
    pub family: &'static str,
    pub entries: u64,
}

/// How full a map (or the list node pool) is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Everything read from a loaded filter at one moment.
#[derive(Clone, Debug)]
pub struct Observation {
    pub program_id: u32,
    pub interfaces: Vec<AttachedIface>,
    /// The live generation's snapshot: the policy in force and the lists as entered.
    pub snapshot: Snapshot,
    /// Per interface (plus "other") and reason.
    pub counters: Vec<IfaceStats>,
    /// Per rule and per limit of the policy in force, in policy order.
    pub rules: Vec<PolicyCounter>,
    pub limits: Vec<PolicyCounter>,
    pub lists: Vec<ListSize>,
    /// Bans that have not lapsed.
    pub bans: u64,
    /// What sampling has done since the filter was loaded.
    pub samples: SampleTotals,
    /// List pool nodes in use and the pool's size.
    pub pool_in_use: u64,
    pub pool_nodes: u32,
    /// The list node pool and the hash maps the program fills by itself.
    pub fill: Vec<MapFill>,
    /// Kernel memory per map (and "snapshot", the live generation's), in bytes.
    pub memory: BTreeMap<String, u64>,
}

impl Observation {
    pub fn generation(&self) -> u64 {
        self.snapshot.generation
    }

    pub fn memory_total(&self) -> u64 {
        self.memory.values().sum()
    }
}

/// Read everything; `None` when the filter is not loaded (nothing pinned, or removed while
/// this waited for the lock).
pub fn collect(pins: &PinDir) -> Result<Option<Observation>> {
    // Under the (shared) lock: a change in progress finishes first, so the snapshot, the
    // lists and the policy counters belong to one generation.
    let session = match Session::open(pins) {
        Ok(s) => s,
        Err(e) if is_not_loaded(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(prog) = program_status(pins)? else {
        return Ok(None);
    };
    let snapshot = session.current()?;
    let pool_nodes = session.pool_nodes();
    drop(session);
    let counters = stats::read(pins)?;
    let (rules, limits) = stats::read_policy(pins, &snapshot)?;
    let lists = ListKind::ALL
        .iter()
        .flat_map(|&k| {
            [(Family::V4, "ipv4"), (Family::V6, "ipv6")].map(|(f, family)| ListSize {
                list: k.name(),
                family,
                entries: snapshot.union_len(k, f) as u64,
            })
        })
        .collect();
    let live_bans = bans::list(pins, |_| None).map_or(0, |b| b.len() as u64);
    // Pins of a filter loaded before sampling existed are refused earlier (layout version).
    let samples = samples::totals(pins)?;
    let pool_in_use = snapshot.pool_in_use();
    let mut fill = vec![MapFill {
        map: names::LIST_NODES,
        entries: pool_in_use,
        capacity: u64::from(pool_nodes),
    }];
    for name in [names::SOURCE_BUCKETS, names::BANS, names::KNOWN] {
        // A map that cannot be counted is left out rather than failing the whole reading.
        let Some((entries, capacity)) = pins
            .open_map(name)
            .ok()
            .and_then(|m| raw::hash_len(&m).ok())
        else {
            continue;
        };
        fill.push(MapFill {
            map: name,
            entries,
            capacity: u64::from(capacity),
        });
    }
    let mut memory = BTreeMap::new();
    for name in names::pinned_maps().chain([names::ATTACHMENTS]) {
        if let Some(bytes) = pins.open_map(name).ok().as_ref().and_then(raw::memlock) {
            memory.insert(name.to_string(), bytes);
        }
    }
    if let Some(bytes) = pins
        .open_map_at(&pins.snapshot(snapshot.generation))
        .ok()
        .as_ref()
        .and_then(raw::memlock)
    {
        memory.insert("snapshot".into(), bytes);
    }
    Ok(Some(Observation {
        program_id: prog.program_id,
        interfaces: prog.interfaces,
        snapshot,
        counters,
        rules,
        limits,
        lists,
        bans: live_bans,
        samples,
        pool_in_use,
        pool_nodes,
        fill,
        memory,
    }))
}
