//! The controller's record of one generation: every list entry as the operator entered it and
//! where each chunk of the tries lives in the node pool. One snapshot per generation is kept on bpffs
//! (`state/<generation>`, an mmapable array the program never reads), so `list`, `status` and
//! the next change work in a new process and always describe what the program enforces: the
//! generation word in `STATE` names the live snapshot.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use filter_common::cidr::Prefix;
use filter_common::trie::Family;
use filter_common::{ListKind, LIST_CAPACITY};

use super::pins::PinDir;
use super::raw::{create_mmapable_array, Mapped};
use crate::lists::compile::{Extent, Item, Region, RootTables};
use crate::policy::Policy;

/// One entry, its address aligned to the top of 128 bits (as the trie reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub addr: u128,
    pub len: u8,
}

impl Entry {
    pub fn of(p: Prefix) -> Entry {
        Entry {
            addr: p.top_aligned(),
            len: p.prefix_len(),
        }
    }

    pub fn prefix(self, family: Family) -> Prefix {
        Prefix::from_top_aligned(family, self.addr, self.len)
    }
}

/// The sorted entries of one list and family, kept encoded as in the snapshot so a million
/// of them are copied, searched and merged as plain words: IPv4 one word (address << 8 |
/// length), IPv6 three (high half, low half, length). Word order is entry order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryList {
    family: Family,
    words: Words,
}

/// Entry words: built in memory, or read in place from a snapshot map (a million entries
/// are not copied just to be searched).
#[derive(Clone)]
enum Words {
    Owned(Vec<u64>),
    Mapped(Arc<Mapped<u64>>, Range<usize>),
}

impl std::ops::Deref for Words {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            Words::Owned(v) => v,
            Words::Mapped(m, r) => &m.as_slice()[r.clone()],
        }
    }
}

impl PartialEq for Words {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Words {}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} words", self.len())
    }
}

impl Words {
    /// The words as an owned vector, copying them out of a mapping first if need be.
    fn make_owned(&mut self) -> &mut Vec<u64> {
        if let Words::Mapped(..) = self {
            *self = Words::Owned(self.to_vec());
        }
        match self {
            Words::Owned(v) => v,
            Words::Mapped(..) => unreachable!(),
        }
    }
}

impl EntryList {
    pub fn new(family: Family) -> Self {
        Self {
            family,
            words: Words::Owned(Vec::new()),
        }
    }

