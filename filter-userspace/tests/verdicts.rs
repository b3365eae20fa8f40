//! Verdicts of the real XDP program through BPF_PROG_TEST_RUN, for every encapsulation and
//! protocol the parser knows, every truncation point, malformed headers and list precedence.
//! The reference model must agree on every frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::frames::{ethernet, icmp_echo, ipv4, ipv6, tcp_syn, udp, Ext};
use filter_common::model::ReferenceFilter;
use filter_common::parse::*;
use filter_common::{ListKind, MalformedPolicy, Reason};
use floodgate::lists::entries::{parse_entry, Prefix};
use test_support::{require_root, set_list, set_malformed_policy, Harness, XDP_DROP, XDP_PASS};

struct Fixture {
    h: Harness,
    model: ReferenceFilter,
}

impl Fixture {
    fn new(allow: &[&str], block: &[&str]) -> Self {
        require_root();
        let h = Harness::new().expect("load program");
        let mut f = Fixture {
            h,
            model: ReferenceFilter::default(),
        };
        f.set(ListKind::Allow, allow);
        f.set(ListKind::Block, block);
        f
    }

    fn set(&mut self, kind: ListKind, entries: &[&str]) {
        let prefixes: Vec<Prefix> = entries.iter().map(|e| parse_entry(e).unwrap()).collect();
        let nets = prefixes.iter().map(|p| p.to_ipnet()).collect();
        match kind {
            ListKind::Allow => self.model.allow = nets,
            ListKind::Block => self.model.block = nets,
            ListKind::Protected => unreachable!("protected prefixes come from a policy file"),
        }
        set_list(self.h.pins(), kind, &prefixes).unwrap();
    }

    fn set_policy(&mut self, policy: MalformedPolicy) {
        self.model.malformed_policy = policy;
        set_malformed_policy(self.h.pins(), policy).unwrap();
    }

    /// Kernel and model agree on `frame`; returns the reason.
    fn verdict(&self, frame: &[u8]) -> Reason {
        let (action, reason) = self.h.verdict(frame).unwrap();
        let expected_action = if reason.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(
            action, expected_action,
            "action/reason mismatch for {reason:?}"
        );
        let model = self.model.verdict(frame);
        assert_eq!(
            reason,
            model,
            "kernel {reason:?} vs model {model:?} for frame {}",
            hex(frame)
        );
        reason
    }

