//! Bounds-checked packet access and the Ethernet/VLAN layer.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, MAX_VLAN_TAGS, VLAN_HDR_LEN};

/// The one place that turns an offset into a packet pointer: `None` unless `len` bytes at `off`
/// lie inside the frame (the verifier insists on this comparison against `data_end`).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Read a `T` at `off` (unaligned: options and VLAN tags shift headers off their natural
/// alignment).
#[inline(always)]
pub fn read_at<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    let p = ptr_at::<T>(ctx, off)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p are inside the frame.
    Some(unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
pub fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    read_at::<[u8; 2]>(ctx, off).map(u16::from_be_bytes)
}

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

/// Frame length for the parsers' logical checks (lying length fields). Read through volatile
/// loads so LLVM cannot use these checks to drop a later `ptr_at` comparison: the verifier
/// only trusts comparisons made on the packet pointer itself.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: ctx.ctx is the xdp_md the kernel passed in.
    unsafe {
        let end = core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize;
        let start = core::ptr::read_volatile(&(*ctx.ctx).data) as usize;
        end - start
    }
}
