//! Compiling the lists into the verdict trie of `filter_common::trie`: pure functions from
//! entries to the exact words the program reads. Nothing here touches the kernel.
//!
//! - [`compile_partition`]: the nodes of one /16 from the entries longer than /16 inside it,
//!   breadth first, child positions relative to the partition's first node.
//! - [`RootTables::of`]: the root cells and partition entries of a family from the entries of
//!   /16 and shorter and the partition directory.

use std::collections::BTreeMap;

use filter_common::trie::{
    self, mixed_bits, part_entry, Family, Node, NodeMeta, TrieMemory, CELL_ALLOW, CELL_MIXED,
    NODE_CELLS, NODE_WORDS, ROOT_BITS, ROOT_CELLS, ROOT_WORDS, STRIDE_BITS,
};

/// A list entry as the trie sees it: the address aligned to the top of 128 bits (IPv4 in the
/// first 32), its length, and the verdict of its list (`CELL_BLOCK` or `CELL_ALLOW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    pub addr: u128,
    pub len: u8,
    pub verdict: u8,
}

impl Item {
    /// The /16 (the partition) an item lies in.
    pub fn p16(&self) -> u16 {
        (self.addr >> 112) as u16
    }
}

/// The 8 bits of `addr` below the first `depth` bits.
fn byte_at(addr: u128, depth: u32) -> usize {
    ((addr >> (128 - depth - STRIDE_BITS)) & 0xff) as usize
}

/// Where a partition lives in the node pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first: u32,
    pub count: u32,
}

impl Extent {
    pub fn end(&self) -> u32 {
        self.first + self.count
    }
}

/// The nodes of one partition, breadth first; `meta[i].base` counts from the partition's first
/// node (see [`Partition::placed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partition {
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
}

impl Partition {
    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The meta entries with child positions made absolute for a partition placed at `first`.
    pub fn placed(&self, first: u32) -> impl Iterator<Item = NodeMeta> + '_ {
        self.meta.iter().map(move |m| NodeMeta {
            base: m.base + first,
            ..*m
        })
    }
}

/// A node while building: cells, and the in-level index of its first child.
struct Building {
    cells: [u64; NODE_WORDS],
    first_child: u32,
}

/// Compile one partition. `items` lie inside one /16, are longer than /16 and are sorted by
/// (address, length); the partition's own cover (prefixes of /16 and shorter) is applied by
/// the lookup, not here, so this depends on these items alone.
pub fn compile_partition(family: Family, items: &[Item]) -> Partition {
    debug_assert!(items.windows(2).all(|w| w[0] <= w[1]));
    debug_assert!(items
        .iter()
        .all(|i| u32::from(i.len) > ROOT_BITS && i.p16() == items[0].p16()));
    let mut levels: Vec<Vec<Building>> = Vec::new();
    if !items.is_empty() {
        build(family, ROOT_BITS, items, trie::CELL_NONE, 0, &mut levels);
    }
    // Breadth first: level by level. Depth-first building appends each level's nodes left to
    // right, and a node's children one after another, so children are contiguous.
    let mut offsets = Vec::with_capacity(levels.len() + 1);
    let mut total = 0u32;
    for level in &levels {
        offsets.push(total);
        total += level.len() as u32;
    }
    offsets.push(total);
    let mut out = Partition {
        nodes: Vec::with_capacity(total as usize),
        meta: Vec::with_capacity(total as usize),
    };
    for (depth, level) in levels.iter().enumerate() {
        for b in level {
            let mut before = [0u8; NODE_WORDS];
            let mut seen = 0u32;
            for (w, word) in b.cells.iter().enumerate() {
                before[w] = seen as u8;
                seen += mixed_bits(*word).count_ones();
            }
            out.nodes.push(Node { cells: b.cells });
            out.meta.push(NodeMeta {
                base: if seen == 0 {
                    0
                } else {
                    offsets[depth + 1] + b.first_child
                },
                reserved: 0,
                before,
            });
        }
    }
    out
}

