//! P3: drop rate on a veth pair with live frames. A generator of our own (BPF_PROG_TEST_RUN
//! with BPF_F_TEST_XDP_LIVE_FRAMES on an XDP_TX program in the sending namespace) floods the
//! receiving veth, where each configuration under test drops the flood: no filter (the
//! stack), a reference XDP_DROP program, xdp-filter, nftables netdev ingress, iptables raw,
//! and floodgate with 1 and 1M list entries. Two layouts: receive NAPI threaded and pinned to
//! the other CPU (packets handled per second), and sender and receiver sharing one CPU (ns per
//! packet, compared by difference with the reference drop).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use filter_common::frames::{ethernet, ipv4, ipv6, udp};
use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP};
use floodgate::lists::entries::Prefix;
use test_support::{pin_thread_to_cpu, sh, with_netns, BenchObject, BpfStats, TestPins, VethPair};

pub const VICTIM4: &str = "198.18.0.1";
pub const ATTACKER4: &str = "198.18.0.66";
pub const VICTIM6: &str = "fd00:f100::1";
pub const ATTACKER6: &str = "fd00:f100::66";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Receiver {
    Stack,
    DropAll,
    XdpFilter,
    Nftables,
    Iptables,
    Ours1,
    Ours1M,
}

impl Receiver {
    pub const ALL: [Receiver; 7] = [
        Receiver::Stack,
        Receiver::DropAll,
        Receiver::XdpFilter,
        Receiver::Nftables,
        Receiver::Iptables,
        Receiver::Ours1,
        Receiver::Ours1M,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Receiver::Stack => "no filter (kernel stack)",
            Receiver::DropAll => "reference XDP_DROP",
            Receiver::XdpFilter => "xdp-filter (src ip)",
            Receiver::Nftables => "nftables netdev ingress drop",
            Receiver::Iptables => "iptables raw PREROUTING drop",
            Receiver::Ours1 => "floodgate, 1 entry",
            Receiver::Ours1M => "floodgate, 1M entries",
        }
    }

    /// An XDP program drops the flood (its cost is in the kernel's BPF statistics).
    pub fn is_xdp(self) -> bool {
        matches!(
            self,
            Receiver::DropAll | Receiver::XdpFilter | Receiver::Ours1 | Receiver::Ours1M
        )
    }

    /// Drawn in our colour: floodgate and the reference drop.
    pub fn is_ours_or_reference(self) -> bool {
        matches!(self, Receiver::Ours1 | Receiver::Ours1M | Receiver::DropAll)
    }
}

/// The sending side's XDP_TX program (bench object): every frame as given, or each with a
/// fresh random source address (spoofed sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Generator {
    OneSource,
    RandomSource,
}

