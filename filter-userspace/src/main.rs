//! `floodgate`: the controller. Exit codes: 0 ok, 1 runtime error, 2 usage error.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use filter_common::{FilterConfig, ListKind, MalformedPolicy};
use floodgate::attach::{self, AttachOutcome};
use floodgate::cidr::{parse_entry, read_list_file};
use floodgate::cli::{Cli, Command, ListAction, MalformedArg};
use floodgate::error::{exit_code, usage};
use floodgate::lists::{self, dedup};
use floodgate::pins::PinDir;
use floodgate::{privileges, stats};

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Err(err) = run(cli) {
        eprintln!("floodgate: error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}

fn parse_entries(texts: &[String]) -> Result<Vec<floodgate::cidr::Prefix>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for t in texts {
        match parse_entry(t) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(dedup(out))
    } else {
        Err(usage(format!("{}; nothing was changed", errors.join("; "))))
    }
}

fn run(cli: Cli) -> Result<()> {
    let pins = PinDir::new(cli.pin_dir);
    privileges::require()?;
    match cli.command {
        Command::Attach { interfaces, mode } => {
            for (name, outcome) in attach::attach(&pins, &interfaces, mode)? {
                match outcome {
                    AttachOutcome::Attached { mode } => {
                        println!("attached to {name} in {mode} mode")
                    }
                    AttachOutcome::AlreadyAttached { mode } => {
                        println!("{name}: already attached ({mode} mode), nothing to do")
                    }
                }
            }
        }
        Command::Detach { interfaces, all } => {
            if all {
                let names = attach::detach_all(&pins)?;
                println!(
                    "detached {} and removed {}",
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    },
                    pins.root().display()
                );
            } else {
                let missing = attach::detach(&pins, &interfaces)?;
                for name in &interfaces {
                    if missing.contains(name) {
                        println!("{name}: was not attached");
                    } else {
                        println!("detached from {name}");
                    }
                }
            }
        }
        Command::Status { json } => status(&pins, json)?,
        Command::Block(args) => list_command(&pins, ListKind::Block, args.action)?,
        Command::Allow(args) => list_command(&pins, ListKind::Allow, args.action)?,
        Command::Stats {
            watch,
            json,
            interval,
            count,
        } => {
            if watch {
                watch_stats(&pins, json, interval, count)?;
            } else {
                let s = stats::read(&pins)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print!("{}", stats::render_table(&s));
                }
            }
        }
        Command::Policy { malformed } => {
            pins.require_loaded()?;
            let mut config = attach::read_config(&pins)?;
            if let Some(m) = malformed {
                config.malformed_policy = match m {
                    MalformedArg::Drop => MalformedPolicy::Drop,
                    MalformedArg::Pass => MalformedPolicy::Pass,
                } as u32;
                attach::write_config(&pins, config)?;
            }
            print_policy(&config);
        }
    }
    Ok(())
}

fn print_policy(config: &FilterConfig) {
    let m = if config.malformed_policy == MalformedPolicy::Pass as u32 {
        "pass"
    } else {
        "drop"
    };
    println!("malformed packets: {m}");
}