    fn expect(&self, frame: &[u8], want: Reason) {
        let got = self.verdict(frame);
        assert_eq!(got, want, "frame {}", hex(frame));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const V4_BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const V4_CLEAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const V4_DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
fn v6_blocked() -> Ipv6Addr {
    "2001:db8:bad::7".parse().unwrap()
}
fn v6_clean() -> Ipv6Addr {
    "2001:db8:600d::1".parse().unwrap()
}
fn v6_dst() -> Ipv6Addr {
    "2001:db8::fe".parse().unwrap()
}

/// Every supported shape of packet, from `src`, with a human label.
fn shapes(v4src: Ipv4Addr, v6src: Ipv6Addr) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let payloads = |v6: bool| -> Vec<(&'static str, u8, Vec<u8>)> {
        vec![
            ("tcp", IPPROTO_TCP, tcp_syn(1234, 80, b"")),
            ("tcp+data", IPPROTO_TCP, tcp_syn(1234, 80, b"hello")),
            ("udp", IPPROTO_UDP, udp(1234, 53, b"query")),
            ("udp-empty", IPPROTO_UDP, udp(1234, 53, b"")),
            if v6 {
                ("icmpv6", IPPROTO_ICMPV6, icmp_echo(true, b"ping"))
            } else {
                ("icmp", IPPROTO_ICMP, icmp_echo(false, b"ping"))
            },
            ("gre", 47, vec![0u8; 4]),
            ("no-payload", 47, vec![]),
        ]
    };
    for vlans in [
        &[][..],
        &[ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q][..],
    ] {
        for (name, proto, l4) in payloads(false) {
            for options in [&[][..], &[1, 1, 1, 0][..], &[7; 40][..]] {
                let ip = ipv4(v4src, V4_DST, proto, options, 0, &l4);
                out.push((
                    format!("v4 {name} opts{} vlans{}", options.len(), vlans.len()),
                    ethernet(ETH_P_IPV4, vlans, &ip),
                ));
            }
            let frag = ipv4(v4src, V4_DST, proto, &[], 185, &l4[..l4.len().min(3)]);
            out.push((
                format!("v4 {name} later-fragment vlans{}", vlans.len()),
                ethernet(ETH_P_IPV4, vlans, &frag),
            ));
        }
        for (name, proto, l4) in payloads(true) {
            let chains: Vec<(&str, Vec<Ext>)> = vec![
                ("plain", vec![]),
                ("hbh", vec![Ext::new(IPPROTO_HOPOPTS)]),
                ("rt", vec![Ext::new(IPPROTO_ROUTING)]),
                ("frag0", vec![Ext::new(IPPROTO_FRAGMENT)]),
                (
                    "dst",
                    vec![Ext {
                        kind: IPPROTO_DSTOPTS,
                        body_len: 30,
                        frag_offset: 0,
                    }],
                ),
                (
                    "hbh-dst-rt-frag-dst",
                    vec![
                        Ext::new(IPPROTO_HOPOPTS),
                        Ext::new(IPPROTO_DSTOPTS),
                        Ext {
                            kind: IPPROTO_ROUTING,
                            body_len: 22,
                            frag_offset: 0,
                        },
                        Ext::new(IPPROTO_FRAGMENT),
                        Ext::new(IPPROTO_DSTOPTS),
                    ],
                ),
                (
                    "eight",
                    vec![Ext::new(IPPROTO_DSTOPTS); MAX_IPV6_EXT_HEADERS],
                ),
            ];
            for (cname, chain) in chains {
                let ip = ipv6(v6src, v6_dst(), proto, &chain, &l4);
                out.push((
                    format!("v6 {name} {cname} vlans{}", vlans.len()),
                    ethernet(ETH_P_IPV6, vlans, &ip),
                ));
            }
            let later = vec![Ext {
                kind: IPPROTO_FRAGMENT,
                body_len: 6,
                frag_offset: 100,
            }];
            let ip = ipv6(v6src, v6_dst(), proto, &later, &l4[..l4.len().min(3)]);
            out.push((
                format!("v6 {name} later-fragment vlans{}", vlans.len()),
                ethernet(ETH_P_IPV6, vlans, &ip),
            ));
        }
    }
    out
}

#[test]
fn every_shape_passes_clean_and_drops_blocked() {
    let f = Fixture::new(&[], &["198.51.100.0/24", "2001:db8:bad::/48"]);
    for (label, frame) in shapes(V4_CLEAN, v6_clean()) {
        assert_eq!(f.verdict(&frame), Reason::Passed, "{label}");
    }
    for (label, frame) in shapes(V4_BLOCKED, v6_blocked()) {
        assert_eq!(f.verdict(&frame), Reason::DroppedBlocklist, "{label}");
    }
}

#[test]
fn every_truncation_is_malformed() {
    let f = Fixture::new(&[], &["198.51.100.0/24"]);
    let mut checked = 0;
    for (label, frame) in shapes(V4_BLOCKED, v6_clean()) {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for cut in ETH_HDR_LEN..frame.len() {
            let got = f.verdict(&frame[..cut]);
            assert_eq!(got, Reason::DroppedMalformed, "{label} cut at {cut}");
            checked += 1;
        }
    }
    assert!(checked > 5000, "only {checked} truncations checked");
}

#[test]
fn short_frames_in_the_model() {
    let model = ReferenceFilter::default();
    for len in 0..ETH_HDR_LEN {
        assert_eq!(model.verdict(&vec![0u8; len]), Reason::DroppedMalformed);
    }
}

#[test]
fn malformed_headers() {
    let f = Fixture::new(&[], &[]);
    let good_v4 = || ipv4(V4_CLEAN, V4_DST, IPPROTO_UDP, &[], 0, &udp(1, 2, b"xy"));
    let v4 = |ip: Vec<u8>| ethernet(ETH_P_IPV4, &[], &ip);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut ip = good_v4();
    ip[0] = 0x44;
    cases.push(("ihl 4", v4(ip)));
    let mut ip = good_v4();
    ip[0] = 0x40;
    cases.push(("ihl 0", v4(ip)));
    let mut ip = good_v4();
    ip[0] = 0x4f;
    cases.push(("ihl beyond packet", v4(ip)));
    let mut ip = good_v4();
    ip[0] = 0x65;
    cases.push(("version 6 in IPv4 ethertype", v4(ip)));
    let mut ip = good_v4();
    ip[2..4].copy_from_slice(&200u16.to_be_bytes());
    cases.push(("total length beyond frame", v4(ip)));
    let mut ip = good_v4();
    ip[2..4].copy_from_slice(&16u16.to_be_bytes());
    cases.push(("total length below header", v4(ip)));
    let mut ip = good_v4();
    ip[2..4].copy_from_slice(&24u16.to_be_bytes());
    cases.push(("total length cuts udp header", v4(ip)));
    let mut seg = tcp_syn(1, 2, b"");
    seg[12] = 4 << 4;
    cases.push((
        "tcp data offset 4",
        v4(ipv4(V4_CLEAN, V4_DST, IPPROTO_TCP, &[], 0, &seg)),
    ));
    let mut seg = tcp_syn(1, 2, b"");
    seg[12] = 15 << 4;
    cases.push((
        "tcp options beyond packet",
        v4(ipv4(V4_CLEAN, V4_DST, IPPROTO_TCP, &[], 0, &seg)),
    ));
    cases.push((
        "three vlan tags",
        ethernet(
            ETH_P_IPV4,
            &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
            &good_v4(),
        ),
    ));
    let seg = udp(1, 2, b"x");
    let nine = vec![Ext::new(IPPROTO_DSTOPTS); MAX_IPV6_EXT_HEADERS + 1];
    cases.push((
        "nine extension headers",
        ethernet(
            ETH_P_IPV6,
            &[],
            &ipv6(v6_clean(), v6_dst(), IPPROTO_UDP, &nine, &seg),
        ),
    ));
    let mut ip = ipv6(v6_clean(), v6_dst(), IPPROTO_UDP, &[], &seg);
    ip[4..6].copy_from_slice(&100u16.to_be_bytes());
    cases.push((
        "ipv6 payload length beyond frame",
        ethernet(ETH_P_IPV6, &[], &ip),
    ));
    let mut ip = ipv6(
        v6_clean(),
        v6_dst(),
        IPPROTO_UDP,
        &[Ext::new(IPPROTO_HOPOPTS)],
        &seg,
    );
    ip[41] = 20;
    cases.push((
        "extension length beyond packet",
        ethernet(ETH_P_IPV6, &[], &ip),
    ));
    let mut ip = ipv6(v6_clean(), v6_dst(), IPPROTO_UDP, &[], &seg);
    ip[0] = 0x40;
    cases.push((
        "version 4 in IPv6 ethertype",
        ethernet(ETH_P_IPV6, &[], &ip),
    ));
    for (label, frame) in &cases {
        assert_eq!(f.verdict(frame), Reason::DroppedMalformed, "{label}");
    }
    // The policy can let them through, counted separately.
    let mut f = f;
    f.set_policy(MalformedPolicy::Pass);
    for (label, frame) in &cases {
        assert_eq!(f.verdict(frame), Reason::PassedMalformed, "{label}");
    }
}

#[test]
fn well_formed_edge_cases() {
    let f = Fixture::new(&[], &["2001:db8:bad::/48"]);
    // Ethernet padding after a short IPv4 packet is normal on the wire.
    let mut frame = ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(V4_CLEAN, V4_DST, IPPROTO_UDP, &[], 0, &udp(1, 2, b"")),
    );
    frame.resize(60, 0);
    f.expect(&frame, Reason::Passed);
    // Zero IPv6 payload length: jumbogram framing, bounded by the frame.
    let mut ip = ipv6(
        v6_blocked(),
        v6_dst(),
        IPPROTO_UDP,
        &[Ext::new(IPPROTO_HOPOPTS)],
        &udp(1, 2, b"jumbo"),
    );
    ip[4..6].copy_from_slice(&[0, 0]);
    f.expect(&ethernet(ETH_P_IPV6, &[], &ip), Reason::DroppedBlocklist);
    // Unknown next header after the walk: no transport check, verdict by source.
    f.expect(
        &ethernet(
            ETH_P_IPV6,
            &[],
            &ipv6(v6_blocked(), v6_dst(), 50, &[], &[0; 8]),
        ),
        Reason::DroppedBlocklist,
    );
    // Non-IP frames pass, tagged or not.
    for vlans in [
        &[][..],
        &[ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q][..],
    ] {
        f.expect(&ethernet(0x0806, vlans, &[0u8; 28]), Reason::PassedNonIp);
        f.expect(&ethernet(0x88cc, vlans, &[]), Reason::PassedNonIp);
    }
}