impl Generator {
    pub fn program(self) -> &'static str {
        match self {
            Generator::OneSource => "bench_tx",
            Generator::RandomSource => "bench_tx_random_source",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Receive NAPI in its own thread on CPU 1, sender on CPU 0.
    SplitCpus,
    /// Sender and receive softirq on CPU 0.
    SharedCpu,
}

pub struct VethBench {
    pub net: VethPair,
    a_ifindex: u32,
    b_ifindex: u32,
    a_mac: [u8; 6],
    b_mac: [u8; 6],
    pins: TestPins,
    floodgate: String,
    million: Vec<Prefix>,
}

impl VethBench {
    pub fn new(million: Vec<Prefix>) -> Result<Self> {
        let net = VethPair::new()?;
        let (a_ifindex, a_mac) = test_support::flood::link_info(&net.a, &net.a_if)?;
        let (b_ifindex, b_mac) = test_support::flood::link_info(&net.b, &net.b_if)?;
        net.a.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{VICTIM4}/24"),
            "dev",
            &net.a_if,
        ])?;
        net.a.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{VICTIM6}/64"),
            "dev",
            &net.a_if,
            "nodad",
        ])?;
        // Frames reach a veth only through NAPI: GRO on gives NAPI without an XDP program.
        net.a.exec(&["ethtool", "-K", &net.a_if, "gro", "on"])?;
        Ok(Self {
            net,
            a_ifindex,
            b_ifindex,
            a_mac,
            b_mac,
            pins: TestPins::new()?,
            floodgate: env!("CARGO_BIN_EXE_floodgate").to_string(),
            million,
        })
    }

    pub fn frame(&self, v6: bool) -> Vec<u8> {
        let payload = udp(40000, 9, &[0u8; 18]);
        let mut f = if v6 {
            ethernet(
                ETH_P_IPV6,
                &[],
                &ipv6(
                    ATTACKER6.parse().unwrap(),
                    VICTIM6.parse().unwrap(),
                    IPPROTO_UDP,
                    &[],
                    &payload,
                ),
            )
        } else {
            ethernet(
                ETH_P_IPV4,
                &[],
                &ipv4(
                    ATTACKER4.parse().unwrap(),
                    VICTIM4.parse().unwrap(),
                    IPPROTO_UDP,
                    &[],
                    0,
                    &payload,
                ),
            )
        };
        f[..6].copy_from_slice(&self.a_mac);
        f[6..12].copy_from_slice(&self.b_mac);
        f
    }

    fn fg(&self, args: &[&str]) -> Result<()> {
        let pin = self.pins.pins.root().to_string_lossy().into_owned();
        let mut full = vec![self.floodgate.as_str(), "--pin-dir", &pin];
        full.extend_from_slice(args);
        self.net.a.exec(&full)?;
        Ok(())
    }

    fn list_file(&self) -> Result<std::path::PathBuf> {
        let path = std::env::temp_dir().join(format!("floodgate-p3-{}.txt", std::process::id()));
        if !path.exists() {
            let text: String = self.million.iter().map(|p| format!("{p}\n")).collect();
            std::fs::write(&path, text)?;
        }
        Ok(path)
    }

    /// Put `r` in place on the receiving veth; returns what `teardown` needs.
    pub fn setup(
        &self,
        b: &mut BenchObject,
        r: Receiver,
    ) -> Result<Option<aya::programs::xdp::XdpLinkId>> {
        let a = &self.net.a;
        let dev = self.net.a_if.as_str();
        match r {
            Receiver::Stack => {}
            Receiver::DropAll => {
                let link = with_netns(&a.path(), || b.attach("bench_drop_all", self.a_ifindex))??;
                return Ok(Some(link));
            }
            Receiver::XdpFilter => {
                a.exec(&["xdp-filter", "load", "--mode", "native", dev])?;
                a.exec(&["xdp-filter", "ip", "--mode", "src", ATTACKER4])?;
                a.exec(&["xdp-filter", "ip", "--mode", "src", ATTACKER6])?;
            }
            Receiver::Nftables => {
                let rules = format!(
                    "table netdev fgbench {{\n  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0;\n    ip saddr {ATTACKER4} drop\n    ip6 saddr {ATTACKER6} drop\n  }}\n}}\n"
                );
                let file =
                    std::env::temp_dir().join(format!("floodgate-p3-{}.nft", std::process::id()));
                std::fs::write(&file, rules)?;
                let res = a.exec(&["nft", "-f", file.to_str().context("path")?]);
                std::fs::remove_file(&file)?;
                res?;
            }
            Receiver::Iptables => {
                a.exec(&[
                    "iptables",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-s",
                    ATTACKER4,
                    "-j",
                    "DROP",
                ])?;
                a.exec(&[
                    "ip6tables",
                    "-t",
                    "raw",
                    "-A",
                    "PREROUTING",
                    "-s",
                    ATTACKER6,
                    "-j",
                    "DROP",
                ])?;
            }
            Receiver::Ours1 => {
                self.fg(&["attach", "--mode", "native", dev])?;
                self.fg(&["block", "add", ATTACKER4, ATTACKER6])?;
            }
            Receiver::Ours1M => {
                self.fg(&["attach", "--mode", "native", dev])?;
                let file = self.list_file()?;
                self.fg(&["block", "load", file.to_str().context("path")?])?;
                self.fg(&["block", "add", ATTACKER4, ATTACKER6])?;
            }
        }
        Ok(None)
    }

    pub fn teardown(
        &self,
        b: &mut BenchObject,
        r: Receiver,
        link: Option<aya::programs::xdp::XdpLinkId>,
    ) -> Result<()> {
        let a = &self.net.a;
        let dev = self.net.a_if.as_str();
        match r {
            Receiver::Stack => {}
            Receiver::DropAll => b.detach("bench_drop_all", link.context("no link")?)?,
            Receiver::XdpFilter => {
                a.exec(&["xdp-filter", "unload", dev])?;
                remove_xdp_filter_pins();
            }
            Receiver::Nftables => {
                a.exec(&["nft", "delete", "table", "netdev", "fgbench"])?;
            }
            Receiver::Iptables => {
                a.exec(&["iptables", "-t", "raw", "-F", "PREROUTING"])?;
                a.exec(&["ip6tables", "-t", "raw", "-F", "PREROUTING"])?;
            }
            Receiver::Ours1 | Receiver::Ours1M => self.fg(&["detach", "--all"])?,
        }
        Ok(())
    }

    fn set_layout(&self, layout: Layout) -> Result<()> {
        let threaded = if layout == Layout::SplitCpus {
            "1"
        } else {
            "0"
        };
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.net.a.name,
            "sh",
            "-c",
            &format!(
                "echo {threaded} > /sys/class/net/{}/threaded",
                self.net.a_if
            ),
        ])?;
        if layout == Layout::SplitCpus {
            let pids = napi_threads(&self.net.a_if)?;
            if pids.is_empty() {
                bail!("no NAPI thread for {}", self.net.a_if);
            }
            for pid in pids {
                sh(&["taskset", "-pc", "1", &pid.to_string()])?;
            }
        }
        Ok(())
    }

    /// The sending veth's ethtool statistics (`tx_queue_0_xdp_xmit`: frames the receiver's
    /// ring took; `tx_queue_0_xdp_xmit_errors`: frames it refused, full).
    pub fn sender_stats(&self) -> Result<HashMap<String, u64>> {
        ethtool_stats(&self.net.b, &self.net.b_if)
    }

    /// Flood `count` frames; returns (frames accepted by the receiving veth, seconds).
    pub fn flood(
        &self,
        b: &BenchObject,
        layout: Layout,
        frame: &[u8],
        count: u32,
    ) -> Result<(u64, f64)> {
        self.flood_from(b, layout, Generator::OneSource, frame, count)
    }

    /// As [`flood`](Self::flood), with the generator `gen`.
    pub fn flood_from(
        &self,
        b: &BenchObject,
        layout: Layout,
        gen: Generator,
        frame: &[u8],
        count: u32,
    ) -> Result<(u64, f64)> {
        self.set_layout(layout)?;
        let before = self.sender_stats()?;
        let ns = self.net.b.path();
        let elapsed = std::thread::scope(|s| {
            s.spawn(|| -> Result<Duration> {
                pin_thread_to_cpu(0)?;
                with_netns(&ns, || {
                    b.live_frames(gen.program(), frame, self.b_ifindex, count)
                })?
            })
            .join()
            .expect("sender panicked")
        })?;
        std::thread::sleep(Duration::from_millis(50));
        let after = self.sender_stats()?;
        let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        // XDP_TX on a veth hands frames to the peer's ring: xdp_xmit counts the ones it took,
        // xdp_xmit_errors the ones refused because the receiver fell behind.
        let accepted = d("tx_queue_0_xdp_xmit");
        Ok((accepted, elapsed.as_secs_f64()))
    }
}

