//! Loading the program once, attaching it to interfaces through pinned bpf_links (so it keeps
//! enforcing after we exit), detaching, and reporting what is attached.
//!
//! A link pin under `links/` running our program is what "attached" means: it is the one
//! thing that keeps the program on the interface. The interface's record in `ATTACHMENTS`
//! (its counter slot, index and mode) is written before its link is pinned and cleared after
//! the link pin is removed, so a command killed in between leaves a record without a link pin:
//! *stale*, shown as not attached, and cleared by the next attach or detach. A link pin without
//! a record (pinned by hand, or left by an earlier floodgate) is shown and detachable, and
//! `attach` adopts it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuValues};
use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramInfo, Xdp, XdpMode};
use aya::util::nr_cpus;
use aya::EbpfLoader;
use aya_obj::programs::XdpAttachType;
use filter_common::maps as names;
use filter_common::{Attachment, Counter, MAX_IFINDEX, MAX_INTERFACES, REASON_SLOTS};
use tracing::{debug, warn};

use super::maps;
use super::netlink;
use super::pins::{Access, Locked, PinDir};
use super::raw::{self, LinkInfo};
use crate::error::{is_not_loaded, usage, UsageError};
use crate::text;

/// How to attach: `Auto` tries native (driver) XDP and falls back to generic (skb) XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Auto,
    Native,
    Skb,
}

/// The program's name in the object and in the kernel.
const PROGRAM_NAME: &str = "floodgate";

const MODE_NATIVE: u32 = 1;
const MODE_SKB: u32 = 2;

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_NATIVE => "native",
        MODE_SKB => "skb",
        _ => "unknown",
    }
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// RLIMIT_MEMLOCK is irrelevant on kernels with memcg accounting (5.11+) and raising it fails
/// without CAP_SYS_RESOURCE, so a failure is only worth a debug line.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Kernel memory a list pool of `nodes` nodes takes (cells and child positions).
pub fn pool_bytes(nodes: u32) -> u64 {
    let per_node = std::mem::size_of::<filter_common::trie::Node>()
        + std::mem::size_of::<filter_common::trie::NodeMeta>();
    u64::from(nodes) * per_node as u64
}

/// The machine's memory, from /proc/meminfo.
pub fn mem_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Refuse a pool of `nodes` nodes that would take more than half of `mem_total` bytes: the
/// kernel would try to allocate it, and the machine would swap or kill to make room.
pub fn check_pool_fits(nodes: u32, mem_total: Option<u64>) -> Result<()> {
    let Some(total) = mem_total else {
        return Ok(());
    };
    let need = pool_bytes(nodes);
    if need > total / 2 {
        let most = total / 2 / pool_bytes(1).max(1);
        let most = if most >= 1 << 20 {
            format!("{}M", most >> 20)
        } else {
            format!("{}k", most >> 10)
        };
        return Err(usage(format!(
            "--list-capacity {nodes} would take {} of kernel memory for the list pool, more than half of this machine's {}: nothing was loaded. Choose at most {most} (real lists need about 0.1 node per entry; see `floodgate attach --help`)",
            gib(need),
            gib(total)
        )));
    }
    Ok(())
}

/// The id of our pinned program, if one is pinned.
fn our_prog_id(pins: &PinDir) -> Option<u32> {
    ProgramInfo::from_pin(pins.prog()).ok().map(|i| i.id())
}

