//! `cargo xtask`: set-up, build, test, demo and bench for floodgate. Every command first checks
//! prerequisites (fast when all are present) and installs what is missing when run as root.

mod demo;
mod prereqs;

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
    /// Check prerequisites and install what is missing (root) or print how.
    Setup,
    /// Build the release `floodgate` binary (XDP object embedded).
    Build,
    /// Formatting, clippy, unit tests, kernel verdict tests and end-to-end tests (needs root).
    Test,
    /// Without IFACE: a self-contained demo in throwaway namespaces. With IFACE: attach to it
    /// and show live counters until Ctrl-C (the filter stays attached; `floodgate detach IFACE`).
    Demo {
        iface: Option<String>,
        /// Seconds the self-contained demo floods for.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
    },
    /// Run every cargo-fuzz target (fuzz/) for SECONDS each and print libFuzzer's totals.
    Fuzz {
        #[arg(default_value_t = 60)]
        seconds: u32,
    },
    /// Benchmarks P1-P3 side by side with peers; writes target/bench/latest.{json,png}.
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

pub fn cargo(args: &[&str]) -> Result<()> {
    let started = Instant::now();
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    eprintln!(
        "xtask: cargo {} took {:.1}s",
        args.first().unwrap_or(&""),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads XDP programs and creates network namespaces: run it as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
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
            require_root("the test suite")?;
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
            cargo(&["test", "--workspace", "--release"])?;
            eprintln!(
                "xtask: all tests passed in {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        Cmd::Demo { iface, seconds } => {
            prereqs::ensure(Need::Test)?;
            require_root("the demo")?;
            prereqs::ensure_bpffs()?;
            cargo(&["build", "--release", "--bin", "floodgate"])?;
            match iface {
                Some(iface) => demo::on_interface(&iface)?,
                None => demo::self_contained(seconds)?,
            }
        }
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
            require_root("the benchmark")?;
            prereqs::ensure_bpffs()?;
            let mut full = vec!["bench", "-p", "filter-userspace", "--bench", "xdp", "--"];
            full.extend(args.iter().map(String::as_str));
            cargo(&full)?;
        }
    }
    Ok(())
}
