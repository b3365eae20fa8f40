//! The policy: one TOML file with the lists, L4 rules, rate limits, protected prefixes and
//! interfaces. Validated completely first ([`load`]), then published as one generation with
//! everything else the program reads ([`apply`]).

pub mod apply;
pub mod file;
pub mod guard;
pub mod limits;
pub mod presets;
pub mod rules;

use std::path::{Path, PathBuf};

use anyhow::Result;
use filter_common::limits::{CLASS_NAMES, PER_GLOBAL, PER_SOURCE};
use filter_common::model::RuleSpec;
use filter_common::packet::*;
use filter_common::rules::*;
use filter_common::MalformedPolicy;
use serde::{Deserialize, Serialize};

use crate::lists::entries::{self, Prefix};
use crate::state::attach::Mode;
use file::{NumOrRange, Problem, Rate, RawRule, Reporter};

/// `enforce` or `monitor`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    #[default]
    Enforce,
    Monitor,
}

impl RuleMode {
    pub fn bits(self) -> u64 {
        match self {
            RuleMode::Enforce => MODE_ENFORCE,
            RuleMode::Monitor => MODE_MONITOR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RuleMode::Enforce => "enforce",
            RuleMode::Monitor => "monitor",
        }
    }
}

/// One `[[rule]]`, checked: what it matches (per dimension), what it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub drop: bool,
    pub mode: RuleMode,
    pub preset: Option<String>,
    /// The match, one spec per table rule (a preset expands to several).
    pub matches: Vec<Match>,
}

/// Value ranges per dimension (`rules::DIM_*`); `None` is any value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub ranges: [Option<Vec<(u32, u32)>>; DIMS as usize],
}

impl Rule {
    /// The rule as the reference model and the table compiler see it, one per match.
    pub fn specs(&self) -> impl Iterator<Item = RuleSpec> + '_ {
        self.matches.iter().map(|m| RuleSpec {
            drop: self.drop,
            monitor: self.mode == RuleMode::Monitor,
            ranges: m.ranges.clone(),
        })
    }
}

/// One `[[limit]]`, checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub name: String,
    /// `limits::CLASS_*`.
    pub class: u8,
    /// `limits::PER_*`.
    pub per: u8,
    pub pps: Option<u64>,
    /// Bits per second.
    pub bps: Option<u64>,
    /// Packets the bucket holds (a burst at line rate is let through up to this).
    pub burst: u64,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    pub ban_seconds: Option<u32>,
    pub mode: RuleMode,
    pub known_sources_first: bool,
}

/// Attachments the policy wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interfaces {
    pub names: Vec<String>,
    pub mode: String,
}

/// A policy, checked, with its list files read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The file it came from.
    pub source: Option<PathBuf>,
    pub malformed_pass: bool,
    pub block_monitor: bool,
    pub interfaces: Option<Interfaces>,
    pub rules: Vec<Rule>,
    pub limits: Vec<Limit>,
    /// The list files it names (the daemon watches them).
    #[serde(default)]
    pub list_files: Vec<PathBuf>,
    /// List entries (kept out of the stored policy: the snapshot holds them as entries).
    #[serde(skip)]
    pub lists: PolicyLists,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyLists {
    pub block: Vec<Prefix>,
    pub allow: Vec<Prefix>,
    pub protected: Vec<Prefix>,
}

impl Policy {
    pub fn malformed_policy(&self) -> MalformedPolicy {
        if self.malformed_pass {
            MalformedPolicy::Pass
        } else {
            MalformedPolicy::Drop
        }
    }

    /// Table rules after preset expansion.
    pub fn table_rules(&self) -> usize {
        self.rules.iter().map(|r| r.matches.len()).sum()
    }
}

/// Why a policy was refused: every problem found, each with its place.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Invalid(pub Vec<Problem>);

fn render(problems: &[Problem]) -> String {
    let mut s = format!(
        "{} problem{} in the policy; nothing was changed",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!("\n  {p}"));
    }
    s
}

