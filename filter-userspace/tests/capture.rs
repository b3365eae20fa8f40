//! `floodgate capture` end to end: a blocked source sends a known set of UDP datagrams across a
//! veth pair between throwaway namespaces (`i8c...`, with a pin directory of their own), a
//! capture writes the sampled drops to a pcap file, and tshark reads the file back, packet by
//! packet, against what was sent. Also: stopping by duration, the reason and source filters,
//! two captures at once, and sampling returning to its setting however a capture ends.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::flood::{Lab, TempDir, VICTIM};
use test_support::{in_netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

/// Blocked sources (in 198.18.0.64/26) and one that is not.
const BLOCKED_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
const BLOCKED_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);
const CLEAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

fn lab() -> Lab {
    require_root();
    let lab = Lab::named(BIN, 1, "i8c").expect("lab");
    lab.add_sources(&[BLOCKED_A, BLOCKED_B, CLEAN])
        .expect("sources");
    lab.ok(&["attach", &lab.net.a_if]);
    lab.ok(&["block", "add", "198.18.0.64/26"]);
    lab
}

/// One datagram to send: from `src:sport` to the victim's `dport`, `payload` bytes.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: usize,
}

impl Datagram {
    /// Its Ethernet frame's length (Ethernet, IPv4 without options, UDP).
    fn frame_len(&self) -> usize {
        14 + 20 + 8 + self.payload
    }
}

/// Send the datagrams in order from the sending namespace, a millisecond apart.
fn send(lab: &Lab, datagrams: &[Datagram]) {
    let list = datagrams.to_vec();
    in_netns(lab.net.b.path(), move || {
        for d in list {
            let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(d.src), d.sport)).expect("bind");
            s.send_to(
                &vec![0xa5u8; d.payload],
                SocketAddr::new(IpAddr::V4(VICTIM), d.dport),
            )
            .expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .expect("sender");
}

/// A running `floodgate capture`; killed (by its pid) and reaped on drop if still running.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Capture {
    /// Start `capture -w FILE ARGS` and wait until it takes samples.
    fn start(lab: &Lab, dir: &TempDir, name: &str, args: &[&str]) -> Capture {
        let file = dir.path.join(name);
        let mut full = vec!["capture", "-w", file.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut child = lab
            .command(&full, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capture");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = Capture {
            child: Some(child),
            file,
            stderr: rx,
            log: Vec::new(),
        };
        c.wait_line("capturing", Duration::from_secs(10));
        c
    }

    fn wait_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.iter().any(|l| l.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no {needle:?} from capture: {:?}", self.log),
            }
        }
    }

    fn signal(&mut self, signal: i32) {
        let child = self.child.as_mut().unwrap();
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// Wait for it to exit (at most `timeout`); its exit code.
    fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "capture still running after {timeout:?}: {:?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// One packet as tshark reads it from a pcap file.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    len: usize,
    cap_len: usize,
}

fn tshark(file: &Path) -> Vec<Read> {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
        ])
        .output()
        .expect("tshark (install the Debian package tshark)");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Read {
                src: f[0].parse().unwrap(),
                dst: f[1].parse().unwrap(),
                sport: f[2].parse().unwrap(),
                dport: f[3].parse().unwrap(),
                len: f[4].parse().unwrap(),
                cap_len: f[5].parse().unwrap(),
            }
        })
        .collect()
}

fn expected(d: &Datagram) -> Read {
    Read {
        src: d.src,
        dst: VICTIM,
        sport: d.sport,
        dport: d.dport,
        len: d.frame_len(),
        cap_len: d.frame_len().min(128),
    }
}

/// `count` datagrams from `src`, each with its own ports and length (one longer than the
/// 128 bytes a record keeps).
fn datagrams(src: Ipv4Addr, count: u16, base_port: u16) -> Vec<Datagram> {
    (0..count)
        .map(|i| Datagram {
            src,
            sport: base_port + i,
            dport: 7000 + i,
            payload: if i == 1 { 300 } else { 10 + 7 * usize::from(i) },
        })
        .collect()
}

fn sampling(lab: &Lab) -> serde_json::Value {
    lab.status()["sampling"].clone()
}

