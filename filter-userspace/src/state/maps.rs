//! Typed handles on the pinned maps, opened by the names `filter_common::maps` declares.

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use filter_common::limits::{LimitConf, MAX_LIMITS};
use filter_common::maps as names;
use filter_common::rules::{
    RuleBits, BITS_ENTRIES, CLASS_SET_WORDS, CLASS_TABLE_WORDS, DIMS, INFO_ENTRIES, MAX_CLASSES,
    MAX_RULES,
};
use filter_common::trie::{Node, NodeMeta, PARTS_ENTRIES, ROOT_TABLE_WORDS, SETS};
use filter_common::{Attachment, Counter, PolicyConfig};

use crate::policy::apply::PolicyTables;

use super::pins::PinDir;
use super::raw::Mapped;

pub fn counters(pins: &PinDir) -> Result<PerCpuArray<MapData, Counter>> {
    Ok(PerCpuArray::try_from(aya::maps::Map::PerCpuArray(
        pins.open_map(names::COUNTERS)?,
    ))?)
}

pub fn counters_raw(pins: &PinDir) -> Result<MapData> {
    pins.open_map(names::COUNTERS)
}

pub fn iface_slots(pins: &PinDir) -> Result<Array<MapData, u32>> {
    Ok(Array::try_from(aya::maps::Map::Array(
        pins.open_map(names::IFACE_SLOTS)?,
    ))?)
}

pub fn attachments(pins: &PinDir) -> Result<Array<MapData, Attachment>> {
    Ok(Array::try_from(aya::maps::Map::Array(
        pins.open_map(names::ATTACHMENTS)?,
    ))?)
}

/// Everything a generation switch writes, mapped for reading and writing; the node pool is
/// mapped piecewise, only where a change writes.
pub struct ListMaps {
    pub state: Mapped<u64>,
    pub root: Mapped<u64>,
    pub parts: Mapped<u64>,
    nodes: MapData,
    meta: MapData,
    pool_nodes: u32,
    policy: Mapped<PolicyConfig>,
    rule_classes: Mapped<u64>,
    rule_bits: Mapped<RuleBits>,
    rule_info: Mapped<u64>,
    rule_monitor: Mapped<RuleBits>,
    limits: Mapped<LimitConf>,
}

fn map<T: bytemuck::Pod>(pins: &PinDir, name: &str, expected: Option<u32>) -> Result<Mapped<T>> {
    let data = pins.open_map(name)?;
    let mapped = Mapped::<T>::new(&data, true).with_context(|| format!("cannot map {name}"))?;
    if let Some(n) = expected {
        if mapped.len() != n as usize {
            anyhow::bail!(
                "map {name} holds {} entries, this floodgate expects {n}: it was pinned by another version; run `floodgate detach --all` and attach again",
                mapped.len()
            );
        }
    }
    Ok(mapped)
}

/// Entries of a pool map, after checking its value size.
fn pool_size<T>(map: &MapData, name: &str) -> Result<u32> {
    let info = map.info()?;
    if info.value_size() as usize != std::mem::size_of::<T>() {
        anyhow::bail!(
            "map {name} has {}-byte values, this floodgate expects {}: it was pinned by another version; run `floodgate detach --all` and attach again",
            info.value_size(),
            std::mem::size_of::<T>()
        );
    }
    Ok(info.max_entries())
}

