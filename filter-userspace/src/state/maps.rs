//! Typed handles on the pinned maps, opened by the names `filter_common::maps` declares.

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use filter_common::maps as names;
use filter_common::trie::{Node, NodeMeta, PARTS_ENTRIES, ROOT_TABLE_WORDS};
use filter_common::{Attachment, Counter, FilterConfig};

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

pub fn config(pins: &PinDir) -> Result<Array<MapData, FilterConfig>> {
    Ok(Array::try_from(aya::maps::Map::Array(
        pins.open_map(names::CONFIG)?,
    ))?)
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

/// The list structures and the generation word, mapped for reading and writing; the node
/// pool is mapped piecewise, only where a change writes.
pub struct ListMaps {
    pub state: Mapped<u64>,
    pub root: Mapped<u64>,
    pub parts: Mapped<u64>,
    nodes: MapData,
    meta: MapData,
    pool_nodes: u32,
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
        })
    }

    /// Nodes in the pool (node 0 is never used).
    pub fn pool_nodes(&self) -> u32 {
        self.pool_nodes
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
    /// The program declares exactly the maps filter-common names, and nothing of the bench.
    #[test]
    fn product_object_holds_the_named_maps_and_one_program() {
        let obj = aya_obj::Object::parse(crate::XDP_OBJECT).expect("valid object");
        let mut maps: Vec<&str> = obj.maps.keys().map(String::as_str).collect();
        maps.sort_unstable();
        let mut want = filter_common::maps::PRODUCT_MAPS.to_vec();
        want.sort_unstable();
        assert_eq!(maps, want);
        let programs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        assert_eq!(programs, ["floodgate"]);
    }
}
