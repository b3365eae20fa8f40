//! Types shared by the XDP program and the `floodgate` controller.
//!
//! Everything here is `#[repr(C)]` and `no_std`: the same layout is read by the kernel side and
//! written by userspace. Userspace-only impls (aya's `Pod`) live behind the `user` feature; the
//! reference model of the verdict, the oracle for differential tests, needs `std`.
#![no_std]

#[cfg(feature = "std")]
#[macro_use]
extern crate std;

#[cfg(feature = "std")]
pub mod cidr;
#[cfg(feature = "std")]
pub mod frames;
#[cfg(feature = "std")]
pub mod model;
pub mod parse;

use bytemuck::{Pod, Zeroable};

/// How many interfaces one loaded filter can count separately. Slot 0 collects packets from
/// interfaces that have no slot (for example BPF_PROG_TEST_RUN on loopback).
pub const MAX_INTERFACES: u32 = 64;
/// Room for reasons that later features add; counters are indexed `slot * REASON_SLOTS + reason`.
pub const REASON_SLOTS: u32 = 16;
/// Interfaces are mapped to counter slots through an array indexed by ifindex.
pub const MAX_IFINDEX: u32 = 1 << 16;

/// Why a packet got its verdict. The value indexes the counters, so never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// IP packet that matched no list.
    Passed = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): always passed.
    PassedNonIp = 1,
    /// Source is on the allowlist, which wins over everything else.
    PassedAllowlisted = 2,
    /// Source is on the blocklist.
    DroppedBlocklist = 3,
    /// Truncated or malformed frame, dropped by the malformed policy (the default).
    DroppedMalformed = 4,
    /// Truncated or malformed frame, passed because the malformed policy says so.
    PassedMalformed = 5,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Passed,
        Reason::PassedNonIp,
        Reason::PassedAllowlisted,
        Reason::DroppedBlocklist,
        Reason::DroppedMalformed,
        Reason::PassedMalformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::PassedNonIp => "passed-non-ip",
            Reason::PassedAllowlisted => "passed-allowlisted",
            Reason::DroppedBlocklist => "dropped-blocklist",
            Reason::DroppedMalformed => "dropped-malformed",
            Reason::PassedMalformed => "passed-malformed",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(self, Reason::DroppedBlocklist | Reason::DroppedMalformed)
    }

    pub fn from_u32(v: u32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u32 == v)
    }
}

/// Packets and bytes for one (interface, reason); one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// What to do with frames that claim to be IP but cannot be parsed safely.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MalformedPolicy {
    #[default]
    Drop = 0,
    Pass = 1,
}

/// Runtime settings read by the program once per packet (index 0 of the `CONFIG` array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FilterConfig {
    /// `MalformedPolicy` as u32.
    pub malformed_policy: u32,
    pub reserved: [u32; 3],
}

/// One attached interface, kept in a map so that `status` works after the controller exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Attachment {
    pub ifindex: u32,
    /// `XdpMode` as chosen: 1 native, 2 skb; 0 means the slot is free.
    pub mode: u32,
    pub name: [u8; 16],
}

// ---------------------------------------------------------------------------------------------
// List encoding.
//
// Each list (allow, block) answers "is this source covered by one of my prefixes?". A kernel LPM
// trie costs hundreds of ns per miss at 1M entries, so lists are compiled into a first level that
// stays in the CPU cache and answers most packets, with exact structures behind it:
//
// IPv4: `V4_SUMMARY` has 4 bits per /24 block (2 per list): NONE, FULL (a prefix of /24 or
//   shorter covers the block) or PARTIAL (only longer prefixes touch it; then the list's
//   `*_V4_HOSTS` hash holds a 256-bit bitmap of the covered addresses of that block).
// IPv6: `V6_SUMMARY16` has 4 bits per /16 (NONE, FULL for prefixes up to /16, PARTIAL). For
//   PARTIAL, a hashed 2-bit-per-slot filter over the /32 (`V6_FILTER32`, 2 MiB) rejects most
//   sources; survivors look up the exact /32 in the list's `*_V6_BLOCKS` hash, which says FULL
//   (covered by a /17../32 prefix) and which prefix lengths above /32 exist under it; each such
//   length is one exact lookup in `*_V6_LONG`.
// ---------------------------------------------------------------------------------------------

