//! Attaching, detaching and unloading when things go wrong: interfaces that cannot be attached,
//! commands cut short (simulated by changing pins by hand as a killed command leaves them),
//! commands queued behind others. "Attached" means a link pin under `links/`; whatever is left
//! behind, `status` must tell the truth and the next command must work. One behaviour per test.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use filter_common::maps as names;
use filter_common::Attachment;
use floodgate::state::PinDir;
use test_support::{require_root, unique_name, Netns, TestPins, VethPair};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The binary inside network namespace `ns`, on pin directory `pins`.
fn fg_cmd(ns: &Netns, pins: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(BIN)
        .arg("--pin-dir")
        .arg(pins)
        .args(args);
    c
}

fn fg(ns: &Netns, pins: &Path, args: &[&str]) -> Output {
    fg_cmd(ns, pins, args).output().unwrap()
}

/// A pin directory path that does not exist yet, removed (with every pin) on drop.
struct FreshDir(PathBuf);

impl FreshDir {
    fn new() -> FreshDir {
        FreshDir(PathBuf::from("/sys/fs/bpf").join(unique_name("fgfresh-")))
    }
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the kernel shows an XDP program on `dev` in `ns`.
fn has_xdp(ns: &Netns, dev: &str) -> bool {
    ns.exec(&["ip", "link", "show", dev])
        .unwrap()
        .contains("xdp")
}

/// One veth end attached through the binary, in skb mode (quick to attach).
struct Attached {
    net: VethPair,
    dir: TestPins,
}

impl Attached {
    fn new(args: &[&str]) -> Attached {
        require_root();
        let a = Attached {
            net: VethPair::new().unwrap(),
            dir: TestPins::new().unwrap(),
        };
        let mut full = vec!["attach", a.net.a_if.as_str()];
        full.extend_from_slice(args);
        let out = a.run(&full);
        assert!(out.status.success(), "{}", text(&out.stderr));
        a
    }

    fn pins(&self) -> &PinDir {
        &self.dir.pins
    }

    fn run(&self, args: &[&str]) -> Output {
        fg(&self.net.a, self.pins().root(), args)
    }

    fn iface(&self) -> &str {
        &self.net.a_if
    }

    fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Clear every ATTACHMENTS record by hand, as an attach killed between pinning the link and
/// recording it (in an earlier floodgate) would have left them.
fn clear_records(pins: &PinDir) {
    let mut table = floodgate::state::maps::attachments(pins).unwrap();
    for slot in 0..filter_common::MAX_INTERFACES {
        table.set(slot, Attachment::default(), 0).unwrap();
    }
}

#[test]
fn the_64th_interface_is_refused_before_it_is_filtered() {
    require_root();
    let ns = Netns::new("fgslots").unwrap();
    let base = unique_name("s");
    let mut ifaces = Vec::new();
    for i in 0..32 {
        let (a, b) = (format!("{base}a{i}"), format!("{base}b{i}"));
        ns.exec(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            .unwrap();
        ifaces.push(a);
        ifaces.push(b);
    }
    let dir = TestPins::new().unwrap();
    let mut args = vec!["attach", "--mode", "skb"];
    args.extend(ifaces.iter().map(String::as_str));
    let out = fg(&ns, dir.pins.root(), &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout.matches("attached to ").count(), 63, "{stdout}");
    let last = ifaces.last().unwrap();
    assert!(
        stderr.contains(&format!("not attached to {last}"))
            && stderr.contains("no free interface slot"),
        "{stderr}"
    );
    // The 64th is not filtered behind status's back.
    assert!(!dir.pins.link(last).exists());
    assert!(!has_xdp(&ns, last));
    let status: serde_json::Value =
        serde_json::from_slice(&fg(&ns, dir.pins.root(), &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["interfaces"].as_array().unwrap().len(), 63);
    // Once one is detached, the 64th fits.
    assert!(fg(&ns, dir.pins.root(), &["detach", &ifaces[0]])
        .status
        .success());
    let out = fg(&ns, dir.pins.root(), &["attach", "--mode", "skb", last]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_link_pin_without_a_record_is_shown_and_detachable() {
    let a = Attached::new(&["--mode", "skb"]);
    clear_records(a.pins());
    let status = text(&a.run(&["status"]).stdout);
    let line = status
        .lines()
        .find(|l| l.contains(a.iface()))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("attached, but not recorded"), "{status}");
    assert_eq!(a.status_json()["interfaces"][0]["state"], "attached");
    let out = a.run(&["detach", a.iface()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("detached from {}", a.iface())));
    assert!(!a.pins().link(a.iface()).exists());
    assert!(!has_xdp(&a.net.a, a.iface()));
}

#[test]
fn attach_records_a_link_pin_it_finds_without_a_record() {
    let a = Attached::new(&["--mode", "skb"]);
    clear_records(a.pins());
    let out = a.run(&["attach", a.iface()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("already attached (skb mode)"),
        "{}",
        text(&out.stdout)
    );
    let v = a.status_json();
    assert_eq!(v["interfaces"][0]["state"], "attached");
    assert_eq!(v["interfaces"][0]["mode"], "skb");
    assert!(v["interfaces"][0]["slot"].as_u64().is_some(), "{v}");
}

#[test]
fn a_record_without_a_link_pin_is_not_called_attached() {
    let a = Attached::new(&["--mode", "skb"]);
    // As a detach killed right after removing the link pin leaves it.
    std::fs::remove_file(a.pins().link(a.iface())).unwrap();
    let out = a.run(&["status"]);
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(status.contains("attached to no interface"), "{status}");
    let line = status
        .lines()
        .find(|l| l.contains(a.iface()))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("not attached"), "{status}");
    assert_eq!(a.status_json()["interfaces"][0]["state"], "stale");
    // The next detach finishes the job.
    let out = a.run(&["detach", a.iface()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        a.status_json()["interfaces"].as_array().unwrap().len(),
        0,
        "the stale record was kept"
    );
}

#[test]
fn attach_replaces_a_stale_record() {
    let a = Attached::new(&["--mode", "skb"]);
    std::fs::remove_file(a.pins().link(a.iface())).unwrap();
    let out = a.run(&["attach", a.iface()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("attached to {}", a.iface())));
    let v = a.status_json();
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["interfaces"][0]["state"], "attached");
    assert!(a.pins().link(a.iface()).exists());
}

#[test]
fn an_interrupted_detach_all_reads_as_not_loaded_and_attach_starts_afresh() {
    let a = Attached::new(&["--list-capacity", "64k"]);
    assert!(a.run(&["block", "add", "192.0.2.1"]).status.success());
    // detach --all removes the link pins, then the program; killed right after, the
    // snapshots and maps are still there.
    std::fs::remove_file(a.pins().link(a.iface())).unwrap();
    std::fs::remove_file(a.pins().prog()).unwrap();
    let out = a.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("not loaded"),
        "{}",
        text(&out.stdout)
    );
    let out = a.run(&["block", "list"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not loaded") && !err.contains("by hand"),
        "{err}"
    );
    // A new attach loads afresh: new pool size, no old list.
    let out = a.run(&["attach", a.iface(), "--list-capacity", "128k"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = a.status_json();
    assert_eq!(v["list_pool"]["capacity"], 131072, "{v}");
    assert_eq!(v["generation"], 0, "{v}");
    assert_eq!(v["lists"]["block"]["ipv4"], 0, "{v}");
}

#[test]
fn maps_left_by_a_killed_first_attach_are_not_reused() {
    require_root();
    let net = VethPair::new().unwrap();
    let dir = TestPins::new().unwrap();
    // A first attach killed after aya pinned the maps, before the program was pinned.
    floodgate::state::attach::ensure_loaded(&dir.pins, 1 << 16).unwrap();
    std::fs::remove_file(dir.pins.prog()).unwrap();
    assert!(dir.pins.map(names::LIST_NODES).exists());
    let out = fg(
        &net.a,
        dir.pins.root(),
        &["attach", &net.a_if, "--list-capacity", "128k"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&fg(&net.a, dir.pins.root(), &["status", "--json"]).stdout).unwrap();
    assert_eq!(v["list_pool"]["capacity"], 131072, "{v}");
}

#[test]
fn a_failed_first_attach_leaves_nothing_pinned() {
    require_root();
    let ns = Netns::new("fglo").unwrap();
    let dir = FreshDir::new();
    let out = fg(&ns, &dir.0, &["attach", "lo", "--mode", "native"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("native XDP is not available on lo"), "{err}");
    assert!(!dir.0.exists(), "{} was left behind", dir.0.display());
}

#[test]
fn a_partial_attach_reports_every_interface_and_fails() {
    require_root();
    let net = VethPair::new().unwrap();
    let dir = TestPins::new().unwrap();
    let out = fg(
        &net.a,
        dir.pins.root(),
        &["attach", &net.a_if, "lo", "--mode", "native"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains(&format!("attached to {} in native mode", net.a_if)),
        "{stdout}"
    );
    assert!(stderr.contains("not attached to lo"), "{stderr}");
    // What was attached stays attached, and status says so.
    let status = text(&fg(&net.a, dir.pins.root(), &["status"]).stdout);
    assert!(status.contains(&net.a_if), "{status}");
    assert!(dir.pins.link(&net.a_if).exists());
}

#[test]
fn an_interface_with_another_xdp_program_is_named_as_such() {
    let a = Attached::new(&["--mode", "skb"]);
    for mode in ["native", "auto", "skb"] {
        let other = FreshDir::new();
        let out = fg(&a.net.a, &other.0, &["attach", a.iface(), "--mode", mode]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {err}");
        assert!(
            err.contains("already has another XDP program attached")
                && err.contains(&format!("ip link show {}", a.iface()))
                && err.contains("--pin-dir OTHER detach")
                && err.contains("xdp off"),
            "{mode}: {err}"
        );
        assert!(!err.contains("driver lacks"), "{mode}: {err}");
        // Nothing is left loaded in the other directory either.
        assert!(
            !other.0.exists(),
            "{mode}: {} left behind",
            other.0.display()
        );
    }
    // The first attachment is untouched.
    assert!(has_xdp(&a.net.a, a.iface()));
}

/// The lock on a pin directory, held by this test as another floodgate command would.
struct HeldLock {
    _file: File,
}

impl HeldLock {
    fn take(pins: &PinDir) -> HeldLock {
        let f = File::open(pins.root()).unwrap();
        // SAFETY: flock on a file we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        HeldLock { _file: f }
    }
}

/// A child whose stderr is collected as it arrives.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn spawn(mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watched {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// Wait until stderr holds `needle`.
    fn wait_for(&self, needle: &str) {
        let started = Instant::now();
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {needle:?} on stderr: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Exit code, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), stdout, stderr)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn waiting_for_the_lock_is_announced_once() {
    let a = Attached::new(&["--mode", "skb"]);
    let lock = HeldLock::take(a.pins());
    let list = Watched::spawn(fg_cmd(&a.net.a, a.pins().root(), &["block", "list"]));
    list.wait_for("waiting for the lock on");
    drop(lock);
    let (code, _, stderr) = list.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("waiting for the lock").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "waiting for the lock on {} (another floodgate command holds it)",
            a.pins().root().display()
        )),
        "{stderr}"
    );
}

#[test]
fn commands_queued_behind_detach_all_say_not_loaded() {
    let a = Attached::new(&["--mode", "skb"]);
    let lock = HeldLock::take(a.pins());
    let status = Watched::spawn(fg_cmd(&a.net.a, a.pins().root(), &["status"]));
    let add = Watched::spawn(fg_cmd(
        &a.net.a,
        a.pins().root(),
        &["block", "add", "192.0.2.1"],
    ));
    status.wait_for("waiting for the lock");
    add.wait_for("waiting for the lock");
    // What detach --all does while they wait: everything goes, the directory too.
    std::fs::remove_dir_all(a.pins().root()).unwrap();
    drop(lock);
    let (code, stdout, stderr) = status.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("floodgate is not loaded"), "{stdout}");
    let (code, _, stderr) = add.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not loaded") && !stderr.contains("No such file"),
        "{stderr}"
    );
    assert!(!a.pins().root().exists(), "a queued command recreated it");
}

#[test]
fn a_list_pool_over_half_the_memory_is_refused() {
    require_root();
    let nodes = 256u32 << 20;
    let (need, total) = (
        floodgate::state::attach::pool_bytes(nodes),
        floodgate::state::attach::mem_total().unwrap(),
    );
    if need <= total / 2 {
        eprintln!("skipped: this machine has room for a pool of {need} bytes");
        return;
    }
    let ns = Netns::new("fgcap").unwrap();
    let dir = FreshDir::new();
    let out = fg(&ns, &dir.0, &["attach", "lo", "--list-capacity", "256M"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let gib = format!("would take {:.1} GiB", need as f64 / f64::from(1u32 << 30));
    assert!(
        err.contains(&format!("{gib} of kernel memory")) && err.contains("more than half"),
        "{err}"
    );
    assert!(!dir.0.exists(), "{} was created", dir.0.display());
}

/// A policy file naming `ifaces`, with one blocked prefix; removed on drop.
fn policy_naming(ifaces: &[&str], mode: &str) -> test_support::TempFile {
    let names: Vec<String> = ifaces.iter().map(|i| format!("\"{i}\"")).collect();
    let text = format!(
        "[interfaces]\nnames = [{}]\nmode = \"{mode}\"\n\n[lists]\nblock = [\"192.0.2.0/24\"]\n",
        names.join(", ")
    );
    test_support::TempFile::new("fgpolicy-", text.as_bytes()).unwrap()
}

#[test]
fn a_policy_naming_its_interfaces_loads_a_fresh_filter_and_attaches() {
    // What `floodgate run --config` does at boot, before anything is pinned.
    require_root();
    let net = VethPair::new().unwrap();
    let dir = FreshDir::new();
    let policy = policy_naming(&[&net.a_if], "skb");
    let out = fg(&net.a, &dir.0, &["apply", policy.path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("did attach {}", net.a_if)),
        "{}",
        text(&out.stdout)
    );
    assert!(has_xdp(&net.a, &net.a_if));
    let status: serde_json::Value =
        serde_json::from_slice(&fg(&net.a, &dir.0, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["lists"]["block"]["ipv4"], 1);
    assert_eq!(status["interfaces"][0]["state"], "attached");
}

#[test]
fn a_fresh_apply_that_attaches_nothing_leaves_nothing_pinned() {
    require_root();
    let ns = Netns::new("fglo").unwrap();
    let dir = FreshDir::new();
    let policy = policy_naming(&["lo"], "native");
    let out = fg(&ns, &dir.0, &["apply", policy.path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not attach to lo") && err.contains("native XDP is not available"),
        "{err}"
    );
    assert!(!dir.0.exists(), "{} was left behind", dir.0.display());
    // An interface that does not exist changes nothing either (a usage error).
    let policy = policy_naming(&["fgnosuch0"], "auto");
    let out = fg(&ns, &dir.0, &["apply", policy.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!dir.0.exists());
}

#[test]
fn a_policy_interface_that_cannot_be_attached_fails_the_apply_and_detaches_nothing() {
    let a = Attached::new(&["--mode", "skb"]);
    // The policy moves filtering from the veth to lo, where native XDP is not available.
    let policy = policy_naming(&["lo"], "native");
    let out = a.run(&["apply", policy.path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the policy is in force as generation 1")
            && err.contains("could not attach to lo")
            && err.contains("nothing was detached"),
        "{err}"
    );
    // The interface that was filtered still is.
    assert!(has_xdp(&a.net.a, a.iface()));
    let v = a.status_json();
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["interfaces"][0]["state"], "attached");
    assert_eq!(v["lists"]["block"]["ipv4"], 1);
}

#[test]
fn applying_the_policy_in_force_again_publishes_nothing() {
    require_root();
    let net = VethPair::new().unwrap();
    let dir = FreshDir::new();
    let policy = policy_naming(&[&net.a_if], "skb");
    let path = policy.path.to_str().unwrap();
    let first = fg(&net.a, &dir.0, &["apply", path]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let again = fg(&net.a, &dir.0, &["apply", "--json", path]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["report"]["unchanged"], true, "{report}");
    assert_eq!(report["report"]["generation"], 1, "{report}");
    let status: serde_json::Value =
        serde_json::from_slice(&fg(&net.a, &dir.0, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["generation"], 1);
    // A real change still publishes.
    let changed = test_support::TempFile::new(
        "fgpolicy-",
        format!(
            "{}\n[[rule]]\nname = \"no-telnet\"\naction = \"drop\"\nprotocol = \"tcp\"\ndst_ports = [23]\n",
            std::fs::read_to_string(&policy.path).unwrap()
        )
        .as_bytes(),
    )
    .unwrap();
    let out = fg(
        &net.a,
        &dir.0,
        &["apply", "--json", changed.path.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["report"]["unchanged"], false, "{report}");
    assert_eq!(report["report"]["generation"], 2, "{report}");
}

#[test]
fn a_policy_asking_for_another_mode_than_attached_is_refused_and_changes_nothing() {
    require_root();
    let net = VethPair::new().unwrap();
    let dir = FreshDir::new();
    let skb = policy_naming(&[&net.a_if], "skb");
    let first = fg(&net.a, &dir.0, &["apply", skb.path.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let native = policy_naming(&[&net.a_if], "native");
    let out = fg(&net.a, &dir.0, &["apply", native.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("attached in skb mode"),
        "{}",
        text(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&fg(&net.a, &dir.0, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["interfaces"][0]["mode"], "skb");
}
