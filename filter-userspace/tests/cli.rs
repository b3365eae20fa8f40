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
fn pins_with_the_same_maps_but_another_layout_version_are_refused() {
    // Review finding: a program pinned by another version with the same map names (the node
    // meta changed meaning) must not be fed words it misreads.
    let h = loaded();
    let mut state = aya::maps::Array::<_, u64>::try_from(aya::maps::Map::Array(
        h.pins().open_map(filter_common::maps::STATE).unwrap(),
    ))
    .unwrap();
    state.set(filter_common::maps::STATE_LAYOUT, 1, 0).unwrap();
    for args in [&["block", "add", "192.0.2.1"][..], &["status"]] {
        let out = fg(h.pins().root(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("another floodgate version") && err.contains("layout 1"),
            "{args:?}: {err}"
        );
    }
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

/// Run the binary on a loaded filter with `input` on standard input.
fn fg_stdin(pin_dir: &std::path::Path, args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--pin-dir")
        .arg(pin_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread: the child may stop reading (and exit) before it has it all.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn an_empty_replace_is_refused_unless_allowed() {
    let h = loaded();
    let root = h.pins().root();
    assert!(fg(root, &["block", "add", "192.0.2.1"]).status.success());
    // A failed download: nothing on standard input.
    let out = fg_stdin(root, &["block", "load", "--replace", "-"], Vec::new());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("standard input holds no entries") && err.contains("--allow-empty"),
        "{err}"
    );
    // A file of comments only is no different.
    let f = TempFile::new("fgempty-", b"# nothing today\n\n").unwrap();
    let path = f.path.to_str().unwrap();
    let out = fg(root, &["block", "load", "--replace", path]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&fg(root, &["block", "list"]).stdout), "192.0.2.1/32\n");
    // Asked for, it empties the list.
    let out = fg(root, &["block", "load", "--replace", "--allow-empty", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&fg(root, &["block", "list"]).stdout), "");
}

#[test]
fn concatenated_feeds_count_different_entries_not_lines() {
    let h = loaded();
    // 1M different /24s, six times over: 6M lines, more than the 4,194,304-entry bound.
    let mut feed = String::with_capacity(16 << 20);
    for i in 0..(1u32 << 20) {
        let a = (1u32 << 24) + (i << 8);
        feed.push_str(&format!("{}/24\n", std::net::Ipv4Addr::from(a)));
    }
    let input = feed.repeat(6).into_bytes();
    let out = fg_stdin(h.pins().root(), &["allow", "load", "-"], input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1048576 added"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_stopped_load_still_shows_the_first_bad_lines() {
    let h = loaded();
    let mut input = b"192.0.2.1\n".to_vec();
    for i in 0..12_000 {
        input.extend_from_slice(format!("not-an-address-{i}\n").as_bytes());
    }
    let out = fg_stdin(h.pins().root(), &["block", "load", "-"], input);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("stopped reading at line 10001"), "{err}");
    assert!(
        err.contains("<stdin>:2: ") && err.contains("not-an-address-0"),
        "{err}"
    );
    assert_eq!(err.matches("\n  <stdin>:").count(), 10, "{err}");
}

#[test]
fn many_bad_arguments_are_reported_briefly() {
    let h = loaded();
    let bad: Vec<String> = (0..100_000).map(|i| format!("bad{i}")).collect();
    let mut args = vec!["block", "add"];
    args.extend(bad.iter().map(String::as_str));
    let out = fg(h.pins().root(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(500)]);
    assert!(err.len() < 2_000, "{} bytes of errors", err.len());
    assert!(
        err.contains("100000 invalid entries") && err.contains("... and 99990 more"),
        "{err}"
    );
}

#[test]
fn deleting_many_absent_entries_is_reported_briefly() {
    let h = loaded();
    let absent: Vec<String> = (0..50_000u32)
        .map(|i| std::net::Ipv4Addr::from((10 << 24) + i).to_string())
        .collect();
    let mut args = vec!["block", "del"];
    args.extend(absent.iter().map(String::as_str));
    let out = fg(h.pins().root(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(500)]);
    assert!(err.len() < 2_000, "{} bytes of errors", err.len());
    assert!(
        err.contains("not on the block list: 10.0.0.0/32, ") && err.contains("... and 49990 more"),
        "{err}"
    );
}

#[test]
fn a_change_whose_report_cannot_be_written_says_it_took_effect() {
    let h = loaded();
    let out = Command::new(BIN)
        .arg("--pin-dir")
        .arg(h.pins().root())
        .args(["block", "add", "192.0.2.9"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the change took effect (the block list is at generation 1)")
            && err.contains("writing this report failed")
            && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(
        text(&fg(h.pins().root(), &["block", "list"]).stdout),
        "192.0.2.9/32\n"
    );
}

#[test]
fn one_entry_is_one_entry() {
    let h = loaded();
    let out = fg(h.pins().root(), &["block", "add", "192.0.2.1"]);
    assert!(
        text(&out.stdout).contains("1 added, 0 removed, 1 entry (generation 1)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn detach_all_of_a_directory_that_never_existed_removes_nothing() {
    require_root();
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(unique_name("fgnever-"));
    let out = fg(&dir, &["detach", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "nothing to remove: there is no pin directory at {}\n",
            dir.display()
        )
    );
    assert!(!dir.exists());
}

#[test]
fn a_change_goes_through_when_no_thread_can_be_started() {
    let h = loaded();
    let root = h.pins().root();
    assert!(fg(root, &["block", "add", "192.0.2.1"]).status.success());
    // The second change waits for a grace period, on a thread if one can be started: a stack
    // no mmap can provide makes every thread start fail, as a tight memory limit does.
    let out = Command::new(BIN)
        .env("RUST_MIN_STACK", "100000000000000")
        .arg("--pin-dir")
        .arg(root)
        .args(["block", "add", "192.0.2.2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&fg(root, &["block", "list"]).stdout),
        "192.0.2.1/32\n192.0.2.2/32\n"
    );
}

#[test]
fn control_characters_in_operator_input_are_escaped() {
    require_root();
    let nowhere = std::path::PathBuf::from("/sys/fs/bpf").join(unique_name("fgesc-"));
    let evil = "x\x1b]0;pwned\x07\x1b[31m";
    let evil_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/fg{evil}"));
    let evil_file = format!("/nonexistent/{evil}");
    for (dir, args) in [
        (&nowhere, vec!["detach", evil]),
        (&nowhere, vec!["attach", evil]),
        (&nowhere, vec!["block", "load", &evil_file]),
        (&evil_dir, vec!["status"]),
        (&evil_dir, vec!["block", "list"]),
    ] {
        let out = fg(dir, &args);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !all.contains(['\x1b', '\x07']),
            "{args:?}: raw control characters in {all:?}"
        );
        assert!(all.contains("\\u{1b}"), "{args:?}: {all:?}");
    }
    assert!(!evil_dir.exists());
}

#[test]
fn log_lines_are_plain_when_stderr_is_not_a_terminal() {
    let h = loaded();
    let out = fg(h.pins().root(), &["-vv", "block", "add", "192.0.2.1"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("DEBUG"), "{err}");
    assert!(!err.contains('\x1b'), "colored log lines: {err:?}");
}

#[test]
fn stats_watch_into_a_pipe_prints_one_table_after_another() {
    let h = loaded();
    let out = fg(
        h.pins().root(),
        &["stats", "--watch", "--interval", "0.1", "--count", "3"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !stdout.contains('\x1b'),
        "screen codes in a pipe: {stdout:?}"
    );
    assert_eq!(stdout.matches("INTERFACE").count(), 3, "{stdout}");
}

#[test]
fn stats_watch_count_zero_is_refused() {
    let h = loaded();
    let out = fg(h.pins().root(), &["stats", "--watch", "--count", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn an_empty_pin_dir_variable_is_named_as_such() {
    let out = Command::new(BIN)
        .env("FLOODGATE_PIN_DIR", "")
        .arg("status")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FLOODGATE_PIN_DIR is set but empty"), "{err}");
    assert!(!err.contains("--pin-dir <PIN_DIR>"), "{err}");
}

#[test]
fn a_policy_change_whose_report_cannot_be_written_says_it_is_in_force() {
    let h = loaded();
    let out = Command::new(BIN)
        .arg("--pin-dir")
        .arg(h.pins().root())
        .args(["policy", "--malformed", "pass"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the policy is in force (generation 1), but writing this report failed"),
        "{err}"
    );
    assert_eq!(
        text(&fg(h.pins().root(), &["policy"]).stdout),
        "malformed packets: pass\n"
    );
}

#[test]
fn commands_under_ip_netns_exec_refuse_and_say_what_to_run() {
    // `ip netns exec` gives the command a mount namespace with a fresh /sys: a bpffs mounted
    // there (and the filter pinned on it) vanished with the command, after "attached".
    require_root();
    let ns = test_support::Netns::new("fgpm").unwrap();
    let dir = TestPins::new().unwrap();
    for args in [
        &["attach", "lo"][..],
        &["status"],
        &["block", "add", "192.0.2.1"],
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN, "--pin-dir"])
            .arg(dir.pins.root())
            .args(args)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("nsenter --net="), "{args:?}: {err}");
    }
    assert!(!dir.pins.is_loaded());
}

#[test]
fn a_ban_of_every_source_is_refused_rather_than_listed_and_ignored() {
    let h = loaded();
    for all in ["0.0.0.0/0", "::/0"] {
        let out = fg(h.pins().root(), &["bans", "add", all, "--seconds", "60"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&format!("block it instead (floodgate block add {all})")),
            "{}",
            text(&out.stderr)
        );
    }
    let list = fg(h.pins().root(), &["bans", "list"]);
    assert_eq!(text(&list.stdout).trim(), "no bans");
}

/// `n` rules, each matching three destination port ranges of its own.
fn many_port_ranges(n: u32) -> String {
    (0..n)
        .map(|i| {
            let p = |k: u32| format!("\"{}-{}\"", i * 100 + k * 10, i * 100 + k * 10 + 1);
            format!(
                "[[rule]]\nname = \"r{i}\"\nprotocol = \"udp\"\ndst_ports = [{}, {}, {}]\n",
                p(0),
                p(1),
                p(2)
            )
        })
        .collect()
}

#[test]
fn check_refuses_rules_the_tables_cannot_hold_at_the_rule() {
    let f = TempFile::new("fgpolicy-", many_port_ranges(400).as_bytes()).unwrap();
    let out = fg(
        std::path::Path::new("/nonexistent"),
        &["check", f.path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let place = format!("{}:1368:13: rule 'r341'", f.path.display());
    assert!(text(&out.stderr).contains(&place), "{}", text(&out.stderr));
}

#[test]
fn apply_dry_run_refuses_more_ban_prefix_lengths_than_the_program_looks_up() {
    let limits: String = [32, 31, 30, 29, 28]
        .iter()
        .map(|l| {
            format!("[[limit]]\nname = \"l{l}\"\nclass = \"udp\"\nper = \"source\"\npps = 10\nprefix_v4 = {l}\nban_seconds = 60\n")
        })
        .collect();
    let f = TempFile::new("fgpolicy-", limits.as_bytes()).unwrap();
    let pins = std::env::temp_dir().join(unique_name("fgnopins-"));
    let out = fg(&pins, &["apply", "--dry-run", f.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let place = format!("{}:34:13: limit 'l28'", f.path.display());
    assert!(text(&out.stderr).contains(&place), "{}", text(&out.stderr));
    assert!(!pins.exists());
}

#[test]
fn a_missing_policy_file_is_a_usage_error_as_a_missing_list_file_is() {
    let missing = std::env::temp_dir().join(unique_name("fgnopolicy-"));
    let missing = missing.to_str().unwrap();
    let pins = std::env::temp_dir().join(unique_name("fgnopins-"));
    for args in [
        vec!["check", missing],
        vec!["apply", "--dry-run", missing],
        vec!["block", "load", missing],
    ] {
        let out = fg(&pins, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(missing),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(!pins.exists());
}
