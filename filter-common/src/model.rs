//! Reference model of the verdict: plain Rust over byte slices, written for clarity rather than
//! speed, sharing nothing with the program's lookup structures (lists are prefix lists, rules
//! a linear scan of predicates, limits a map of buckets with time passed in). Differential
//! tests run the same frames through the XDP program and through this model and require the
//! same reason for every frame.

use crate::limits::{gcra, BYTE_TICKS_PER_NS};
use crate::packet::*;
use crate::parse::*;
use crate::rules::{dim_value, DIMS};
use crate::trie::Family;
use crate::{MalformedPolicy, Reason};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ipnet::IpNet;
use std::collections::HashMap;
use std::vec::Vec;

/// What the parser found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (after up to two VLAN tags).
    NonIp,
    /// Claims to be IP but is truncated, inconsistent or too deeply nested.
    Malformed,
    /// A well-formed IP packet.
    Ip(Packet),
}

impl Packet {
    /// The source as an address.
    pub fn src(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from((self.src_hi >> 32) as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(
                (u128::from(self.src_hi) << 64) | u128::from(self.src_lo),
            )),
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Transport header length that must be present for `proto`, if we check one.
fn l4_min_len(proto: u8, v6: bool) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(TCP_MIN_HDR_LEN),
        IPPROTO_UDP => Some(UDP_HDR_LEN),
        IPPROTO_ICMP if !v6 => Some(ICMP_HDR_LEN),
        IPPROTO_ICMPV6 if v6 => Some(ICMP_HDR_LEN),
        _ => None,
    }
}

/// Check the transport header of `p.proto` at `off` inside a packet that ends at `end`, and
/// read its ports, flags or ICMP type.
fn parse_l4(frame: &[u8], off: usize, end: usize, v6: bool, p: &mut Packet) -> Option<()> {
    let Some(min) = l4_min_len(p.proto, v6) else {
        return Some(());
    };
    if off + min > end {
        return None;
    }
    match p.proto {
        IPPROTO_TCP => {
            let doff = usize::from(frame[off + 12] >> 4) * 4;
            if doff < TCP_MIN_HDR_LEN || off + doff > end {
                return None;
            }
            p.sport = u32::from(be16(frame, off)?);
            p.dport = u32::from(be16(frame, off + 2)?);
            p.tcp_flags = u32::from(frame[off + 13]);
        }
        IPPROTO_UDP => {
            p.sport = u32::from(be16(frame, off)?);
            p.dport = u32::from(be16(frame, off + 2)?);
        }
        _ => p.icmp_type = u32::from(frame[off]),
    }
    Some(())
}

pub fn parse_frame(frame: &[u8]) -> Parsed {
    let Some(mut ethertype) = be16(frame, 12) else {
        return Parsed::Malformed;
    };
    let mut off = ETH_HDR_LEN;
    let mut tags = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if tags == MAX_VLAN_TAGS {
            return Parsed::Malformed;
        }
        let Some(inner) = be16(frame, off + 2) else {
            return Parsed::Malformed;
        };
        ethertype = inner;
        off += VLAN_HDR_LEN;
        tags += 1;
    }
    let parsed = match ethertype {
        ETH_P_IPV4 => parse_ipv4(frame, off),
        ETH_P_IPV6 => parse_ipv6(frame, off),
        _ => return Parsed::NonIp,
    };
    parsed.unwrap_or(Parsed::Malformed)
}

fn parse_ipv4(frame: &[u8], off: usize) -> Option<Parsed> {
    let hdr = frame.get(off..off + IPV4_MIN_HDR_LEN)?;
    if hdr[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if ihl < IPV4_MIN_HDR_LEN || total < ihl || off + total > frame.len() {
        return None;
    }
    let mut p = Packet::v4(u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]));
    p.proto = hdr[9];
    p.ttl = hdr[8];
    p.len = total as u32;
    let frags = u16::from_be_bytes([hdr[6], hdr[7]]);
    if frags & 0x1fff != 0 {
        p.frag = FRAG_LATER;
        return Some(Parsed::Ip(p));
    }
    if frags & 0x2000 != 0 {
        p.frag = FRAG_FIRST;
    }
    parse_l4(frame, off + ihl, off + total, false, &mut p)?;
    Some(Parsed::Ip(p))
}

fn parse_ipv6(frame: &[u8], off: usize) -> Option<Parsed> {
    let hdr = frame.get(off..off + IPV6_HDR_LEN)?;
    if hdr[0] >> 4 != 6 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut next = hdr[6];
    // A zero payload length is legal for jumbograms (and empty packets); the frame bounds it.
    let end = if payload == 0 {
        frame.len()
    } else {
        off + IPV6_HDR_LEN + payload
    };
    if end > frame.len() {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    let src = u128::from_be_bytes(src);
    let mut p = Packet::v6((src >> 64) as u64, src as u64);
    p.ttl = hdr[7];
    p.len = (end - off) as u32;
    let mut at = off + IPV6_HDR_LEN;
    let mut walked = 0;
    while let IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT = next {
        if walked == MAX_IPV6_EXT_HEADERS {
            return None;
        }
        walked += 1;
        if at + 8 > end {
            return None;
        }
        let this = next;
        next = frame[at];
        if this == IPPROTO_FRAGMENT {
            let frag_offset = u16::from_be_bytes([frame[at + 2], frame[at + 3]]) >> 3;
            at += IPV6_FRAG_HDR_LEN;
            if frag_offset != 0 {
                p.frag = FRAG_LATER;
                p.proto = next;
                return Some(Parsed::Ip(p));
            }
            p.frag = FRAG_FIRST;
        } else {
            let len = (usize::from(frame[at + 1]) + 1) * 8;
            if at + len > end {
                return None;
            }
            at += len;
        }
    }
    p.proto = next;
    parse_l4(frame, at, end, true, &mut p)?;
    Some(Parsed::Ip(p))
}

/// One rule in its plainest form: per dimension (`rules::DIM_*`), the value ranges it accepts
/// (`None`: any value). The program's tables are compiled from these; the model scans them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSpec {
    pub drop: bool,
    pub monitor: bool,
    pub ranges: [Option<Vec<(u32, u32)>>; DIMS as usize],
}

