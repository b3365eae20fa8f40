//! Test and bench fixtures, outside the product: throwaway pin directories, the program under
//! BPF_PROG_TEST_RUN, the bench object, network namespaces with veth pairs, and generators of
//! real-world-shaped lists. Every fixture removes what it created on drop, so a failing test
//! leaves nothing behind.

pub mod flood;
pub mod gen;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use aya::maps::MapData;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use filter_common::{Counter, ListKind, MalformedPolicy, Reason, REASON_SLOTS};
use floodgate::lists::entries::Prefix;
use floodgate::lists::{self, Edit};
use floodgate::state::attach::ensure_loaded;
use floodgate::state::{maps, PinDir};

/// The bench object (filter-ebpf's `floodgate-bench`), built by this crate's build script.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floodgate-bench"));

/// Node pool for test pin directories: enough for the tests' lists, small enough to load fast.
pub const TEST_POOL_NODES: u32 = 1 << 17;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: interface names must fit in 15 bytes.
pub fn unique_name(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xfffff)
}

/// Fail clearly when not root instead of producing confusing EPERMs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load XDP programs and create network namespaces: run them as root (cargo xtask test)"
    );
}

/// A pin directory under /sys/fs/bpf unique to the test, removed (with every pin) on drop.
pub struct TestPins {
    pub pins: PinDir,
}

impl TestPins {
    pub fn new() -> Result<Self> {
        Self::with_prefix("fgtest-")
    }

    /// A pin directory `/sys/fs/bpf/PREFIX...`.
    pub fn with_prefix(prefix: &str) -> Result<Self> {
        let root = PathBuf::from("/sys/fs/bpf").join(unique_name(prefix));
        let pins = PinDir::new(root)?;
        drop(floodgate::state::pins::Locked::creating(&pins)?);
        Ok(Self { pins })
    }
}

/// Replace list `kind` with `prefixes`, as `block load --replace` does.
pub fn set_list(pins: &PinDir, kind: ListKind, prefixes: &[Prefix]) -> Result<()> {
    lists::change(pins, kind, Edit::Replace(prefixes.to_vec()))?;
    Ok(())
}

/// Set the malformed-packet policy, as `floodgate policy --malformed` does.
pub fn set_malformed_policy(pins: &PinDir, policy: MalformedPolicy) -> Result<()> {
    floodgate::policy::apply::set_malformed(pins, policy == MalformedPolicy::Pass)?;
    Ok(())
}

impl Drop for TestPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.pins.root());
    }
}

/// The production program loaded into a throwaway pin directory, run through
/// BPF_PROG_TEST_RUN. Test runs see ingress ifindex 1 (lo), counted in slot 0.
pub struct Harness {
    pub dir: TestPins,
    prog: Xdp,
    counters: MapData,
    ncpus: usize,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

impl Harness {
    pub fn new() -> Result<Self> {
        Self::with_pool(TEST_POOL_NODES)
    }

    /// The program with a list pool of `pool_nodes` nodes.
    pub fn with_pool(pool_nodes: u32) -> Result<Self> {
        let dir = TestPins::new()?;
        ensure_loaded(&dir.pins, pool_nodes)?;
        let prog = Xdp::from_pin(dir.pins.prog(), XdpAttachType::Interface)?;
        let counters = maps::counters_raw(&dir.pins)?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        Ok(Self {
            dir,
            prog,
            counters,
            ncpus,
        })
    }

    pub fn pins(&self) -> &PinDir {
        &self.dir.pins
    }

    /// Packets per reason in slot 0 (test runs), summed over CPUs: one syscall.
    fn totals(&self) -> Result<[u64; REASON_SLOTS as usize]> {
        let sums = floodgate::state::raw::percpu_array_sums::<Counter>(
            &self.counters,
            REASON_SLOTS,
            self.ncpus,
            |a, b| a.packets += b.packets,
        )?;
        let mut out = [0u64; REASON_SLOTS as usize];
        for (o, c) in out.iter_mut().zip(sums) {
            *o = c.packets;
        }
        Ok(out)
    }

