//! The bench object: variants of the product program for `cargo xtask bench`, and the kernel
//! LPM tries they are compared with. Loaded next to the product, sharing its pinned maps; never
//! part of the product object.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::bindings::xdp_action;
    use aya_ebpf::helpers::bpf_get_prandom_u32;
    use aya_ebpf::macros::{map, xdp};
    use aya_ebpf::maps::lpm_trie::{Key, LpmTrie};
    use aya_ebpf::programs::XdpContext;
    use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6};
    use filter_common::trie::Family;
    use filter_common::Reason;
    use filter_ebpf::parse::{self, Packet, Parsed};
    use filter_ebpf::{decide, observe};

    const BPF_F_NO_PREALLOC: u32 = 1;

    /// The same blocklist in kernel LPM tries, to compare against (never pinned).
    #[map]
    static BENCH_LPM_V4: LpmTrie<[u8; 4], u8> =
        LpmTrie::with_max_entries(1 << 21, BPF_F_NO_PREALLOC);

    #[map]
    static BENCH_LPM_V6: LpmTrie<[u8; 16], u8> =
        LpmTrie::with_max_entries(1 << 21, BPF_F_NO_PREALLOC);

    /// The packet with a fresh random source (IPv6 inside 2000::/3, where real lists and
    /// real attackers live).
    #[inline(always)]
    fn random_source(mut p: Packet) -> Packet {
        // SAFETY: helper without preconditions.
        let r = || unsafe { bpf_get_prandom_u32() };
        match p.family {
            Family::V4 => p.src_hi = u64::from(r()) << 32,
            Family::V6 => {
                p.src_hi = (0x2000_0000_0000_0000 | (u64::from(r()) << 32 | u64::from(r())) >> 3)
                    & 0x3fff_ffff_ffff_ffff;
                p.src_lo = u64::from(r()) << 32 | u64::from(r());
            }
        }
        p
    }

    #[inline(always)]
    fn lpm_blocked(p: &Packet) -> bool {
        match p.family {
            Family::V4 => BENCH_LPM_V4
                .get(&Key::new(32, ((p.src_hi >> 32) as u32).to_be_bytes()))
                .is_some(),
            Family::V6 => {
                let mut data = [0u8; 16];
                data[..8].copy_from_slice(&p.src_hi.to_be_bytes());
                data[8..].copy_from_slice(&p.src_lo.to_be_bytes());
                BENCH_LPM_V6.get(&Key::new(128, data)).is_some()
            }
        }
    }

    #[inline(always)]
    fn finish(ctx: &XdpContext, reason: Reason) -> u32 {
        observe::count(ctx, observe::slot(ctx), reason);
        if reason.is_drop() {
            xdp_action::XDP_DROP
        } else {
            xdp_action::XDP_PASS
        }
    }

    /// The product's decision for a fresh random source per packet: defeats the cache warmth
    /// of replaying one frame through BPF_PROG_TEST_RUN.
    #[xdp]
    pub fn bench_random_source(ctx: XdpContext) -> u32 {
        let slot = observe::slot(&ctx);
        let reason = match parse::packet(&ctx) {
            Parsed::Ip(p) => decide::judge(decide::active_set(), &random_source(p), slot),
            other => decide::verdict(other, slot),
        };
        finish(&ctx, reason)
    }

    /// Random source, blocklist looked up in the kernel LPM trie instead (comparison).
    #[xdp]
    pub fn bench_random_lpm(ctx: XdpContext) -> u32 {
        let reason = match parse::packet(&ctx) {
            Parsed::Ip(p) => {
                if lpm_blocked(&random_source(p)) {
                    Reason::DroppedBlocklist
                } else {
                    Reason::Passed
                }
            }
            other => decide::verdict(other, observe::slot(&ctx)),
        };
        finish(&ctx, reason)
    }

    /// Floor for the random-source rows: parse, draw the source, count, no list.
    #[xdp]
    pub fn bench_random_floor(ctx: XdpContext) -> u32 {
        let reason = match parse::packet(&ctx) {
            Parsed::Ip(p) => {
                if random_source(p).src_hi == 0 {
                    Reason::DroppedBlocklist
                } else {
                    Reason::Passed
                }
            }
            _ => Reason::DroppedMalformed,
        };
        observe::count(&ctx, observe::slot(&ctx), reason);
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
        let v6 = parse::be16_at(&ctx, 12) == Some(ETH_P_IPV6);
        let p = if v6 { Packet::v6(0, 0) } else { Packet::v4(0) };
        // Never true; keeps the calls from being optimised away.
        if random_source(p).src_lo == 1 && !v6 {
            xdp_action::XDP_PASS
        } else {
            xdp_action::XDP_DROP
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
        match parse::be16_at(&ctx, 12) {
            Some(ETH_P_IPV4) => {
                if let Some(p) = parse::ptr_at::<[u8; 4]>(&ctx, IPV4_SRC) {
                    // SAFETY: ptr_at checked the 4 bytes are in the frame; XDP frames are
                    // writable.
                    unsafe {
                        core::ptr::write_unaligned(
                            p.cast_mut(),
                            bpf_get_prandom_u32().to_be_bytes(),
                        )
                    };
                }
            }
            Some(ETH_P_IPV6) => {
                if let Some(p) = parse::ptr_at::<[u8; 16]>(&ctx, IPV6_SRC) {
                    let r = random_source(Packet::v6(0, 0));
                    let mut a = [0u8; 16];
                    a[..8].copy_from_slice(&r.src_hi.to_be_bytes());
                    a[8..].copy_from_slice(&r.src_lo.to_be_bytes());
                    // SAFETY: as above.
                    unsafe { core::ptr::write_unaligned(p.cast_mut(), a) };
                }
            }
            _ => {}
        }
        xdp_action::XDP_TX
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: the verifier rejects any program that could reach this.
        unsafe { core::hint::unreachable_unchecked() }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