fn v4_frame(src: &str) -> Vec<u8> {
    ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(
            src.parse().unwrap(),
            V4_DST,
            IPPROTO_UDP,
            &[],
            0,
            &udp(1, 2, b"p"),
        ),
    )
}

fn v6_frame(src: &str) -> Vec<u8> {
    ethernet(
        ETH_P_IPV6,
        &[],
        &ipv6(
            src.parse().unwrap(),
            v6_dst(),
            IPPROTO_UDP,
            &[],
            &udp(1, 2, b"p"),
        ),
    )
}

#[test]
fn allowlist_wins_over_blocklist() {
    let f = Fixture::new(
        &[
            "10.1.2.0/24",
            "10.9.9.9",
            "2001:db8:1::/48",
            "2a00:1::5",
            "2600::/12",
        ],
        &[
            "10.0.0.0/8",
            "2001:db8::/32",
            "2a00::/16",
            "2600:1::/32",
            "10.9.9.8/30",
        ],
    );
    use Reason::*;
    for (src, want) in [
        ("10.1.2.3", PassedAllowlisted),
        ("10.1.3.3", DroppedBlocklist),
        ("10.9.9.9", PassedAllowlisted),
        ("10.9.9.10", DroppedBlocklist),
        ("11.0.0.1", Passed),
        ("9.255.255.255", Passed),
    ] {
        f.expect(&v4_frame(src), want);
    }
    for (src, want) in [
        ("2001:db8:1::1", PassedAllowlisted),
        ("2001:db8:1:ffff::1", PassedAllowlisted),
        ("2001:db8:2::1", DroppedBlocklist),
        ("2001:db9::1", Passed),
        ("2a00:1::5", PassedAllowlisted),
        ("2a00:1::6", DroppedBlocklist),
        ("2600:1::1", PassedAllowlisted),
        ("2610::1", Passed),
    ] {
        f.expect(&v6_frame(src), want);
    }
}

