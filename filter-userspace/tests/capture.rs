//! `floodgate capture` end to end: a blocked source sends a known set of UDP datagrams across a
//! veth pair between throwaway namespaces (`i8c...`, with a pin directory of their own), a
//! capture writes the sampled drops to a pcap file, and tshark reads the file back, packet by
//! packet, against what was sent. Also: IPv6 frames (sent raw from a packet socket: the lab
//! keeps IPv6 off), a capture to standard output, stopping by duration, the reason and source
//! filters, two captures at once, and sampling returning to its setting however a capture ends.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
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
    /// With `-w -`: everything it wrote to standard output, once it closes.
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Capture {
    /// Start `capture -w FILE ARGS` and wait until it takes samples.
    fn start(lab: &Lab, dir: &TempDir, name: &str, args: &[&str]) -> Capture {
        let file = dir.path.join(name);
        Self::spawn(lab, file, args)
    }

    /// Start `capture -w - ARGS` (the pcap on standard output) and wait until it takes
    /// samples; [`Capture::output`] has what it wrote.
    fn start_to_stdout(lab: &Lab, args: &[&str]) -> Capture {
        Self::spawn(lab, PathBuf::from("-"), args)
    }

    fn spawn(lab: &Lab, file: PathBuf, args: &[&str]) -> Capture {
        let mut full = vec!["capture", "-w", file.to_str().unwrap()];
        full.extend_from_slice(args);
        let to_stdout = file == Path::new("-");
        let mut child = lab
            .command(&full, &[])
            .stdin(Stdio::null())
            .stdout(if to_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capture");
        let stdout = child.stdout.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).expect("capture's stdout");
                bytes
            })
        });
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
            stdout,
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

impl Capture {
    /// What a `-w -` capture wrote to standard output (call once it has exited).
    fn output(&mut self) -> Vec<u8> {
        self.stdout
            .take()
            .expect("a capture to standard output")
            .join()
            .expect("stdout reader")
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
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    len: usize,
    cap_len: usize,
}

fn tshark(file: &Path) -> Vec<Read> {
    tshark_from(file.to_str().expect("utf-8"), None)
}

/// tshark reading `input` (a path, or `-` for `stdin`'s bytes), IPv4 or IPv6 packets.
fn tshark_from(input: &str, stdin: Option<&[u8]>) -> Vec<Read> {
    let mut child = std::process::Command::new("tshark")
        .args(["-n", "-r", input])
        .args([
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
        ])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (install the Debian package tshark)");
    let out = std::thread::scope(|scope| {
        // Fed from a thread of its own, so tshark's output never waits on its input.
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            scope.spawn(move || pipe.write_all(bytes).expect("pcap into tshark"));
        }
        child.wait_with_output().expect("tshark")
    });
    assert!(
        out.status.success(),
        "tshark cannot read {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One address of each pair is empty: the packet's family has the other.
    let addr =
        |v4: &str, v6: &str| -> IpAddr { if v4.is_empty() { v6 } else { v4 }.parse().unwrap() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Read {
                src: addr(f[0], f[1]),
                dst: addr(f[2], f[3]),
                sport: f[4].parse().unwrap(),
                dport: f[5].parse().unwrap(),
                len: f[6].parse().unwrap(),
                cap_len: f[7].parse().unwrap(),
            }
        })
        .collect()
}

