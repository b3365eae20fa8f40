//! `floodgate top` end to end: blocked sources send a known number of UDP datagrams across a
//! veth pair between throwaway namespaces (`i8t...`, with a pin directory of their own,
//! removed on drop even when a test fails), with sampling at every drop, and `top --json`
//! must name the top source, its /24, the destination port and the reason, with counter
//! totals and rates that add up to what was sent. Also: top and a capture at once both get
//! every sample; top changes neither sampling's setting nor the policy; it refuses to draw
//! without a terminal, and says so when nothing is loaded.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::flood::{Lab, TempDir, VICTIM};
use test_support::{in_netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// Two blocked sources in one /24 (inside the blocked 198.18.0.64/26).
const TOP_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
const OTHER_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);
/// Datagrams each sends, and to which port: well within the default cap (1000 samples/s, a
/// burst of as many), so every drop is sampled.
const TOP_SENT: u64 = 30;
const OTHER_SENT: u64 = 10;
const TOP_PORT: u16 = 7000;
const OTHER_PORT: u16 = 7001;

/// The filter on the victim's end, both sources blocked, sampling every drop.
fn lab() -> Lab {
    require_root();
    let lab = Lab::named(BIN, 1, "i8t").expect("lab");
    lab.add_sources(&[TOP_SOURCE, OTHER_SOURCE])
        .expect("sources");
    lab.ok(&["attach", &lab.net.a_if]);
    lab.ok(&["block", "add", "198.18.0.64/26"]);
    lab.ok(&["sampling", "--every", "1"]);
    lab
}

/// `count` datagrams from `src` to the victim's `dport`, 2 ms apart, from the sending
/// namespace.
fn send(lab: &Lab, src: Ipv4Addr, dport: u16, count: u64) {
    in_netns(lab.net.b.path(), move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0)).expect("bind");
        for _ in 0..count {
            s.send_to(&[0x5a; 32], SocketAddr::new(IpAddr::V4(VICTIM), dport))
                .expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .expect("sender");
}

/// Both sources' datagrams.
fn send_both(lab: &Lab) {
    send(lab, TOP_SOURCE, TOP_PORT, TOP_SENT);
    send(lab, OTHER_SOURCE, OTHER_PORT, OTHER_SENT);
}

