//! Loading the program once, attaching it to interfaces through pinned bpf_links (so it keeps
//! enforcing after we exit), detaching, and reporting what is attached.

use std::ffi::CString;

use anyhow::{bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuValues};
use aya::programs::links::FdLink;
use aya::programs::{ProgramInfo, Xdp, XdpMode};
use aya::util::nr_cpus;
use aya::EbpfLoader;
use aya_obj::programs::XdpAttachType;
use filter_common::maps as names;
use filter_common::{Attachment, Counter, MAX_IFINDEX, MAX_INTERFACES, REASON_SLOTS};
use tracing::debug;

use super::maps;
use super::pins::{Access, Locked, PinDir};
use crate::error::{usage, UsageError};

/// How to attach: `Auto` tries native (driver) XDP and falls back to generic (skb) XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Auto,
    Native,
    Skb,
}

const MODE_NATIVE: u32 = 1;
const MODE_SKB: u32 = 2;

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_NATIVE => "native",
        MODE_SKB => "skb",
        _ => "?",
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

/// Load and pin the program and its maps unless already pinned. `pool_nodes` sizes the list
/// node pool on first load.
pub fn ensure_loaded(pins: &PinDir, pool_nodes: u32) -> Result<()> {
    if pins.is_loaded() {
        return Ok(());
    }
    raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps_dir())
        .map_max_entries(names::LIST_NODES, pool_nodes)
        .map_max_entries(names::LIST_META, pool_nodes)
        .load(crate::XDP_OBJECT)
        .context("loading the XDP object (maps)")?;
    let prog: &mut Xdp = ebpf
        .program_mut("floodgate")
        .context("the XDP object has no `floodgate` program")?
        .try_into()?;
    prog.load().context("the kernel rejected the XDP program")?;
    if !pins.map(names::ATTACHMENTS).exists() {
        Array::<MapData, Attachment>::create(MAX_INTERFACES, 0)?
            .pin(pins.map(names::ATTACHMENTS))
            .context("cannot pin the attachments map")?;
    }
    // Pinned last: a pinned program is what "loaded" means to every other command.
    prog.pin(pins.prog())
        .with_context(|| format!("cannot pin {}", pins.prog().display()))?;
    Ok(())
}

/// One attached interface as recorded in the pinned state.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachedIface {
    pub slot: u32,
    pub name: String,
    pub ifindex: u32,
    pub mode: &'static str,
    /// False when the interface has gone (or been recreated with another index).
    pub present: bool,
}

