//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::state::attach::Mode;
use crate::state::pins::DEFAULT_PIN_DIR;

/// floodgate: an XDP packet filter that drops blocklisted and malformed traffic at the driver.
///
/// The filter keeps enforcing after this command exits; run `floodgate status` to see it.
#[derive(Parser, Debug)]
#[command(name = "floodgate", version, propagate_version = true)]
pub struct Cli {
    /// Where the program, maps and links are pinned (must be on bpffs).
    #[arg(long, global = true, env = "FLOODGATE_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// More detail on stderr (repeat for more). `run` logs at info (what it applies, the
    /// bans placed), other commands at warn; RUST_LOG, if set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less on stderr (repeat for less): each -q takes one -v back.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// Log levels from least to most detail.
const LEVELS: [&str; 5] = ["off", "error", "warn", "info", "debug"];

impl Cli {
    /// The log level: warn (info for the `run` daemon, whose log is its output), one step
    /// more per -v and one less per -q.
    pub fn log_level(&self) -> &'static str {
        let base: i32 = match self.command {
            Command::Run { .. } => 3,
            _ => 2,
        };
        let at = base + i32::from(self.verbose) - i32::from(self.quiet);
        LEVELS[at.clamp(0, LEVELS.len() as i32 - 1) as usize]
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the filter to interfaces (loads and pins it on first use).
    Attach {
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
        /// native: in the driver; skb: generic, works everywhere, slower; auto: native, else skb.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Nodes in the list pool (80 bytes each), set when the filter is first loaded.
        /// Measured needs: about 0.1 node per entry for real lists, 0.73 per entry for 1M
        /// scattered IPv4 addresses (70% of them /32s alone in their /24), 0.8 for realistic
        /// IPv6 lists, up to ~14 per isolated IPv6 /128. A replace needs room for the old and
        /// the new list at once. Accepts k and M suffixes. Default 2M (160 MiB); at most half
        /// of the machine's memory.
        #[arg(long, value_name = "NODES", value_parser = parse_capacity)]
        list_capacity: Option<u32>,
    },
    /// Detach the filter from interfaces; with --all also remove every pin (lists included).
    Detach {
        #[arg(
            value_name = "IFACE",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        interfaces: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Show what is loaded and attached, the policy in force (generation, rules, limits),
    /// list sizes, pool use, bans and kernel memory.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check a policy file; every problem is reported as FILE:LINE:COLUMN. Needs no root.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply a policy file: lists, rules, limits and settings switch at once.
    Apply {
        file: PathBuf,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply even if it would lock out your SSH session or a protected prefix.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show and edit bans (placed by limits with ban_seconds, or by hand).
    Bans(BansArgs),
    /// Run as a daemon: attach and apply FILE, re-apply on SIGHUP and when it changes.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Detach from the policy's interfaces on SIGTERM (by default the filter keeps
        /// enforcing after the daemon exits).
        #[arg(long)]
        detach_on_exit: bool,
        /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (IP:PORT, e.g.
        /// 127.0.0.1:9464 or [::1]:9464); nothing is served unless given.
        #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Manage the blocklist: sources that are dropped.
    Block(ListArgs),
    /// Manage the allowlist: sources that always pass, even if blocklisted.
    Allow(ListArgs),
    /// Packets and bytes per interface and reason.
    Stats {
        /// Per-second rates until interrupted: redrawn in place on a terminal, one table after
        /// another otherwise.
        #[arg(long)]
        watch: bool,
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print every metric once in the Prometheus text format (for node-exporter's textfile
        /// collector); what `floodgate run --metrics` serves.
        #[arg(long, conflicts_with = "watch")]
        prometheus: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Stop --watch after this many redraws.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Write sampled dropped frames to a pcap file (tcpdump, tshark and Wireshark open it),
    /// until --count frames or --duration seconds, whichever comes first, or Ctrl-C.
    /// Sampling is raised to every drop it asks for while it runs (at most the cap per
    /// second), and returns to its setting when it ends.
    Capture {
        /// The pcap file to write (`-`: standard output).
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: PathBuf,
        /// Only frames dropped (or monitored) for this reason; repeat for several.
        #[arg(long, value_name = "REASON", value_parser = crate::commands::capture::parse_reason)]
        reason: Vec<filter_common::Reason>,
        /// Only frames from sources in this address or CIDR; repeat for several.
        #[arg(long, value_name = "CIDR")]
        source: Vec<String>,
        /// Stop after this many frames.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "S", value_parser = crate::commands::capture::parse_duration)]
        duration: Option<f64>,
    },
    /// Show or change the sampling of dropped packets that readers (capture, top) get: 1 in
    /// --every drops, at most --cap records per second over all CPUs.
    Sampling {
        /// 1 in this many drops; 0 turns sampling off for readers that do not raise it (top;
        /// a capture still gets every drop it asks for).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=16_777_215))]
        every: Option<u32>,
        /// Records per second over all CPUs, after a burst of up to one second's worth.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        cap: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// A live view of what is dropped: the top sources, source prefixes (/24, /48) and
    /// destination ports from sampled drops over the last 10 s, and each reason's rate from
    /// the counters with its history, redrawn in place; q, Esc or Ctrl-C quits. It reads the
    /// samples at the operator's sampling setting (`floodgate sampling`) and changes nothing.
    Top {
        /// Seconds between redraws (and JSON snapshots).
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Print snapshots as JSON, one per line, each after one interval, then exit (no
        /// terminal needed).
        #[arg(long)]
        json: bool,
        /// Snapshots to print with --json.
        #[arg(long, requires = "json", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Show or change the policy for truncated or malformed IP packets.
    Policy {
        #[arg(long, value_enum)]
        malformed: Option<MalformedArg>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_capacity(s: &str) -> Result<u32, String> {
    let (digits, mult) = match s.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1u64 << 10),
        None => match s.strip_suffix('M') {
            Some(d) => (d, 1 << 20),
            None => (s, 1),
        },
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(n) if (1024..=(1 << 28)).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "'{s}' is not a node count between 1k and 256M (e.g. 4M or 500000)"
        )),
    }
}

fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        Ok(_) => Err(format!(
            "'{s}' has port 0: give the port to serve metrics on, e.g. 127.0.0.1:9464"
        )),
        Err(_) => Err(format!(
            "'{s}' is not an address to serve metrics on: give IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464 (no host names)"
        )),
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not an interval between 0.1 and 3600 seconds"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MalformedArg {
    Drop,
    Pass,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(subcommand)]
    pub action: ListAction,
}

#[derive(Subcommand, Debug)]
pub enum ListAction {
    /// Add addresses or CIDRs (IPv4 or IPv6).
    Add {
        #[arg(required = true, value_name = "CIDR")]
        entries: Vec<String>,
        /// Block even if it covers your SSH client or a protected prefix.
        #[arg(long)]
        force: bool,
    },
    /// Remove entries exactly as they were added.
    Del {
        #[arg(required = true, value_name = "CIDR")]
        entries: Vec<String>,
    },
    /// Print every entry, one per line (a valid list file).
    List {
        /// One JSON object: the list, the generation in force and every entry.
        #[arg(long)]
        json: bool,
    },
    /// Add every entry of a file (one per line, `#` comments; `-` reads standard input); any
    /// bad line changes nothing.
    Load {
        file: PathBuf,
        /// Make the list exactly the file's entries (entries not in the file are removed).
        #[arg(long)]
        replace: bool,
        /// Block even if it covers your SSH client or a protected prefix.
        #[arg(long)]
        force: bool,
        /// With --replace, accept a file with no entries (emptying the list); without it, an
        /// empty file (say, a failed download) is refused and changes nothing.
        #[arg(long, requires = "replace")]
        allow_empty: bool,
    },
    /// Remove every entry.
    Flush,
}

#[derive(Args, Debug)]
pub struct BansArgs {
    #[command(subcommand)]
    pub action: BansAction,
}

#[derive(Subcommand, Debug)]
pub enum BansAction {
    /// Every ban with the seconds it has left.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Ban sources (addresses or CIDRs) for SECONDS.
    Add {
        #[arg(required = true, value_name = "CIDR")]
        entries: Vec<String>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2_592_000))]
        seconds: u32,
        /// Ban even your SSH client or a protected prefix.
        #[arg(long)]
        force: bool,
    },
    /// Lift bans.
    Del {
        #[arg(required = true, value_name = "CIDR")]
        entries: Vec<String>,
    },
    /// Lift every ban.
    Flush,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(args: &[&str]) -> &'static str {
        let mut full = vec!["floodgate"];
        full.extend_from_slice(args);
        Cli::parse_from(full).log_level()
    }

    #[test]
    fn the_daemon_logs_at_info_by_default() {
        assert_eq!(level(&["run", "--config", "f.toml"]), "info");
    }

    #[test]
    fn commands_log_at_warn_by_default() {
        assert_eq!(level(&["status"]), "warn");
    }

    #[test]
    fn verbose_adds_detail_and_quiet_takes_it_away() {
        assert_eq!(level(&["-v", "run", "--config", "f.toml"]), "debug");
        assert_eq!(level(&["run", "--config", "f.toml", "-q"]), "warn");
        assert_eq!(level(&["-qq", "run", "--config", "f.toml"]), "error");
        assert_eq!(level(&["-v", "status"]), "info");
        assert_eq!(level(&["-vvvv", "status"]), "debug");
        assert_eq!(level(&["-qqqq", "status"]), "off");
        assert_eq!(level(&["-v", "-q", "status"]), "warn");
    }
}
