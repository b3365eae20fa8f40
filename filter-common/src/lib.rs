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
pub mod limits;
pub mod maps;
#[cfg(feature = "std")]
pub mod model;
pub mod packet;
pub mod parse;
pub mod rules;
pub mod sample;
pub mod trie;

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
    /// An L4 rule with action `drop` matched.
    DroppedRule = 6,
    /// A rate threshold (per source or global) was exceeded.
    DroppedRateLimit = 7,
    /// The source is banned (a limit with `ban_seconds` placed it, or an operator did).
    DroppedBanned = 8,
    /// Something in monitor mode would have dropped the packet; it passed.
    Monitored = 9,
    /// An L4 rule with action `pass` matched: nothing after it was looked at.
    PassedRule = 10,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Passed,
        Reason::PassedNonIp,
        Reason::PassedAllowlisted,
        Reason::DroppedBlocklist,
        Reason::DroppedMalformed,
        Reason::PassedMalformed,
        Reason::DroppedRule,
        Reason::DroppedRateLimit,
        Reason::DroppedBanned,
        Reason::Monitored,
        Reason::PassedRule,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::PassedNonIp => "passed-non-ip",
            Reason::PassedAllowlisted => "passed-allowlisted",
            Reason::DroppedBlocklist => "dropped-blocklist",
            Reason::DroppedMalformed => "dropped-malformed",
            Reason::PassedMalformed => "passed-malformed",
            Reason::DroppedRule => "dropped-rule",
            Reason::DroppedRateLimit => "dropped-rate-limit",
            Reason::DroppedBanned => "dropped-banned",
            Reason::Monitored => "monitored",
            Reason::PassedRule => "passed-rule",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DroppedBlocklist
                | Reason::DroppedMalformed
                | Reason::DroppedRule
                | Reason::DroppedRateLimit
                | Reason::DroppedBanned
        )
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

/// The settings of one set (generation parity), read once per packet from `POLICY[set]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PolicyConfig {
    /// `MalformedPolicy` as u32.
    pub malformed_policy: u32,
    /// `rules::MODE_ENFORCE` or `rules::MODE_MONITOR` for the block list.
    pub block_mode: u32,
    /// Rule bitmap words in use (0: no rules).
    pub rule_words: u32,
    /// Bit d set: some rule constrains dimension d.
    pub rule_dims: u32,
    /// Limits in use (`LIMITS[set][0..limits]`).
    pub limits: u32,
    /// `POLICY_*` flags.
    pub flags: u32,
    /// Prefix lengths bans are keyed by, per family (0 ends the list).
    pub ban_prefixes_v4: [u8; 4],
    pub ban_prefixes_v6: [u8; 4],
}

/// Bans may exist: look the source up.
pub const POLICY_BANS: u32 = 1;
/// Some global limit uses the known-sources table: record sources in peacetime.
pub const POLICY_KNOWN: u32 = 2;
/// Some limit uses protected prefixes: look them up before limiting.
pub const POLICY_PROTECTED: u32 = 4;

/// One attached interface, kept in a map so that `status` works after the controller exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Attachment {
    pub ifindex: u32,
    /// `XdpMode` as chosen: 1 native, 2 skb; 0 means the slot is free.
    pub mode: u32,
    pub name: [u8; 16],
}

/// Which list an entry belongs to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Allow = 0,
    Block = 1,
    /// Never rate-limited or banned, and guarded against being blocked.
    Protected = 2,
}

impl ListKind {
    pub const ALL: [ListKind; 3] = [ListKind::Allow, ListKind::Block, ListKind::Protected];

    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Block => "block",
            ListKind::Protected => "protected",
        }
    }

    /// The trie the list is compiled into.
    pub const fn trie(self) -> u32 {
        match self {
            ListKind::Allow | ListKind::Block => trie::TRIE_LISTS,
            ListKind::Protected => trie::TRIE_PROTECTED,
        }
    }

    /// The cell verdict an entry of this list stands for in its trie (allow wins over
    /// block: it is the larger).
    pub const fn verdict(self) -> u64 {
        match self {
            ListKind::Allow => trie::CELL_ALLOW,
            ListKind::Block => trie::CELL_BLOCK,
            ListKind::Protected => trie::CELL_PROTECTED,
        }
    }
}

/// Entries per list and address family.
pub const LIST_CAPACITY: u32 = 1 << 21;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are #[repr(C)] plain data without padding (bytemuck::Pod checks that).
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for PolicyConfig {}
    unsafe impl aya::Pod for rules::RuleBits {}
    unsafe impl aya::Pod for limits::LimitConf {}
    unsafe impl aya::Pod for limits::SourceKey {}
    unsafe impl aya::Pod for limits::Bucket {}
    unsafe impl aya::Pod for limits::GlobalBucket {}
    unsafe impl aya::Pod for limits::BanKey {}
    unsafe impl aya::Pod for limits::Ban {}
    unsafe impl aya::Pod for limits::KnownKey {}
    unsafe impl aya::Pod for Attachment {}
    unsafe impl aya::Pod for trie::Node {}
    unsafe impl aya::Pod for trie::NodeMeta {}
    unsafe impl aya::Pod for sample::SampleRecord {}
    unsafe impl aya::Pod for sample::SampleCpu {}
}
