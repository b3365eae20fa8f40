//! Compiling the lists into the verdict trie of `filter_common::trie`: pure functions from
//! entries to the exact words the program reads. Nothing here touches the kernel.
//!
//! - [`compile_chunk`]: the nodes of one chunk from the entries inside its region, breadth
//!   first, positions relative to the chunk's first node; [`build`] compiles a region's chunk
//!   and those it links to, and [`Built::place`] puts them in the pool.
//! - [`RootTables::of`]: the root cells and partition entries of a family from the entries of
//!   /16 and shorter and the partition directory.

use std::collections::BTreeMap;

use filter_common::trie::{
    self, mixed_bits, part_entry, Family, Node, NodeMeta, TrieMemory, CELL_ALLOW, CELL_MIXED,
    CELL_NONE, NODE_CELLS, NODE_WORDS, ROOT_BITS, ROOT_CELLS, ROOT_WORDS, SHAPE_SKIP, STRIDE_BITS,
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

/// The first `len` bits of `addr`, the rest zeroed.
pub fn masked(addr: u128, len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - len.min(128)))
    }
}

/// Where a chunk lives in the node pool.
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

/// The addresses that start with the first `depth` bits of `start`: what a chunk covers.
/// Ordered by start, then depth, so the chunks inside a region follow it in a `BTreeMap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region {
    pub start: u128,
    pub depth: u8,
}

impl Region {
    /// The region of a partition (a /16).
    pub fn partition(p16: u16) -> Region {
        Region {
            start: u128::from(p16) << 112,
            depth: ROOT_BITS as u8,
        }
    }

    /// The last address inside.
    pub fn last(&self) -> u128 {
        self.start | (u128::MAX >> self.depth)
    }

    pub fn contains(&self, addr: u128) -> bool {
        masked(addr, u32::from(self.depth)) == self.start
    }

    /// The partition this region lies in.
    pub fn p16(&self) -> u16 {
        (self.start >> 112) as u16
    }
}

/// Above this many items, a chunk holds only its first node and each MIXED cell links to a
/// chunk of its own: one change then rewrites a few small chunks, not a crowded /16. Each
/// link is one more step for the lookup, so chunks stay large: on a real country list (606k
/// IPv6 prefixes) 16384 adds no step to any walk, 1024 added up to three.
pub const CHUNK_ITEMS: usize = 16384;

#[cfg(test)]
thread_local! {
    /// Tests on this thread split chunks at this many items instead: links at every level
    /// with lists small enough to check exhaustively.
    pub static CHUNK_ITEMS_FOR_TEST: std::cell::Cell<usize> = const { std::cell::Cell::new(CHUNK_ITEMS) };
}

fn chunk_items() -> usize {
    #[cfg(test)]
    return CHUNK_ITEMS_FOR_TEST.with(|c| c.get());
    #[cfg(not(test))]
    CHUNK_ITEMS
}

/// A link from a chunk to another one: a skip node whose `base` is the first node of the
/// chunk compiled from `items` (a range of the items the chunk was compiled from) for
/// `region`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub node: u32,
    pub region: Region,
    pub items: std::ops::Range<usize>,
}

/// The nodes of one chunk, breadth first; `meta[i].base` counts from the chunk's first node,
/// except for links (see [`Chunk::placed`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
    pub links: Vec<Link>,
}

