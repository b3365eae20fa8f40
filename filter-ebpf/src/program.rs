//! The XDP entry points: the production filter and the bench-only variants.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::bpf_get_prandom_u32;
use aya_ebpf::macros::xdp;
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::programs::XdpContext;
use filter_common::parse::{
    ETH_P_IPV4, ETH_P_IPV6, ICMP_HDR_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    TCP_MIN_HDR_LEN, UDP_HDR_LEN,
};
use filter_common::{MalformedPolicy, Reason, MAX_INTERFACES, REASON_SLOTS};

use crate::ethernet::{self, read_at, L2};
use crate::lists;
use crate::maps::{BENCH_LPM_V4, BENCH_LPM_V6, CONFIG, COUNTERS, IFACE_SLOTS};
use crate::{ipv4, ipv6};

/// Source address of a well-formed IP packet (IPv6 as big-endian halves).
#[derive(Clone, Copy)]
pub enum Source {
    V4(u32),
    V6(u64, u64),
}

/// Check that the transport header for `proto` lies within [off, end); `None` means malformed.
#[inline(always)]
pub fn check_l4(ctx: &XdpContext, off: usize, end: usize, proto: u8, v6: bool) -> Option<()> {
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

/// How the bench variants replace the source address.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Production: the packet's own source.
    Real,
    /// A fresh random source per packet, to defeat the cache warmth of BPF_PROG_TEST_RUN.
    RandomSource,
    /// Random source, blocklist looked up in the kernel LPM trie instead (comparison).
    RandomSourceLpm,
}

#[inline(always)]
fn random_source(src: Source) -> Source {
    // SAFETY: helper without preconditions.
    let r = || unsafe { bpf_get_prandom_u32() };
    match src {
        Source::V4(_) => Source::V4(r()),
        // Keep the bench inside 2000::/3, where real lists and real attackers live.
        Source::V6(_, _) => Source::V6(
            (0x2000_0000_0000_0000 | (u64::from(r()) << 32 | u64::from(r())) >> 3)
                & 0x3fff_ffff_ffff_ffff,
            u64::from(r()) << 32 | u64::from(r()),
        ),
    }
}

#[inline(always)]
fn lpm_blocked(src: Source) -> bool {
    match src {
        Source::V4(a) => BENCH_LPM_V4.get(&Key::new(32, a.to_be_bytes())).is_some(),
        Source::V6(hi, lo) => {
            let mut data = [0u8; 16];
            data[..8].copy_from_slice(&hi.to_be_bytes());
            data[8..].copy_from_slice(&lo.to_be_bytes());
            BENCH_LPM_V6.get(&Key::new(128, data)).is_some()
        }
    }
}

#[inline(always)]
fn classify(ctx: &XdpContext, variant: Variant) -> Reason {
    let source = match ethernet::parse(ctx) {
        L2::Malformed => None,
        L2::Network {
            ethertype: ETH_P_IPV4,
            off,
        } => ipv4::parse(ctx, off),
        L2::Network {
            ethertype: ETH_P_IPV6,
            off,
        } => ipv6::parse(ctx, off),
        L2::Network { .. } => return Reason::PassedNonIp,
    };
    let Some(mut src) = source else {
        return match CONFIG.get(0) {
            Some(c) if c.malformed_policy == MalformedPolicy::Pass as u32 => {
                Reason::PassedMalformed
            }
            _ => Reason::DroppedMalformed,
        };
    };
    if variant != Variant::Real {
        src = random_source(src);
    }
    if variant == Variant::RandomSourceLpm {
        return if lpm_blocked(src) {
            Reason::DroppedBlocklist
        } else {
            Reason::Passed
        };
    }
    let (allowed, blocked) = match src {
        Source::V4(a) => lists::v4_lookup(a),
        Source::V6(hi, lo) => lists::v6_lookup(hi, lo),
    };
    if allowed {
        Reason::PassedAllowlisted
    } else if blocked {
        Reason::DroppedBlocklist
    } else {
        Reason::Passed
    }
}

