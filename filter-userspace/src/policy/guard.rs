//! The lockout guard: a policy (or a `block add`) that would drop the operator's own SSH
//! session, or a protected prefix, is refused unless `--force`.
//!
//! Checked against the state as it would be: the SSH client (from `SSH_CONNECTION`) must not
//! be blocklisted, dropped by an enforce-mode rule on any packet its established connection
//! sends, or subject to an enforce-mode limit of its traffic (all, tcp) or to one of any class
//! that bans (a ban drops all of a source's traffic), unless it is protected or allowlisted;
//! no protected prefix may be
//! blocklisted (where not allowlisted). Rules match no source address, so they are checked
//! against the SSH connection only; protected prefixes are never limited or banned by the
//! program itself.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::limits::{CLASS_ALL, CLASS_TCP};
use filter_common::packet::{Packet, TCP_ACK, TCP_FIN, TCP_PSH};
use filter_common::parse::IPPROTO_TCP;
use filter_common::trie::Family;
use filter_common::ListKind;

use super::{Policy, RuleMode};
use crate::error::usage;
use crate::lists::entries::{self, Prefix};
use crate::state::snapshot::{AppliedPolicy, Origin};
use crate::state::Snapshot;

/// The SSH client's address and port, and the server's port.
pub type SshConnection = (IpAddr, u16, u16);

/// The SSH connection this command runs in, from `SSH_CONNECTION`: client address and port,
/// server port. A value that is set but cannot be read is said (the guard cannot protect a
/// client it cannot name).
pub fn ssh_connection() -> Option<SshConnection> {
    ssh_connection_from(std::env::var("SSH_CONNECTION").ok().as_deref())
}

/// [`ssh_connection`] for the value `v` of `SSH_CONNECTION`.
fn ssh_connection_from(v: Option<&str>) -> Option<SshConnection> {
    let v = v?;
    if v.trim().is_empty() {
        return None;
    }
    let parsed = parse_ssh_connection(v);
    if parsed.is_none() {
        tracing::warn!(
            "SSH_CONNECTION is '{}', not 'CLIENT PORT SERVER PORT': the lockout guard cannot tell which client to keep reachable",
            entries::shown(v)
        );
    }
    parsed
}

/// `CLIENT CPORT SERVER SPORT`. The client address loses a `%scope` suffix (a link-local
/// client) and an IPv4-mapped IPv6 client is taken as the IPv4 address it is.
pub fn parse_ssh_connection(v: &str) -> Option<SshConnection> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 4 {
        return None;
    }
    let addr = parts[0].split('%').next()?;
    let client: IpAddr = addr.parse().ok()?;
    Some((
        client.to_canonical(),
        parts[1].parse().ok()?,
        parts[3].parse().ok()?,
    ))
}

/// A packet of an established SSH connection, as the rules see it.
struct SshPacket {
    what: &'static str,
    flags: u32,
    /// Bytes after the IP header.
    l4_len: u32,
}

/// The packets an established SSH connection sends, whatever its traffic: pure ACKs (with
/// and without timestamps), small and full-size data, the close.
const SSH_PACKETS: [SshPacket; 5] = [
    SshPacket {
        what: "pure ACK",
        flags: TCP_ACK,
        l4_len: 20,
    },
    SshPacket {
        what: "pure ACK with timestamps",
        flags: TCP_ACK,
        l4_len: 32,
    },
    SshPacket {
        what: "small ACK|PSH",
        flags: TCP_ACK | TCP_PSH,
        l4_len: 32 + 36,
    },
    SshPacket {
        what: "FIN|ACK",
        flags: TCP_FIN | TCP_ACK,
        l4_len: 32,
    },
    SshPacket {
        what: "full-size ACK|PSH",
        flags: TCP_ACK | TCP_PSH,
        l4_len: 0,
    },
];

/// TTLs (hop limits) a client's packets arrive with: each usual initial value (32, 64, 128,
/// 255) less up to 32 hops, so a rule on any TTL range a real client reaches is caught.
fn ssh_ttls() -> impl Iterator<Item = u8> {
    (1..=64u8).chain(96..=128).chain(223..=255)
}

/// Every packet of [`SSH_PACKETS`] at every TTL of [`ssh_ttls`] from `client`, with what it
/// is.
fn ssh_packets(client: IpAddr, cport: u16, sport: u16) -> Vec<(String, Packet)> {
    let (base, header) = match client {
        IpAddr::V4(a) => (Packet::v4(u32::from(a)), 20),
        IpAddr::V6(a) => {
            let a = u128::from(a);
            (Packet::v6((a >> 64) as u64, a as u64), 40)
        }
    };
    let mut out = Vec::new();
    for shape in &SSH_PACKETS {
        for ttl in ssh_ttls() {
            let len = if shape.l4_len == 0 {
                1500
            } else {
                header + shape.l4_len
            };
            out.push((
                format!("{}, {len} bytes, TTL {ttl}", shape.what),
                Packet {
                    proto: IPPROTO_TCP,
                    sport: u32::from(cport),
                    dport: u32::from(sport),
                    tcp_flags: shape.flags,
                    ttl,
                    len,
                    ..base
                },
            ));
        }
    }
    out
}

