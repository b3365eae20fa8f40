//! Limits as the program reads them: GCRA costs and tolerances from pps, bps and burst.

use filter_common::limits::{
    LimitConf, BYTE_TICKS_PER_NS, LIMIT_KNOWN_FIRST, PER_GLOBAL, SKETCH_EPOCH_SHIFT,
};
use filter_common::model::LimitSpec;

use super::Limit;

/// A stable identity for a limit's per-source state: FNV-1a of its name (never 0).
pub fn limit_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// The program's clock (`bpf_ktime_get_coarse_ns`) moves in ticks of up to 10 ms (HZ=100).
/// Every bucket holds at least one tick of its rate: packets in the same tick all see the
/// same time, and a bucket shallower than a tick would lose the rest of every tick.
pub const COARSE_TICK_NS: u64 = 10_000_000;

/// Packets per second `l` lets through: its packet rate, or its byte rate in full-size
/// (1500-byte) packets, whichever is fewer.
fn allowed_pps(l: &Limit) -> u64 {
    let by_bytes = l.bps.map(|b| b / (1500 * 8));
    match (l.pps, by_bytes) {
        (Some(p), Some(b)) => p.min(b),
        (Some(p), None) => p,
        (None, Some(b)) => b,
        (None, None) => 1,
    }
}

/// Refuse limits that ban with a prefix length of 0: one such ban would cover every source
/// of the family, and the program cannot look a /0 ban up (a usage error, exit 2).
pub fn check_bans(limits: &[Limit]) -> anyhow::Result<()> {
    for l in limits.iter().filter(|l| l.ban_seconds.is_some()) {
        for (key, len) in [("prefix_v4", l.prefix_v4), ("prefix_v6", l.prefix_v6)] {
            if len == 0 {
                return Err(crate::error::usage(format!(
                    "limit '{}' bans with {key} = 0: one ban would cover every source; a limit with ban_seconds needs a {key} of at least 1",
                    l.name
                )));
            }
        }
    }
    Ok(())
}

/// The program's view of `l`. Global limits run one bucket per CPU, each with `1/cpus` of the
/// rate and of the burst.
pub fn conf(l: &Limit, counter: u32, cpus: u32) -> LimitConf {
    let share = if l.per == PER_GLOBAL {
        u64::from(cpus.max(1))
    } else {
        1
    };
    let burst = (l.burst / share).max(1);
    let (pkt_cost, pkt_tolerance) = match l.pps {
        Some(pps) => {
            let cost = (1_000_000_000 * share).div_ceil(pps);
            (cost, (burst - 1).saturating_mul(cost).max(COARSE_TICK_NS))
        }
        None => (0, 0),
    };
    // The byte bucket holds as long a burst as the packet bucket (100 ms without a pps).
    // Saturating: a burst of 10^9 at 1 pps is a window of 31 years, past what 1/64 ns ticks
    // hold; such a bucket never refuses, as its packet bucket would not either.
    let window_ns = match l.pps {
        Some(pps) => (l.burst.saturating_mul(1_000_000_000) / pps).max(COARSE_TICK_NS),
        None => 100_000_000,
    };
    let (byte_cost, byte_tolerance) = match l.bps {
        Some(bps) => {
            let cost = (8 * 1_000_000_000 * BYTE_TICKS_PER_NS * share)
                .div_ceil(bps)
                .max(1);
            (cost, window_ns.saturating_mul(BYTE_TICKS_PER_NS))
        }
        None => (0, 0),
    };
    LimitConf {
        id: limit_id(&l.name),
        counter,
        class: l.class,
        per: l.per,
        mode: l.mode.bits() as u8,
        prefix_v4: l.prefix_v4,
        prefix_v6: l.prefix_v6,
        flags: if l.per == PER_GLOBAL && l.known_sources_first {
            LIMIT_KNOWN_FIRST
        } else {
            0
        },
        reserved: [0; 2],
        pkt_cost,
        pkt_tolerance,
        byte_cost,
        byte_tolerance,
        ban_ns: l.ban_seconds.map_or(0, |s| u64::from(s) * 1_000_000_000),
        // A source gets a bucket of its own once it sent half a burst within a second on one
        // CPU: a random-source flood never gets there. At most half of what the limit lets
        // through in a second, or a source over its limit could stay under it for good.
        track_after: (burst / 2)
            .min(allowed_pps(l).saturating_mul(1 << SKETCH_EPOCH_SHIFT) / 2_000_000_000)
            .clamp(1, 1000) as u32,
        reserved2: 0,
    }
}