pub const STATE_NONE: u64 = 0;
pub const STATE_FULL: u64 = 1;
pub const STATE_PARTIAL: u64 = 2;

/// Which list a 2-bit field or a filter bit belongs to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Allow = 0,
    Block = 1,
}

impl ListKind {
    pub const ALL: [ListKind; 2] = [ListKind::Allow, ListKind::Block];
    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
        }
    }
}

/// 2^24 /24 blocks, 16 per u64 word.
pub const V4_SUMMARY_WORDS: u32 = 1 << 20;
/// 2^24 /24 blocks, 32 per u64 word: the 4 MiB first level, see `V4Verdict`.
pub const V4_VERDICT24_WORDS: u32 = 1 << 19;

/// First-level IPv4 answer for a /24, derived from both lists' summary cells so that the
/// common cases (untouched, wholly blocked, wholly allowed) cost one load in a 4 MiB table.
pub const V4_VERDICT_NONE: u64 = 0;
pub const V4_VERDICT_BLOCK: u64 = 1;
pub const V4_VERDICT_ALLOW: u64 = 2;
/// Mixed or partial: read the summary cell and the host bitmaps.
pub const V4_VERDICT_DETAIL: u64 = 3;

/// Word index and bit shift of a /24's 2-bit first-level verdict.
#[inline(always)]
pub const fn verdict24_cell(block: u32) -> (u32, u32) {
    (block >> 5, (block & 31) * 2)
}

/// First-level verdict from a 4-bit summary cell (allow state in bits 0-1, block in 2-3).
#[inline(always)]
pub const fn v4_verdict_of_cell(cell: u64) -> u64 {
    let allow = cell & 3;
    let block = (cell >> 2) & 3;
    if allow == STATE_FULL {
        V4_VERDICT_ALLOW
    } else if allow == STATE_NONE && block == STATE_NONE {
        V4_VERDICT_NONE
    } else if allow == STATE_NONE && block == STATE_FULL {
        V4_VERDICT_BLOCK
    } else {
        V4_VERDICT_DETAIL
    }
}
/// 2^16 /16 prefixes, 16 per u64 word.
pub const V6_SUMMARY16_WORDS: u32 = 1 << 12;
/// log2 of the number of /32 filter slots.
pub const V6_FILTER_BITS: u32 = 21;
/// 2 bits per slot, 32 slots per u64 word.
pub const V6_FILTER32_WORDS: u32 = 1 << (V6_FILTER_BITS - 5);

/// Word index and bit shift of a 4-bit summary cell; the list's 2 bits are at `shift + 2*kind`.
#[inline(always)]
pub const fn summary_cell(index: u32) -> (u32, u32) {
    (index >> 4, (index & 15) * 4)
}

/// State of `kind` inside a 64-bit summary word.
#[inline(always)]
pub const fn summary_state(word: u64, shift: u32, kind: ListKind) -> u64 {
    (word >> (shift + 2 * kind as u32)) & 3
}

/// Slot of a /32 in the IPv6 filter: a multiplicative hash, cheap in eBPF and well spread for
/// the structured upper bits of real prefixes.
#[inline(always)]
pub const fn v6_filter_slot(top32: u32) -> u32 {
    (top32.wrapping_mul(0x9E37_79B1) ^ (top32 >> 16).wrapping_mul(0x85EB_CA6B))
        >> (32 - V6_FILTER_BITS)
}

/// Word index and bit shift of a /32's filter slot; the list's bit is at `shift + kind`.
#[inline(always)]
pub const fn v6_filter_cell(top32: u32) -> (u32, u32) {
    let slot = v6_filter_slot(top32);
    (slot >> 5, (slot & 31) * 2)
}

/// Addresses of one /24 covered by prefixes longer than /24: bit `host` of the 256.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HostBitmap {
    pub words: [u64; 4],
}