impl RuleSpec {
    pub fn matches(&self, p: &Packet) -> bool {
        (0..DIMS).all(|d| match &self.ranges[d as usize] {
            None => true,
            Some(r) => {
                let v = dim_value(p, d);
                r.iter().any(|&(a, b)| a <= v && v <= b)
            }
        })
    }
}

/// The configuration the XDP program enforces, in its plainest form. Rate limits are modelled
/// apart ([`ReferenceLimiter`]), with time passed in.
#[derive(Clone, Debug, Default)]
pub struct ReferenceFilter {
    pub allow: Vec<IpNet>,
    pub block: Vec<IpNet>,
    /// The block list in monitor mode: hits pass as `monitored`.
    pub block_monitor: bool,
    /// Banned prefixes (live bans only).
    pub bans: Vec<IpNet>,
    pub rules: Vec<RuleSpec>,
    pub malformed_policy: MalformedPolicy,
}

impl ReferenceFilter {
    pub fn verdict(&self, frame: &[u8]) -> Reason {
        match parse_frame(frame) {
            Parsed::NonIp => Reason::PassedNonIp,
            Parsed::Malformed => match self.malformed_policy {
                MalformedPolicy::Drop => Reason::DroppedMalformed,
                MalformedPolicy::Pass => Reason::PassedMalformed,
            },
            Parsed::Ip(p) => self.judge(&p),
        }
    }

    /// The reason for a parsed packet, before rate limits.
    pub fn judge(&self, p: &Packet) -> Reason {
        let src = p.src();
        if self.allow.iter().any(|n| n.contains(&src)) {
            return Reason::PassedAllowlisted;
        }
        if self.bans.iter().any(|n| n.contains(&src)) {
            return Reason::DroppedBanned;
        }
        let mut monitored = false;
        if self.block.iter().any(|n| n.contains(&src)) {
            if !self.block_monitor {
                return Reason::DroppedBlocklist;
            }
            monitored = true;
        }
        // Rules in monitor mode are looked past; the first of them that matches ahead of the
        // deciding rule is the one that counts.
        let mut first_monitor = None;
        for rule in &self.rules {
            if rule.matches(p) {
                if rule.monitor {
                    first_monitor.get_or_insert(rule);
                    continue;
                }
                return if rule.drop {
                    Reason::DroppedRule
                } else {
                    Reason::PassedRule
                };
            }
        }
        monitored |= first_monitor.is_some_and(|r| r.drop);
        if monitored {
            Reason::Monitored
        } else {
            Reason::Passed
        }
    }
}

/// A limit as the model sees it: costs and tolerances as the controller computes them for the
/// program (`LimitConf`), per source (shared by CPUs) or global (one CPU).
#[derive(Clone, Debug, Default)]
pub struct LimitSpec {
    pub classes: u32,
    pub per_source: bool,
    pub prefix: u32,
    pub pkt_cost: u64,
    pub pkt_tolerance: u64,
    pub byte_cost: u64,
    pub byte_tolerance: u64,
}

/// Rate limits with time passed in: one bucket per (limit, source prefix), the same GCRA the
/// program runs, but in a plain map.
#[derive(Clone, Debug, Default)]
pub struct ReferenceLimiter {
    pub limits: Vec<LimitSpec>,
    buckets: HashMap<(usize, u64, u64), (u64, u64)>,
}

impl ReferenceLimiter {
    pub fn new(limits: Vec<LimitSpec>) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
        }
    }

    /// Whether a packet at `now_ns` passes every limit (and charges the buckets it passes).
    pub fn admit(&mut self, p: &Packet, now_ns: u64) -> bool {
        let classes = crate::limits::classes_of(p);
        for (i, l) in self.limits.iter().enumerate() {
            if classes & l.classes == 0 {
                continue;
            }
            let (hi, lo) = if l.per_source {
                crate::limits::masked(p.src_hi, p.src_lo, l.prefix)
            } else {
                (0, 0)
            };
            let (pkt_tat, byte_tat) = self.buckets.entry((i, hi, lo)).or_default();
            let pkt = if l.pkt_cost == 0 {
                Some(*pkt_tat)
            } else {
                gcra(*pkt_tat, now_ns, l.pkt_cost, l.pkt_tolerance)
            };
            let byte = if l.byte_cost == 0 {
                Some(*byte_tat)
            } else {
                gcra(
                    *byte_tat,
                    now_ns * BYTE_TICKS_PER_NS,
                    u64::from(p.len) * l.byte_cost,
                    l.byte_tolerance,
                )
            };
            match (pkt, byte) {
                (Some(a), Some(b)) => {
                    *pkt_tat = a;
                    *byte_tat = b;
                }
                _ => return false,
            }
        }
        true
    }
}
