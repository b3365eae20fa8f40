//! `floodgate run --config FILE`: attach and apply the policy, then keep it in force: re-apply
//! on SIGHUP and when the file (or a list file it names) changes, log with tracing, and
//! forward the program's rare events (a ban placed) from aya-log. On SIGTERM the filter keeps
//! enforcing, unless `--detach-on-exit`: protection must not depend on the controller.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::observe::metrics::{unix_now, DaemonHealth};
use crate::policy::{self, limits::limit_id, Policy};
use crate::state::{PinDir, Session};

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

/// What a re-apply did, and the policy in force after it (read back from the pinned state:
/// the one the apply published, whatever the file says by now; `None` if nothing was
/// published or it cannot be read).
struct Reloaded {
    why: &'static str,
    result: Result<()>,
    in_force: Option<Policy>,
}

/// The policy in force, as the pinned state holds it.
fn in_force(pins: &PinDir) -> Result<Policy> {
    Ok(Session::open(pins)?.current()?.policy.policy)
}

/// Apply `config` and log what it changed.
fn reload(pins: &PinDir, config: &Path, why: &'static str) -> Reloaded {
    let report = match policy::apply::apply(pins, config, false, false) {
        Ok(report) => report,
        Err(e) => {
            // Published all the same, with interfaces left unattached: follow what is in
            // force.
            let in_force = if e.is::<policy::apply::NotAttached>() {
                in_force(pins).ok()
            } else {
                None
            };
            return Reloaded {
                why,
                result: Err(e),
                in_force,
            };
        }
    };
    if report.unchanged {
        info!(
            "{why}: {} is the policy in force already; generation {} stays in force",
            config.display(),
            report.generation
        );
    } else {
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
    }
    let in_force = match in_force(pins) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(
                "{why}: generation {} is in force, but it cannot be read back ({e:#}): ban events name limits by id and list files are not followed until the next reload",
                report.generation
            );
            None
        }
    };
    Reloaded {
        why,
        result: Ok(()),
        in_force,
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

/// Apply off the runtime's thread: an apply can wait long for the lock (a stopped command
/// holding it), and signals must still be handled meanwhile.
fn spawn_reload(pins: &PinDir, config: &Path, why: &'static str) -> JoinHandle<Reloaded> {
    let (pins, config) = (pins.clone(), config.to_path_buf());
    tokio::task::spawn_blocking(move || reload(&pins, &config, why))
}

/// The files the daemon follows (its policy and the list files the policy names), each as its
/// directory (canonical) and name, and the directories watched for them: an editor replaces
/// a file by renaming another over it, which only its directory sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct WatchSet {
    dirs: Vec<PathBuf>,
    files: Vec<(PathBuf, OsString)>,
}

/// `path` as its canonical directory and its name.
fn file_key(path: &Path) -> Option<(PathBuf, OsString)> {
    let name = path.file_name()?.to_os_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    Some((dir, name))
}

impl WatchSet {
    fn new(config: &Path, policy: Option<&Policy>) -> WatchSet {
        let lists = policy.map_or(&[][..], |p| &p.list_files[..]);
        let mut files: Vec<(PathBuf, OsString)> = std::iter::once(config)
            .chain(lists.iter().map(PathBuf::as_path))
            .filter_map(file_key)
            .collect();
        files.sort();
        files.dedup();
        let mut dirs: Vec<PathBuf> = files.iter().map(|(d, _)| d.clone()).collect();
        dirs.dedup();
        WatchSet { dirs, files }
    }

    /// Whether an event on `paths` is about a followed file.
    fn concerns(&self, paths: &[PathBuf]) -> bool {
        paths
            .iter()
            .filter_map(|p| file_key(p))
            .any(|k| self.files.contains(&k))
    }
}

/// Watch the directories of `next` (and no longer those only `current` needed).
fn rewatch(watcher: &mut impl Watcher, current: &mut WatchSet, next: WatchSet) {
    for dir in current.dirs.iter().filter(|d| !next.dirs.contains(d)) {
        let _ = watcher.unwatch(dir);
    }
    for dir in next.dirs.iter().filter(|d| !current.dirs.contains(d)) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!("cannot watch {}: {e}; SIGHUP still reloads", dir.display());
        }
    }
    *current = next;
}

/// Limit names by id, from the policy in force.
fn limit_names(p: &Policy) -> Vec<(u32, String)> {
    p.limits
        .iter()
        .map(|l| (limit_id(&l.name), l.name.clone()))
        .collect()
}

/// Editors write in several steps: a change is applied once the file has been quiet this long.
const SETTLE: Duration = Duration::from_millis(300);

