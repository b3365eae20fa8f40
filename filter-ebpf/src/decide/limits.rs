//! Rate thresholds, bans and known sources. Only reached when the policy has limits or bans.
//!
//! Per-source buckets live in an LRU hash shared by all CPUs and are charged with
//! compare-and-swap, so one source's limit holds whichever CPUs its packets arrive on. A source
//! gets a bucket only once a per-CPU count-min sketch has seen it send `track_after` packets in
//! the current second: a random-source flood, one or two packets per source, creates no
//! per-source state and cannot evict real clients' buckets. Global buckets are per CPU (no
//! shared cache line under a flood), each with the rate divided by the CPUs.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_ebpf::helpers::bpf_loop;
use aya_log_ebpf::info;
use filter_common::limits::{
    classes_of, gcra, known_tolerance, masked, prefix_for, sketch_slot, Ban, BanKey, Bucket,
    KnownKey, LimitConf, SourceKey, BYTE_TICKS_PER_NS, CALM_AFTER_NS, LIMIT_KNOWN_FIRST,
    MAX_LIMITS, PER_SOURCE, SKETCH_EPOCH_SHIFT, SKETCH_ROWS,
};
use filter_common::packet::Packet;
use filter_common::rules::MODE_MONITOR;
use filter_common::sample::ID_NONE;
use filter_common::trie::{Family, TRIE_PROTECTED};
use filter_common::{PolicyConfig, MAX_INTERFACES, POLICY_BANS, POLICY_KNOWN, POLICY_PROTECTED};

use crate::maps::{BANS, GLOBAL_BUCKETS, KNOWN, LIMITS, SKETCH, SOURCE_BUCKETS};
use crate::observe;

const BPF_NOEXIST: u64 = 1;

/// What the limits make of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// A limit in monitor mode would have dropped it.
    Monitored,
    Drop,
}

/// Coarse monotonic time: a few ns to read; its tick (a few ms) only shapes bursts within a
/// tick, the long-run rate is exact.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Charge a shared TAT: a few compare-and-swap attempts, then give way (the CPUs that won
/// charged the bucket; a packet that loses every race passes). Public for the bench object's
/// per-CPU comparison, which must charge exactly as the product does.
#[inline(always)]
pub fn charge_shared(tat: *mut u64, now: u64, cost: u64, tolerance: u64) -> bool {
    let mut i = 0;
    while i < 4 {
        // SAFETY: `tat` points into a map value the verifier checked; the value stays valid
        // while this program runs.
        let old = unsafe { core::ptr::read_volatile(tat) };
        let Some(new) = gcra(old, now, cost, tolerance) else {
            return false;
        };
        // SAFETY: as above; an 8-byte aligned u64.
        let (_, ok) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { AtomicOrdering::SeqCst },
                { AtomicOrdering::SeqCst },
            >(tat, old, new)
        };
        if ok {
            return true;
        }
        i += 1;
    }
    true
}

/// Count the source in this CPU's sketch; returns its estimate for the current epoch.
#[inline(always)]
fn sketch_bump(hi: u64, lo: u64, now: u64) -> u32 {
    let epoch = ((now >> SKETCH_EPOCH_SHIFT) & 0xff) as u32;
    let mut estimate = u32::MAX;
    let mut row = 0;
    while row < SKETCH_ROWS {
        if let Some(c) = SKETCH.get_ptr_mut(sketch_slot(hi, lo, row)) {
            // SAFETY: per-CPU slot; only this CPU writes it while this program runs.
            let v = unsafe { *c };
            let count = if v >> 24 == epoch {
                (v & 0x00ff_ffff) + 1
            } else {
                1
            };
            // SAFETY: as above.
            unsafe { *c = epoch << 24 | count.min(0x00ff_ffff) };
            if count < estimate {
                estimate = count;
            }
        }
        row += 1;
    }
    estimate
}

