//! Allow and block lists: the operator's entries are kept in record maps (the source of truth,
//! so `list` and `del` work after the controller exited), compiled, and applied to the maps the
//! XDP program reads in an order that never opens a window for an entry that stays listed.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use filter_common::{
    v4_detail_slot, v4_verdict_of_cell, HostBitmap, ListKind, V4Detail, V4PrefixKey, V6Block,
    V6PrefixKey, RECORDS_CAPACITY, STATE_FULL, STATE_PARTIAL, V4_DETAIL_SLOTS, V4_HOSTS_CAPACITY,
    V4_SUMMARY_WORDS, V4_VERDICT24_WORDS, V4_VERDICT_DETAIL, V6_BLOCKS_CAPACITY, V6_FILTER32_WORDS,
    V6_LONG_CAPACITY, V6_SUMMARY16_WORDS,
};

use crate::cidr::Prefix;
use crate::compile::{compile_v4, compile_v6, filter_mask, summary_mask};
use crate::pins::{records_map, PinDir};
use crate::rawmap::{delete_batch, lookup_all, update_batch, MappedWords};

const BPF_F_NO_PREALLOC: u32 = 1;

fn hosts_map(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Allow => "ALLOW_V4_HOSTS",
        ListKind::Block => "BLOCK_V4_HOSTS",
    }
}

fn v6_blocks_map(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Allow => "ALLOW_V6_BLOCKS",
        ListKind::Block => "BLOCK_V6_BLOCKS",
    }
}

fn v6_long_map(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Allow => "ALLOW_V6_LONG",
        ListKind::Block => "BLOCK_V6_LONG",
    }
}

/// Create the record maps on first load (the program does not declare them).
pub fn create_record_maps(pins: &PinDir) -> Result<()> {
    for kind in ListKind::ALL {
        for v6 in [false, true] {
            let name = records_map(kind, v6);
            let path = pins.map(name);
            if path.exists() {
                continue;
            }
            let pinned = if v6 {
                BpfHashMap::<MapData, V6PrefixKey, u8>::create(RECORDS_CAPACITY, BPF_F_NO_PREALLOC)?
                    .pin(&path)
            } else {
                BpfHashMap::<MapData, V4PrefixKey, u8>::create(RECORDS_CAPACITY, BPF_F_NO_PREALLOC)?
                    .pin(&path)
            };
            pinned.with_context(|| format!("cannot pin {}", path.display()))?;
        }
    }
    Ok(())
}

/// Every entry of one list, sorted (IPv4 first).
pub fn read(pins: &PinDir, kind: ListKind) -> Result<Vec<Prefix>> {
    let mut out: Vec<Prefix> = read_set(pins, kind)?.into_iter().collect();
    out.sort_unstable();
    Ok(out)
}

/// Every entry of one list, unordered.
fn read_set(pins: &PinDir, kind: ListKind) -> Result<HashSet<Prefix>> {
    let mut out = HashSet::new();
    let v4 = pins.open_map(records_map(kind, false))?;
    for (k, _) in lookup_all::<V4PrefixKey, u8>(&v4)? {
        out.insert(Prefix::from_v4_key(&k));
    }
    let v6 = pins.open_map(records_map(kind, true))?;
    for (k, _) in lookup_all::<V6PrefixKey, u8>(&v6)? {
        out.insert(Prefix::from_v6_key(&k));
    }
    // IPv6 prefixes longer than /32 are recorded by the exact map the program reads.
    let long = pins.open_map(v6_long_map(kind))?;
    for (k, _) in lookup_all::<V6PrefixKey, u8>(&long)? {
        out.insert(Prefix::from_v6_key(&k));
    }
    Ok(out)
}

/// What a change did, for the operator.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub added: usize,
    pub removed: usize,
    pub total: usize,
}