    /// XDP action and the reason the program counted for one frame.
    pub fn verdict(&self, frame: &[u8]) -> Result<(u32, Reason)> {
        let before = self.totals()?;
        let action = self.run(frame, 1)?.0;
        let after = self.totals()?;
        let changed: Vec<usize> = (0..REASON_SLOTS as usize)
            .filter(|&r| after[r] != before[r])
            .collect();
        match changed.as_slice() {
            [r] if after[*r] == before[*r] + 1 => Ok((
                action,
                Reason::from_u32(*r as u32).context("unknown reason")?,
            )),
            _ => bail!("expected exactly one counter to move by one, got {before:?} -> {after:?}"),
        }
    }

    /// Run `frame` `repeat` times; returns the action and the kernel's mean ns per run.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        run_frame(&self.prog, frame, repeat)
    }
}

/// BPF_PROG_TEST_RUN of `frame`, `repeat` times: the XDP action and the kernel's mean ns.
pub fn run_frame(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat;
    let r = prog.test_run(opts)?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// Run a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace that is deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Run a command inside the namespace (network only: bpffs pins stay visible).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let net = format!("--net=/run/netns/{}", self.name);
        let mut full = vec!["nsenter", net.as_str(), "--"];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth ends (and their peers) too.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` receives (the filter attaches there), `b` sends.
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
}

impl VethPair {
    pub fn new() -> Result<Self> {
        let a = Netns::new("fga")?;
        let b = Netns::new("fgb")?;
        let a_if = unique_name("fgva");
        let b_if = unique_name("fgvb");
        sh(&[
            "ip", "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if,
            "netns", &b.name,
        ])?;
        a.exec(&["ip", "link", "set", &a_if, "up"])?;
        b.exec(&["ip", "link", "set", &b_if, "up"])?;
        Ok(Self { a, b, a_if, b_if })
    }
}

/// Run `f` on a thread that has entered the network namespace at `ns` (setns is per thread),
/// so sockets it opens live in that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&ns).with_context(|| format!("open {}", ns.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an fd we own, affecting only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Every program of the bench object loaded once, sharing the pinned maps of a throwaway pin
/// directory (filled with `lists::change`) and one set of bench-only LPM tries.
pub struct BenchObject {
    pub dir: TestPins,
    ebpf: aya::Ebpf,
    /// The product program itself (pinned by the product load), run as "floodgate".
    product: Xdp,
}

pub const BENCH_PROGRAMS: &[&str] = &[
    "bench_random_source",
    "bench_random_lpm",
    "bench_random_floor",
    "bench_rng_only",
    "bench_drop_all",
    "bench_tx",
    "bench_tx_random_source",
];

impl BenchObject {
    /// The bench programs sharing the maps of a fresh product load with `pool_nodes` nodes.
    pub fn new(pool_nodes: u32) -> Result<Self> {
        let dir = TestPins::new()?;
        ensure_loaded(&dir.pins, pool_nodes)?;
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(dir.pins.maps_dir())
            .load(BENCH_OBJECT)?;
        for name in BENCH_PROGRAMS {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
        }
        let product = Xdp::from_pin(dir.pins.prog(), XdpAttachType::Interface)?;
        Ok(Self { dir, ebpf, product })
    }

    /// Pin program `name` at `path` (to play another tool's program in tests).
    pub fn pin_program(&mut self, name: &str, path: &std::path::Path) -> Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        prog.pin(path)?;
        Ok(())
    }

    /// Mean ns per run of `frame` through program `name`, over `repeat` runs.
    pub fn run(&self, name: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        if name == "floodgate" {
            return run_frame(&self.product, frame, repeat);
        }
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        run_frame(prog, frame, repeat)
    }

    /// Replace the bench LPM tries' contents with `prefixes` (one syscall each: LPM tries have
    /// no batch operations).
    pub fn set_lpm(&mut self, prefixes: &[Prefix]) -> Result<()> {
        refill_lpm(
            self.ebpf.map_mut("BENCH_LPM_V4").context("BENCH_LPM_V4")?,
            prefixes.iter().filter_map(|p| match *p {
                Prefix::V4 { addr, len } => Some((len, addr.to_be_bytes())),
                Prefix::V6 { .. } => None,
            }),
        )?;
        refill_lpm(
            self.ebpf.map_mut("BENCH_LPM_V6").context("BENCH_LPM_V6")?,
            prefixes.iter().filter_map(|p| match *p {
                Prefix::V6 { addr, len } => Some((len, addr.to_be_bytes())),
                Prefix::V4 { .. } => None,
            }),
        )
    }
}

/// Empty an LPM trie of `N`-byte addresses, then insert `(prefix length, address)` entries.
fn refill_lpm<const N: usize>(
    map: &mut aya::maps::Map,
    entries: impl Iterator<Item = (u8, [u8; N])>,
) -> Result<()> {
    use aya::maps::lpm_trie::{Key, LpmTrie};
    let mut trie: LpmTrie<_, [u8; N], u8> = LpmTrie::try_from(map)?;
    let keys: Vec<Key<[u8; N]>> = trie.keys().collect::<Result<_, _>>()?;
    for k in keys {
        trie.remove(&k)?;
    }
    for (len, addr) in entries {
        trie.insert(&Key::new(u32::from(len), addr), 1, 0)?;
    }
    Ok(())
}

/// Run `f` on the current thread inside the network namespace at `ns`, then come back.
pub fn with_netns<T>(ns: &std::path::Path, f: impl FnOnce() -> T) -> Result<T> {
    use std::os::fd::AsRawFd;
    let home = std::fs::File::open("/proc/thread-self/ns/net").context("open own netns")?;
    let target = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
    // SAFETY: setns with fds we own, on this thread only.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns into target");
    }
    let out = f();
    // SAFETY: as above.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // Continuing in the wrong namespace could touch interfaces we did not create.
        panic!(
            "cannot return to the original network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(out)
}

/// Pin the calling thread to one CPU.
pub fn pin_thread_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

impl BenchObject {
    /// Send `count` copies of `frame` out of interface `ifindex` (of the calling thread's
    /// namespace) with BPF_PROG_TEST_RUN live frames and program `name` (XDP_TX).
    pub fn live_frames(
        &self,
        name: &str,
        frame: &[u8],
        ifindex: u32,
        count: u32,
    ) -> Result<std::time::Duration> {
        use aya::programs::TestRunAttrs;
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        // The kernel wants data_end equal to the frame length and no metadata.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = count;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
        let started = std::time::Instant::now();
        prog.test_run(opts).context("live-frames test run")?;
        Ok(started.elapsed())
    }

    /// Attach program `name` to `ifindex` of the calling thread's namespace (native mode).
    pub fn attach(&mut self, name: &str, ifindex: u32) -> Result<aya::programs::xdp::XdpLinkId> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        // A veth whose GRO was just switched on can refuse XDP with EBUSY for a moment
        // (seen on the first attach after `ethtool -K gro on`): retry briefly.
        let mut tries = 0;
        loop {
            match prog.attach_to_if_index(ifindex, aya::programs::XdpMode::Driver) {
                Ok(link) => return Ok(link),
                Err(e) if tries < 20 && busy(&e) => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn detach(&mut self, name: &str, link: aya::programs::xdp::XdpLinkId) -> Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        prog.detach(link)?;
        Ok(())
    }
}

fn busy(e: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(libc::EBUSY);
        }
        source = s.source();
    }
    false
}

/// An IPv4 or IPv6 UDP frame from `src` (to a documentation address).
pub fn udp_frame_from(src: std::net::IpAddr) -> Vec<u8> {
    use filter_common::frames::{ethernet, ipv4, ipv6, udp};
    use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP};
    let payload = udp(40000, 53, &[0u8; 18]);
    match src {
        std::net::IpAddr::V4(a) => ethernet(
            ETH_P_IPV4,
            &[],
            &ipv4(a, [192, 0, 2, 254].into(), IPPROTO_UDP, &[], 0, &payload),
        ),
        std::net::IpAddr::V6(a) => ethernet(
            ETH_P_IPV6,
            &[],
            &ipv6(
                a,
                "2001:db8::fe".parse().expect("literal"),
                IPPROTO_UDP,
                &[],
                &payload,
            ),
        ),
    }
}

/// Whether `addr` lies in one of `set`'s prefixes: one hash probe per prefix length.
pub fn covered(set: &std::collections::HashSet<Prefix>, addr: std::net::IpAddr) -> bool {
    match addr {
        std::net::IpAddr::V4(a) => {
            (0..=32u8).any(|len| set.contains(&Prefix::v4(u32::from(a), len)))
        }
        std::net::IpAddr::V6(a) => {
            (0..=128u8).any(|len| set.contains(&Prefix::v6(u128::from(a), len)))
        }
    }
}

/// Run the `floodgate` binary at `bin` against `pins`.
pub fn floodgate_cmd(bin: &str, pins: &PinDir) -> Command {
    let mut c = Command::new(bin);
    c.arg("--pin-dir").arg(pins.root());
    c
}

/// A file in /tmp removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &[u8]) -> Result<Self> {
        let path = std::env::temp_dir().join(unique_name(name));
        std::fs::write(&path, contents)?;
        Ok(Self { path })
    }

    /// A list file with one prefix per line.
    pub fn list(prefixes: &[Prefix]) -> Result<Self> {
        let text: String = prefixes.iter().map(|p| format!("{p}\n")).collect();
        Self::new("fglist-", text.as_bytes())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A second load of the bench object's LPM program with tries of its own, sharing the pinned
/// maps of a [`BenchObject`]: a fixed reference list (say 10 entries) measured in the same
/// round as the bench object's tries holding a large one.
pub struct LpmReference {
    ebpf: aya::Ebpf,
}

impl BenchObject {
    /// An [`LpmReference`] whose tries hold `prefixes`.
    pub fn lpm_reference(&self, prefixes: &[Prefix]) -> Result<LpmReference> {
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(self.dir.pins.maps_dir())
            .load(BENCH_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut("bench_random_lpm")
            .context("no program bench_random_lpm")?
            .try_into()?;
        prog.load().context("loading bench_random_lpm")?;
        let mut r = LpmReference { ebpf };
        r.set(prefixes)?;
        Ok(r)
    }
}

impl LpmReference {
    pub fn set(&mut self, prefixes: &[Prefix]) -> Result<()> {
        refill_lpm(
            self.ebpf.map_mut("BENCH_LPM_V4").context("BENCH_LPM_V4")?,
            prefixes.iter().filter_map(|p| match *p {
                Prefix::V4 { addr, len } => Some((len, addr.to_be_bytes())),
                Prefix::V6 { .. } => None,
            }),
        )?;
        refill_lpm(
            self.ebpf.map_mut("BENCH_LPM_V6").context("BENCH_LPM_V6")?,
            prefixes.iter().filter_map(|p| match *p {
                Prefix::V6 { addr, len } => Some((len, addr.to_be_bytes())),
                Prefix::V4 { .. } => None,
            }),
        )
    }

    /// Mean ns per run of `frame` through `bench_random_lpm` over these tries.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let prog: &Xdp = self
            .ebpf
            .program("bench_random_lpm")
            .context("no program bench_random_lpm")?
            .try_into()?;
        run_frame(prog, frame, repeat)
    }
}

/// Let the calling thread run on every online CPU again (undoes [`pin_thread_to_cpu`]); child
/// processes inherit it.
pub fn unpin_thread() -> Result<()> {
    // SAFETY: sysconf has no preconditions; a zeroed cpu_set_t with the online CPUs set.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..n.min(libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

/// `kernel.bpf_stats_enabled` set to 1 while this lives; the previous value is written back on
/// drop (also when the measurement fails or panics). While on, the kernel accounts run_time_ns
/// and run_cnt to every BPF program.
pub struct BpfStats {
    previous: String,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("enabling {BPF_STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "could not restore {BPF_STATS_SYSCTL} to {}: {e}",
                self.previous
            );
        }
    }
}
