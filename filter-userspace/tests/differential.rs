//! Differential test: random frames through the real XDP program (BPF_PROG_TEST_RUN) and
//! through the reference model in filter-common, with random overlapping allow and block lists,
//! both malformed policies and random L4 rule sets (every match kind, presets, pass and drop,
//! monitor mode, a monitored blocklist) applied as policy files; every verdict and reason must
//! agree.
//!
//! FLOODGATE_DIFF_FRAMES (default 1,000,000) and FLOODGATE_DIFF_SEED (default: from the
//! clock, printed) control the run; a failure prints the seed, the frame as hex and the lists.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use filter_common::frames::{ethernet, icmp_echo, ipv4, ipv6, tcp_syn, udp, Ext};
use filter_common::model::ReferenceFilter;
use filter_common::parse::*;
use filter_common::{ListKind, MalformedPolicy};
use floodgate::lists::entries::Prefix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use test_support::{
    gen, require_root, set_list, set_malformed_policy, Harness, TempFile, XDP_DROP, XDP_PASS,
};

const EPOCHS_PER_THREAD: usize = 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A source address: usually inside or just outside a listed prefix, sometimes anywhere.
fn source(rng: &mut StdRng, listed: &[Prefix], v6: bool) -> (Ipv4Addr, Ipv6Addr) {
    let mut v4 = rng.random::<u32>();
    let mut a6 = rng.random::<u128>();
    let candidates: Vec<&Prefix> = listed
        .iter()
        .filter(|p| matches!(p, Prefix::V6 { .. }) == v6)
        .collect();
    if !candidates.is_empty() && rng.random_bool(0.7) {
        match *candidates[rng.random_range(0..candidates.len())] {
            Prefix::V4 { addr, len } => {
                let host = if len == 32 {
                    0
                } else {
                    rng.random::<u32>() >> len
                };
                v4 = (addr | host).wrapping_add(if rng.random_bool(0.1) {
                    rng.random_range(0..3)
                } else {
                    0
                });
            }
            Prefix::V6 { addr, len } => {
                let host = if len == 128 {
                    0
                } else {
                    rng.random::<u128>() >> len
                };
                a6 = (addr | host).wrapping_add(if rng.random_bool(0.1) {
                    rng.random_range(0..3)
                } else {
                    0
                });
            }
        }
    }
    (Ipv4Addr::from(v4), Ipv6Addr::from(a6))
}

/// Ports rules are written with (and their neighbours): frames hit them often.
const PORTS: [u16; 12] = [
    0, 19, 53, 80, 123, 443, 1023, 1024, 11211, 40000, 65534, 65535,
];

fn port(rng: &mut StdRng) -> u16 {
    match rng.random_range(0..4) {
        0 => rng.random(),
        1 => PORTS[rng.random_range(0..PORTS.len())].wrapping_add(1),
        _ => PORTS[rng.random_range(0..PORTS.len())],
    }
}

fn l4(rng: &mut StdRng, v6: bool) -> (u8, Vec<u8>) {
    let data_len = match rng.random_range(0..10) {
        0 => 0,
        1 => rng.random_range(1000..2900), // jumbo-ish: test runs take up to a page
        2 => rng.random_range(400..600),   // around the reflection preset's DNS size
        _ => rng.random_range(0..64),
    };
    let data: Vec<u8> = (0..data_len).map(|_| rng.random()).collect();
    match rng.random_range(0..5) {
        0 => {
            let mut t = tcp_syn(port(rng), port(rng), &data);
            if rng.random_bool(0.6) {
                t[13] = rng.random();
            }
            (IPPROTO_TCP, t)
        }
        1 => (IPPROTO_UDP, udp(port(rng), port(rng), &data)),
        2 => {
            let mut i = icmp_echo(v6, &data);
            if rng.random_bool(0.5) {
                i[0] = [0, 3, 8, 11, 128, 129, 135][rng.random_range(0..7)];
            }
            (if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP }, i)
        }
        3 => (rng.random(), data),
        _ => (IPPROTO_UDP, udp(port(rng), port(rng), &[])),
    }
}

