//! Prerequisites: checked quickly on every run and installed on a Debian host when missing:
//! Debian packages as root (through sudo for a normal user), and what lives in the home
//! directory (rustup's rust-src, bpf-linker, cargo-fuzz) as whoever runs xtask.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::privilege;

const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
const BPF_LINKER_VERSION: &str = "0.13";
const POLLY_MARKER: &str = "/usr/lib/llvm-22/lib/libPolly.a";

/// Commands the tests and benches run, and the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    // tests/metrics.rs validates the exposition with `promtool check metrics`.
    ("promtool", "prometheus"),
    // The capture tests read the pcap files back, packet by packet.
    ("tshark", "tshark"),
    // tests/btf.rs reads the pinned maps with `bpftool map show` and `map dump`.
    ("bpftool", "bpftool"),
];
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("xdp-filter", "xdp-tools"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("ethtool", "ethtool"),
];
/// Data files the bench reads, and their packages: the real country lists of P1.
const BENCH_FILES: &[(&str, &str)] = &[
    ("/usr/share/GeoIP/GeoIP.dat", "geoip-database"),
    ("/usr/share/GeoIP/GeoIPv6.dat", "geoip-database"),
];

pub fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

fn nightly_rust_src() -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!(" {BPF_LINKER_VERSION}."))
        })
        .unwrap_or(false)
}

fn cargo_fuzz_ok() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// What is missing, as (description, install step).
enum Step {
    RustSrc,
    Apt(Vec<&'static str>),
    BpfLinker,
    CargoFuzz,
}

impl Step {
    fn command(&self) -> String {
        match self {
            Step::RustSrc => "rustup component add rust-src --toolchain nightly".into(),
            Step::Apt(p) => {
                let sudo = if privilege::is_root() { "" } else { "sudo " };
                format!(
                    "{sudo}apt-get update && {sudo}apt-get install -y {}",
                    p.join(" ")
                )
            }
            Step::BpfLinker => format!(
                "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version '^{BPF_LINKER_VERSION}' --no-default-features --features llvm-22"
            ),
            Step::CargoFuzz => "cargo install cargo-fuzz".into(),
        }
    }

    fn apply(&self) -> Result<()> {
        match self {
            Step::RustSrc => run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ])),
            Step::Apt(p) => {
                let why = format!("installing {}", p.join(" "));
                run(privilege::as_root(&why, "apt-get")?.args(["update", "-q"]))?;
                // Through env: sudo would drop DEBIAN_FRONTEND from our environment.
                run(privilege::as_root(&why, "env")?
                    .args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
                    .args(["install", "-y", "-q", "--no-install-recommends"])
                    .args(p))
            }
            Step::BpfLinker => run(Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    &format!("^{BPF_LINKER_VERSION}"),
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")),
            Step::CargoFuzz => run(Command::new("cargo").args(["install", "cargo-fuzz"])),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Build,
    Test,
    Bench,
    Fuzz,
}

/// Check everything `need` requires; install what is missing (root) or explain how.
pub fn ensure(need: Need) -> Result<()> {
    let mut steps = Vec::new();
    if !nightly_rust_src() {
        steps.push(Step::RustSrc);
    }
    let mut apt: Vec<&'static str> = Vec::new();
    let linker = bpf_linker_ok();
    // bpf-linker links libLLVM 22 dynamically: building it needs the -dev packages, and
    // running it needs the library they pull in.
    let llvm_dev = Path::new("/usr/include/llvm-22/llvm/Config/llvm-config.h").exists()
        && Path::new("/usr/lib/llvm-22/lib/libLLVM.so.22.1").exists()
        && Path::new(POLLY_MARKER).exists();
    if !llvm_dev {
        apt.extend(LLVM_PACKAGES);
    }
    let mut tools: Vec<(&str, &'static str)> = Vec::new();
    if need >= Need::Test {
        tools.extend(TEST_TOOLS);
    }
    if need >= Need::Bench {
        tools.extend(BENCH_TOOLS);
    }
    for (cmd, pkg) in tools {
        if !on_path(cmd) && !apt.contains(&pkg) {
            apt.push(pkg);
        }
    }
    if need >= Need::Bench {
        for (file, pkg) in BENCH_FILES {
            if !Path::new(file).exists() && !apt.contains(pkg) {
                apt.push(pkg);
            }
        }
    }
    if !apt.is_empty() {
        steps.push(Step::Apt(apt));
    }
    if !linker {
        steps.push(Step::BpfLinker);
    }
    if need == Need::Fuzz && !cargo_fuzz_ok() {
        steps.push(Step::CargoFuzz);
    }
    if steps.is_empty() {
        return Ok(());
    }
    for s in &steps {
        eprintln!("xtask: installing: {}", s.command());
        s.apply().with_context(|| {
            let all: Vec<String> = steps.iter().map(|s| format!("  {}", s.command())).collect();
            format!(
                "could not install prerequisites; these are the steps:\n{}\n",
                all.join("\n")
            )
        })?;
    }
    Ok(())
}

/// bpffs at /sys/fs/bpf, which fresh machines may lack.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    eprintln!("xtask: mounting bpffs at /sys/fs/bpf");
    run(
        privilege::as_root("mounting bpffs at /sys/fs/bpf", "mount")?.args([
            "-t",
            "bpf",
            "bpf",
            "/sys/fs/bpf",
        ]),
    )
}
