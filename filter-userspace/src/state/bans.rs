//! The ban table the program honours by itself: reading it, placing and lifting bans.

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use filter_common::limits::{masked, Ban, BanKey};
use filter_common::maps as names;
use filter_common::trie::Family;

use super::pins::PinDir;
use crate::lists::entries::Prefix;

/// The program's clock (`bpf_ktime_get_coarse_ns` is CLOCK_MONOTONIC_COARSE).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A live ban.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveBan {
    pub source: String,
    pub seconds_left: u64,
    /// The limit that placed it, if it still exists; `None` when placed by hand.
    pub limit: Option<String>,
    #[serde(skip)]
    pub limit_id: u32,
}

fn table(pins: &PinDir) -> Result<HashMap<MapData, BanKey, Ban>> {
    Ok(HashMap::try_from(aya::maps::Map::LruHashMap(
        pins.open_map(names::BANS)?,
    ))?)
}

pub fn key_of(p: Prefix) -> BanKey {
    let (family, addr, len) = (p.family(), p.top_aligned(), u32::from(p.prefix_len()));
    let (hi, lo) = masked((addr >> 64) as u64, addr as u64, len);
    BanKey {
        family: family as u32,
        prefix: len,
        hi,
        lo,
    }
}

fn prefix_of(k: &BanKey) -> Prefix {
    let family = if k.family == Family::V6 as u32 {
        Family::V6
    } else {
        Family::V4
    };
    Prefix::from_top_aligned(
        family,
        (u128::from(k.hi) << 64) | u128::from(k.lo),
        k.prefix as u8,
    )
}

/// Every ban that has not lapsed, soonest to lapse first; `name` names limits by id.
pub fn list(pins: &PinDir, name: impl Fn(u32) -> Option<String>) -> Result<Vec<LiveBan>> {
    let t = now_ns();
    let mut out = Vec::new();
    for entry in table(pins)?.iter() {
        let (k, ban) = entry.context("reading the ban table")?;
        if ban.expires <= t {
            continue;
        }
        out.push(LiveBan {
            source: prefix_of(&k).to_string(),
            seconds_left: (ban.expires - t).div_ceil(1_000_000_000),
            limit: (ban.limit_id != 0).then(|| name(ban.limit_id)).flatten(),
            limit_id: ban.limit_id,
        });
    }
    out.sort_by_key(|b| b.seconds_left);
    Ok(out)
}

pub fn add(pins: &PinDir, sources: &[Prefix], seconds: u32) -> Result<()> {
    let mut t = table(pins)?;
    let expires = now_ns() + u64::from(seconds) * 1_000_000_000;
    for &p in sources {
        t.insert(
            key_of(p),
            Ban {
                expires,
                limit_id: 0,
                reserved: 0,
            },
            0,
        )?;
    }
    Ok(())
}

/// Lift bans, all or none: returns the sources that were not banned (and lifts nothing
/// then).
pub fn remove(pins: &PinDir, sources: &[Prefix]) -> Result<Vec<Prefix>> {
    let mut t = table(pins)?;
    let missing: Vec<Prefix> = sources
        .iter()
        .copied()
        .filter(|&p| t.get(&key_of(p), 0).is_err())
        .collect();
    if missing.is_empty() {
        for &p in sources {
            let _ = t.remove(&key_of(p));
        }
    }
    Ok(missing)
}

pub fn flush(pins: &PinDir) -> Result<usize> {
    let mut t = table(pins)?;
    let keys: Vec<BanKey> = t.keys().collect::<Result<_, _>>()?;
    for k in &keys {
        let _ = t.remove(k);
    }
    Ok(keys.len())
}

/// Lift the bans that lie wholly inside one of `protected` (the program ignores them);
/// returns how many.
pub fn lift_covered(pins: &PinDir, protected: &[Prefix]) -> Result<usize> {
    if protected.is_empty() {
        return Ok(0);
    }
    let nets: Vec<_> = protected.iter().map(|p| p.to_ipnet()).collect();
    let mut t = table(pins)?;
    let keys: Vec<BanKey> = t.keys().collect::<Result<_, _>>()?;
    let mut lifted = 0;
    for k in &keys {
        let ban = prefix_of(k).to_ipnet();
        if nets.iter().any(|n| n.contains(&ban)) && t.remove(k).is_ok() {
            lifted += 1;
        }
    }
    Ok(lifted)
}

/// The prefix lengths of the live bans, per family (sorted, without duplicates); lapsed bans
/// are lifted on the way.
pub fn live_prefix_lengths(pins: &PinDir) -> Result<[Vec<u8>; 2]> {
    let t_now = now_ns();
    let mut t = table(pins)?;
    let entries: Vec<(BanKey, Ban)> = t
        .iter()
        .collect::<Result<_, _>>()
        .context("reading the ban table")?;
    let mut out: [Vec<u8>; 2] = Default::default();
    for (k, ban) in entries {
        if ban.expires <= t_now {
            let _ = t.remove(&k);
            continue;
        }
        let family = if k.family == Family::V6 as u32 {
            Family::V6
        } else {
            Family::V4
        };
        out[family as usize].push(k.prefix as u8);
    }
    for lens in &mut out {
        lens.sort_unstable();
        lens.dedup();
    }
    Ok(out)
}
