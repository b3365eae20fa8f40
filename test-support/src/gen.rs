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

/// The legacy MaxMind country databases of the Debian package [`GEOIP_PACKAGE`]: real
/// allocations with their real shape (IPv6: ~1.14M leaves of /18-/128 in the 2019 file).
pub const GEOIP_V4: &str = "/usr/share/GeoIP/GeoIP.dat";
pub const GEOIP_V6: &str = "/usr/share/GeoIP/GeoIPv6.dat";
/// The Debian package that installs [`GEOIP_V4`] and [`GEOIP_V6`].
pub const GEOIP_PACKAGE: &str = "geoip-database";

/// ISO codes of the legacy GeoIP country ids (libGeoIP 1.5+ order).
const COUNTRY_CODES: [&str; 255] = [
    "--", "AP", "EU", "AD", "AE", "AF", "AG", "AI", "AL", "AM", "CW", "AO", "AQ", "AR", "AS", "AT",
    "AU", "AW", "AZ", "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BM", "BN", "BO", "BR",
    "BS", "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM",
    "CN", "CO", "CR", "CU", "CV", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "SX", "GA", "GB", "GD", "GE",
    "GF", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IN", "IO", "IQ", "IR", "IS", "IT", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK",
    "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "MG", "MH", "MK", "ML", "MM", "MN", "MO",
    "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG",
    "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RU", "RW", "SA", "SB", "SC", "SD", "SE",
    "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "ST", "SV", "SY", "SZ", "TC", "TD",
    "TF", "TG", "TH", "TJ", "TK", "TM", "TN", "TO", "TL", "TR", "TT", "TV", "TW", "TZ", "UA", "UG",
    "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "RS",
    "ZA", "ZM", "ME", "ZW", "A1", "A2", "O1", "AX", "GG", "IM", "JE", "BL", "MF", "BQ", "SS",
];

/// The ISO code of a legacy GeoIP country id ("#id" for ids past the table).
pub fn country_code(id: u8) -> String {
    COUNTRY_CODES
        .get(usize::from(id))
        .map_or_else(|| format!("#{id}"), |c| c.to_string())
}

/// Leaf records start here: a record >= this is a leaf of country `record - COUNTRY_BEGIN`.
const GEOIP_COUNTRY_BEGIN: u32 = 16_776_960;
const GEOIP_COUNTRY_EDITION: u8 = 1;
const GEOIP_COUNTRY_EDITION_V6: u8 = 12;

/// Every leaf with a country (id != 0) of a legacy GeoIP country database (GeoIP.dat, type 1,
/// or GeoIPv6.dat, type 12), as (prefix, country id), in address order. A leaf at depth `d`
/// of the binary trie is a prefix of length `d`; leaves never overlap.
pub fn geoip_prefixes(path: &std::path::Path) -> anyhow::Result<Vec<(Prefix, u8)>> {
    use anyhow::{bail, Context};
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} not found: it comes with the Debian package {GEOIP_PACKAGE} (apt-get install {GEOIP_PACKAGE})",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The structure info (0xFFFFFF, then the database type) is within the last 20 bytes.
    let tail = data.len().saturating_sub(23);
    let marker = (tail..data.len().saturating_sub(3))
        .rev()
        .find(|&i| data[i..i + 3] == [0xff; 3])
        .with_context(|| format!("{}: no GeoIP structure info", path.display()))?;
    let mut kind = data.get(marker + 3).copied().unwrap_or(0);
    if kind >= 106 {
        kind -= 105;
    }
    let bits: u32 = match kind {
        GEOIP_COUNTRY_EDITION => 32,
        GEOIP_COUNTRY_EDITION_V6 => 128,
        other => bail!(
            "{}: database type {other}, expected a country edition (1 or 12)",
            path.display()
        ),
    };
    let nodes = (data.len() / 6) as u32;
    let record = |node: u32, bit: u32| -> u32 {
        let o = node as usize * 6 + bit as usize * 3;
        u32::from(data[o]) | u32::from(data[o + 1]) << 8 | u32::from(data[o + 2]) << 16
    };
    let mut out = Vec::new();
    // (node, depth of the node, address bits above it), walked depth first.
    let mut stack: Vec<(u32, u32, u128)> = vec![(0, 0, 0)];
    while let Some((node, depth, addr)) = stack.pop() {
        if node >= nodes || depth >= bits {
            bail!(
                "{}: corrupt trie (node {node} at depth {depth})",
                path.display()
            );
        }
        for bit in [0u32, 1] {
            let value = record(node, bit);
            let child = addr | u128::from(bit) << (127 - depth);
            if value >= GEOIP_COUNTRY_BEGIN {
                let country = (value - GEOIP_COUNTRY_BEGIN) as u8;
                if country != 0 {
                    let len = (depth + 1) as u8;
                    let prefix = if bits == 32 {
                        Prefix::v4((child >> 96) as u32, len)
                    } else {
                        Prefix::v6(child, len)
                    };
                    out.push((prefix, country));
                }
            } else {
                stack.push((value, depth + 1, child));
            }
        }
    }
    out.sort_unstable_by_key(|(p, _)| *p);
    Ok(out)
}

