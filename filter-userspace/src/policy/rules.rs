//! Compiling rules into the lookup tables of `filter_common::rules` (pure): per dimension, the
//! boundaries of every rule's ranges cut the values into classes; per class, a bitmap of the
//! rules that accept it.

use anyhow::{bail, Result};
use filter_common::model::RuleSpec;
use filter_common::rules::*;

/// One set's rule tables, exactly as the program reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTables {
    /// `CLASS_SET_WORDS` words: four 16-bit classes per word, dimensions one after another.
    pub classes: Vec<u64>,
    /// `DIMS * MAX_CLASSES` bitmaps.
    pub bits: Vec<RuleBits>,
    /// `MAX_RULES` infos.
    pub info: Vec<u64>,
    pub monitor: RuleBits,
    /// Bitmap words in use and the dimensions some rule constrains.
    pub words: u32,
    pub dims: u32,
}

impl Default for RuleTables {
    fn default() -> Self {
        Self {
            classes: vec![0; CLASS_SET_WORDS as usize],
            bits: vec![RuleBits::default(); (DIMS * MAX_CLASSES) as usize],
            info: vec![0; MAX_RULES as usize],
            monitor: RuleBits::default(),
            words: 0,
            dims: 0,
        }
    }
}

fn set_bit(b: &mut RuleBits, r: usize) {
    b.words[r / 64] |= 1 << (r % 64);
}

/// The match fields as a policy names them, per dimension.
pub const DIM_NAMES: [&str; DIMS as usize] = [
    "protocol",
    "src_ports",
    "dst_ports",
    "tcp_flags",
    "icmp_type",
    "ttl",
    "length",
    "fragments",
];

/// The ranges of the rules cut one match field into more classes than the tables hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooManyRanges {
    /// The first rule (table rule index, in match order) whose ranges went past the limit.
    pub rule: usize,
    /// The dimension (`DIM_*`).
    pub dim: u32,
    /// Classes all the rules cut it into.
    pub classes: usize,
}

impl std::fmt::Display for TooManyRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the rules cut {} into {} distinct ranges; at most {MAX_CLASSES}: merge port or length ranges",
            DIM_NAMES[self.dim as usize], self.classes
        )
    }
}

/// The value boundaries `ranges` cut dimension `d` at (each range's start and end + 1).
fn bounds_of(ranges: &[(u32, u32)], n: u32) -> impl Iterator<Item = u32> + '_ {
    ranges
        .iter()
        .flat_map(move |&(a, b)| [a.min(n), (b + 1).min(n)])
}

/// The first dimension the rules cut into more than `MAX_CLASSES` classes, naming the rule
/// that went past the limit (the earliest such rule over all dimensions).
pub fn too_many_ranges<'a>(
    rules: impl Iterator<Item = &'a RuleSpec> + Clone,
) -> Option<TooManyRanges> {
    let mut worst: Option<TooManyRanges> = None;
    for d in 0..DIMS {
        let n = DIM_VALUES[d as usize];
        let mut bounds = std::collections::BTreeSet::from([0, n]);
        let mut first = None;
        for (r, s) in rules.clone().enumerate() {
            bounds.extend(bounds_of(s.ranges[d as usize].as_deref().unwrap_or(&[]), n));
            if first.is_none() && bounds.len() - 1 > MAX_CLASSES as usize {
                first = Some(r);
            }
        }
        if let Some(rule) = first {
            if worst.as_ref().is_none_or(|w| rule < w.rule) {
                worst = Some(TooManyRanges {
                    rule,
                    dim: d,
                    classes: bounds.len() - 1,
                });
            }
        }
    }
    worst
}

/// Compile `rules` (in match order, each with its counter slot).
pub fn compile(rules: &[(RuleSpec, u32)]) -> Result<RuleTables> {
    if rules.len() > MAX_RULES as usize {
        bail!("{} table rules; at most {MAX_RULES}", rules.len());
    }
    if let Some(e) = too_many_ranges(rules.iter().map(|(s, _)| s)) {
        bail!("{e}");
    }
    let mut t = RuleTables {
        words: rules.len().div_ceil(64) as u32,
        ..Default::default()
    };
    for (r, (spec, counter)) in rules.iter().enumerate() {
        let action = if spec.drop { ACTION_DROP } else { ACTION_PASS };
        let mode = if spec.monitor {
            MODE_MONITOR
        } else {
            MODE_ENFORCE
        };
        t.info[r] = rule_info(action, mode, *counter);
        if spec.monitor {
            set_bit(&mut t.monitor, r);
        }
    }
    for d in 0..DIMS {
        let n = DIM_VALUES[d as usize];
        if rules.iter().all(|(s, _)| s.ranges[d as usize].is_none()) {
            continue;
        }
        t.dims |= 1 << d;
        let mut bounds: Vec<u32> = vec![0, n];
        for (s, _) in rules {
            bounds.extend(bounds_of(s.ranges[d as usize].as_deref().unwrap_or(&[]), n));
        }
        bounds.sort_unstable();
        bounds.dedup();
        let base = CLASS_OFFSETS[d as usize] as usize;
        for (c, w) in bounds.windows(2).enumerate() {
            let (lo, hi) = (w[0], w[1]);
            for v in lo..hi {
                t.classes[base + (v / 4) as usize] |= (c as u64) << ((v % 4) * 16);
            }
            let bits = &mut t.bits[bits_index(0, d, c as u32) as usize];
            for (r, (s, _)) in rules.iter().enumerate() {
                let accepts = match &s.ranges[d as usize] {
                    None => true,
                    Some(ranges) => ranges.iter().any(|&(a, b)| a <= lo && hi - 1 <= b),
                };
                if accepts {
                    set_bit(bits, r);
                }
            }
        }
    }
    Ok(t)
}