/// The reference model's view of the same limit.
pub fn spec(c: &LimitConf, family_v6: bool) -> LimitSpec {
    LimitSpec {
        classes: 1 << c.class,
        per_source: c.per != PER_GLOBAL,
        prefix: u32::from(if family_v6 { c.prefix_v6 } else { c.prefix_v4 }),
        pkt_cost: c.pkt_cost,
        pkt_tolerance: c.pkt_tolerance,
        byte_cost: c.byte_cost,
        byte_tolerance: c.byte_tolerance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleMode;
    use filter_common::limits::{CLASS_UDP, PER_SOURCE};
    use filter_common::model::ReferenceLimiter;
    use filter_common::packet::Packet;
    use filter_common::parse::IPPROTO_UDP;

    fn limit(pps: Option<u64>, bps: Option<u64>, burst: u64) -> Limit {
        Limit {
            name: "t".into(),
            class: CLASS_UDP,
            per: PER_SOURCE,
            pps,
            bps,
            burst,
            prefix_v4: 32,
            prefix_v6: 64,
            ban_seconds: None,
            mode: RuleMode::Enforce,
            known_sources_first: true,
        }
    }

    /// Packets a source sending `rate` pps for `secs` gets through, with the clock advancing
    /// in ticks of `tick_ns` (the kernel's coarse clock).
    fn passed(l: &Limit, rate: u64, secs: u64, tick_ns: u64, len: u32) -> u64 {
        let c = conf(l, 0, 1);
        let mut m = ReferenceLimiter::new(vec![spec(&c, false)]);
        let p = Packet {
            proto: IPPROTO_UDP,
            len,
            ..Packet::v4(0x0a00_0001)
        };
        let n = rate * secs;
        (0..n)
            .filter(|i| {
                let t = i * 1_000_000_000 / rate;
                m.admit(&p, t - t % tick_ns)
            })
            .count() as u64
    }

    #[test]
    fn packet_rate_holds_at_every_overload_with_a_coarse_clock() {
        let l = limit(Some(1000), None, 100);
        for overload in [2, 10, 100] {
            let got = passed(&l, 1000 * overload, 10, 4_000_000, 100);
            // 10 s at 1000 pps, plus the burst.
            assert!((10_000..=10_100 + 5).contains(&got), "{overload}x: {got}");
        }
    }

    #[test]
    fn a_small_burst_still_gets_its_rate_with_a_coarse_clock() {
        // The kernel's coarse clock moves in ticks of 1-10 ms (HZ 1000 to 100): a bucket that
        // holds less than a tick lost the rest of each tick (250 pps of 1000 at HZ=250).
        for tick_ms in [1, 4, 10] {
            let l = limit(Some(1000), None, 1);
            for overload in [2, 10] {
                let got = passed(&l, 1000 * overload, 10, tick_ms * 1_000_000, 100);
                assert!(
                    (9_900..=10_000 + 10 + 5).contains(&got),
                    "{tick_ms} ms tick, {overload}x: {got} of 10000"
                );
            }
            // Bytes alike: 1 Mbit/s of 1000-byte packets with a 1 ms window (pps 1000, burst 1).
            let l = limit(Some(1000), Some(1_000_000), 1);
            let got = passed(&l, 1000, 10, tick_ms * 1_000_000, 1000);
            assert!(
                (1_237..=1_250 + 13).contains(&got),
                "{tick_ms} ms tick, bytes: {got} of 1250"
            );
        }
    }

    #[test]
    fn byte_rate_holds() {
        // 1 Mbit/s with 1000-byte packets: 125 packets per second.
        let l = limit(None, Some(1_000_000), 1);
        let got = passed(&l, 1000, 10, 4_000_000, 1000);
        assert!((1250..=1250 + 13).contains(&got), "{got}");
    }

    #[test]
    fn a_source_over_its_limit_gets_a_bucket_within_a_sketch_epoch() {
        // A source gets a bucket once the sketch saw `track_after` of its packets within one
        // epoch (2^27 ns) on a CPU. One sending at its limit must get there within half an
        // epoch whatever the burst, or it never gets a bucket and passes unlimited (pps 10,
        // burst 100 tracked from 50 packets: a source at 40 pps, 4x over, never was).
        let epoch_s = (1u64 << filter_common::limits::SKETCH_EPOCH_SHIFT) as f64 / 1e9;
        for (pps, bps, burst) in [
            (Some(10), None, 100),
            (Some(100), None, 10_000),
            (Some(1000), None, 100),
            (Some(200), Some(2_000_000), 50),
            (None, Some(100_000), 100),
            (None, Some(10_000_000), 1),
            (Some(1_000_000), None, 100_000),
        ] {
            let c = conf(&limit(pps, bps, burst), 0, 1);
            // What the limit lets through per second, in full-size (1500-byte) packets for a
            // byte rate.
            let allowed = match (pps, bps) {
                (Some(p), Some(b)) => p.min(b / 12_000),
                (Some(p), None) => p,
                (None, Some(b)) => b / 12_000,
                (None, None) => unreachable!(),
            };
            let bound = ((allowed as f64 * epoch_s / 2.0) as u32).max(1);
            assert!(
                c.track_after <= bound,
                "pps {pps:?} bps {bps:?} burst {burst}: tracked from {} packets, a source at its limit sends {} in half an epoch",
                c.track_after,
                bound
            );
        }
    }

    #[test]
    fn a_byte_window_too_long_for_its_ticks_saturates_instead_of_wrapping() {
        // pps 1 with a burst of 10^9: a window of 10^18 ns, 6.4 * 10^19 byte ticks.
        let c = conf(&limit(Some(1), Some(1_000_000_000), 1_000_000_000), 0, 1);
        assert_eq!(c.byte_tolerance, u64::MAX);
        assert_eq!(c.pkt_tolerance, 999_999_999 * 1_000_000_000);
    }

    #[test]
    fn stable_ids() {
        assert_eq!(limit_id("syn-per-source"), limit_id("syn-per-source"));
        assert_ne!(limit_id("a"), limit_id("b"));
    }
}