/// Build the node for the region of `items` at `depth` (bits resolved so far) under `cover`,
/// appending it (and, depth first, its subtree) to `levels`.
fn build(
    family: Family,
    depth: u32,
    items: &[Item],
    cover: u64,
    level: usize,
    levels: &mut Vec<Vec<Building>>,
) {
    if levels.len() <= level {
        levels.push(Vec::new());
    }
    let mut cell_cover = [cover; NODE_CELLS as usize];
    // Items ending within this stride cover a run of cells; longer ones go one level down.
    let mut deeper: [Option<(usize, usize)>; NODE_CELLS as usize] = [None; NODE_CELLS as usize];
    for (i, item) in items.iter().enumerate() {
        let len = u32::from(item.len);
        let first = byte_at(item.addr, depth);
        if len <= depth + STRIDE_BITS {
            let count = 1usize << (depth + STRIDE_BITS - len);
            for c in &mut cell_cover[first..first + count] {
                *c = (*c).max(u64::from(item.verdict));
            }
        } else {
            // Sorted by address: the deeper items of a cell are contiguous.
            let range = deeper[first].get_or_insert((i, i));
            range.1 = i + 1;
        }
    }
    let index = levels[level].len();
    levels[level].push(Building {
        cells: [0; NODE_WORDS],
        first_child: 0,
    });
    let mut cells = [0u64; NODE_WORDS];
    let mut children: Vec<(u64, Vec<Item>)> = Vec::new();
    for c in 0..NODE_CELLS as usize {
        let c_cover = cell_cover[c];
        let mut value = c_cover;
        if let Some((a, b)) = deeper[c] {
            // Entries that cannot raise the verdict (allow beats block beats none) change
            // nothing below: leave them out, and skip the child if none is left.
            let inner: Vec<Item> = items[a..b]
                .iter()
                .filter(|i| {
                    u32::from(i.len) > depth + STRIDE_BITS && u64::from(i.verdict) > c_cover
                })
                .copied()
                .collect();
            // (Under an allowlisted cover nothing is left: no verdict beats allow.)
            if !inner.is_empty() {
                value = CELL_MIXED;
                children.push((c_cover, inner));
            }
        }
        cells[c / 32] |= value << ((c % 32) * 2);
    }
    let first_child = levels.get(level + 1).map_or(0, |l| l.len() as u32);
    levels[level][index] = Building { cells, first_child };
    debug_assert!(children.is_empty() || depth + STRIDE_BITS < family.bits());
    for (c_cover, inner) in children {
        build(
            family,
            depth + STRIDE_BITS,
            &inner,
            c_cover,
            level + 1,
            levels,
        );
    }
}

/// The root cells and partition entries of one family for one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootTables {
    pub words: Vec<u64>,
    pub parts: Vec<u64>,
}

impl RootTables {
    /// From the items of /16 and shorter (their covers) and the partitions in the pool.
    pub fn of(short: &[Item], partitions: &BTreeMap<u16, Extent>) -> RootTables {
        let mut cover = vec![0u8; ROOT_CELLS as usize];
        for item in short {
            debug_assert!(u32::from(item.len) <= ROOT_BITS);
            let first = (item.addr >> 112) as usize;
            let count = 1usize << (ROOT_BITS - u32::from(item.len));
            for c in &mut cover[first..first + count] {
                *c = (*c).max(item.verdict);
            }
        }
        let mut words = vec![0u64; ROOT_WORDS as usize];
        let mut parts = vec![0u64; ROOT_CELLS as usize];
        for (p, &c) in cover.iter().enumerate() {
            let c = u64::from(c);
            let cell = match partitions.get(&(p as u16)) {
                Some(extent) if c != CELL_ALLOW => {
                    parts[p] = part_entry(extent.first, c);
                    CELL_MIXED
                }
                _ => c,
            };
            words[p / 32] |= cell << ((p % 32) * 2);
        }
        RootTables { words, parts }
    }
}

/// A compiled family held in memory, read by the same lookup the program runs: what the
/// tests compare with plain prefix containment.
pub struct Image {
    pub family: Family,
    pub root: RootTables,
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
}

