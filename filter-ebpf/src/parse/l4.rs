//! The first transport header: present and consistent, or the packet is malformed.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{
    ICMP_HDR_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_MIN_HDR_LEN,
    UDP_HDR_LEN,
};

use super::read_at;

/// Check that the transport header for `proto` lies within [off, end); `None` means malformed.
#[inline(always)]
pub fn check(ctx: &XdpContext, off: usize, end: usize, proto: u8, v6: bool) -> Option<()> {
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
    if proto == IPPROTO_TCP {
        let doff = usize::from(read_at::<u8>(ctx, off + 12)? >> 4) * 4;
        if doff < TCP_MIN_HDR_LEN || off + doff > end {
            return None;
        }
    }
    Some(())
}