/// Wait until `readers` readers take samples (status says so).
fn wait_readers(lab: &Lab, readers: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if lab.status()["sampling"]["readers"] == readers {
            return;
        }
        assert!(Instant::now() < deadline, "no {readers} sample readers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running floodgate command whose output lines are collected; killed (by its pid) and
/// reaped on drop if still running.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    fn start(lab: &Lab, args: &[&str]) -> Running {
        let mut child = lab
            .command(args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn floodgate");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Wait (at most `timeout`) for it to exit: its code, output lines and error lines.
    fn finish(&mut self, timeout: Duration) -> (i32, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let drain = |rx: &mpsc::Receiver<String>| {
            let mut v = Vec::new();
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
                v.push(l);
            }
            v
        };
        (code, drain(&self.stdout), drain(&self.stderr))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `top --json --count COUNT` while both sources send (`others` readers take samples
/// already): its snapshots.
fn top_while_sending(lab: &Lab, count: u32, others: u64) -> Vec<Value> {
    let count_arg = count.to_string();
    let mut top = Running::start(lab, &["top", "--json", "--count", &count_arg]);
    wait_readers(lab, others + 1);
    send_both(lab);
    let (code, out, err) = top.finish(Duration::from_secs(u64::from(count) + 15));
    assert_eq!(code, 0, "top failed: {err:?}");
    assert_eq!(out.len(), count as usize, "one snapshot per line: {out:?}");
    out.iter()
        .map(|l| serde_json::from_str(l).expect("a JSON snapshot"))
        .collect()
}

fn reason<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .find(|r| r["reason"] == name)
        .unwrap_or_else(|| panic!("no reason {name} in {snapshot}"))
}

#[test]
fn top_json_names_the_top_source_prefix_port_and_reason() {
    let lab = lab();
    let snapshots = top_while_sending(&lab, 3, 0);
    let last = snapshots.last().expect("a snapshot");
    // Every drop sampled (1 in 1): samples and estimates are the datagrams sent.
    assert_eq!(last["sampling"]["every"], 1, "{last}");
    assert_eq!(last["samples"], TOP_SENT + OTHER_SENT, "{last}");
    assert_eq!(last["sources"][0]["source"], TOP_SOURCE.to_string());
    assert_eq!(last["sources"][0]["samples"], TOP_SENT);
    assert_eq!(last["sources"][0]["estimated_packets"], TOP_SENT);
    assert_eq!(last["sources"][1]["source"], OTHER_SOURCE.to_string());
    assert_eq!(last["sources"][1]["samples"], OTHER_SENT);
    assert_eq!(last["prefixes"][0]["prefix"], "198.18.0.0/24");
    assert_eq!(last["prefixes"][0]["samples"], TOP_SENT + OTHER_SENT);
    assert_eq!(last["ports"][0]["port"], TOP_PORT);
    assert_eq!(last["ports"][0]["protocol"], "udp");
    assert_eq!(last["ports"][0]["samples"], TOP_SENT);
    assert_eq!(last["ports"][1]["port"], OTHER_PORT);
    let blocklist = reason(last, "dropped-blocklist");
    assert_eq!(blocklist["samples"], TOP_SENT + OTHER_SENT);
    // The counters: exact, whatever the sampling.
    assert_eq!(blocklist["packets_total"], TOP_SENT + OTHER_SENT);
    assert_eq!(blocklist["packets_in_window"], TOP_SENT + OTHER_SENT);
    let rule = reason(last, "dropped-rule");
    assert_eq!(rule["samples"], 0);
    assert_eq!(rule["packets_total"], 0);
}

#[test]
fn top_json_rates_add_up_to_what_was_sent() {
    let lab = lab();
    let snapshots = top_while_sending(&lab, 3, 0);
    // Each snapshot's rate over its interval: together, every datagram, once.
    let counted: f64 = snapshots
        .iter()
        .map(|s| {
            let r = reason(s, "dropped-blocklist");
            r["packets_per_second"].as_f64().expect("rate")
                * s["interval_seconds"].as_f64().expect("interval")
        })
        .sum();
    assert_eq!(
        counted.round() as u64,
        TOP_SENT + OTHER_SENT,
        "{snapshots:?}"
    );
    let last = snapshots.last().expect("a snapshot");
    let history = reason(last, "dropped-blocklist")["history"]
        .as_array()
        .expect("history")
        .len();
    assert_eq!(history, snapshots.len(), "one rate per reading: {last}");
    for s in &snapshots {
        let interval = s["interval_seconds"].as_f64().expect("interval");
        assert!((0.8..2.5).contains(&interval), "interval {interval}");
    }
}

/// A capture into DIR/NAME of as many frames as `send_both` sends.
fn capture_all_sent(lab: &Lab, dir: &TempDir, name: &str) -> Running {
    let file = dir.path.join(name);
    let total = (TOP_SENT + OTHER_SENT).to_string();
    Running::start(
        lab,
        &[
            "capture",
            "-w",
            file.to_str().expect("utf-8"),
            "--count",
            &total,
        ],
    )
}

#[test]
fn top_and_a_capture_at_once_both_get_every_sample() {
    let lab = lab();
    let dir = TempDir::new("i8t-").expect("temp dir");
    let mut capture = capture_all_sent(&lab, &dir, "both.pcap");
    wait_readers(&lab, 1);
    let snapshots = top_while_sending(&lab, 2, 1);
    let (code, _, err) = capture.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "capture failed: {err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains(&format!("{} frames written", TOP_SENT + OTHER_SENT))),
        "{err:?}"
    );
    let last = snapshots.last().expect("a snapshot");
    assert_eq!(last["samples"], TOP_SENT + OTHER_SENT, "{last}");
    assert_eq!(last["sources"][0]["samples"], TOP_SENT);
}

#[test]
fn top_changes_neither_sampling_nor_the_policy() {
    let lab = lab();
    lab.ok(&["sampling", "--every", "7"]);
    let before = lab.status();
    let mut top = Running::start(&lab, &["top", "--json", "--count", "2"]);
    wait_readers(&lab, 1);
    let during = lab.status()["sampling"].clone();
    assert_eq!(during["raised"], false, "{during}");
    assert_eq!(
        during["effective_every"], 7,
        "top takes the setting: {during}"
    );
    let (code, out, err) = top.finish(Duration::from_secs(15));
    assert_eq!(code, 0, "{err:?}");
    let last: Value = serde_json::from_str(out.last().expect("a snapshot")).expect("JSON");
    assert_eq!(last["sampling"]["every"], 7);
    assert_eq!(lab.status(), before);
}

#[test]
fn top_without_a_terminal_asks_for_json() {
    let lab = lab();
    let r = lab.floodgate(&["top"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--json"), "{}", r.stderr);
    assert_eq!(lab.status()["sampling"]["readers"], 0);
}

#[test]
fn top_of_an_unloaded_filter_says_so() {
    require_root();
    let pins = test_support::TestPins::named("i8ttest-").expect("pins");
    let out = test_support::floodgate_cmd(BIN, &pins.pins)
        .args(["top", "--json"])
        .output()
        .expect("floodgate");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not loaded"),
        "{out:?}"
    );
}

#[test]
fn samples_a_capture_raised_weigh_one_drop_each_in_tops_estimates() {
    let lab = lab();
    lab.ok(&["sampling", "--every", "100"]);
    let mut top = Running::start(&lab, &["top", "--json", "--count", "3"]);
    wait_readers(&lab, 1);
    // Raised to every drop after top has read the setting (1 in 100).
    let dir = TempDir::new("i8t-").expect("temp dir");
    let mut capture = capture_all_sent(&lab, &dir, "raised.pcap");
    wait_readers(&lab, 2);
    send_both(&lab);
    let (code, _, err) = capture.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "capture failed: {err:?}");
    let (code, out, err) = top.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "top failed: {err:?}");
    let last: Value = serde_json::from_str(out.last().expect("a snapshot")).expect("JSON");
    // Every drop was sampled (the capture raised it): each sample stands for one drop, not
    // for the 100 of the setting.
    assert_eq!(last["samples"], TOP_SENT + OTHER_SENT, "{last}");
    assert_eq!(last["estimated_packets"], TOP_SENT + OTHER_SENT, "{last}");
}