/// A number or an "a-b" range around `values`, as TOML.
fn toml_range(rng: &mut StdRng, values: &[u32], max: u32) -> String {
    let a = values[rng.random_range(0..values.len())].min(max);
    if rng.random_bool(0.5) {
        a.to_string()
    } else {
        let b = (a + rng.random_range(0..2000)).min(max);
        format!("\"{a}-{b}\"")
    }
}

/// A random policy file of L4 rules (and sometimes a monitored blocklist).
fn random_rules(rng: &mut StdRng) -> String {
    const FLAGS: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let ports: Vec<u32> = PORTS.iter().map(|&p| u32::from(p)).collect();
    let mut out = String::new();
    if rng.random_bool(0.2) {
        out.push_str("[lists]\nmode = \"monitor\"\n\n");
    }
    let n = if rng.random_bool(0.1) {
        rng.random_range(100..250)
    } else {
        rng.random_range(1..30)
    };
    for i in 0..n {
        out.push_str(&format!("[[rule]]\nname = \"r{i}\"\n"));
        if rng.random_bool(0.3) {
            out.push_str("action = \"pass\"\n");
        }
        if rng.random_bool(0.3) {
            out.push_str("mode = \"monitor\"\n");
        }
        if rng.random_bool(0.08) {
            let preset = ["reflection", "tcp-flags"][rng.random_range(0..2)];
            out.push_str(&format!("preset = \"{preset}\"\n\n"));
            continue;
        }
        let proto = ["tcp", "udp", "icmp", "icmpv6", "any"][rng.random_range(0..5)];
        out.push_str(&format!("protocol = \"{proto}\"\n"));
        // A drop rule matching every packet is refused: "any" gets a port at least.
        let mut any_match = proto != "any";
        if matches!(proto, "tcp" | "udp" | "any") {
            for key in ["dst_ports", "src_ports"] {
                if rng.random_bool(0.5) {
                    let list: Vec<String> = (0..rng.random_range(1..4))
                        .map(|_| toml_range(rng, &ports, 65535))
                        .collect();
                    out.push_str(&format!("{key} = [{}]\n", list.join(", ")));
                    any_match = true;
                }
            }
        }
        if proto == "tcp" && rng.random_bool(0.4) {
            let mut parts = Vec::new();
            let mut used = 0u32;
            for _ in 0..rng.random_range(1..4) {
                let f = rng.random_range(0..8);
                if used & (1 << f) == 0 {
                    used |= 1 << f;
                    let neg = if rng.random_bool(0.4) { "!" } else { "" };
                    parts.push(format!("{neg}{}", FLAGS[f]));
                }
            }
            out.push_str(&format!("tcp_flags = \"{}\"\n", parts.join(",")));
        }
        if matches!(proto, "icmp" | "icmpv6") && rng.random_bool(0.5) {
            let t = [0, 3, 8, 11, 128, 129, 135][rng.random_range(0..7)];
            out.push_str(&format!("icmp_type = {t}\n"));
        }
        if rng.random_bool(0.2) {
            out.push_str(&format!(
                "length = {}\n",
                toml_range(rng, &[0, 28, 60, 100, 512, 1200], 65535)
            ));
        }
        if rng.random_bool(0.15) {
            out.push_str(&format!(
                "ttl = {}\n",
                toml_range(rng, &[0, 1, 63, 64, 65, 255], 255)
            ));
        }
        if rng.random_bool(0.1) {
            let f = ["any", "first", "later", "none"][rng.random_range(0..4)];
            out.push_str(&format!("fragments = \"{f}\"\n"));
            any_match = true;
        }
        if !any_match {
            out.push_str("dst_ports = 53\n");
        }
        out.push('\n');
    }
    out
}