fn contains(p: &Prefix, a: IpAddr) -> bool {
    p.to_ipnet().contains(&a)
}

/// How block entry `b` meets protected prefix `p`, for messages.
fn meets(b: &Prefix, p: &Prefix) -> &'static str {
    if b.to_ipnet().contains(&p.to_ipnet()) {
        "covers"
    } else {
        "lies inside"
    }
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
    check_for(ssh_connection(), snapshot, next, policy)
}

/// [`check`] for the SSH connection `ssh` (none: only protected prefixes are checked).
pub fn check_for(
    ssh: Option<SshConnection>,
    snapshot: &Snapshot,
    next: &AppliedPolicy,
    policy: &Policy,
) -> Result<()> {
    // A monitored block list counts what it would drop and drops nothing: it locks no one out.
    let block = if policy.block_monitor {
        Vec::new()
    } else {
        all_entries(snapshot, policy, ListKind::Block)
    };
    let allow = all_entries(snapshot, policy, ListKind::Allow);
    let protected = &policy.lists.protected;
    let mut why = Vec::new();
    if let Some((client, cport, sport)) = ssh {
        let allowed = allow.iter().any(|p| contains(p, client));
        let is_protected = protected.iter().any(|p| contains(p, client));
        if !allowed {
            if let Some(b) = block.iter().find(|p| contains(p, client)) {
                why.push(format!(
                    "the block list entry {b} covers your SSH client {client}"
                ));
            }
            // Per packet, the first enforce-mode rule that matches decides it.
            let mut dropping: Vec<&str> = Vec::new();
            for (what, pkt) in ssh_packets(client, cport, sport) {
                let decisive = next
                    .policy
                    .rules
                    .iter()
                    .flat_map(|r| r.specs().map(move |s| (r, s)))
                    .find(|(_, s)| !s.monitor && s.matches(&pkt));
                if let Some((r, s)) = decisive {
                    if s.drop && !dropping.contains(&r.name.as_str()) {
                        dropping.push(&r.name);
                        why.push(format!(
                            "rule '{}' drops your SSH connection ({client} port {cport} to port {sport}) [its packets: {what}]",
                            r.name
                        ));
                    }
                }
            }
            if !is_protected {
                // A limit on the connection's traffic drops some of it; a ban, whatever
                // traffic placed it, drops all of it.
                if let Some(l) = next.policy.limits.iter().find(|l| {
                    l.mode == RuleMode::Enforce
                        && (l.class == CLASS_ALL || l.class == CLASS_TCP || l.ban_seconds.is_some())
                }) {
                    let how = if l.ban_seconds.is_some() {
                        "can ban"
                    } else {
                        "can drop"
                    };
                    why.push(format!(
                        "limit '{}' {how} your SSH client {client}; add it to [lists] protected",
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
                        "the block list entry {b} {} the protected prefix {p}",
                        meets(b, p)
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
                    why.push(format!("{b} {} the protected prefix {p}", meets(b, p)));
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
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    use super::*;

    const V4_CLIENT: &str = "10.77.0.1 50022 10.77.0.254 22";
    const V6_CLIENT: &str = "2001:db8::1 50022 2001:db8::fe 22";

    fn policy(text: &str) -> Policy {
        super::super::check_text(Path::new("p.toml"), text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The guard's verdict on `text` for a client connected as `ssh` (`SSH_CONNECTION`).
    fn guard(ssh: &str, text: &str) -> Result<()> {
        let p = policy(text);
        let next = AppliedPolicy {
            policy: p.clone(),
            ..Default::default()
        };
        check_for(parse_ssh_connection(ssh), &Snapshot::default(), &next, &p)
    }

    fn refused(ssh: &str, text: &str, needle: &str) {
        let e = guard(ssh, text).expect_err("refused");
        let e = format!("{e:#}");
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn a_ban_limit_of_another_class_can_lock_out_the_client() {
        refused(
            V4_CLIENT,
            "[[limit]]\nname = \"udp-ban\"\nclass = \"udp\"\nper = \"source\"\npps = 10\nban_seconds = 60\n",
            "limit 'udp-ban' can ban your SSH client 10.77.0.1",
        );
    }

    #[test]
    fn a_limit_of_another_class_without_a_ban_leaves_the_client_alone() {
        guard(
            V4_CLIENT,
            "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 10\n",
        )
        .unwrap();
    }

    #[test]
    fn a_monitored_block_list_covering_the_client_is_accepted() {
        guard(
            V4_CLIENT,
            "[lists]\nmode = \"monitor\"\nblock = [\"10.77.0.0/16\"]\n",
        )
        .expect("a monitored list drops nothing");
        refused(
            V4_CLIENT,
            "[lists]\nblock = [\"10.77.0.0/16\"]\n",
            "the block list entry 10.77.0.0/16 covers your SSH client",
        );
    }

    #[test]
    fn a_monitor_mode_ban_limit_leaves_the_client_alone() {
        guard(
            V4_CLIENT,
            "[[limit]]\nname = \"udp-ban\"\nclass = \"udp\"\nper = \"source\"\npps = 10\nban_seconds = 60\nmode = \"monitor\"\n",
        )
        .unwrap();
    }

    #[test]
    fn a_rule_dropping_pure_acks_is_refused() {
        refused(
            V4_CLIENT,
            "[[rule]]\nname = \"no-bare-acks\"\nprotocol = \"tcp\"\ntcp_flags = \"ACK,!PSH,!FIN\"\n",
            "rule 'no-bare-acks' drops your SSH connection (10.77.0.1 port 50022 to port 22) [its packets: pure ACK, 40 bytes",
        );
    }

    #[test]
    fn a_rule_dropping_a_ttl_range_is_refused() {
        refused(
            V4_CLIENT,
            "[[rule]]\nname = \"low-ttl\"\nprotocol = \"tcp\"\nttl = \"0-40\"\n",
            "rule 'low-ttl' drops your SSH connection (10.77.0.1 port 50022 to port 22) [its packets: pure ACK, 40 bytes, TTL 1]",
        );
    }

    #[test]
    fn a_rule_dropping_clients_a_few_hops_away_is_refused() {
        refused(
            "10.77.0.1 50022 10.77.0.2 22",
            "[[rule]]\nname = \"mid-ttl\"\nprotocol = \"tcp\"\nttl = \"33-63\"\n",
            "rule 'mid-ttl' drops your SSH connection",
        );
    }

    #[test]
    fn a_rule_dropping_full_size_packets_is_refused() {
        refused(
            V4_CLIENT,
            "[[rule]]\nname = \"big\"\nprotocol = \"tcp\"\nlength = \"1400-1500\"\n",
            "rule 'big' drops your SSH connection (10.77.0.1 port 50022 to port 22) [its packets: full-size ACK|PSH, 1500 bytes",
        );
    }

    #[test]
    fn a_rule_dropping_ipv6_pure_acks_is_refused_for_an_ipv6_client() {
        // An IPv6 pure ACK with timestamps is 40 + 32 bytes.
        refused(
            V6_CLIENT,
            "[[rule]]\nname = \"len72\"\nprotocol = \"tcp\"\nlength = 72\n",
            "rule 'len72' drops your SSH connection (2001:db8::1 port 50022 to port 22) [its packets: pure ACK with timestamps, 72 bytes",
        );
    }

    #[test]
    fn a_rule_on_packets_the_connection_never_sends_is_accepted() {
        guard(
            V4_CLIENT,
            "[[rule]]\nname = \"syn-to-22\"\nprotocol = \"tcp\"\ndst_ports = 22\ntcp_flags = \"SYN,!ACK\"\n",
        )
        .unwrap();
    }

    #[test]
    fn an_ipv4_mapped_client_is_taken_as_its_ipv4_address() {
        assert_eq!(
            parse_ssh_connection("::ffff:10.77.0.1 50022 ::ffff:10.77.0.254 22"),
            Some((IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 50022, 22))
        );
    }

    #[test]
    fn an_ipv4_mapped_client_is_caught_by_an_ipv4_block_entry() {
        refused(
            "::ffff:10.77.0.1 50022 ::ffff:10.77.0.254 22",
            "[lists]\nblock = [\"10.77.0.0/16\"]\n",
            "the block list entry 10.77.0.0/16 covers your SSH client 10.77.0.1",
        );
    }

    #[test]
    fn a_scoped_link_local_client_is_read_without_its_scope() {
        assert_eq!(
            parse_ssh_connection("fe80::1%eth0 50022 fe80::2%eth0 22"),
            Some((
                IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
                50022,
                22
            ))
        );
    }

    /// What `f` logs at warn level or above.
    fn warnings(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_unreadable_ssh_connection_is_warned_about() {
        let mut got = Some(ssh_connection_from(None));
        let log = warnings(|| got = Some(ssh_connection_from(Some("somewhere 22"))));
        assert_eq!(got, Some(None));
        assert!(
            log.contains("SSH_CONNECTION is 'somewhere 22'") && log.contains("lockout guard"),
            "{log}"
        );
    }

    #[test]
    fn an_unset_ssh_connection_is_not_warned_about() {
        let log = warnings(|| {
            assert_eq!(ssh_connection_from(None), None);
            assert_eq!(ssh_connection_from(Some("")), None);
        });
        assert_eq!(log, "");
    }
}
