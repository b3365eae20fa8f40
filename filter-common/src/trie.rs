//! The compiled form of the allow and block lists, and the one lookup over it.
//!
//! Both lists of one address family compile into a single *verdict trie*: a 2-bit cell answers
//! "none", "blocked", "allowed" or "look one level deeper" ([`Cell`]). Allow wins over block,
//! so combining prefixes is a `max` over their verdicts, and a cell holds the `max` of every
//! prefix that covers its whole range (leaf pushing).
//!
//! ```text
//! root (per family, 2^16 cells: one per /16)       16 KiB, stays in cache
//!   MIXED /16 -> partition: PARTS[/16] = first node | cover << 32
//!     node (256 cells: one per next 8 bits)        64 B cells + 16 B meta
//!       MIXED cell -> child = meta.base + rank of the cell among the node's MIXED cells
//!     skip node: "the next bits are P" -> meta.base, else the node's default verdict
//! ```
//!
//! A partition holds the nodes of one /16, compiled from the prefixes longer than /16 inside
//! it alone. Prefixes of /16 and shorter only set root cells and the partition's `cover`,
//! which the lookup combines with the partition's answer (`max`), so changing them never
//! rewrites a partition.
//!
//! *Skip nodes* keep deep, sparse entries cheap: where every entry below a cell shares more
//! leading bits (an IPv6 /48 is alone in its /24; `::a.b.c.d/128` entries all start with 96
//! zero bits), one skip node compares those bits at once instead of one node per 8 bits.
//! They also cut a large partition into *chunks*: a chunk is a group of nodes laid out
//! breadth first (the children of a node are contiguous, found by rank), and a skip node is
//! the only link into another chunk. A chunk is the unit the controller rewrites, so one
//! change rewrites the few chunks on its path, never a whole crowded /16.
//!
//! Atomic change: the root tables (cells, partition entries) exist twice, one *set* per
//! generation parity. The program reads [`STATE`](crate::maps::STATE) once per packet and
//! looks only at the active set; partitions live in one node pool and are never modified while
//! a root table the program may read refers to them (a changed partition is written to free
//! nodes first, and freed nodes are reused only after a grace period). The
//! controller writes the inactive set, then flips the state word: each packet sees the old
//! lists or the new ones, never a mix.
//!
//! The same [`lookup`] runs in the XDP program (over maps) and in userspace (over a compiled
//! image), so the compiler is tested against exactly the walk the kernel performs.

use bytemuck::{Pod, Zeroable};

/// What a 2-bit cell, or a lookup, says about an address. Combining is `max`.
pub const CELL_NONE: u64 = 0;
pub const CELL_BLOCK: u64 = 1;
pub const CELL_ALLOW: u64 = 2;
/// Not uniform: look one level deeper.
pub const CELL_MIXED: u64 = 3;

/// Address families, as indices into the root tables.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Address length in bits.
    pub const fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Node levels below the root: one per 8 bits after the first 16.
    pub const fn levels(self) -> u32 {
        (self.bits() - ROOT_BITS) / STRIDE_BITS
    }

    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Bits resolved by the root table.
pub const ROOT_BITS: u32 = 16;
/// Bits resolved by each node.
pub const STRIDE_BITS: u32 = 8;
/// Deepest walk in nodes (IPv6 /128).
pub const MAX_LEVELS: u32 = (128 - ROOT_BITS) / STRIDE_BITS;
/// Bound of the walk's loop in the program: a skip node never leads to another skip node, so
/// a walk takes at most one skip before each of its (at most 14) nodes: 28 steps. One more
/// for good measure.
pub const MAX_STEPS: u32 = 2 * MAX_LEVELS + 1;
/// Cells per node and words per node (32 cells of 2 bits per u64).
pub const NODE_CELLS: u32 = 1 << STRIDE_BITS;
pub const NODE_WORDS: usize = (NODE_CELLS / 32) as usize;
/// Root cells per family and u64 words holding them.
pub const ROOT_CELLS: u32 = 1 << ROOT_BITS;
pub const ROOT_WORDS: u32 = ROOT_CELLS / 32;
/// Root tables exist once per set (generation parity), trie and family.
pub const SETS: u32 = 2;
/// The tries: the allow and block lists (`CELL_NONE`/`CELL_BLOCK`/`CELL_ALLOW`), and the
/// protected prefixes (`CELL_PROTECTED`).
pub const TRIE_LISTS: u32 = 0;
pub const TRIE_PROTECTED: u32 = 1;
pub const TRIES: u32 = 2;
/// A protected prefix's cell verdict.
pub const CELL_PROTECTED: u64 = 1;
pub const ROOT_TABLE_WORDS: u32 = SETS * TRIES * 2 * ROOT_WORDS;
pub const PARTS_ENTRIES: u32 = SETS * TRIES * 2 * ROOT_CELLS;
/// `PARTS` entries: the partition's first node in the low 32 bits, the verdict of the
/// prefixes that cover the whole /16 (its *cover*) above.
pub const PART_COVER_SHIFT: u32 = 32;