fn well_formed(rng: &mut StdRng, listed: &[Prefix]) -> Vec<u8> {
    let tpids = [ETH_P_8021Q, ETH_P_8021AD];
    let vlans: Vec<u16> = (0..rng.random_range(0..=2))
        .map(|_| tpids[rng.random_range(0..2)])
        .collect();
    let v6 = rng.random_bool(0.5);
    let (s4, s6) = source(rng, listed, v6);
    let (proto, payload) = l4(rng, v6);
    if v6 {
        let kinds = [
            IPPROTO_HOPOPTS,
            IPPROTO_ROUTING,
            IPPROTO_DSTOPTS,
            IPPROTO_FRAGMENT,
        ];
        let n = if rng.random_bool(0.6) {
            0
        } else {
            rng.random_range(1..=10)
        };
        let exts: Vec<Ext> = (0..n)
            .map(|_| Ext {
                kind: kinds[rng.random_range(0..4)],
                body_len: rng.random_range(0..40),
                frag_offset: if rng.random_bool(0.7) {
                    0
                } else {
                    rng.random_range(1..8192)
                },
            })
            .collect();
        ethernet(
            ETH_P_IPV6,
            &vlans,
            &ipv6(s6, "2001:db8::fe".parse().unwrap(), proto, &exts, &payload),
        )
    } else {
        let options: Vec<u8> = (0..if rng.random_bool(0.7) {
            0
        } else {
            rng.random_range(1..=40)
        })
            .map(|_| 1)
            .collect();
        let frag = if rng.random_bool(0.8) {
            0
        } else {
            rng.random_range(1..8192)
        };
        ethernet(
            ETH_P_IPV4,
            &vlans,
            &ipv4(
                s4,
                Ipv4Addr::new(192, 0, 2, 254),
                proto,
                &options,
                frag,
                &payload,
            ),
        )
    }
}