/// Replace list `kind` by `edit(current)`: validate capacity, then write records, then the
/// compiled structures (additions before the summary, removals after it).
pub fn update(
    pins: &PinDir,
    kind: ListKind,
    edit: impl FnOnce(&mut HashSet<Prefix>) -> Result<()>,
) -> Result<Change> {
    pins.require_loaded()?;
    let t = std::time::Instant::now();
    let phase = |what: &str| tracing::debug!("{what}: {:.3}s", t.elapsed().as_secs_f64());
    let old = read_set(pins, kind)?;
    phase("read records");
    let mut new = old.clone();
    edit(&mut new)?;
    phase("edit");

    let v4: Vec<(u32, u8)> = new
        .iter()
        .filter_map(|p| match *p {
            Prefix::V4 { addr, len } => Some((addr, len)),
            Prefix::V6 { .. } => None,
        })
        .collect();
    let v6: Vec<(u128, u8)> = new
        .iter()
        .filter_map(|p| match *p {
            Prefix::V6 { addr, len } => Some((addr, len)),
            Prefix::V4 { .. } => None,
        })
        .collect();
    phase("split");
    let cap = RECORDS_CAPACITY as usize;
    if v4.len() > cap || v6.len() > cap {
        bail!(
            "the {} list would hold {} IPv4 and {} IPv6 entries; each family holds at most {cap}: remove entries or aggregate them into shorter prefixes",
            kind.name(),
            v4.len(),
            v6.len()
        );
    }
    // Two cores on a small edge box are still two: the families compile independently.
    let (c4, c6) = std::thread::scope(|s| {
        let c6 = s.spawn(|| compile_v6(kind, v6));
        let c4 = compile_v4(kind, v4);
        (c4, c6.join().expect("compile_v6 panicked"))
    });
    phase("compile");
    for (what, n, max) in [
        (
            "IPv4 /24 blocks with prefixes longer than /24",
            c4.hosts.len(),
            V4_HOSTS_CAPACITY,
        ),
        ("IPv6 /32 blocks", c6.blocks.len(), V6_BLOCKS_CAPACITY),
        (
            "IPv6 prefixes longer than /32",
            c6.long.len(),
            V6_LONG_CAPACITY,
        ),
    ] {
        if n > max as usize {
            bail!(
                "the {} list would need {n} {what}, more than its map holds ({max}): nothing was changed; aggregate entries into shorter prefixes",
                kind.name()
            );
        }
    }

    // Records (what `list` shows and the next change starts from) and the exact structures
    // are separate maps: write them in parallel. Within the structures the order matters:
    // exact entries, then summaries, then pruning, so no listed address is ever unlisted.
    let added: Vec<Prefix> = new.difference(&old).copied().collect();
    let removed: Vec<Prefix> = old.difference(&new).copied().collect();
    let hosts = pins.open_map(hosts_map(kind))?;
    let blocks = pins.open_map(v6_blocks_map(kind))?;
    let long = pins.open_map(v6_long_map(kind))?;
    let (records, stale) = std::thread::scope(|s| {
        let records = s.spawn(|| write_records(pins, kind, &added, true));
        let stale = (|| -> Result<_> {
            let stale_hosts = upsert_diff(&hosts, &c4.hosts)?;
            let stale_blocks = upsert_diff(&blocks, &c6.blocks)?;
            let long_values: HashMap<V6PrefixKey, u8> = c6.long.iter().map(|k| (*k, 1u8)).collect();
            let stale_long = upsert_diff(&long, &long_values)?;
            Ok((stale_hosts, stale_blocks, stale_long))
        })();
        (records.join().expect("record writer panicked"), stale)
    });
    records?;
    let (stale_hosts, stale_blocks, stale_long) = stale?;
    phase("write records and exact maps");

    merge_words(
        pins,
        "V4_SUMMARY",
        V4_SUMMARY_WORDS,
        &c4.summary,
        summary_mask(kind),
    )?;
    refresh_v4_detail_table(pins, kind, &c4.hosts)?;
    refresh_v4_verdicts(pins)?;
    merge_words(
        pins,
        "V6_SUMMARY16",
        V6_SUMMARY16_WORDS,
        &c6.summary16,
        summary_mask(kind),
    )?;
    merge_words(
        pins,
        "V6_FILTER32",
        V6_FILTER32_WORDS,
        &c6.filter32,
        filter_mask(kind),
    )?;

    delete_batch::<u32, HostBitmap>(&hosts, &stale_hosts).context("pruning IPv4 host bitmaps")?;
    delete_batch::<u32, V6Block>(&blocks, &stale_blocks).context("pruning IPv6 /32 blocks")?;
    delete_batch::<V6PrefixKey, u8>(&long, &stale_long).context("pruning IPv6 long prefixes")?;
    write_records(pins, kind, &removed, false)?;
    phase("summaries, pruning");

    Ok(Change {
        added: added.len(),
        removed: removed.len(),
        total: new.len(),
    })
}

fn write_records(pins: &PinDir, kind: ListKind, prefixes: &[Prefix], insert: bool) -> Result<()> {
    let mut k4 = Vec::new();
    let mut k6 = Vec::new();
    for p in prefixes {
        match *p {
            Prefix::V4 { addr, len } => k4.push(Prefix::v4_key(addr, len)),
            // Longer ones live in the exact map (`*_V6_LONG`), which doubles as their record.
            Prefix::V6 { addr, len } if len <= 32 => k6.push(Prefix::v6_key(addr, len)),
            Prefix::V6 { .. } => {}
        }
    }
    let m4 = pins.open_map(records_map(kind, false))?;
    let m6 = pins.open_map(records_map(kind, true))?;
    let what = if insert { "adding to" } else { "removing from" };
    let ctx = || format!("{what} the {} list records", kind.name());
    if insert {
        update_batch(&m4, &k4, &vec![1u8; k4.len()]).with_context(ctx)?;
        update_batch(&m6, &k6, &vec![1u8; k6.len()]).with_context(ctx)?;
    } else {
        delete_batch::<V4PrefixKey, u8>(&m4, &k4).with_context(ctx)?;
        delete_batch::<V6PrefixKey, u8>(&m6, &k6).with_context(ctx)?;
    }
    Ok(())
}

