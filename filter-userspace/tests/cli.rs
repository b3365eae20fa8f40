//! The `floodgate` binary as a careful (or careless) operator meets it: every case a new user
//! reported gets a clear message, the right exit code (0 ok, 1 runtime, 2 usage) and leaves
//! nothing half-done. One behaviour per test.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use test_support::{gen, require_root, unique_name, Harness, TempFile, TestPins, VethPair};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

fn fg(pin_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loaded filter (no interface needed for list commands).
fn loaded() -> Harness {
    require_root();
    Harness::new().unwrap()
}

/// A loaded filter attached to one end of a veth pair, through the binary.
struct Attached {
    net: VethPair,
    dir: TestPins,
}

impl Attached {
    fn new(args: &[&str]) -> Attached {
        require_root();
        let net = VethPair::new().unwrap();
        let dir = TestPins::new().unwrap();
        let a = Attached { net, dir };
        let mut full = vec!["attach", a.net.a_if.as_str()];
        full.extend_from_slice(args);
        let out = a.run(&full);
        assert!(out.status.success(), "{}", text(&out.stderr));
        a
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.net.a.path().display()))
            .arg("--")
            .arg(BIN)
            .arg("--pin-dir")
            .arg(self.dir.pins.root())
            .args(args)
            .output()
            .unwrap()
    }
}

