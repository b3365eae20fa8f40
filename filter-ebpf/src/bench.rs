//! The bench object: variants of the product program for `cargo xtask bench`, and the kernel
//! LPM tries they are compared with. Loaded next to the product, sharing its pinned maps; never
//! part of the product object.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "compare-and-swap on map values: the bpf target offers no atomic types"
    )
)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::bindings::xdp_action;
    use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns};
    use aya_ebpf::macros::{map, xdp};
    use aya_ebpf::maps::lpm_trie::{Key, LpmTrie};
    use aya_ebpf::maps::{Array, LruHashMap, LruPerCpuHashMap};
    use aya_ebpf::programs::XdpContext;
    use filter_common::limits::{gcra, masked, prefix_for, Bucket, LimitConf, SourceKey};
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

    /// The per-source limit of the limiter variants below, written by the bench: [0] as
    /// configured (one bucket shared by all CPUs), [1] with each CPU's share of the rate and
    /// of the burst (one bucket per CPU), as the product's global limits hold it.
    #[map]
    static BENCH_LIMIT: Array<LimitConf> = Array::with_max_entries(2, 0);

    /// Per-source buckets shared by all CPUs (the product's choice, as `SOURCE_BUCKETS`).
    #[map]
    static BENCH_SHARED_BUCKETS: LruHashMap<SourceKey, Bucket> =
        LruHashMap::with_max_entries(4096, 0);

    /// The alternative measured against it: per-source buckets with one value per CPU.
    #[map]
    static BENCH_PERCPU_BUCKETS: LruPerCpuHashMap<SourceKey, Bucket> =
        LruPerCpuHashMap::with_max_entries(4096, 0);

    const BPF_NOEXIST: u64 = 1;

    #[inline(always)]
    fn source_key(conf: &LimitConf, p: &Packet) -> SourceKey {
        let (hi, lo) = masked(p.src_hi, p.src_lo, prefix_for(conf, p.family));
        SourceKey {
            id: conf.id,
            family: p.family as u32,
            hi,
            lo,
        }
    }

    /// Shared-state per-source limit: the source's bucket in a hash shared by all CPUs,
    /// charged with compare-and-swap (as the product; without its sketch, lists and rules).
    #[xdp]
    pub fn bench_limit_shared(ctx: XdpContext) -> u32 {
        let reason = match parse::packet(&ctx) {
            Parsed::Ip(p) => match BENCH_LIMIT.get(0) {
                Some(conf) => {
                    let key = source_key(conf, &p);
                    let bucket = match BENCH_SHARED_BUCKETS.get_ptr_mut(&key) {
                        Some(b) => Some(b),
                        None => {
                            let _ =
                                BENCH_SHARED_BUCKETS.insert(&key, &Bucket::default(), BPF_NOEXIST);
                            BENCH_SHARED_BUCKETS.get_ptr_mut(&key)
                        }
                    };
                    match bucket {
                        // SAFETY: a field pointer into the map value the lookup returned;
                        // helper without preconditions.
                        Some(b) => unsafe {
                            if decide::limits::charge_shared(
                                &raw mut (*b).pkt_tat,
                                bpf_ktime_get_coarse_ns(),
                                conf.pkt_cost,
                                conf.pkt_tolerance,
                            ) {
                                Reason::Passed
                            } else {
                                Reason::DroppedRateLimit
                            }
                        },
                        None => Reason::Passed,
                    }
                }
                None => Reason::Passed,
            },
            other => decide::verdict(other, observe::slot(&ctx)),
        };
        finish(&ctx, reason)
    }

    /// Per-CPU per-source limit: each CPU holds its own bucket for the source with 1/ncpu of
    /// the rate and burst (`BENCH_LIMIT[1]`), plain reads and writes, no shared cache line.
    #[xdp]
    pub fn bench_limit_percpu(ctx: XdpContext) -> u32 {
        let reason = match parse::packet(&ctx) {
            Parsed::Ip(p) => match BENCH_LIMIT.get(1) {
                Some(conf) => {
                    let key = source_key(conf, &p);
                    let bucket = match BENCH_PERCPU_BUCKETS.get_ptr_mut(&key) {
                        Some(b) => Some(b),
                        None => {
                            let _ =
                                BENCH_PERCPU_BUCKETS.insert(&key, &Bucket::default(), BPF_NOEXIST);
                            BENCH_PERCPU_BUCKETS.get_ptr_mut(&key)
                        }
                    };
                    match bucket {
                        Some(b) => {
                            // SAFETY: this CPU's value: only this CPU touches it while this
                            // program runs.
                            let b = unsafe { &mut *b };
                            // SAFETY: helper without preconditions.
                            let now = unsafe { bpf_ktime_get_coarse_ns() };
                            match gcra(b.pkt_tat, now, conf.pkt_cost, conf.pkt_tolerance) {
                                Some(t) => {
                                    b.pkt_tat = t;
                                    Reason::Passed
                                }
                                None => Reason::DroppedRateLimit,
                            }
                        }
                        None => Reason::Passed,
                    }
                }
                None => Reason::Passed,
            },
            other => decide::verdict(other, observe::slot(&ctx)),
        };
        finish(&ctx, reason)
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