impl Chunk {
    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The meta entries of the chunk placed at `first`, its links leading to `targets` (the
    /// first node of each linked chunk, in the order of [`Chunk::links`]).
    pub fn placed(&self, first: u32, targets: &[u32]) -> Vec<NodeMeta> {
        debug_assert_eq!(targets.len(), self.links.len());
        let mut meta: Vec<NodeMeta> = self
            .meta
            .iter()
            .map(|m| NodeMeta {
                base: m.base + first,
                ..*m
            })
            .collect();
        for (link, &target) in self.links.iter().zip(targets) {
            meta[link.node as usize].base = target;
        }
        meta
    }
}

/// The deepest node depth (a multiple of 8 from `depth`) at which a node can hold all of
/// `items` (sorted, longer than `depth`, inside one region at `depth`): the bits they all
/// share, short of the shortest of them. Above it, a skip node stands for the nodes that
/// would each have a single MIXED cell.
pub fn compressed_depth(family: Family, depth: u32, items: &[Item]) -> u32 {
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return depth;
    };
    let shared = (first.addr ^ last.addr).leading_zeros();
    let shortest = items.iter().map(|i| u32::from(i.len)).min().unwrap_or(0);
    let limit = shared
        .min(shortest.saturating_sub(1))
        .min(family.bits() - STRIDE_BITS);
    if limit <= depth {
        depth
    } else {
        depth + (limit - depth) / STRIDE_BITS * STRIDE_BITS
    }
}

/// A slot of a level while building.
enum Slot {
    Plain {
        cells: [u64; NODE_WORDS],
        depth: u32,
        first_child: u32,
    },
    Skip {
        depth: u32,
        prefix: u128,
        default: u64,
        target: Target,
    },
}

enum Target {
    /// The node at this index of the next level.
    Inline(u32),
    /// Another chunk.
    Link(Region, std::ops::Range<usize>),
}

struct Builder {
    family: Family,
    levels: Vec<Vec<Slot>>,
}

/// Compile the chunk for `region` from `items` (sorted, longer than the region's depth,
/// inside it). Its first node is at [`compressed_depth`]; `leading_skip` puts a skip node
/// to it in front (a partition's first chunk, entered from the root tables), while a linked
/// chunk is entered through the linking skip node, which already compares those bits.
/// Above [`CHUNK_ITEMS`] items, the first node's MIXED cells link to chunks of their own.
/// A chunk is compiled as if nothing covered it (the lookup combines covers with `max`), so
/// it depends on its items alone.
pub fn compile_chunk(family: Family, region: Region, items: &[Item], leading_skip: bool) -> Chunk {
    debug_assert!(items.windows(2).all(|w| w[0] <= w[1]));
    debug_assert!(items
        .iter()
        .all(|i| i.len > region.depth && region.contains(i.addr)));
    let mut b = Builder {
        family,
        levels: Vec::new(),
    };
    if !items.is_empty() {
        let depth = u32::from(region.depth);
        let node_depth = compressed_depth(family, depth, items);
        let link = items.len() > chunk_items();
        if leading_skip && node_depth > depth {
            b.skip_then_node(node_depth, items, CELL_NONE, 0, link);
        } else {
            b.node(node_depth, items, CELL_NONE, 0, link);
        }
    }
    b.finish()
}

