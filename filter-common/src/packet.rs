//! The facts of a parsed packet that decisions use. The XDP parser and the reference model
//! both fill a [`Packet`], so rules and limits see the same thing on both sides.

use crate::trie::Family;

/// Not a fragment (IPv4 with MF clear and offset 0; IPv6 without a fragment header).
pub const FRAG_NONE: u8 = 0;
/// The first fragment: its transport header is there.
pub const FRAG_FIRST: u8 = 1;
/// A later fragment: no transport header.
pub const FRAG_LATER: u8 = 2;

/// Port value of a packet without ports (not TCP or UDP, or a later fragment).
pub const PORT_NONE: u32 = 1 << 16;
/// TCP flags or ICMP type of a packet that has none.
pub const BYTE_NONE: u32 = 1 << 8;

pub const TCP_FIN: u32 = 0x01;
pub const TCP_SYN: u32 = 0x02;
pub const TCP_RST: u32 = 0x04;
pub const TCP_PSH: u32 = 0x08;
pub const TCP_ACK: u32 = 0x10;
pub const TCP_URG: u32 = 0x20;
pub const TCP_ECE: u32 = 0x40;
pub const TCP_CWR: u32 = 0x80;

/// A well-formed IP packet as decisions see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub family: Family,
    /// Source address as big-endian halves; IPv4 as `addr << 32` in `src_hi`.
    pub src_hi: u64,
    pub src_lo: u64,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// `FRAG_*`.
    pub frag: u8,
    /// IP packet length: IPv4 total length, IPv6 40 + payload length.
    pub len: u32,
    /// Ports, or `PORT_NONE`.
    pub sport: u32,
    pub dport: u32,
    /// The TCP flags byte, or `BYTE_NONE`.
    pub tcp_flags: u32,
    /// The ICMP or ICMPv6 type, or `BYTE_NONE`.
    pub icmp_type: u32,
}

impl Packet {
    /// An IPv4 packet from `addr` with nothing else known (callers fill in the rest).
    pub const fn v4(addr: u32) -> Packet {
        Packet {
            family: Family::V4,
            src_hi: (addr as u64) << 32,
            src_lo: 0,
            proto: 0,
            ttl: 0,
            frag: FRAG_NONE,
            len: 0,
            sport: PORT_NONE,
            dport: PORT_NONE,
            tcp_flags: BYTE_NONE,
            icmp_type: BYTE_NONE,
        }
    }

    pub const fn v6(hi: u64, lo: u64) -> Packet {
        Packet {
            family: Family::V6,
            src_hi: hi,
            src_lo: lo,
            ..Packet::v4(0)
        }
    }
}
