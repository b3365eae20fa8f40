//! L4 rules: the shared bit-vector match of `filter_common::rules` over the maps.

use filter_common::packet::Packet;
use filter_common::rules::{self, RuleBits, RuleMatch, RuleMemory};

use crate::maps::{RULE_BITS, RULE_CLASSES, RULE_MONITOR};

struct Maps;

impl RuleMemory for Maps {
    #[inline(always)]
    fn class_word(&self, index: u32) -> u64 {
        RULE_CLASSES.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn bits(&self, index: u32) -> Option<&RuleBits> {
        RULE_BITS.get(index)
    }

    #[inline(always)]
    fn monitor(&self, set: u32) -> Option<&RuleBits> {
        RULE_MONITOR.get(set)
    }
}

#[inline(always)]
pub fn first_match(set: u32, p: &Packet, words: u32, dims: u32) -> RuleMatch {
    rules::first_match(&Maps, set, p, words as usize, dims)
}