impl Image {
    /// Compile `items` (sorted) completely, partitions packed from node 1.
    pub fn compile(family: Family, items: &[Item]) -> Image {
        let short: Vec<Item> = items
            .iter()
            .filter(|i| u32::from(i.len) <= ROOT_BITS)
            .copied()
            .collect();
        let mut nodes = vec![Node::default()];
        let mut meta = vec![NodeMeta::default()];
        let mut partitions = BTreeMap::new();
        let long: Vec<Item> = items
            .iter()
            .filter(|i| u32::from(i.len) > ROOT_BITS)
            .copied()
            .collect();
        for group in long.chunk_by(|a, b| a.p16() == b.p16()) {
            let part = compile_partition(family, group);
            let first = nodes.len() as u32;
            meta.extend(part.placed(first));
            nodes.extend_from_slice(&part.nodes);
            partitions.insert(
                group[0].p16(),
                Extent {
                    first,
                    count: part.len(),
                },
            );
        }
        Image {
            family,
            root: RootTables::of(&short, &partitions),
            nodes,
            meta,
        }
    }

    /// The verdict the program would give `addr` (top-aligned).
    pub fn lookup(&self, addr: u128) -> u64 {
        trie::lookup(self, 0, trie::TRIE_LISTS, self.family, (addr >> 64) as u64, addr as u64)
    }
}

