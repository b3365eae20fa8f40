//! `cargo xtask`: set-up, build, test, demo and bench for floodgate. Every command first checks
//! prerequisites (fast when all are present) and installs what is missing.
//!
//! Run it as your normal user: cargo always runs as you, and sudo is asked only for what needs
//! root (see privilege.rs). Run as root, it does everything itself (CI).

mod demo;
mod prereqs;
mod privilege;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use prereqs::Need;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check prerequisites and install what is missing (Debian packages through sudo).
    Setup,
    /// Build the release `floodgate` binary (XDP object embedded).
    Build,
    /// Formatting, clippy, unit tests, kernel verdict tests and end-to-end tests (test binaries
    /// run as root: through sudo when you are not root).
    Test,
    /// Without IFACE: a self-contained demo in throwaway namespaces. With IFACE: attach to it
    /// and show live counters until Ctrl-C (the filter stays attached; `floodgate detach IFACE`).
    Demo {
        iface: Option<String>,
        /// Seconds the self-contained demo floods for.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
    },
    /// The root half of `demo`, which runs it (through sudo) once floodgate is built.
    #[command(hide = true)]
    DemoPrivileged {
        iface: Option<String>,
        #[arg(long, default_value_t = 8)]
        seconds: u32,
    },
    /// Run every cargo-fuzz target (fuzz/) for SECONDS each and print libFuzzer's totals.
    Fuzz {
        #[arg(default_value_t = 60)]
        seconds: u32,
    },
    /// Benchmarks P1-P6 side by side with peers; writes target/bench/latest.{json,png}.
    Bench {
        /// Extra arguments for the bench binary (e.g. --quick).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cargo<S: AsRef<str>>(args: &[S]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let started = Instant::now();
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    let verb = args
        .iter()
        .find(|a| !a.starts_with('-') && !a.contains('='));
    eprintln!(
        "xtask: cargo {} took {:.1}s",
        verb.unwrap_or(&""),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo ARGS` with test and bench binaries run as root (through sudo's runner if needed).
fn cargo_as_root_runner(why: &str, args: &[&str]) -> Result<()> {
    let mut full = privilege::cargo_runner_args(why)?;
    full.extend(args.iter().map(|a| a.to_string()));
    cargo(&full)
}

/// The demo's root half: this same xtask binary, already built, through sudo. No cargo runs
/// as root, so nothing in target/ or ~/.cargo changes owner.
fn demo_through_sudo(prefix: &[String], iface: Option<&str>, seconds: u32) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).arg(exe).arg("demo-privileged");
    cmd.args(iface).arg(format!("--seconds={seconds}"));
    eprintln!("xtask: running the demo as root: sudo ... xtask demo-privileged");
    // Ctrl-C is for the demo, which cleans up after it: we wait for it.
    demo::ignore_sigint();
    let status = cmd.status().context("cannot run sudo")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

fn demo_privileged(iface: Option<&str>, seconds: u32) -> Result<()> {
    if !privilege::is_root() {
        bail!("demo-privileged is the part of `cargo xtask demo` that runs as root; run `cargo xtask demo` instead");
    }
    prereqs::ensure_bpffs()?;
    match iface {
        Some(iface) => demo::on_interface(iface),
        None => demo::self_contained(seconds),
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if !matches!(cli.command, Cmd::DemoPrivileged { .. }) {
        privilege::warn_if_sudo_cargo();
    }
    match cli.command {
        Cmd::Setup => {
            prereqs::ensure(Need::Bench)?;
            eprintln!("xtask: all prerequisites present");
        }
        Cmd::Build => {
            prereqs::ensure(Need::Build)?;
            cargo(&["build", "--release", "--bin", "floodgate"])?;
            eprintln!(
                "xtask: built {}",
                workspace_root().join("target/release/floodgate").display()
            );
        }
        Cmd::Test => {
            let started = Instant::now();
            prereqs::ensure(Need::Test)?;
            // Asks sudo now (if we are not root), not after minutes of building.
            let why = "running the kernel and end-to-end tests";
            privilege::cargo_runner_args(why)?;
            prereqs::ensure_bpffs()?;
            cargo(&["fmt", "--all", "--", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo_as_root_runner(why, &["test", "--workspace", "--release"])?;
            eprintln!(
                "xtask: all tests passed in {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        Cmd::Demo { iface, seconds } => {
            prereqs::ensure(Need::Test)?;
            let prefix = if privilege::is_root() {
                None
            } else {
                Some(privilege::privileged_prefix("the demo")?)
            };
            cargo(&["build", "--release", "--bin", "floodgate"])?;
            match prefix {
                None => demo_privileged(iface.as_deref(), seconds)?,
                Some(prefix) => demo_through_sudo(&prefix, iface.as_deref(), seconds)?,
            }
        }
        Cmd::DemoPrivileged { iface, seconds } => demo_privileged(iface.as_deref(), seconds)?,
        Cmd::Fuzz { seconds } => {
            prereqs::ensure(Need::Fuzz)?;
            for target in ["cidr_entry", "list_file", "packet_model"] {
                let status = Command::new("cargo")
                    .args(["+nightly", "fuzz", "run", "-O", target, "--"])
                    .arg(format!("-max_total_time={seconds}"))
                    .arg("-print_final_stats=1")
                    .current_dir(workspace_root().join("fuzz"))
                    .status()
                    .context("running cargo fuzz")?;
                if !status.success() {
                    bail!("fuzz target {target} found a failure; see fuzz/artifacts/{target}");
                }
            }
        }
        Cmd::Bench { args } => {
            prereqs::ensure(Need::Bench)?;
            let why = "running the benchmark";
            privilege::cargo_runner_args(why)?;
            prereqs::ensure_bpffs()?;
            let out = workspace_root().join("target/bench");
            if !privilege::is_root() {
                // The bench (run as root) writes its report here: the directory stays ours,
                // and what root wrote in it is given back below.
                std::fs::create_dir_all(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
            }
            let mut full = vec!["bench", "-p", "filter-userspace", "--bench", "xdp", "--"];
            full.extend(args.iter().map(String::as_str));
            let ran = cargo_as_root_runner(why, &full);
            if !privilege::is_root() {
                privilege::give_back(&out)?;
            }
            ran?;
        }
    }
    Ok(())
}
