//! Floods across a veth pair, for the flood-mitigation end-to-end tests: a lab of two throwaway
//! namespaces where only the test's own packets cross the filter (IPv6 off, static
//! neighbours), paced UDP senders from many source addresses, a counting receiver, a
//! random-source flood from the bench object's XDP_TX generator on every CPU, and the
//! `floodgate run` daemon as a child that is killed and reaped on drop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use filter_common::{Counter, Reason};

use crate::{pin_thread_to_cpu, sh, unique_name, with_netns, BenchObject, Netns, TestPins};
use crate::{VethPair, TEST_POOL_NODES};

/// The victim's address on the receiving veth (`a`).
pub const VICTIM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Two namespaces joined by a veth pair with `queues` queues per end; the filter's pins live in
/// `dir`. `a` receives (the filter attaches there), `b` holds the clients and attackers.
pub struct Lab {
    pub net: VethPair,
    pub dir: TestPins,
    pub a_ifindex: u32,
    pub b_ifindex: u32,
    pub a_mac: [u8; 6],
    pub b_mac: [u8; 6],
    bin: PathBuf,
}

fn mac(text: &str) -> Result<[u8; 6]> {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address: {text}");
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16)?;
    }
    Ok(out)
}

/// Interface index and MAC address of `dev` in `ns`.
pub fn link_info(ns: &Netns, dev: &str) -> Result<(u32, [u8; 6])> {
    let out = ns.exec(&["ip", "-o", "link", "show", "dev", dev])?;
    let idx: u32 = out
        .split(':')
        .next()
        .context("ip link output")?
        .trim()
        .parse()?;
    let m = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .context("no MAC in ip link output")?;
    Ok((idx, mac(m)?))
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The output of a command, for assertions.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Lab {
    /// A fresh lab; `bin` is the `floodgate` binary the commands run.
    pub fn new(bin: &str, queues: u32) -> Result<Lab> {
        Self::named(bin, queues, "fg")
    }

    /// A fresh lab whose namespaces, interfaces and pin directory are named `PREFIX...`.
    pub fn named(bin: &str, queues: u32, prefix: &str) -> Result<Lab> {
        let a = Netns::new(&format!("{prefix}a"))?;
        let b = Netns::new(&format!("{prefix}b"))?;
        // Off before the veth exists, so its ends never get an IPv6 address: no router
        // solicitation or MLD report ever crosses the filter.
        for ns in [&a, &b] {
            ns.exec(&[
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        let a_if = unique_name(&format!("{prefix}va"));
        let b_if = unique_name(&format!("{prefix}vb"));
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &a_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &a.name,
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &b.name,
        ])?;
        let net = VethPair { a, b, a_if, b_if };
        net.a.exec(&["ip", "link", "set", &net.a_if, "up"])?;
        net.b.exec(&["ip", "link", "set", &net.b_if, "up"])?;
        net.a.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{VICTIM}/24"),
            "dev",
            &net.a_if,
        ])?;
        let (a_ifindex, a_mac) = link_info(&net.a, &net.a_if)?;
        let (b_ifindex, b_mac) = link_info(&net.b, &net.b_if)?;
        net.b.exec(&[
            "ip",
            "neigh",
            "replace",
            &VICTIM.to_string(),
            "lladdr",
            &mac_text(&a_mac),
            "dev",
            &net.b_if,
            "nud",
            "permanent",
        ])?;
        Ok(Lab {
            net,
            dir: TestPins::named(&format!("{prefix}test-"))?,
            a_ifindex,
            b_ifindex,
            a_mac,
            b_mac,
            bin: PathBuf::from(bin),
        })
    }

    /// Give the sending end these addresses (with static neighbour entries on the victim's
    /// side, so replies need no ARP).
    pub fn add_sources(&self, sources: &[Ipv4Addr]) -> Result<()> {
        for s in sources {
            self.net.b.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{s}/24"),
                "dev",
                &self.net.b_if,
            ])?;
            self.net.a.exec(&[
                "ip",
                "neigh",
                "replace",
                &s.to_string(),
                "lladdr",
                &mac_text(&self.b_mac),
                "dev",
                &self.net.a_if,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    /// `floodgate --pin-dir DIR ARGS` in the victim's namespace, with `env` set and no
    /// `SSH_CONNECTION` unless `env` gives one (the lockout guard reads it).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.net.a.path().display()))
            .arg("--")
            .arg(&self.bin)
            .arg("--pin-dir")
            .arg(self.dir.pins.root())
            .args(args)
            .env_remove("SSH_CONNECTION")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Receive processing of the victim's end in kernel threads of its own (threaded NAPI)
    /// rather than in the softirq of whichever thread sent: frames then wait in the ring and
    /// are judged in arrival order, as from a NIC, whoever is running. Needs NAPI (an XDP
    /// program attached).
    pub fn threaded_napi(&self) -> Result<()> {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.net.a.name,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", self.net.a_if),
        ])?;
        Ok(())
    }

    /// Run the controller to completion.
    pub fn floodgate(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        self.command(args, env)
            .stdin(Stdio::null())
            .output()
            .expect("running floodgate")
            .into()
    }

    /// Run the controller; it must succeed. Its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.floodgate(args, &[]);
        assert_eq!(
            r.code, 0,
            "floodgate {args:?} failed ({}): {}",
            r.code, r.stderr
        );
        r.stdout
    }

    /// `status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status --json")
    }

    /// Packets per reason on the victim's interface (`stats --json`).
    pub fn counters(&self) -> HashMap<Reason, u64> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats --json");
        let iface = v["interfaces"]
            .as_array()
            .expect("stats interfaces")
            .iter()
            .find(|i| i["interface"] == self.net.a_if.as_str())
            .unwrap_or_else(|| panic!("{} not in stats: {v}", self.net.a_if));
        Reason::ALL
            .iter()
            .map(|r| {
                let n = iface["reasons"][r.name()]["packets"]
                    .as_u64()
                    .expect("packets");
                (*r, n)
            })
            .collect()
    }

    /// Packets the limit `name` of the policy in force refused (or would have), summed over
    /// CPUs, from its pinned counter.
    pub fn limit_refusals(&self, name: &str) -> Result<u64> {
        let pins = &self.dir.pins;
        let slot = {
            let session = floodgate::state::Session::open(pins)?;
            let snapshot = session.current()?;
            *snapshot
                .policy
                .limit_slots
                .get(name)
                .with_context(|| format!("no limit {name} in force"))?
        };
        let map = pins.open_map(filter_common::maps::LIMIT_COUNTERS)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let sums = floodgate::state::raw::percpu_array_sums::<Counter>(
            &map,
            filter_common::limits::MAX_LIMITS,
            cpus,
            |a, b| a.packets += b.packets,
        )?;
        Ok(sums[slot as usize].packets)
    }

    /// Start `floodgate -v run --config CONFIG EXTRA...` in the victim's namespace; its log
    /// (standard error) goes to a file in /tmp, removed with the [`Daemon`].
    pub fn spawn_daemon(&self, config: &Path, extra: &[&str]) -> Result<Daemon> {
        let log = std::env::temp_dir().join(unique_name("fgdaemon-"));
        let file = std::fs::File::create(&log)?;
        let mut args = vec!["-v", "run", "--config"];
        let config = config.to_str().context("config path")?;
        args.push(config);
        args.extend_from_slice(extra);
        // nsenter execs floodgate in place (no fork for a network namespace): the child's
        // pid is the daemon's.
        let child = match self
            .command(&args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&log);
                return Err(e).context("spawning floodgate run");
            }
        };
        Ok(Daemon {
            child: Some(child),
            log,
        })
    }

    /// An IPv4 UDP frame from `src` to the victim, addressed to its MAC.
    pub fn frame_to_victim(&self, src: Ipv4Addr, dport: u16) -> Vec<u8> {
        use filter_common::frames::{ethernet, ipv4, udp};
        use filter_common::parse::{ETH_P_IPV4, IPPROTO_UDP};
        let payload = udp(40000, dport, &[0u8; 18]);
        let mut f = ethernet(
            ETH_P_IPV4,
            &[],
            &ipv4(src, VICTIM, IPPROTO_UDP, &[], 0, &payload),
        );
        f[..6].copy_from_slice(&self.a_mac);
        f[6..12].copy_from_slice(&self.b_mac);
        f
    }
}

