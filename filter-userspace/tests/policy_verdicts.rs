//! Verdicts of the real XDP program under policy files, through BPF_PROG_TEST_RUN: every rule
//! match kind, both presets, monitor mode, bans and list precedence. The reference model
//! (built from the same checked policy) must agree on every frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::frames::{ethernet, icmp_echo, ipv4, ipv6, tcp_syn, udp, Ext};
use filter_common::model::ReferenceFilter;
use filter_common::parse::*;
use filter_common::Reason;
use test_support::{require_root, Harness, TempFile, XDP_DROP, XDP_PASS};

struct Fixture {
    h: Harness,
    model: ReferenceFilter,
}

impl Fixture {
    /// The program with `policy` applied (lockout guard off: tests have no SSH session).
    fn new(policy: &str) -> Self {
        require_root();
        let h = Harness::new().expect("load program");
        let file = TempFile::new("policy-", policy.as_bytes()).unwrap();
        floodgate::policy::apply::apply(h.pins(), &file.path, false, true).expect("apply");
        let p = floodgate::policy::load(&file.path).unwrap();
        let model = ReferenceFilter {
            allow: p.lists.allow.iter().map(|x| x.to_ipnet()).collect(),
            block: p.lists.block.iter().map(|x| x.to_ipnet()).collect(),
            block_monitor: p.block_monitor,
            rules: p.rules.iter().flat_map(|r| r.specs()).collect(),
            malformed_policy: p.malformed_policy(),
            ..Default::default()
        };
        Fixture { h, model }
    }

    /// Kernel and model agree on `frame`, and it is `want`.
    fn expect(&self, frame: &[u8], want: Reason) {
        let (action, got) = self.h.verdict(frame).unwrap();
        let model = self.model.verdict(frame);
        assert_eq!(got, model, "kernel vs model, frame {}", hex(frame));
        assert_eq!(got, want, "frame {}", hex(frame));
        let expected = if got.is_drop() { XDP_DROP } else { XDP_PASS };
        assert_eq!(action, expected, "action of {got:?}");
    }
}

