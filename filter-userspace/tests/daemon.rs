//! The `floodgate run` daemon as an operator runs it: what it follows, what it logs by default,
//! and that it stays responsive to signals while a re-apply waits. One behaviour per test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use test_support::flood::{Lab, TempDir};
use test_support::{require_root, unique_name};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

const START: Duration = Duration::from_secs(15);

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

