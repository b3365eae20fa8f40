//! Compiling a list (a set of prefixes) into the structures the XDP program reads; the layout
//! is described in filter-common. Each list owns 2 bits of every summary cell and 1 bit of every
//! filter slot, so one list is recompiled without touching the other's bits.

use std::collections::{HashMap, HashSet};

use filter_common::{
    mask_v6, summary_cell, summary_state, v6_filter48_bit, v6_filter_cell, HostBitmap, ListKind,
    V6Block, V6PrefixKey, STATE_FULL, STATE_PARTIAL, V4_SUMMARY_WORDS, V6_BLOCK_FULL,
    V6_FILTER32_WORDS, V6_SUMMARY16_WORDS,
};

/// Bits of a summary word that belong to `kind` (2 of every 4).
pub const fn summary_mask(kind: ListKind) -> u64 {
    match kind {
        ListKind::Allow => 0x3333_3333_3333_3333,
        ListKind::Block => 0xCCCC_CCCC_CCCC_CCCC,
    }
}

/// Bits of a filter word that belong to `kind` (1 of every 2).
pub const fn filter_mask(kind: ListKind) -> u64 {
    match kind {
        ListKind::Allow => 0x5555_5555_5555_5555,
        ListKind::Block => 0xAAAA_AAAA_AAAA_AAAA,
    }
}

fn set_cell(words: &mut [u64], index: u32, kind: ListKind, state: u64) {
    let (w, shift) = summary_cell(index);
    let shift = shift + 2 * kind as u32;
    let word = &mut words[w as usize];
    *word = (*word & !(3 << shift)) | (state << shift);
}

fn cell(words: &[u64], index: u32, kind: ListKind) -> u64 {
    let (w, shift) = summary_cell(index);
    summary_state(words[w as usize], shift, kind)
}

/// One list's IPv4 part.
pub struct CompiledV4 {
    pub summary: Vec<u64>,
    pub hosts: HashMap<u32, HostBitmap>,
}

pub fn compile_v4(kind: ListKind, prefixes: impl IntoIterator<Item = (u32, u8)>) -> CompiledV4 {
    let mut summary = vec![0u64; V4_SUMMARY_WORDS as usize];
    let mut hosts: HashMap<u32, HostBitmap> = HashMap::new();
    for (addr, len) in prefixes {
        if len <= 24 {
            let first = addr >> 8;
            let count = 1u32 << (24 - len);
            for block in first..first + count {
                set_cell(&mut summary, block, kind, STATE_FULL);
            }
        } else {
            let bitmap = hosts.entry(addr >> 8).or_default();
            let first = addr & 0xff;
            for host in first..first + (1 << (32 - len)) {
                bitmap.words[(host >> 6) as usize] |= 1 << (host & 63);
            }
        }
    }
    // A block already covered whole needs no host bitmap.
    hosts.retain(|&block, _| cell(&summary, block, kind) != STATE_FULL);
    for &block in hosts.keys() {
        set_cell(&mut summary, block, kind, STATE_PARTIAL);
    }
    CompiledV4 { summary, hosts }
}

/// One list's IPv6 part.
pub struct CompiledV6 {
    pub summary16: Vec<u64>,
    pub filter32: Vec<u64>,
    pub blocks: HashMap<u32, V6Block>,
    pub long: HashSet<V6PrefixKey>,
}

fn v6_split(addr: u128) -> (u64, u64) {
    ((addr >> 64) as u64, addr as u64)
}

pub fn compile_v6(kind: ListKind, prefixes: impl IntoIterator<Item = (u128, u8)>) -> CompiledV6 {
    let mut summary16 = vec![0u64; V6_SUMMARY16_WORDS as usize];
    let mut blocks: HashMap<u32, V6Block> = HashMap::new();
    let mut long: HashSet<V6PrefixKey> = HashSet::new();
    for (addr, len) in prefixes {
        let top32 = (addr >> 96) as u32;
        if len <= 16 {
            let first = top32 >> 16;
            for p in first..first + (1u32 << (16 - len)) {
                set_cell(&mut summary16, p, kind, STATE_FULL);
            }
        } else if len <= 32 {
            let count = 1u64 << (32 - len);
            for i in 0..count {
                blocks.entry(top32 + i as u32).or_default().flags |= V6_BLOCK_FULL;
            }
        } else {
            let (hi, lo) = v6_split(addr);
            let (hi, lo) = mask_v6(hi, lo, u32::from(len));
            let masked = (u128::from(hi) << 64) | u128::from(lo);
            long.insert(V6PrefixKey {
                addr: masked.to_be_bytes(),
                len: u32::from(len),
            });
            let bit = u32::from(len) - 33;
            let block = blocks.entry(top32).or_default();
            block.long_lengths[(bit / 64) as usize] |= 1 << (bit % 64);
            if len >= 48 {
                block.filter48 |= 1 << v6_filter48_bit(hi);
            }
        }
    }
    blocks.retain(|&top32, block| {
        if cell(&summary16, top32 >> 16, kind) == STATE_FULL {
            return false;
        }
        if block.flags & V6_BLOCK_FULL != 0 {
            block.long_lengths = [0, 0];
            block.filter48 = 0;
        }
        true
    });
    // Every long prefix stays in `long`, even under a covering one: the map is also their
    // record, and the program never looks there for a /32 that is covered whole.
    let mut filter32 = vec![0u64; V6_FILTER32_WORDS as usize];
    for &top32 in blocks.keys() {
        set_cell(&mut summary16, top32 >> 16, kind, STATE_PARTIAL);
        let (w, shift) = v6_filter_cell(top32);
        filter32[w as usize] |= 1 << (shift + kind as u32);
    }
    CompiledV6 {
        summary16,
        filter32,
        blocks,
        long,
    }
}