/// A "block these countries" list: whole countries, largest first, until it holds at least
/// `min_entries` prefixes. Returns the sorted prefixes and (country code, prefixes) taken.
pub fn country_blocklist(
    leaves: &[(Prefix, u8)],
    min_entries: usize,
) -> (Vec<Prefix>, Vec<(String, usize)>) {
    let mut per_country = std::collections::BTreeMap::<u8, usize>::new();
    for (_, c) in leaves {
        *per_country.entry(*c).or_default() += 1;
    }
    let mut order: Vec<(u8, usize)> = per_country.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut taken = std::collections::BTreeSet::new();
    let mut total = 0;
    let mut countries = Vec::new();
    for (c, n) in order {
        if total >= min_entries {
            break;
        }
        taken.insert(c);
        total += n;
        countries.push((country_code(c), n));
    }
    let mut prefixes: Vec<Prefix> = leaves
        .iter()
        .filter(|(_, c)| taken.contains(c))
        .map(|(p, _)| *p)
        .collect();
    prefixes.sort_unstable();
    (prefixes, countries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The legacy databases read as a trie of disjoint prefixes (skipped without the package).
    #[test]
    fn geoip_databases_read_as_disjoint_prefixes() {
        for (path, max_len) in [(GEOIP_V4, 32u8), (GEOIP_V6, 128)] {
            let path = std::path::Path::new(path);
            if !path.exists() {
                eprintln!("{} missing ({GEOIP_PACKAGE}): skipped", path.display());
                continue;
            }
            let leaves = geoip_prefixes(path).unwrap();
            assert!(
                leaves.len() > 100_000,
                "{}: {}",
                path.display(),
                leaves.len()
            );
            let mut end = 0u128;
            for (p, c) in &leaves {
                let (addr, len, bits) = match *p {
                    Prefix::V4 { addr, len } => (u128::from(addr), len, 32),
                    Prefix::V6 { addr, len } => (addr, len, 128),
                };
                assert!(*c != 0 && len >= 1 && len <= max_len);
                assert!(addr >= end, "{p} overlaps the leaf before it");
                end = addr + (1u128 << (bits - u32::from(len)));
            }
            let (list, countries) = country_blocklist(&leaves, leaves.len() / 2);
            assert!(list.len() >= leaves.len() / 2);
            assert_eq!(countries.iter().map(|c| c.1).sum::<usize>(), list.len());
        }
        let missing = geoip_prefixes(std::path::Path::new("/nonexistent/GeoIPv6.dat")).unwrap_err();
        assert!(
            format!("{missing:#}").contains(GEOIP_PACKAGE),
            "{missing:#}"
        );
        assert_eq!(country_code(225), "US");
        assert_eq!(country_code(48), "CN");
    }
}
