//! The real-world lists: "block these countries" lists built from the legacy MaxMind country
//! databases of Debian's geoip-database package (test_support::gen::geoip_prefixes), and the
//! P1 probe sources picked from them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::path::Path;

use anyhow::Result;
use floodgate::lists::entries::Prefix;
use serde_json::{json, Value};
use test_support::gen;

/// A country list and what it is made of.
pub struct RealList {
    pub name: &'static str,
    pub prefixes: Vec<Prefix>,
    /// (country code, prefixes), largest first.
    pub countries: Vec<(String, usize)>,
    /// Leaves with a country in the whole database.
    pub leaves: usize,
    /// Leaves left out because floodgate refuses them: IPv4-mapped IPv6 (::ffff:0:0/96) never
    /// appears as a source on the wire, and `block load` says to write the IPv4 form.
    pub mapped_left_out: usize,
}

/// Where an IPv6 prefix lives: the database embeds the IPv4 table three times.
pub fn region(p: &Prefix) -> &'static str {
    match *p {
        Prefix::V4 { .. } => "IPv4",
        Prefix::V6 { addr, .. } => {
            if addr >> 32 == 0 {
                "::/96 (IPv4-compatible)"
            } else if addr >> 32 == 0xffff {
                "::ffff:0:0/96 (IPv4-mapped)"
            } else if addr >> 112 == 0x2002 {
                "2002::/16 (6to4)"
            } else {
                "native IPv6"
            }
        }
    }
}

/// Inside ::ffff:0:0/96, which floodgate refuses (the IPv4 form is what matches).
pub fn is_mapped(p: &Prefix) -> bool {
    matches!(*p, Prefix::V6 { addr, len } if len >= 96 && addr >> 32 == 0xffff)
}

pub fn is_native_v6(p: &Prefix) -> bool {
    region(p) == "native IPv6"
}

impl RealList {
    /// Whole countries of `db`, largest first, until at least `min_entries` prefixes (of
    /// those a list file may hold: not IPv4-mapped).
    pub fn load(name: &'static str, db: &str, min_entries: usize) -> Result<RealList> {
        let all = gen::geoip_prefixes(Path::new(db))?;
        let leaves = all.len();
        let usable: Vec<(Prefix, u8)> = all.into_iter().filter(|(p, _)| !is_mapped(p)).collect();
        let mapped_left_out = leaves - usable.len();
        let (prefixes, countries) = gen::country_blocklist(&usable, min_entries);
        Ok(RealList {
            name,
            prefixes,
            countries,
            leaves,
            mapped_left_out,
        })
    }

    pub fn describe(&self) -> Value {
        let mut lengths = BTreeMap::<u8, usize>::new();
        let mut regions = BTreeMap::<&str, usize>::new();
        for p in &self.prefixes {
            let len = match *p {
                Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
            };
            *lengths.entry(len).or_default() += 1;
            *regions.entry(region(p)).or_default() += 1;
        }
        json!({
            "entries": self.prefixes.len(),
            "database_leaves": self.leaves,
            "database_leaves_ipv4_mapped_left_out": self.mapped_left_out,
            "countries": self.countries.iter().map(|(c, n)| json!([c, n])).collect::<Vec<_>>(),
            "regions": regions,
            "prefix_lengths": lengths,
        })
    }

