//! `floodgate`: the controller. Exit codes: 0 ok, 1 runtime error, 2 usage error.

use std::io::{IsTerminal, Write};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use floodgate::cli::Cli;
use floodgate::commands;
use floodgate::error::exit_code;
use floodgate::state::pins::DEFAULT_PIN_DIR;

const PIN_DIR_ENV: &str = "FLOODGATE_PIN_DIR";

fn main() {
    // clap reads an empty FLOODGATE_PIN_DIR as a missing --pin-dir value and says so, which
    // names the wrong culprit: take it out, and say what is wrong if nothing else names a
    // directory. Nothing else runs yet, so changing the environment is safe.
    let empty_env = std::env::var_os(PIN_DIR_ENV).is_some_and(|v| v.is_empty());
    if empty_env {
        std::env::remove_var(PIN_DIR_ENV);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if empty_env && matches.value_source("pin_dir") == Some(ValueSource::DefaultValue) {
        let _ = writeln!(
            std::io::stderr(),
            "floodgate: error: {PIN_DIR_ENV} is set but empty; unset it to use {DEFAULT_PIN_DIR}, or set it (or --pin-dir) to a directory on bpffs"
        );
        std::process::exit(2);
    }
    let level = cli.log_level();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Colors only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    if let Err(err) = commands::run(cli) {
        if commands::is_broken_pipe(&err) {
            return;
        }
        // Whatever a message quotes (a path, a name, a kernel's answer), no control
        // character reaches the terminal; line breaks of multi-line messages stay.
        let _ = writeln!(
            std::io::stderr(),
            "floodgate: error: {}",
            floodgate::text::escape(&format!("{err:#}"), true)
        );
        std::process::exit(exit_code(&err));
    }
}