/// Link pins under `links/` (regular files whose name is an interface name) and what they
/// are.
fn link_pins(pins: &PinDir) -> Vec<(String, PathBuf, Option<LinkInfo>)> {
    let Ok(entries) = std::fs::read_dir(pins.links_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            let info = raw::link_info(&path);
            Some((name, path, info))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Our link pins: those running program `prog_id`.
fn our_links(pins: &PinDir, prog_id: Option<u32>) -> Vec<(String, LinkInfo)> {
    let Some(id) = prog_id else {
        return Vec::new();
    };
    link_pins(pins)
        .into_iter()
        .filter_map(|(name, _, info)| {
            info.filter(|i| i.is_xdp && i.prog_id == id)
                .map(|i| (name, i))
        })
        .collect()
}

/// Where an interface stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Our link pin, and its link still filters an interface.
    Attached,
    /// Our link pin, but its interface has gone: `detach` tidies it.
    InterfaceGone,
    /// A record without a link pin, left by an attach or detach that was cut short: nothing
    /// filters the interface; the next attach or detach clears the record.
    Stale,
}

/// One interface as the pinned state describes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachedIface {
    /// Its counter slot; `None` for a link pin without a record (its packets count under
    /// "other").
    pub slot: Option<u32>,
    pub name: String,
    pub ifindex: u32,
    pub mode: &'static str,
    pub state: LinkState,
    /// True when the link filters the interface of this name in this network namespace.
    pub present: bool,
    /// The interface the link filters (0: none).
    #[serde(skip)]
    link_ifindex: u32,
}

fn record_name(a: &Attachment) -> String {
    String::from_utf8_lossy(&a.name)
        .trim_end_matches('\0')
        .to_string()
}

/// The mode the kernel reports for interface `ifindex` (of this network namespace).
fn kernel_mode(ifindex: u32) -> &'static str {
    match netlink::xdp_program(ifindex) {
        Ok(Some(p)) if p.mode == "native" || p.mode == "skb" => p.mode,
        _ => "unknown",
    }
}

/// Every interface our link pins and our records name, reconciled (see the module doc).
pub fn attached(pins: &PinDir) -> Result<Vec<AttachedIface>> {
    let links = our_links(pins, our_prog_id(pins));
    let mut out = Vec::new();
    if pins.map(names::ATTACHMENTS).exists() {
        let map = maps::attachments(pins)?;
        for slot in 1..MAX_INTERFACES {
            let a = map.get(&slot, 0)?;
            if a.mode == 0 {
                continue;
            }
            let name = record_name(&a);
            let link = links.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
            let link_ifindex = link.map_or(0, |l| l.ifindex);
            out.push(AttachedIface {
                slot: Some(slot),
                present: link_ifindex != 0 && ifindex(&name) == Some(link_ifindex),
                state: match link {
                    None => LinkState::Stale,
                    Some(l) if l.ifindex == 0 => LinkState::InterfaceGone,
                    Some(_) => LinkState::Attached,
                },
                name,
                ifindex: a.ifindex,
                mode: mode_name(a.mode),
                link_ifindex,
            });
        }
    }
    for (name, link) in links {
        if out.iter().any(|a| a.name == name) {
            continue;
        }
        let present = link.ifindex != 0 && ifindex(&name) == Some(link.ifindex);
        out.push(AttachedIface {
            slot: None,
            mode: if present {
                kernel_mode(link.ifindex)
            } else {
                "unknown"
            },
            state: if link.ifindex == 0 {
                LinkState::InterfaceGone
            } else {
                LinkState::Attached
            },
            present,
            name,
            ifindex: link.ifindex,
            link_ifindex: link.ifindex,
        });
    }
    Ok(out)
}

/// Pins of ours in a directory whose program is not pinned: left by a `detach --all` or a
/// first attach that was cut short. A new load must not pick up their maps (aya reuses a
/// pinned map of the same name, whatever its size), so they go first.
fn remove_leftovers(pins: &PinDir) -> Result<()> {
    for (name, path, info) in link_pins(pins) {
        let floodgates =
            info.is_some_and(|i| netlink::program_name(i.prog_id).as_deref() == Some(PROGRAM_NAME));
        if floodgates {
            warn!(
                "removing the link pin {} of a floodgate program that is no longer pinned ({} is detached)",
                text::path(&path),
                text::name(&name)
            );
            remove(&path)?;
        }
    }
    remove_snapshots_and_maps(pins, &mut Vec::new())?;
    Ok(())
}

