//! Flood mitigation end to end: real floods across a veth pair between throwaway namespaces,
//! against the pinned filter the `floodgate` binary set up and left behind (and the `floodgate
//! run` daemon). Every number asserted is measured: what the sender sent, what the receiver's
//! socket got, and the filter's own counters.
//!
//! Floods that load every CPU (the random-source flood) take [`FLOOD`] exclusively; the paced
//! floods share it, so their rates are measured on CPUs no other test saturates.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::RwLock;
use std::time::Duration;

use filter_common::Reason;
use test_support::flood::{
    processes_naming, send_udp, Flow, Lab, RandomFlood, Receiver, TempDir, VICTIM,
};
use test_support::require_root;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// Floods that saturate every CPU hold this for writing, paced floods for reading.
static FLOOD: RwLock<()> = RwLock::new(());

fn paced() -> std::sync::RwLockReadGuard<'static, ()> {
    FLOOD.read().unwrap_or_else(|e| e.into_inner())
}

fn saturating() -> std::sync::RwLockWriteGuard<'static, ()> {
    FLOOD.write().unwrap_or_else(|e| e.into_inner())
}

fn lab(queues: u32) -> Lab {
    require_root();
    Lab::new(BIN, queues).expect("lab")
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// Attach to the victim's veth and apply `policy` (no [interfaces] section needed).
fn attach_and_apply(lab: &Lab, dir: &TempDir, policy: &str) {
    lab.ok(&["attach", &lab.net.a_if]);
    let path = dir.write("policy.toml", policy).unwrap();
    lab.ok(&["apply", path.to_str().unwrap()]);
}

fn delta(
    before: &std::collections::HashMap<Reason, u64>,
    after: &std::collections::HashMap<Reason, u64>,
    r: Reason,
) -> u64 {
    after[&r] - before[&r]
}

/// Echo replies `src` got from the victim out of `count` requests.
fn ping(lab: &Lab, src: Ipv4Addr, count: u32) -> u32 {
    let out = lab
        .net
        .b
        .exec(&[
            "sh",
            "-c",
            &format!("ping -n -q -c {count} -i 0.05 -W 0.3 -I {src} {VICTIM} || true"),
        ])
        .unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("received"))
        .unwrap_or_else(|| panic!("no ping summary: {out}"));
    line.split(", ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `track_after` of a per-source limit with this burst (policy/limits.rs): packets a source
/// sends before it gets a bucket of its own, the last of which is charged to the bucket.
fn untracked(burst: u64) -> u64 {
    (burst / 2).clamp(1, 1000) - 1
}

// 1. A per-source limit lets a source at ten times its rate through at its rate.
#[test]
fn a_source_at_ten_times_its_limit_gets_its_limit_through() {
    let _flood = paced();
    let lab = lab(1);
    let dir = TempDir::new("fgpolicy-").unwrap();
    const PPS: u64 = 1000;
    const BURST: u64 = 100;
    attach_and_apply(
        &lab,
        &dir,
        &format!(
            "[[limit]]\nname = \"udp-per-source\"\nclass = \"udp\"\nper = \"source\"\npps = {PPS}\nburst = {BURST}\n"
        ),
    );
    let src = ip(10);
    lab.add_sources(&[src]).unwrap();
    let rx = Receiver::start(&lab.net.a).unwrap();
    let before = lab.counters();
    let sent = send_udp(
        &lab.net.b,
        &[Flow { src, pps: 10 * PPS }],
        rx.port,
        Duration::from_secs(3),
    )
    .unwrap();
    let got = rx.finish().unwrap();
    let after = lab.counters();
    let sent_n = sent.per_source[&src];
    let ring = sent.refused[&src];
    let passed = delta(&before, &after, Reason::Passed);
    let limited = delta(&before, &after, Reason::DroppedRateLimit);
    // Every packet that reached the filter is accounted for, once.
    assert_eq!(
        passed + limited,
        sent.delivered(src),
        "sent {sent_n}, refused by the veth ring {ring}"
    );
    assert_eq!(
        got.from(src),
        passed,
        "the socket got what the filter passed"
    );
    assert_eq!(lab.limit_refusals("udp-per-source").unwrap(), limited);
    // The packets sent before the source had a bucket, the bucket's burst, then the rate from
    // the moment the bucket was made to the last packet.
    let before_bucket = untracked(BURST) as f64 / (10 * PPS) as f64;
    let expected =
        (untracked(BURST) + BURST) as f64 + PPS as f64 * (sent.span.as_secs_f64() - before_bucket);
    let error = (passed as f64 - expected) / expected;
    eprintln!(
        "limiter at 10x: sent {sent_n} in {:.3} s, passed {passed}, expected {expected:.0} ({:+.2}%), refused by the veth ring {ring}",
        sent.span.as_secs_f64(),
        error * 100.0
    );
    // 1%: the coarse clock the program reads ticks every 4 ms (HZ=250), so the bucket's view
    // of the flood's start and end is off by up to a tick each (8 packets at 1000 pps, 0.25%);
    // a sender stalled for longer than the burst lasts (100 ms) would lose tokens; packets on
    // several CPUs share the bucket through compare-and-swap, and one that loses every race
    // passes (one veth queue: one CPU at a time here). Observed within 0.15%.
    assert!(
        error.abs() <= 0.01,
        "passed {passed}, expected {expected:.0} ({:+.2}%)",
        error * 100.0
    );
}

// 2. A ban drops everything from the source until it lapses, with no controller running.
#[test]
fn a_ban_drops_everything_from_the_source_and_lapses_without_the_controller() {
    let _flood = paced();
    let lab = lab(1);
    let dir = TempDir::new("fgpolicy-").unwrap();
    const PPS: u64 = 100;
    const BURST: u64 = 10;
    const BAN_S: u64 = 2;
    attach_and_apply(
        &lab,
        &dir,
        &format!(
            "[[limit]]\nname = \"udp-ban\"\nclass = \"udp\"\nper = \"source\"\npps = {PPS}\nburst = {BURST}\nban_seconds = {BAN_S}\n"
        ),
    );
    let bad = ip(20);
    lab.add_sources(&[bad]).unwrap();
    let rx = Receiver::start(&lab.net.a).unwrap();
    let before = lab.counters();
    // Ten times the limit for half a second: the first packet over the limit places the ban.
    let flood = send_udp(
        &lab.net.b,
        &[Flow {
            src: bad,
            pps: 10 * PPS,
        }],
        rx.port,
        Duration::from_millis(500),
    )
    .unwrap();
    let during = lab.counters();
    // Another class from the banned source: dropped as banned too.
    assert_eq!(ping(&lab, bad, 3), 0, "a banned source got echo replies");
    let bans: serde_json::Value =
        serde_json::from_str(&lab.ok(&["bans", "list", "--json"])).unwrap();
    let bans = bans.as_array().unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["source"], "198.18.0.20/32");
    assert_eq!(bans[0]["limit"], "udp-ban");
    assert!(bans[0]["seconds_left"].as_u64().unwrap() <= BAN_S);
    // From here on nothing of ours runs but the pinned program: every floodgate command has
    // exited. Probes at half the limit until well past the ban.
    let pins = lab.dir.pins.root().to_path_buf();
    assert_eq!(processes_naming(&pins), Vec::<u32>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (probes, alive) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(processes_naming(&pins));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let probes = send_udp(
            &lab.net.b,
            &[Flow {
                src: bad,
                pps: PPS / 2,
            }],
            rx.port,
            Duration::from_secs_f64(BAN_S as f64 + 0.5),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (probes.unwrap(), watcher.join().unwrap())
    });
    assert!(
        alive.is_empty(),
        "floodgate processes ran during the ban: {alive:?}"
    );
    let got = rx.finish().unwrap();
    let after = lab.counters();

    // The flood: the packets before the bucket, its burst and what refilled while it was
    // spent, then the first refusal banned the source.
    let flood_n = flood.delivered(bad);
    let passed_flood = delta(&before, &during, Reason::Passed);
    let min = BURST + untracked(BURST);
    assert!(passed_flood >= min, "passed {passed_flood} of {flood_n}");
    let times = &got.times[&IpAddr::V4(bad)];
    // The refill is measured, not assumed: a sender preempted by the other tests' floods
    // spends the burst more slowly (one more for the coarse clock's tick).
    let spending =
        (times[passed_flood as usize - 1] - times[untracked(BURST) as usize]).as_secs_f64();
    let refill = (spending * PPS as f64).ceil() as u64 + 1;
    assert!(
        passed_flood <= min + refill,
        "passed {passed_flood} of {flood_n}: more than the burst and {refill} refilled in {spending:.3} s"
    );
    assert_eq!(delta(&before, &during, Reason::DroppedRateLimit), 1);
    assert_eq!(
        delta(&before, &during, Reason::DroppedBanned),
        flood_n - passed_flood - 1
    );
    assert_eq!(lab.limit_refusals("udp-ban").unwrap(), 1);

    // The lapse: the first probe through came ban_seconds after the last packet before the
    // ban (which the next packet, 1 ms later, placed).
    let last_before = times[passed_flood as usize - 1];
    let first_after = times[passed_flood as usize];
    let lapse = (first_after - last_before).as_secs_f64();
    let probes_n = probes.delivered(bad);
    let probes_passed = got.from(bad) - passed_flood;
    eprintln!(
        "ban: lapsed after {lapse:.3} s (ban_seconds {BAN_S}); {probes_passed} of {probes_n} probes passed"
    );
    // Probes 20 ms apart, a 4 ms clock tick: about 25 ms late at most, plus what a sender
    // preempted by the other tests loses. Early by at most one tick of the coarse clock the
    // ban is placed and checked with (it lags real time by up to a tick: 4 ms at HZ=250, 10
    // ms at HZ=100), plus the receiver's timestamping jitter (CI once saw 1.995 s).
    let ban_s = BAN_S as f64;
    assert!(
        (ban_s - 0.012..=ban_s + 0.2).contains(&lapse),
        "the ban lapsed after {lapse:.3} s, not {BAN_S} s"
    );
    // After the lapse the source is served again, below its limit: every probe passes.
    let banned_probes = delta(&during, &after, Reason::DroppedBanned) - 3;
    assert_eq!(banned_probes + probes_passed, probes_n);
    // Those sent before the lapse were banned, those after passed.
    let started = probes.started.unwrap();
    let expected_banned = ((first_after - started).as_secs_f64() * (PPS / 2) as f64).ceil() as u64;
    assert!(
        banned_probes.abs_diff(expected_banned) <= 1,
        "{banned_probes} probes banned, expected {expected_banned}"
    );
    assert_eq!(delta(&during, &after, Reason::DroppedRateLimit), 0);
    let bans: serde_json::Value =
        serde_json::from_str(&lab.ok(&["bans", "list", "--json"])).unwrap();
    assert_eq!(bans, serde_json::json!([]));
}

// 3. Other sources flooding over their limits do not cost a legitimate source its service.
#[test]
fn a_legitimate_source_keeps_service_while_other_sources_flood() {
    let _flood = paced();
    let lab = lab(1);
    let dir = TempDir::new("fgpolicy-").unwrap();
    const PPS: u64 = 200;
    const BURST: u64 = 20;
    attach_and_apply(
        &lab,
        &dir,
        &format!(
            "[[limit]]\nname = \"udp-per-source\"\nclass = \"udp\"\nper = \"source\"\npps = {PPS}\nburst = {BURST}\n"
        ),
    );
    let legit = ip(50);
    let attackers: Vec<Ipv4Addr> = (101..=108).map(ip).collect();
    lab.add_sources(&[legit]).unwrap();
    lab.add_sources(&attackers).unwrap();
    let mut flows: Vec<Flow> = attackers
        .iter()
        .map(|&src| Flow { src, pps: 10 * PPS })
        .collect();
    flows.push(Flow {
        src: legit,
        pps: PPS / 2,
    });
    let rx = Receiver::start(&lab.net.a).unwrap();
    let before = lab.counters();
    let sent = send_udp(&lab.net.b, &flows, rx.port, Duration::from_secs(3)).unwrap();
    let got = rx.finish().unwrap();
    let after = lab.counters();
    let ring: u64 = sent.refused.values().sum();
    let legit_sent = sent.per_source[&legit];
    let legit_got = got.from(legit);
    let share = legit_got as f64 / legit_sent as f64;
    // As in the 10x test: before the bucket, its burst, then the rate.
    let before_bucket = untracked(BURST) as f64 / (10 * PPS) as f64;
    let expected =
        (untracked(BURST) + BURST) as f64 + PPS as f64 * (sent.span.as_secs_f64() - before_bucket);
    let per_attacker: Vec<u64> = attackers.iter().map(|&a| got.from(a)).collect();
    eprintln!(
        "legit under a per-source flood: {legit_got} of {legit_sent} ({:.2}%); attackers ({} pps each) passed {per_attacker:?}, expected {expected:.0} each; refused by the veth ring {ring}",
        share * 100.0,
        10 * PPS
    );
    assert!(share >= 0.99, "legit got {legit_got} of {legit_sent}");
    for (a, n) in attackers.iter().zip(&per_attacker) {
        let error = (*n as f64 - expected) / expected;
        // As in the 10x test, with 8 flows sharing one sender thread.
        assert!(
            error.abs() <= 0.02,
            "{a} passed {n}, expected {expected:.0}"
        );
    }
    let attack_delivered: u64 = attackers.iter().map(|&a| sent.delivered(a)).sum();
    let attack_got: u64 = per_attacker.iter().sum();
    assert_eq!(
        delta(&before, &after, Reason::DroppedRateLimit),
        attack_delivered - attack_got,
        "every refused packet was an attacker's over its limit"
    );
    assert_eq!(
        legit_got,
        sent.delivered(legit),
        "no legit packet was refused"
    );
}

// 4. A global threshold holds under a random-source flood; a client seen in peacetime keeps
// being served, one first seen during the flood only gets a share of what is left.
#[test]
fn a_global_threshold_holds_under_a_random_source_flood_and_known_clients_pass() {
    let _flood = saturating();
    // One queue per CPU: the generator on each CPU floods its own queue, so every CPU's share
    // of the threshold is under attack.
    let cpus = aya::util::online_cpus().unwrap().len() as u32;
    let lab = lab(cpus);
    let dir = TempDir::new("fgpolicy-").unwrap();
    const PPS: u64 = 4000;
    const BURST: u64 = 400;
    attach_and_apply(
        &lab,
        &dir,
        &format!(
            "[[limit]]\nname = \"udp-global\"\nclass = \"udp\"\nper = \"global\"\npps = {PPS}\nburst = {BURST}\nknown_sources_first = true\n"
        ),
    );
    let known = ip(30);
    let newcomer = ip(31);
    lab.add_sources(&[known, newcomer]).unwrap();
    let generator = RandomFlood::new().unwrap();
    let rx = Receiver::start(&lab.net.a).unwrap();
    // Peacetime: the known client talks below every limit and so enters the known table.
    let peace = send_udp(
        &lab.net.b,
        &[Flow {
            src: known,
            pps: 200,
        }],
        rx.port,
        Duration::from_millis(500),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before = lab.counters();
    let refused_before = lab.limit_refusals("udp-global").unwrap();
    let frame = lab.frame_to_victim(ip(99), 9);
    const FLOOD_S: f64 = 2.0;
    let (threads, clients) = std::thread::scope(|s| {
        let clients = s.spawn(|| {
            // Start once the flood is on.
            std::thread::sleep(Duration::from_millis(200));
            send_udp(
                &lab.net.b,
                &[
                    Flow {
                        src: known,
                        pps: 200,
                    },
                    Flow {
                        src: newcomer,
                        pps: 200,
                    },
                ],
                rx.port,
                Duration::from_secs_f64(FLOOD_S - 0.5),
            )
        });
        let threads = generator.run(
            &lab,
            &frame,
            Duration::from_secs_f64(FLOOD_S),
            1024,
            50_000_000,
        );
        (threads.unwrap(), clients.join().unwrap().unwrap())
    });
    let got = rx.finish().unwrap();
    let after = lab.counters();
    let refused = lab.limit_refusals("udp-global").unwrap() - refused_before;
    let known_sent = clients.per_source[&known];
    let known_ring = clients.refused[&known];
    let known_got = got.from(known) - peace.per_source[&known];
    let new_sent = clients.per_source[&newcomer];
    let new_got = got.from(newcomer);
    let passed = delta(&before, &after, Reason::Passed);
    let limited = delta(&before, &after, Reason::DroppedRateLimit);
    let flood_frames: u64 = threads.iter().map(|t| t.frames).sum();
    let span = threads
        .iter()
        .map(|t| t.elapsed)
        .max()
        .unwrap()
        .as_secs_f64();
    let threshold = PPS as f64 * span + BURST as f64;
    eprintln!(
        "global threshold {PPS} pps under a random-source flood: {flood_frames} frames from {} CPUs in {span:.2} s ({:.0} kpps handed to the veth), {} reached the filter; passed {passed} (threshold {threshold:.0} over the flood), refused {limited}; known client {known_got} of {known_sent} ({known_ring} refused by the veth ring before the filter), newcomer {new_got} of {new_sent} ({} refused by the ring)",
        threads.len(),
        flood_frames as f64 / span / 1e3,
        passed + limited,
        clients.refused[&newcomer]
    );
    assert_eq!(refused, limited);
    // Its packets that reached the filter (the veth ring, the rig's NIC, may refuse some
    // under the flood: the sender sees ENOBUFS for those).
    let known_delivered = clients.delivered(known);
    assert!(
        known_got as f64 >= 0.99 * known_delivered as f64,
        "the known client got {known_got} of {known_delivered}"
    );
    // The flood itself is far over the threshold, and the threshold held.
    assert!((passed + limited) as f64 > 10.0 * threshold);
    assert!(
        passed as f64 <= 1.02 * threshold,
        "passed {passed}, threshold {threshold:.0}"
    );
    assert!(
        passed as f64 >= 0.5 * threshold,
        "passed {passed}: the threshold let far less through than it allows ({threshold:.0})"
    );
    // The control: a client as well-behaved but first seen during the flood has no place in
    // the known table and competes with the flood for what is left. (It still gets more than
    // a flood packet's share here: its packets are judged in its own sender's softirq, on a
    // CPU whose generator was just preempted, so its CPU's bucket has refilled a little;
    // observed 29-65% across runs.)
    assert!(
        (new_got as f64) < 0.9 * clients.delivered(newcomer) as f64,
        "the newcomer got {new_got} of {new_sent}: the known table made no difference"
    );
}

// 5. The daemon keeps its file in force: re-applied when it changes, and on SIGHUP; an
// invalid file changes nothing.

/// A daemon's policy: the lab's interface, `block` blocklisted, one per-source limit of `pps`.
/// The `pps` line is line 11, its value at column 7.
fn daemon_policy(lab: &Lab, block: &[Ipv4Addr], pps: &str) -> String {
    let block: Vec<String> = block.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[interfaces]\nnames = [\"{}\"]\n\n[lists]\nblock = [{}]\n\n[[limit]]\nname = \"udp-per-source\"\nclass = \"udp\"\nper = \"source\"\npps = {pps}\n",
        lab.net.a_if,
        block.join(", ")
    )
}

const START: Duration = Duration::from_secs(15);
const RELOAD: Duration = Duration::from_secs(10);

fn limit_pps(status: &serde_json::Value) -> u64 {
    status["policy"]["limits"][0]["pps"].as_u64().unwrap()
}

fn blocked_v4(status: &serde_json::Value) -> u64 {
    status["lists"]["block"]["ipv4"].as_u64().unwrap()
}

#[test]
fn the_daemon_applies_its_file_when_it_changes() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let (blocked, other) = (ip(40), ip(41));
    lab.add_sources(&[blocked, other]).unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[blocked], "1000"))
        .unwrap();
    // Nothing is loaded yet: the daemon loads the filter and attaches it, as at boot.
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let status = lab.status();
    assert_eq!(status["policy"]["source"], config.to_str().unwrap());
    assert_eq!(status["interfaces"][0]["state"], "attached");
    assert_eq!((blocked_v4(&status), limit_pps(&status)), (1, 1000));
    assert_eq!(ping(&lab, other, 3), 3);
    assert_eq!(ping(&lab, blocked, 3), 0);

    // Rewritten in place, as `>` in a shell does.
    dir.write(
        "floodgate.toml",
        &daemon_policy(&lab, &[blocked, other], "500"),
    )
    .unwrap();
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    let changed = lab.status();
    assert_eq!((blocked_v4(&changed), limit_pps(&changed)), (2, 500));
    assert!(changed["generation"].as_u64() > status["generation"].as_u64());
    assert_eq!(
        ping(&lab, other, 3),
        0,
        "the newly blocked source got through"
    );
    assert!(daemon.running());
}