/// One flood with the kernel's BPF statistics on.
pub struct StatsFlood {
    /// The attached program's run_time_ns / run_cnt over the flood.
    pub ns_per_run: f64,
    pub runs: u64,
    /// Packets the receiver took per second during this flood.
    pub mpps: f64,
}

impl VethBench {
    /// The id of the XDP program attached to the receiving veth (`ip -d -j link`).
    pub fn attached_prog_id(&self) -> Result<u32> {
        let out = self
            .net
            .a
            .exec(&["ip", "-d", "-j", "link", "show", "dev", &self.net.a_if])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("ip -j link output")?;
        let xdp = &v[0]["xdp"];
        xdp["prog"]["id"]
            .as_u64()
            .or_else(|| {
                xdp["attached"]
                    .as_array()?
                    .iter()
                    .find_map(|a| a["prog"]["id"].as_u64())
            })
            .map(|id| id as u32)
            .with_context(|| format!("no XDP program on {}: {out}", self.net.a_if))
    }

    /// Flood `count` frames (split layout) with `kernel.bpf_stats_enabled` on for the flood
    /// only (restored after it, also on error), and read the attached program's run time and
    /// run count before and after: its in-situ cost per packet under the real flood.
    pub fn flood_bpf_stats(&self, b: &BenchObject, frame: &[u8], count: u32) -> Result<StatsFlood> {
        self.flood_bpf_stats_from(b, Generator::OneSource, frame, count)
    }