    fn stride(&self) -> usize {
        words_per_entry(self.family)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn len(&self) -> usize {
        self.words.len() / self.stride()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn push(&mut self, e: Entry) {
        let family = self.family;
        encode_entry(family, e, self.words.make_owned());
    }

    pub fn get(&self, i: usize) -> Entry {
        decode_at(self.family, &self.words, i)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Entry> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Index of the first entry for which `pred` is false (entries for which it holds come
    /// first).
    pub fn partition_point(&self, pred: impl Fn(Entry) -> bool) -> usize {
        partition_point_in(self.family, &self.words, pred)
    }

    pub fn contains(&self, e: &Entry) -> bool {
        let i = self.partition_point(|x| x < *e);
        i < self.len() && self.get(i) == *e
    }

    /// From entries in order (sorted, no duplicates).
    pub fn from_sorted(family: Family, entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut out = Self::new(family);
        for e in entries {
            out.push(e);
        }
        out
    }

    /// Check encoded words: whole entries, lengths within the family, no host bits, strictly
    /// ascending (sorted, each once). A corrupt snapshot must not reach the compiler.
    fn check(&self, words: &[u64]) -> Result<()> {
        let w = self.stride();
        if !words.len().is_multiple_of(w) {
            bail!("snapshot is corrupt: a partial entry");
        }
        let bits = self.family.bits();
        let mut prev: Option<Entry> = None;
        for i in 0..words.len() / w {
            let e = decode_at(self.family, words, i);
            let ok_len = u32::from(e.len) <= bits
                && (w == 1 || words[3 * i + 2] <= 128)
                && (w == 3 || words[i] >> 8 <= u64::from(u32::MAX));
            let len = e.len.min(bits as u8);
            let masked = match self.family {
                Family::V4 => Prefix::v4((e.addr >> 96) as u32, len),
                Family::V6 => Prefix::v6(e.addr, len),
            };
            if !ok_len || Entry::of(masked) != e || prev.is_some_and(|p| p >= e) {
                bail!(
                    "snapshot is corrupt: entry {i} of an {} list",
                    self.family.name()
                );
            }
            prev = Some(e);
        }
        Ok(())
    }

    /// This list with `add` (sorted, none of them present) merged in: runs of the existing
    /// list are copied whole.
    pub fn merged(&self, add: &[Entry]) -> Self {
        let w = self.stride();
        let mut words = Vec::with_capacity(self.words.len() + add.len() * w);
        let mut from = 0;
        for e in add {
            let at = from + partition_point_in(self.family, &self.words[from * w..], |x| x < *e);
            words.extend_from_slice(&self.words[from * w..at * w]);
            encode_entry(self.family, *e, &mut words);
            from = at;
        }
        words.extend_from_slice(&self.words[from * w..]);
        Self {
            family: self.family,
            words: Words::Owned(words),
        }
    }

    /// This list without `del` (sorted, all present).
    pub fn without(&self, del: &[Entry]) -> Self {
        let w = self.stride();
        let mut words = Vec::with_capacity(self.words.len());
        let mut from = 0;
        for e in del {
            let at = from + partition_point_in(self.family, &self.words[from * w..], |x| x < *e);
            words.extend_from_slice(&self.words[from * w..at * w]);
            from = at + 1;
        }
        words.extend_from_slice(&self.words[(from * w).min(self.words.len())..]);
        Self {
            family: self.family,
            words: Words::Owned(words),
        }
    }
}

/// Append the encoding of one entry.
fn encode_entry(family: Family, e: Entry, words: &mut Vec<u64>) {
    match family {
        Family::V4 => words.push(((e.addr >> 96) as u64) << 8 | u64::from(e.len)),
        Family::V6 => words.extend([(e.addr >> 64) as u64, e.addr as u64, u64::from(e.len)]),
    }
}

/// Entry `i` of encoded words.
fn decode_at(family: Family, words: &[u64], i: usize) -> Entry {
    match family {
        Family::V4 => Entry {
            addr: u128::from(words[i] >> 8) << 96,
            len: words[i] as u8,
        },
        Family::V6 => Entry {
            addr: u128::from(words[3 * i]) << 64 | u128::from(words[3 * i + 1]),
            len: words[3 * i + 2] as u8,
        },
    }
}

/// Binary search over encoded words: the first entry for which `pred` is false.
fn partition_point_in(family: Family, words: &[u64], pred: impl Fn(Entry) -> bool) -> usize {
    let (mut lo, mut hi) = (0, words.len() / words_per_entry(family));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(decode_at(family, words, mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where list entries came from: `block`/`allow` commands, or the policy file. The program
/// enforces their union; each is changed only by its own way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Cli = 0,
    Policy = 1,
}

impl Origin {
    pub const ALL: [Origin; 2] = [Origin::Cli, Origin::Policy];
}

/// The policy in force, as applied (its lists are in the snapshot's entry lists), and which
/// counter slot each rule and limit has (a slot follows its name across applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppliedPolicy {
    pub policy: Policy,
    pub rule_slots: BTreeMap<String, u32>,
    pub limit_slots: BTreeMap<String, u32>,
    /// CPUs the global limits' rates were divided by.
    pub cpus: u32,
    /// Unix time of the apply.
    pub applied_at: u64,
    /// The policy has protected prefixes.
    pub has_protected: bool,
    /// Prefix lengths of bans placed by hand, per family (their lookups stay on).
    pub manual_ban_prefixes: [Vec<u8>; 2],
}

/// Everything one generation holds, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    /// Entries per origin, list and family, sorted and without duplicates.
    pub lists: [[[EntryList; 2]; 3]; 2],
    /// Partition (/16) -> its nodes, per trie and family.
    pub chunks: [[BTreeMap<Region, Extent>; 2]; 2],
    pub policy: AppliedPolicy,
}

impl Default for Snapshot {
    fn default() -> Self {
        let lists = || [(); 3].map(|_| Family::ALL.map(EntryList::new));
        Snapshot {
            generation: 0,
            lists: [lists(), lists()],
            chunks: Default::default(),
            policy: AppliedPolicy::default(),
        }
    }
}

const MAGIC: u64 = u64::from_be_bytes(*b"FGSNAP01");
const FORMAT: u64 = 3;
const HEADER_WORDS: usize = 32;
/// Header words: 0 magic, 1 format, 2 generation, 4..16 entry counts (origin, kind, family),
/// 16..20 chunk counts (trie, family), 20 policy bytes.
const COUNTS_AT: usize = 4;
const PARTS_AT: usize = 16;
const POLICY_AT: usize = 20;
/// Words per chunk: region start (2), region depth, first node << 32 | nodes.
const CHUNK_WORDS: usize = 4;

fn words_per_entry(family: Family) -> usize {
    match family {
        Family::V4 => 1,
        Family::V6 => 3,
    }
}

impl Snapshot {
    pub fn list(&self, origin: Origin, kind: ListKind, family: Family) -> &EntryList {
        &self.lists[origin as usize][kind as usize][family as usize]
    }

    pub fn list_mut(&mut self, origin: Origin, kind: ListKind, family: Family) -> &mut EntryList {
        &mut self.lists[origin as usize][kind as usize][family as usize]
    }

    /// Entries of a list from both origins, sorted, each once.
    pub fn union(&self, kind: ListKind, family: Family) -> Vec<Entry> {
        let (a, b) = (
            self.list(Origin::Cli, kind, family),
            self.list(Origin::Policy, kind, family),
        );
        if b.is_empty() {
            return a.iter().collect();
        }
        let mut out: Vec<Entry> = a.iter().chain(b.iter()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Entries in the union of a list, without building it.
    pub fn union_len(&self, kind: ListKind, family: Family) -> usize {
        let (a, b) = (
            self.list(Origin::Cli, kind, family),
            self.list(Origin::Policy, kind, family),
        );
        if b.is_empty() {
            a.len()
        } else {
            self.union(kind, family).len()
        }
    }

    /// The items of /16 and shorter of a trie's lists (both origins), for the root tables.
    pub fn short_items(&self, trie: u32, family: Family) -> Vec<Item> {
        let mut out = Vec::new();
        for kind in ListKind::ALL.into_iter().filter(|k| k.trie() == trie) {
            for origin in Origin::ALL {
                let list = self.list(origin, kind, family);
                let w = list.stride();
                // Scan the length words only: a million entries take a millisecond.
                for (i, chunk) in list.words().chunks_exact(w).enumerate() {
                    if (chunk[w - 1] & 0xff) as u32 <= filter_common::trie::ROOT_BITS {
                        let e = list.get(i);
                        out.push(Item {
                            addr: e.addr,
                            len: e.len,
                            verdict: kind.verdict() as u8,
                        });
                    }
                }
            }
        }
        out
    }

    /// The root tables this generation implies for a trie and family.
    pub fn root_tables(&self, trie: u32, family: Family) -> RootTables {
        RootTables::of(
            &self.short_items(trie, family),
            &self.partition_roots(trie, family),
        )
    }

    /// The first node of each partition (/16) of a trie and family.
    pub fn partition_roots(&self, trie: u32, family: Family) -> BTreeMap<u16, u32> {
        self.chunks[trie as usize][family as usize]
            .iter()
            .filter(|(r, _)| u32::from(r.depth) == filter_common::trie::ROOT_BITS)
            .map(|(r, e)| (r.p16(), e.first))
            .collect()
    }

    /// Refuse chunks that reach beyond a pool of `pool_nodes` or overlap.
    pub fn check_pool(&self, pool_nodes: u32) -> Result<()> {
        let mut extents: Vec<Extent> = self
            .chunks
            .iter()
            .flatten()
            .flat_map(|p| p.values().copied())
            .collect();
        extents.sort_unstable_by_key(|e| e.first);
        if extents.last().is_some_and(|e| e.end() > pool_nodes)
            || extents.windows(2).any(|w| w[0].end() > w[1].first)
        {
            bail!("the snapshot's chunks do not fit the list pool: the pin directory was changed by hand; run `floodgate detach --all` and attach again");
        }
        Ok(())
    }

    /// Nodes the chunks occupy.
    pub fn pool_in_use(&self) -> u64 {
        self.chunks
            .iter()
            .flatten()
            .flat_map(|p| p.values())
            .map(|e| u64::from(e.count))
            .sum()
    }

    fn policy_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.policy).expect("plain data serializes")
    }

    /// Words [`Snapshot::encode_into`] writes, with the policy already serialized.
    fn encoded_len_with(&self, policy: &[u8]) -> usize {
        HEADER_WORDS
            + self
                .lists
                .iter()
                .flatten()
                .flatten()
                .map(|l| l.words.len())
                .sum::<usize>()
            + CHUNK_WORDS
                * self
                    .chunks
                    .iter()
                    .flatten()
                    .map(BTreeMap::len)
                    .sum::<usize>()
            + policy.len().div_ceil(8)
    }

    pub fn encode(&self) -> Vec<u64> {
        let policy = self.policy_bytes();
        let mut words = vec![0; self.encoded_len_with(&policy)];
        self.encode_into(&policy, &mut words);
        words
    }

    /// Write the encoding into `out` (exactly `encoded_len_with` words): straight into a new
    /// snapshot map, with no copy in between.
    fn encode_into(&self, policy: &[u8], out: &mut [u64]) {
        let (header, mut rest) = out.split_at_mut(HEADER_WORDS);
        header.fill(0);
        header[0] = MAGIC;
        header[1] = FORMAT;
        header[2] = self.generation;
        for (i, l) in self.lists.iter().flatten().flatten().enumerate() {
            header[COUNTS_AT + i] = l.len() as u64;
        }
        for (i, p) in self.chunks.iter().flatten().enumerate() {
            header[PARTS_AT + i] = p.len() as u64;
        }
        header[POLICY_AT] = policy.len() as u64;
        for l in self.lists.iter().flatten().flatten() {
            let (dst, tail) = rest.split_at_mut(l.words.len());
            dst.copy_from_slice(l.words());
            rest = tail;
        }
        for chunks in self.chunks.iter().flatten() {
            for (region, extent) in chunks {
                let (dst, tail) = rest.split_at_mut(CHUNK_WORDS);
                dst[0] = (region.start >> 64) as u64;
                dst[1] = region.start as u64;
                dst[2] = u64::from(region.depth);
                dst[3] = u64::from(extent.first) << 32 | u64::from(extent.count);
                rest = tail;
            }
        }
        for (w, chunk) in rest.iter_mut().zip(policy.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
    }

    pub fn decode(words: &[u64]) -> Result<Snapshot> {
        Self::decode_with(words, |r| Words::Owned(words[r].to_vec()))
    }

    /// Decode `words`, keeping each list's words as `keep` makes them.
    fn decode_with(words: &[u64], keep: impl Fn(Range<usize>) -> Words) -> Result<Snapshot> {
        if words.len() < HEADER_WORDS || words[0] != MAGIC {
            bail!("not a floodgate snapshot");
        }
        if words[1] != FORMAT {
            bail!(
                "snapshot format {} is not the {FORMAT} this floodgate reads: it was written by another version; run `floodgate detach --all` and attach again",
                words[1]
            );
        }
        let mut s = Snapshot {
            generation: words[2],
            ..Default::default()
        };
        if words[COUNTS_AT..PARTS_AT]
            .iter()
            .any(|&n| n > u64::from(LIST_CAPACITY))
            || words[PARTS_AT..POLICY_AT]
                .iter()
                .any(|&n| n > u64::from(u32::MAX))
            || words[POLICY_AT] > 16 << 20
        {
            bail!("snapshot is corrupt: counts beyond any list");
        }
        let mut at = HEADER_WORDS;
        let mut take = |n: u64, w: u64| -> Result<Range<usize>> {
            let len = n
                .checked_mul(w)
                .and_then(|l| usize::try_from(l).ok())
                .context("snapshot is corrupt")?;
            let end = at.checked_add(len).context("snapshot is corrupt")?;
            if end > words.len() {
                bail!("snapshot is truncated");
            }
            at = end;
            Ok(end - len..end)
        };
        let mut i = COUNTS_AT;
        for origin in Origin::ALL {
            for kind in ListKind::ALL {
                for family in Family::ALL {
                    let n = words[i];
                    i += 1;
                    let range = take(n, words_per_entry(family) as u64)?;
                    EntryList::new(family).check(&words[range.clone()])?;
                    s.list_mut(origin, kind, family).words = keep(range);
                }
            }
        }
        let mut i = PARTS_AT;
        for trie in 0..2 {
            for family in Family::ALL {
                let n = words[i];
                i += 1;
                let range = take(n, CHUNK_WORDS as u64)?;
                for w in words[range].chunks_exact(CHUNK_WORDS) {
                    let region = Region {
                        start: u128::from(w[0]) << 64 | u128::from(w[1]),
                        depth: w[2] as u8,
                    };
                    let extent = Extent {
                        first: (w[3] >> 32) as u32,
                        count: w[3] as u32,
                    };
                    if w[2] < u64::from(filter_common::trie::ROOT_BITS)
                        || w[2] >= u64::from(family.bits())
                        || region.start != crate::lists::compile::masked(region.start, w[2] as u32)
                        || extent.first == 0
                        || extent.count == 0
                        || extent.first.checked_add(extent.count).is_none()
                        || s.chunks[trie][family as usize]
                            .insert(region, extent)
                            .is_some()
                    {
                        bail!("snapshot is corrupt: a bad chunk extent");
                    }
                }
            }
        }
        let bytes = words[POLICY_AT] as usize;
        let range = take(bytes.div_ceil(8) as u64, 1)?;
        let raw: Vec<u8> = words[range]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(bytes)
            .collect();
        s.policy = serde_json::from_slice(&raw).context("the snapshot's policy is corrupt")?;
        Ok(s)
    }

    /// Store as generation `self.generation` on bpffs, replacing a leftover of the same number
    /// (from a change that was cut short before it took effect).
    pub fn store(&self, pins: &PinDir) -> Result<()> {
        let policy = self.policy_bytes();
        let n = self.encoded_len_with(&policy);
        let map = create_mmapable_array::<u64>("fg_snapshot", n as u32)
            .context("cannot create the snapshot map")?;
        {
            let mut mapped = Mapped::<u64>::new(&map, true).context("cannot map the snapshot")?;
            self.encode_into(&policy, &mut mapped.as_mut_slice()[..n]);
        }
        let path = pins.snapshot(self.generation);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", crate::text::path(&path)))?;
        }
        map.pin(&path)
            .with_context(|| format!("cannot pin {}", crate::text::path(&path)))?;
        Ok(())
    }

    pub fn load(pins: &PinDir, generation: u64) -> Result<Snapshot> {
        let path = pins.snapshot(generation);
        let map = aya::maps::MapData::from_pin(&path).with_context(|| {
            format!(
                "the record of generation {generation} ({}) is missing: the pin directory was changed by hand; run `floodgate detach --all` and attach again",
                crate::text::path(&path)
            )
        })?;
        let mapped = Arc::new(
            Mapped::<u64>::new(&map, false)
                .with_context(|| format!("cannot map {}", crate::text::path(&path)))?,
        );
        let s = Snapshot::decode_with(mapped.as_slice(), |r| Words::Mapped(Arc::clone(&mapped), r))
            .with_context(|| format!("reading {}", crate::text::path(&path)))?;
        if s.generation != generation {
            bail!(
                "{} holds generation {}, not {generation}: run `floodgate detach --all` and attach again",
                crate::text::path(&path),
                s.generation
            );
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let mut s = Snapshot {
            generation: 42,
            ..Default::default()
        };
        let sorted = |family, texts: &[&str]| {
            let mut v: Vec<Entry> = texts
                .iter()
                .map(|t| Entry::of(filter_common::cidr::parse_entry(t).unwrap()))
                .collect();
            v.sort_unstable();
            EntryList::from_sorted(family, v)
        };
        *s.list_mut(Origin::Cli, ListKind::Block, Family::V4) =
            sorted(Family::V4, &["10.0.0.0/8", "192.0.2.7", "0.0.0.0/0"]);
        *s.list_mut(Origin::Policy, ListKind::Allow, Family::V6) =
            sorted(Family::V6, &["2001:db8::/32", "::/0", "2001:db8::1"]);
        *s.list_mut(Origin::Policy, ListKind::Protected, Family::V4) =
            sorted(Family::V4, &["203.0.113.0/24"]);
        s.policy.rule_slots.insert("r".into(), 3);
        s.policy.policy.rules.push(crate::policy::Rule {
            name: "r".into(),
            drop: true,
            mode: crate::policy::RuleMode::Monitor,
            preset: Some("tcp-flags".into()),
            matches: crate::policy::presets::expand("tcp-flags").unwrap(),
        });
        s.chunks[0][0].insert(Region::partition(0x0a00), Extent { first: 1, count: 3 });
        s.chunks[1][1].insert(
            Region::partition(0x2001),
            Extent {
                first: 4,
                count: u32::MAX >> 1,
            },
        );
        s.chunks[0][1].insert(
            Region {
                start: 0x2001_0db8_0000_0000_0000_0000_0000_0000,
                depth: 32,
            },
            Extent { first: 2, count: 1 },
        );
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn entry_lists_merge_and_remove_runs() {
        let e = |t: &str| Entry::of(filter_common::cidr::parse_entry(t).unwrap());
        for (family, texts) in [
            (
                Family::V4,
                [
                    "10.0.0.0/8",
                    "10.0.0.0/9",
                    "10.1.2.3",
                    "192.0.2.0/24",
                    "192.0.2.7",
                ],
            ),
            (
                Family::V6,
                [
                    "::/0",
                    "2001:db8::/32",
                    "2001:db8::/48",
                    "2001:db8::1",
                    "fd00::/8",
                ],
            ),
        ] {
            let mut all: Vec<Entry> = texts.iter().map(|t| e(t)).collect();
            all.sort_unstable();
            let list = EntryList::from_sorted(family, all.iter().copied());
            assert_eq!(list.iter().collect::<Vec<_>>(), all);
            let odd: Vec<Entry> = all.iter().copied().skip(1).step_by(2).collect();
            let even: Vec<Entry> = all.iter().copied().step_by(2).collect();
            let base = EntryList::from_sorted(family, even.iter().copied());
            assert_eq!(base.merged(&odd), list);
            assert_eq!(list.without(&odd), base);
            assert_eq!(list.without(&all).len(), 0);
            assert!(all.iter().all(|x| list.contains(x)));
            assert!(!base.contains(&odd[0]));
        }
    }

    #[test]
    fn corrupt_snapshots_are_refused_not_panicked_on() {
        let mut s = Snapshot::default();
        *s.list_mut(Origin::Cli, ListKind::Block, Family::V4) = EntryList::from_sorted(
            Family::V4,
            ["10.0.0.0/8", "10.1.0.0/16"]
                .iter()
                .map(|t| Entry::of(filter_common::cidr::parse_entry(t).unwrap())),
        );
        s.chunks[0][0].insert(Region::partition(0x0a01), Extent { first: 1, count: 2 });
        let good = s.encode();
        assert!(Snapshot::decode(&good).is_ok());
        // Every single-word corruption: refused or decoded, never a panic.
        let mut rng = 1u64;
        for i in 0..good.len() {
            for v in [0, 1, u64::MAX, 1 << 63, (1 << 63) - 1, 40, 0xffff_ffff] {
                let mut w = good.clone();
                w[i] = v;
                let _ = Snapshot::decode(&w);
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                w[i] ^= rng;
                let _ = Snapshot::decode(&w);
            }
        }
        // A length beyond the family, host bits, disorder: refused.
        for bad in [(16 << 8) | 40, (0x0a00_0001 << 8) | 8] {
            let mut w = good.clone();
            w[HEADER_WORDS] = bad;
            assert!(Snapshot::decode(&w).is_err(), "{bad:#x}");
        }
        let mut w = good.clone();
        w.swap(HEADER_WORDS, HEADER_WORDS + 1);
        assert!(Snapshot::decode(&w).is_err(), "unsorted");
        // A chunk region with host bits, or deeper than the family: refused.
        let chunk = HEADER_WORDS + 2;
        for (at, bad) in [(1, 1), (2, 32), (2, 8)] {
            let mut w = good.clone();
            w[chunk + at] = bad;
            assert!(Snapshot::decode(&w).is_err(), "chunk word {at} = {bad}");
        }
    }

    #[test]
    fn refuses_garbage() {
        assert!(Snapshot::decode(&[0; 20]).is_err());
        let mut w = Snapshot::default().encode();
        w[COUNTS_AT] = 1000; // claims entries that are not there
        assert!(Snapshot::decode(&w).is_err());
    }
}