/// How long a stop waits for a re-apply under way to finish before leaving it.
const STOP_GRACE: Duration = Duration::from_secs(3);

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
    let result = rt.block_on(serve(pins.clone(), config, detach_on_exit, metrics_addr));
    // A re-apply still waiting (for the lock) when the daemon stops is left behind: it has
    // changed nothing yet, or it publishes a generation whole.
    rt.shutdown_background();
    result
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
    let health: metrics::Health = Arc::new(Mutex::new(DaemonHealth {
        started_at: unix_now(),
        ..DaemonHealth::default()
    }));
    // The metrics address first: a port in use fails the start before anything changes.
    let listener = metrics_addr.map(metrics::bind).transpose()?;
    // A policy that does not apply at start is an error: nothing would be enforced.
    let Reloaded {
        result,
        in_force: started,
        ..
    } = spawn_reload(&pins, &config, "start").await?;
    record(&health, result.is_ok());
    result?;
    if let (Some(listener), Some(addr)) = (listener, metrics_addr) {
        info!("serving metrics at http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, pins.clone(), Arc::clone(&health)));
    }
    let names: LimitNames = Arc::new(Mutex::new(
        started.as_ref().map(limit_names).unwrap_or_default(),
    ));
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
    // Changes to the followed files, from a watcher thread into this loop; changes to
    // anything else in their directories are none of the daemon's business.
    let mut watching = WatchSet::default();
    let followed = Arc::new(Mutex::new(WatchSet::default()));
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let filter = Arc::clone(&followed);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if (ev.kind.is_modify() || ev.kind.is_create() || ev.kind.is_remove())
                && filter.lock().expect("not poisoned").concerns(&ev.paths)
            {
                let _ = tx.send(());
            }
        }
    })?;
    let follow =
        |watcher: &mut notify::RecommendedWatcher, watching: &mut WatchSet, p: Option<&Policy>| {
            let next = WatchSet::new(&config, p);
            *followed.lock().expect("not poisoned") = next.clone();
            rewatch(watcher, watching, next);
        };
    follow(&mut watcher, &mut watching, started.as_ref());
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(
        "running: {} in force; SIGHUP or a change to it re-applies",
        config.display()
    );
    // The re-apply under way, and the reason for another one asked for meanwhile.
    let mut pending: Option<JoinHandle<Reloaded>> = None;
    let mut again: Option<&'static str> = None;
    // When the followed files have been quiet long enough after a change.
    let mut settled: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let mut wanted = None;
        tokio::select! {
            _ = hup.recv() => wanted = Some("SIGHUP"),
            Some(()) = changes.recv() => {
                settled = Some(Box::pin(tokio::time::sleep(SETTLE)));
            }
            () = async { settled.as_mut().expect("guarded").await }, if settled.is_some() => {
                settled = None;
                wanted = Some("file changed");
            }
            done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                match done {
                    Ok(r) => {
                        record(&health, r.result.is_ok());
                        // Follow the policy now in force: its limits' names, its list files.
                        if let Some(p) = &r.in_force {
                            *names.lock().expect("not poisoned") = limit_names(p);
                            follow(&mut watcher, &mut watching, Some(p));
                        }
                        if let Err(e) = &r.result {
                            log_failed(r.why, e);
                        }
                    }
                    Err(e) => {
                        record(&health, false);
                        error!("re-apply: {e}; the previous policy stays in force");
                    }
                }
                wanted = again.take();
            }
            guard = events.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if let Some(why) = wanted {
            if pending.is_some() {
                again = Some(why);
            } else {
                pending = Some(spawn_reload(&pins, &config, why));
            }
        }
    }
    if let Some(under_way) = pending.take() {
        info!("stopping while a re-apply is under way: waiting for it at most {STOP_GRACE:?}");
        match tokio::time::timeout(STOP_GRACE, under_way).await {
            Ok(Ok(Reloaded {
                why,
                result: Err(e),
                ..
            })) => log_failed(why, &e),
            Ok(_) => {}
            Err(_) => warn!(
                "stopping without the re-apply under way (still waiting for the lock?): it changes nothing, or publishes its generation whole"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("fgwatch-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn policy_naming(lists: &[PathBuf]) -> Policy {
        Policy {
            list_files: lists.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_policy_and_its_list_files_concern_the_daemon() {
        let d = Dir::new("only");
        let config = d.0.join("floodgate.toml");
        let set = WatchSet::new(&config, Some(&policy_naming(&[d.0.join("block.txt")])));
        assert_eq!(set.dirs.len(), 1);
        assert!(set.concerns(std::slice::from_ref(&config)));
        assert!(set.concerns(&[d.0.join("block.txt")]));
        assert!(!set.concerns(&[d.0.join("passwd")]));
        assert!(!set.concerns(std::slice::from_ref(&d.0)));
    }

    #[test]
    fn a_rename_over_a_followed_file_concerns_the_daemon() {
        let d = Dir::new("rename");
        let config = d.0.join("floodgate.toml");
        let set = WatchSet::new(&config, None);
        assert!(set.concerns(&[d.0.join(".floodgate.toml.swp"), config.clone()]));
    }

    #[test]
    fn a_followed_file_is_recognised_by_another_spelling_of_its_directory() {
        let d = Dir::new("spelling");
        std::fs::create_dir_all(d.0.join("sub")).unwrap();
        let config = d.0.join("floodgate.toml");
        let list = d.0.join("sub/../sub/block.txt");
        let set = WatchSet::new(&config, Some(&policy_naming(&[list])));
        assert_eq!(set.dirs.len(), 2);
        assert!(set.concerns(&[d.0.join("sub").join("block.txt")]));
    }
}