/// Write entries of `want` that are missing or different; return keys present but unwanted.
fn upsert_diff<K, V>(map: &MapData, want: &HashMap<K, V>) -> Result<Vec<K>>
where
    K: bytemuck::Pod + Eq + std::hash::Hash + Sync,
    V: bytemuck::Pod + PartialEq + Sync,
{
    let current: HashMap<K, V> = lookup_all::<K, V>(map)?.into_iter().collect();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for (k, v) in want {
        if current.get(k) != Some(v) {
            keys.push(*k);
            values.push(*v);
        }
    }
    update_batch(map, &keys, &values).context("writing list entries")?;
    Ok(current
        .into_keys()
        .filter(|k| !want.contains_key(k))
        .collect())
}

/// Replace the `mask` bits of every word of a summary array with `words`' bits, writing only
/// the words that change.
fn merge_words(pins: &PinDir, name: &str, len: u32, words: &[u64], mask: u64) -> Result<()> {
    let map = pins.open_map(name)?;
    let mut mapped =
        MappedWords::new(&map, len as usize).with_context(|| format!("cannot mmap {name}"))?;
    for (i, &w) in words.iter().enumerate() {
        let cur = mapped.get(i);
        let next = (cur & !mask) | (w & mask);
        if next != cur {
            mapped.set(i, next);
        }
    }
    Ok(())
}

/// Rebuild the direct-mapped detail table for every mixed or partial /24, from the summary,
/// this list's new host bitmaps and the other list's current ones. Each changed /24 gets a
/// fresh detail slot, written before the index word that publishes it (one aligned 8-byte
/// store), so the XDP program sees the old or the new detail, never half of one. Slots freed
/// here are reused only by a later change, long after any program run that read them.
fn refresh_v4_detail_table(
    pins: &PinDir,
    kind: ListKind,
    this_hosts: &HashMap<u32, HostBitmap>,
) -> Result<()> {
    let other = match kind {
        ListKind::Allow => ListKind::Block,
        ListKind::Block => ListKind::Allow,
    };
    let other_hosts: HashMap<u32, HostBitmap> =
        lookup_all::<u32, HostBitmap>(&pins.open_map(hosts_map(other))?)?
            .into_iter()
            .collect();
    let hosts_of = |k: ListKind| if k == kind { this_hosts } else { &other_hosts };
    let summary_map = pins.open_map("V4_SUMMARY")?;
    let summary = MappedWords::new(&summary_map, V4_SUMMARY_WORDS as usize)?;

    // Desired: slot -> (block24, detail), first /24 (in address order) wins a slot.
    let mut want: HashMap<u32, (u32, V4Detail)> = HashMap::new();
    for w in 0..V4_SUMMARY_WORDS as usize {
        let word = summary.get(w);
        // Only cells with a PARTIAL state (high bit of a 2-bit state) need detail.
        if word & 0xAAAA_AAAA_AAAA_AAAA == 0 {
            continue;
        }
        for cell in 0..16u32 {
            let c = (word >> (cell * 4)) & 0xf;
            if v4_verdict_of_cell(c) != V4_VERDICT_DETAIL {
                continue;
            }
            let block24 = (w as u32) * 16 + cell;
            let part = |k: ListKind| match (c >> (2 * k as u32)) & 3 {
                STATE_FULL => HostBitmap::ALL,
                STATE_PARTIAL => hosts_of(k).get(&block24).copied().unwrap_or_default(),
                _ => HostBitmap::default(),
            };
            let detail = V4Detail {
                allow: part(ListKind::Allow),
                block: part(ListKind::Block),
            };
            want.entry(v4_detail_slot(block24))
                .or_insert((block24, detail));
        }
    }

    let index_map = pins.open_map("V4_DETAIL_INDEX")?;
    let mut index = MappedWords::new(&index_map, V4_DETAIL_SLOTS as usize)?;
    let detail_map = pins.open_map("V4_DETAIL")?;
    let mut details = MappedWords::of_values::<V4Detail>(&detail_map, V4_DETAIL_SLOTS as usize)?;
    const DETAIL_WORDS: usize = std::mem::size_of::<V4Detail>() / 8;
    let read_detail = |d: &MappedWords, slot: usize| -> V4Detail {
        let mut words = [0u64; DETAIL_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = d.get(slot * DETAIL_WORDS + i);
        }
        bytemuck::cast(words)
    };
    // Slot 0 of the detail array stays unused so that an index word of 0 means "empty".
    let mut in_use = vec![false; V4_DETAIL_SLOTS as usize];
    in_use[0] = true;
    for s in 0..V4_DETAIL_SLOTS as usize {
        let word = index.get(s);
        if word != 0 {
            in_use[(word >> 32) as usize] = true;
        }
    }
    let mut free = (1..V4_DETAIL_SLOTS as usize)
        .filter(|&d| !in_use[d])
        .collect::<Vec<_>>()
        .into_iter();
    for s in 0..V4_DETAIL_SLOTS as usize {
        let cur = index.get(s);
        match want.get(&(s as u32)) {
            Some(&(block24, detail)) => {
                let tag = u64::from(block24 + 1);
                if cur & 0xffff_ffff == tag && read_detail(&details, (cur >> 32) as usize) == detail
                {
                    continue;
                }
                // No free slot left: leave this /24 to the summary and hash-map path.
                let Some(slot) = free.next() else {
                    index.set(s, 0);
                    continue;
                };
                let words: [u64; DETAIL_WORDS] = bytemuck::cast(detail);
                for (i, w) in words.iter().enumerate() {
                    details.set(slot * DETAIL_WORDS + i, *w);
                }
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                index.set(s, tag | ((slot as u64) << 32));
            }
            None if cur != 0 => index.set(s, 0),
            None => {}
        }
    }
    Ok(())
}