impl HostBitmap {
    /// Every address of the /24: how a list that covers the whole block shows in a `V4Detail`.
    pub const ALL: HostBitmap = HostBitmap {
        words: [u64::MAX; 4],
    };

    #[inline(always)]
    pub const fn contains(&self, host: u8) -> bool {
        (self.words[(host >> 6) as usize] >> (host & 63)) & 1 == 1
    }
}

/// Both lists' view of one mixed or partial /24, answered by two array loads instead of a
/// summary read and a hash lookup per list: the fast path for blocked single addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct V4Detail {
    pub allow: HostBitmap,
    pub block: HostBitmap,
}

/// log2 of the slots of the direct-mapped detail table (`V4_DETAIL_INDEX`, `V4_DETAIL`).
pub const V4_DETAIL_BITS: u32 = 16;
pub const V4_DETAIL_SLOTS: u32 = 1 << V4_DETAIL_BITS;

/// Index slot of a /24 in the detail table. The index word there is `(block24 + 1) |
/// (detail_slot << 32)` when that /24 owns the slot, else another /24's or 0; /24s that do
/// not own their slot take the summary and hash-map path.
#[inline(always)]
pub const fn v4_detail_slot(block24: u32) -> u32 {
    block24.wrapping_mul(0x9E37_79B1) >> (32 - V4_DETAIL_BITS)
}

/// `V6Block::flags`: the /32 is covered by a prefix between /17 and /32.
pub const V6_BLOCK_FULL: u32 = 1;

/// What one list knows about a /32 of IPv6 space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct V6Block {
    pub flags: u32,
    pub reserved: u32,
    /// Bit i set: some prefix of length 33 + i lies inside this /32 (i in 0..96).
    pub long_lengths: [u64; 2],
    /// Bit `v6_filter48_bit(addr)` set: some prefix of length 48 or more lies in that /48.
    /// Lets a source skip every /48-and-longer lookup with one test; shorter lengths (33-47)
    /// are always looked up.
    pub filter48: u64,
}

/// Bit of `V6Block::filter48` for the /48 that holds an address (its bits 32..48).
#[inline(always)]
pub const fn v6_filter48_bit(hi: u64) -> u32 {
    (((hi >> 16) as u32 & 0xffff).wrapping_mul(0x9E37_79B1)) >> 26
}

/// An IPv6 prefix longer than /32, address masked to `len` bits, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct V6PrefixKey {
    pub addr: [u8; 16],
    pub len: u32,
}

/// An IPv4 prefix as the operator entered it (network byte order, masked).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct V4PrefixKey {
    pub addr: [u8; 4],
    pub len: u32,
}

/// Mask a 128-bit address (as big-endian halves) to `len` bits.
#[inline(always)]
pub const fn mask_v6(hi: u64, lo: u64, len: u32) -> (u64, u64) {
    if len == 0 {
        (0, 0)
    } else if len < 64 {
        (hi & (u64::MAX << (64 - len)), 0)
    } else if len == 64 {
        (hi, 0)
    } else if len < 128 {
        (hi, lo & (u64::MAX << (128 - len)))
    } else {
        (hi, lo)
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are #[repr(C)] plain data without padding (bytemuck::Pod checks that).
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for FilterConfig {}
    unsafe impl aya::Pod for Attachment {}
    unsafe impl aya::Pod for HostBitmap {}
    unsafe impl aya::Pod for V4Detail {}
    unsafe impl aya::Pod for V6Block {}
    unsafe impl aya::Pod for V6PrefixKey {}
    unsafe impl aya::Pod for V4PrefixKey {}
}

/// Capacities of the list maps; the controller checks them before writing anything.
pub const V4_HOSTS_CAPACITY: u32 = 1 << 20;
pub const V6_BLOCKS_CAPACITY: u32 = 1 << 21;
/// Also the limit on IPv6 entries longer than /32 per list: this map is their record.
pub const V6_LONG_CAPACITY: u32 = 1 << 21;
/// Entries per list and address family as the operator entered them.
pub const RECORDS_CAPACITY: u32 = 1 << 21;
