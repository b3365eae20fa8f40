//! The verdict for a parsed packet. Lists now; rules, rate limits and bans come here next.

use filter_common::trie::{CELL_ALLOW, CELL_BLOCK};
use filter_common::{MalformedPolicy, Reason};

use crate::maps::{CONFIG, STATE};
use crate::parse::{Parsed, Source};

pub mod lists;

/// The set of list structures this packet is judged by: read once, so a change the
/// controller publishes mid-packet cannot mix old and new lists.
#[inline(always)]
pub fn active_set() -> u32 {
    match STATE.get(0) {
        Some(&word) => filter_common::maps::state::active(word),
        None => 0,
    }
}

#[inline(always)]
fn malformed() -> Reason {
    match CONFIG.get(0) {
        Some(c) if c.malformed_policy == MalformedPolicy::Pass as u32 => Reason::PassedMalformed,
        _ => Reason::DroppedMalformed,
    }
}

/// The reason (and so the action) for a packet with this source, in list set `set`.
#[inline(always)]
pub fn judge_source(set: u32, src: Source) -> Reason {
    match lists::lookup(set, src) {
        CELL_ALLOW => Reason::PassedAllowlisted,
        CELL_BLOCK => Reason::DroppedBlocklist,
        _ => Reason::Passed,
    }
}

#[inline(always)]
pub fn verdict(parsed: Parsed) -> Reason {
    match parsed {
        Parsed::NonIp => Reason::PassedNonIp,
        Parsed::Malformed => malformed(),
        Parsed::Ip(src) => judge_source(active_set(), src),
    }
}