#[test]
fn other_files_in_the_policy_directory_do_not_reapply_it() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[ip(40)], "1000"))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let generation = lab.status()["generation"].clone();
    // A log or a backup beside the policy (a daemon logging into its own directory re-applied
    // on every line it wrote, for ever while the policy was invalid).
    for i in 0..5 {
        dir.write("floodgate.log", &format!("line {i}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !daemon.log_text().contains("file changed"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(lab.status()["generation"], generation);
    assert!(daemon.running());
}

#[test]
fn the_daemon_logs_what_it_applies_without_verbose() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[ip(40)], "1000"))
        .unwrap();
    // As the systemd unit runs it: no -v.
    let log = dir.path.join("log");
    let mut child = lab
        .command(&["run", "--config", config.to_str().unwrap()], &[])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + START;
    let mut text = String::new();
    while std::time::Instant::now() < deadline && !text.contains("running:") {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("start: applied"), "{text}");
    assert!(text.contains("running:"), "{text}");
    assert!(text.contains("stopped;"), "{text}");
}

#[test]
fn the_daemon_reapplies_its_file_on_sighup() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let blocked = ip(40);
    lab.add_sources(&[blocked]).unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[blocked], "1000"))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    // Someone applies another file behind the daemon's back (no change it would see).
    let elsewhere = TempDir::new("fgother-").unwrap();
    let other = elsewhere
        .write(
            "other.toml",
            "[[limit]]\nname = \"udp-per-source\"\nclass = \"udp\"\nper = \"source\"\npps = 7\n",
        )
        .unwrap();
    lab.ok(&["apply", other.to_str().unwrap()]);
    let status = lab.status();
    assert_eq!((blocked_v4(&status), limit_pps(&status)), (0, 7));
    assert_eq!(ping(&lab, blocked, 3), 3);

    daemon.signal(libc::SIGHUP);
    daemon.wait_log("SIGHUP: applied", 1, RELOAD).unwrap();
    let status = lab.status();
    assert_eq!(status["policy"]["source"], config.to_str().unwrap());
    assert_eq!((blocked_v4(&status), limit_pps(&status)), (1, 1000));
    assert_eq!(ping(&lab, blocked, 3), 0);
    assert!(daemon.running());
}

