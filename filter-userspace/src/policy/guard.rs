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
use filter_common::packet::{Packet, TCP_ACK, TCP_PSH};
use filter_common::parse::IPPROTO_TCP;
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
            let mut pkt = match client {
                IpAddr::V4(a) => Packet::v4(u32::from(a)),
                IpAddr::V6(a) => {
                    let a = u128::from(a);
                    Packet::v6((a >> 64) as u64, a as u64)
                }
            };
            pkt.proto = IPPROTO_TCP;
            pkt.sport = u32::from(cport);
            pkt.dport = u32::from(sport);
            pkt.tcp_flags = TCP_ACK | TCP_PSH;
            pkt.ttl = 64;
            pkt.len = 100;
            // The first enforce-mode rule that matches decides the connection's packets.
            let decisive = next
                .policy
                .rules
                .iter()
                .flat_map(|r| r.specs().map(move |s| (r, s)))
                .find(|(_, s)| !s.monitor && s.matches(&pkt));
            if let Some((r, s)) = decisive {
                if s.drop {
                    why.push(format!(
                        "rule '{}' drops your SSH connection ({client} port {cport} to port {sport})",
                        r.name
                    ));
                }
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
