//! List changes are all or nothing for the program, and `block list` always says what the
//! program enforces: with the real `floodgate` binary SIGKILLed at random points of big
//! replaces and loads, and while a replace is in flight. Verdicts come from the pinned program
//! itself (BPF_PROG_TEST_RUN), so they are what a packet would get.

use std::collections::HashSet;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use floodgate::lists::entries::Prefix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use test_support::{
    covered, floodgate_cmd, gen, require_root, set_list, udp_frame_from, Harness, TempFile,
    XDP_DROP,
};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

fn list_of(seed: u64) -> Vec<Prefix> {
    let mut l = gen::scattered_v4(150_000, seed);
    l.extend(gen::realistic_v6(30_000, seed + 1));
    l
}

/// What `floodgate block list` says, as a set.
fn listed(h: &Harness) -> HashSet<Prefix> {
    let out = floodgate_cmd(BIN, h.pins())
        .args(["block", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| floodgate::lists::entries::parse_entry(l).unwrap())
        .collect()
}

/// Sources inside entries of the lists involved, and random ones.
fn probes(lists: &[&[Prefix]], rng: &mut StdRng) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for l in lists {
        for _ in 0..150 {
            out.push(gen::inside(l[rng.random_range(0..l.len())], rng));
        }
    }
    for _ in 0..50 {
        out.push(IpAddr::V4(rng.random::<u32>().into()));
    }
    out
}

/// The program drops exactly the probes the listed set covers.
fn assert_enforces(h: &Harness, set: &HashSet<Prefix>, probes: &[IpAddr], when: &str) {
    for &a in probes {
        let dropped = h.run(&udp_frame_from(a), 1).unwrap().0 == XDP_DROP;
        assert_eq!(
            dropped,
            covered(set, a),
            "{when}: the program and `block list` disagree on {a}"
        );
    }
}

fn snapshots(h: &Harness) -> usize {
    std::fs::read_dir(h.pins().state_dir()).unwrap().count()
}

/// Run `args` and SIGKILL it `delay` after it starts (or when it is done, if sooner).
fn run_and_kill(h: &Harness, args: &[&str], delay: Duration) {
    let mut child = floodgate_cmd(BIN, h.pins())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap();
}

/// Run `args`, SIGKILLed as soon as the next generation's snapshot is on bpffs: the window
/// in which pool nodes and the inactive set are written and the flip happens.
fn run_and_kill_while_publishing(
    h: &Harness,
    args: &[&str],
    next_generation: u64,
    jitter: Duration,
) {
    let next = h.pins().snapshot(next_generation);
    let mut child = floodgate_cmd(BIN, h.pins())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !next.exists() && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    std::thread::sleep(jitter);
    let _ = child.kill();
    child.wait().unwrap();
}

fn generation(h: &Harness) -> u64 {
    floodgate::state::generation::live_generation(h.pins()).unwrap()
}

