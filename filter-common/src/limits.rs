//! Rate thresholds, bans and the "known sources" of peacetime, as the program reads them.
//!
//! Buckets are the generic cell rate algorithm (GCRA, a continuously refilling token bucket
//! kept as one "theoretical arrival time" per bucket): a packet conforms when the bucket's TAT
//! is at most `tolerance` ahead of now, and then pushes the TAT by its cost. A burst of
//! `burst` packets is `tolerance = (burst - 1) * cost`. One word of state per bucket, updated
//! with compare-and-swap, so a per-source bucket holds whichever CPUs the source's packets
//! arrive on.

use crate::packet::{Packet, TCP_ACK, TCP_SYN};
use crate::parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use crate::trie::Family;

/// Limits one policy can hold.
pub const MAX_LIMITS: u32 = 32;

/// Traffic classes a limit applies to.
pub const CLASS_ALL: u8 = 0;
pub const CLASS_TCP_SYN: u8 = 1;
pub const CLASS_TCP: u8 = 2;
pub const CLASS_UDP: u8 = 3;
pub const CLASS_ICMP: u8 = 4;
pub const CLASS_NAMES: [&str; 5] = ["all", "tcp-syn", "tcp", "udp", "icmp"];

/// Bit `c` set for every class `c` the packet belongs to.
#[inline(always)]
pub const fn classes_of(p: &Packet) -> u32 {
    let mut c = 1 << CLASS_ALL;
    match p.proto {
        IPPROTO_TCP => {
            c |= 1 << CLASS_TCP;
            if p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                c |= 1 << CLASS_TCP_SYN;
            }
        }
        IPPROTO_UDP => c |= 1 << CLASS_UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => c |= 1 << CLASS_ICMP,
        _ => {}
    }
    c
}

pub const PER_SOURCE: u8 = 0;
pub const PER_GLOBAL: u8 = 1;

/// A global limit whose known sources pass first (`known_sources_first`).
pub const LIMIT_KNOWN_FIRST: u8 = 1;

/// Byte buckets count time in 1/64 ns (2^64 of them last 9 years of uptime). A byte costs
/// 512 * 10^9 / bps of them per bucket (a global limit's bucket has 1/CPUs of its rate),
/// rounded up to a whole unit so that a limit is never looser than asked: it is stricter by
/// less than one unit in the cost, less than bps / (512 * 10^9) of the rate. That is exact
/// for 1 Gbit/s, 1.5% at 10 Gbit/s and 15% at 100 Gbit/s (5.12 rounds to 6). Finer ticks
/// would wrap within the uptime of a server (1/1024 ns: 208 days).
pub const BYTE_TICKS_PER_NS: u64 = 64;

/// One limit of the active policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LimitConf {
    /// Stable identity (from the limit's name): per-source state survives a re-apply.
    pub id: u32,
    /// Counter slot of this limit.
    pub counter: u32,
    pub class: u8,
    pub per: u8,
    /// `rules::MODE_ENFORCE` or `rules::MODE_MONITOR`.
    pub mode: u8,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// `LIMIT_*` flags.
    pub flags: u8,
    pub reserved: [u8; 2],
    /// Emission interval per packet in ns (0: no packet rate), and how far ahead the TAT may
    /// run (the burst).
    pub pkt_cost: u64,
    pub pkt_tolerance: u64,
    /// Cost per byte in 1/64 ns (0: no byte rate) and the tolerance in the same unit.
    pub byte_cost: u64,
    pub byte_tolerance: u64,
    /// Ban duration in ns for a source that exceeds this limit (0: no ban).
    pub ban_ns: u64,
    /// Packets a source sends in one sketch epoch before it gets a bucket of its own (so
    /// that a random-source flood creates no per-source state).
    pub track_after: u32,
    pub reserved2: u32,
}

/// Per-source bucket state key: the limit's id and the source masked to its prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SourceKey {
    pub id: u32,
    pub family: u32,
    pub hi: u64,
    pub lo: u64,
}