/// Load and pin the program and its maps unless already pinned. `pool_nodes` sizes the list
/// node pool on first load.
pub fn ensure_loaded(pins: &PinDir, pool_nodes: u32) -> Result<()> {
    if pins.is_loaded() {
        return Ok(());
    }
    remove_leftovers(pins)?;
    raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps_dir())
        .map_max_entries(names::LIST_NODES, pool_nodes)
        .map_max_entries(names::LIST_META, pool_nodes)
        .load(crate::XDP_OBJECT)
        .context("loading the XDP object (maps)")?;
    let mut state: Array<_, u64> = ebpf
        .map_mut(names::STATE)
        .context("the XDP object has no STATE map")?
        .try_into()?;
    state
        .set(names::STATE_LAYOUT, names::LAYOUT_VERSION, 0)
        .context("cannot write the layout version")?;
    load_sampler(&mut ebpf)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .with_context(|| format!("the XDP object has no `{PROGRAM_NAME}` program"))?
        .try_into()?;
    // The verifier gives up with EAGAIN when a signal arrives during its (long) run: retry.
    let mut tries = 0;
    loop {
        match prog.load() {
            Ok(()) => break,
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tries += 1;
                debug!("program load interrupted (EAGAIN), retrying");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("the kernel rejected the XDP program"))
            }
        }
    }
    if !pins.map(names::ATTACHMENTS).exists() {
        Array::<MapData, Attachment>::create(MAX_INTERFACES, 0)?
            .pin(pins.map(names::ATTACHMENTS))
            .context("cannot pin the attachments map")?;
    }
    crate::observe::samples::create_slots(pins)?;
    // Pinned last: a pinned program is what "loaded" means to every other command.
    prog.pin(pins.prog())
        .with_context(|| format!("cannot pin {}", text::path(&pins.prog())))?;
    Ok(())
}

/// Load the sampler program and put it in `SAMPLER` (which holds it for as long as the
/// pinned map lives): the main program tail-calls it for a packet to sample.
fn load_sampler(ebpf: &mut aya::Ebpf) -> Result<()> {
    let sampler: &mut Xdp = ebpf
        .program_mut(names::SAMPLER_PROGRAM)
        .with_context(|| format!("the XDP object has no `{}` program", names::SAMPLER_PROGRAM))?
        .try_into()?;
    sampler
        .load()
        .map_err(|e| anyhow::Error::new(e).context("the kernel rejected the sampler program"))?;
    let fd = sampler.fd()?.try_clone()?;
    let mut array: aya::maps::ProgramArray<_> = ebpf
        .map_mut(names::SAMPLER)
        .context("the XDP object has no SAMPLER map")?
        .try_into()?;
    array
        .set(0, &fd, 0)
        .context("cannot put the sampler in SAMPLER")?;
    Ok(())
}

#[derive(Debug)]
pub enum AttachOutcome {
    /// Newly attached; its counters start at zero.
    Attached {
        mode: &'static str,
    },
    AlreadyAttached {
        mode: &'static str,
    },
    /// Not attached, and why.
    Failed(anyhow::Error),
}

/// What `attach` did, interface by interface.
#[derive(Debug)]
pub struct AttachReport {
    pub outcomes: Vec<(String, AttachOutcome)>,
    /// This command loaded the filter, nothing ended up attached, and it removed everything
    /// it had pinned.
    pub unloaded: bool,
}