fn one_of(
    r: &mut Reporter,
    v: &toml::Spanned<String>,
    what: &str,
    choices: &[&str],
) -> Option<usize> {
    let found = choices.iter().position(|c| *c == v.get_ref());
    if found.is_none() {
        r.at(
            v.span(),
            format!(
                "{what} '{}' is not known; expected {}",
                entries::shown(v.get_ref()),
                choices
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    found
}

fn mode_of(r: &mut Reporter, v: &Option<toml::Spanned<String>>) -> RuleMode {
    match v {
        None => RuleMode::Enforce,
        Some(v) => match one_of(r, v, "mode", &["enforce", "monitor"]) {
            Some(1) => RuleMode::Monitor,
            _ => RuleMode::Enforce,
        },
    }
}

fn name_of(
    r: &mut Reporter,
    v: &toml::Spanned<String>,
    seen: &mut Vec<String>,
    what: &str,
) -> String {
    let n = v.get_ref();
    if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) {
        r.at(
            v.span(),
            format!(
                "{what} name '{}' must be 1-64 printable characters",
                entries::shown(n)
            ),
        );
    } else if seen.contains(n) {
        r.at(
            v.span(),
            format!("{what} name '{n}' is used twice; names identify counters, make them unique"),
        );
    }
    seen.push(n.clone());
    n.clone()
}

/// A rate with an optional k/M/G suffix (powers of 1000).
fn parse_rate(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1_000u64),
        'M' => (&t[..t.len() - 1], 1_000_000),
        'G' => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    let n: f64 = digits.trim().parse().ok()?;
    let v = n * mult as f64;
    (v.is_finite() && (1.0..=1e13).contains(&v)).then_some(v as u64)
}

/// A number or "a-b" within [lo, hi].
fn range_of(
    r: &mut Reporter,
    v: &toml::Spanned<NumOrRange>,
    what: &str,
    lo: u32,
    hi: u32,
) -> Option<(u32, u32)> {
    range_at(r, v.get_ref(), v.span(), what, lo, hi)
}

/// As [`range_of`], for a value found at `span`.
fn range_at(
    r: &mut Reporter,
    v: &NumOrRange,
    span: std::ops::Range<usize>,
    what: &str,
    lo: u32,
    hi: u32,
) -> Option<(u32, u32)> {
    let bad = |r: &mut Reporter, shown: String| {
        r.at(
            span.clone(),
            format!("{what} '{shown}' is not a number or range between {lo} and {hi}; expected e.g. {lo} or \"{lo}-{hi}\""),
        );
        None
    };
    match v {
        NumOrRange::Num(n) => {
            if *n < i64::from(lo) || *n > i64::from(hi) {
                return bad(r, n.to_string());
            }
            Some((*n as u32, *n as u32))
        }
        NumOrRange::Text(t) => {
            let parts: Vec<&str> = t.split('-').map(str::trim).collect();
            let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse::<u32>().ok()).collect();
            match (parts.len(), nums) {
                (1, Some(n)) if n[0] >= lo && n[0] <= hi => Some((n[0], n[0])),
                (2, Some(n)) if n[0] <= n[1] && n[0] >= lo && n[1] <= hi => Some((n[0], n[1])),
                _ => bad(r, entries::shown(t)),
            }
        }
    }
}

fn tcp_flag_bit(name: &str) -> Option<u32> {
    Some(match name.to_ascii_uppercase().as_str() {
        "FIN" => TCP_FIN,
        "SYN" => TCP_SYN,
        "RST" => TCP_RST,
        "PSH" => TCP_PSH,
        "ACK" => TCP_ACK,
        "URG" => TCP_URG,
        "ECE" => TCP_ECE,
        "CWR" => TCP_CWR,
        _ => return None,
    })
}

/// `"SYN,!ACK"`: flags that must be set and (with `!`) clear; the values of the flags byte
/// that satisfy it, as ranges.
pub fn tcp_flags_ranges(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let (mut set, mut clear) = (0u32, 0u32);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (neg, name) = match part.strip_prefix('!') {
            Some(n) => (true, n.trim()),
            None => (false, part),
        };
        let bit = tcp_flag_bit(name).ok_or_else(|| {
            format!("'{}' is not a TCP flag; expected FIN, SYN, RST, PSH, ACK, URG, ECE or CWR, '!' for a flag that must be clear", entries::shown(name))
        })?;
        if neg {
            clear |= bit
        } else {
            set |= bit
        }
    }
    if set & clear != 0 {
        return Err("a flag cannot be both required and refused".into());
    }
    if set | clear == 0 {
        return Err("no flags given; expected e.g. \"SYN,!ACK\"".into());
    }
    Ok(values_to_ranges(
        (0..256).filter(|v| v & set == set && v & clear == 0),
    ))
}

/// Sorted values as runs.
pub fn values_to_ranges(values: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some(last) if last.1 + 1 == v => last.1 = v,
            _ => out.push((v, v)),
        }
    }
    out
}