impl Fixture {
    /// The kernel's reason alone (limits and bans depend on time: the model has no clock here).
    fn kernel(&self, frame: &[u8]) -> Reason {
        self.h.verdict(frame).unwrap().1
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

fn src6() -> Ipv6Addr {
    "2001:db8::1".parse().unwrap()
}

fn v4(proto: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(ETH_P_IPV4, &[], &ipv4(SRC, DST, proto, &[], 0, l4))
}

fn v6(proto: u8, l4: &[u8]) -> Vec<u8> {
    ethernet(
        ETH_P_IPV6,
        &[],
        &ipv6(src6(), "2001:db8::fe".parse().unwrap(), proto, &[], l4),
    )
}

fn udp4(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    v4(IPPROTO_UDP, &udp(sport, dport, &vec![0u8; payload]))
}

/// A TCP segment with exactly `flags`.
fn tcp4(dport: u16, flags: u8) -> Vec<u8> {
    let mut t = tcp_syn(40000, dport, &[]);
    t[13] = flags;
    v4(IPPROTO_TCP, &t)
}

/// `frame` with the IPv4 TTL set (the parser does not check the header checksum).
fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    frame[14 + 8] = ttl;
    frame
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

#[test]
fn a_rule_matches_its_protocol_and_destination_port() {
    let f = Fixture::new("[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\ndst_ports = 53\n");
    f.expect(&udp4(40000, 53, 10), Reason::DroppedRule);
    f.expect(&udp4(40000, 54, 10), Reason::Passed);
    f.expect(&tcp4(53, SYN), Reason::Passed);
    f.expect(
        &v6(IPPROTO_UDP, &udp(40000, 53, &[0; 10])),
        Reason::DroppedRule,
    );
}

#[test]
fn port_ranges_and_lists_match_at_their_edges() {
    let f = Fixture::new(
        "[[rule]]\nname = \"r\"\nprotocol = \"tcp\"\ndst_ports = [22, \"1000-2000\"]\n",
    );
    for (port, want) in [
        (21, Reason::Passed),
        (22, Reason::DroppedRule),
        (23, Reason::Passed),
        (999, Reason::Passed),
        (1000, Reason::DroppedRule),
        (2000, Reason::DroppedRule),
        (2001, Reason::Passed),
    ] {
        f.expect(&tcp4(port, SYN), want);
    }
}

#[test]
fn source_ports_match() {
    let f = Fixture::new("[[rule]]\nname = \"r\"\nprotocol = \"udp\"\nsrc_ports = \"0-1023\"\n");
    f.expect(&udp4(123, 40000, 10), Reason::DroppedRule);
    f.expect(&udp4(1024, 40000, 10), Reason::Passed);
}

#[test]
fn tcp_flags_match_required_and_refused_bits() {
    let f =
        Fixture::new("[[rule]]\nname = \"syn\"\nprotocol = \"tcp\"\ntcp_flags = \"SYN,!ACK\"\n");
    f.expect(&tcp4(80, SYN), Reason::DroppedRule);
    f.expect(&tcp4(80, SYN | ECE_CWR), Reason::DroppedRule);
    f.expect(&tcp4(80, SYN | ACK), Reason::Passed);
    f.expect(&tcp4(80, ACK), Reason::Passed);
}

const ECE_CWR: u8 = 0xc0;

#[test]
fn length_and_ttl_ranges_match() {
    let f = Fixture::new(
        "[[rule]]\nname = \"big\"\nprotocol = \"udp\"\nlength = \"1000-65535\"\n\n[[rule]]\nname = \"low-ttl\"\nprotocol = \"any\"\nttl = \"0-5\"\n",
    );
    // IP length = 20 + 8 + payload.
    f.expect(&udp4(1, 2, 971), Reason::Passed);
    f.expect(&udp4(1, 2, 972), Reason::DroppedRule);
    f.expect(&with_ttl(udp4(1, 2, 10), 5), Reason::DroppedRule);
    f.expect(&with_ttl(udp4(1, 2, 10), 6), Reason::Passed);
}

#[test]
fn icmp_types_match_per_family() {
    let f = Fixture::new(
        "[[rule]]\nname = \"ping\"\nprotocol = \"icmp\"\nicmp_type = 8\n\n[[rule]]\nname = \"ping6\"\nprotocol = \"icmpv6\"\nicmp_type = 128\n",
    );
    f.expect(
        &v4(IPPROTO_ICMP, &icmp_echo(false, &[0; 8])),
        Reason::DroppedRule,
    );
    f.expect(
        &v6(IPPROTO_ICMPV6, &icmp_echo(true, &[0; 8])),
        Reason::DroppedRule,
    );
    let mut reply = icmp_echo(false, &[0; 8]);
    reply[0] = 0;
    f.expect(&v4(IPPROTO_ICMP, &reply), Reason::Passed);
}

#[test]
fn fragments_match_first_and_later() {
    let f = Fixture::new("[[rule]]\nname = \"frag\"\nprotocol = \"any\"\nfragments = \"later\"\n");
    let later = ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(SRC, DST, IPPROTO_UDP, &[], 100, &[0; 40]),
    );
    f.expect(&later, Reason::DroppedRule);
    f.expect(&udp4(1, 2, 10), Reason::Passed);
    let mut fragment = Ext::new(IPPROTO_FRAGMENT);
    fragment.frag_offset = 10;
    let later6 = ethernet(
        ETH_P_IPV6,
        &[],
        &ipv6(
            src6(),
            "2001:db8::fe".parse().unwrap(),
            IPPROTO_UDP,
            &[fragment],
            &[0; 40],
        ),
    );
    f.expect(&later6, Reason::DroppedRule);
}

#[test]
fn a_pass_rule_ends_judgement_before_later_drops() {
    let f = Fixture::new(
        "[[rule]]\nname = \"ok\"\naction = \"pass\"\nprotocol = \"udp\"\nsrc_ports = 4242\n\n[[rule]]\nname = \"all-udp\"\nprotocol = \"udp\"\n",
    );
    f.expect(&udp4(4242, 9, 10), Reason::PassedRule);
    f.expect(&udp4(4243, 9, 10), Reason::DroppedRule);
}

#[test]
fn the_reflection_preset_drops_amplifier_sources() {
    let f = Fixture::new("[[rule]]\nname = \"refl\"\npreset = \"reflection\"\n");
    for port in [
        17, 19, 111, 137, 161, 389, 520, 1434, 1900, 3283, 3702, 5353, 10001, 11211,
    ] {
        f.expect(&udp4(port, 40000, 10), Reason::DroppedRule);
    }
    // DNS and NTP: replies of normal size pass, amplification-sized ones do not.
    f.expect(&udp4(53, 40000, 100), Reason::Passed);
    f.expect(&udp4(53, 40000, 484), Reason::DroppedRule);
    f.expect(&udp4(123, 40000, 48), Reason::Passed);
    f.expect(&udp4(123, 40000, 440), Reason::DroppedRule);
    // Not UDP, or not from those ports: untouched.
    f.expect(&tcp4(19, SYN), Reason::Passed);
    f.expect(&udp4(40000, 11211, 10), Reason::Passed);
}

#[test]
fn the_tcp_flags_preset_drops_impossible_combinations() {
    let f = Fixture::new("[[rule]]\nname = \"flags\"\npreset = \"tcp-flags\"\n");
    for bad in [
        0,
        FIN | PSH | URG,
        SYN | FIN,
        SYN | RST,
        FIN | RST,
        FIN,
        PSH,
        URG,
    ] {
        f.expect(&tcp4(80, bad), Reason::DroppedRule);
    }
    for good in [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK] {
        f.expect(&tcp4(80, good), Reason::Passed);
    }
}

#[test]
fn a_monitored_rule_counts_and_passes() {
    let f = Fixture::new(
        "[[rule]]\nname = \"try\"\nprotocol = \"udp\"\ndst_ports = 53\nmode = \"monitor\"\n",
    );
    f.expect(&udp4(40000, 53, 10), Reason::Monitored);
    f.expect(&udp4(40000, 54, 10), Reason::Passed);
}

#[test]
fn a_monitored_rule_is_looked_past_to_an_enforcing_one() {
    let f = Fixture::new(
        "[[rule]]\nname = \"try\"\nprotocol = \"udp\"\nmode = \"monitor\"\n\n[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\ndst_ports = 53\n",
    );
    f.expect(&udp4(40000, 53, 10), Reason::DroppedRule);
    f.expect(&udp4(40000, 54, 10), Reason::Monitored);
}

#[test]
fn a_monitored_blocklist_passes_its_hits_as_monitored() {
    let f = Fixture::new("[lists]\nblock = [\"192.0.2.0/24\"]\nmode = \"monitor\"\n");
    f.expect(&udp4(1, 2, 10), Reason::Monitored);
}

#[test]
fn the_blocklist_is_judged_before_rules_and_the_allowlist_before_both() {
    let f = Fixture::new(
        "[lists]\nblock = [\"192.0.2.1\"]\n\n[[rule]]\nname = \"ok\"\naction = \"pass\"\nprotocol = \"udp\"\n",
    );
    f.expect(&udp4(1, 2, 10), Reason::DroppedBlocklist);
    let f = Fixture::new(
        "[lists]\nallow = [\"192.0.2.0/24\"]\n\n[[rule]]\nname = \"dns\"\nprotocol = \"udp\"\n",
    );
    f.expect(&udp4(1, 53, 10), Reason::PassedAllowlisted);
}

#[test]
fn a_limit_under_its_threshold_passes() {
    let f = Fixture::new(
        "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1000000\nburst = 1000\n",
    );
    for _ in 0..20 {
        assert_eq!(f.kernel(&udp4(1, 2, 10)), Reason::Passed);
    }
}

#[test]
fn a_per_source_limit_drops_past_its_burst() {
    // A source gets a bucket once the sketch has seen it send `track_after` packets; then
    // the burst is spent within one test run loop.
    let f = Fixture::new(
        "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nburst = 5\n",
    );
    let frame = udp4(1, 2, 10);
    f.h.run(&frame, 200).unwrap();
    assert_eq!(f.kernel(&frame), Reason::DroppedRateLimit);
    // Another class is not limited.
    assert_eq!(f.kernel(&tcp4(80, SYN)), Reason::Passed);
}

#[test]
fn a_banned_source_is_dropped_at_once() {
    let f = Fixture::new(
        "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nburst = 2\nban_seconds = 60\n",
    );
    let frame = udp4(1, 2, 10);
    f.h.run(&frame, 200).unwrap();
    // Banned now: every class of this source is dropped as banned.
    assert_eq!(f.kernel(&tcp4(80, SYN)), Reason::DroppedBanned);
    assert_eq!(f.kernel(&frame), Reason::DroppedBanned);
    let other = ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(
            Ipv4Addr::new(192, 0, 2, 2),
            DST,
            IPPROTO_UDP,
            &[],
            0,
            &udp(1, 2, &[0; 10]),
        ),
    );
    assert_eq!(f.kernel(&other), Reason::Passed);
}