/// Attach to every interface in `ifaces`. Names are checked before anything changes; then
/// each interface is attached or fails on its own. If this command loaded the filter and
/// nothing ends up attached, it removes what it pinned.
pub fn attach(
    pins: &PinDir,
    ifaces: &[String],
    mode: Mode,
    pool_nodes: Option<u32>,
) -> Result<AttachReport> {
    let mut targets = Vec::new();
    for name in ifaces {
        if name.is_empty() || name.len() >= 16 || name.contains(['/', '\0']) {
            bail!(UsageError(format!(
                "'{}' is not an interface name (at most 15 characters, no '/')",
                text::name(name)
            )));
        }
        let idx = ifindex(name).with_context(|| {
            format!(
                "interface '{}' does not exist (see `ip link`); nothing was attached",
                text::name(name)
            )
        })?;
        if !targets.iter().any(|(n, _)| n == name) {
            targets.push((name.clone(), idx));
        }
    }
    if let Some(n) = pool_nodes {
        if !pins.is_loaded() {
            check_pool_fits(n, mem_total())?;
        }
    }
    let _locked = Locked::creating(pins)?;
    let fresh = !pins.is_loaded();
    if !fresh {
        pins.require_current_layout()?;
        if let Some(n) = pool_nodes {
            let have = maps::ListMaps::open(pins)?.pool_nodes();
            if have != n {
                return Err(usage(format!(
                    "the filter is already loaded with a list capacity of {have} nodes; --list-capacity applies when it is first loaded (after `floodgate detach --all`)"
                )));
            }
        }
    }
    let result = attach_locked(
        pins,
        &targets,
        mode,
        pool_nodes.unwrap_or(names::DEFAULT_POOL_NODES),
    );
    let mut unloaded = false;
    if fresh && our_links(pins, our_prog_id(pins)).is_empty() {
        // Nothing to filter: leave nothing pinned (the program and its maps hold 160 MiB).
        match remove_all_locked(pins) {
            Ok(_) => unloaded = true,
            Err(e) => warn!("cannot remove what this attach pinned: {e:#}"),
        }
    }
    let outcomes = result?;
    if outcomes
        .iter()
        .any(|(_, o)| matches!(o, AttachOutcome::Attached { .. }))
    {
        warn_without_syncookies();
    }
    Ok(AttachReport { outcomes, unloaded })
}

/// SYN floods are the kernel's SYN cookies' job; floodgate only limits them. Say so when they
/// are off in this network namespace.
fn warn_without_syncookies() {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies") {
        if v.trim() == "0" {
            warn!("net.ipv4.tcp_syncookies is 0: under a SYN flood the kernel drops connections instead of answering with cookies; turn them on with `sysctl -w net.ipv4.tcp_syncookies=1` (floodgate's tcp-syn limits only thin the flood)");
        }
    }
}

fn attach_locked(
    pins: &PinDir,
    targets: &[(String, u32)],
    mode: Mode,
    pool_nodes: u32,
) -> Result<Vec<(String, AttachOutcome)>> {
    ensure_loaded(pins, pool_nodes)?;
    let mut prog = Xdp::from_pin(pins.prog(), XdpAttachType::Interface)
        .context("cannot open the pinned program")?;
    let mut table = maps::attachments(pins)?;
    tidy_stale(pins, &mut table)?;
    Ok(targets
        .iter()
        .map(|(name, idx)| {
            let outcome = attach_one(pins, &mut prog, &mut table, name, *idx, mode)
                .unwrap_or_else(AttachOutcome::Failed);
            (name.clone(), outcome)
        })
        .collect())
}

fn free_slot(table: &Array<MapData, Attachment>) -> Option<u32> {
    (1..MAX_INTERFACES).find(|s| table.get(s, 0).is_ok_and(|a| a.mode == 0))
}

fn no_free_slot(name: &str) -> anyhow::Error {
    anyhow!(
        "no free interface slot for {}: floodgate counts at most {} interfaces; detach one first",
        text::name(name),
        MAX_INTERFACES - 1
    )
}

/// Record interface `name` in `slot` (counters reset), before its link is pinned.
fn record(
    pins: &PinDir,
    table: &mut Array<MapData, Attachment>,
    slot: u32,
    name: &str,
    idx: u32,
    mode: u32,
) -> Result<()> {
    let mut rec = Attachment {
        ifindex: idx,
        mode,
        name: [0; 16],
    };
    rec.name[..name.len()].copy_from_slice(name.as_bytes());
    reset_counters(pins, slot)?;
    table.set(slot, rec, 0)?;
    set_iface_slot(pins, idx, slot)
}