#[test]
fn an_invalid_file_changes_nothing_and_the_daemon_keeps_running() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let blocked = ip(40);
    lab.add_sources(&[blocked]).unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[blocked], "1000"))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let before = lab.status();

    const REFUSED: &str = "the previous policy stays in force";
    dir.write("floodgate.toml", &daemon_policy(&lab, &[], "\"fast\""))
        .unwrap();
    daemon.wait_log(REFUSED, 1, RELOAD).unwrap();
    let log = daemon.log_text();
    let place = format!("{}:11:7: ", config.display());
    assert!(log.contains(&place), "no {place} in the log:\n{log}");
    // Nothing changed: same generation, same lists and limits, same verdicts.
    let after = lab.status();
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!((blocked_v4(&after), limit_pps(&after)), (1, 1000));
    assert_eq!(ping(&lab, blocked, 3), 0);
    assert!(daemon.running());
    // Nor does a SIGHUP while the file is invalid.
    daemon.signal(libc::SIGHUP);
    daemon.wait_log(REFUSED, 2, RELOAD).unwrap();
    assert_eq!(lab.status()["generation"], before["generation"]);
    assert!(daemon.running());
    // Once the file is fixed, it applies.
    dir.write("floodgate.toml", &daemon_policy(&lab, &[], "900"))
        .unwrap();
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    let fixed = lab.status();
    assert_eq!((blocked_v4(&fixed), limit_pps(&fixed)), (0, 900));
}