/// Damage a frame the way broken stacks and attackers do.
fn mutate(rng: &mut StdRng, f: &mut Vec<u8>) {
    let l3 = {
        let mut off = ETH_HDR_LEN;
        while off + 4 <= f.len()
            && matches!(
                u16::from_be_bytes([f[off - 2], f[off - 1]]),
                ETH_P_8021Q | ETH_P_8021AD
            )
        {
            off += VLAN_HDR_LEN;
        }
        off
    };
    match rng.random_range(0..9) {
        0 => f.truncate(rng.random_range(ETH_HDR_LEN..=f.len())),
        1 if f.len() > l3 => f[l3] = (f[l3] & 0xf0) | rng.random_range(0..16), // IHL
        2 if f.len() > l3 + 4 => {
            f[l3 + 2..l3 + 4].copy_from_slice(&rng.random::<u16>().to_be_bytes())
        } // v4 total length
        3 if f.len() > l3 + 6 => {
            f[l3 + 4..l3 + 6].copy_from_slice(&rng.random::<u16>().to_be_bytes())
        } // v6 payload length
        4 => {
            let i = rng.random_range(12..f.len().min(120));
            f[i] = rng.random();
        }
        5 => {
            // Deeper VLAN stacks than supported.
            for _ in 0..rng.random_range(1..=3) {
                let ethertype = [f[12], f[13]];
                f.splice(12..12, [0x81, 0x00, 0, 7]);
                f[16] = ethertype[0];
                f[17] = ethertype[1];
            }
        }
        6 if f.len() > l3 => f[l3] = (rng.random_range(0..16) << 4) | (f[l3] & 0x0f), // version
        7 => f.extend((0..rng.random_range(1..64)).map(|_| 0u8)), // Ethernet padding
        _ => {
            let cut = rng.random_range(ETH_HDR_LEN..=f.len());
            f.truncate(cut);
            f.extend((0..rng.random_range(0..8)).map(|_| rng.random::<u8>()));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run_thread(seed: u64, frames: usize) -> usize {
    let h = Harness::new().expect("load program");
    let mut rng = StdRng::seed_from_u64(seed);
    let per_epoch = frames.div_ceil(EPOCHS_PER_THREAD);
    let mut checked = 0;
    for epoch in 0..EPOCHS_PER_THREAD {
        let allow = gen::overlapping(rng.random_range(0..30), &mut rng);
        let block = gen::overlapping(rng.random_range(1..300), &mut rng);
        let policy = if rng.random_bool(0.25) {
            MalformedPolicy::Pass
        } else {
            MalformedPolicy::Drop
        };
        for (kind, entries) in [(ListKind::Allow, &allow), (ListKind::Block, &block)] {
            set_list(h.pins(), kind, entries).unwrap();
        }
        let mut model = ReferenceFilter {
            allow: allow.iter().map(|p| p.to_ipnet()).collect(),
            block: block.iter().map(|p| p.to_ipnet()).collect(),
            malformed_policy: policy,
            ..Default::default()
        };
        let mut rules_text = String::new();
        if rng.random_bool(0.7) {
            rules_text = random_rules(&mut rng);
            let file = TempFile::new("diff-policy-", rules_text.as_bytes()).unwrap();
            // A rule set that would not compile into the tables is refused whole: try another.
            match floodgate::policy::load(&file.path) {
                Ok(p) => {
                    floodgate::policy::apply::apply(h.pins(), &file.path, false, true)
                        .unwrap_or_else(|e| panic!("apply: {e:#}\n{rules_text}"));
                    model.rules = p.rules.iter().flat_map(|r| r.specs()).collect();
                    model.block_monitor = p.block_monitor;
                }
                Err(e) => panic!("generated policy refused: {e:#}\n{rules_text}"),
            }
        } else {
            let file = TempFile::new("diff-policy-", b"").unwrap();
            floodgate::policy::apply::apply(h.pins(), &file.path, false, true).unwrap();
        }
        // After the policy: a policy sets the malformed policy too.
        set_malformed_policy(h.pins(), policy).unwrap();
        // Bans (by hand, as `floodgate bans add` places them) of listed neighbourhoods, at
        // two lengths per family (the program looks up at most four).
        floodgate::state::bans::flush(h.pins()).unwrap();
        if rng.random_bool(0.4) {
            let bans: Vec<Prefix> = block
                .iter()
                .chain(&allow)
                .take(rng.random_range(1..6))
                .map(|p| match *p {
                    Prefix::V4 { addr, .. } => {
                        Prefix::v4(addr, if rng.random_bool(0.5) { 32 } else { 24 })
                    }
                    Prefix::V6 { addr, .. } => {
                        Prefix::v6(addr, if rng.random_bool(0.5) { 128 } else { 64 })
                    }
                })
                .collect();
            let session = floodgate::state::Session::open_for_change(h.pins()).unwrap();
            let lens: Vec<_> = bans.iter().map(|p| (p.family(), p.prefix_len())).collect();
            floodgate::policy::apply::ensure_ban_prefixes(session, &lens).unwrap();
            floodgate::state::bans::add(h.pins(), &bans, 600).unwrap();
            model.bans = bans.iter().map(|p| p.to_ipnet()).collect();
        }
        let listed: Vec<Prefix> = allow.iter().chain(&block).copied().collect();
        for i in 0..per_epoch {
            let mut frame = well_formed(&mut rng, &listed);
            if rng.random_bool(0.4) {
                mutate(&mut rng, &mut frame);
            }
            let want = model.verdict(&frame);
            let (action, got) = h.verdict(&frame).unwrap_or_else(|e| {
                panic!(
                    "seed {seed} epoch {epoch} frame {i}: {e:#}; frame {}",
                    hex(&frame)
                )
            });
            let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
            if got != want || action != want_action {
                panic!(
                    "MISMATCH seed {seed} epoch {epoch} frame {i}: kernel {got:?} (action {action}) vs model {want:?}\n\
                     reproduce: FLOODGATE_DIFF_SEED={seed} FLOODGATE_DIFF_THREADS=1 FLOODGATE_DIFF_FRAMES={frames} cargo test --release --test differential\n\
                     frame {}\npolicy {policy:?}\nallow {:?}\nblock {:?}\nrules:\n{rules_text}",
                    hex(&frame),
                    allow.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    block.iter().map(|p| p.to_string()).collect::<Vec<_>>()
                );
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn kernel_matches_reference_model() {
    require_root();
    let frames = env_u64("FLOODGATE_DIFF_FRAMES").unwrap_or(1_000_000) as usize;
    let seed = env_u64("FLOODGATE_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("differential: {frames} frames, FLOODGATE_DIFF_SEED={seed}");
    let threads = env_u64("FLOODGATE_DIFF_THREADS")
        .map(|t| t as usize)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 4)
        });
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let n = frames / threads + usize::from(t < frames % threads);
            std::thread::spawn(move || run_thread(seed.wrapping_add(t as u64), n))
        })
        .collect();
    let checked: usize = handles
        .into_iter()
        .map(|h| h.join().expect("differential thread failed"))
        .sum();
    eprintln!(
        "differential: {checked} frames agreed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(checked >= frames, "checked {checked} of {frames}");
}
