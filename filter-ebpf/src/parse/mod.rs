//! Parsing: one bounds-checked accessor (`ptr_at`) and a module per layer. Nothing here
//! decides; the result is a [`Parsed`] packet.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6};

mod ethernet;
mod ipv4;
mod ipv6;
mod l4;

pub use filter_common::packet::Packet;

/// What the parser found.
#[derive(Clone, Copy)]
pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Claims to be IP but is truncated, inconsistent or nested too deep.
    Malformed,
    Ip(Packet),
}

/// The one place that turns an offset into a packet pointer: `None` unless `size_of::<T>()`
/// bytes at `off` lie inside the frame (the verifier insists on this comparison).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Read a `T` at `off` (unaligned: options and VLAN tags shift headers off alignment).
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

/// Parse a frame down to its transport header.
#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Parsed {
    let packet = match ethernet::parse(ctx) {
        ethernet::L2::Malformed => None,
        ethernet::L2::Network {
            ethertype: ETH_P_IPV4,
            off,
        } => ipv4::parse(ctx, off),
        ethernet::L2::Network {
            ethertype: ETH_P_IPV6,
            off,
        } => ipv6::parse(ctx, off),
        ethernet::L2::Network { .. } => return Parsed::NonIp,
    };
    match packet {
        Some(p) => Parsed::Ip(p),
        None => Parsed::Malformed,
    }
}
