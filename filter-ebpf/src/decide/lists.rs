//! Prefix sets (the allow and block lists, the protected prefixes): the shared trie walk of
//! `filter_common::trie` over the maps.

use filter_common::packet::Packet;
use filter_common::trie::{self, NodeMeta, TrieMemory};

use crate::maps::{LIST_META, LIST_NODES, LIST_PARTS, LIST_ROOT};

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

/// The verdict of trie `which` (`trie::TRIE_*`) for the packet's source, in set `set`.
#[inline(always)]
pub fn lookup(set: u32, which: u32, p: &Packet) -> u64 {
    trie::lookup(&Maps, set, which, p.family, p.src_hi, p.src_lo)
}