#[test]
fn the_daemon_logs_the_bans_the_program_places() {
    let _flood = paced();
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let bad = ip(90);
    lab.add_sources(&[bad]).unwrap();
    let config = dir
        .write(
            "floodgate.toml",
            &format!(
                "[interfaces]\nnames = [\"{}\"]\n\n[[limit]]\nname = \"udp-ban\"\nclass = \"udp\"\nper = \"source\"\npps = 100\nburst = 10\nban_seconds = 30\n",
                lab.net.a_if
            ),
        )
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let rx = Receiver::start(&lab.net.a).unwrap();
    send_udp(
        &lab.net.b,
        &[Flow {
            src: bad,
            pps: 1000,
        }],
        rx.port,
        Duration::from_millis(300),
    )
    .unwrap();
    daemon
        .wait_log("ban 198.18.0.90/32 by limit udp-ban for 30 s", 1, RELOAD)
        .unwrap();
    // One event per ban, not per packet.
    assert_eq!(daemon.log_text().matches("ban 198.18.0.90/32").count(), 1);
}

// 6. The lockout guard.

const SSH_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 60);

fn ssh_env() -> [(&'static str, &'static str); 1] {
    [("SSH_CONNECTION", "198.18.0.60 50022 198.18.0.1 22")]
}

/// A lab with the filter attached and the SSH client's address on the sending end.
fn guarded_lab() -> (Lab, TempDir) {
    let lab = lab(1);
    lab.ok(&["attach", &lab.net.a_if]);
    lab.add_sources(&[SSH_CLIENT]).unwrap();
    (lab, TempDir::new("fgguard-").unwrap())
}