/// Derive the IPv4 first level from the summary (after the summary, so a /24 never points at
/// detail that is not there yet).
fn refresh_v4_verdicts(pins: &PinDir) -> Result<()> {
    let summary_map = pins.open_map("V4_SUMMARY")?;
    let summary = MappedWords::new(&summary_map, V4_SUMMARY_WORDS as usize)
        .context("cannot mmap V4_SUMMARY")?;
    let verdict_map = pins.open_map("V4_VERDICT24")?;
    let mut verdicts = MappedWords::new(&verdict_map, V4_VERDICT24_WORDS as usize)
        .context("cannot mmap V4_VERDICT24")?;
    for v in 0..V4_VERDICT24_WORDS as usize {
        let (lo, hi) = (summary.get(2 * v), summary.get(2 * v + 1));
        let mut next = 0u64;
        if lo | hi != 0 {
            for cell in 0..32u32 {
                let word = if cell < 16 { lo } else { hi };
                let c = (word >> ((cell % 16) * 4)) & 0xf;
                next |= v4_verdict_of_cell(c) << (cell * 2);
            }
        }
        if verdicts.get(v) != next {
            verdicts.set(v, next);
        }
    }
    Ok(())
}

/// Sizes for `status`.
pub struct ListSizes {
    pub v4: usize,
    pub v6: usize,
}

pub fn sizes(pins: &PinDir, kind: ListKind) -> Result<ListSizes> {
    let set = read_set(pins, kind)?;
    let v4 = set
        .iter()
        .filter(|p| matches!(p, Prefix::V4 { .. }))
        .count();
    Ok(ListSizes {
        v4,
        v6: set.len() - v4,
    })
}

/// Fill level of the compiled maps of one list: (name, entries, capacity).
pub fn fill_levels(pins: &PinDir, kind: ListKind) -> Result<Vec<(&'static str, usize, u32)>> {
    let count = |name: &'static str| -> Result<usize> {
        let m = pins.open_map(name)?;
        Ok(match name {
            n if n.ends_with("HOSTS") => lookup_all::<u32, HostBitmap>(&m)?.len(),
            n if n.ends_with("BLOCKS") => lookup_all::<u32, V6Block>(&m)?.len(),
            _ => lookup_all::<V6PrefixKey, u8>(&m)?.len(),
        })
    };
    Ok(vec![
        (hosts_map(kind), count(hosts_map(kind))?, V4_HOSTS_CAPACITY),
        (
            v6_blocks_map(kind),
            count(v6_blocks_map(kind))?,
            V6_BLOCKS_CAPACITY,
        ),
        (
            v6_long_map(kind),
            count(v6_long_map(kind))?,
            V6_LONG_CAPACITY,
        ),
    ])
}

/// Deduplicate while keeping the operator's order, for messages.
pub fn dedup(prefixes: Vec<Prefix>) -> Vec<Prefix> {
    let mut seen = HashSet::new();
    prefixes.into_iter().filter(|p| seen.insert(*p)).collect()
}
