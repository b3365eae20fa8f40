//! Ethernet and up to two VLAN tags.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, MAX_VLAN_TAGS, VLAN_HDR_LEN};

use super::be16_at;

pub enum L2 {
    /// The network header starts at `off`, with this ethertype.
    Network { ethertype: u16, off: usize },
    /// Runt frame, truncated tag or more VLAN tags than supported.
    Malformed,
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> L2 {
    let Some(mut ethertype) = be16_at(ctx, 12) else {
        return L2::Malformed;
    };
    let mut off = ETH_HDR_LEN;
    // Unrolled by hand: at most MAX_VLAN_TAGS tags, a deeper stack is malformed.
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && is_vlan(ethertype) {
        match be16_at(ctx, off + 2) {
            Some(inner) => ethertype = inner,
            None => return L2::Malformed,
        }
        off += VLAN_HDR_LEN;
        tags += 1;
    }
    if is_vlan(ethertype) {
        return L2::Malformed;
    }
    L2::Network { ethertype, off }
}