#[test]
fn listing_into_a_closed_pipe_is_not_an_error() {
    let h = loaded();
    test_support::set_list(
        h.pins(),
        filter_common::ListKind::Block,
        &gen::scattered_v4(100_000, 1),
    )
    .unwrap();
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; {BIN} --pin-dir {} block list | head -1",
                h.pins().root().display()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_byte_order_mark_does_not_spoil_the_first_line() {
    let h = loaded();
    let f = TempFile::new(
        "fgbom-",
        b"\xef\xbb\xbf198.51.100.0/24\r\n2001:db8::/32\r\n",
    )
    .unwrap();
    let out = fg(
        h.pins().root(),
        &["block", "load", f.path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = fg(h.pins().root(), &["block", "list"]);
    assert_eq!(text(&list.stdout), "198.51.100.0/24\n2001:db8::/32\n");
}

#[test]
fn load_dash_reads_standard_input() {
    let h = loaded();
    let mut child = Command::new(BIN)
        .arg("--pin-dir")
        .arg(h.pins().root())
        .args(["block", "load", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"192.0.2.0/24\n# comment\n2001:db8::1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 added"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_endless_input_is_refused_quickly_in_bounded_memory() {
    let h = loaded();
    let started = Instant::now();
    let out = Command::new("prlimit")
        .args(["--as=536870912", "--"])
        .arg(BIN)
        .arg("--pin-dir")
        .arg(h.pins().root())
        .args(["block", "load", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("longer than 1024 bytes"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Endless short bad lines: at most ten are quoted, escaped, and reading stops.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "yes $'bad\\e[31m' | {BIN} --pin-dir {} block load -",
                h.pins().root().display()
            ),
        ])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("after 10000 invalid lines"), "{err}");
    assert!(!err.contains('\x1b'), "raw escape sequence echoed: {err}");
    assert_eq!(fg(h.pins().root(), &["block", "list"]).stdout, b"");
}

#[test]
fn ipv4_mapped_addresses_are_refused_with_the_ipv4_form() {
    let h = loaded();
    let out = fg(h.pins().root(), &["block", "add", "::ffff:1.2.3.4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("write 1.2.3.4"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_full_list_pool_is_refused_and_changes_nothing() {
    let a = Attached::new(&["--list-capacity", "1k"]);
    let before = a.run(&["block", "add", "198.51.100.7"]);
    assert!(before.status.success());
    let file = TempFile::list(&gen::scattered_v4(5_000, 3)).unwrap();
    let out = a.run(&["block", "load", file.path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing was changed") && err.contains("--list-capacity"),
        "{err}"
    );
    assert_eq!(text(&a.run(&["block", "list"]).stdout), "198.51.100.7/32\n");
}

#[test]
fn detaching_an_interface_that_is_not_attached_fails() {
    let a = Attached::new(&[]);
    let out = a.run(&["detach", "lo", &a.net.a_if]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not attached: lo"),
        "{}",
        text(&out.stderr)
    );
    // The one that was attached is detached all the same.
    assert!(text(&out.stdout).contains(&format!("detached from {}", a.net.a_if)));
}

#[test]
fn another_mode_for_an_attached_interface_is_refused() {
    let a = Attached::new(&["--mode", "native"]);
    let out = a.run(&["attach", &a.net.a_if, "--mode", "skb"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("attached in native mode") && err.contains("detach"),
        "{err}"
    );
    // Auto accepts whatever is attached.
    assert!(a.run(&["attach", &a.net.a_if]).status.success());
}

#[test]
fn commands_before_attach_leave_no_pin_directory() {
    require_root();
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(unique_name("fgnone-"));
    for args in [
        &["block", "add", "192.0.2.1"][..],
        &["allow", "flush"],
        &["policy", "--malformed", "pass"],
        &["block", "list"],
    ] {
        let out = fg(&dir, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("not loaded"),
            "{}",
            text(&out.stderr)
        );
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
}

#[test]
fn a_pin_directory_off_bpffs_is_named_without_mount_advice() {
    require_root();
    for dir in ["/tmp/fg-not-bpffs", "/proc/fg"] {
        let out = Command::new(BIN)
            .args(["--pin-dir", dir, "attach", "lo"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{dir} is not on a BPF filesystem")),
            "{err}"
        );
        assert!(!err.contains("mount -t bpf"), "{err}");
    }
    assert!(!std::path::Path::new("/tmp/fg-not-bpffs").exists());
}

#[test]
fn a_relative_pin_directory_is_resolved_and_named() {
    require_root();
    let out = Command::new(BIN)
        .current_dir("/tmp")
        .args(["--pin-dir", "fgrel", "attach", "lo"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/tmp/fgrel is not on a BPF filesystem"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["--pin-dir", "", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn detach_all_removes_only_what_floodgate_pinned() {
    let a = Attached::new(&[]);
    // Someone else's pin inside our directory.
    let foreign = a.dir.pins.maps_dir().join("SOMEONE_ELSES");
    floodgate::state::raw::create_mmapable_array::<u64>("foreign", 1)
        .unwrap()
        .pin(&foreign)
        .unwrap();
    let out = a.run(&["detach", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("SOMEONE_ELSES"),
        "{}",
        text(&out.stdout)
    );
    assert!(foreign.exists());
    assert!(!a.dir.pins.prog().exists());
    assert!(!a.dir.pins.map(filter_common::maps::LIST_NODES).exists());
    std::fs::remove_file(&foreign).unwrap();
}

#[test]
fn status_reports_generation_pool_and_memory_as_json() {
    let a = Attached::new(&["--list-capacity", "64k"]);
    a.run(&["block", "add", "198.51.100.0/24", "2001:db8:bad::/48"]);
    let out = a.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["lists"]["block"]["ipv4"], 1);
    assert_eq!(v["lists"]["block"]["ipv6"], 1);
    assert_eq!(v["list_pool"]["capacity"], 65536);
    assert!(v["list_pool"]["nodes_in_use"].as_u64().unwrap() >= 2);
    assert!(v["kernel_memory_bytes"]["total"].as_u64().unwrap() > 64 * 1024 * 80);
}

#[test]
fn detach_all_refuses_a_directory_of_another_tool() {
    require_root();
    let dir = TestPins::new().unwrap();
    // Another tool's program pinned where floodgate's would be.
    let mut bench = test_support::BenchObject::new(1 << 10).unwrap();
    std::fs::remove_file(dir.pins.prog()).ok();
    bench
        .pin_program("bench_drop_all", &dir.pins.prog())
        .unwrap();
    let out = fg(dir.pins.root(), &["detach", "--all"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not floodgate's program"), "{err}");
    assert!(
        dir.pins.prog().exists(),
        "another tool's program was unpinned"
    );
}

#[test]
fn detach_all_leaves_pins_in_links_that_are_not_our_links() {
    let a = Attached::new(&[]);
    let stranger = a.dir.pins.links_dir().join("their_link");
    floodgate::state::raw::create_mmapable_array::<u64>("stranger", 1)
        .unwrap()
        .pin(&stranger)
        .unwrap();
    let out = a.run(&["detach", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stranger.exists());
    assert!(!a.dir.pins.link(&a.net.a_if).exists(), "our link was left");
    std::fs::remove_file(&stranger).unwrap();
}

#[test]
fn pins_of_another_layout_are_named_with_what_to_do() {
    let h = loaded();
    // As left by a floodgate whose maps differ: one this version needs is missing.
    std::fs::remove_file(h.pins().map(filter_common::maps::LIST_META)).unwrap();
    for args in [
        &["block", "add", "192.0.2.1"][..],
        &["status"],
        &["attach", "lo"],
    ] {
        let out = fg(h.pins().root(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("another floodgate version") && err.contains("detach --all"),
            "{args:?}: {err}"
        );
    }
}