fn check_rule(
    r: &mut Reporter,
    raw: &toml::Spanned<RawRule>,
    seen: &mut Vec<String>,
) -> Option<Rule> {
    let rule = raw.get_ref();
    let name = name_of(r, &rule.name, seen, "rule");
    let before = r.problems.len();
    let drop = match &rule.action {
        None => true,
        Some(a) => one_of(r, a, "action", &["drop", "pass"]) != Some(1),
    };
    let mode = mode_of(r, &rule.mode);
    if let Some(preset) = &rule.preset {
        let others = [
            rule.protocol.is_some(),
            rule.dst_ports.is_some(),
            rule.src_ports.is_some(),
            rule.tcp_flags.is_some(),
            rule.length.is_some(),
            rule.ttl.is_some(),
            rule.icmp_type.is_some(),
            rule.fragments.is_some(),
        ];
        if others.iter().any(|&o| o) {
            r.at(preset.span(), "a preset rule takes only name, action and mode; write the extra match as a rule of its own");
        }
        let Some(matches) = presets::expand(preset.get_ref()) else {
            r.at(
                preset.span(),
                format!(
                    "preset '{}' is not known; expected \"reflection\" or \"tcp-flags\"",
                    entries::shown(preset.get_ref())
                ),
            );
            return None;
        };
        return (r.problems.len() == before).then(|| Rule {
            name,
            drop,
            mode,
            preset: Some(preset.get_ref().clone()),
            matches,
        });
    }
    let mut m = Match::default();
    let proto = match &rule.protocol {
        None => None,
        Some(p) => match one_of(r, p, "protocol", &["tcp", "udp", "icmp", "icmpv6", "any"]) {
            Some(0) => Some(filter_common::parse::IPPROTO_TCP),
            Some(1) => Some(filter_common::parse::IPPROTO_UDP),
            Some(2) => Some(filter_common::parse::IPPROTO_ICMP),
            Some(3) => Some(filter_common::parse::IPPROTO_ICMPV6),
            _ => None,
        },
    };
    if let Some(p) = proto {
        m.ranges[DIM_PROTO as usize] = Some(vec![(u32::from(p), u32::from(p))]);
    }
    let is = |p: u8| proto.is_none_or(|q| q == p);
    for (field, dim, what) in [
        (&rule.dst_ports, DIM_DPORT, "dst_ports"),
        (&rule.src_ports, DIM_SPORT, "src_ports"),
    ] {
        if let Some(ports) = field {
            if !is(filter_common::parse::IPPROTO_TCP) && !is(filter_common::parse::IPPROTO_UDP) {
                r.at(
                    ports.span(),
                    format!("{what} needs protocol \"tcp\", \"udp\" or \"any\""),
                );
            }
            let mut ranges = Vec::new();
            for p in ports.get_ref().clone().into_vec() {
                if let Some(range) = range_at(r, &p, ports.span(), "port", 0, 65535) {
                    ranges.push(range);
                }
            }
            if ports.get_ref().clone().into_vec().is_empty() {
                // An empty list would match no port: the rule would silently never apply.
                r.at(
                    ports.span(),
                    format!("{what} is empty; give at least one port or \"a-b\" range, or leave {what} out to match every port"),
                );
            }
            m.ranges[dim as usize] = Some(ranges);
        }
    }
    if let Some(flags) = &rule.tcp_flags {
        if proto != Some(filter_common::parse::IPPROTO_TCP) {
            r.at(flags.span(), "tcp_flags needs protocol = \"tcp\"");
        }
        match tcp_flags_ranges(flags.get_ref()) {
            Ok(v) => m.ranges[DIM_TCP_FLAGS as usize] = Some(v),
            Err(e) => r.at(flags.span(), e),
        }
    }
    if let Some(len) = &rule.length {
        if let Some(range) = range_of(r, len, "length", 0, 65535) {
            m.ranges[DIM_LEN as usize] = Some(vec![range]);
        }
    }
    if let Some(ttl) = &rule.ttl {
        if let Some(range) = range_of(r, ttl, "ttl", 0, 255) {
            m.ranges[DIM_TTL as usize] = Some(vec![range]);
        }
    }
    if let Some(t) = &rule.icmp_type {
        if !matches!(
            proto,
            Some(filter_common::parse::IPPROTO_ICMP | filter_common::parse::IPPROTO_ICMPV6)
        ) {
            r.at(t.span(), "icmp_type needs protocol \"icmp\" or \"icmpv6\"");
        }
        let v = *t.get_ref();
        if !(0..=255).contains(&v) {
            r.at(t.span(), format!("icmp_type {v} is not between 0 and 255"));
        } else {
            m.ranges[DIM_ICMP_TYPE as usize] = Some(vec![(v as u32, v as u32)]);
        }
    }
    if let Some(f) = &rule.fragments {
        let ranges = match one_of(r, f, "fragments", &["any", "first", "later", "none"]) {
            Some(0) => vec![(u32::from(FRAG_FIRST), u32::from(FRAG_LATER))],
            Some(1) => vec![(u32::from(FRAG_FIRST), u32::from(FRAG_FIRST))],
            Some(2) => vec![(u32::from(FRAG_LATER), u32::from(FRAG_LATER))],
            _ => vec![(u32::from(FRAG_NONE), u32::from(FRAG_NONE))],
        };
        m.ranges[DIM_FRAG as usize] = Some(ranges);
    }
    if m.ranges.iter().all(Option::is_none) && drop {
        r.at(raw.span(), format!("rule '{name}' matches every packet; give it a protocol, ports, flags or another match (or use a limit)"));
    }
    (r.problems.len() == before).then(|| Rule {
        name,
        drop,
        mode,
        preset: None,
        matches: vec![m],
    })
}

