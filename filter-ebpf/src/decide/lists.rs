//! The allow and block lists: the shared trie walk of `filter_common::trie` over the maps.

use filter_common::trie::{self, Family, NodeMeta, TrieMemory};

use crate::maps::{LIST_META, LIST_NODES, LIST_PARTS, LIST_ROOT};
use crate::parse::Source;

struct Maps;

impl TrieMemory for Maps {
    #[inline(always)]
    fn root_word(&self, index: u32) -> u64 {
        LIST_ROOT.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn part(&self, index: u32) -> u64 {
        LIST_PARTS.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn node_word(&self, node: u32, word: u32) -> u64 {
        match LIST_NODES.get(node) {
            Some(n) => n.cells[word as usize & (trie::NODE_WORDS - 1)],
            None => 0,
        }
    }

    #[inline(always)]
    fn meta(&self, node: u32) -> NodeMeta {
        LIST_META.get(node).copied().unwrap_or_default()
    }
}

/// `CELL_NONE`, `CELL_BLOCK` or `CELL_ALLOW` for a source, in list set `set`.
#[inline(always)]
pub fn lookup(set: u32, src: Source) -> u64 {
    match src {
        Source::V4(a) => trie::lookup(&Maps, set, Family::V4, u64::from(a) << 32, 0),
        Source::V6(hi, lo) => trie::lookup(&Maps, set, Family::V6, hi, lo),
    }
}