#[test]
fn capture_writes_each_dropped_frame_as_sent() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let sent = datagrams(BLOCKED_A, 12, 41000);
    let mut cap = Capture::start(&lab, &dir, "all.pcap", &["--count", "12"]);
    send(&lab, &sent);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let mut got = tshark(&cap.file);
    got.sort_by_key(|r| r.sport);
    let want: Vec<Read> = sent.iter().map(expected).collect();
    assert_eq!(got, want);
    assert!(cap.log.iter().any(|l| l.contains("12 frames written")));
}

#[test]
fn capture_stops_after_its_duration() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let started = Instant::now();
    let mut cap = Capture::start(&lab, &dir, "quiet.pcap", &["--duration", "1.5"]);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(tshark(&cap.file).is_empty());
}

#[test]
fn capture_keeps_only_the_source_asked_for() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut cap = Capture::start(
        &lab,
        &dir,
        "b.pcap",
        &["--source", "198.18.0.77/32", "--count", "3"],
    );
    let a = datagrams(BLOCKED_A, 4, 42000);
    let b = datagrams(BLOCKED_B, 3, 43000);
    let mixed: Vec<Datagram> = a
        .iter()
        .zip(b.iter().chain(a.iter()))
        .flat_map(|(x, y)| [*x, *y])
        .take(7)
        .collect();
    send(&lab, &mixed);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let mut got = tshark(&cap.file);
    got.sort_by_key(|r| r.sport);
    assert_eq!(got, b.iter().map(expected).collect::<Vec<_>>());
}

#[test]
fn capture_keeps_only_the_reason_asked_for() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut cap = Capture::start(
        &lab,
        &dir,
        "rules.pcap",
        &["--reason", "dropped-rule", "--duration", "2"],
    );
    send(&lab, &datagrams(BLOCKED_A, 5, 44000));
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    assert!(tshark(&cap.file).is_empty());
}

#[test]
fn two_captures_at_once_each_get_every_sample() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut one = Capture::start(&lab, &dir, "one.pcap", &["--count", "6"]);
    let mut two = Capture::start(&lab, &dir, "two.pcap", &["--count", "6"]);
    assert_eq!(sampling(&lab)["readers"], 2);
    let sent = datagrams(BLOCKED_A, 6, 45000);
    send(&lab, &sent);
    for cap in [&mut one, &mut two] {
        assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
        let mut got = tshark(&cap.file);
        got.sort_by_key(|r| r.sport);
        assert_eq!(got, sent.iter().map(expected).collect::<Vec<_>>());
    }
}

#[test]
fn sampling_returns_to_its_setting_when_a_capture_ends() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    lab.ok(&["sampling", "--every", "500"]);
    let before = sampling(&lab);
    assert_eq!(before["readers"], 0);
    assert_eq!(before["effective_every"], 0);
    let mut cap = Capture::start(&lab, &dir, "one.pcap", &["--count", "1"]);
    let during = sampling(&lab);
    assert_eq!(during["readers"], 1);
    assert_eq!(during["raised"], true);
    assert_eq!(during["effective_every"], 1);
    send(&lab, &datagrams(BLOCKED_A, 1, 46000));
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    assert_eq!(sampling(&lab), before);
    assert_eq!(before["every"], 500);
}

#[test]
fn sigterm_ends_a_capture_and_restores_sampling() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let before = sampling(&lab);
    let mut cap = Capture::start(&lab, &dir, "term.pcap", &[]);
    send(&lab, &datagrams(BLOCKED_A, 2, 47000));
    assert_eq!(sampling(&lab)["readers"], 1);
    cap.signal(libc::SIGTERM);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    assert_eq!(sampling(&lab), before);
    assert_eq!(tshark(&cap.file).len(), 2);
}

#[test]
fn a_killed_capture_leaves_sampling_raised_only_until_the_next_status() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut cap = Capture::start(&lab, &dir, "killed.pcap", &[]);
    cap.signal(libc::SIGKILL);
    cap.wait(Duration::from_secs(10));
    let after = sampling(&lab);
    assert_eq!(after["readers"], 0);
    assert_eq!(after["effective_every"], 0);
    // And the next capture gets a slot and its samples.
    let mut next = Capture::start(&lab, &dir, "next.pcap", &["--count", "1"]);
    send(&lab, &datagrams(BLOCKED_A, 1, 48000));
    assert_eq!(next.wait(Duration::from_secs(10)), 0, "{:?}", next.log);
    assert_eq!(tshark(&next.file).len(), 1);
}