/// The lookup the XDP program performs, over compiled structures: used by tests to check the
/// compiler against plain prefix containment.
pub fn lookup_v4(c: &CompiledV4, kind: ListKind, addr: u32) -> bool {
    match cell(&c.summary, addr >> 8, kind) {
        STATE_FULL => true,
        STATE_PARTIAL => c
            .hosts
            .get(&(addr >> 8))
            .is_some_and(|b| b.contains(addr as u8)),
        _ => false,
    }
}

pub fn lookup_v6(c: &CompiledV6, kind: ListKind, addr: u128) -> bool {
    let top32 = (addr >> 96) as u32;
    match cell(&c.summary16, top32 >> 16, kind) {
        STATE_FULL => return true,
        STATE_PARTIAL => {}
        _ => return false,
    }
    let (w, shift) = v6_filter_cell(top32);
    if (c.filter32[w as usize] >> (shift + kind as u32)) & 1 == 0 {
        return false;
    }
    let Some(block) = c.blocks.get(&top32) else {
        return false;
    };
    if block.flags & V6_BLOCK_FULL != 0 {
        return true;
    }
    let (hi, lo) = v6_split(addr);
    let in48 = (block.filter48 >> v6_filter48_bit(hi)) & 1 == 1;
    (0..96u32).any(|bit| {
        block.long_lengths[(bit / 64) as usize] & (1 << (bit % 64)) != 0
            && (bit + 33 < 48 || in48)
            && {
                let len = 33 + bit;
                let (mh, ml) = mask_v6(hi, lo, len);
                let masked = (u128::from(mh) << 64) | u128::from(ml);
                c.long.contains(&V6PrefixKey {
                    addr: masked.to_be_bytes(),
                    len,
                })
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::Prefix;
    use rand::{Rng, SeedableRng};

    fn contains_v4(list: &[(u32, u8)], a: u32) -> bool {
        list.iter()
            .any(|&(p, l)| l == 0 || (a ^ p) >> (32 - u32::from(l)) == 0)
    }

    fn contains_v6(list: &[(u128, u8)], a: u128) -> bool {
        list.iter()
            .any(|&(p, l)| l == 0 || (a ^ p) >> (128 - u32::from(l)) == 0)
    }

    fn mask4(a: u32, l: u8) -> u32 {
        match Prefix::v4(a, l) {
            Prefix::V4 { addr, .. } => addr,
            Prefix::V6 { .. } => unreachable!(),
        }
    }

    fn mask6(a: u128, l: u8) -> u128 {
        match Prefix::v6(a, l) {
            Prefix::V6 { addr, .. } => addr,
            Prefix::V4 { .. } => unreachable!(),
        }
    }

    #[test]
    fn v4_compiled_lookup_matches_containment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for kind in ListKind::ALL {
            // Clustered addresses so that prefixes overlap and probes hit edges.
            let base = 0x0a00_0000u32;
            let list: Vec<(u32, u8)> = (0..300)
                .map(|_| {
                    let l = rng.random_range(8..=32u8);
                    (mask4(base | rng.random_range(0..1 << 20), l), l)
                })
                .collect();
            let c = compile_v4(kind, list.iter().copied());
            for _ in 0..50_000 {
                let a = base | rng.random_range(0..1 << 21);
                assert_eq!(lookup_v4(&c, kind, a), contains_v4(&list, a), "{a:#x}");
            }
            for &(p, l) in &list {
                assert!(lookup_v4(&c, kind, p));
                let last = p | if l == 32 { 0 } else { u32::MAX >> l };
                assert!(lookup_v4(&c, kind, last));
            }
            // The other list's bits stay untouched.
            let other = if kind == ListKind::Allow {
                ListKind::Block
            } else {
                ListKind::Allow
            };
            assert!(c.summary.iter().all(|w| w & summary_mask(other) == 0));
        }
    }

    #[test]
    fn v6_compiled_lookup_matches_containment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let base: u128 = 0x2001_0db8 << 96;
        let list: Vec<(u128, u8)> = (0..400)
            .map(|_| {
                let l = rng.random_range(12..=128u8);
                let a = base
                    ^ (u128::from(rng.random_range(0..1u32 << 24)) << 100)
                    ^ u128::from(rng.random::<u64>());
                (mask6(a, l), l)
            })
            .collect();
        let c = compile_v6(ListKind::Block, list.iter().copied());
        for &(p, _) in &list {
            assert!(lookup_v6(&c, ListKind::Block, p));
        }
        for _ in 0..50_000 {
            let a = base
                ^ (u128::from(rng.random_range(0..1u32 << 24)) << 100)
                ^ u128::from(rng.random::<u64>());
            assert_eq!(
                lookup_v6(&c, ListKind::Block, a),
                contains_v6(&list, a),
                "{a:#x}"
            );
        }
    }

    #[test]
    fn redundant_entries_collapse() {
        let c = compile_v4(ListKind::Block, [(0x0a00_0000, 8), (0x0a01_0203, 32)]);
        assert!(c.hosts.is_empty(), "a /32 inside a /8 needs no bitmap");
        let c = compile_v6(
            ListKind::Block,
            [(0x2001_0db8 << 96, 32), (0x2001_0db8 << 96 | 1, 128)],
        );
        // The /128 stays recorded, but its /32 is covered whole: no length is looked up.
        assert_eq!(c.long.len(), 1);
        assert_eq!(c.blocks.len(), 1);
        assert!(c
            .blocks
            .values()
            .all(|b| b.flags == V6_BLOCK_FULL && b.long_lengths == [0, 0]));
    }
}