#[test]
fn prefix_lengths_and_edges() {
    let mut f = Fixture::new(&[], &[]);
    let v4 = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.1.0/24",
        "192.168.2.128/25",
        "192.168.3.64/26",
        "192.168.4.7",
        "203.0.113.8/29",
    ];
    for entry in v4 {
        f.set(ListKind::Block, &[entry]);
        let p = parse_entry(entry).unwrap();
        let Prefix::V4 { addr, len } = p else {
            unreachable!()
        };
        let last = addr
            | if len == 32 {
                0
            } else if len == 0 {
                u32::MAX
            } else {
                u32::MAX >> len
            };
        for a in [addr, last] {
            f.expect(
                &v4_frame(&Ipv4Addr::from(a).to_string()),
                Reason::DroppedBlocklist,
            );
        }
        for a in [addr.wrapping_sub(1), last.wrapping_add(1)] {
            if len > 0 {
                f.expect(&v4_frame(&Ipv4Addr::from(a).to_string()), Reason::Passed);
            }
        }
    }
    let v6 = [
        "2000::/3",
        "2001::/16",
        "2001:db8::/29",
        "2001:db8:8000::/33",
        "2001:db8::/48",
        "2001:db8:0:1::/64",
        "2001:db8::1:0/112",
        "2001:db8::5",
    ];
    for entry in v6 {
        f.set(ListKind::Block, &[entry]);
        let Prefix::V6 { addr, len } = parse_entry(entry).unwrap() else {
            unreachable!()
        };
        let last = addr | if len == 128 { 0 } else { u128::MAX >> len };
        for a in [addr, last] {
            f.expect(
                &v6_frame(&Ipv6Addr::from(a).to_string()),
                Reason::DroppedBlocklist,
            );
        }
        for a in [addr.wrapping_sub(1), last.wrapping_add(1)] {
            f.expect(&v6_frame(&Ipv6Addr::from(a).to_string()), Reason::Passed);
        }
    }
}

