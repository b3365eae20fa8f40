//! `--json` output against its documented schema: each test runs one read command against a
//! filter attached in throwaway namespaces (named `i8m...`, removed on drop) and compares the
//! output with the example block of `docs/json.md` that documents it. Any field the page shows
//! and the output lacks (a rename, a removal) fails, and so does any field the output has and
//! the page does not (an undocumented addition).

use std::collections::BTreeSet;

use serde_json::Value;
use test_support::flood::{Lab, TempDir};
use test_support::require_root;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const DOC: &str = include_str!("../../docs/json.md");

/// Every schema block the page holds, each checked by a test below.
const SCHEMAS: &[&str] = &[
    "status",
    "status-not-loaded",
    "stats",
    "list",
    "bans",
    "check-valid",
    "check-invalid",
    "apply",
    "policy",
    "sampling",
    "top",
];

const POLICY: &str = r#"
[lists]
block = ["192.0.2.0/24"]
[[limit]]
name = "syn"
class = "tcp-syn"
per = "source"
pps = 200
ban_seconds = 60
[[rule]]
name = "no-telnet"
action = "drop"
protocol = "tcp"
dst_ports = [23]
"#;

/// The example under `<!-- schema: NAME -->`.
fn schema(name: &str) -> Value {
    let marker = format!("<!-- schema: {name} -->");
    let at = DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/json.md has no schema {name}"));
    let rest = &DOC[at + marker.len()..];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let end = rest[start..].find("```").expect("the block's end");
    serde_json::from_str(&rest[start..start + end])
        .unwrap_or_else(|e| panic!("schema {name} is not JSON: {e}"))
}

/// Differences between `doc` (the documented shape) and `out` (what a command printed), as
/// paths.
fn differences(doc: &Value, out: &Value, path: &str, found: &mut Vec<String>) {
    match (doc, out) {
        (Value::Null, _) => {}
        (Value::Object(d), Value::Object(o)) => {
            if let Some((k, shape)) = d.iter().next().filter(|(k, _)| k.starts_with('<')) {
                for (key, v) in o {
                    differences(shape, v, &format!("{path}.{key}({k})"), found);
                }
                return;
            }
            let dk: BTreeSet<&String> = d.keys().collect();
            let ok: BTreeSet<&String> = o.keys().collect();
            for missing in dk.difference(&ok) {
                found.push(format!("{path}.{missing}: documented, not printed"));
            }
            for extra in ok.difference(&dk) {
                found.push(format!("{path}.{extra}: printed, not documented"));
            }
            for k in dk.intersection(&ok) {
                differences(&d[*k], &o[*k], &format!("{path}.{k}"), found);
            }
        }
        (Value::Array(d), Value::Array(o)) => {
            if let Some(shape) = d.first() {
                for (i, v) in o.iter().enumerate() {
                    differences(shape, v, &format!("{path}[{i}]"), found);
                }
            }
        }
        (Value::Object(_) | Value::Array(_), _) => {
            found.push(format!("{path}: documented as {doc}, printed {out}"));
        }
        // A scalar may be printed as a scalar of any kind or null.
        (_, Value::Object(_) | Value::Array(_)) => {
            found.push(format!("{path}: documented as {doc}, printed {out}"));
        }
        _ => {}
    }
}

fn assert_documented(name: &str, text: &str) {
    let out: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: output is not JSON ({e}):\n{text}"));
    let mut found = Vec::new();
    differences(&schema(name), &out, "", &mut found);
    assert!(
        found.is_empty(),
        "{name}: the output and docs/json.md differ:\n  {}\noutput:\n{text}",
        found.join("\n  ")
    );
}

/// A filter attached to a veth, with a policy of one rule and one limit, command entries in
/// both families and a ban placed by hand.
fn lab() -> (Lab, TempDir) {
    require_root();
    let lab = Lab::named(BIN, 1, "i8m").expect("lab");
    let dir = TempDir::new("i8mjson-").expect("temp dir");
    lab.ok(&["attach", &lab.net.a_if]);
    let policy = dir.write("policy.toml", POLICY).expect("policy");
    lab.ok(&["apply", policy.to_str().expect("utf-8")]);
    lab.ok(&["block", "add", "198.51.100.7", "2001:db8::/32"]);
    lab.ok(&["allow", "add", "203.0.113.0/24"]);
    lab.ok(&["bans", "add", "203.0.113.9", "--seconds", "600", "--force"]);
    (lab, dir)
}

