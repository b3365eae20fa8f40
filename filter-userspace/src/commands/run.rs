//! `run`: the daemon.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use crate::state::PinDir;

pub fn run(
    pins: &PinDir,
    config: &Path,
    detach_on_exit: bool,
    metrics: Option<SocketAddr>,
) -> Result<()> {
    crate::daemon::run(pins, config, detach_on_exit, metrics)
}
