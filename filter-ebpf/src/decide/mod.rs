//! The verdict for a parsed packet, in this order: allowlist (passes everything), bans,
//! blocklist, L4 rules (first match), rate limits. Anything in monitor mode is counted and
//! looked past; a packet only something in monitor mode would have dropped passes as
//! `monitored`.

use filter_common::packet::Packet;
use filter_common::rules::{info_action, info_counter, ACTION_DROP, MAX_RULES, MODE_MONITOR};
use filter_common::sample::ID_NONE;
use filter_common::trie::{CELL_ALLOW, CELL_BLOCK, TRIE_LISTS};
use filter_common::{MalformedPolicy, PolicyConfig, Reason};

use crate::maps::{POLICY, RULE_INFO, STATE};
use crate::observe;
use crate::parse::Parsed;

pub mod limits;
pub mod lists;
pub mod rules;

/// The set of structures this packet is judged by: read once, so a change the controller
/// publishes mid-packet cannot mix old and new policy.
#[inline(always)]
pub fn active_set() -> u32 {
    match STATE.get(0) {
        Some(&word) => filter_common::maps::state::active(word),
        None => 0,
    }
}

#[inline(always)]
fn policy(set: u32) -> PolicyConfig {
    POLICY.get(set).copied().unwrap_or_default()
}

/// The reason (and so the action) for an IP packet, in set `set`, arriving on counter slot
/// `slot`.
#[inline(always)]
pub fn judge(set: u32, p: &Packet, slot: u32) -> Reason {
    judge_id(set, p, slot).0
}

/// [`judge`], and the counter slot of the rule or limit that decided (or, for a monitored
/// packet, that would have), else `ID_NONE`: sampled records name it.
#[inline(always)]
pub fn judge_id(set: u32, p: &Packet, slot: u32) -> (Reason, u32) {
    let policy = policy(set);
    let listed = lists::lookup(set, TRIE_LISTS, p);
    if listed == CELL_ALLOW {
        return (Reason::PassedAllowlisted, ID_NONE);
    }
    if limits::banned(&policy, p) {
        return (Reason::DroppedBanned, ID_NONE);
    }
    let mut monitored = false;
    let mut id = ID_NONE;
    if listed == CELL_BLOCK {
        if u64::from(policy.block_mode) != MODE_MONITOR {
            return (Reason::DroppedBlocklist, ID_NONE);
        }
        monitored = true;
    }
    if policy.rule_words != 0 {
        let m = rules::first_match(set, p, policy.rule_words, policy.rule_dims);
        if let Some(r) = m.monitor {
            let info = RULE_INFO
                .get(set * MAX_RULES + (r & (MAX_RULES - 1)))
                .copied()
                .unwrap_or(0);
            observe::count_rule(info_counter(info), p.len);
            if info_action(info) == ACTION_DROP {
                monitored = true;
                id = info_counter(info);
            }
        }
        if let Some(r) = m.enforce {
            let info = RULE_INFO
                .get(set * MAX_RULES + (r & (MAX_RULES - 1)))
                .copied()
                .unwrap_or(0);
            observe::count_rule(info_counter(info), p.len);
            let reason = if info_action(info) == ACTION_DROP {
                Reason::DroppedRule
            } else {
                Reason::PassedRule
            };
            return (reason, info_counter(info));
        }
    }
    if policy.limits != 0 {
        match limits::check(set, &policy, p, slot) {
            (limits::Outcome::Drop, limit) => return (Reason::DroppedRateLimit, limit),
            (limits::Outcome::Monitored, limit) => {
                if !monitored {
                    id = limit;
                }
                monitored = true;
            }
            (limits::Outcome::Pass, _) => {}
        }
    }
    if monitored {
        (Reason::Monitored, id)
    } else {
        (Reason::Passed, ID_NONE)
    }
}

#[inline(always)]
pub fn verdict(parsed: Parsed, slot: u32) -> Reason {
    verdict_id(parsed, slot).0
}

/// [`verdict`] and the rule or limit that decided (see [`judge_id`]).
#[inline(always)]
pub fn verdict_id(parsed: Parsed, slot: u32) -> (Reason, u32) {
    match parsed {
        Parsed::NonIp => (Reason::PassedNonIp, ID_NONE),
        Parsed::Malformed => {
            if policy(active_set()).malformed_policy == MalformedPolicy::Pass as u32 {
                (Reason::PassedMalformed, ID_NONE)
            } else {
                (Reason::DroppedMalformed, ID_NONE)
            }
        }
        Parsed::Ip(p) => judge_id(active_set(), &p, slot),
    }
}