fn check_limit(
    r: &mut Reporter,
    raw: &toml::Spanned<file::RawLimit>,
    seen: &mut Vec<String>,
) -> Option<Limit> {
    let l = raw.get_ref();
    let name = name_of(r, &l.name, seen, "limit");
    let before = r.problems.len();
    let class = one_of(r, &l.class, "class", &CLASS_NAMES).unwrap_or(0) as u8;
    let per = match one_of(r, &l.per, "per", &["source", "global"]) {
        Some(1) => PER_GLOBAL,
        _ => PER_SOURCE,
    };
    let pps = l.pps.as_ref().and_then(|p| {
        let v = *p.get_ref();
        if !(1..=1_000_000_000).contains(&v) {
            r.at(p.span(), format!("pps {v} is not between 1 and 1000000000"));
            None
        } else {
            Some(v as u64)
        }
    });
    let bps = l.bps.as_ref().and_then(|b| {
        let v = match b.get_ref() {
            // The same bounds as the text form: 1 bit/s to 10 Tbit/s.
            Rate::Num(n) if (1..=10_000_000_000_000).contains(n) => Some(*n as u64),
            Rate::Num(_) => None,
            Rate::Text(t) => parse_rate(t),
        };
        if v.is_none() {
            r.at(b.span(), "bps is not a rate in bits per second from 1 to 10T; expected e.g. 1000000, \"800k\", \"10M\" or \"1G\"");
        }
        v
    });
    if pps.is_none() && bps.is_none() && l.pps.is_none() && l.bps.is_none() {
        r.at(raw.span(), format!("limit '{name}' needs pps, bps or both"));
    }
    let burst = match &l.burst {
        None => pps.map_or(1, |p| (p / 10).max(1)),
        Some(b) => {
            let v = *b.get_ref();
            if !(1..=1_000_000_000).contains(&v) {
                r.at(
                    b.span(),
                    format!("burst {v} is not between 1 and 1000000000 packets"),
                );
            }
            v.max(1) as u64
        }
    };
    let prefix = |r: &mut Reporter,
                  v: &Option<toml::Spanned<i64>>,
                  max: i64,
                  default: u8,
                  what: &str|
     -> u8 {
        match v {
            None => default,
            Some(p) => {
                if per == PER_GLOBAL {
                    r.at(
                        p.span(),
                        format!("{what} applies to per = \"source\" limits"),
                    );
                }
                let x = *p.get_ref();
                if !(0..=max).contains(&x) {
                    r.at(
                        p.span(),
                        format!("{what} {x} is not a prefix length between 0 and {max}"),
                    );
                    default
                } else {
                    x as u8
                }
            }
        }
    };
    let prefix_v4 = prefix(r, &l.prefix_v4, 32, 32, "prefix_v4");
    let prefix_v6 = prefix(r, &l.prefix_v6, 128, 64, "prefix_v6");
    let ban_seconds = l.ban_seconds.as_ref().and_then(|b| {
        let v = *b.get_ref();
        if per == PER_GLOBAL {
            r.at(b.span(), "ban_seconds applies to per = \"source\" limits: a global limit has no source to ban");
            None
        } else if !(1..=30 * 86_400).contains(&v) {
            r.at(b.span(), format!("ban_seconds {v} is not between 1 and 2592000 (30 days)"));
            None
        } else if prefix_v4 == 0 || prefix_v6 == 0 {
            // The program looks bans up at lengths of at least 1 bit: a /0 ban would be
            // listed but never enforced.
            r.at(b.span(), "ban_seconds needs prefix_v4 and prefix_v6 of at least 1: a ban of every source (/0) is not enforced; use a global limit");
            None
        } else {
            Some(v as u32)
        }
    });
    let mode = mode_of(r, &l.mode);
    let known_sources_first = l.known_sources_first.as_ref().is_none_or(|k| *k.get_ref());
    (r.problems.len() == before).then_some(Limit {
        name,
        class,
        per,
        pps,
        bps,
        burst,
        prefix_v4,
        prefix_v6,
        ban_seconds,
        mode,
        known_sources_first,
    })
}

/// Read list entries given inline, with each bad one reported where it stands.
fn inline_entries(r: &mut Reporter, items: &[toml::Spanned<String>]) -> Vec<Prefix> {
    let mut out = Vec::new();
    for item in items {
        match entries::parse_entry(item.get_ref()) {
            Ok(p) => out.push(p),
            Err(e) => r.at(item.span(), e),
        }
    }
    out
}

/// Read list files named in the policy (relative to the policy's directory).
fn file_entries(
    r: &mut Reporter,
    files: &[toml::Spanned<String>],
    names: &mut Vec<PathBuf>,
) -> Vec<Prefix> {
    let mut out = Vec::new();
    for f in files {
        let path = r.dir.join(f.get_ref());
        names.push(std::path::absolute(&path).unwrap_or_else(|_| path.clone()));
        match entries::read_list_file(&path) {
            Ok(v) => out.extend(v),
            Err(e) => {
                // The list reader's message: a summary, then `NAME:LINE: message` per bad
                // line (NAME as it shows the path), then perhaps "... and N more".
                let text = format!("{e:#}");
                let shown = crate::text::path(&path);
                let mut lines = text.lines();
                let first = lines.next().unwrap_or("");
                let mut head = if first.starts_with(shown.as_str()) {
                    format!("list file {first}")
                } else {
                    format!("list file {shown}: {first}")
                };
                let mut located = Vec::new();
                for line in lines.map(str::trim) {
                    let at = line
                        .strip_prefix(shown.as_str())
                        .and_then(|rest| rest.strip_prefix(':'))
                        .and_then(|rest| rest.split_once(": "))
                        .and_then(|(n, msg)| Some((n.parse::<usize>().ok()?, msg)));
                    match at {
                        Some((n, msg)) => located.push((n, msg.to_string())),
                        None => head.push_str(&format!(" ({line})")),
                    }
                }
                r.at(f.span(), head);
                for (n, msg) in located.into_iter().take(10) {
                    r.elsewhere(shown.clone(), n, msg);
                }
            }
        }
    }
    out
}

/// Ban prefix lengths the program looks up per family (`PolicyConfig::ban_prefixes_v4`).
pub const BAN_LENGTHS: usize = 4;