impl Builder {
    fn level(&mut self, level: usize) -> &mut Vec<Slot> {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Vec::new);
        }
        &mut self.levels[level]
    }

    /// A skip node at `level` to a node at `depth` for `items` under `cover`.
    fn skip_then_node(&mut self, depth: u32, items: &[Item], cover: u64, level: usize, link: bool) {
        let target = self.level(level + 1).len() as u32;
        self.level(level).push(Slot::Skip {
            depth,
            prefix: masked(items[0].addr, depth),
            default: cover,
            target: Target::Inline(target),
        });
        self.node(depth, items, cover, level + 1, link);
    }

    /// The node for `items` at `depth` under `cover` at `level`, and (depth first) its
    /// subtree; with `link`, its MIXED cells link to chunks of their own instead.
    fn node(&mut self, depth: u32, items: &[Item], cover: u64, level: usize, link: bool) {
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
        let index = self.level(level).len();
        self.level(level).push(Slot::Plain {
            cells: [0; NODE_WORDS],
            depth,
            first_child: 0,
        });
        let child_depth = depth + STRIDE_BITS;
        let mut cells = [0u64; NODE_WORDS];
        let mut children: Vec<(u64, Vec<Item>, (usize, usize))> = Vec::new();
        for c in 0..NODE_CELLS as usize {
            let c_cover = cell_cover[c];
            let mut value = c_cover;
            if let Some((a, b)) = deeper[c] {
                // Entries that cannot raise the verdict (allow beats block beats none) change
                // nothing below: a cell with none that can stays a leaf. Inside a chunk they
                // are left out; a linked chunk keeps them, so that it depends on the entries
                // of its region alone.
                let raises = |i: &&Item| u64::from(i.verdict) > c_cover;
                let inner: Vec<Item> = items[a..b]
                    .iter()
                    .filter(|i| u32::from(i.len) > child_depth && (link || raises(i)))
                    .copied()
                    .collect();
                if inner.iter().any(|i| raises(&i)) {
                    value = CELL_MIXED;
                    children.push((c_cover, inner, (a, b)));
                }
            }
            cells[c / 32] |= value << ((c % 32) * 2);
        }
        let first_child = self.levels.get(level + 1).map_or(0, |l| l.len() as u32);
        self.levels[level][index] = Slot::Plain {
            cells,
            depth,
            first_child,
        };
        debug_assert!(children.is_empty() || child_depth < self.family.bits());
        for (c_cover, inner, (a, b)) in children {
            let node_depth = compressed_depth(self.family, child_depth, &inner);
            if link {
                // Only a chunk's first node links, and it holds all the chunk's items: the
                // range indexes them.
                let region = Region {
                    start: masked(inner[0].addr, child_depth),
                    depth: child_depth as u8,
                };
                self.level(level + 1).push(Slot::Skip {
                    depth: node_depth,
                    prefix: masked(inner[0].addr, node_depth),
                    default: c_cover,
                    target: Target::Link(region, a..b),
                });
            } else if node_depth > child_depth {
                self.skip_then_node(node_depth, &inner, c_cover, level + 1, false);
            } else {
                self.node(child_depth, &inner, c_cover, level + 1, false);
            }
        }
    }

    /// Lay the levels out breadth first.
    fn finish(self) -> Chunk {
        let mut offsets = Vec::with_capacity(self.levels.len() + 1);
        let mut total = 0u32;
        for level in &self.levels {
            offsets.push(total);
            total += level.len() as u32;
        }
        offsets.push(total);
        let mut out = Chunk {
            nodes: Vec::with_capacity(total as usize),
            meta: Vec::with_capacity(total as usize),
            links: Vec::new(),
        };
        for (level, slots) in self.levels.into_iter().enumerate() {
            for slot in slots {
                match slot {
                    Slot::Plain {
                        cells,
                        depth,
                        first_child,
                    } => {
                        let mut before = [0u8; NODE_WORDS];
                        let mut seen = 0u32;
                        for (w, word) in cells.iter().enumerate() {
                            before[w] = seen as u8;
                            seen += mixed_bits(*word).count_ones();
                        }
                        out.nodes.push(Node { cells });
                        out.meta.push(NodeMeta {
                            base: if seen == 0 {
                                0
                            } else {
                                offsets[level + 1] + first_child
                            },
                            shape: depth,
                            before,
                        });
                    }
                    Slot::Skip {
                        depth,
                        prefix,
                        default,
                        target,
                    } => {
                        let base = match target {
                            Target::Inline(at) => offsets[level + 1] + at,
                            Target::Link(region, items) => {
                                out.links.push(Link {
                                    node: out.nodes.len() as u32,
                                    region,
                                    items,
                                });
                                0
                            }
                        };
                        let mut cells = [0u64; NODE_WORDS];
                        cells[0] = (prefix >> 64) as u64;
                        cells[1] = prefix as u64;
                        cells[2] = default;
                        out.nodes.push(Node { cells });
                        out.meta.push(NodeMeta {
                            base,
                            shape: SHAPE_SKIP | depth,
                            before: [0; NODE_WORDS],
                        });
                    }
                }
            }
        }
        out
    }
}