/// Pids of running processes whose command line names `needle` (a pin directory, say).
pub fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.as_os_str().as_encoded_bytes().to_vec();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // A zombie has an empty command line: it runs nothing.
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg.windows(needle.len()).any(|w| w == needle.as_slice()))
        {
            out.push(pid);
        }
    }
    out
}

/// The `floodgate run` child: killed (SIGKILL) and reaped on drop if still running; its log
/// file is removed then.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running (not exited)?
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Wait until the log holds `needle` at least `count` times; fails if the daemon exits or
    /// `timeout` passes.
    pub fn wait_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if text.matches(needle).count() >= count {
                return Ok(());
            }
            if !self.running() {
                bail!("the daemon exited while waiting for {needle:?}; its log:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} (x{count}) in the daemon's log within {timeout:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `signal` to the daemon (by its pid, only while it has not been reaped).
    pub fn signal(&mut self, signal: i32) {
        if self.running() {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped (so the pid
            // cannot have been reused).
            unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        }
    }

    /// Wait for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not exit within {timeout:?}; its log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // Child::kill sends SIGKILL to this child's pid only.
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A directory in /tmp removed (with its contents) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    /// Write `name` in it (replacing it in place, as `>` in a shell does); its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Enter the network namespace at `ns` on the calling thread for good (a thread of our own).
fn enter_netns(ns: &Path) -> Result<()> {
    let file = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
    // SAFETY: setns on an fd we own, affecting only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// One paced UDP flow: a source address of the sending end and its rate.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub pps: u64,
}

/// What a paced sender sent.
#[derive(Debug, Default)]
pub struct Sent {
    /// Datagrams sent, per source.
    pub per_source: HashMap<Ipv4Addr, u64>,
    /// Of those, how many the sending veth refused because the receiving end's ring was full
    /// (ENOBUFS): they never reached the filter.
    pub refused: HashMap<Ipv4Addr, u64>,
    /// From the first send to the last.
    pub span: Duration,
    pub started: Option<Instant>,
}

impl Sent {
    /// Datagrams from `src` that reached the receiving end (and so the filter).
    pub fn delivered(&self, src: Ipv4Addr) -> u64 {
        self.per_source[&src] - self.refused.get(&src).copied().unwrap_or(0)
    }
}

/// A UDP socket bound to `src` that reports a full veth ring as ENOBUFS (IP_RECVERR) instead of
/// dropping the datagram silently.
fn sending_socket(src: Ipv4Addr) -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a c_int and its size, on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("IP_RECVERR");
    }
    Ok(s)
}

/// Send UDP datagrams (32-byte payloads) to `VICTIM:port` from every flow at its rate for
/// `duration`, from one thread in namespace `ns`. Paced against the clock in steps of about
/// half a millisecond: a late step sends what is due, so each flow sends its rate times the
/// duration (and never more).
pub fn send_udp(ns: &Netns, flows: &[Flow], port: u16, duration: Duration) -> Result<Sent> {
    let path = ns.path();
    let flows = flows.to_vec();
    std::thread::spawn(move || -> Result<Sent> {
        enter_netns(&path)?;
        let to = SocketAddr::new(IpAddr::V4(VICTIM), port);
        let sockets: Vec<UdpSocket> = flows
            .iter()
            .map(|f| sending_socket(f.src))
            .collect::<Result<_>>()?;
        let payload = [0x5au8; 32];
        let mut sent = vec![0u64; flows.len()];
        let mut refused = vec![0u64; flows.len()];
        let total: Vec<u64> = flows
            .iter()
            .map(|f| (f.pps as u128 * duration.as_nanos() / 1_000_000_000) as u64)
            .collect();
        let started = Instant::now();
        let mut last = started;
        loop {
            let elapsed = started.elapsed().min(duration);
            for (i, f) in flows.iter().enumerate() {
                let due = ((f.pps as u128 * elapsed.as_nanos()) / 1_000_000_000) as u64 + 1;
                while sent[i] < due.min(total[i]) {
                    match sockets[i].send_to(&payload, to) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => refused[i] += 1,
                        Err(e) => return Err(e).context("sending"),
                    }
                    sent[i] += 1;
                    last = Instant::now();
                }
            }
            if elapsed >= duration {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(Sent {
            per_source: flows.iter().map(|f| f.src).zip(sent).collect(),
            refused: flows.iter().map(|f| f.src).zip(refused).collect(),
            span: last - started,
            started: Some(started),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
}

/// What a receiver got.
#[derive(Debug, Default)]
pub struct Received {
    pub per_source: HashMap<IpAddr, u64>,
    /// Arrival times per source.
    pub times: HashMap<IpAddr, Vec<Instant>>,
}

impl Received {
    pub fn from(&self, src: Ipv4Addr) -> u64 {
        self.per_source.get(&IpAddr::V4(src)).copied().unwrap_or(0)
    }
}

/// A UDP socket on `VICTIM` in the victim's namespace, counting datagrams per source on a
/// thread of its own until [`Receiver::finish`].
pub struct Receiver {
    pub port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Received>>>,
}

impl Receiver {
    pub fn start(ns: &Netns) -> Result<Receiver> {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || -> Result<Received> {
            let socket = (|| -> Result<UdpSocket> {
                enter_netns(&path)?;
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                s.set_recv_buffer_size(8 << 20)?;
                s.bind(&SocketAddr::new(IpAddr::V4(VICTIM), 0).into())?;
                let s: UdpSocket = s.into();
                s.set_read_timeout(Some(Duration::from_millis(10)))?;
                Ok(s)
            })();
            let socket = match socket {
                Ok(s) => {
                    let _ = tx.send(Ok(s.local_addr()?.port()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let mut got = Received::default();
            let mut buf = [0u8; 2048];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((_, from)) => {
                        quiet_since = None;
                        *got.per_source.entry(from.ip()).or_default() += 1;
                        got.times.entry(from.ip()).or_default().push(Instant::now());
                    }
                    Err(_) => {
                        if flag.load(Ordering::Relaxed) {
                            // Stopped: drain until 100 ms pass without a datagram.
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_millis(100) {
                                break;
                            }
                        }
                    }
                }
            }
            Ok(got)
        });
        let port = rx
            .recv()
            .context("receiver thread")?
            .map_err(|e| anyhow::anyhow!("receiver: {e}"))?;
        Ok(Receiver {
            port,
            stop,
            handle: Some(handle),
        })
    }

    /// Stop after what is in flight has arrived; what came from whom.
    pub fn finish(mut self) -> Result<Received> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .context("finished twice")?
            .join()
            .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The bench object's XDP_TX generator (`bench_tx_random_source`), loaded into throwaway pins
/// of its own.
pub struct RandomFlood {
    bench: BenchObject,
}

/// What one generator thread handed to the veth.
#[derive(Debug)]
pub struct FloodThread {
    pub cpu: usize,
    pub frames: u64,
    pub elapsed: Duration,
}

impl RandomFlood {
    pub fn new() -> Result<Self> {
        Ok(Self {
            bench: BenchObject::new(TEST_POOL_NODES)?,
        })
    }

    /// From every CPU, send `frame` with a fresh random IPv4 source per copy out of the
    /// sending end of `lab`, in runs of `chunk` frames, until `duration` has passed (and at
    /// most `max_frames` per CPU).
    pub fn run(
        &self,
        lab: &Lab,
        frame: &[u8],
        duration: Duration,
        chunk: u32,
        max_frames: u64,
    ) -> Result<Vec<FloodThread>> {
        let cpus = aya::util::online_cpus()
            .map_err(|(_, e)| e)?
            .into_iter()
            .map(|c| c as usize)
            .collect::<Vec<_>>();
        let ns = lab.net.b.path();
        std::thread::scope(|s| {
            let handles: Vec<_> = cpus
                .iter()
                .map(|&cpu| {
                    let ns = ns.clone();
                    s.spawn(move || -> Result<FloodThread> {
                        pin_thread_to_cpu(cpu)?;
                        with_netns(&ns, || -> Result<FloodThread> {
                            let started = Instant::now();
                            let mut frames = 0u64;
                            while started.elapsed() < duration && frames < max_frames {
                                self.bench.live_frames(
                                    "bench_tx_random_source",
                                    frame,
                                    lab.b_ifindex,
                                    chunk,
                                )?;
                                frames += u64::from(chunk);
                            }
                            Ok(FloodThread {
                                cpu,
                                frames,
                                elapsed: started.elapsed(),
                            })
                        })?
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
                })
                .collect()
        })
    }
}
