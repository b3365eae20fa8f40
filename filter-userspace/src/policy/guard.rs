//! The lockout guard: a policy (or a `block add`) that would drop the operator's own SSH
//! session, or a protected prefix, is refused unless `--force`.
//!
//! Checked against the state as it would be: the SSH client (from `SSH_CONNECTION`) must not
//! be blocklisted, dropped by an enforce-mode rule on its established connection, or subject
//! to an enforce-mode limit unless it is protected or allowlisted; no protected prefix may be
//! blocklisted (where not allowlisted). Rules match no source address, so they are checked
//! against the SSH connection only; protected prefixes are never limited or banned by the
//! program itself.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::limits::{CLASS_ALL, CLASS_TCP};
use filter_common::model::RuleSpec;
use filter_common::packet::{
    Packet, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};
use filter_common::parse::IPPROTO_TCP;
use filter_common::rules::{DIM_LEN, DIM_TTL};
use filter_common::trie::Family;
use filter_common::ListKind;

use super::{Policy, RuleMode};
use crate::error::usage;
use crate::lists::entries::Prefix;
use crate::state::snapshot::{AppliedPolicy, Origin};
use crate::state::Snapshot;

/// The SSH connection this command runs in, from `SSH_CONNECTION`: client address and port,
/// server port.
pub fn ssh_connection() -> Option<(IpAddr, u16, u16)> {
    let v = std::env::var("SSH_CONNECTION").ok()?;
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 4 {
        return None;
    }
    Some((
        parts[0].parse().ok()?,
        parts[1].parse().ok()?,
        parts[3].parse().ok()?,
    ))
}

fn contains(p: &Prefix, a: IpAddr) -> bool {
    p.to_ipnet().contains(&a)
}

/// Whether two prefixes overlap, and an address in both.
fn overlap(a: &Prefix, b: &Prefix) -> Option<IpAddr> {
    let (na, nb) = (a.to_ipnet(), b.to_ipnet());
    if na.contains(&nb.network()) {
        Some(nb.network())
    } else if nb.contains(&na.network()) {
        Some(na.network())
    } else {
        None
    }
}

/// Entries of a list as they would be: the command-line part of `snapshot` and the policy's.
fn all_entries(snapshot: &Snapshot, policy: &Policy, kind: ListKind) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = Family::ALL
        .iter()
        .flat_map(|&f| {
            snapshot
                .list(Origin::Cli, kind, f)
                .iter()
                .map(move |e| e.prefix(f))
        })
        .collect();
    out.extend(match kind {
        ListKind::Allow => &policy.lists.allow,
        ListKind::Block => &policy.lists.block,
        ListKind::Protected => &policy.lists.protected,
    });
    out
}

/// TCP flags an established connection's client sends (with and without ECN's ECE or CWR).
const SSH_FLAGS: [u32; 6] = [
    TCP_ACK,
    TCP_ACK | TCP_PSH,
    TCP_ACK | TCP_FIN,
    TCP_ACK | TCP_PSH | TCP_FIN,
    TCP_RST,
    TCP_ACK | TCP_RST,
];

/// TTLs (hop limits) a client arrives with: an initial 64, 128 or 255, up to 32 hops away.
const SSH_TTLS: [(u32, u32); 3] = [(32, 64), (96, 128), (223, 255)];

