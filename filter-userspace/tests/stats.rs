//! `stats --json` end to end: a policy of one rule and one limit on a veth between throwaway
//! namespaces (`i8s...`, with a pin directory of their own), known UDP datagrams sent across,
//! and the per-rule and per-limit counters that `stats --json` reports held against what was
//! sent (exactly for the rule, within the limit's burst and refill for the limit).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use filter_common::Reason;
use serde_json::Value;
use test_support::flood::{Lab, TempDir, VICTIM};
use test_support::{in_netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// Sends to the rule's port; sends past the limit.
const RULE_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const LIMIT_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 30);
const RULE_PORT: u16 = 9999;
const OTHER_PORT: u16 = 7000;
const LIMIT_PPS: u64 = 10;
const LIMIT_BURST: u64 = 10;
const PAYLOAD: usize = 58;
/// IPv4 without options, UDP, payload: what a rule's or limit's bytes add per datagram (the
/// IP packet's length).
const IP_LEN: u64 = 20 + 8 + PAYLOAD as u64;
/// With the Ethernet header: what an interface's reason counter adds (the frame's length).
const FRAME_LEN: u64 = 14 + IP_LEN;

const POLICY: &str = r#"
[[rule]]
name = "no-9999"
action = "drop"
protocol = "udp"
dst_ports = [9999]
[[limit]]
name = "udp-per-source"
class = "udp"
per = "source"
pps = 10
burst = 10
"#;

/// A filter attached to the victim's veth with [`POLICY`] applied.
fn lab() -> (Lab, TempDir) {
    require_root();
    let lab = Lab::named(BIN, 1, "i8s").expect("lab");
    lab.add_sources(&[RULE_SOURCE, LIMIT_SOURCE])
        .expect("sources");
    let dir = TempDir::new("i8s-").expect("temp dir");
    lab.ok(&["attach", &lab.net.a_if]);
    let policy = dir.write("policy.toml", POLICY).expect("policy");
    lab.ok(&["apply", policy.to_str().expect("utf-8")]);
    (lab, dir)
}

/// Send `count` datagrams of [`PAYLOAD`] bytes from `src` to the victim's `dport`, back to
/// back; how long the sending took.
fn send(lab: &Lab, src: Ipv4Addr, dport: u16, count: u64) -> Duration {
    in_netns(lab.net.b.path(), move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0)).expect("bind");
        let started = Instant::now();
        for _ in 0..count {
            s.send_to(&[0x5a; PAYLOAD], SocketAddr::new(IpAddr::V4(VICTIM), dport))
                .expect("send");
        }
        started.elapsed()
    })
    .expect("sender")
}

fn stats(lab: &Lab) -> Value {
    serde_json::from_str(&lab.ok(&["stats", "--json"])).expect("stats --json")
}

/// The element of `list` (`rules` or `limits`) named `name`.
fn named<'a>(v: &'a Value, list: &str, name: &str) -> &'a Value {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}: {v}"))
}

/// Packets and bytes of a `{"packets", "bytes"}` object.
fn totals(v: &Value) -> (u64, u64) {
    (
        v["packets"].as_u64().expect("packets"),
        v["bytes"].as_u64().expect("bytes"),
    )
}

#[test]
fn a_rules_matched_counter_in_stats_json_equals_what_it_dropped() {
    let (lab, _dir) = lab();
    let before = stats(&lab);
    assert_eq!(
        totals(&named(&before, "rules", "no-9999")["matched"]),
        (0, 0)
    );
    const SENT: u64 = 40;
    send(&lab, RULE_SOURCE, RULE_PORT, SENT);
    let after = stats(&lab);
    let rule = named(&after, "rules", "no-9999");
    assert_eq!(rule["action"], "drop");
    assert_eq!(rule["mode"], "enforce");
    assert_eq!(totals(&rule["matched"]), (SENT, SENT * IP_LEN));
    // The interface counted the same packets, as frames.
    let iface = |v: &Value| {
        totals(
            &v["interfaces"]
                .as_array()
                .expect("interfaces")
                .iter()
                .find(|i| i["interface"] == lab.net.a_if.as_str())
                .expect("the victim's interface")["reasons"]["dropped-rule"],
        )
    };
    let (p0, b0) = iface(&before);
    let (p1, b1) = iface(&after);
    assert_eq!((p1 - p0, b1 - b0), (SENT, SENT * FRAME_LEN));
    // Rules come first: the limit saw none of it.
    assert_eq!(
        totals(&named(&after, "limits", "udp-per-source")["refused"]),
        (0, 0)
    );
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["generation"], lab.status()["generation"]);
}

#[test]
fn a_limits_refused_counter_in_stats_json_counts_what_passed_its_burst() {
    let (lab, _dir) = lab();
    let counters_before = lab.counters();
    const SENT: u64 = 200;
    let took = send(&lab, LIMIT_SOURCE, OTHER_PORT, SENT);
    let after = stats(&lab);
    let limit = named(&after, "limits", "udp-per-source");
    assert_eq!(limit["class"], "udp");
    assert_eq!(limit["mode"], "enforce");
    let (refused, refused_bytes) = totals(&limit["refused"]);
    assert_eq!(refused_bytes, refused * IP_LEN);
    // At least the burst passes; beyond it, what the rate refilled while sending and the few
    // packets a source sends before it gets a bucket (at most half the burst).
    let refill = (took.as_secs_f64() * LIMIT_PPS as f64).ceil() as u64;
    let most_passed = LIMIT_BURST + LIMIT_BURST / 2 + refill + 1;
    assert!(
        refused <= SENT - LIMIT_BURST && refused >= SENT - most_passed,
        "{refused} of {SENT} refused in {took:?} (burst {LIMIT_BURST}, {LIMIT_PPS} pps)"
    );
    // The same packets as the interface's counters: refused ones dropped, the rest passed.
    let after_counters = lab.counters();
    let delta = |r: Reason| after_counters[&r] - counters_before[&r];
    assert_eq!(delta(Reason::DroppedRateLimit), refused);
    assert_eq!(delta(Reason::Passed) + refused, SENT);
    assert_eq!(lab.limit_refusals("udp-per-source").unwrap(), refused);
    assert_eq!(
        totals(&named(&after, "rules", "no-9999")["matched"]),
        (0, 0)
    );
}
