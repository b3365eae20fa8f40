//! IPv6 header and a bounded walk over extension headers.

use aya_ebpf::programs::XdpContext;
use filter_common::parse::{
    IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPV6_FRAG_HDR_LEN,
    IPV6_HDR_LEN, MAX_IPV6_EXT_HEADERS,
};
use network_types::ip::Ipv6Hdr;

use filter_common::packet::{Packet, FRAG_FIRST, FRAG_LATER};

use super::{l4, ptr_at, read_at};

#[inline(always)]
fn is_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
    )
}

/// Parse the IPv6 header at `off`; `None` means malformed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let hdr = ptr_at::<Ipv6Hdr>(ctx, off)?;
    // SAFETY: ptr_at checked the header is inside the frame; Ipv6Hdr has alignment 1.
    let hdr = unsafe { &*hdr };
    if hdr.vcf[0] >> 4 != 6 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes(hdr.payload_len));
    let frame_len = super::frame_len(ctx);
    // Zero payload length: jumbogram or empty packet; the frame bounds it.
    let end = if payload == 0 {
        frame_len
    } else {
        off + IPV6_HDR_LEN + payload
    };
    if end > frame_len {
        return None;
    }
    let src_bytes = hdr.src_addr;
    let mut p = Packet::v6(
        u64::from_be_bytes([
            src_bytes[0],
            src_bytes[1],
            src_bytes[2],
            src_bytes[3],
            src_bytes[4],
            src_bytes[5],
            src_bytes[6],
            src_bytes[7],
        ]),
        u64::from_be_bytes([
            src_bytes[8],
            src_bytes[9],
            src_bytes[10],
            src_bytes[11],
            src_bytes[12],
            src_bytes[13],
            src_bytes[14],
            src_bytes[15],
        ]),
    );
    p.ttl = hdr.hop_limit;
    p.len = (end - off) as u32;
    let mut next = hdr.next_hdr;
    let mut at = off + IPV6_HDR_LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext(next) {
            break;
        }
        if at + 8 > end {
            return None;
        }
        let head = read_at::<[u8; 4]>(ctx, at)?;
        let this = next;
        next = head[0];
        if this == IPPROTO_FRAGMENT {
            at += IPV6_FRAG_HDR_LEN;
            if u16::from_be_bytes([head[2], head[3]]) >> 3 != 0 {
                // Not the first fragment: no transport header to look at.
                p.frag = FRAG_LATER;
                p.proto = next;
                return Some(p);
            }
            p.frag = FRAG_FIRST;
        } else {
            let len = (usize::from(head[1]) + 1) * 8;
            if at + len > end {
                return None;
            }
            at += len;
        }
    }
    if is_ext(next) {
        // Longer chain than we walk: treat as broken rather than let it slip past.
        return None;
    }
    p.proto = next;
    l4::parse(ctx, at, end, true, &mut p)?;
    Some(p)
}