    /// As [`flood_bpf_stats`](Self::flood_bpf_stats), with the generator `gen`.
    pub fn flood_bpf_stats_from(
        &self,
        b: &BenchObject,
        gen: Generator,
        frame: &[u8],
        count: u32,
    ) -> Result<StatsFlood> {
        let id = self.attached_prog_id()?;
        let stats = BpfStats::enable()?;
        let before = prog_run_stats(id)?;
        let flood = self.flood_from(b, Layout::SplitCpus, gen, frame, count);
        let after = prog_run_stats(id);
        drop(stats);
        let (handled, secs) = flood?;
        let after = after?;
        let runs = after.1.saturating_sub(before.1);
        if runs == 0 {
            bail!("program {id} did not run during the flood");
        }
        Ok(StatsFlood {
            ns_per_run: after.0.saturating_sub(before.0) as f64 / runs as f64,
            runs,
            mpps: handled as f64 / secs / 1e6,
        })
    }
}

/// The kernel's (run_time_ns, run_cnt) of program `id` (zeros while stats were never on).
pub fn prog_run_stats(id: u32) -> Result<(u64, u64)> {
    let out = sh(&["bpftool", "prog", "show", "id", &id.to_string(), "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("bpftool prog show output")?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

impl Drop for VethBench {
    fn drop(&mut self) {
        remove_xdp_filter_pins();
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("floodgate-p3-{}.txt", std::process::id())),
        );
    }
}

/// xdp-filter cannot use libxdp's dispatcher here (EPERM) and leaves its pins behind.
fn remove_xdp_filter_pins() {
    for dir in ["/sys/fs/bpf/xdp-filter", "/sys/fs/bpf/xdp"] {
        if Path::new(dir).exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn ethtool_stats(ns: &test_support::Netns, dev: &str) -> Result<HashMap<String, u64>> {
    let out = ns.exec(&["ethtool", "-S", dev])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

fn napi_threads(dev: &str) -> Result<Vec<u32>> {
    let prefix = format!("napi/{dev}-");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            // comm is cut at 15 bytes; match its prefix.
            let comm = comm.trim();
            if prefix.starts_with(comm) || comm.starts_with(&prefix) {
                out.push(pid);
            }
        }
    }
    Ok(out)
}

/// The legitimate client of P4: an address of its own on the sending veth.
pub const LEGIT4: &str = "198.18.0.2";
/// Where the legitimate client sends (a socket of the bench in the receiving namespace).
pub const LEGIT_PORT: u16 = 7777;

/// What the legitimate client sent and what reached its receiver.
#[derive(Clone, Debug, Default)]
pub struct LegitTally {
    pub sent: u64,
    pub received: u64,
    /// The receiving namespace's UDP receive-buffer overflows over the exchange (loss that is
    /// the bench's, not the filter's).
    pub rcvbuf_errors: u64,
    /// Packets the sending veth could not hand over because the receiver's ring was full of
    /// flood frames (the sending namespace's UDP `SndbufErrors`: the veth's drop surfaces as
    /// ENOBUFS, which UDP counts there): lost before any XDP program sees them.
    pub ring_drops: u64,
    /// When each packet that reached the receiver arrived (first copy of each).
    pub arrivals: Vec<std::time::Instant>,
}

impl LegitTally {
    /// Packets that reached the receiving veth's XDP program.
    pub fn reached(&self) -> u64 {
        self.sent.saturating_sub(self.ring_drops)
    }

    /// Lost anywhere, in percent of those sent.
    pub fn loss_percent(&self) -> f64 {
        100.0 * self.sent.saturating_sub(self.received) as f64 / self.sent.max(1) as f64
    }

    /// Lost after reaching the filter (and not in the socket buffer), in percent of those
    /// that reached it.
    pub fn filter_loss_percent(&self) -> f64 {
        let lost = self
            .reached()
            .saturating_sub(self.received + self.rcvbuf_errors);
        100.0 * lost as f64 / self.reached().max(1) as f64
    }
}

impl VethBench {
    /// Attach floodgate (native, small list pool) and apply the policy file at `policy`.
    pub fn setup_policy(&self, policy: &Path) -> Result<()> {
        let dev = self.net.a_if.as_str();
        self.fg(&["attach", "--mode", "native", "--list-capacity", "64k", dev])?;
        let applied = self.fg(&["apply", "--force", policy.to_str().context("path")?]);
        if applied.is_err() {
            let _ = self.fg(&["detach", "--all"]);
        }
        applied
    }

    /// Apply another policy file to the attached filter.
    pub fn apply(&self, policy: &Path) -> Result<()> {
        self.fg(&["apply", "--force", policy.to_str().context("path")?])
    }

    pub fn teardown_policy(&self) -> Result<()> {
        self.fg(&["detach", "--all"])
    }

    /// floodgate's counters for the receiving veth: packets per reason.
    pub fn counters(&self) -> Result<HashMap<&'static str, u64>> {
        let all = floodgate::observe::stats::read(&self.pins.pins)?;
        let iface = all
            .into_iter()
            .find(|i| i.interface == self.net.a_if)
            .context("no counters for the receiving veth")?;
        Ok(iface
            .reasons
            .into_iter()
            .map(|(k, v)| (k, v.packets))
            .collect())
    }

    /// Per-source buckets in floodgate's LRU table (one syscall per entry).
    pub fn source_buckets(&self) -> Result<usize> {
        use filter_common::limits::{Bucket, SourceKey};
        let map = self
            .pins
            .pins
            .open_map(filter_common::maps::SOURCE_BUCKETS)?;
        let t: aya::maps::HashMap<_, SourceKey, Bucket> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(map))?;
        Ok(t.keys().count())
    }

    /// Give the sending namespace the legitimate client's address, with the receiver's MAC
    /// as a permanent neighbour (no ARP to lose under a flood).
    pub fn enable_legit_client(&self) -> Result<()> {
        let b = &self.net.b;
        let dev = self.net.b_if.as_str();
        let has = b.exec(&["ip", "-o", "addr", "show", "dev", dev])?;
        if !has.contains(&format!("{LEGIT4}/")) {
            b.exec(&["ip", "addr", "add", &format!("{LEGIT4}/24"), "dev", dev])?;
        }
        let m = self.a_mac;
        let lladdr = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        b.exec(&[
            "ip",
            "neigh",
            "replace",
            VICTIM4,
            "lladdr",
            &lladdr,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// UDP counter `name` (`/proc/net/snmp`) of namespace `ns`.
    fn udp_counter(ns: &test_support::Netns, name: &str) -> Result<u64> {
        let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next(), udp.next());
        let (Some(names), Some(values)) = (names, values) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        let at = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no Udp {name}"))?;
        Ok(values
            .split_whitespace()
            .nth(at)
            .context("short Udp line")?
            .parse()?)
    }

    /// Run `during` while the legitimate client sends up to `max` UDP packets at `pps` from
    /// [`LEGIT4`] (a socket in the sending namespace; bounded by count, by `during` ending and
    /// by 30 s), and count the ones a socket in the receiving namespace gets.
    pub fn with_legit_client<T>(
        &self,
        pps: u32,
        max: u32,
        during: impl FnOnce() -> Result<T>,
    ) -> Result<(T, LegitTally)> {
        use std::net::{SocketAddr, UdpSocket};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Instant;
        let to: SocketAddr = format!("{VICTIM4}:{LEGIT_PORT}").parse()?;
        let rx = with_netns(&self.net.a.path(), || UdpSocket::bind(to))??;
        // Room for every packet even if the reader gets no CPU until the end.
        let size: libc::c_int = 32 << 20;
        // SAFETY: setsockopt on a socket we own, with a c_int value.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
        let tx = with_netns(&self.net.b.path(), || {
            UdpSocket::bind(format!("{LEGIT4}:0"))
        })??;
        let tag: u32 = rand::random();
        let errors_before = Self::udp_counter(&self.net.a, "RcvbufErrors")?;
        let ring_before = Self::udp_counter(&self.net.b, "SndbufErrors")?;
        let done = AtomicBool::new(false);
        let sent_all = AtomicBool::new(false);
        let (out, sent, received, arrivals) = std::thread::scope(|s| {
            let sender = s.spawn(|| -> u64 {
                let started = Instant::now();
                let mut sent = 0u64;
                for seq in 0..max {
                    if done.load(Ordering::Relaxed) || started.elapsed().as_secs() >= 30 {
                        break;
                    }
                    let at = Duration::from_secs_f64(f64::from(seq) / f64::from(pps));
                    if let Some(wait) = at.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let mut msg = [0u8; 18];
                    msg[..4].copy_from_slice(&tag.to_be_bytes());
                    msg[4..8].copy_from_slice(&seq.to_be_bytes());
                    if tx.send_to(&msg, to).is_ok() {
                        sent += 1;
                    }
                }
                sent_all.store(true, Ordering::Relaxed);
                sent
            });
            let receiver = s.spawn(|| -> (u64, Vec<Instant>) {
                let mut seen = vec![false; max as usize];
                let mut arrivals = Vec::new();
                let mut buf = [0u8; 64];
                let mut quiet_since: Option<Instant> = None;
                let started = Instant::now();
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) if n >= 8 && buf[..4] == tag.to_be_bytes() => {
                            let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                            if let Some(s) = seen.get_mut(seq as usize) {
                                if !*s {
                                    arrivals.push(Instant::now());
                                }
                                *s = true;
                            }
                            quiet_since = None;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            // Stop once the sender is done and nothing came for 300 ms.
                            if sent_all.load(Ordering::Relaxed) {
                                let q = *quiet_since.get_or_insert_with(Instant::now);
                                if q.elapsed() > Duration::from_millis(300) {
                                    break;
                                }
                            }
                        }
                    }
                    if started.elapsed().as_secs() >= 60 {
                        break;
                    }
                }
                (seen.iter().filter(|&&s| s).count() as u64, arrivals)
            });
            let out = during();
            done.store(true, Ordering::Relaxed);
            let sent = sender.join().expect("legit sender panicked");
            let (received, arrivals) = receiver.join().expect("legit receiver panicked");
            (out, sent, received, arrivals)
        });
        let rcvbuf_errors =
            Self::udp_counter(&self.net.a, "RcvbufErrors")?.saturating_sub(errors_before);
        let ring_drops =
            Self::udp_counter(&self.net.b, "SndbufErrors")?.saturating_sub(ring_before);
        Ok((
            out?,
            LegitTally {
                sent,
                received,
                rcvbuf_errors,
                ring_drops,
                arrivals,
            },
        ))
    }
}