#[test]
fn the_checker_catches_renamed_and_undocumented_fields() {
    let doc = serde_json::json!({"a": 1, "b": {"<X>": {"c": 1}}, "d": [{"e": null}]});
    let mut found = Vec::new();
    let renamed = serde_json::json!({"a": 1, "b": {"k": {"c2": 1}}, "d": [{"e": 1, "f": 2}]});
    differences(&doc, &renamed, "", &mut found);
    assert_eq!(found.len(), 3, "{found:?}");
    found.clear();
    let same = serde_json::json!({"a": null, "b": {"k": {"c": 5}, "l": {"c": 6}}, "d": []});
    differences(&doc, &same, "", &mut found);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn every_schema_on_the_page_is_tested() {
    let on_page: BTreeSet<&str> = DOC
        .match_indices("<!-- schema: ")
        .map(|(at, m)| {
            let rest = &DOC[at + m.len()..];
            &rest[..rest.find(" -->").expect("marker end")]
        })
        .collect();
    assert_eq!(on_page, SCHEMAS.iter().copied().collect());
    for name in SCHEMAS {
        schema(name);
    }
}

#[test]
fn status_json_is_as_documented() {
    let (lab, _dir) = lab();
    let text = lab.ok(&["status", "--json"]);
    assert_documented("status", &text);
    // The arrays the schema describes are not empty here, so their elements were checked.
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert!(!v["interfaces"].as_array().expect("array").is_empty());
    assert!(!v["policy"]["rules"].as_array().expect("array").is_empty());
    assert!(!v["policy"]["limits"].as_array().expect("array").is_empty());
}

#[test]
fn status_json_of_an_unloaded_filter_is_as_documented() {
    require_root();
    let pins = test_support::TestPins::named("i8mtest-").expect("pins");
    let out = test_support::floodgate_cmd(BIN, &pins.pins)
        .args(["status", "--json"])
        .output()
        .expect("floodgate");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_documented("status-not-loaded", &String::from_utf8_lossy(&out.stdout));
}

#[test]
fn stats_json_is_as_documented() {
    let (lab, _dir) = lab();
    let text = lab.ok(&["stats", "--json"]);
    assert_documented("stats", &text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    let interfaces = v["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces[0]["interface"], lab.net.a_if.as_str());
    assert_eq!(interfaces.last().expect("other")["interface"], "other");
    let reasons = interfaces[0]["reasons"].as_object().expect("reasons");
    for r in filter_common::Reason::ALL {
        assert!(reasons.contains_key(r.name()), "no reason {}", r.name());
    }
    // The policy's rule and limit, so their elements were checked, and the generation
    // `status` reports.
    assert_eq!(v["rules"][0]["name"], "no-telnet");
    assert_eq!(v["limits"][0]["name"], "syn");
    assert_eq!(v["limits"][0]["class"], "tcp-syn");
    assert_eq!(v["generation"], lab.status()["generation"]);
}

#[test]
fn stats_watch_json_prints_one_documented_object_per_line() {
    let (lab, _dir) = lab();
    let text = lab.ok(&[
        "stats",
        "--watch",
        "--json",
        "--interval",
        "0.1",
        "--count",
        "3",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in lines {
        assert_documented("stats", line);
    }
}

#[test]
fn block_and_allow_list_json_is_as_documented_and_lists_what_list_prints() {
    let (lab, _dir) = lab();
    for list in ["block", "allow"] {
        let text = lab.ok(&[list, "list", "--json"]);
        assert_documented("list", &text);
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["list"], list);
        let entries: Vec<String> = v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e.as_str().expect("a string").to_string())
            .collect();
        let plain: Vec<String> = lab
            .ok(&[list, "list"])
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(entries, plain);
        assert!(!entries.is_empty());
    }
}

#[test]
fn bans_list_json_is_as_documented() {
    let (lab, _dir) = lab();
    let text = lab.ok(&["bans", "list", "--json"]);
    assert_documented("bans", &text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v[0]["source"], "203.0.113.9/32");
}

#[test]
fn check_json_of_a_valid_file_is_as_documented() {
    let dir = TempDir::new("i8mjson-").expect("temp dir");
    let file = dir.write("policy.toml", POLICY).expect("policy");
    let out = std::process::Command::new(BIN)
        .args(["check", "--json"])
        .arg(&file)
        .output()
        .expect("floodgate");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_documented("check-valid", &String::from_utf8_lossy(&out.stdout));
}

#[test]
fn check_json_of_an_invalid_file_is_as_documented() {
    let dir = TempDir::new("i8mjson-").expect("temp dir");
    let file = dir.write("bad.toml", "bogus = 1\n").expect("policy");
    let out = std::process::Command::new(BIN)
        .args(["check", "--json"])
        .arg(&file)
        .output()
        .expect("floodgate");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_documented("check-invalid", &text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert!(!v["problems"].as_array().expect("problems").is_empty());
}

#[test]
fn apply_json_is_as_documented() {
    let (lab, dir) = lab();
    let changed = dir
        .write(
            "policy2.toml",
            &POLICY
                .replace("pps = 200", "pps = 300")
                .replace("no-telnet", "no-telnet2"),
        )
        .expect("policy");
    let text = lab.ok(&[
        "apply",
        "--dry-run",
        "--json",
        changed.to_str().expect("utf-8"),
    ]);
    assert_documented("apply", &text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["report"]["limits_changed"][0], "syn");
}

#[test]
fn policy_json_is_as_documented() {
    let (lab, _dir) = lab();
    assert_documented("policy", &lab.ok(&["policy", "--json"]));
    assert_documented(
        "policy",
        &lab.ok(&["policy", "--malformed", "pass", "--json"]),
    );
    let v: Value = serde_json::from_str(&lab.ok(&["policy", "--json"])).expect("JSON");
    assert_eq!(v["malformed"], "pass");
}

#[test]
fn sampling_json_is_as_documented() {
    let (lab, _dir) = lab();
    assert_documented("sampling", &lab.ok(&["sampling", "--json"]));
    let text = lab.ok(&["sampling", "--every", "50", "--cap", "4000", "--json"]);
    assert_documented("sampling", &text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["every"], 50);
    assert_eq!(v["readers"], 0);
    assert_eq!(v["effective_every"], 0, "no reader: sampling is off");
}

/// `top --json` while a blocked source sends a few datagrams, in a lab of its own (`i8t...`)
/// with sampling at every drop, so the tables it documents have rows.
#[test]
fn top_json_is_as_documented() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    require_root();
    let source = Ipv4Addr::new(198, 18, 0, 66);
    let lab = Lab::named(BIN, 1, "i8t").expect("lab");
    lab.add_sources(&[source]).expect("source");
    lab.ok(&["attach", &lab.net.a_if]);
    lab.ok(&["block", "add", &source.to_string()]);
    lab.ok(&["sampling", "--every", "1"]);
    let mut top = lab
        .command(&["top", "--json", "--count", "2"], &[])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn top");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.status()["sampling"]["readers"] != 1 {
        assert!(Instant::now() < deadline, "top takes no samples");
        std::thread::sleep(Duration::from_millis(50));
    }
    test_support::in_netns(lab.net.b.path(), move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(source), 0)).expect("bind");
        for _ in 0..3 {
            s.send_to(&[0; 16], (test_support::flood::VICTIM, 7000))
                .expect("send");
        }
    })
    .expect("sender");
    let deadline = Instant::now() + Duration::from_secs(15);
    while top.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = top.kill();
            let _ = top.wait();
            panic!("top --json --count 2 still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = top.wait_with_output().expect("top");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_documented("top", line);
    }
    let v: Value = serde_json::from_str(lines[1]).expect("JSON");
    for table in ["sources", "prefixes", "ports", "reasons"] {
        assert!(
            !v[table].as_array().expect("array").is_empty(),
            "{table}: {v}"
        );
    }
    assert!(!v["reasons"][0]["history"]
        .as_array()
        .expect("history")
        .is_empty());
}