/// `floodgate ARGS` run from the SSH session: refused with exit code 2, a message naming
/// `why`, and nothing changed.
fn refused(lab: &Lab, args: &[&str], why: &str) {
    let generation = lab.status()["generation"].clone();
    let r = lab.floodgate(args, &ssh_env());
    assert_eq!(
        r.code, 2,
        "{args:?} was not refused: {}{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr.contains("refused to lock you out")
            && r.stderr.contains(why)
            && r.stderr.contains("nothing was changed")
            && r.stderr.contains("--force"),
        "{args:?}: {}",
        r.stderr
    );
    assert_eq!(
        lab.status()["generation"],
        generation,
        "{args:?} changed something"
    );
}

#[test]
fn the_lockout_guard_refuses_a_policy_that_would_drop_the_ssh_client() {
    let (lab, dir) = guarded_lab();
    let block = dir
        .write("block.toml", "[lists]\nblock = [\"198.18.0.0/26\"]\n")
        .unwrap();
    refused(
        &lab,
        &["apply", block.to_str().unwrap()],
        "198.18.0.0/26 covers your SSH client 198.18.0.60",
    );
    let limit = "[[limit]]\nname = \"everything\"\nclass = \"all\"\nper = \"source\"\npps = 10\n";
    let limited = dir.write("limit.toml", limit).unwrap();
    refused(
        &lab,
        &["apply", limited.to_str().unwrap()],
        "limit 'everything' can drop your SSH client 198.18.0.60; add it to [lists] protected",
    );
    let rule = dir
        .write(
            "rule.toml",
            "[[rule]]\nname = \"no-ssh\"\nprotocol = \"tcp\"\ndst_ports = 22\n",
        )
        .unwrap();
    refused(
        &lab,
        &["apply", rule.to_str().unwrap()],
        "rule 'no-ssh' drops your SSH connection (198.18.0.60 port 50022 to port 22)",
    );
    let protected_blocked = dir
        .write(
            "protected.toml",
            "[lists]\nprotected = [\"198.18.0.128/25\"]\nblock = [\"198.18.0.192/26\"]\n",
        )
        .unwrap();
    refused(
        &lab,
        &["apply", protected_blocked.to_str().unwrap()],
        "198.18.0.192/26 lies inside the protected prefix 198.18.0.128/25",
    );
    let status = lab.status();
    assert_eq!(blocked_v4(&status), 0);
    assert_eq!(status["policy"]["limits"], serde_json::json!([]));
    assert_eq!(ping(&lab, SSH_CLIENT, 3), 3, "the SSH client lost service");
    // The same limit with the SSH client protected passes the guard.
    let ok = dir
        .write(
            "ok.toml",
            &format!("[lists]\nprotected = [\"{SSH_CLIENT}/32\"]\n\n{limit}"),
        )
        .unwrap();
    let r = lab.floodgate(&["apply", ok.to_str().unwrap()], &ssh_env());
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn the_lockout_guard_refuses_block_and_ban_commands_that_would_drop_the_ssh_client() {
    let (lab, dir) = guarded_lab();
    refused(
        &lab,
        &["block", "add", "198.18.0.48/28"],
        "198.18.0.48/28 covers your SSH client 198.18.0.60",
    );
    let list = dir
        .write("list.txt", "192.0.2.0/24\n198.18.0.60\n")
        .unwrap();
    refused(
        &lab,
        &["block", "load", list.to_str().unwrap()],
        "198.18.0.60/32 covers your SSH client",
    );
    refused(
        &lab,
        &["bans", "add", "198.18.0.60", "--seconds", "60"],
        "covers your SSH client 198.18.0.60",
    );
    let protect = dir
        .write(
            "protect.toml",
            "[lists]\nprotected = [\"198.18.0.128/25\"]\n",
        )
        .unwrap();
    lab.ok(&["apply", protect.to_str().unwrap()]);
    refused(
        &lab,
        &["block", "add", "198.18.0.200"],
        "198.18.0.200/32 lies inside the protected prefix 198.18.0.128/25",
    );
    assert_eq!(lab.ok(&["block", "list"]), "");
    assert_eq!(lab.ok(&["bans", "list"]).trim(), "no bans");
    assert_eq!(ping(&lab, SSH_CLIENT, 3), 3);
}

#[test]
fn force_overrides_the_lockout_guard() {
    let (lab, dir) = guarded_lab();
    let block = dir
        .write("block.toml", "[lists]\nblock = [\"198.18.0.0/26\"]\n")
        .unwrap();
    let r = lab.floodgate(&["apply", "--force", block.to_str().unwrap()], &ssh_env());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ping(&lab, SSH_CLIENT, 3), 0);
    let r = lab.floodgate(&["block", "add", "--force", "198.18.0.60"], &ssh_env());
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The command line's entry, next to the policy's.
    assert_eq!(
        lab.ok(&["block", "list"]),
        "198.18.0.0/26\n198.18.0.60/32\n"
    );
    let r = lab.floodgate(
        &["bans", "add", "--force", "198.18.0.60", "--seconds", "60"],
        &ssh_env(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(lab.ok(&["bans", "list"]).contains("198.18.0.60/32"));
}

#[test]
fn protected_sources_are_never_rate_limited_or_banned_under_a_flood() {
    let _flood = paced();
    let lab = lab(1);
    let dir = TempDir::new("fgpolicy-").unwrap();
    let (protected, unprotected) = (ip(70), ip(71));
    attach_and_apply(
        &lab,
        &dir,
        &format!(
            "[lists]\nprotected = [\"{protected}/32\"]\n\n[[limit]]\nname = \"udp-ban\"\nclass = \"udp\"\nper = \"source\"\npps = 100\nburst = 10\nban_seconds = 30\n"
        ),
    );
    lab.add_sources(&[protected, unprotected]).unwrap();
    let rx = Receiver::start(&lab.net.a).unwrap();
    let before = lab.counters();
    let sent = send_udp(
        &lab.net.b,
        &[
            Flow {
                src: protected,
                pps: 1000,
            },
            Flow {
                src: unprotected,
                pps: 1000,
            },
        ],
        rx.port,
        Duration::from_secs(1),
    )
    .unwrap();
    let got = rx.finish().unwrap();
    let after = lab.counters();
    eprintln!(
        "protected at 10x its limit: {} of {} passed; unprotected: {} of {}",
        got.from(protected),
        sent.per_source[&protected],
        got.from(unprotected),
        sent.per_source[&unprotected]
    );
    assert_eq!(got.from(protected), sent.delivered(protected));
    // The unprotected source, for comparison: its burst, then banned.
    let passed = got.from(unprotected);
    assert!((14..=16).contains(&passed), "{passed}");
    let bans: serde_json::Value =
        serde_json::from_str(&lab.ok(&["bans", "list", "--json"])).unwrap();
    let banned: Vec<&str> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["source"].as_str().unwrap())
        .collect();
    assert_eq!(banned, ["198.18.0.71/32"]);
    assert_eq!(delta(&before, &after, Reason::DroppedRateLimit), 1);
    assert_eq!(lab.limit_refusals("udp-ban").unwrap(), 1);
    assert_eq!(
        delta(&before, &after, Reason::DroppedBanned),
        sent.delivered(unprotected) - passed - 1
    );
}

// 7. Stopping the daemon.

/// The id of the XDP program the kernel shows on the victim's veth, if any.
fn kernel_xdp_prog(lab: &Lab) -> Option<u64> {
    let out = lab
        .net
        .a
        .exec(&["ip", "-d", "-j", "link", "show", "dev", &lab.net.a_if])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let xdp = &v[0]["xdp"];
    xdp["prog"]["id"].as_u64().or_else(|| {
        xdp["attached"]
            .as_array()?
            .iter()
            .find_map(|a| a["prog"]["id"].as_u64())
    })
}

#[test]
fn sigterm_leaves_the_filter_enforcing() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let (blocked, clean) = (ip(80), ip(81));
    lab.add_sources(&[blocked, clean]).unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[blocked], "1000"))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let running = lab.status();
    assert_eq!(ping(&lab, blocked, 3), 0);

    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "{exit:?}: {}", daemon.log_text());
    assert!(daemon.log_text().contains("the filter keeps enforcing"));
    assert_eq!(processes_naming(lab.dir.pins.root()), Vec::<u32>::new());
    // Still attached, same program, same policy, and it still drops.
    let status = lab.status();
    assert_eq!(status["interfaces"][0]["state"], "attached");
    assert_eq!(status["generation"], running["generation"]);
    assert_eq!(status["policy"]["source"], config.to_str().unwrap());
    assert_eq!(kernel_xdp_prog(&lab), status["program_id"].as_u64());
    let before = lab.counters();
    assert_eq!(ping(&lab, blocked, 3), 0);
    assert_eq!(ping(&lab, clean, 3), 3);
    let after = lab.counters();
    assert_eq!(delta(&before, &after, Reason::DroppedBlocklist), 3);
}

#[test]
fn detach_on_exit_detaches_the_filter_on_sigterm() {
    let lab = lab(1);
    let dir = TempDir::new("fgrun-").unwrap();
    let blocked = ip(80);
    lab.add_sources(&[blocked]).unwrap();
    let config = dir
        .write("floodgate.toml", &daemon_policy(&lab, &[blocked], "1000"))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &["--detach-on-exit"]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    assert!(kernel_xdp_prog(&lab).is_some());
    assert_eq!(ping(&lab, blocked, 3), 0);

    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "{exit:?}: {}", daemon.log_text());
    assert!(
        daemon
            .log_text()
            .contains(&format!("stopped; detached from {}", lab.net.a_if)),
        "{}",
        daemon.log_text()
    );
    assert_eq!(kernel_xdp_prog(&lab), None);
    let status = lab.status();
    assert!(
        status["interfaces"]
            .as_array()
            .is_none_or(|i| i.iter().all(|i| i["state"] != "attached")),
        "{status}"
    );
    assert_eq!(ping(&lab, blocked, 3), 3);
}
