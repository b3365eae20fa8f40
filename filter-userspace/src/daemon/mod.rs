//! `floodgate run --config FILE`: attach and apply the policy, then keep it in force: re-apply
//! on SIGHUP and when the file (or a list file it names) changes, log with tracing, and
//! forward the program's rare events (a ban placed) from aya-log. On SIGTERM the filter keeps
//! enforcing, unless `--detach-on-exit`: protection must not depend on the controller.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::observe::metrics::{unix_now, DaemonHealth};
use crate::policy::{self, limits::limit_id};
use crate::state::PinDir;

mod metrics;

/// Limit names by id, for the kernel's ban events (which carry the id).
type LimitNames = Arc<Mutex<Vec<(u32, String)>>>;

/// Forwards aya-log records to tracing, naming the limit of a ban event.
struct EventLog {
    names: LimitNames,
}

impl log::Log for EventLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut text = record.args().to_string();
        if let Some(at) = text.find("by limit ") {
            let rest = &text[at + 9..];
            let end = rest.find(' ').unwrap_or(rest.len());
            if let Ok(id) = rest[..end].parse::<u32>() {
                let names = self.names.lock().expect("not poisoned");
                if let Some((_, name)) = names.iter().find(|(i, _)| *i == id) {
                    text = format!("{}by limit {name}{}", &text[..at], &rest[end..]);
                }
            }
        }
        info!(target: "floodgate::kernel", "{text}");
    }

    fn flush(&self) {}
}

/// Apply `config`; log what changed, or why it was refused (the previous policy stays).
fn reload(pins: &PinDir, config: &Path, names: &LimitNames, why: &str) -> Result<()> {
    match policy::apply::apply(pins, config, false, false) {
        Ok(report) => {
            info!(
                "{why}: applied {} as generation {} ({} rules added, {} removed, {} changed; {} limits added, {} removed, {} changed; attach {:?}, detach {:?})",
                config.display(),
                report.generation,
                report.rules_added.len(),
                report.rules_removed.len(),
                report.rules_changed.len(),
                report.limits_added.len(),
                report.limits_removed.len(),
                report.limits_changed.len(),
                report.attach,
                report.detach
            );
            let p = policy::load(config)?;
            *names.lock().expect("not poisoned") = p
                .limits
                .iter()
                .map(|l| (limit_id(&l.name), l.name.clone()))
                .collect();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Log a re-apply that failed: refused (the previous policy stays in force), or published
/// with interfaces left unattached (the error says which).
fn log_failed(why: &str, e: &anyhow::Error) {
    if e.is::<policy::apply::NotAttached>() {
        error!("{why}: {e:#}");
    } else {
        error!("{why}: {e:#}; the previous policy stays in force");
    }
}

/// Directories to watch: the policy's, and those of the list files it names.
fn watched(config: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![config.parent().unwrap_or(Path::new(".")).to_path_buf()];
    if let Ok(p) = policy::load(config) {
        dirs.extend(
            p.list_files
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf)),
        );
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

pub fn run(
    pins: &PinDir,
    config: &Path,
    detach_on_exit: bool,
    metrics_addr: Option<SocketAddr>,
) -> Result<()> {
    let config = std::path::absolute(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(pins.clone(), config, detach_on_exit, metrics_addr))
}

/// Record an apply of the policy file in the daemon's health.
fn record(health: &metrics::Health, ok: bool) {
    let mut h = health.lock().expect("not poisoned");
    if ok {
        h.reloads_ok += 1;
    } else {
        h.reloads_failed += 1;
    }
    h.last_reload_ok = ok;
    h.last_reload_at = unix_now();
}

async fn serve(
    pins: PinDir,
    config: PathBuf,
    detach_on_exit: bool,
    metrics_addr: Option<SocketAddr>,
) -> Result<()> {
    let names: LimitNames = Arc::default();
    let health: metrics::Health = Arc::new(Mutex::new(DaemonHealth {
        started_at: unix_now(),
        ..DaemonHealth::default()
    }));
    // The metrics address first: a port in use fails the start before anything changes.
    let listener = metrics_addr.map(metrics::bind).transpose()?;
    // A policy that does not apply at start is an error: nothing would be enforced.
    let started = reload(&pins, &config, &names, "start");
    record(&health, started.is_ok());
    started?;
    if let (Some(listener), Some(addr)) = (listener, metrics_addr) {
        info!("serving metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, pins.clone(), Arc::clone(&health)));
    }
    let status =
        crate::state::attach::program_status(&pins)?.context("the filter is not loaded")?;
    if status.interfaces.is_empty() {
        warn!("no interface is attached: give the policy an [interfaces] section, or run `floodgate attach IFACE`");
    }
    // The program's events (aya-log's ring buffer), read when it becomes readable.
    let logger = aya_log::EbpfLogger::init_from_id_with_logger(
        status.program_id,
        EventLog {
            names: Arc::clone(&names),
        },
    )
    .context("cannot read the program's events")?;
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd holds it.
    let mut events =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot watch the program's events: {e}"))?;
    // File changes, from a watcher thread into this loop.
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev.kind.is_modify() || ev.kind.is_create() || ev.kind.is_remove() {
                let _ = tx.send(());
            }
        }
    })?;
    for dir in watched(&config) {
        use notify::Watcher;
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            warn!("cannot watch {}: {e}; SIGHUP still reloads", dir.display());
        }
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(
        "running: {} in force; SIGHUP or a change to it re-applies",
        config.display()
    );
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let r = reload(&pins, &config, &names, "SIGHUP");
                record(&health, r.is_ok());
                if let Err(e) = r {
                    log_failed("SIGHUP", &e);
                }
            }
            Some(()) = changes.recv() => {
                // Editors write in several steps: let them finish, then apply once.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while changes.try_recv().is_ok() {}
                let r = reload(&pins, &config, &names, "file changed");
                record(&health, r.is_ok());
                if let Err(e) = r {
                    log_failed("file changed", &e);
                }
            }
            guard = events.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if detach_on_exit {
        let p = policy::load(&config).ok();
        let ifaces: Vec<String> = match p.and_then(|p| p.interfaces) {
            Some(i) => i.names,
            None => crate::state::attach::attached(&pins)?
                .into_iter()
                .map(|a| a.name)
                .collect(),
        };
        crate::state::attach::detach(&pins, &ifaces)?;
        info!("stopped; detached from {}", ifaces.join(", "));
    } else {
        info!("stopped; the filter keeps enforcing generation in force (detach with `floodgate detach`)");
    }
    Ok(())
}