#[test]
fn list_changes_take_effect_at_once() {
    let mut f = Fixture::new(&[], &["198.51.100.0/24", "2001:db8:bad::/48"]);
    let b4 = v4_frame("198.51.100.9");
    let b6 = v6_frame("2001:db8:bad::9");
    f.expect(&b4, Reason::DroppedBlocklist);
    f.expect(&b6, Reason::DroppedBlocklist);
    f.set(ListKind::Allow, &["198.51.100.9", "2001:db8:bad::9"]);
    f.expect(&b4, Reason::PassedAllowlisted);
    f.expect(&b6, Reason::PassedAllowlisted);
    f.set(ListKind::Allow, &[]);
    f.set(ListKind::Block, &["198.51.100.9/32"]);
    f.expect(&b4, Reason::DroppedBlocklist);
    f.expect(&b6, Reason::Passed);
    f.expect(&v4_frame("198.51.100.10"), Reason::Passed);
    f.set(ListKind::Block, &[]);
    f.expect(&b4, Reason::Passed);
    // Nothing stale is left in the pool after a flush.
    let session = floodgate::state::Session::open(f.h.pins()).unwrap();
    assert_eq!(session.current().unwrap().pool_in_use(), 0);
}

#[test]
fn mapped_access_refuses_another_layout() {
    require_root();
    // A map pinned by another floodgate version, say with 8-byte values where 64 are
    // expected: mapping it as nodes would read past each value, so it must be refused.
    let map = floodgate::state::raw::create_mmapable_array::<u64>("fg_test", 16).unwrap();
    let err = floodgate::state::raw::Mapped::<filter_common::trie::Node>::new(&map, false)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("another version"), "{err}");
}

#[test]
fn deep_ipv6_prefixes_in_one_partition_stay_exact() {
    // Prefixes of 15 lengths inside one /32, the densest shape of real RIR-derived lists,
    // and /128s under them: every source walks at most one node per 8 bits.
    // One prefix of each length /33../48, each ending in a 1 bit so they are all distinct.
    let entries: Vec<String> = (33..=48u8)
        .map(|len| {
            let a: u128 = (0x2a05_35c1u128 << 96) | (1u128 << (128 - u32::from(len)));
            Prefix::v6(a, len).to_string()
        })
        .chain([
            "2a05:35c1:a380:30::7".to_string(),
            "2a05:35c1::/32".to_string(),
        ])
        .collect();
    let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
    let mut f = Fixture::new(&["2a05:35c1:a380:30::7"], &refs[..refs.len() - 1]);
    // Every prefix's first and last address, its neighbours and a source inside it.
    let mut probes: Vec<String> = (33..=48u32)
        .flat_map(|len| {
            let a: u128 = (0x2a05_35c1u128 << 96) | (1u128 << (128 - len));
            let last = a | ((1u128 << (128 - len)) - 1);
            [a, a - 1, last, last + 1, a | 0x7]
        })
        .map(|a| Ipv6Addr::from(a).to_string())
        .collect();
    probes.extend(
        [
            "2a05:35c1:a380:30::7",
            "2a05:35c1:a380:30::8",
            "2a05:35c1::1",
            "2a05:35c2::1",
        ]
        .map(String::from),
    );
    for probe in &probes {
        f.verdict(&v6_frame(probe));
    }
    // The /32 on top makes everything inside it blocked but the allowlisted host.
    f.set(ListKind::Block, &refs);
    f.expect(&v6_frame("2a05:35c1:ffff::1"), Reason::DroppedBlocklist);
    f.expect(&v6_frame("2a05:35c1:a380:30::7"), Reason::PassedAllowlisted);
}