pub fn attached(pins: &PinDir) -> Result<Vec<AttachedIface>> {
    if !pins.map(names::ATTACHMENTS).exists() {
        return Ok(Vec::new());
    }
    let map = maps::attachments(pins)?;
    let mut out = Vec::new();
    for slot in 1..MAX_INTERFACES {
        let a = map.get(&slot, 0)?;
        if a.mode == 0 {
            continue;
        }
        let name = String::from_utf8_lossy(&a.name)
            .trim_end_matches('\0')
            .to_string();
        let present = ifindex(&name) == Some(a.ifindex);
        out.push(AttachedIface {
            slot,
            name,
            ifindex: a.ifindex,
            mode: mode_name(a.mode),
            present,
        });
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Newly attached; its counters start at zero.
    Attached {
        mode: &'static str,
    },
    AlreadyAttached {
        mode: &'static str,
    },
}

/// Attach to every interface in `ifaces`; all names are checked before anything changes.
pub fn attach(
    pins: &PinDir,
    ifaces: &[String],
    mode: Mode,
    pool_nodes: Option<u32>,
) -> Result<Vec<(String, AttachOutcome)>> {
    let mut targets = Vec::new();
    for name in ifaces {
        if name.is_empty() || name.len() >= 16 || name.contains(['/', '\0']) {
            bail!(UsageError(format!(
                "'{}' is not an interface name (at most 15 characters, no '/')",
                crate::lists::entries::shown(name)
            )));
        }
        let idx = ifindex(name)
            .with_context(|| format!("interface '{name}' does not exist (see `ip link`)"))?;
        targets.push((name.clone(), idx));
    }
    let _locked = Locked::creating(pins)?;
    if pins.is_loaded() {
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
    ensure_loaded(
        pins,
        pool_nodes.unwrap_or(filter_common::maps::DEFAULT_POOL_NODES),
    )?;
    let mut prog = Xdp::from_pin(pins.prog(), XdpAttachType::Interface)
        .context("cannot open the pinned program")?;
    let mut table = maps::attachments(pins)?;
    let mut out = Vec::new();
    for (name, idx) in targets {
        let existing = attached(pins)?.into_iter().find(|a| a.name == name);
        if let Some(a) = &existing {
            if a.present && pins.link(&name).exists() {
                let wanted = match mode {
                    Mode::Native => Some("native"),
                    Mode::Skb => Some("skb"),
                    Mode::Auto => None,
                };
                if let Some(w) = wanted.filter(|w| *w != a.mode) {
                    return Err(usage(format!(
                        "{name} is attached in {} mode; to switch to {w} mode run `floodgate detach {name}` and `floodgate attach {name} --mode {w}` (the interface is unfiltered in between)",
                        a.mode
                    )));
                }
                out.push((name, AttachOutcome::AlreadyAttached { mode: a.mode }));
                continue;
            }
            // Interface recreated or pin lost: forget the stale record and attach afresh.
            forget(pins, &mut table, a)?;
        }
        let (link_id, got) = match mode {
            Mode::Native => (
                prog.attach(&name, XdpMode::Driver)
                    .with_context(|| native_hint(&name))?,
                MODE_NATIVE,
            ),
            Mode::Skb => (
                prog.attach(&name, XdpMode::Skb)
                    .with_context(|| format!("attaching to {name} in skb mode"))?,
                MODE_SKB,
            ),
            Mode::Auto => match prog.attach(&name, XdpMode::Driver) {
                Ok(id) => (id, MODE_NATIVE),
                Err(e) => {
                    debug!("native XDP on {name} failed ({e}); trying skb mode");
                    (
                        prog.attach(&name, XdpMode::Skb).with_context(|| {
                            format!("attaching to {name} (native and skb mode both failed)")
                        })?,
                        MODE_SKB,
                    )
                }
            },
        };
        let link = prog.take_link(link_id)?;
        let link = FdLink::try_from(link).context("the kernel gave a netlink attachment, which cannot be pinned; floodgate needs bpf_link support (Linux 5.9+)")?;
        link.pin(pins.link(&name))
            .with_context(|| format!("cannot pin the link for {name}"))?;
        let slot = (1..MAX_INTERFACES)
            .find(|s| table.get(s, 0).map(|a| a.mode == 0).unwrap_or(false))
            .context(
                "no free interface slot: floodgate counts at most 63 interfaces; detach one first",
            )?;
        let mut rec = Attachment {
            ifindex: idx,
            mode: got,
            name: [0; 16],
        };
        rec.name[..name.len()].copy_from_slice(name.as_bytes());
        reset_counters(pins, slot)?;
        table.set(slot, rec, 0)?;
        set_iface_slot(pins, idx, slot)?;
        out.push((
            name,
            AttachOutcome::Attached {
                mode: mode_name(got),
            },
        ));
    }
    Ok(out)
}

fn native_hint(name: &str) -> String {
    format!("native XDP is not available on {name} (its driver lacks XDP support); use --mode skb or --mode auto")
}

fn set_iface_slot(pins: &PinDir, ifindex: u32, slot: u32) -> Result<()> {
    if ifindex >= MAX_IFINDEX {
        tracing::warn!(
            "ifindex {ifindex} is beyond {MAX_IFINDEX}: its packets are counted under 'other'"
        );
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

/// Drop the link pin (which detaches) and the slot of one attachment.
fn forget(pins: &PinDir, table: &mut Array<MapData, Attachment>, a: &AttachedIface) -> Result<()> {
    let link = pins.link(&a.name);
    if link.exists() {
        std::fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    table.set(a.slot, Attachment::default(), 0)?;
    if a.ifindex < MAX_IFINDEX {
        let mut slots = maps::iface_slots(pins)?;
        if slots.get(&a.ifindex, 0)? == a.slot {
            slots.set(a.ifindex, 0, 0)?;
        }
    }
    Ok(())
}

/// Detach the named interfaces; returns the names that were not attached.
pub fn detach(pins: &PinDir, ifaces: &[String]) -> Result<Vec<String>> {
    if !pins.is_loaded() {
        return Ok(ifaces.to_vec());
    }
    let _locked = Locked::loaded(pins, Access::Write)?;
    let mut table = maps::attachments(pins)?;
    let current = attached(pins)?;
    let mut missing = Vec::new();
    for name in ifaces {
        match current.iter().find(|a| &a.name == name) {
            Some(a) => forget(pins, &mut table, a)?,
            None => missing.push(name.clone()),
        }
    }
    Ok(missing)
}

/// What `detach --all` did.
pub struct Removed {
    pub interfaces: Vec<String>,
    /// Files in the pin directory floodgate did not create, left in place.
    pub foreign: Vec<std::path::PathBuf>,
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

/// Detach everything and remove every pin floodgate made: the program and every map go away.
/// Only a directory whose pinned program is floodgate's is touched, and in it only the pins
/// floodgate makes (link pins only if they run that program); anything else, and the
/// directories holding it, stays.
pub fn detach_all(pins: &PinDir) -> Result<Removed> {
    if !pins.root().exists() {
        return Ok(Removed {
            interfaces: Vec::new(),
            foreign: Vec::new(),
        });
    }
    let _locked = Locked::existing(pins)?;
    let ours = if pins.prog().exists() {
        let info = ProgramInfo::from_pin(pins.prog())
            .with_context(|| format!("cannot read {}", pins.prog().display()))?;
        if info.name_as_str() != Some("floodgate") {
            bail!(
                "{} is not floodgate's program (it is named {:?}): --pin-dir names another tool's directory; nothing was removed",
                pins.prog().display(),
                info.name_as_str().unwrap_or("?")
            );
        }
        Some(info.id())
    } else {
        None
    };
    let interfaces = if pins.map(names::ATTACHMENTS).exists() {
        attached(pins)?.into_iter().map(|a| a.name).collect()
    } else {
        Vec::new()
    };
    let mut foreign = Vec::new();
    let remove = |path: &std::path::Path| -> Result<()> {
        std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
    };
    let is_our_link =
        |path: &std::path::Path| ours.is_some() && super::raw::link_prog_id(path) == ours;
    let is_our_map = |n: &str| {
        names::PRODUCT_MAPS.contains(&n) || n == names::ATTACHMENTS || EARLIER_MAPS.contains(&n)
    };
    // Links first: removing a link pin detaches the program from that interface.
    for (dir, kind) in [
        (pins.links_dir(), 0),
        (pins.state_dir(), 1),
        (pins.maps_dir(), 2),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            let mine = entry.file_type()?.is_file()
                && match kind {
                    0 => is_our_link(&path),
                    1 => name.parse::<u64>().is_ok(),
                    _ => is_our_map(name),
                };
            if mine {
                remove(&path)?;
            } else {
                foreign.push(path);
            }
        }
    }
    if ours.is_some() {
        remove(&pins.prog())?;
    }
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
    if foreign.is_empty() {
        std::fs::remove_dir(pins.root())
            .with_context(|| format!("cannot remove {}", pins.root().display()))?;
    }
    Ok(Removed {
        interfaces,
        foreign,
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