#[inline(always)]
fn protected(set: u32, policy: &PolicyConfig, p: &Packet) -> bool {
    policy.flags & POLICY_PROTECTED != 0
        && super::lists::lookup(set, TRIE_PROTECTED, p) != filter_common::trie::CELL_NONE
}

/// Whether the source is banned (and the ban has not lapsed): one lookup per ban prefix
/// length in use, usually one.
#[inline(always)]
pub fn banned(policy: &PolicyConfig, p: &Packet) -> bool {
    if policy.flags & POLICY_BANS == 0 {
        return false;
    }
    let prefixes = match p.family {
        Family::V4 => policy.ban_prefixes_v4,
        Family::V6 => policy.ban_prefixes_v6,
    };
    let t = now();
    let mut i = 0;
    while i < 4 {
        let prefix = u32::from(prefixes[i]);
        if prefix == 0 {
            break;
        }
        let (hi, lo) = masked(p.src_hi, p.src_lo, prefix);
        let key = BanKey {
            family: p.family as u32,
            prefix,
            hi,
            lo,
        };
        // SAFETY: plain data read once.
        if let Some(ban) = unsafe { BANS.get(&key) } {
            if ban.expires > t {
                return true;
            }
            // Lapsed: tidy up so `bans list` shows only live bans.
            let _ = BANS.remove(&key);
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn place_ban(conf: &LimitConf, p: &Packet, prefix: u32, t: u64, estimate: u32) {
    let (hi, lo) = masked(p.src_hi, p.src_lo, prefix);
    let key = BanKey {
        family: p.family as u32,
        prefix,
        hi,
        lo,
    };
    let ban = Ban {
        expires: t + conf.ban_ns,
        limit_id: conf.id,
        reserved: 0,
    };
    // Only the first CPU to ban a source logs it: rare, never per packet.
    if BANS.insert(&key, &ban, BPF_NOEXIST).is_ok() {
        match p.family {
            Family::V4 => info!(
                &(),
                "ban {:i}/{} by limit {} for {} s: sketch counted {} of its packets on this CPU in the current 134 ms epoch",
                (hi >> 32) as u32,
                prefix,
                conf.id,
                conf.ban_ns / 1_000_000_000,
                estimate
            ),
            Family::V6 => {
                let mut a = [0u8; 16];
                a[..8].copy_from_slice(&hi.to_be_bytes());
                a[8..].copy_from_slice(&lo.to_be_bytes());
                info!(
                    &(),
                    "ban {:i}/{} by limit {} for {} s: sketch counted {} of its packets on this CPU in the current 134 ms epoch",
                    a,
                    prefix,
                    conf.id,
                    conf.ban_ns / 1_000_000_000,
                    estimate
                )
            }
        }
    }
}

/// A per-source limit; on `Drop`, also the source's sketch estimate (for the ban event): its
/// packets counted on this CPU in the current sketch epoch (2^30 ns), an upper bound
/// (count-min) that starts again at each epoch. Kept up only for limits that ban.
#[inline(always)]
fn per_source(conf: &LimitConf, p: &Packet, t: u64) -> (Outcome, u32) {
    let prefix = prefix_for(conf, p.family);
    let (hi, lo) = masked(p.src_hi, p.src_lo, prefix);
    let key = SourceKey {
        id: conf.id,
        family: p.family as u32,
        hi,
        lo,
    };
    let mut estimate = 0;
    let bucket = match SOURCE_BUCKETS.get_ptr_mut(&key) {
        Some(b) => {
            // A limit that bans keeps counting its tracked sources, so that the ban event
            // carries the source's measured packets (two per-CPU slots per packet, only for
            // limits with bans).
            if conf.ban_ns != 0 {
                estimate = sketch_bump(hi, lo ^ u64::from(conf.id), t);
            }
            b
        }
        None => {
            estimate = sketch_bump(hi, lo ^ u64::from(conf.id), t);
            if estimate < conf.track_after {
                return (Outcome::Pass, 0);
            }
            let _ = SOURCE_BUCKETS.insert(&key, &Bucket::default(), BPF_NOEXIST);
            match SOURCE_BUCKETS.get_ptr_mut(&key) {
                Some(b) => b,
                None => return (Outcome::Pass, 0),
            }
        }
    };
    // SAFETY: field pointers into the map value the lookup returned.
    let (pkt_tat, byte_tat) = unsafe { (&raw mut (*bucket).pkt_tat, &raw mut (*bucket).byte_tat) };
    let ok = (conf.pkt_cost == 0 || charge_shared(pkt_tat, t, conf.pkt_cost, conf.pkt_tolerance))
        && (conf.byte_cost == 0
            || charge_shared(
                byte_tat,
                t.wrapping_mul(BYTE_TICKS_PER_NS),
                u64::from(p.len) * conf.byte_cost,
                conf.byte_tolerance,
            ));
    if ok {
        (Outcome::Pass, 0)
    } else {
        (Outcome::Drop, estimate)
    }
}

#[inline(always)]
fn known_key(p: &Packet) -> KnownKey {
    let (hi, lo) = match p.family {
        Family::V4 => masked(p.src_hi, p.src_lo, 32),
        Family::V6 => masked(p.src_hi, p.src_lo, 64),
    };
    KnownKey {
        family: p.family as u32,
        reserved: 0,
        hi,
        lo,
    }
}

/// A global limit (this CPU's share of it, for this interface); `limit` is its counter slot.
#[inline(always)]
fn global(limit: u32, conf: &LimitConf, flags: u32, p: &Packet, t: u64, slot: u32) -> Outcome {
    let Some(g) = GLOBAL_BUCKETS.get_ptr_mut(limit * MAX_INTERFACES + slot) else {
        return Outcome::Pass;
    };
    // SAFETY: per-CPU value: only this CPU touches it while this program runs.
    let g = unsafe { &mut *g };
    let bytes = u64::from(p.len) * conf.byte_cost;
    let tb = t.wrapping_mul(BYTE_TICKS_PER_NS);
    let pkt = if conf.pkt_cost == 0 {
        Some(g.pkt_tat)
    } else {
        gcra(g.pkt_tat, t, conf.pkt_cost, conf.pkt_tolerance)
    };
    let byte = if conf.byte_cost == 0 {
        Some(g.byte_tat)
    } else {
        gcra(g.byte_tat, tb, bytes, conf.byte_tolerance)
    };
    // This limit lets known sources first (the policy-wide flag says the table is in use).
    let known_first = flags & POLICY_KNOWN != 0 && conf.flags & LIMIT_KNOWN_FIRST != 0;
    if let (Some(pt), Some(bt)) = (pkt, byte) {
        g.pkt_tat = pt;
        g.byte_tat = bt;
        if known_first && t.saturating_sub(g.last_exceeded) > CALM_AFTER_NS {
            // Peacetime: remember who talks to us.
            let key = known_key(p);
            // SAFETY: plain data.
            if unsafe { KNOWN.get(&key) }.is_none() {
                let _ = KNOWN.insert(&key, &t, 0);
            }
        }
        return Outcome::Pass;
    }
    g.last_exceeded = t;
    if known_first {
        // SAFETY: plain data.
        if unsafe { KNOWN.get(&known_key(p)) }.is_some() {
            // Known sources pass first: they may run the TAT up to one more bucket depth
            // ahead, where newcomers are refused, and no further, so the threshold holds over
            // time (known traffic can take all of it, the rest shares what is left).
            let pkt = if conf.pkt_cost == 0 {
                Some(g.pkt_tat)
            } else {
                gcra(
                    g.pkt_tat,
                    t,
                    conf.pkt_cost,
                    known_tolerance(conf.pkt_cost, conf.pkt_tolerance),
                )
            };
            let byte = if conf.byte_cost == 0 {
                Some(g.byte_tat)
            } else {
                gcra(
                    g.byte_tat,
                    tb,
                    bytes,
                    known_tolerance(bytes, conf.byte_tolerance),
                )
            };
            if let (Some(pt), Some(bt)) = (pkt, byte) {
                g.pkt_tat = pt;
                g.byte_tat = bt;
                return Outcome::Pass;
            }
        }
    }
    Outcome::Drop
}

/// What one run over the limits needs, on the stack of [`check`]: `bpf_loop` hands its
/// callback a pointer to it.
#[repr(C)]
struct Walk {
    packet: Packet,
    t: u64,
    flags: u32,
    set: u32,
    slot: u32,
    classes: u32,
    outcome: u32,
    /// Counter slot of the limit that dropped (or would have), for sampled records.
    counter: u32,
}

const WALK_PASS: u32 = 0;
const WALK_MONITORED: u32 = 1;
const WALK_DROP: u32 = 2;

/// One limit, as a `bpf_loop` callback: the verifier checks this body once, not once per
/// limit. Returns 1 (stop) once a limit drops the packet.
extern "C" fn limit_step(index: u64, walk: *mut c_void) -> i64 {
    // SAFETY: `check` passes a pointer to its own `Walk`, alive for the whole loop.
    let w = unsafe { &mut *walk.cast::<Walk>() };
    let i = index as u32 & (MAX_LIMITS - 1);
    let Some(conf) = LIMITS.get(w.set * MAX_LIMITS + i) else {
        return 0;
    };
    if w.classes & (1 << (conf.class & 31)) == 0 {
        return 0;
    }
    let (outcome, estimate) = if conf.per == PER_SOURCE {
        per_source(conf, &w.packet, w.t)
    } else {
        // Keyed by the limit's counter slot, which follows its name across applies (the
        // controller resets it when the limit is new or its rate changes): a limit's TAT
        // stays its own when limits are reordered, added or removed.
        let limit = conf.counter & (MAX_LIMITS - 1);
        (global(limit, conf, w.flags, &w.packet, w.t, w.slot), 0)
    };
    if outcome != Outcome::Drop {
        return 0;
    }
    observe::count_limit(conf.counter, w.packet.len);
    if conf.mode as u64 == MODE_MONITOR {
        w.outcome = WALK_MONITORED;
        w.counter = conf.counter;
        return 0;
    }
    if conf.per == PER_SOURCE && conf.ban_ns != 0 {
        let prefix = prefix_for(conf, w.packet.family);
        place_ban(conf, &w.packet, prefix, w.t, estimate);
    }
    w.outcome = WALK_DROP;
    w.counter = conf.counter;
    1
}

/// Apply the policy's limits to a packet of set `set` arriving on counter slot `slot`.
/// Protected sources are never limited (nor charged) nor banned. Also the counter slot of
/// the limit that dropped (or would have).
#[inline(always)]
pub fn check(set: u32, policy: &PolicyConfig, p: &Packet, slot: u32) -> (Outcome, u32) {
    if protected(set, policy, p) {
        return (Outcome::Pass, ID_NONE);
    }
    let mut walk = Walk {
        packet: *p,
        t: now(),
        flags: policy.flags,
        set,
        slot,
        classes: classes_of(p),
        outcome: WALK_PASS,
        counter: ID_NONE,
    };
    let n = if policy.limits < MAX_LIMITS {
        policy.limits
    } else {
        MAX_LIMITS
    };
    // SAFETY: the callback and its context are valid for the call (bpf_loop, kernel 5.17+).
    unsafe {
        bpf_loop(
            n,
            limit_step as *mut c_void,
            (&raw mut walk).cast::<c_void>(),
            0,
        );
    }
    let outcome = match walk.outcome {
        WALK_DROP => Outcome::Drop,
        WALK_MONITORED => Outcome::Monitored,
        _ => Outcome::Pass,
    };
    (outcome, walk.counter)
}