#[test]
fn protected_prefixes_are_never_limited_or_banned() {
    let f = Fixture::new(
        "[lists]\nprotected = [\"192.0.2.0/24\"]\n\n[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nburst = 2\nban_seconds = 60\n",
    );
    let frame = udp4(1, 2, 10);
    f.h.run(&frame, 200).unwrap();
    assert_eq!(f.kernel(&frame), Reason::Passed);
}

/// Keep this test's thread on CPU 0: global limits run one bucket per CPU.
fn on_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Frames of `frame` that pass when sent one by one `n` times on CPU 0, and the seconds that
/// took.
fn passes(f: &Fixture, frame: &[u8], n: usize) -> (usize, f64) {
    on_cpu0();
    let start = std::time::Instant::now();
    let passed = (0..n).filter(|_| f.kernel(frame) == Reason::Passed).count();
    (passed, start.elapsed().as_secs_f64())
}

/// Packets one CPU's bucket of a global limit of `pps` and `burst` lets through in `secs`
/// when a source may run it `depths` bucket depths ahead (and a packet of slack).
fn per_cpu_allowance(pps: u64, burst: u64, depths: u64, secs: f64) -> usize {
    let cpus = aya::util::online_cpus().expect("online CPUs").len() as u64;
    let burst = (burst / cpus).max(1);
    (depths * burst) as usize + (pps as f64 / cpus as f64 * secs).ceil() as usize + 1
}