/// Limits that ban must use at most [`BAN_LENGTHS`] distinct prefix lengths per family (as
/// `apply` counts them): the limit that brings in one more is reported, at its prefix.
fn check_ban_lengths(r: &mut Reporter, limits: &[Limit], raws: &[&toml::Spanned<file::RawLimit>]) {
    for (family, key) in [("IPv4", "prefix_v4"), ("IPv6", "prefix_v6")] {
        let mut lens: Vec<u8> = Vec::new();
        for (l, raw) in limits.iter().zip(raws) {
            if l.ban_seconds.is_none() {
                continue;
            }
            let (len, written) = if key == "prefix_v4" {
                (l.prefix_v4, &raw.get_ref().prefix_v4)
            } else {
                (l.prefix_v6, &raw.get_ref().prefix_v6)
            };
            if lens.contains(&len) {
                continue;
            }
            lens.push(len);
            if lens.len() == BAN_LENGTHS + 1 {
                let span = written
                    .as_ref()
                    .map_or_else(|| raw.get_ref().name.span(), |w| w.span());
                let mut shown = lens.clone();
                shown.sort_unstable();
                r.at(
                    span,
                    format!(
                        "limit '{}' bans by a {key} of {len}: the limits that ban use {} distinct {family} prefix lengths ({shown:?}), the program looks up at most {BAN_LENGTHS}; expected limits that ban to share their {key} values",
                        l.name,
                        lens.len()
                    ),
                );
            }
        }
    }
}

/// Where a rule names the match field `dim`: that key, else its preset, else its name.
fn dim_span(rule: &RawRule, dim: u32) -> std::ops::Range<usize> {
    let key = match dim {
        DIM_PROTO => rule.protocol.as_ref().map(toml::Spanned::span),
        DIM_SPORT => rule.src_ports.as_ref().map(toml::Spanned::span),
        DIM_DPORT => rule.dst_ports.as_ref().map(toml::Spanned::span),
        DIM_TCP_FLAGS => rule.tcp_flags.as_ref().map(toml::Spanned::span),
        DIM_ICMP_TYPE => rule.icmp_type.as_ref().map(toml::Spanned::span),
        DIM_TTL => rule.ttl.as_ref().map(toml::Spanned::span),
        DIM_LEN => rule.length.as_ref().map(toml::Spanned::span),
        DIM_FRAG => rule.fragments.as_ref().map(toml::Spanned::span),
        _ => None,
    };
    key.or_else(|| rule.preset.as_ref().map(toml::Spanned::span))
        .unwrap_or_else(|| rule.name.span())
}

/// The rules must compile into the program's tables as `apply` compiles them: at most
/// `MAX_RULES` table rules, and no match field cut into more ranges than the tables hold.
/// Reported at the rule that goes past the limit.
fn check_tables(r: &mut Reporter, rules: &[Rule], raws: &[&RawRule]) {
    // Each table rule with the checked rule it comes from.
    let table: Vec<(RuleSpec, usize)> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| rule.specs().map(move |s| (s, i)))
        .collect();
    if table.len() > MAX_RULES as usize {
        let i = table[MAX_RULES as usize].1;
        r.at(
            raws[i].name.span(),
            format!(
                "the rules expand to {} table rules (presets count several); at most {MAX_RULES}: rule '{}' is past the limit",
                table.len(),
                rules[i].name
            ),
        );
        return;
    }
    let specs: Vec<(RuleSpec, u32)> = table.iter().map(|(s, _)| (s.clone(), 0)).collect();
    if let Err(e) = rules::compile(&specs) {
        match rules::too_many_ranges(specs.iter().map(|(s, _)| s)) {
            Some(t) => {
                let i = table[t.rule].1;
                r.at(
                    dim_span(raws[i], t.dim),
                    format!("rule '{}': {t}", rules[i].name),
                );
            }
            None => r.at(0..0, format!("the rules do not compile: {e:#}")),
        }
    }
}

/// Read and check a policy file completely; every problem is reported, nothing is applied.
pub fn load(path: &Path) -> Result<Policy> {
    let text = read_text(path)?;
    check_text(path, &text).map_err(|problems| crate::error::usage_error(Invalid(problems)))
}