fn attach_one(
    pins: &PinDir,
    prog: &mut Xdp,
    table: &mut Array<MapData, Attachment>,
    name: &str,
    idx: u32,
    mode: Mode,
) -> Result<AttachOutcome> {
    let shown = text::name(name);
    if let Some(a) = attached(pins)?.into_iter().find(|a| a.name == name) {
        match a.state {
            LinkState::Attached if a.link_ifindex == idx => {
                let wanted = match mode {
                    Mode::Native => Some("native"),
                    Mode::Skb => Some("skb"),
                    Mode::Auto => None,
                };
                if let Some(w) = wanted.filter(|w| a.mode != "unknown" && *w != a.mode) {
                    return Err(usage(format!(
                        "{shown} is attached in {} mode; to switch to {w} mode run `floodgate detach {shown}` and `floodgate attach {shown} --mode {w}` (the interface is unfiltered in between)",
                        a.mode
                    )));
                }
                if a.slot.is_none() {
                    // A link pin without a record: give it a slot so its packets count.
                    let mode = match a.mode {
                        "native" => MODE_NATIVE,
                        "skb" => MODE_SKB,
                        _ => 0,
                    };
                    if mode != 0 {
                        let slot = free_slot(table).ok_or_else(|| no_free_slot(name))?;
                        record(pins, table, slot, name, idx, mode)?;
                    }
                }
                return Ok(AttachOutcome::AlreadyAttached { mode: a.mode });
            }
            LinkState::Attached => bail!(
                "the link pinned as {} filters interface index {}, not {shown} (index {idx} here): the interface was renamed or lives in another network namespace; run `floodgate detach {shown}` from there first",
                text::path(&pins.link(name)),
                a.link_ifindex
            ),
            // Interface recreated, or a stale record: forget it and attach afresh.
            LinkState::InterfaceGone | LinkState::Stale => forget(pins, table, &a)?,
        }
    }
    // The slot first: a link is only made for an interface that can be recorded.
    let slot = free_slot(table).ok_or_else(|| no_free_slot(name))?;
    let (link_id, got) = attach_link(prog, name, idx, mode)?;
    let link = prog.take_link(link_id)?;
    let link = FdLink::try_from(link).context("the kernel gave a netlink attachment, which cannot be pinned; floodgate needs bpf_link support (Linux 5.9+)")?;
    // Recorded before the link is pinned: killed in between, the link closes with us and the
    // record is stale, which the next attach or detach clears.
    record(pins, table, slot, name, idx, got)?;
    if let Err(e) = link.pin(pins.link(name)) {
        clear_record(pins, table, slot, idx)?;
        return Err(e).with_context(|| format!("cannot pin the link for {shown}"));
    }
    Ok(AttachOutcome::Attached {
        mode: mode_name(got),
    })
}

/// The OS error code somewhere in an error's chain.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cur) = e {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        if let Some(s) = cur.downcast_ref::<aya::sys::SyscallError>() {
            if let Some(code) = s.io_error.raw_os_error() {
                return Some(code);
            }
        }
        e = cur.source();
    }
    None
}

/// True when an attach failed because the interface already runs an XDP program.
fn is_occupied(err: &aya::programs::ProgramError) -> bool {
    matches!(os_error(err), Some(libc::EEXIST) | Some(libc::EBUSY))
}

/// The interface already runs an XDP program: say whose and what to do.
fn occupied(name: &str, idx: u32) -> anyhow::Error {
    let shown = text::name(name);
    let who = match netlink::xdp_program(idx) {
        Ok(Some(p)) => {
            let called = netlink::program_name(p.prog_id)
                .map(|n| format!(" named {}", text::name(&n)))
                .unwrap_or_default();
            format!(" (program id {}{called}, {} mode)", p.prog_id, p.mode)
        }
        _ => String::new(),
    };
    anyhow!(
        "{shown} already has another XDP program attached{who}, so floodgate cannot attach to it. See it with `ip link show {shown}`. If it is floodgate with another pin directory, detach it there: `floodgate --pin-dir OTHER detach {shown}`. If another tool attached it, `ip link set dev {shown} xdp off` removes it: do that only if you know it is not needed"
    )
}