/// A bucket: theoretical arrival times for packets (ns) and bytes (1/64 ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Bucket {
    pub pkt_tat: u64,
    pub byte_tat: u64,
}

/// A global bucket (one per CPU, limit and interface): also when it last refused a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GlobalBucket {
    pub pkt_tat: u64,
    pub byte_tat: u64,
    pub last_exceeded: u64,
    pub reserved: u64,
}

/// A ban: the banned source prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BanKey {
    pub family: u32,
    pub prefix: u32,
    pub hi: u64,
    pub lo: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Ban {
    /// CLOCK_MONOTONIC (coarse) time at which the ban lapses.
    pub expires: u64,
    /// The limit that placed it (0: placed by hand).
    pub limit_id: u32,
    pub reserved: u32,
}

/// A source seen in peacetime: when it was last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KnownKey {
    pub family: u32,
    pub reserved: u32,
    pub hi: u64,
    pub lo: u64,
}

/// Sources the known table holds; the sketch's size.
pub const KNOWN_SOURCES: u32 = 1 << 16;
pub const BAN_ENTRIES: u32 = 1 << 18;
pub const SOURCE_BUCKETS: u32 = 1 << 18;
pub const SKETCH_ROWS: u32 = 2;
pub const SKETCH_WIDTH: u32 = 1 << 13;
/// A sketch epoch lasts 2^27 ns (134 ms). Short epochs keep a random-source flood's noise in
/// each counter (flood rate x epoch / width) below the tracking thresholds: with 1 s epochs a
/// 3 Mpps flood on one CPU put 400 in every counter, over a burst-bound threshold of 250, and
/// gave every spoofed source a bucket. A source at its limit still reaches its threshold in
/// half an epoch (`track_after` is at most half an epoch's worth of its rate).
pub const SKETCH_EPOCH_SHIFT: u32 = 27;
/// A global bucket that refused a packet less than this long ago means "under attack": no
/// source enters the known table then.
pub const CALM_AFTER_NS: u64 = 2_000_000_000;

/// The first `prefix` bits of an address given as big-endian halves (IPv4 in the top 32).
#[inline(always)]
pub const fn masked(hi: u64, lo: u64, prefix: u32) -> (u64, u64) {
    if prefix == 0 {
        (0, 0)
    } else if prefix < 64 {
        (hi & (u64::MAX << (64 - prefix)), 0)
    } else if prefix == 64 {
        (hi, 0)
    } else if prefix < 128 {
        (hi, lo & (u64::MAX << (128 - prefix)))
    } else {
        (hi, lo)
    }
}

/// The aggregation prefix a limit uses for a family.
#[inline(always)]
pub const fn prefix_for(c: &LimitConf, family: Family) -> u32 {
    match family {
        Family::V4 => c.prefix_v4 as u32,
        Family::V6 => c.prefix_v6 as u32,
    }
}

/// One GCRA decision: the new TAT if a packet of `cost` conforms at `now`, else `None`.
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, cost: u64, tolerance: u64) -> Option<u64> {
    if tat > now.saturating_add(tolerance) {
        return None;
    }
    let base = if tat > now { tat } else { now };
    Some(base.saturating_add(cost))
}

/// How far ahead of now a known source may run a global bucket's TAT when the bucket refuses
/// newcomers (`tolerance`): one more bucket depth, so that known sources pass first but the
/// threshold still holds over time (at most two bursts beyond the rate).
#[inline(always)]
pub const fn known_tolerance(cost: u64, tolerance: u64) -> u64 {
    tolerance.saturating_mul(2).saturating_add(cost)
}

/// The sketch counter slot of a source in row `row` (multiplicative hashes, cheap in eBPF).
#[inline(always)]
pub const fn sketch_slot(hi: u64, lo: u64, row: u32) -> u32 {
    let x = hi ^ lo.rotate_left(17) ^ ((row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let h = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    (row * SKETCH_WIDTH) + ((h >> 32) as u32 & (SKETCH_WIDTH - 1))
}