#[test]
fn killed_changes_leave_the_old_or_the_new_lists_in_force() {
    require_root();
    let h = Harness::with_pool(1 << 20).unwrap();
    let a = list_of(1);
    let b = list_of(3);
    let extra = gen::scattered_v4(40_000, 7);
    let (file_a, file_b, file_extra) = (
        TempFile::list(&a).unwrap(),
        TempFile::list(&b).unwrap(),
        TempFile::list(&extra).unwrap(),
    );
    let set_a: HashSet<Prefix> = a.iter().copied().collect();
    let set_b: HashSet<Prefix> = b.iter().copied().collect();
    let mut rng = StdRng::seed_from_u64(11);
    let probes = probes(&[&a, &b, &extra], &mut rng);
    set_list(h.pins(), filter_common::ListKind::Block, &a).unwrap();

    // How long an uninterrupted replace takes, to spread the kills over it.
    let t = Instant::now();
    let ok = floodgate_cmd(BIN, h.pins())
        .args(["block", "load", "--replace", file_b.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let took = t.elapsed();
    set_list(h.pins(), filter_common::ListKind::Block, &a).unwrap();

    let (mut old, mut new) = (0, 0);
    let mut current = set_a.clone();
    for round in 0..24 {
        let (target, file) = if current == set_a {
            (&set_b, &file_b)
        } else {
            (&set_a, &file_a)
        };
        let file = file.path.to_str().unwrap();
        let args = ["block", "load", "--replace", file];
        if round % 2 == 0 {
            run_and_kill_while_publishing(
                &h,
                &args,
                generation(&h) + 1,
                Duration::from_micros(rng.random_range(0..3000)),
            );
        } else {
            let frac = rng.random_range(0.05..1.1);
            run_and_kill(&h, &args, took.mul_f64(frac));
        }
        let seen = listed(&h);
        if seen == current {
            old += 1;
        } else {
            assert!(
                &seen == target,
                "round {round}: `block list` is neither the old nor the new list"
            );
            new += 1;
        }
        assert_enforces(&h, &seen, &probes, &format!("after kill {round}"));
        current = seen;
        // The next command repairs whatever the kill left and changes things normally.
        let ok = floodgate_cmd(BIN, h.pins())
            .args(["block", "add", "192.0.2.1"])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        current.insert(floodgate::lists::entries::parse_entry("192.0.2.1").unwrap());
        assert_eq!(listed(&h), current);
        assert_eq!(snapshots(&h), 1, "leftover snapshots after a repair");
        assert_enforces(&h, &current, &probes, &format!("after repair {round}"));
        let del = floodgate_cmd(BIN, h.pins())
            .args(["block", "del", "192.0.2.1"])
            .output()
            .unwrap();
        assert!(
            del.status.success(),
            "{}",
            String::from_utf8_lossy(&del.stderr)
        );
        current.remove(&floodgate::lists::entries::parse_entry("192.0.2.1").unwrap());
    }
    // An additive load killed mid-way: all of it or none of it.
    for round in 0..6 {
        let before = listed(&h);
        let frac = rng.random_range(0.1..1.0);
        run_and_kill(
            &h,
            &["block", "load", file_extra.path.to_str().unwrap()],
            took.mul_f64(frac),
        );
        let seen = listed(&h);
        let mut all = before.clone();
        all.extend(extra.iter().copied());
        assert!(
            seen == before || seen == all,
            "additive load {round} left a mix"
        );
        assert_enforces(&h, &seen, &probes, &format!("after killed load {round}"));
        if seen == all {
            let set: Vec<Prefix> = before.iter().copied().collect();
            set_list(h.pins(), filter_common::ListKind::Block, &set).unwrap();
        }
    }
    eprintln!("kills that left the old list: {old}, the new list: {new} (replace took {took:?})");
    assert!(
        old > 0 && new > 0,
        "the kills did not land on both sides of the flip"
    );
}

#[test]
fn a_replace_in_flight_switches_every_source_at_one_instant() {
    require_root();
    let h = Harness::with_pool(1 << 20).unwrap();
    let a = list_of(21);
    let b = list_of(23);
    let file_b = TempFile::list(&b).unwrap();
    set_list(h.pins(), filter_common::ListKind::Block, &a).unwrap();
    let set_a: HashSet<Prefix> = a.iter().copied().collect();
    let set_b: HashSet<Prefix> = b.iter().copied().collect();
    let mut rng = StdRng::seed_from_u64(5);
    // Only sources whose verdict differs between the lists tell old from new.
    let differing: Vec<(Vec<u8>, bool)> = probes(&[&a, &b], &mut rng)
        .into_iter()
        .filter(|&p| covered(&set_a, p) != covered(&set_b, p))
        .map(|p| (udp_frame_from(p), covered(&set_b, p)))
        .collect();
    assert!(differing.len() > 100);
    let mut child = floodgate_cmd(BIN, h.pins())
        .args(["block", "load", "--replace", file_b.path.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Judge every differing source again and again until the replace is done: each run must
    // match A or B, and once any run has seen B, none may see A again.
    let mut seen_new = false;
    let mut runs = 0u64;
    let mut switch_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let done = child.try_wait().unwrap().is_some();
        for (frame, dropped_in_b) in &differing {
            let dropped = h.run(frame, 1).unwrap().0 == XDP_DROP;
            let is_new = dropped == *dropped_in_b;
            if is_new && !seen_new {
                seen_new = true;
                switch_at = Some(runs);
            }
            assert!(
                is_new || !seen_new,
                "after run {runs} a source was judged by the old list again"
            );
            runs += 1;
        }
        if done {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(seen_new, "the new list never took effect");
    eprintln!("{runs} judgements, switch after {switch_at:?}");
}
