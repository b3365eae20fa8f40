//! The pinned maps carry BTF, so `bpftool` alone shows the state with named fields (the
//! README's "Inspecting state with bpftool" relies on it). One behaviour per test.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use filter_common::maps as names;
use filter_common::Reason;
use floodgate::state::attach::ensure_loaded;
use serde_json::Value;
use test_support::{
    floodgate_cmd, require_root, run_frame, udp_frame_from, TestPins, TEST_POOL_NODES,
};

const PREFIX: &str = "i8b";

/// The filter loaded (no interface) into a pin directory of its own.
fn loaded() -> TestPins {
    require_root();
    let dir = TestPins::named(PREFIX).unwrap();
    ensure_loaded(&dir.pins, TEST_POOL_NODES).unwrap();
    dir
}

/// `bpftool -j ARGS`, parsed.
fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool (cargo xtask test installs it)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn map_path(dir: &TestPins, name: &str) -> String {
    dir.pins.map(name).to_string_lossy().into_owned()
}

/// Ring buffers and program arrays have no key or value type the kernel would accept.
fn typeless(name: &str) -> bool {
    name == names::SAMPLER || names::SAMPLES.contains(&name)
}

#[test]
fn every_map_with_a_key_and_value_carries_btf() {
    let dir = loaded();
    for name in names::pinned_maps() {
        let info = bpftool(&["map", "show", "pinned", &map_path(&dir, name)]);
        assert_eq!(info["name"], name);
        let btf_id = info["btf_id"].as_u64().unwrap_or(0);
        if typeless(name) {
            assert_eq!(btf_id, 0, "{name} should have no BTF: {info}");
        } else {
            assert!(btf_id > 0, "{name} has no BTF: {info}");
        }
    }
}

#[test]
fn bans_dump_shows_named_key_and_value_fields() {
    let dir = loaded();
    let out = floodgate_cmd(env!("CARGO_BIN_EXE_floodgate"), &dir.pins)
        .args(["bans", "add", "--seconds", "600", "198.51.100.7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dump = bpftool(&["map", "dump", "pinned", &map_path(&dir, names::BANS)]);
    let entries = dump.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{dump}");
    let ban = &entries[0]["formatted"];
    // IPv4 is family 0, its address in the top 32 bits of `hi`.
    let addr = u64::from(u32::from(Ipv4Addr::new(198, 51, 100, 7)));
    assert_eq!(ban["key"]["family"], 0);
    assert_eq!(ban["key"]["prefix"], 32);
    assert_eq!(ban["key"]["hi"], addr << 32);
    assert_eq!(ban["key"]["lo"], 0);
    // Placed by hand: no limit; it lapses at a CLOCK_MONOTONIC time in ns.
    assert_eq!(ban["value"]["limit_id"], 0);
    assert!(ban["value"]["expires"].as_u64().unwrap() > 0, "{ban}");
}

#[test]
fn counters_dump_shows_packets_and_bytes_per_cpu() {
    let dir = loaded();
    let prog = Xdp::from_pin(dir.pins.prog(), XdpAttachType::Interface).unwrap();
    let frame = udp_frame_from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let runs = 5;
    run_frame(&prog, &frame, runs).unwrap();

    // Test runs count in interface slot 0; an unlisted source is `Passed`.
    let key = (Reason::Passed as u32).to_string();
    let entry = bpftool(&[
        "map",
        "lookup",
        "pinned",
        &map_path(&dir, names::COUNTERS),
        "key",
        &key,
        "0",
        "0",
        "0",
    ]);
    let per_cpu = entry["formatted"]["values"].as_array().unwrap();
    let sum = |field: &str| -> u64 {
        per_cpu
            .iter()
            .map(|c| c["value"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("packets"), u64::from(runs), "{entry}");
    assert_eq!(
        sum("bytes"),
        u64::from(runs) * frame.len() as u64,
        "{entry}"
    );
}

#[test]
fn state_dump_shows_the_layout_version_as_a_number() {
    let dir = loaded();
    let dump = bpftool(&["map", "dump", "pinned", &map_path(&dir, names::STATE)]);
    let layout = dump
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["formatted"]["key"] == names::STATE_LAYOUT)
        .unwrap_or_else(|| panic!("no layout entry in {dump}"));
    assert_eq!(layout["formatted"]["value"], names::LAYOUT_VERSION);
}
