//! The `floodgate run` daemon as an operator runs it: what it follows, what it logs by default,
//! and that it stays responsive to signals while a re-apply waits. One behaviour per test.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::flood::{Lab, TempDir};
use test_support::{require_root, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

const START: Duration = Duration::from_secs(15);
const RELOAD: Duration = Duration::from_secs(10);

fn lab() -> Lab {
    require_root();
    Lab::new(BIN, 1).expect("lab")
}

/// A daemon's policy: the lab's interface and `block` blocklisted, plus `extra` lines.
fn policy(lab: &Lab, block: &str, extra: &str) -> String {
    format!(
        "[interfaces]\nnames = [\"{}\"]\n\n[lists]\nblock = [\"{block}\"]\n{extra}",
        lab.net.a_if
    )
}

fn generation(lab: &Lab) -> u64 {
    lab.status()["generation"].as_u64().expect("generation")
}

fn blocked_v4(lab: &Lab) -> u64 {
    lab.status()["lists"]["block"]["ipv4"]
        .as_u64()
        .expect("block count")
}

#[test]
fn a_change_to_another_file_in_the_directory_applies_nothing() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let before = generation(&lab);

    // Another program's files beside the policy (as in /etc): written, replaced, removed.
    dir.write("unrelated.conf", "x = 1\n").unwrap();
    dir.write("unrelated.tmp", "x = 2\n").unwrap();
    std::fs::rename(
        dir.path.join("unrelated.tmp"),
        dir.path.join("unrelated.conf"),
    )
    .unwrap();
    std::fs::remove_file(dir.path.join("unrelated.conf")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(generation(&lab), before);
    assert!(
        !daemon.log_text().contains("file changed"),
        "{}",
        daemon.log_text()
    );

    // The policy itself is still followed.
    dir.write("floodgate.toml", &policy(&lab, "198.18.0.41", ""))
        .unwrap();
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    assert!(generation(&lab) > before);
}

#[test]
fn a_policy_replaced_by_rename_is_applied() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();

    // As an editor saves: a new file renamed over the old one.
    let tmp = dir
        .write(
            ".floodgate.toml.swp",
            &policy(&lab, "198.18.0.40\", \"198.18.0.41", ""),
        )
        .unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    assert_eq!(blocked_v4(&lab), 2);
}

#[test]
fn a_list_file_a_reload_names_is_followed() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();

    // The policy now names a list file in a directory of its own, not watched at start.
    let lists = TempDir::new("fglists-").unwrap();
    let list = lists.write("block.txt", "198.18.0.50\n").unwrap();
    dir.write(
        "floodgate.toml",
        &format!(
            "[interfaces]\nnames = [\"{}\"]\n\n[lists]\nblock_files = [\"{}\"]\n",
            lab.net.a_if,
            list.display()
        ),
    )
    .unwrap();
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    assert_eq!(blocked_v4(&lab), 1);

    lists
        .write("block.txt", "198.18.0.50\n198.18.0.51\n198.18.0.52\n")
        .unwrap();
    daemon.wait_log("file changed: applied", 2, RELOAD).unwrap();
    assert_eq!(blocked_v4(&lab), 3);
}

/// A file's text, empty if it cannot be read.
fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_daemon_logs_what_it_applies_without_verbose() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    // As the shipped unit starts it: no -v, no RUST_LOG.
    let log = std::env::temp_dir().join(unique_name("fgdaemon-"));
    let mut child = lab
        .command(&["run", "--config", config.to_str().unwrap()], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START;
    while !read(&log).contains("running:") {
        if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = read(&log);
    // Child::kill sends SIGKILL to this child's pid only.
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("start: applied"), "{text}");
    assert!(text.contains("running:"), "{text}");
}

#[test]
fn sigterm_stops_the_daemon_while_a_reload_waits_for_the_lock() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();
    let before = generation(&lab);

    // A command holding the lock and going nowhere (stopped in a terminal, say).
    let held = std::fs::File::open(lab.dir.pins.root()).unwrap();
    // SAFETY: flock on a file descriptor we own; released when it is closed.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("waiting for the lock", 1, RELOAD).unwrap();
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_exit(Duration::from_secs(8)).unwrap();
    assert!(exit.success(), "{exit:?}: {}", daemon.log_text());
    assert!(
        daemon.log_text().contains("stopped;"),
        "{}",
        daemon.log_text()
    );
    drop(held);
    assert_eq!(generation(&lab), before);
}

#[test]
fn a_reload_that_waited_for_the_lock_applies_once_it_is_free() {
    let lab = lab();
    let dir = TempDir::new("fgrun-").unwrap();
    let config = dir
        .write("floodgate.toml", &policy(&lab, "198.18.0.40", ""))
        .unwrap();
    let mut daemon = lab.spawn_daemon(&config, &[]).unwrap();
    daemon.wait_log("running:", 1, START).unwrap();

    let held = std::fs::File::open(lab.dir.pins.root()).unwrap();
    // SAFETY: flock on a file descriptor we own; released when it is closed.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    dir.write("floodgate.toml", &policy(&lab, "198.18.0.0/30", ""))
        .unwrap();
    daemon.wait_log("waiting for the lock", 1, RELOAD).unwrap();
    // Signals are still handled meanwhile: a SIGHUP is queued behind the re-apply.
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.running());
    drop(held);
    daemon.wait_log("file changed: applied", 1, RELOAD).unwrap();
    // The file did not change again: the queued SIGHUP re-applies it and publishes nothing.
    let before = generation(&lab);
    daemon.wait_log("SIGHUP: ", 1, RELOAD).unwrap();
    daemon
        .wait_log("is the policy in force already", 1, RELOAD)
        .unwrap();
    assert_eq!(generation(&lab), before);
    assert!(daemon.running());
}