impl ListMaps {
    pub fn open(pins: &PinDir) -> Result<Self> {
        let nodes = pins.open_map(names::LIST_NODES)?;
        let meta = pins.open_map(names::LIST_META)?;
        let pool_nodes = pool_size::<Node>(&nodes, names::LIST_NODES)?;
        if pool_size::<NodeMeta>(&meta, names::LIST_META)? != pool_nodes {
            anyhow::bail!(
                "{} and {} differ in size: the pin directory was changed by hand; run `floodgate detach --all` and attach again",
                names::LIST_NODES,
                names::LIST_META
            );
        }
        Ok(Self {
            state: map(pins, names::STATE, Some(names::STATE_ENTRIES))?,
            root: map(pins, names::LIST_ROOT, Some(ROOT_TABLE_WORDS))?,
            parts: map(pins, names::LIST_PARTS, Some(PARTS_ENTRIES))?,
            nodes,
            meta,
            pool_nodes,
            policy: map(pins, names::POLICY, Some(SETS))?,
            rule_classes: map(pins, names::RULE_CLASSES, Some(CLASS_TABLE_WORDS))?,
            rule_bits: map(pins, names::RULE_BITS, Some(BITS_ENTRIES))?,
            rule_info: map(pins, names::RULE_INFO, Some(INFO_ENTRIES))?,
            rule_monitor: map(pins, names::RULE_MONITOR, Some(SETS))?,
            limits: map(pins, names::LIMITS, Some(SETS * MAX_LIMITS))?,
        })
    }

    /// Nodes in the pool (node 0 is never used).
    pub fn pool_nodes(&self) -> u32 {
        self.pool_nodes
    }

    /// Write set `set`'s settings, rule tables and limits.
    pub fn write_policy(&mut self, set: u32, t: &PolicyTables) {
        let s = set as usize;
        let n = CLASS_SET_WORDS as usize;
        self.rule_classes.as_mut_slice()[s * n..(s + 1) * n].copy_from_slice(&t.rules.classes);
        let n = (DIMS * MAX_CLASSES) as usize;
        self.rule_bits.as_mut_slice()[s * n..(s + 1) * n].copy_from_slice(&t.rules.bits);
        let n = MAX_RULES as usize;
        self.rule_info.as_mut_slice()[s * n..(s + 1) * n].copy_from_slice(&t.rules.info);
        self.rule_monitor.set(s, t.rules.monitor);
        let n = MAX_LIMITS as usize;
        self.limits.as_mut_slice()[s * n..(s + 1) * n].copy_from_slice(&t.limits);
        self.policy.set(s, t.config);
    }

    /// The settings a set holds (for `status`).
    pub fn policy_config(&self, set: u32) -> PolicyConfig {
        self.policy.get(set as usize)
    }

    /// Zero the per-CPU counters of the given rule and limit slots.
    pub fn reset_counters(&self, pins: &PinDir, rules: &[u32], limits: &[u32]) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for (name, slots) in [
            (names::RULE_COUNTERS, rules),
            (names::LIMIT_COUNTERS, limits),
        ] {
            if slots.is_empty() {
                continue;
            }
            let mut m: PerCpuArray<MapData, Counter> =
                PerCpuArray::try_from(aya::maps::Map::PerCpuArray(pins.open_map(name)?))?;
            for &slot in slots {
                let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])?;
                m.set(slot, zeros, 0)?;
            }
        }
        Ok(())
    }

    /// Map pool positions `first..first + count` for writing: cells and meta.
    pub fn pool_window(&self, first: u32, count: u32) -> Result<(Mapped<Node>, Mapped<NodeMeta>)> {
        let (first, n) = (first as usize, count as usize);
        Ok((
            Mapped::<Node>::window(&self.nodes, first, n)
                .with_context(|| format!("cannot map {}", names::LIST_NODES))?,
            Mapped::<NodeMeta>::window(&self.meta, first, n)
                .with_context(|| format!("cannot map {}", names::LIST_META))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    /// The program declares exactly the maps filter-common names, and nothing of the bench; its
    /// programs are the filter and the sampler it tail-calls.
    #[test]
    fn product_object_holds_the_named_maps_and_one_program() {
        let obj = aya_obj::Object::parse(crate::XDP_OBJECT).expect("valid object");
        // Data sections (`.rodata...`) are maps too, named after their section.
        let mut maps: Vec<&str> = obj
            .maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with('.'))
            .collect();
        maps.sort_unstable();
        let mut want = filter_common::maps::PRODUCT_MAPS.to_vec();
        want.sort_unstable();
        assert_eq!(maps, want);
        let mut programs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        assert_eq!(
            programs,
            [filter_common::maps::SAMPLER_PROGRAM, "floodgate"]
        );
    }
}