fn attach_link(prog: &mut Xdp, name: &str, idx: u32, mode: Mode) -> Result<(XdpLinkId, u32)> {
    let shown = text::name(name);
    let native_hint = || {
        format!("native XDP is not available on {shown} (its driver lacks XDP support); use --mode skb or --mode auto")
    };
    match mode {
        Mode::Native => match prog.attach_to_if_index(idx, XdpMode::Driver) {
            Ok(id) => Ok((id, MODE_NATIVE)),
            Err(e) if is_occupied(&e) => Err(occupied(name, idx)),
            Err(e) => Err(anyhow::Error::new(e).context(native_hint())),
        },
        Mode::Skb => match prog.attach_to_if_index(idx, XdpMode::Skb) {
            Ok(id) => Ok((id, MODE_SKB)),
            Err(e) if is_occupied(&e) => Err(occupied(name, idx)),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("attaching to {shown} in skb mode")))
            }
        },
        Mode::Auto => match prog.attach_to_if_index(idx, XdpMode::Driver) {
            Ok(id) => Ok((id, MODE_NATIVE)),
            Err(e) if is_occupied(&e) => Err(occupied(name, idx)),
            Err(e) => {
                debug!("native XDP on {shown} failed ({e}); trying skb mode");
                match prog.attach_to_if_index(idx, XdpMode::Skb) {
                    Ok(id) => Ok((id, MODE_SKB)),
                    Err(e) if is_occupied(&e) => Err(occupied(name, idx)),
                    Err(e) => Err(anyhow::Error::new(e).context(format!(
                        "attaching to {shown} (native and skb mode both failed)"
                    ))),
                }
            }
        },
    }
}

fn set_iface_slot(pins: &PinDir, ifindex: u32, slot: u32) -> Result<()> {
    if ifindex >= MAX_IFINDEX {
        warn!("ifindex {ifindex} is beyond {MAX_IFINDEX}: its packets are counted under 'other'");
        return Ok(());
    }
    maps::iface_slots(pins)?.set(ifindex, slot, 0)?;
    Ok(())
}

fn reset_counters(pins: &PinDir, slot: u32) -> Result<()> {
    let mut counters = maps::counters(pins)?;
    let cpus = nr_cpus().map_err(|(_, e)| e)?;
    for r in 0..REASON_SLOTS {
        let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
        counters.set(slot * REASON_SLOTS + r, zeros, 0)?;
    }
    Ok(())
}

fn clear_record(
    pins: &PinDir,
    table: &mut Array<MapData, Attachment>,
    slot: u32,
    ifindex: u32,
) -> Result<()> {
    table.set(slot, Attachment::default(), 0)?;
    if ifindex < MAX_IFINDEX {
        let mut slots = maps::iface_slots(pins)?;
        if slots.get(&ifindex, 0)? == slot {
            slots.set(ifindex, 0, 0)?;
        }
    }
    Ok(())
}

/// Drop the link pin (which detaches), then the record, of one interface.
fn forget(pins: &PinDir, table: &mut Array<MapData, Attachment>, a: &AttachedIface) -> Result<()> {
    let link = pins.link(&a.name);
    if a.state != LinkState::Stale && link.exists() {
        remove(&link)?;
        if let (true, Some(prog)) = (a.present, our_prog_id(pins)) {
            wait_detached(a.link_ifindex, prog);
        }
    }
    if let Some(slot) = a.slot {
        clear_record(pins, table, slot, a.ifindex)?;
    }
    Ok(())
}

/// How long a detach waits for the kernel to take the program off an interface.
const DETACH_SETTLE: Duration = Duration::from_secs(2);