#[inline(always)]
fn count(ctx: &XdpContext, reason: Reason) {
    let ifindex = ctx.ingress_ifindex() as u32;
    let slot = match IFACE_SLOTS.get(ifindex) {
        Some(&s) if s < MAX_INTERFACES => s,
        _ => 0,
    };
    if let Some(c) = COUNTERS.get_ptr_mut(slot * REASON_SLOTS + reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}

#[inline(always)]
fn run(ctx: &XdpContext, variant: Variant) -> u32 {
    let reason = classify(ctx, variant);
    count(ctx, reason);
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[xdp]
pub fn floodgate(ctx: XdpContext) -> u32 {
    run(&ctx, Variant::Real)
}

#[xdp]
pub fn bench_random_source(ctx: XdpContext) -> u32 {
    run(&ctx, Variant::RandomSource)
}

#[xdp]
pub fn bench_random_lpm(ctx: XdpContext) -> u32 {
    run(&ctx, Variant::RandomSourceLpm)
}

/// Floor for the random-source rows: parse, draw the source, count, no list.
#[xdp]
pub fn bench_random_floor(ctx: XdpContext) -> u32 {
    let src = match ethernet::parse(&ctx) {
        L2::Network {
            ethertype: ETH_P_IPV4,
            off,
        } => ipv4::parse(&ctx, off),
        L2::Network {
            ethertype: ETH_P_IPV6,
            off,
        } => ipv6::parse(&ctx, off),
        _ => None,
    };
    let reason = match src.map(random_source) {
        Some(Source::V4(a)) if a == 0 => Reason::DroppedBlocklist,
        Some(_) => Reason::Passed,
        None => Reason::DroppedMalformed,
    };
    count(&ctx, reason);
    xdp_action::XDP_PASS
}

/// The floor of all per-packet numbers: drop without looking.
#[xdp]
pub fn bench_drop_all(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// What the random-source rows pay for randomness alone, subtracted from them: the same
/// number of RNG calls (1 for IPv4, 4 for IPv6), then drop.
#[xdp]
pub fn bench_rng_only(ctx: XdpContext) -> u32 {
    let v6 = matches!(
        ethernet::parse(&ctx),
        L2::Network {
            ethertype: ETH_P_IPV6,
            ..
        }
    );
    let src = if v6 { Source::V6(0, 0) } else { Source::V4(0) };
    match random_source(src) {
        // Never true; keeps the calls from being optimised away.
        Source::V4(a) if a == 1 && v6 => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// Traffic generator for the veth benchmarks: run with BPF_F_TEST_XDP_LIVE_FRAMES in the
/// sending namespace, every frame goes out of the sending veth unchanged.
#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Generator variant with a fresh random source address per frame (untagged IPv4 or IPv6).
#[xdp]
pub fn bench_tx_random_source(ctx: XdpContext) -> u32 {
    const IPV4_SRC: usize = 14 + 12;
    const IPV6_SRC: usize = 14 + 8;
    match ethernet::be16_at(&ctx, 12) {
        Some(ETH_P_IPV4) => {
            if let Some(p) = ethernet::ptr_at::<[u8; 4]>(&ctx, IPV4_SRC) {
                // SAFETY: ptr_at checked the 4 bytes are in the frame; XDP frames are writable.
                unsafe {
                    core::ptr::write_unaligned(p.cast_mut(), bpf_get_prandom_u32().to_be_bytes())
                };
            }
        }
        Some(ETH_P_IPV6) => {
            if let (Some(p), Source::V6(hi, lo)) = (
                ethernet::ptr_at::<[u8; 16]>(&ctx, IPV6_SRC),
                random_source(Source::V6(0, 0)),
            ) {
                let mut a = [0u8; 16];
                a[..8].copy_from_slice(&hi.to_be_bytes());
                a[8..].copy_from_slice(&lo.to_be_bytes());
                // SAFETY: as above.
                unsafe { core::ptr::write_unaligned(p.cast_mut(), a) };
            }
        }
        _ => {}
    }
    xdp_action::XDP_TX
}