fn expected(d: &Datagram) -> Read {
    Read {
        src: IpAddr::V4(d.src),
        dst: IpAddr::V4(VICTIM),
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

/// The sampling setting and its readers as `status` shows them, without the counts of samples
/// taken (they grow with every capture).
fn sampling(lab: &Lab) -> serde_json::Value {
    let mut s = lab.status()["sampling"].clone();
    s.as_object_mut().expect("an object").remove("samples");
    s
}

/// The counts of samples taken since the filter was loaded.
fn samples_taken(lab: &Lab) -> serde_json::Value {
    lab.status()["sampling"]["samples"].clone()
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
    // A capture of the reason these drops have, beside it: sampling did work.
    let mut control = Capture::start(
        &lab,
        &dir,
        "blocklist.pcap",
        &["--reason", "dropped-blocklist", "--count", "5"],
    );
    send(&lab, &datagrams(BLOCKED_A, 5, 44000));
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    assert_eq!(
        control.wait(Duration::from_secs(10)),
        0,
        "{:?}",
        control.log
    );
    assert!(tshark(&cap.file).is_empty());
    assert_eq!(tshark(&control.file).len(), 5);
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

/// A blocked IPv6 source (in fd00:8c::/64) and the victim's IPv6 address. The lab keeps
/// IPv6 off on both ends (no router solicitation ever crosses the filter), so these frames
/// go out raw from a packet socket: the filter judges them before any IP stack would.
const BLOCKED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x8c, 0, 0, 0, 0, 0, 0x66);
const VICTIM_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x8c, 0, 0, 0, 0, 0, 1);

/// One IPv6 UDP datagram to send raw.
#[derive(Clone, Copy, Debug)]
struct Datagram6 {
    sport: u16,
    dport: u16,
    payload: usize,
}

impl Datagram6 {
    /// Its Ethernet frame, from the sending end's MAC to the victim's.
    fn frame(&self, lab: &Lab) -> Vec<u8> {
        use filter_common::frames::{ethernet, ipv6, udp};
        use filter_common::parse::{ETH_P_IPV6, IPPROTO_UDP};
        let datagram = udp(self.sport, self.dport, &vec![0x6au8; self.payload]);
        let mut f = ethernet(
            ETH_P_IPV6,
            &[],
            &ipv6(BLOCKED_V6, VICTIM_V6, IPPROTO_UDP, &[], &datagram),
        );
        f[..6].copy_from_slice(&lab.a_mac);
        f[6..12].copy_from_slice(&lab.b_mac);
        f
    }

    fn expected(&self) -> Read {
        // Ethernet, IPv6 without extension headers, UDP.
        let len = 14 + 40 + 8 + self.payload;
        Read {
            src: IpAddr::V6(BLOCKED_V6),
            dst: IpAddr::V6(VICTIM_V6),
            sport: self.sport,
            dport: self.dport,
            len,
            cap_len: len.min(128),
        }
    }
}

/// Send `frames` as they are, a millisecond apart, from a packet socket on the sending end.
fn send_raw(lab: &Lab, frames: Vec<Vec<u8>>) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let ifindex = lab.b_ifindex;
    let dst_mac = lab.a_mac;
    in_netns(lab.net.b.path(), move || {
        // Protocol 0: the socket sends and receives nothing.
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor just opened and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&dst_mac);
        for f in frames {
            // SAFETY: `f` and `to` outlive the call; the lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    std::ptr::from_ref(&to).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                n,
                f.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .expect("raw sender");
}

#[test]
fn capture_writes_each_dropped_ipv6_frame_as_sent() {
    let lab = lab();
    lab.ok(&["block", "add", "fd00:8c::/64"]);
    let dir = TempDir::new("i8c-").unwrap();
    let sent: Vec<Datagram6> = (0..8)
        .map(|i| Datagram6 {
            sport: 51000 + i,
            dport: 8000 + i,
            payload: if i == 2 { 400 } else { 5 + 9 * usize::from(i) },
        })
        .collect();
    let mut cap = Capture::start(&lab, &dir, "v6.pcap", &["--count", "8"]);
    send_raw(&lab, sent.iter().map(|d| d.frame(&lab)).collect());
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let mut got = tshark(&cap.file);
    got.sort_by_key(|r| r.sport);
    assert_eq!(
        got,
        sent.iter().map(Datagram6::expected).collect::<Vec<_>>()
    );
    assert_eq!(
        lab.counters()[&filter_common::Reason::DroppedBlocklist],
        8,
        "every frame sent was dropped, and nothing else"
    );
}

#[test]
fn capture_to_standard_output_writes_a_pcap_that_tshark_reads() {
    let lab = lab();
    let sent = datagrams(BLOCKED_A, 5, 49000);
    let mut cap = Capture::start_to_stdout(&lab, &["--count", "5"]);
    send(&lab, &sent);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let pcap = cap.output();
    assert_eq!(
        pcap.get(..4),
        Some(&0xa1b2_3c4du32.to_le_bytes()[..]),
        "not a nanosecond pcap: {} bytes",
        pcap.len()
    );
    let mut got = tshark_from("-", Some(&pcap));
    got.sort_by_key(|r| r.sport);
    assert_eq!(got, sent.iter().map(expected).collect::<Vec<_>>());
    assert!(
        cap.log.iter().any(|l| l.contains("5 frames written")),
        "{:?}",
        cap.log
    );
}

#[test]
fn the_samples_a_capture_gets_are_counted_as_written() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let before = samples_taken(&lab);
    let mut cap = Capture::start(&lab, &dir, "counted.pcap", &["--count", "5"]);
    send(&lab, &datagrams(BLOCKED_A, 5, 48000));
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let after = samples_taken(&lab);
    let grew = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(grew("written"), 5, "{after}");
    assert_eq!(grew("capped"), 0, "{after}");
    assert_eq!(grew("lost"), 0, "{after}");
}

#[test]
fn samples_over_the_cap_are_counted_as_capped_not_written() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    // The smallest cap: one record per second per CPU, after a burst of one.
    lab.ok(&["sampling", "--cap", "1"]);
    let before = samples_taken(&lab);
    let mut cap = Capture::start(&lab, &dir, "capped.pcap", &["--duration", "3"]);
    send(&lab, &datagrams(BLOCKED_A, 40, 49000));
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    let after = samples_taken(&lab);
    let grew = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let (written, capped) = (grew("written"), grew("capped"));
    assert_eq!(
        written + capped,
        40,
        "every drop was sampled or capped: {after}"
    );
    // 40 datagrams sent within a second or two: at most a burst and a refill per CPU.
    assert!(written >= 1 && written <= 3 * cpus, "{after}");
    assert_eq!(tshark(&cap.file).len() as u64, written);
}