fn list_command(pins: &PinDir, kind: ListKind, action: ListAction) -> Result<()> {
    let name = kind.name();
    let change = match action {
        ListAction::List => {
            pins.require_loaded()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for p in lists::read(pins, kind)? {
                writeln!(out, "{p}")?;
            }
            return Ok(());
        }
        ListAction::Add { entries } => {
            let entries = parse_entries(&entries)?;
            let _lock = pins.lock()?;
            lists::update(pins, kind, |set| {
                set.extend(entries);
                Ok(())
            })?
        }
        ListAction::Del { entries } => {
            let entries = parse_entries(&entries)?;
            let _lock = pins.lock()?;
            lists::update(pins, kind, |set| {
                let absent: Vec<String> = entries
                    .iter()
                    .filter(|p| !set.contains(p))
                    .map(|p| p.to_string())
                    .collect();
                if !absent.is_empty() {
                    return Err(usage(format!(
                        "not on the {name} list: {}; nothing was changed (see `floodgate {name} list`)",
                        absent.join(", ")
                    )));
                }
                for p in &entries {
                    set.remove(p);
                }
                Ok(())
            })?
        }
        ListAction::Load { file, replace } => {
            let started = Instant::now();
            let entries = read_list_file(&file)?;
            let _lock = pins.lock()?;
            let change = lists::update(pins, kind, |set| {
                if replace {
                    set.clear();
                }
                set.reserve(entries.len());
                set.extend(entries);
                Ok(())
            })?;
            eprintln!(
                "loaded {} in {:.2}s",
                file.display(),
                started.elapsed().as_secs_f64()
            );
            change
        }
        ListAction::Flush => {
            let _lock = pins.lock()?;
            lists::update(pins, kind, |set| {
                set.clear();
                Ok(())
            })?
        }
    };
    println!(
        "{name} list: {} added, {} removed, {} entries",
        change.added, change.removed, change.total
    );
    Ok(())
}

fn status(pins: &PinDir, json: bool) -> Result<()> {
    let Some(prog) = attach::program_status(pins)? else {
        if json {
            println!("{{\"loaded\": false}}");
        } else {
            println!(
                "floodgate is not loaded (nothing pinned at {})",
                pins.root().display()
            );
        }
        return Ok(());
    };
    let config = attach::read_config(pins)?;
    let mut lists_json = serde_json::Map::new();
    let mut text = format!(
        "program id {} pinned at {}\n",
        prog.program_id,
        pins.prog().display()
    );
    if prog.interfaces.is_empty() {
        text.push_str("attached to no interface\n");
    }
    for a in &prog.interfaces {
        text.push_str(&format!(
            "  {:<16} ifindex {:<6} {:<7} {}\n",
            a.name,
            a.ifindex,
            a.mode,
            if a.present {
                "attached"
            } else {
                "interface gone (run `floodgate detach` to tidy up)"
            }
        ));
    }
    for kind in ListKind::ALL {
        let sizes = lists::sizes(pins, kind)?;
        let fill = lists::fill_levels(pins, kind)?;
        text.push_str(&format!(
            "{} list: {} IPv4 and {} IPv6 entries\n",
            kind.name(),
            sizes.v4,
            sizes.v6
        ));
        let mut maps = serde_json::Map::new();
        for (map, n, cap) in &fill {
            text.push_str(&format!(
                "  {map:<16} {n:>9} / {cap:<9} ({:.1}%)\n",
                *n as f64 * 100.0 / f64::from(*cap)
            ));
            maps.insert(
                map.to_string(),
                serde_json::json!({"entries": n, "capacity": cap}),
            );
        }
        lists_json.insert(
            kind.name().to_string(),
            serde_json::json!({"ipv4": sizes.v4, "ipv6": sizes.v6, "maps": maps}),
        );
    }
    let malformed = if config.malformed_policy == MalformedPolicy::Pass as u32 {
        "pass"
    } else {
        "drop"
    };
    text.push_str(&format!("malformed packets: {malformed}\n"));
    if json {
        let v = serde_json::json!({
            "loaded": true,
            "program_id": prog.program_id,
            "interfaces": prog.interfaces,
            "lists": lists_json,
            "malformed_policy": malformed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn watch_stats(pins: &PinDir, json: bool, interval: f64, count: Option<u64>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let period = Duration::from_secs_f64(interval);
        let mut prev = stats::read(pins)?;
        let mut last = Instant::now();
        let mut ticker = tokio::time::interval(period);
        ticker.tick().await;
        let mut shown = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            let now = stats::read(pins)?;
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            if json {
                println!("{}", serde_json::to_string(&now)?);
            } else {
                // Redraw in place: cursor home, clear screen.
                print!("\x1b[H\x1b[2J{}", stats::render_rates(&prev, &now, secs));
                std::io::stdout().flush()?;
            }
            prev = now;
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                return Ok(());
            }
        }
    })
}
