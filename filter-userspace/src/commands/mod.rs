//! One module per command. Each prints through [`out`] so a closed pipe (`floodgate block
//! list | head -1`) ends the command quietly instead of failing it.

mod attach;
mod bans;
pub mod capture;
mod lists;
mod policy;
mod run;
mod sampling;
mod stats;
mod status;
mod top;

use std::io::Write;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::state::PinDir;

/// Write to standard output.
pub fn out(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    std::io::stdout().lock().write_fmt(text)
}

/// `println!` that returns the error (a broken pipe) instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Print the report of a change that has taken effect (`done` says which): if it cannot be
/// written, the error must still say the change happened, or the operator would retry it.
/// A closed pipe stays quiet, as for any output.
pub fn report_done(done: &str, text: std::fmt::Arguments<'_>) -> Result<()> {
    out(text).map_err(|e| {
        anyhow::Error::new(e).context(format!("{done}, but writing this report failed"))
    })
}

pub fn run(cli: Cli) -> Result<()> {
    let pins = PinDir::new(cli.pin_dir)?;
    if let Command::Check { file, json } = &cli.command {
        // Checking a file touches no kernel state: no privileges needed.
        return policy::check(file, *json);
    }
    crate::privileges::require()?;
    match cli.command {
        Command::Check { .. } => unreachable!("handled above"),
        Command::Apply {
            file,
            dry_run,
            force,
            json,
        } => policy::apply(&pins, &file, dry_run, force, json),
        Command::Bans(args) => bans::run(&pins, args.action),
        Command::Run {
            config,
            detach_on_exit,
            metrics,
        } => run::run(&pins, &config, detach_on_exit, metrics),
        Command::Attach {
            interfaces,
            mode,
            list_capacity,
        } => attach::attach(&pins, &interfaces, mode, list_capacity),
        Command::Detach { interfaces, all } => attach::detach(&pins, &interfaces, all),
        Command::Status { json } => status::status(&pins, json),
        Command::Block(args) => lists::run(&pins, filter_common::ListKind::Block, args.action),
        Command::Allow(args) => lists::run(&pins, filter_common::ListKind::Allow, args.action),
        Command::Stats {
            watch,
            json,
            prometheus,
            interval,
            count,
        } => {
            if prometheus {
                stats::prometheus(&pins)
            } else {
                stats::stats(&pins, watch, json, interval, count)
            }
        }
        Command::Policy { malformed, json } => policy::malformed(&pins, malformed, json),
        Command::Capture {
            write,
            reason,
            source,
            count,
            duration,
        } => capture::capture(&pins, &reason, &source, &write, count, duration),
        Command::Sampling { every, cap, json } => sampling::sampling(&pins, every, cap, json),
        Command::Top {
            interval,
            json,
            count,
        } => top::top(&pins, interval, json, count),
    }
}

/// True when the error is a closed standard output: the reader has what it wanted.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