/// `STATE`, as the program reads it (no `status`, which would tidy it).
fn state_words(lab: &Lab) -> Vec<u64> {
    use aya::maps::{Array, Map};
    let map = lab
        .dir
        .pins
        .open_map(filter_common::maps::STATE)
        .expect("STATE");
    let state: Array<_, u64> = Array::try_from(Map::Array(map)).expect("an array");
    (0..filter_common::maps::STATE_ENTRIES)
        .map(|i| state.get(&i, 0).expect("a word"))
        .collect()
}

#[test]
fn the_program_itself_ends_sampling_once_a_killed_captures_lease_lapses() {
    use filter_common::sample::{LEASE_NS, STATE_LEASE, STATE_SAMPLE};
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut cap = Capture::start(&lab, &dir, "lapsed.pcap", &[]);
    cap.signal(libc::SIGKILL);
    cap.wait(Duration::from_secs(10));
    assert_ne!(state_words(&lab)[STATE_SAMPLE as usize], 0, "still raised");
    // No floodgate command runs meanwhile: only the program can end it.
    std::thread::sleep(Duration::from_nanos(LEASE_NS) + Duration::from_millis(500));
    send(&lab, &datagrams(BLOCKED_A, 1, 50000));
    let words = state_words(&lab);
    assert_eq!(words[STATE_SAMPLE as usize], 0, "{words:?}");
    assert_eq!(words[STATE_LEASE as usize], 0, "{words:?}");
}

#[test]
fn a_sampling_word_without_a_lease_is_ended_by_the_program() {
    use aya::maps::{Array, Map};
    use filter_common::sample::{STATE_LEASE, STATE_SAMPLE};
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut cap = Capture::start(&lab, &dir, "nolease.pcap", &[]);
    cap.signal(libc::SIGKILL);
    cap.wait(Duration::from_secs(10));
    // As a clearing by the program racing a republish could leave it: a word, lease 0.
    let map = lab
        .dir
        .pins
        .open_map(filter_common::maps::STATE)
        .expect("STATE");
    let mut state: Array<_, u64> = Array::try_from(Map::Array(map)).expect("an array");
    state.set(STATE_LEASE, 0, 0).expect("lease");
    assert_ne!(state_words(&lab)[STATE_SAMPLE as usize], 0);
    send(&lab, &datagrams(BLOCKED_A, 1, 50100));
    assert_eq!(state_words(&lab)[STATE_SAMPLE as usize], 0);
}

#[test]
fn a_capture_refused_for_want_of_a_slot_leaves_its_file_alone() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let mut held: Vec<Capture> = (0..4)
        .map(|i| Capture::start(&lab, &dir, &format!("held{i}.pcap"), &["--duration", "8"]))
        .collect();
    assert_eq!(sampling(&lab)["readers"], 4);
    let kept = dir.write("kept.pcap", "an earlier capture\n").unwrap();
    let out = lab.floodgate(
        &["capture", "-w", kept.to_str().unwrap(), "--count", "1"],
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("readers are taking samples"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "an earlier capture\n"
    );
    for c in &mut held {
        c.signal(libc::SIGTERM);
        assert_eq!(c.wait(Duration::from_secs(10)), 0, "{:?}", c.log);
    }
}

#[test]
fn sighup_ends_a_capture_as_ctrl_c_does() {
    let lab = lab();
    let dir = TempDir::new("i8c-").unwrap();
    let before = sampling(&lab);
    let mut cap = Capture::start(&lab, &dir, "hup.pcap", &[]);
    send(&lab, &datagrams(BLOCKED_A, 3, 51000));
    cap.signal(libc::SIGHUP);
    assert_eq!(cap.wait(Duration::from_secs(10)), 0, "{:?}", cap.log);
    assert!(
        cap.log.iter().any(|l| l.contains("3 frames written")),
        "{:?}",
        cap.log
    );
    assert_eq!(sampling(&lab), before);
}

#[test]
fn a_cap_beyond_what_the_program_counts_is_refused_and_changes_nothing() {
    let lab = lab();
    let before = sampling(&lab);
    let out = lab.floodgate(&["sampling", "--cap", "1000000"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("per CPU"), "{}", out.stderr);
    assert_eq!(sampling(&lab), before);
}