/// The values of `plausible` (inclusive intervals) to try against rules whose ranges are
/// `ranges`: the intervals' ends and every rule range edge that falls inside one.
fn probes<'a>(plausible: &[(u32, u32)], ranges: impl Iterator<Item = &'a (u32, u32)>) -> Vec<u32> {
    let mut out: Vec<u32> = plausible.iter().flat_map(|&(a, b)| [a, b]).collect();
    for &(a, b) in ranges {
        for v in [a.saturating_sub(1), a, b, b.saturating_add(1)] {
            if plausible.iter().any(|&(lo, hi)| lo <= v && v <= hi) {
                out.push(v);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Packets of the SSH connection as the program sees them, enough of them that every rule
/// that can match one of its packets matches one of these: each flag combination of an
/// established connection, from a pure ACK to a full (or GRO-merged) packet, at every TTL a
/// client up to 32 hops away arrives with, at every edge of the rules' ranges.
fn ssh_packets<'a>(
    client: IpAddr,
    cport: u16,
    sport: u16,
    rules: impl Iterator<Item = &'a RuleSpec> + Clone,
) -> Vec<Packet> {
    let (base, min_len) = match client {
        IpAddr::V4(a) => (Packet::v4(u32::from(a)), 40),
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (Packet::v6((a >> 64) as u64, a as u64), 60)
        }
    };
    let dim = |d: u32| {
        rules
            .clone()
            .filter_map(move |r| r.ranges[d as usize].as_ref())
            .flatten()
    };
    let lens = probes(&[(min_len, 65_535)], dim(DIM_LEN));
    let ttls = probes(&SSH_TTLS, dim(DIM_TTL));
    let mut out = Vec::new();
    for &flags in &SSH_FLAGS {
        for ecn in [0, TCP_ECE, TCP_CWR] {
            for &len in &lens {
                for &ttl in &ttls {
                    out.push(Packet {
                        proto: IPPROTO_TCP,
                        sport: u32::from(cport),
                        dport: u32::from(sport),
                        tcp_flags: flags | ecn,
                        ttl: ttl as u8,
                        len,
                        ..base
                    });
                }
            }
        }
    }
    out
}

/// The first enforce-mode rule that matches decides a packet: the name of a rule that drops
/// a packet of the SSH connection (a pure ACK, a FIN, a client some hops away all lock it
/// out), with such a packet.
fn ssh_dropped_by(
    rules: &[super::Rule],
    client: IpAddr,
    cport: u16,
    sport: u16,
) -> Option<(String, Packet)> {
    let specs: Vec<(&str, RuleSpec)> = rules
        .iter()
        .flat_map(|r| r.specs().map(move |s| (r.name.as_str(), s)))
        .filter(|(_, s)| !s.monitor)
        .collect();
    ssh_packets(client, cport, sport, specs.iter().map(|(_, s)| s))
        .into_iter()
        .find_map(|pkt| {
            specs
                .iter()
                .find(|(_, s)| s.matches(&pkt))
                .filter(|(_, s)| s.drop)
                .map(|(name, _)| (name.to_string(), pkt))
        })
}

fn flag_names(flags: u32) -> String {
    [
        (TCP_FIN, "FIN"),
        (TCP_SYN, "SYN"),
        (TCP_RST, "RST"),
        (TCP_PSH, "PSH"),
        (TCP_ACK, "ACK"),
        (TCP_URG, "URG"),
        (TCP_ECE, "ECE"),
        (TCP_CWR, "CWR"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

/// Refuse a policy that would lock out the SSH client or drop a protected prefix.
pub fn check(snapshot: &Snapshot, next: &AppliedPolicy, policy: &Policy) -> Result<()> {
    let block = all_entries(snapshot, policy, ListKind::Block);
    let allow = all_entries(snapshot, policy, ListKind::Allow);
    let protected = &policy.lists.protected;
    let mut why = Vec::new();
    if let Some((client, cport, sport)) = ssh_connection() {
        let allowed = allow.iter().any(|p| contains(p, client));
        let is_protected = protected.iter().any(|p| contains(p, client));
        if !allowed {
            if let Some(b) = block.iter().find(|p| contains(p, client)) {
                why.push(format!(
                    "the block list entry {b} covers your SSH client {client}"
                ));
            }
            let dropped = ssh_dropped_by(&next.policy.rules, client, cport, sport);
            if let Some((r, pkt)) = dropped {
                why.push(format!(
                    "rule '{}' drops your SSH connection ({client} port {cport} to port {sport}), e.g. its {}-byte {} packets arriving with TTL {}",
                    r,
                    pkt.len,
                    flag_names(pkt.tcp_flags),
                    pkt.ttl
                ));
            }
            if !is_protected {
                if let Some(l) = next.policy.limits.iter().find(|l| {
                    l.mode == RuleMode::Enforce && (l.class == CLASS_ALL || l.class == CLASS_TCP)
                }) {
                    why.push(format!(
                        "limit '{}' can drop your SSH client {client}; add it to [lists] protected",
                        l.name
                    ));
                }
            }
        }
    }
    for p in protected {
        for b in &block {
            if let Some(a) = overlap(p, b) {
                if !allow.iter().any(|x| contains(x, a)) {
                    why.push(format!(
                        "the block list entry {b} covers the protected prefix {p}"
                    ));
                }
            }
        }
    }
    if why.is_empty() {
        return Ok(());
    }
    why.truncate(10);
    Err(usage(format!(
        "refused to lock you out: {}; nothing was changed (use --force if you mean it)",
        why.join("; ")
    )))
}

/// Refuse block entries that cover the SSH client or a protected prefix.
pub fn check_block_add(snapshot: &Snapshot, adding: &[Prefix]) -> Result<()> {
    let allow: Vec<Prefix> = Family::ALL
        .iter()
        .flat_map(|&f| {
            snapshot
                .union(ListKind::Allow, f)
                .into_iter()
                .map(move |e| e.prefix(f))
        })
        .collect();
    let protected: Vec<Prefix> = Family::ALL
        .iter()
        .flat_map(|&f| {
            snapshot
                .union(ListKind::Protected, f)
                .into_iter()
                .map(move |e| e.prefix(f))
        })
        .collect();
    let mut why = Vec::new();
    if let Some((client, _, _)) = ssh_connection() {
        if !allow.iter().any(|p| contains(p, client)) {
            if let Some(b) = adding.iter().find(|p| contains(p, client)) {
                why.push(format!("{b} covers your SSH client {client}"));
            }
        }
    }
    for p in &protected {
        for b in adding {
            if let Some(a) = overlap(p, b) {
                if !allow.iter().any(|x| contains(x, a)) {
                    why.push(format!("{b} covers the protected prefix {p}"));
                }
            }
        }
    }
    if why.is_empty() {
        return Ok(());
    }
    why.truncate(10);
    Err(usage(format!(
        "refused to lock you out: {}; nothing was changed (use --force if you mean it)",
        why.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CLIENT: &str = "198.51.100.2";

    /// Whether the rules of `policy` (TOML) drop a packet of an SSH connection from CLIENT.
    fn drops_ssh(rules: &str) -> Option<String> {
        let p = super::super::check_text(Path::new("p.toml"), rules).expect("valid");
        ssh_dropped_by(&p.rules, CLIENT.parse().unwrap(), 50_000, 22).map(|(name, _)| name)
    }

    #[test]
    fn a_rule_on_the_ssh_port_is_a_lockout() {
        let r = "[[rule]]\nname = \"ssh\"\nprotocol = \"tcp\"\ndst_ports = 22\n";
        assert_eq!(drops_ssh(r).as_deref(), Some("ssh"));
    }

    #[test]
    fn a_rule_dropping_only_small_packets_is_a_lockout() {
        // Pure ACKs are 40-52 bytes: dropping them stalls the session.
        let r =
            "[[rule]]\nname = \"small\"\nprotocol = \"tcp\"\ndst_ports = 22\nlength = \"0-80\"\n";
        assert_eq!(drops_ssh(r).as_deref(), Some("small"));
    }

    #[test]
    fn a_rule_dropping_pure_acks_is_a_lockout() {
        let r = "[[rule]]\nname = \"acks\"\nprotocol = \"tcp\"\ntcp_flags = \"ACK,!PSH\"\n";
        assert_eq!(drops_ssh(r).as_deref(), Some("acks"));
    }

    #[test]
    fn a_rule_dropping_ttls_below_the_initial_one_is_a_lockout() {
        // A Linux client one hop away arrives with TTL 63.
        let r = "[[rule]]\nname = \"ttl\"\nprotocol = \"tcp\"\nttl = \"0-63\"\n";
        assert_eq!(drops_ssh(r).as_deref(), Some("ttl"));
    }

    #[test]
    fn a_rule_matching_no_packet_of_the_connection_is_no_lockout() {
        for r in [
            "[[rule]]\nname = \"low-ttl\"\nprotocol = \"tcp\"\nttl = \"0-5\"\n",
            "[[rule]]\nname = \"syn\"\nprotocol = \"tcp\"\ntcp_flags = \"SYN,!ACK\"\n",
            "[[rule]]\nname = \"other-port\"\nprotocol = \"tcp\"\ndst_ports = 23\n",
            "[[rule]]\nname = \"udp\"\nprotocol = \"udp\"\n",
            "[[rule]]\nname = \"flags\"\npreset = \"tcp-flags\"\n",
        ] {
            assert_eq!(drops_ssh(r), None, "{r}");
        }
    }

    #[test]
    fn a_pass_rule_before_covers_the_connection() {
        let r = "[[rule]]\nname = \"ssh\"\naction = \"pass\"\nprotocol = \"tcp\"\ndst_ports = 22\n[[rule]]\nname = \"small\"\nprotocol = \"tcp\"\nlength = \"0-80\"\n";
        assert_eq!(drops_ssh(r), None);
    }
}