#[test]
fn a_known_source_that_floods_gets_only_the_threshold_and_a_bounded_burst() {
    // The source is known once its first packet passed in peacetime; it may then run the
    // bucket one more depth ahead, no further.
    let f = Fixture::new(
        "[[limit]]\nname = \"g\"\nclass = \"udp\"\nper = \"global\"\npps = 10\nburst = 100\nknown_sources_first = true\n",
    );
    let (passed, secs) = passes(&f, &udp4(1, 2, 10), 400);
    let bound = per_cpu_allowance(10, 100, 2, secs);
    assert!(
        passed <= bound,
        "{passed} of 400 passed in {secs:.2} s; at most {bound}"
    );
}

#[test]
fn a_global_limit_without_known_sources_first_refuses_known_sources_too() {
    // Another global limit lets known sources first, so the known table is in use, and the
    // source is known (its first packet passed in peacetime); "g" itself does not.
    let f = Fixture::new(
        "[[limit]]\nname = \"first\"\nclass = \"tcp\"\nper = \"global\"\npps = 1000\nknown_sources_first = true\n\n[[limit]]\nname = \"g\"\nclass = \"udp\"\nper = \"global\"\npps = 10\nburst = 100\nknown_sources_first = false\n",
    );
    on_cpu0();
    assert_eq!(f.kernel(&tcp4(80, SYN)), Reason::Passed);
    let (passed, secs) = passes(&f, &udp4(1, 2, 10), 400);
    // One bucket depth and the refill, not a second depth.
    let bound = per_cpu_allowance(10, 100, 1, secs);
    assert!(
        passed <= bound,
        "{passed} of 400 passed in {secs:.2} s; at most {bound}"
    );
}