/// The chunks of a region, as compiled: new ones, and those kept from the last generation.
#[derive(Debug)]
pub enum Built {
    /// Unchanged since the last generation: the chunk and every chunk it links to stay.
    Kept(Region),
    New {
        region: Region,
        chunk: Chunk,
        /// What each of the chunk's links leads to, in order.
        links: Vec<Built>,
    },
}

/// Compile the chunks of `region` from `items` (sorted, longer than the region's depth,
/// inside it), keeping those for which `keep` says the last generation's chunk is still right.
pub fn build(
    family: Family,
    region: Region,
    items: &[Item],
    leading_skip: bool,
    keep: &dyn Fn(Region) -> bool,
) -> Built {
    if keep(region) {
        return Built::Kept(region);
    }
    let chunk = compile_chunk(family, region, items, leading_skip);
    let links = chunk
        .links
        .iter()
        .map(|l| build(family, l.region, &items[l.items.clone()], false, keep))
        .collect();
    Built::New {
        region,
        chunk,
        links,
    }
}

/// A chunk ready to write: its place in the pool, nodes and meta with absolute positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub extent: Extent,
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
}

impl Built {
    /// Nodes of the new chunks.
    pub fn new_nodes(&self) -> u64 {
        match self {
            Built::Kept(_) => 0,
            Built::New { chunk, links, .. } => {
                u64::from(chunk.len()) + links.iter().map(Built::new_nodes).sum::<u64>()
            }
        }
    }

    /// Place the new chunks (linked chunks first, so links know where they lead) with
    /// `alloc` (nodes -> first node), recording every chunk in `directory` and each new one
    /// in `out`; kept chunks are found, with everything they link to, in `old`. Returns the
    /// first node of the region's chunk.
    pub fn place(
        self,
        alloc: &mut dyn FnMut(u32) -> anyhow::Result<u32>,
        old: &BTreeMap<Region, Extent>,
        directory: &mut BTreeMap<Region, Extent>,
        out: &mut Vec<Placed>,
    ) -> anyhow::Result<u32> {
        match self {
            Built::Kept(region) => {
                let inside = old
                    .range(
                        region..=Region {
                            start: region.last(),
                            depth: 128,
                        },
                    )
                    .filter(|(r, _)| r.depth >= region.depth);
                directory.extend(inside.map(|(r, e)| (*r, *e)));
                Ok(old[&region].first)
            }
            Built::New {
                region,
                chunk,
                links,
            } => {
                let mut targets = Vec::with_capacity(links.len());
                for l in links {
                    targets.push(l.place(alloc, old, directory, out)?);
                }
                let first = alloc(chunk.len())?;
                let extent = Extent {
                    first,
                    count: chunk.len(),
                };
                directory.insert(region, extent);
                out.push(Placed {
                    extent,
                    meta: chunk.placed(first, &targets),
                    nodes: chunk.nodes,
                });
                Ok(first)
            }
        }
    }
}

/// The root cells and partition entries of one family for one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootTables {
    pub words: Vec<u64>,
    pub parts: Vec<u64>,
}

