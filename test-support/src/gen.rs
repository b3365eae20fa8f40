//! Generators of real-world-shaped lists, shared by tests and benches.
//!
//! IPv4: published blocklists are mostly /24s and /32s with some /16-/23 aggregates; prefixes
//! longer than /24 cluster in a small fraction of /24 blocks (in a real 562k list, 45% of
//! prefixes are longer than /24 yet fall in 0.13% of blocks). IPv6: /29 to /64, inside a
//! limited set of allocations (/32s) in 2000::/3.

use floodgate::lists::entries::Prefix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

fn unicast_v4(rng: &mut StdRng) -> u32 {
    // 1.0.0.0 - 223.255.255.255
    rng.random_range(0x0100_0000..0xe000_0000)
}

/// `n` distinct IPv4 prefixes with a realistic length mix.
pub fn realistic_v4(n: usize, seed: u64) -> Vec<Prefix> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Long prefixes live in a few hot /24 blocks: about 20 per block.
    let hot: Vec<u32> = (0..(n / 20).max(1))
        .map(|_| unicast_v4(&mut rng) >> 8)
        .collect();
    let mut out = BTreeSet::new();
    while out.len() < n {
        let roll = rng.random_range(0..100);
        let (addr, len) = match roll {
            0..25 => (
                (hot[rng.random_range(0..hot.len())] << 8) | rng.random_range(0..256),
                32,
            ),
            25..45 => {
                let len = rng.random_range(25..=31u8);
                (
                    (hot[rng.random_range(0..hot.len())] << 8) | rng.random_range(0..256),
                    len,
                )
            }
            45..80 => (unicast_v4(&mut rng), 24),
            80..92 => (unicast_v4(&mut rng), rng.random_range(22..=23u8)),
            _ => (unicast_v4(&mut rng), rng.random_range(16..=21u8)),
        };
        out.insert(Prefix::v4(addr, len));
    }
    out.into_iter().collect()
}

/// `n` distinct IPv6 prefixes, /29 to /64 (and a few /128s), in 2000::/3.
pub fn realistic_v6(n: usize, seed: u64) -> Vec<Prefix> {
    let mut rng = StdRng::seed_from_u64(seed);
    let allocations: Vec<u128> = (0..(n / 50).max(1))
        .map(|_| u128::from(rng.random_range(0x2000_0000u32..0x4000_0000)) << 96)
        .collect();
    let mut out = BTreeSet::new();
    while out.len() < n {
        let len = match rng.random_range(0..100) {
            0..2 => 29,
            2..10 => 32,
            10..28 => rng.random_range(33..=44u8),
            28..68 => 48,
            68..83 => 56,
            83..98 => 64,
            _ => 128,
        };
        // Short prefixes are allocations of their own; longer ones sit inside allocations.
        let base = if len <= 32 {
            u128::from(rng.random_range(0x2000_0000u32..0x4000_0000)) << 96
        } else {
            allocations[rng.random_range(0..allocations.len())]
        };
        let addr = base | (u128::from(rng.random::<u64>()) << 32) | u128::from(rng.random::<u32>());
        out.insert(Prefix::v6(addr, len));
    }
    out.into_iter().collect()
}

/// Random prefixes of every length, clustered so they overlap (differential tests).
pub fn overlapping(n: usize, rng: &mut StdRng) -> Vec<Prefix> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.5) {
                let len = rng.random_range(0..=32u8);
                let addr = 0xc633_0000 ^ (rng.random::<u32>() >> rng.random_range(8..32));
                Prefix::v4(addr, len)
            } else {
                let len = rng.random_range(0..=128u8);
                let addr =
                    (0x2001_0db8u128 << 96) ^ (rng.random::<u128>() >> rng.random_range(16..128));
                Prefix::v6(addr, len)
            }
        })
        .collect()
}

/// `n` distinct IPv4 entries as in the field report of a careful new user: 70% single
/// addresses and 30% /24s, all over the unicast space (every /32 in its own /24).
pub fn scattered_v4(n: usize, seed: u64) -> Vec<Prefix> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = BTreeSet::new();
    while out.len() < n {
        let addr = unicast_v4(&mut rng);
        out.insert(if rng.random_bool(0.7) {
            Prefix::v4(addr, 32)
        } else {
            Prefix::v4(addr, 24)
        });
    }
    out.into_iter().collect()
}

/// An address inside `p`, chosen at random.
pub fn inside(p: Prefix, rng: &mut StdRng) -> std::net::IpAddr {
    match p {
        Prefix::V4 { addr, len } => {
            let host = rng.random::<u32>().checked_shr(u32::from(len)).unwrap_or(0);
            std::net::IpAddr::V4((addr | host).into())
        }
        Prefix::V6 { addr, len } => {
            let host = rng
                .random::<u128>()
                .checked_shr(u32::from(len))
                .unwrap_or(0);
            std::net::IpAddr::V6((addr | host).into())
        }
    }
}