    pub fn summary(&self) -> String {
        let mut regions = BTreeMap::<&str, usize>::new();
        for p in &self.prefixes {
            *regions.entry(region(p)).or_default() += 1;
        }
        format!(
            "{}: {} entries ({} countries of the database's {} leaves, less {} IPv4-mapped): countries {}; {}",
            self.name,
            self.prefixes.len(),
            self.countries.len(),
            self.leaves,
            self.mapped_left_out,
            self.countries
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            regions
                .iter()
                .map(|(r, n)| format!("{n} in {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A P1 source picked from a real list.
pub struct Probe {
    /// Stable row label (JSON key).
    pub label: &'static str,
    pub src: Ipv6Addr,
    /// What the list says about `src`.
    pub blocked: bool,
    /// How it was picked (the /32, the prefix, counts).
    pub detail: Value,
}

fn v6(p: &Prefix) -> (u128, u8) {
    match *p {
        Prefix::V6 { addr, len } => (addr, len),
        Prefix::V4 { .. } => unreachable!("IPv6 lists only"),
    }
}

fn prefix_len(p: &Prefix) -> u8 {
    v6(p).1
}

/// A host inside `p`: its address with the lowest bit set (the address itself for a /128).
fn host_in(p: &Prefix) -> u128 {
    let (addr, len) = v6(p);
    if len < 128 {
        addr | 1
    } else {
        addr
    }
}

fn show32(k: u32) -> String {
    format!("{}/32", Ipv6Addr::from(u128::from(k) << 96))
}

/// The P1 sources of an IPv6 real list: (a) listed, in the /32 holding the most prefixes of
/// distinct lengths (its longest prefix: the deepest walk); (b) a near miss in that /32 (the
/// sibling of its longest prefix that no entry covers); (c) listed, in the /32 with the most
/// prefixes (a prefix of its most common length); (d) unlisted, in a /16 without entries; (e)
/// as (c) among native IPv6 /32s (outside the IPv4 copies at ::/96, ::ffff:0:0/96, 2002::/16).
pub fn probes(list: &[Prefix]) -> Vec<Probe> {
    let set: HashSet<Prefix> = list.iter().copied().collect();
    let covered = |a: u128| test_support::covered(&set, Ipv6Addr::from(a).into());
    let mut by32: HashMap<u32, Vec<Prefix>> = HashMap::new();
    for p in list {
        by32.entry((v6(p).0 >> 96) as u32).or_default().push(*p);
    }
    let distinct = |ps: &[Prefix]| ps.iter().map(prefix_len).collect::<HashSet<_>>().len();
    let mut out = Vec::new();
    // (a) and (b): among the /32s with most distinct lengths, the first one a near miss exists
    // in (some are covered whole: every sibling of every prefix is listed too).
    let mut ranked: Vec<(&u32, &Vec<Prefix>)> = by32.iter().collect();
    ranked.sort_by(|a, b| {
        distinct(b.1)
            .cmp(&distinct(a.1))
            .then(b.1.len().cmp(&a.1.len()))
            .then(a.0.cmp(b.0))
    });
    let near_miss = |ps: &[Prefix]| -> Option<(u128, Prefix)> {
        let mut by_len = ps.to_vec();
        by_len.sort_by(|a, b| prefix_len(b).cmp(&prefix_len(a)).then(a.cmp(b)));
        by_len.iter().find_map(|p| {
            let (addr, len) = v6(p);
            let sibling = addr ^ (1u128 << (128 - u32::from(len)));
            let host = if len < 128 { sibling | 1 } else { sibling };
            (!covered(host)).then_some((host, *p))
        })
    };
    let Some(&(_, top)) = ranked.first() else {
        return out;
    };
    let most = distinct(top);
    let pick = ranked
        .iter()
        .enumerate()
        .take(1000)
        .find_map(|(i, (k, ps))| near_miss(ps).map(|n| (i, **k, *ps, Some(n))))
        .unwrap_or((0, *ranked[0].0, ranked[0].1, None));
    let (skipped, k32, ps, near) = pick;
    let deepest = *ps
        .iter()
        .max_by(|a, b| prefix_len(a).cmp(&prefix_len(b)).then(b.cmp(a)))
        .expect("a /32 with prefixes");
    let base = json!({"slash32": show32(k32), "prefixes_in_slash32": ps.len(),
                      "distinct_lengths_in_slash32": distinct(ps),
                      "most_distinct_lengths_of_any_slash32": most,
                      "slash32s_ranked_higher_but_covered_whole": skipped});
    let mut a = base.clone();
    a["prefix"] = json!(deepest.to_string());
    a["why"] = json!("its longest prefix: the deepest walk");
    out.push(Probe {
        label: "IPv6 real list: listed, /32 with most prefix lengths",
        src: Ipv6Addr::from(host_in(&deepest)),
        blocked: true,
        detail: a,
    });
    if let Some((host, p)) = near {
        let mut b = base.clone();
        b["sibling_of"] = json!(p.to_string());
        b["bits_shared_with_that_prefix"] = json!(prefix_len(&p) - 1);
        b["why"] = json!("the sibling of the longest prefix of the /32 that no entry covers");
        out.push(Probe {
            label: "IPv6 real list: near miss in that /32",
            src: Ipv6Addr::from(host),
            blocked: false,
            detail: b,
        });
    }
    // (c) and (e)
    let modal = |ps: &[Prefix]| -> Prefix {
        let mut count = BTreeMap::<u8, usize>::new();
        for p in ps {
            *count.entry(prefix_len(p)).or_default() += 1;
        }
        let len = count
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(l, _)| *l)
            .unwrap_or(128);
        *ps.iter()
            .filter(|p| prefix_len(p) == len)
            .min()
            .expect("a prefix of that length")
    };
    let densest = |native: bool| {
        by32.iter()
            .filter(|(_, ps)| !native || ps.iter().all(is_native_v6))
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
    };
    for (native, label) in [
        (false, "IPv6 real list: listed, densest /32"),
        (true, "IPv6 real list: listed, densest native /32"),
    ] {
        if let Some((&k, ps)) = densest(native) {
            let p = modal(ps);
            out.push(Probe {
                label,
                src: Ipv6Addr::from(host_in(&p)),
                blocked: true,
                detail: json!({"slash32": show32(k), "prefixes_in_slash32": ps.len(),
                               "distinct_lengths_in_slash32": distinct(ps),
                               "prefix": p.to_string(), "why": "first prefix of the /32's most common length"}),
            });
        }
    }
    // (d)
    let used16: HashSet<u16> = list.iter().map(|p| (v6(p).0 >> 112) as u16).collect();
    if let Some(p16) = (0x2000u16..=0x3fff)
        .rev()
        .find(|p| !used16.contains(p) && !covered(u128::from(*p) << 112 | 1))
    {
        out.push(Probe {
            label: "IPv6 real list: unlisted, far away",
            src: Ipv6Addr::from(u128::from(p16) << 112 | 1),
            blocked: false,
            detail: json!({"slash16": format!("{}/16", Ipv6Addr::from(u128::from(p16) << 112)),
                           "why": "a /16 without entries"}),
        });
    }
    for p in &mut out {
        p.detail["source"] = json!(p.src.to_string());
        p.detail["listed"] = json!(p.blocked);
        debug_assert_eq!(covered(u128::from(p.src)), p.blocked);
    }
    out
}