impl RootTables {
    /// From the items of /16 and shorter (their covers) and the first node of each
    /// partition in the pool.
    pub fn of(short: &[Item], partitions: &BTreeMap<u16, u32>) -> RootTables {
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
                Some(&first) if c != CELL_ALLOW => {
                    parts[p] = part_entry(first, c);
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
    /// Every chunk, by region (empty for an image assembled from a pool).
    pub directory: BTreeMap<Region, Extent>,
}

impl Image {
    /// Compile `items` (sorted) completely, chunks packed from node 1.
    pub fn compile(family: Family, items: &[Item]) -> Image {
        let short: Vec<Item> = items
            .iter()
            .filter(|i| u32::from(i.len) <= ROOT_BITS)
            .copied()
            .collect();
        let long: Vec<Item> = items
            .iter()
            .filter(|i| u32::from(i.len) > ROOT_BITS)
            .copied()
            .collect();
        let mut placed = Vec::new();
        let mut directory = BTreeMap::new();
        let mut partitions = BTreeMap::new();
        let mut next = 1u32;
        let mut alloc = |n: u32| {
            next += n;
            Ok(next - n)
        };
        for group in long.chunk_by(|a, b| a.p16() == b.p16()) {
            let region = Region::partition(group[0].p16());
            let first = build(family, region, group, true, &|_| false)
                .place(&mut alloc, &BTreeMap::new(), &mut directory, &mut placed)
                .expect("appending never fails");
            partitions.insert(group[0].p16(), first);
        }
        let mut nodes = vec![Node::default(); next as usize];
        let mut meta = vec![NodeMeta::default(); next as usize];
        for p in placed {
            let at = p.extent.first as usize..p.extent.end() as usize;
            nodes[at.clone()].copy_from_slice(&p.nodes);
            meta[at].copy_from_slice(&p.meta);
        }
        Image {
            family,
            root: RootTables::of(&short, &partitions),
            nodes,
            meta,
            directory,
        }
    }

    /// The verdict the program would give `addr` (top-aligned).
    pub fn lookup(&self, addr: u128) -> u64 {
        trie::lookup(
            self,
            0,
            trie::TRIE_LISTS,
            self.family,
            (addr >> 64) as u64,
            addr as u64,
        )
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

    fn meta(&self, node: u32) -> NodeMeta {
        self.meta.get(node as usize).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::trie::CELL_BLOCK;
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

    /// Counts the nodes a lookup visits.
    struct Counting<'a>(&'a Image, std::cell::Cell<u32>);

    impl TrieMemory for Counting<'_> {
        fn root_word(&self, index: u32) -> u64 {
            self.0.root_word(index)
        }
        fn part(&self, index: u32) -> u64 {
            self.0.part(index)
        }
        fn node_word(&self, node: u32, word: u32) -> u64 {
            self.0.node_word(node, word)
        }
        fn meta(&self, node: u32) -> NodeMeta {
            self.1.set(self.1.get() + 1);
            self.0.meta(node)
        }
    }

    fn steps(image: &Image, addr: u128) -> u32 {
        let c = Counting(image, std::cell::Cell::new(0));
        trie::lookup(
            &c,
            0,
            trie::TRIE_LISTS,
            image.family,
            (addr >> 64) as u64,
            addr as u64,
        );
        c.1.get()
    }

    #[test]
    fn deep_sparse_entries_take_few_steps() {
        // IPv4-compatible ::a.b.c.d/128 entries share 96 zero bits; a lone /48 shares 32
        // more with nothing. One skip node each instead of a node per 8 bits.
        let mut items: Vec<Item> = (0..200u32)
            .map(|i| Item {
                addr: u128::from(0xc000_0200 + i * 7),
                len: 128,
                verdict: CELL_BLOCK as u8,
            })
            .collect();
        items.push(item("2001:db8:bad::/48", CELL_BLOCK));
        let items = sorted(items);
        let image = Image::compile(Family::V6, &items);
        for it in &items {
            assert_eq!(image.lookup(it.addr), CELL_BLOCK);
            assert!(
                steps(&image, it.addr) <= 5,
                "{:#x}: {} steps",
                it.addr,
                steps(&image, it.addr)
            );
        }
        assert_eq!(image.lookup(0xc000_0201), CELL_NONE, "between the entries");
        assert_eq!(
            image.lookup(1 << 100),
            CELL_NONE,
            "fails the skip's compare"
        );
        let lone = item("2001:db8:bad::/48", CELL_BLOCK).addr;
        assert_eq!(
            steps(&image, lone | 0xffff),
            2,
            "a skip to /40, then a node"
        );
        assert_eq!(image.lookup(lone ^ (1 << 81)), CELL_NONE, "/48 neighbour");
    }

    /// Random entries of many lengths inside one /16 (10.1/16 or 2002::/16), crowded enough
    /// that the partition splits into linked chunks.
    fn crowded(rng: &mut rand::rngs::StdRng, family: Family, n: usize) -> Vec<Item> {
        (0..n)
            .map(|_| {
                let len: u8 = if family == Family::V4 {
                    rng.random_range(22..=32)
                } else {
                    *[20u8, 32, 40, 48, 56, 64, 96, 112, 127, 128]
                        .get(rng.random_range(0..10))
                        .unwrap()
                };
                let base = if family == Family::V4 {
                    0x0a01u128 << 112
                } else {
                    0x2002u128 << 112
                };
                // Half clustered (shared long prefixes), half spread over the /16.
                let spread = if rng.random_bool(0.5) {
                    rng.random::<u128>() >> 16
                } else {
                    (rng.random::<u128>() >> 100) << 60
                };
                let addr = masked(base | spread, u32::from(len));
                let addr = if family == Family::V4 {
                    addr & (u128::MAX << 96)
                } else {
                    addr
                };
                Item {
                    addr,
                    len,
                    // Allows only where they cannot cover a whole linked region: the
                    // verdicts inside linked chunks must come from the linked chunks.
                    verdict: if len >= 40 - 12 * (family == Family::V4) as u8
                        && rng.random_bool(0.2)
                    {
                        CELL_ALLOW
                    } else {
                        CELL_BLOCK
                    } as u8,
                }
            })
            .collect()
    }

    #[test]
    fn crowded_partitions_link_chunks_and_still_match() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for family in Family::ALL {
            let mut items = crowded(&mut rng, family, 2 * CHUNK_ITEMS + 1000);
            items.push(item(
                if family == Family::V4 {
                    "10.0.0.0/8"
                } else {
                    "2002::/15"
                },
                CELL_BLOCK,
            ));
            let items = sorted(items);
            let image = Image::compile(family, &items);
            let links = image
                .meta
                .iter()
                .filter(|m| m.shape & SHAPE_SKIP != 0)
                .count();
            assert!(links > 1, "{family:?}: no chunks were linked");
            for _ in 0..2_000 {
                let i = items[rng.random_range(0..items.len())];
                let host = rng
                    .random::<u128>()
                    .checked_shr(u32::from(i.len))
                    .unwrap_or(0);
                let probe = if family == Family::V4 {
                    (i.addr | host) & (u128::MAX << 96)
                } else {
                    i.addr | host
                };
                assert_eq!(image.lookup(probe), reference(&items, probe), "{probe:#x}");
            }
        }
    }

    #[test]
    fn entries_under_an_allowed_prefix_take_no_nodes_in_linked_chunks_either() {
        // Review finding: links used to be made for cells whose entries cannot change the
        // verdict (blocked /128s under an allowed /24): two nodes per entry.
        CHUNK_ITEMS_FOR_TEST.with(|c| c.set(100));
        let mut items: Vec<Item> = (0..20_000u128)
            .map(|i| Item {
                addr: (0x2002_0a00u128 << 96) | (i * 7919) << 20,
                len: 128,
                verdict: CELL_BLOCK as u8,
            })
            .collect();
        items.push(item("2002:a00::/24", CELL_ALLOW));
        let image = Image::compile(Family::V6, &sorted(items));
        CHUNK_ITEMS_FOR_TEST.with(|c| c.set(CHUNK_ITEMS));
        assert!(image.nodes.len() <= 3, "{} nodes", image.nodes.len());
        assert_eq!(
            image.lookup((0x2002_0a00u128 << 96) | 7919 << 20),
            CELL_ALLOW
        );
    }
}
