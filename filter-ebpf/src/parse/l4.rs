//! The first transport header: present and consistent, or the packet is malformed.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{
    ICMP_HDR_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_MIN_HDR_LEN,
    UDP_HDR_LEN,
};

use filter_common::packet::Packet;

use super::read_at;

/// Check that the transport header for `p.proto` lies within [off, end) and read its ports,
/// TCP flags or ICMP type into `p`; `None` means malformed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize, end: usize, v6: bool, p: &mut Packet) -> Option<()> {
    let proto = p.proto;
    let min = match proto {
        IPPROTO_TCP => TCP_MIN_HDR_LEN,
        IPPROTO_UDP => UDP_HDR_LEN,
        IPPROTO_ICMP if !v6 => ICMP_HDR_LEN,
        IPPROTO_ICMPV6 if v6 => ICMP_HDR_LEN,
        _ => return Some(()),
    };
    if off + min > end {
        return None;
    }
    match proto {
        IPPROTO_TCP => {
            let head = read_at::<[u8; 14]>(ctx, off)?;
            let doff = usize::from(head[12] >> 4) * 4;
            if doff < TCP_MIN_HDR_LEN || off + doff > end {
                return None;
            }
            p.sport = u32::from(u16::from_be_bytes([head[0], head[1]]));
            p.dport = u32::from(u16::from_be_bytes([head[2], head[3]]));
            p.tcp_flags = u32::from(head[13]);
        }
        IPPROTO_UDP => {
            let head = read_at::<[u8; 4]>(ctx, off)?;
            p.sport = u32::from(u16::from_be_bytes([head[0], head[1]]));
            p.dport = u32::from(u16::from_be_bytes([head[2], head[3]]));
        }
        // The whole 4-byte ICMP header, not its first byte: a 1-byte check compiles to
        // `data_end > ptr`, which the verifier does not take as a bound.
        _ => p.icmp_type = u32::from(read_at::<[u8; ICMP_HDR_LEN]>(ctx, off)?[0]),
    }
    Some(())
}
