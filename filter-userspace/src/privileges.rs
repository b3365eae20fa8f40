//! Refuse early, and say which privilege is missing, instead of failing deep inside a syscall.

use anyhow::{bail, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Loading and attaching XDP needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN.
pub fn require() -> Result<()> {
    let Some(caps) = effective_caps() else {
        bail!("cannot read capabilities from /proc/self/status; run floodgate as root");
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !missing.is_empty() {
        bail!(
            "floodgate needs {} to manage XDP programs and their maps; run it as root (sudo floodgate ...)",
            missing.join(" and ")
        );
    }
    Ok(())
}
