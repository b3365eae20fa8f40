//! Reference model of the verdict: plain Rust over byte slices, written for clarity rather than
//! speed. Differential tests run the same frames through the XDP program and through this model
//! and require the same reason for every frame.

use crate::parse::*;
use crate::{MalformedPolicy, Reason};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ipnet::IpNet;
use std::vec::Vec;

/// What the parser found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (after up to two VLAN tags).
    NonIp,
    /// Claims to be IP but is truncated, inconsistent or too deeply nested.
    Malformed,
    /// A well-formed IP packet; `l4` is the transport protocol whose header was checked to be
    /// present, or `None` when there is none to see (non-first fragment, other protocols).
    Ip { src: IpAddr, l4: Option<u8> },
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

/// Check the transport header at `off` inside a packet that ends at `end`.
fn check_l4(frame: &[u8], off: usize, end: usize, proto: u8, v6: bool) -> Option<Option<u8>> {
    let Some(min) = l4_min_len(proto, v6) else {
        return Some(None);
    };
    if off + min > end {
        return None;
    }
    if proto == IPPROTO_TCP {
        let doff = usize::from(frame[off + 12] >> 4) * 4;
        if doff < TCP_MIN_HDR_LEN || off + doff > end {
            return None;
        }
    }
    Some(Some(proto))
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
    let src = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    let l4 = if frag_offset != 0 {
        None
    } else {
        check_l4(frame, off + ihl, off + total, hdr[9], false)?
    };
    Some(Parsed::Ip {
        src: IpAddr::V4(src),
        l4,
    })
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
    let src = IpAddr::V6(Ipv6Addr::from(src));
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
                return Some(Parsed::Ip { src, l4: None });
            }
        } else {
            let len = (usize::from(frame[at + 1]) + 1) * 8;
            if at + len > end {
                return None;
            }
            at += len;
        }
    }
    let l4 = check_l4(frame, at, end, next, true)?;
    Some(Parsed::Ip { src, l4 })
}

/// The configuration the XDP program enforces, in its plainest form.
#[derive(Clone, Debug, Default)]
pub struct ReferenceFilter {
    pub allow: Vec<IpNet>,
    pub block: Vec<IpNet>,
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
            Parsed::Ip { src, .. } => {
                if self.allow.iter().any(|n| n.contains(&src)) {
                    Reason::PassedAllowlisted
                } else if self.block.iter().any(|n| n.contains(&src)) {
                    Reason::DroppedBlocklist
                } else {
                    Reason::Passed
                }
            }
        }
    }
}