/// The compiled tables read by the program's own matcher, for tests.
#[cfg(test)]
pub struct View<'a>(pub &'a RuleTables);

#[cfg(test)]
impl RuleMemory for View<'_> {
    fn class_word(&self, index: u32) -> u64 {
        self.0.classes[index as usize]
    }

    fn bits(&self, index: u32) -> Option<&RuleBits> {
        self.0.bits.get(index as usize)
    }

    fn monitor(&self, _set: u32) -> Option<&RuleBits> {
        Some(&self.0.monitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::packet::*;
    use filter_common::parse::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
    use rand::{Rng, SeedableRng};

    fn random_spec(rng: &mut rand::rngs::StdRng) -> RuleSpec {
        let mut s = RuleSpec {
            drop: rng.random_bool(0.7),
            monitor: rng.random_bool(0.2),
            ..Default::default()
        };
        for (range, &n) in s.ranges.iter_mut().zip(&DIM_VALUES[..DIMS as usize]) {
            if rng.random_bool(0.35) {
                let k = rng.random_range(1..4);
                *range = Some(
                    (0..k)
                        .map(|_| {
                            // Small values are where packets live: keep ranges near them.
                            let a = rng.random_range(0..n.min(300));
                            (a, (a + rng.random_range(0..40)).min(n - 1))
                        })
                        .collect(),
                );
            }
        }
        s
    }

    fn random_packet(rng: &mut rand::rngs::StdRng) -> Packet {
        let proto = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47][rng.random_range(0..4)];
        let ports = proto == IPPROTO_TCP || proto == IPPROTO_UDP;
        Packet {
            proto,
            ttl: rng.random(),
            frag: rng.random_range(0..3),
            len: rng.random_range(20..400),
            sport: if ports {
                rng.random_range(0..300)
            } else {
                PORT_NONE
            },
            dport: if ports {
                rng.random_range(0..300)
            } else {
                PORT_NONE
            },
            tcp_flags: if proto == IPPROTO_TCP {
                rng.random_range(0..256)
            } else {
                BYTE_NONE
            },
            icmp_type: if proto == IPPROTO_ICMP {
                rng.random_range(0..256)
            } else {
                BYTE_NONE
            },
            ..Packet::v4(rng.random())
        }
    }

    /// The reference: the first enforce rule that matches, and the first monitor rule ahead.
    fn linear(rules: &[(RuleSpec, u32)], p: &Packet) -> RuleMatch {
        let mut out = RuleMatch::default();
        for (i, (s, _)) in rules.iter().enumerate() {
            if s.matches(p) {
                if s.monitor {
                    out.monitor.get_or_insert(i as u32);
                } else {
                    out.enforce = Some(i as u32);
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn tables_match_the_linear_scan() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1usize, 5, 63, 64, 65, 200, 512] {
            let rules: Vec<(RuleSpec, u32)> =
                (0..n).map(|i| (random_spec(&mut rng), i as u32)).collect();
            let t = compile(&rules).unwrap();
            for _ in 0..3000 {
                let p = random_packet(&mut rng);
                assert_eq!(
                    first_match(&View(&t), 0, &p, t.words as usize, t.dims),
                    linear(&rules, &p),
                    "{n} rules, {p:?}"
                );
            }
        }
    }

    #[test]
    fn unconstrained_dimensions_are_skipped() {
        let mut s = RuleSpec {
            drop: true,
            ..Default::default()
        };
        s.ranges[DIM_DPORT as usize] = Some(vec![(53, 53)]);
        let t = compile(&[(s, 0)]).unwrap();
        assert_eq!(t.dims, 1 << DIM_DPORT);
        assert_eq!(t.words, 1);
    }

    #[test]
    fn too_many_ranges_are_refused() {
        let rules: Vec<(RuleSpec, u32)> = (0..512u32)
            .map(|i| {
                let mut s = RuleSpec::default();
                s.ranges[DIM_DPORT as usize] = Some(
                    (0..3)
                        .map(|k| (i * 100 + k * 10, i * 100 + k * 10 + 1))
                        .collect(),
                );
                (s, i)
            })
            .collect();
        assert!(compile(&rules).is_err());
    }
}
