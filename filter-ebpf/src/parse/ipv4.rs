//! IPv4 header (with options) and the first transport header.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::IPV4_MIN_HDR_LEN;
use network_types::ip::Ipv4Hdr;

use filter_common::packet::{Packet, FRAG_FIRST, FRAG_LATER};

use super::{l4, ptr_at};

/// Parse the IPv4 header at `off`; `None` means malformed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let hdr = ptr_at::<Ipv4Hdr>(ctx, off)?;
    // SAFETY: ptr_at checked the whole minimal header is inside the frame; Ipv4Hdr has
    // alignment 1.
    let hdr = unsafe { &*hdr };
    if hdr.vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(hdr.vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes(hdr.tot_len));
    let frame_len = super::frame_len(ctx);
    if ihl < IPV4_MIN_HDR_LEN || total < ihl || off + total > frame_len {
        return None;
    }
    let mut p = Packet::v4(u32::from_be_bytes(hdr.src_addr));
    p.proto = hdr.proto;
    p.ttl = hdr.ttl;
    p.len = total as u32;
    let frags = u16::from_be_bytes(hdr.frags);
    if frags & 0x1fff != 0 {
        // A later fragment: no transport header to look at.
        p.frag = FRAG_LATER;
        return Some(p);
    }
    if frags & 0x2000 != 0 {
        p.frag = FRAG_FIRST;
    }
    l4::parse(ctx, off + ihl, off + total, false, &mut p)?;
    Some(p)
}