/// A `PARTS` entry.
#[inline(always)]
pub const fn part_entry(first_node: u32, cover: u64) -> u64 {
    (cover << PART_COVER_SHIFT) | first_node as u64
}

/// Cells of one node: 256 cells, 2 bits each, cell `i` at bits `2*(i%32)` of word `i/32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Node {
    pub cells: [u64; NODE_WORDS],
}

/// What a node is and where its children are.
///
/// - A plain node: `shape` is its depth (address bits resolved above it, a multiple of 8);
///   `base` is its first child and `before[w]` how many MIXED cells come before cell word `w`
///   (so a child costs one popcount of one word).
/// - A skip node ([`SHAPE_SKIP`] set, depth `P` below it): cells word 0 and 1 hold the
///   address's first `P` bits (big-endian halves, the rest zero), word 2 the verdict of the
///   addresses that do not start with them; `base` is the node for those that do.
///
/// The walk reads the depth from each node rather than counting it, so the program keeps no
/// state between steps besides the node and the cover.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeMeta {
    pub base: u32,
    pub shape: u32,
    pub before: [u8; NODE_WORDS],
}

/// `NodeMeta::shape` flag of a skip node.
pub const SHAPE_SKIP: u32 = 1 << 8;
/// `NodeMeta::shape` bits holding a depth (0..=128).
pub const SHAPE_DEPTH: u32 = 0xff;

/// The first `len` bits of an address given as big-endian halves, the rest zeroed.
#[inline(always)]
pub const fn mask_top(hi: u64, lo: u64, len: u32) -> (u64, u64) {
    if len >= 128 {
        (hi, lo)
    } else if len > 64 {
        (hi, lo & !(u64::MAX >> (len - 64)))
    } else if len == 64 {
        (hi, 0)
    } else if len == 0 {
        (0, 0)
    } else {
        (hi & !(u64::MAX >> len), 0)
    }
}

/// Mask of the low bit of every 2-bit cell of a word.
pub const CELL_LOW_BITS: u64 = 0x5555_5555_5555_5555;

/// Low bit set for each MIXED cell of a word.
#[inline(always)]
pub const fn mixed_bits(word: u64) -> u64 {
    word & (word >> 1) & CELL_LOW_BITS
}

/// Which root table: set, trie and family.
#[inline(always)]
pub const fn table(set: u32, trie: u32, family: Family) -> u32 {
    (set * TRIES + trie) * 2 + family as u32
}

/// Index of a /16's root word in `LIST_ROOT`.
#[inline(always)]
pub const fn root_word_index(table: u32, p16: u32) -> u32 {
    (table * ROOT_WORDS) | (p16 >> 5)
}

/// Index of a /16's partition entry in `LIST_PARTS`.
#[inline(always)]
pub const fn part_index(table: u32, p16: u32) -> u32 {
    (table * ROOT_CELLS) | (p16 & (ROOT_CELLS - 1))
}

#[inline(always)]
pub const fn cell_of(word: u64, index: u32) -> u64 {
    (word >> ((index & 31) * 2)) & 3
}

/// Byte `k` (0 = most significant) of an address given as big-endian halves.
#[inline(always)]
pub const fn addr_byte(hi: u64, lo: u64, k: u32) -> u32 {
    let half = if k < 8 { hi } else { lo };
    ((half >> (56 - 8 * (k & 7))) & 0xff) as u32
}

