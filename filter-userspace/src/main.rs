//! `floodgate`: the controller. Exit codes: 0 ok, 1 runtime error, 2 usage error.

use clap::Parser;
use floodgate::cli::Cli;
use floodgate::commands;
use floodgate::error::exit_code;

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
    if let Err(err) = commands::run(cli) {
        if commands::is_broken_pipe(&err) {
            return;
        }
        eprintln!("floodgate: error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