impl TrieMemory for Image {
    fn root_word(&self, index: u32) -> u64 {
        let base = trie::table(0, trie::TRIE_LISTS, self.family) * ROOT_WORDS;
        index
            .checked_sub(base)
            .and_then(|i| self.root.words.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    fn part(&self, index: u32) -> u64 {
        let base = trie::table(0, trie::TRIE_LISTS, self.family) * ROOT_CELLS;
        index
            .checked_sub(base)
            .and_then(|i| self.root.parts.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    fn node_word(&self, node: u32, word: u32) -> u64 {
        self.nodes
            .get(node as usize)
            .map_or(0, |n| n.cells[word as usize])
    }

    fn child_base(&self, node: u32, word: u32) -> u32 {
        self.meta
            .get(node as usize)
            .map_or(0, |m| m.child_base(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::trie::{CELL_BLOCK, CELL_NONE};
    use rand::{Rng, SeedableRng};

    fn item(text: &str, verdict: u64) -> Item {
        let p = filter_common::cidr::parse_entry(text).unwrap();
        Item {
            addr: p.top_aligned(),
            len: p.prefix_len(),
            verdict: verdict as u8,
        }
    }

    /// The plain definition: the largest verdict among the items containing `addr`.
    fn reference(items: &[Item], addr: u128) -> u64 {
        items
            .iter()
            .filter(|i| i.len == 0 || (addr ^ i.addr) >> (128 - u32::from(i.len)) == 0)
            .map(|i| u64::from(i.verdict))
            .max()
            .unwrap_or(CELL_NONE)
    }

    fn sorted(mut v: Vec<Item>) -> Vec<Item> {
        v.sort_unstable();
        v
    }

    #[test]
    fn single_prefixes_and_their_edges() {
        for (text, inside, outside) in [
            ("10.1.2.0/24", "10.1.2.255", "10.1.3.0"),
            ("10.1.2.3", "10.1.2.3", "10.1.2.4"),
            ("10.0.0.0/8", "10.200.0.1", "11.0.0.0"),
            ("10.1.2.128/25", "10.1.2.128", "10.1.2.127"),
            (
                "2001:db8:bad::/48",
                "2001:db8:bad:ffff::1",
                "2001:db8:bae::",
            ),
            ("2001:db8::5", "2001:db8::5", "2001:db8::4"),
            ("2001:db8::/29", "2001:dbf:ffff::", "2001:dc0::"),
        ] {
            let it = item(text, CELL_BLOCK);
            let family = filter_common::cidr::parse_entry(text).unwrap().family();
            let image = Image::compile(family, &[it]);
            let addr = |t: &str| filter_common::cidr::parse_entry(t).unwrap().top_aligned();
            assert_eq!(image.lookup(addr(inside)), CELL_BLOCK, "{text} {inside}");
            assert_eq!(image.lookup(addr(outside)), CELL_NONE, "{text} {outside}");
        }
    }

    #[test]
    fn allow_wins_at_any_depth() {
        let items = sorted(vec![
            item("2001:db8::/32", CELL_BLOCK),
            item("2001:db8:1:2::/64", CELL_ALLOW),
            item("2001:db8:1:2::7", CELL_BLOCK),
        ]);
        let image = Image::compile(Family::V6, &items);
        let addr = |t: &str| filter_common::cidr::parse_entry(t).unwrap().top_aligned();
        assert_eq!(image.lookup(addr("2001:db8:1:2::7")), CELL_ALLOW);
        assert_eq!(image.lookup(addr("2001:db8:1:3::7")), CELL_BLOCK);
    }

    #[test]
    fn pruned_entries_make_no_nodes() {
        // A /32 inside a blocked /24 and a /48 inside an allowed /32 change nothing.
        let image = Image::compile(
            Family::V4,
            &sorted(vec![
                item("10.1.2.0/24", CELL_BLOCK),
                item("10.1.2.3", CELL_BLOCK),
            ]),
        );
        assert_eq!(image.nodes.len(), 2, "null node and the /16 partition root");
        let image = Image::compile(
            Family::V6,
            &sorted(vec![
                item("2001:db8::/32", CELL_ALLOW),
                item("2001:db8:1::/48", CELL_BLOCK),
            ]),
        );
        assert_eq!(image.nodes.len(), 3, "null, /16 root and the /24 node");
    }

    fn random_items(rng: &mut rand::rngs::StdRng, family: Family, n: usize) -> Vec<Item> {
        let bits = family.bits() as u8;
        (0..n)
            .map(|_| {
                let len = rng.random_range(0..=bits);
                // Clustered so prefixes overlap at every depth.
                let mut addr: u128 =
                    (0x2001_0db8u128 << 96) ^ (rng.random::<u128>() >> rng.random_range(8..128));
                if family == Family::V4 {
                    addr &= u128::MAX << 96;
                }
                let addr = if len == 0 {
                    0
                } else {
                    addr & (u128::MAX << (128 - u32::from(len)))
                };
                Item {
                    addr,
                    len,
                    verdict: if rng.random_bool(0.3) {
                        CELL_ALLOW
                    } else {
                        CELL_BLOCK
                    } as u8,
                }
            })
            .collect()
    }

    #[test]
    fn compiled_lookup_matches_containment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for family in Family::ALL {
            for round in 0..20 {
                let items = sorted(random_items(&mut rng, family, 1 + round * 10));
                let image = Image::compile(family, &items);
                for _ in 0..5000 {
                    let probe = if rng.random_bool(0.6) {
                        let i = items[rng.random_range(0..items.len())];
                        let host = if u32::from(i.len) == 128 {
                            0
                        } else {
                            rng.random::<u128>() >> i.len
                        };
                        i.addr | host
                    } else {
                        rng.random::<u128>()
                    };
                    let probe = if family == Family::V4 {
                        probe & (u128::MAX << 96)
                    } else {
                        probe
                    };
                    assert_eq!(
                        image.lookup(probe),
                        reference(&items, probe),
                        "{family:?} {probe:#x} {items:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn children_are_contiguous_and_in_cell_order() {
        let items = sorted(vec![
            item("10.1.1.1", CELL_BLOCK),
            item("10.1.3.1", CELL_BLOCK),
            item("10.1.2.1", CELL_BLOCK),
        ]);
        let image = Image::compile(Family::V4, &items);
        // null, the 10.1/16 node, then one /24 node per listed address, in address order.
        assert_eq!(image.nodes.len(), 5);
        for (i, third) in [1u32, 2, 3].iter().enumerate() {
            let node = &image.nodes[2 + i];
            assert_eq!(
                trie::cell_of(node.cells[0], 1),
                CELL_BLOCK,
                "/24 10.1.{third}"
            );
        }
    }
}
