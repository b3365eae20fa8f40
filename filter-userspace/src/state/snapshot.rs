//! The controller's record of one generation: every list entry as the operator entered it and
//! where each partition lives in the node pool. One snapshot per generation is kept on bpffs
//! (`state/<generation>`, an mmapable array the program never reads), so `list`, `status` and
//! the next change work in a new process and always describe what the program enforces: the
//! generation word in `STATE` names the live snapshot.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use filter_common::cidr::Prefix;
use filter_common::trie::Family;
use filter_common::ListKind;

use super::pins::PinDir;
use super::raw::{create_mmapable_array, Mapped};
use crate::lists::compile::{Extent, Item, RootTables};

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

/// Everything one generation holds, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    /// Entries per list and family, sorted and without duplicates.
    pub lists: [[Vec<Entry>; 2]; 2],
    /// Partition (/16) -> its nodes, per family.
    pub partitions: [BTreeMap<u16, Extent>; 2],
}

const MAGIC: u64 = u64::from_be_bytes(*b"FGSNAP01");
const FORMAT: u64 = 1;
const HEADER_WORDS: usize = 16;

fn words_per_entry(family: Family) -> usize {
    match family {
        Family::V4 => 1,
        Family::V6 => 3,
    }
}

impl Snapshot {
    pub fn list(&self, kind: ListKind, family: Family) -> &[Entry] {
        &self.lists[kind as usize][family as usize]
    }

    pub fn list_mut(&mut self, kind: ListKind, family: Family) -> &mut Vec<Entry> {
        &mut self.lists[kind as usize][family as usize]
    }

    /// The items of /16 and shorter of both lists of a family, for the root tables.
    pub fn short_items(&self, family: Family) -> Vec<Item> {
        let mut out = Vec::new();
        for kind in ListKind::ALL {
            out.extend(
                self.list(kind, family)
                    .iter()
                    .filter(|e| u32::from(e.len) <= filter_common::trie::ROOT_BITS)
                    .map(|e| Item {
                        addr: e.addr,
                        len: e.len,
                        verdict: kind.verdict() as u8,
                    }),
            );
        }
        out
    }

    /// The root tables this generation implies for a family.
    pub fn root_tables(&self, family: Family) -> RootTables {
        RootTables::of(&self.short_items(family), &self.partitions[family as usize])
    }

    /// Nodes the partitions of both families occupy.
    pub fn pool_in_use(&self) -> u64 {
        self.partitions
            .iter()
            .flat_map(|p| p.values())
            .map(|e| u64::from(e.count))
            .sum()
    }

    pub fn encode(&self) -> Vec<u64> {
        let mut words = vec![0u64; HEADER_WORDS];
        words[0] = MAGIC;
        words[1] = FORMAT;
        words[2] = self.generation;
        let mut i = 4;
        for kind in ListKind::ALL {
            for family in Family::ALL {
                words[i] = self.list(kind, family).len() as u64;
                i += 1;
            }
        }
        words[8] = self.partitions[0].len() as u64;
        words[9] = self.partitions[1].len() as u64;
        for kind in ListKind::ALL {
            for family in Family::ALL {
                for e in self.list(kind, family) {
                    match family {
                        Family::V4 => words.push(((e.addr >> 96) as u64) << 8 | u64::from(e.len)),
                        Family::V6 => {
                            words.extend([(e.addr >> 64) as u64, e.addr as u64, u64::from(e.len)])
                        }
                    }
                }
            }
        }
        for parts in &self.partitions {
            for (&p16, extent) in parts {
                words.push(u64::from(p16));
                words.push(u64::from(extent.first) << 32 | u64::from(extent.count));
            }
        }
        words
    }

    pub fn decode(words: &[u64]) -> Result<Snapshot> {
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
        let mut at = HEADER_WORDS;
        let mut take = |n: usize| -> Result<&[u64]> {
            let slice = words.get(at..at + n).context("snapshot is truncated")?;
            at += n;
            Ok(slice)
        };
        let mut count = 4;
        for kind in ListKind::ALL {
            for family in Family::ALL {
                let n = words[count] as usize;
                count += 1;
                let w = words_per_entry(family);
                let raw = take(n * w)?;
                let list = s.list_mut(kind, family);
                list.reserve_exact(n);
                for chunk in raw.chunks_exact(w) {
                    list.push(match family {
                        Family::V4 => Entry {
                            addr: u128::from(chunk[0] >> 8) << 96,
                            len: chunk[0] as u8,
                        },
                        Family::V6 => Entry {
                            addr: u128::from(chunk[0]) << 64 | u128::from(chunk[1]),
                            len: chunk[2] as u8,
                        },
                    });
                }
            }
        }
        for family in Family::ALL {
            let n = words[8 + family as usize] as usize;
            let raw = take(2 * n)?;
            for pair in raw.chunks_exact(2) {
                s.partitions[family as usize].insert(
                    pair[0] as u16,
                    Extent {
                        first: (pair[1] >> 32) as u32,
                        count: pair[1] as u32,
                    },
                );
            }
        }
        Ok(s)
    }

    /// Store as generation `self.generation` on bpffs, replacing a leftover of the same number
    /// (from a change that was cut short before it took effect).
    pub fn store(&self, pins: &PinDir) -> Result<()> {
        let words = self.encode();
        let map = create_mmapable_array::<u64>("fg_snapshot", words.len() as u32)
            .context("cannot create the snapshot map")?;
        {
            let mut mapped = Mapped::<u64>::new(&map, true).context("cannot map the snapshot")?;
            mapped.as_mut_slice()[..words.len()].copy_from_slice(&words);
        }
        let path = pins.snapshot(self.generation);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        map.pin(&path)
            .with_context(|| format!("cannot pin {}", path.display()))?;
        Ok(())
    }

    pub fn load(pins: &PinDir, generation: u64) -> Result<Snapshot> {
        let path = pins.snapshot(generation);
        let map = aya::maps::MapData::from_pin(&path).with_context(|| {
            format!(
                "the record of generation {generation} ({}) is missing: the pin directory was changed by hand; run `floodgate detach --all` and attach again",
                path.display()
            )
        })?;
        let mapped = Mapped::<u64>::new(&map, false)
            .with_context(|| format!("cannot map {}", path.display()))?;
        let s = Snapshot::decode(mapped.as_slice())
            .with_context(|| format!("reading {}", path.display()))?;
        if s.generation != generation {
            bail!(
                "{} holds generation {}, not {generation}: run `floodgate detach --all` and attach again",
                path.display(),
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
        for t in ["10.0.0.0/8", "192.0.2.7", "0.0.0.0/0"] {
            let p = filter_common::cidr::parse_entry(t).unwrap();
            s.list_mut(ListKind::Block, Family::V4).push(Entry::of(p));
        }
        for t in ["2001:db8::/32", "::/0", "2001:db8::1"] {
            let p = filter_common::cidr::parse_entry(t).unwrap();
            s.list_mut(ListKind::Allow, Family::V6).push(Entry::of(p));
        }
        for l in s.lists.iter_mut().flatten() {
            l.sort_unstable();
        }
        s.partitions[0].insert(0x0a00, Extent { first: 1, count: 3 });
        s.partitions[1].insert(
            0x2001,
            Extent {
                first: 4,
                count: u32::MAX >> 1,
            },
        );
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Snapshot::decode(&[0; 20]).is_err());
        let mut w = Snapshot::default().encode();
        w[4] = 1000; // claims entries that are not there
        assert!(Snapshot::decode(&w).is_err());
    }
}