/// Reads of the compiled lists: maps in the program, vectors in userspace. Out-of-range
/// indices read as zero (an empty cell), which the compiler never produces.
pub trait TrieMemory {
    fn root_word(&self, index: u32) -> u64;
    fn part(&self, index: u32) -> u64;
    fn node_word(&self, node: u32, word: u32) -> u64;
    fn meta(&self, node: u32) -> NodeMeta;
}

impl NodeMeta {
    /// Index of the first child whose cell lies in cell word `word`.
    #[inline(always)]
    pub const fn child_base(&self, word: u32) -> u32 {
        self.base
            .wrapping_add(self.before[word as usize & (NODE_WORDS - 1)] as u32)
    }
}

#[inline(always)]
const fn max(a: u64, b: u64) -> u64 {
    if a > b {
        a
    } else {
        b
    }
}

/// The verdict of trie `trie` for an address in set `set`: for the lists [`CELL_NONE`],
/// [`CELL_BLOCK`] or [`CELL_ALLOW`]. IPv4 addresses are passed as `hi = addr << 32, lo = 0`.
/// At most one root word, one partition entry and, per step, one meta entry and one node are
/// read.
#[inline(always)]
pub fn lookup<M: TrieMemory>(m: &M, set: u32, trie: u32, family: Family, hi: u64, lo: u64) -> u64 {
    let p16 = (hi >> 48) as u32;
    let t = table(set, trie, family);
    let cell = cell_of(m.root_word(root_word_index(t, p16)), p16);
    if cell != CELL_MIXED {
        return cell;
    }
    let part = m.part(part_index(t, p16));
    let mut cover = (part >> PART_COVER_SHIFT) & 3;
    let mut node = part as u32;
    let mut step = 0;
    while step < MAX_STEPS {
        let meta = m.meta(node);
        let depth = meta.shape & SHAPE_DEPTH;
        if meta.shape & SHAPE_SKIP != 0 {
            cover = max(cover, m.node_word(node, 2) & 3);
            let (want_hi, want_lo) = mask_top(hi, lo, depth);
            if want_hi != m.node_word(node, 0) || want_lo != m.node_word(node, 1) {
                return cover;
            }
            node = meta.base;
        } else {
            let byte = addr_byte(hi, lo, depth >> 3);
            let word = m.node_word(node, byte >> 5);
            let cell = cell_of(word, byte);
            if cell != CELL_MIXED {
                return max(cover, cell);
            }
            let below = mixed_bits(word) & ((1u64 << ((byte & 31) * 2)) - 1);
            node = meta.child_base(byte >> 5).wrapping_add(below.count_ones());
        }
        step += 1;
    }
    // Only a corrupt structure gets here (walks end at a leaf within MAX_STEPS).
    cover
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_extraction() {
        let hi = 0x0102_0304_0506_0708u64;
        let lo = 0x090a_0b0c_0d0e_0f10u64;
        for k in 0..16 {
            assert_eq!(addr_byte(hi, lo, k), k + 1);
        }
    }

    #[test]
    fn levels_per_family() {
        assert_eq!(Family::V4.levels(), 2);
        assert_eq!(Family::V6.levels(), 14);
        assert_eq!(MAX_LEVELS, 14);
        assert_eq!(MAX_STEPS, 29);
        assert_eq!(core::mem::size_of::<NodeMeta>(), 16);
        assert_eq!(core::mem::size_of::<Node>(), 64);
    }

    #[test]
    fn mask_top_keeps_exactly_the_leading_bits() {
        let (hi, lo) = (u64::MAX, u64::MAX);
        assert_eq!(mask_top(hi, lo, 0), (0, 0));
        assert_eq!(mask_top(hi, lo, 8), (0xff00_0000_0000_0000, 0));
        assert_eq!(mask_top(hi, lo, 64), (u64::MAX, 0));
        assert_eq!(mask_top(hi, lo, 72), (u64::MAX, 0xff00_0000_0000_0000));
        assert_eq!(mask_top(hi, lo, 128), (u64::MAX, u64::MAX));
        assert_eq!(mask_top(hi, lo, 200), (u64::MAX, u64::MAX));
    }
}