/// Wait until program `prog` is off interface `ifindex` (at most [`DETACH_SETTLE`]). The
/// kernel releases a link whose last pin is removed from a work queue, a moment later (longer
/// on a loaded machine): without this, `detach` could return while the interface is still
/// filtered.
fn wait_detached(ifindex: u32, prog: u32) {
    let deadline = std::time::Instant::now() + DETACH_SETTLE;
    while matches!(netlink::xdp_program(ifindex), Ok(Some(p)) if p.prog_id == prog) {
        if std::time::Instant::now() > deadline {
            debug!("interface {ifindex} still has an XDP program after {DETACH_SETTLE:?}; the kernel releases it shortly");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Clear every stale record (see the module doc).
fn tidy_stale(pins: &PinDir, table: &mut Array<MapData, Attachment>) -> Result<()> {
    for a in attached(pins)? {
        if a.state == LinkState::Stale {
            debug!(
                "clearing the stale record of {} (no link pin)",
                text::name(&a.name)
            );
            forget(pins, table, &a)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachOutcome {
    Detached,
    /// Only a stale record was left (an attach or detach cut short): it is cleared.
    Finished,
    NotAttached,
}

/// Detach the named interfaces, each on its own.
pub fn detach(pins: &PinDir, ifaces: &[String]) -> Result<Vec<(String, DetachOutcome)>> {
    let mut names: Vec<&String> = Vec::new();
    for n in ifaces {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let not_attached = |names: Vec<&String>| {
        names
            .into_iter()
            .map(|n| (n.clone(), DetachOutcome::NotAttached))
            .collect()
    };
    let _locked = match Locked::loaded(pins, Access::Write) {
        Ok(l) => l,
        Err(e) if is_not_loaded(&e) => return Ok(not_attached(names)),
        Err(e) => return Err(e),
    };
    let mut table = maps::attachments(pins)?;
    let current = attached(pins)?;
    let mut out = Vec::new();
    for name in names {
        let outcome = match current.iter().find(|a| &a.name == name) {
            Some(a) => {
                forget(pins, &mut table, a)?;
                if a.state == LinkState::Stale {
                    DetachOutcome::Finished
                } else {
                    DetachOutcome::Detached
                }
            }
            None => DetachOutcome::NotAttached,
        };
        out.push((name.clone(), outcome));
    }
    tidy_stale(pins, &mut table)?;
    Ok(out)
}

/// What `detach --all` did.
pub struct Removed {
    /// Interfaces whose link pin was removed.
    pub interfaces: Vec<String>,
    /// Files in the pin directory floodgate did not create, left in place.
    pub foreign: Vec<PathBuf>,
    /// Whether the pin directory itself was removed.
    pub removed_dir: bool,
}

/// Maps an earlier floodgate (lists v1) pinned: removed by `detach --all` like ours.
const EARLIER_MAPS: [&str; 17] = [
    "CONFIG",
    "V4_SUMMARY",
    "V4_VERDICT24",
    "V4_DETAIL_INDEX",
    "V4_DETAIL",
    "ALLOW_V4_HOSTS",
    "BLOCK_V4_HOSTS",
    "V6_SUMMARY16",
    "V6_FILTER32",
    "ALLOW_V6_BLOCKS",
    "BLOCK_V6_BLOCKS",
    "ALLOW_V6_LONG",
    "BLOCK_V6_LONG",
    "ALLOW_V4_REC",
    "BLOCK_V4_REC",
    "ALLOW_V6_REC",
    "BLOCK_V6_REC",
];

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", text::path(path)))
}

fn is_our_map(name: &str) -> bool {
    names::PRODUCT_MAPS.contains(&name)
        || name == names::ATTACHMENTS
        || EARLIER_MAPS.contains(&name)
}

/// Remove the files of `dir` that `is_ours` names; other entries go to `foreign`.
fn remove_files(
    dir: &Path,
    is_ours: impl Fn(&str) -> bool,
    foreign: &mut Vec<PathBuf>,
) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type()?.is_file() && is_ours(name.to_str().unwrap_or("")) {
            remove(&path)?;
        } else {
            foreign.push(path);
        }
    }
    Ok(())
}

/// Remove the snapshots, then the maps we pin; other files go to `foreign`.
fn remove_snapshots_and_maps(pins: &PinDir, foreign: &mut Vec<PathBuf>) -> Result<()> {
    remove_files(&pins.state_dir(), |n| n.parse::<u64>().is_ok(), foreign)?;
    remove_files(&pins.maps_dir(), is_our_map, foreign)
}

/// The sample readers' lock directories (`readers/N`, empty): only those, so anything else
/// there stays, and `readers/` with it.
fn remove_reader_dirs(pins: &PinDir) {
    let dir = pins.root().join("readers");
    for slot in 0..filter_common::sample::READER_SLOTS {
        let _ = std::fs::remove_dir(dir.join(slot.to_string()));
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Detach everything and remove every pin floodgate made: the program and every map go away.
/// Only a directory whose pinned program is floodgate's is touched, and in it only the pins
/// floodgate makes (link pins only if they run that program); anything else, and the
/// directories holding it, stays. `None` when there is no directory at all.
pub fn detach_all(pins: &PinDir) -> Result<Option<Removed>> {
    let Some(_locked) = Locked::existing(pins)? else {
        return Ok(None);
    };
    remove_all_locked(pins).map(Some)
}

/// [`detach_all`] with the lock held. The order makes every interruption safe: links first
/// (each removal detaches one interface), then the program (from here on every command sees
/// "not loaded", and the next attach clears the rest before loading afresh), then the
/// snapshots and maps.
fn remove_all_locked(pins: &PinDir) -> Result<Removed> {
    let ours = if pins.prog().exists() {
        let info = ProgramInfo::from_pin(pins.prog())
            .with_context(|| format!("cannot read {}", text::path(&pins.prog())))?;
        if info.name_as_str() != Some(PROGRAM_NAME) {
            bail!(
                "{} is not floodgate's program (it is named {:?}): --pin-dir names another tool's directory; nothing was removed",
                text::path(&pins.prog()),
                info.name_as_str().unwrap_or("?")
            );
        }
        Some(info.id())
    } else {
        None
    };
    let mut interfaces = Vec::new();
    let mut foreign = Vec::new();
    let is_our_link = |info: Option<LinkInfo>| {
        info.is_some_and(|i| match ours {
            Some(id) => i.prog_id == id,
            // The program is gone already (an interrupted detach --all): any floodgate link.
            None => netlink::program_name(i.prog_id).as_deref() == Some(PROGRAM_NAME),
        })
    };
    for (name, path, info) in link_pins(pins) {
        if is_our_link(info) {
            remove(&path)?;
            if let Some(i) = info.filter(|i| i.ifindex != 0 && ifindex(&name) == Some(i.ifindex)) {
                wait_detached(i.ifindex, i.prog_id);
            }
            interfaces.push(name);
        } else {
            foreign.push(path);
        }
    }
    // Directories and other non-files under links/ are not ours either.
    if let Ok(entries) = std::fs::read_dir(pins.links_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.exists() && !foreign.contains(&path) {
                foreign.push(path);
            }
        }
    }
    if ours.is_some() {
        remove(&pins.prog())?;
    }
    remove_snapshots_and_maps(pins, &mut foreign)?;
    remove_reader_dirs(pins);
    for dir in [pins.links_dir(), pins.state_dir(), pins.maps_dir()] {
        let _ = std::fs::remove_dir(&dir);
    }
    let mut left = std::fs::read_dir(pins.root())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    left.retain(|p| !foreign.iter().any(|f| f.starts_with(p)));
    foreign.extend(left);
    let removed_dir = foreign.is_empty();
    if removed_dir {
        std::fs::remove_dir(pins.root())
            .with_context(|| format!("cannot remove {}", pins.shown()))?;
    }
    Ok(Removed {
        interfaces,
        foreign,
        removed_dir,
    })
}

#[derive(Debug, serde::Serialize)]
pub struct ProgramStatus {
    pub program_id: u32,
    pub interfaces: Vec<AttachedIface>,
}

pub fn program_status(pins: &PinDir) -> Result<Option<ProgramStatus>> {
    if !pins.is_loaded() {
        return Ok(None);
    }
    let info = ProgramInfo::from_pin(pins.prog()).context("cannot read the pinned program")?;
    Ok(Some(ProgramStatus {
        program_id: info.id(),
        interfaces: attached(pins)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_over_half_the_memory_is_refused_with_its_size() {
        let gib_text = super::gib;
        let gib = 1u64 << 30;
        assert!(check_pool_fits(1 << 21, Some(8 * gib)).is_ok());
        let err = check_pool_fits(1 << 28, Some(8 * gib)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&gib_text(pool_bytes(1 << 28))) && msg.contains("8.0 GiB"),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&err), 2);
        let most = (4 * gib / pool_bytes(1)) >> 20;
        assert!(msg.contains(&format!("at most {most}M")), "{msg}");
        assert!(check_pool_fits(1 << 28, None).is_ok());
    }

    #[test]
    fn memory_total_is_read() {
        assert!(mem_total().is_some_and(|m| m > 1 << 20));
    }
}
