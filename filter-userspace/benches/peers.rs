//! xdp-filter (xdp-tools 1.3.1) as a per-packet peer: its "allow all, deny listed" program
//! loaded with bpftool and run through BPF_PROG_TEST_RUN on the same frames as ours.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, MapInfo, PerCpuHashMap, PerCpuValues};
use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use test_support::{sh, unique_name};

const OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o";
/// Maps the object pins by name at the bpffs root, whoever loads it.
const ROOT_PINS: &[&str] = &[
    "filter_ethernet",
    "filter_ipv4",
    "filter_ipv6",
    "filter_ports",
    "xdp_stats_map",
];
/// xdp-filter's value flag for "match on source address".
const MAP_FLAG_SRC: u64 = 1;

pub struct XdpFilter {
    dir: PathBuf,
    prog: Xdp,
}

impl XdpFilter {
    /// Load xdp-filter's program and deny the `v4` and `v6` sources. Refuses (rather than touch
    /// them) if its maps are already pinned: someone runs xdp-filter on this host.
    pub fn load(v4: &[[u8; 4]], v6: &[[u8; 16]]) -> Result<Self> {
        if !std::path::Path::new(OBJECT).exists() {
            bail!("{OBJECT} not found (Debian package xdp-tools)");
        }
        if let Some(p) = ROOT_PINS
            .iter()
            .find(|p| PathBuf::from("/sys/fs/bpf").join(p).exists())
        {
            bail!("/sys/fs/bpf/{p} exists: xdp-filter is in use on this host, not touching it");
        }
        let dir = PathBuf::from("/sys/fs/bpf").join(unique_name("fgxdpfilt-"));
        let loaded = sh(&[
            "bpftool",
            "prog",
            "loadall",
            OBJECT,
            dir.to_str().context("path")?,
            "type",
            "xdp",
        ]);
        Self::cleanup_on_error(&dir, loaded.map(|_| ()))?;
        let prog = Xdp::from_pin(dir.join("xdpfilt_alw_all"), XdpAttachType::Interface);
        let prog = Self::cleanup_on_error(&dir, prog.map_err(Into::into))?;
        let filter = Self { dir, prog };
        filter.deny(v4, v6)?;
        Ok(filter)
    }

    fn cleanup_on_error<T>(dir: &std::path::Path, r: Result<T>) -> Result<T> {
        if r.is_err() {
            remove_pins(dir);
        }
        r
    }

    fn deny(&self, v4: &[[u8; 4]], v6: &[[u8; 16]]) -> Result<()> {
        let info = self.prog.info()?;
        let ids = info.map_ids()?.context("no map ids")?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let flags = || PerCpuValues::try_from(vec![MAP_FLAG_SRC; cpus]);
        for id in ids {
            let name = MapInfo::from_id(id)?
                .name_as_str()
                .unwrap_or("")
                .to_string();
            match name.as_str() {
                "filter_ipv4" => {
                    let mut m: PerCpuHashMap<MapData, [u8; 4], u64> =
                        PerCpuHashMap::try_from(Map::PerCpuHashMap(MapData::from_id(id)?))?;
                    for a in v4 {
                        m.insert(*a, flags()?, 0)?;
                    }
                }
                "filter_ipv6" => {
                    let mut m: PerCpuHashMap<MapData, [u8; 16], u64> =
                        PerCpuHashMap::try_from(Map::PerCpuHashMap(MapData::from_id(id)?))?;
                    for a in v6 {
                        m.insert(*a, flags()?, 0)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Mean ns per run of `frame`, and the XDP action.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        test_support::run_frame(&self.prog, frame, repeat)
    }
}

fn remove_pins(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    for p in ROOT_PINS {
        let _ = std::fs::remove_file(PathBuf::from("/sys/fs/bpf").join(p));
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        remove_pins(&self.dir);
    }
}