fn read_text(path: &Path) -> Result<String> {
    const MAX: u64 = 16 << 20;
    // A path that does not lead to a readable file is the caller's to fix (exit 2), as for a
    // list file.
    let unreadable = |e: std::io::Error| {
        crate::error::usage(format!(
            "cannot read policy file {}: {e}; give the path of a readable policy file",
            crate::text::path(path)
        ))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.is_dir() {
        return Err(crate::error::usage(format!(
            "{} is a directory; give the policy file",
            path.display()
        )));
    }
    if meta.len() > MAX {
        return Err(crate::error::usage(format!(
            "{} is larger than 16 MiB; a policy names big lists with block_files instead of inlining them",
            path.display()
        )));
    }
    // The size in the metadata says nothing for a device or a pipe (/dev/zero is "empty"):
    // read at most one byte more than a policy may hold.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(MAX + 1).read_to_end(&mut bytes)
        })
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX {
        return Err(crate::error::usage(format!(
            "{}: more than 16 MiB; a policy names big lists with block_files instead of inlining them",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        crate::error::usage(format!(
            "{}:{line}:{}: not UTF-8 text (byte {at}); expected a UTF-8 TOML file",
            path.display(),
            at - line_start + 1
        ))
    })
}

/// Check policy text read from `path`: the policy, or every problem found.
pub fn check_text(path: &Path, text: &str) -> Result<Policy, Vec<Problem>> {
    let mut r = Reporter::new(path, text);
    let Some(raw) = file::parse(text, &mut r) else {
        return Err(r.problems);
    };
    let mut policy = Policy {
        source: std::path::absolute(path).ok(),
        ..Default::default()
    };
    if let Some(m) = &raw.malformed {
        policy.malformed_pass = one_of(&mut r, m, "malformed", &["drop", "pass"]) == Some(1);
    }
    if let Some(i) = &raw.interfaces {
        let mut names = Vec::new();
        for n in &i.get_ref().names {
            let name = n.get_ref();
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', '\0'])
                || name.chars().any(char::is_whitespace)
            {
                r.at(
                    n.span(),
                    format!(
                        "'{}' is not an interface name (1-15 characters, no '/' or spaces)",
                        entries::shown(name)
                    ),
                );
            } else if names.contains(name) {
                r.at(n.span(), format!("interface {name} is listed twice"));
            } else {
                names.push(name.clone());
            }
        }
        let mode = match &i.get_ref().mode {
            None => "auto".to_string(),
            Some(m) => {
                let k = one_of(&mut r, m, "interface mode", &["auto", "native", "skb"]);
                ["auto", "native", "skb"][k.unwrap_or(0)].to_string()
            }
        };
        policy.interfaces = Some(Interfaces { names, mode });
    }
    let lists = raw.lists.unwrap_or_default();
    policy.block_monitor = mode_of(&mut r, &lists.mode) == RuleMode::Monitor;
    policy.lists.block = inline_entries(&mut r, &lists.block);
    policy.lists.block.extend(file_entries(
        &mut r,
        &lists.block_files,
        &mut policy.list_files,
    ));
    policy.lists.allow = inline_entries(&mut r, &lists.allow);
    policy.lists.allow.extend(file_entries(
        &mut r,
        &lists.allow_files,
        &mut policy.list_files,
    ));
    policy.lists.protected = inline_entries(&mut r, &lists.protected);
    let mut names = Vec::new();
    let mut limit_raws = Vec::new();
    for l in &raw.limit {
        if let Some(limit) = check_limit(&mut r, l, &mut names) {
            policy.limits.push(limit);
            limit_raws.push(l);
        }
    }
    check_ban_lengths(&mut r, &policy.limits, &limit_raws);
    if raw.limit.len() > filter_common::limits::MAX_LIMITS as usize {
        r.at(
            raw.limit[filter_common::limits::MAX_LIMITS as usize].span(),
            format!(
                "more than {} limits; merge some",
                filter_common::limits::MAX_LIMITS
            ),
        );
    }
    let mut names = Vec::new();
    let mut rule_raws = Vec::new();
    for rule in &raw.rule {
        if let Some(checked) = check_rule(&mut r, rule, &mut names) {
            policy.rules.push(checked);
            rule_raws.push(rule.get_ref());
        }
    }
    check_tables(&mut r, &policy.rules, &rule_raws);
    if r.problems.is_empty() {
        Ok(policy)
    } else {
        // In file order (checks run key by key): the policy file's first, then list files'.
        let main = r.file().to_string();
        let mut problems = r.problems;
        problems.sort_by_key(|p| (p.file != main, p.file.clone(), p.line, p.column));
        Err(problems)
    }
}

/// A mode name for the attach mechanism.
pub fn attach_mode(name: &str) -> Mode {
    match name {
        "native" => Mode::Native,
        "skb" => Mode::Skb,
        _ => Mode::Auto,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/floodgate.toml");

    fn check(text: &str) -> Result<Policy, Vec<Problem>> {
        check_text(Path::new("p.toml"), text)
    }

    /// The problems of `text`, as `LINE:COL: message`.
    fn problems(text: &str) -> Vec<String> {
        check(text)
            .expect_err("invalid")
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
            .collect()
    }

    #[test]
    fn the_example_is_valid() {
        let p = check_text(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/floodgate.toml"),
            EXAMPLE,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.limits.len(), 2);
        assert_eq!(p.rules.len(), 7);
        assert_eq!(p.lists.protected.len(), 1);
    }

    #[test]
    fn the_example_documents_every_key() {
        for key in [
            "malformed",
            "[interfaces]",
            "names",
            "mode",
            "[lists]",
            "block",
            "allow",
            "block_files",
            "allow_files",
            "protected",
            "[[limit]]",
            "name",
            "class",
            "per",
            "pps",
            "bps",
            "burst",
            "prefix_v4",
            "prefix_v6",
            "ban_seconds",
            "known_sources_first",
            "[[rule]]",
            "action",
            "protocol",
            "dst_ports",
            "src_ports",
            "tcp_flags",
            "preset",
            "length",
            "ttl",
            "icmp_type",
            "fragments",
        ] {
            let assigned = format!("\n{key} =");
            assert!(
                EXAMPLE.contains(&assigned) || EXAMPLE.contains(&format!("\n{key}\n")),
                "examples/floodgate.toml does not show {key}"
            );
        }
    }

    #[test]
    fn problems_name_line_and_column() {
        let text = "[[limit]]\nname = \"a\"\nclass = \"tcp-ack\"\nper = \"source\"\npps = 10\n";
        let got = problems(text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("3:9: "), "{got:?}");
        assert!(got[0].contains("tcp-ack"), "{got:?}");
        assert!(
            got[0].contains("tcp-syn"),
            "names what is expected: {got:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "[lists]\nblock = [\"10.0.0.0/33\", \"x\"]\n\n[[rule]]\nname = \"r\"\nprotocol = \"udp\"\ndst_ports = \"70000\"\n";
        let got = problems(text);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("2:10: "), "{got:?}");
        assert!(got[1].starts_with("2:25: "), "in file order: {got:?}");
        assert!(
            got[2].starts_with("7:13: ") && got[2].contains("70000"),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_keys_point_to_the_example() {
        let got = problems("[[rule]]\nname = \"r\"\nprotocl = \"udp\"\n");
        assert!(got[0].starts_with("3:1: ") && got[0].contains("examples/floodgate.toml"));
    }

    #[test]
    fn names_must_be_unique() {
        let rule = "[[rule]]\nname = \"r\"\nprotocol = \"udp\"\n";
        let got = problems(&format!("{rule}{rule}"));
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("5:8: "), "{got:?}");
    }

    #[test]
    fn an_empty_port_list_is_refused() {
        let got = problems("[[rule]]\nname = \"r\"\nprotocol = \"udp\"\ndst_ports = []\n");
        assert!(got[0].starts_with("4:13: dst_ports is empty"), "{got:?}");
    }

    #[test]
    fn an_integer_bps_beyond_10_tbit_is_refused() {
        let got = problems("[[limit]]\nname = \"l\"\nclass = \"udp\"\nper = \"global\"\nbps = 9223372036854775807\n");
        assert!(got[0].contains("bps is not a rate"), "{got:?}");
    }

    #[test]
    fn rates_take_suffixes() {
        let limit = |bps: &str| {
            format!("[[limit]]\nname = \"l\"\nclass = \"udp\"\nper = \"global\"\nbps = {bps}\n")
        };
        assert_eq!(
            check(&limit("\"10M\"")).unwrap().limits[0].bps,
            Some(10_000_000)
        );
        assert_eq!(check(&limit("\"1.5k\"")).unwrap().limits[0].bps, Some(1500));
        assert_eq!(check(&limit("800")).unwrap().limits[0].bps, Some(800));
        assert!(problems(&limit("\"10X\""))[0].contains("\"10M\""));
        assert!(problems(&limit("0"))[0].starts_with("5:7: "));
    }

    #[test]
    fn a_global_limit_bans_nobody() {
        let got = problems(
            "[[limit]]\nname = \"l\"\nclass = \"udp\"\nper = \"global\"\npps = 5\nban_seconds = 10\n",
        );
        assert!(got[0].starts_with("6:15: ") && got[0].contains("no source to ban"));
    }

    #[test]
    fn a_limit_that_would_ban_every_source_is_refused() {
        for prefix in ["prefix_v4 = 0", "prefix_v6 = 0"] {
            let got = problems(&format!(
                "[[limit]]\nname = \"l\"\nclass = \"udp\"\nper = \"source\"\npps = 5\n{prefix}\nban_seconds = 10\n"
            ));
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("7:15: ") && got[0].contains("/0"),
                "{got:?}"
            );
        }
    }

    #[test]
    fn a_limit_needs_a_rate() {
        let got = problems("[[limit]]\nname = \"l\"\nclass = \"udp\"\nper = \"source\"\n");
        assert!(got[0].contains("needs pps, bps or both"), "{got:?}");
    }

    #[test]
    fn matches_must_fit_the_protocol() {
        let got = problems("[[rule]]\nname = \"r\"\nprotocol = \"udp\"\ntcp_flags = \"SYN\"\n");
        assert!(
            got[0].contains("tcp_flags needs protocol = \"tcp\""),
            "{got:?}"
        );
        let got = problems("[[rule]]\nname = \"r\"\nprotocol = \"icmp\"\ndst_ports = 53\n");
        assert!(got[0].contains("dst_ports needs protocol"), "{got:?}");
        let got =
            problems("[[rule]]\nname = \"r\"\nprotocol = \"tcp\"\ntcp_flags = \"SYN,!SYN\"\n");
        assert!(got[0].contains("both required and refused"), "{got:?}");
    }

    #[test]
    fn a_rule_that_drops_everything_is_refused() {
        let got = problems("[[rule]]\nname = \"all\"\naction = \"drop\"\n");
        assert!(got[0].contains("matches every packet"), "{got:?}");
    }

    #[test]
    fn a_preset_takes_no_other_match() {
        let got = problems("[[rule]]\nname = \"r\"\npreset = \"reflection\"\ndst_ports = 53\n");
        assert!(
            got[0].contains("takes only name, action and mode"),
            "{got:?}"
        );
        let got = problems("[[rule]]\nname = \"r\"\npreset = \"amplification\"\n");
        assert!(
            got[0].contains("\"reflection\" or \"tcp-flags\""),
            "{got:?}"
        );
    }

    #[test]
    fn a_missing_list_file_is_named() {
        let got = problems("[lists]\nblock_files = [\"/nonexistent/list.txt\"]\n");
        assert!(
            got[0].starts_with("2:16: ") && got[0].contains("/nonexistent/list.txt"),
            "{got:?}"
        );
    }

    #[test]
    fn bad_lines_of_a_list_file_are_reported_at_their_line() {
        let dir = std::env::temp_dir().join(format!("fg-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("bad.txt");
        std::fs::write(&list, "10.0.0.0/8\nbogus\n1.2.3.4/40\n").unwrap();
        let got = check_text(
            &dir.join("p.toml"),
            "[lists]\nblock_files = [\"bad.txt\"]\n",
        )
        .expect_err("invalid");
        std::fs::remove_dir_all(&dir).unwrap();
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "{shown:?}");
        assert_eq!((got[0].line, got[0].column), (2, 16), "{shown:?}");
        assert!(got[0].message.contains("2 invalid lines"), "{shown:?}");
        let list = list.display().to_string();
        for (p, line, what) in [(&got[1], 2, "'bogus'"), (&got[2], 3, "'1.2.3.4/40'")] {
            assert_eq!(
                (p.file.as_str(), p.line),
                (list.as_str(), line),
                "{shown:?}"
            );
            assert!(
                p.message.starts_with(what),
                "the message without the place again: {shown:?}"
            );
        }
    }

    #[test]
    fn a_device_that_never_ends_is_refused_with_bounded_memory() {
        let e = load(Path::new("/dev/zero")).expect_err("not a policy");
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        assert!(format!("{e:#}").contains("more than 16 MiB"), "{e:#}");
    }

    #[test]
    fn a_byte_that_is_not_utf8_has_a_line_and_column() {
        let path = std::env::temp_dir().join(format!("fg-utf8-test-{}.toml", std::process::id()));
        std::fs::write(&path, b"malformed = \"drop\"\n# caf\xe9\n").unwrap();
        let e = load(&path).expect_err("not UTF-8");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        assert!(
            format!("{e:#}").contains(&format!("{}:2:6: not UTF-8", path.display())),
            "{e:#}"
        );
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let got = problems("[[rule]\nname = 1\n");
        assert!(got[0].starts_with("1:"), "{got:?}");
    }

    /// `n` rules, each matching three port ranges of its own (6 boundaries per rule).
    fn many_port_ranges(n: u32) -> String {
        (0..n)
            .map(|i| {
                let p = |k: u32| format!("\"{}-{}\"", i * 100 + k * 10, i * 100 + k * 10 + 1);
                format!(
                    "[[rule]]\nname = \"r{i}\"\nprotocol = \"udp\"\ndst_ports = [{}, {}, {}]\n",
                    p(0),
                    p(1),
                    p(2)
                )
            })
            .collect()
    }

    #[test]
    fn rules_cutting_a_field_into_too_many_ranges_are_refused_at_the_rule() {
        // 400 rules x 3 ranges: 2400 classes of destination ports, the tables hold 2048. Rule
        // r341 is the first past the limit (6 x 342 classes: the first range starts at 0); its dst_ports is on line
        // 4 x 341 + 4.
        let got = problems(&many_port_ranges(400));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("1368:13: "), "{got:?}");
        assert!(
            got[0].contains("rule 'r341'")
                && got[0].contains("dst_ports into 2400 distinct ranges")
                && got[0].contains("at most 2048"),
            "{got:?}"
        );
    }

    #[test]
    fn rules_within_the_ranges_the_tables_hold_are_valid() {
        assert!(check(&many_port_ranges(341)).is_ok());
    }

    /// Limits that ban, one per IPv4 prefix length of `lens`.
    fn banning_limits(lens: &[u8]) -> String {
        lens.iter()
            .map(|l| {
                format!("[[limit]]\nname = \"l{l}\"\nclass = \"udp\"\nper = \"source\"\npps = 10\nprefix_v4 = {l}\nban_seconds = 60\n")
            })
            .collect()
    }

    #[test]
    fn more_ban_prefix_lengths_than_the_program_looks_up_are_refused_at_the_limit() {
        // The fifth distinct length (limit l28, 7 lines per limit) is the one reported.
        let got = problems(&banning_limits(&[32, 31, 30, 29, 28]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("34:13: "), "{got:?}");
        assert!(
            got[0].contains("limit 'l28'")
                && got[0].contains("5 distinct IPv4 prefix lengths")
                && got[0].contains("at most 4"),
            "{got:?}"
        );
    }

    #[test]
    fn ban_limits_sharing_prefix_lengths_count_each_length_once() {
        let mut text = banning_limits(&[32, 31, 30, 29]);
        text.push_str("[[limit]]\nname = \"again\"\nclass = \"tcp\"\nper = \"source\"\npps = 10\nprefix_v4 = 32\nban_seconds = 60\n");
        // A limit that does not ban needs no ban lookup.
        text.push_str("[[limit]]\nname = \"noban\"\nclass = \"icmp\"\nper = \"source\"\npps = 10\nprefix_v4 = 20\n");
        assert!(check(&text).is_ok(), "{:?}", check(&text));
    }

    #[test]
    fn the_ban_length_count_matches_what_the_program_reads() {
        let c = filter_common::PolicyConfig::default();
        assert_eq!(c.ban_prefixes_v4.len(), BAN_LENGTHS);
        assert_eq!(c.ban_prefixes_v6.len(), BAN_LENGTHS);
    }

    #[test]
    fn modes_default_to_enforce() {
        let p = check("[[rule]]\nname = \"r\"\nprotocol = \"udp\"\ndst_ports = 9\n").unwrap();
        assert_eq!(p.rules[0].mode, RuleMode::Enforce);
        let got = problems("[[rule]]\nname = \"r\"\nprotocol = \"udp\"\nmode = \"dry\"\n");
        assert!(got[0].contains("\"monitor\""), "{got:?}");
    }
}