/// The program's events (aya-log records), as text.
#[derive(Clone, Default)]
struct Events(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Events {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn a_ban_event_carries_the_packets_the_source_sent() {
    let f = Fixture::new(
        "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nburst = 2\nban_seconds = 60\n",
    );
    let id = floodgate::state::attach::program_status(f.h.pins())
        .unwrap()
        .unwrap()
        .program_id;
    let events = Events::default();
    let mut logger = aya_log::EbpfLogger::init_from_id_with_logger(id, events.clone()).unwrap();
    on_cpu0();
    // Tracked from the first packet; the burst passes 2, the third is refused and banned.
    f.h.run(&udp4(1, 2, 10), 3).unwrap();
    logger.flush();
    let got = events.0.lock().unwrap().clone();
    let ban = got
        .iter()
        .find(|e| e.starts_with("ban 192.0.2.1/32"))
        .unwrap_or_else(|| panic!("no ban event in {got:?}"));
    let counted: u32 = ban
        .split("sketch counted ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {ban:?}"));
    // All three in the current epoch, unless one began between them.
    assert!((1..=3).contains(&counted), "{ban}");
}

impl Fixture {
    /// Apply another policy file to the same program.
    fn reapply(&self, policy: &str) -> anyhow::Result<()> {
        let file = TempFile::new("policy-", policy.as_bytes()).unwrap();
        floodgate::policy::apply::apply(self.h.pins(), &file.path, false, true).map(|_| ())
    }

    /// The live bans' sources.
    fn bans(&self) -> Vec<String> {
        floodgate::state::bans::list(self.h.pins(), |_| None)
            .unwrap()
            .into_iter()
            .map(|b| b.source)
            .collect()
    }
}

fn prefixes(texts: &[&str]) -> Vec<floodgate::lists::entries::Prefix> {
    let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    floodgate::lists::entries::parse_args(&texts).unwrap()
}

const BAN_LIMIT: &str = "[[limit]]\nname = \"udp\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nburst = 2\nban_seconds = 60\n";

#[test]
fn applying_protected_prefixes_lifts_the_bans_inside_them() {
    let f = Fixture::new(BAN_LIMIT);
    floodgate::state::bans::add(f.h.pins(), &prefixes(&["192.0.2.1", "198.51.100.1"]), 60).unwrap();
    f.reapply(&format!(
        "[lists]\nprotected = [\"192.0.2.0/24\"]\n\n{BAN_LIMIT}"
    ))
    .unwrap();
    assert_eq!(f.bans(), ["198.51.100.1/32"]);
}

/// `floodgate bans ARGS` on the fixture's program.
fn bans_cmd(f: &Fixture, args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let root = f.h.pins().root().to_str().unwrap().to_string();
    let argv = ["floodgate", "--pin-dir", &root, "bans"]
        .into_iter()
        .chain(args.iter().copied());
    floodgate::commands::run(floodgate::cli::Cli::try_parse_from(argv)?)
}

fn ban_by_hand(f: &Fixture, sources: &[&str]) {
    let args: Vec<&str> = ["add", "--seconds", "60", "--force"]
        .into_iter()
        .chain(sources.iter().copied())
        .collect();
    bans_cmd(f, &args).unwrap();
}

/// Two limits that ban at /16 and /20.
const BANS_AT_16_AND_20: &str = "[[limit]]\nname = \"a\"\nclass = \"udp\"\nper = \"source\"\npps = 1\nprefix_v4 = 16\nban_seconds = 60\n\n[[limit]]\nname = \"b\"\nclass = \"tcp\"\nper = \"source\"\npps = 1\nprefix_v4 = 20\nban_seconds = 60\n";

#[test]
fn lifted_bans_free_their_prefix_lengths() {
    let f = Fixture::new("");
    ban_by_hand(&f, &["10.0.0.0/24", "10.0.0.0/25", "10.0.0.0/26"]);
    bans_cmd(&f, &["flush"]).unwrap();
    f.reapply(BANS_AT_16_AND_20).unwrap();
}

#[test]
fn too_many_ban_lengths_because_of_live_bans_names_the_bans() {
    let f = Fixture::new("");
    ban_by_hand(&f, &["10.0.0.0/24", "10.0.0.0/25", "10.0.0.0/26"]);
    let err = format!("{:#}", f.reapply(BANS_AT_16_AND_20).unwrap_err());
    assert!(
        err.contains("bans at /24, /25, /26") && err.contains("bans del"),
        "{err}"
    );
}

#[test]
fn a_removed_limits_live_bans_are_still_enforced() {
    let f = Fixture::new(&BAN_LIMIT.replace("ban_seconds", "prefix_v4 = 24\nban_seconds"));
    f.h.run(&udp4(1, 2, 10), 200).unwrap();
    assert_eq!(f.kernel(&tcp4(80, SYN)), Reason::DroppedBanned);
    f.reapply("").unwrap();
    assert_eq!(f.bans(), ["192.0.2.0/24"]);
    assert_eq!(f.kernel(&tcp4(80, SYN)), Reason::DroppedBanned);
}

#[test]
fn a_limit_that_bans_at_prefix_length_0_is_refused() {
    let f = Fixture::new("");
    let err = f
        .reapply(&BAN_LIMIT.replace("ban_seconds", "prefix_v4 = 0\nban_seconds"))
        .unwrap_err();
    assert_eq!(floodgate::error::exit_code(&err), 2, "{err:#}");
    assert!(format!("{err:#}").contains("(/0)"), "{err:#}");
}

#[test]
fn a_ban_of_every_source_is_refused() {
    let f = Fixture::new("");
    for all in ["0.0.0.0/0", "::/0"] {
        let err = bans_cmd(&f, &["add", "--seconds", "60", "--force", all]).unwrap_err();
        assert_eq!(floodgate::error::exit_code(&err), 2, "{err:#}");
        assert!(format!("{err:#}").contains("every source"), "{err:#}");
    }
    assert!(f.bans().is_empty());
}

/// A global limit of 800 bit/s on a class: one packet of 528 bytes spends a CPU's bucket for
/// seconds.
fn slow_global(name: &str, class: &str) -> String {
    format!("[[limit]]\nname = \"{name}\"\nclass = \"{class}\"\nper = \"global\"\nbps = 800\nknown_sources_first = false\n\n")
}

#[test]
fn a_global_limit_keeps_its_bucket_when_limits_are_reordered() {
    let (a, b) = (slow_global("a", "udp"), slow_global("b", "tcp"));
    let f = Fixture::new(&format!("{a}{b}"));
    on_cpu0();
    let big = udp4(1, 2, 500);
    f.h.run(&big, 5).unwrap();
    assert_eq!(f.kernel(&big), Reason::DroppedRateLimit);
    f.reapply(&format!("{b}{a}")).unwrap();
    assert_eq!(f.kernel(&big), Reason::DroppedRateLimit);
}

#[test]
fn a_new_global_limit_starts_with_a_full_bucket() {
    let f = Fixture::new(&slow_global("a", "udp"));
    on_cpu0();
    let big = udp4(1, 2, 500);
    f.h.run(&big, 5).unwrap();
    assert_eq!(f.kernel(&big), Reason::DroppedRateLimit);
    // "c" takes the counter slot "a" left.
    f.reapply(&slow_global("c", "udp")).unwrap();
    assert_eq!(f.kernel(&big), Reason::Passed);
}
