//! Prometheus metrics end to end: the `floodgate` binary attaches to a veth between throwaway
//! namespaces (named `i8m...`, with a pin directory of the same prefix, all removed on drop
//! even when a test fails), a blocked source sends a known number of datagrams across it, and
//! `stats --prometheus` and the daemon's `/metrics` must both pass `promtool check metrics`
//! and count exactly what reached the filter. The daemon runs in the victim's namespace, so
//! its address (127.0.0.1 there) is reachable only by this test's own threads.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::flood::{send_udp, Daemon, Flow, Lab, TempDir};
use test_support::{in_netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const BLOCKED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 66);
/// Datagrams the blocked source sends: 400 at 2,000 per second (bounded in count and time).
const SENT: u64 = 400;
const PPS: u64 = 2000;

/// A lab with the filter attached to the victim's end and `BLOCKED` on the blocklist.
fn lab() -> Lab {
    require_root();
    let lab = Lab::named(BIN, 1, "i8m").expect("lab");
    lab.ok(&["attach", &lab.net.a_if]);
    lab.ok(&["block", "add", &BLOCKED.to_string()]);
    lab.add_sources(&[BLOCKED]).expect("source address");
    lab
}

/// Send from the blocked source; the datagrams that reached the filter (the veth may refuse
/// some at a full ring: those are never judged).
fn send_blocked(lab: &Lab) -> u64 {
    let sent = send_udp(
        &lab.net.b,
        &[Flow {
            src: BLOCKED,
            pps: PPS,
        }],
        9,
        Duration::from_millis(SENT * 1000 / PPS),
    )
    .expect("sending");
    assert_eq!(sent.per_source[&BLOCKED], SENT);
    sent.delivered(BLOCKED)
}

/// `promtool check metrics` of `text`: it must be installed (the Debian package prometheus;
/// `cargo xtask test` installs it) and find nothing wrong.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is missing ({e}): install the Debian package prometheus (`apt-get install prometheus`; `cargo xtask test` does it)"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name{labels}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let inner = rest.strip_suffix('}')?;
        let mut got: Vec<String> = inner
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| p.trim_end_matches('"').to_string())
            .collect();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}")).collect();
        got.sort();
        want.sort();
        (got == want).then(|| value.parse().ok())?
    })
}

fn dropped_blocklist(text: &str, iface: &str) -> f64 {
    sample(
        text,
        "floodgate_packets_total",
        &[("interface", iface), ("reason", "dropped-blocklist")],
    )
    .unwrap_or_else(|| panic!("no dropped-blocklist counter for {iface} in:\n{text}"))
}

/// A policy file for the daemon (it governs whatever is attached).
fn policy(dir: &TempDir) -> String {
    dir.write(
        "policy.toml",
        &format!("[lists]\nblock = [\"{BLOCKED}/32\"]\n"),
    )
    .expect("policy file")
    .to_str()
    .expect("utf-8 path")
    .to_string()
}

/// A port free on 127.0.0.1 in the victim's namespace.
fn free_port(lab: &Lab) -> u16 {
    in_netns(lab.net.a.path(), || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    })
    .expect("netns thread")
    .expect("a free port")
}

/// Start `floodgate run --config FILE --metrics 127.0.0.1:PORT` in the victim's namespace and
/// wait until it serves.
fn daemon(lab: &Lab, config: &str, port: u16) -> Daemon {
    let mut d = lab
        .spawn_daemon(
            std::path::Path::new(config),
            &["--metrics", &format!("127.0.0.1:{port}")],
        )
        .expect("spawning the daemon");
    d.wait_log("serving metrics at", 1, Duration::from_secs(20))
        .expect("the daemon serves metrics");
    d
}

/// Stop the daemon we started, by its pid (SIGTERM), and check it exits cleanly.
fn stop(mut d: Daemon) {
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).expect("daemon exit");
    assert!(
        status.success(),
        "daemon exited with {status}:\n{}",
        d.log_text()
    );
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request to 127.0.0.1:`port` in the victim's namespace.
fn http_get(lab: &Lab, port: u16, path: &str, accept: Option<&str>) -> Reply {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Connection: close\r\n\r\n",
        accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default()
    );
    let raw = in_netns(lab.net.a.path(), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(request.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .expect("netns thread")
    .expect("HTTP request");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

#[test]
fn stats_prometheus_passes_promtool_and_counts_every_blocked_packet() {
    let lab = lab();
    let delivered = send_blocked(&lab);
    assert!(
        delivered > SENT / 2,
        "only {delivered} of {SENT} reached the filter"
    );
    let text = lab.ok(&["stats", "--prometheus"]);
    promtool_check(&text);
    assert_eq!(dropped_blocklist(&text, &lab.net.a_if), delivered as f64);
    assert_eq!(sample(&text, "floodgate_up", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "floodgate_list_entries",
            &[("list", "block"), ("family", "ipv4")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "floodgate_interface_attached",
            &[("interface", &lab.net.a_if), ("mode", "native")]
        )
        .or_else(|| sample(
            &text,
            "floodgate_interface_attached",
            &[("interface", &lab.net.a_if), ("mode", "skb")]
        )),
        Some(1.0)
    );
    // The same reading as `stats --json`.
    let json: serde_json::Value =
        serde_json::from_str(&lab.ok(&["stats", "--json"])).expect("stats --json");
    let iface = json["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["interface"] == lab.net.a_if.as_str())
        .expect("the interface in stats --json");
    assert_eq!(
        iface["reasons"]["dropped-blocklist"]["packets"].as_u64(),
        Some(delivered)
    );
}

#[test]
fn stats_prometheus_of_an_unloaded_filter_says_down() {
    require_root();
    let pins = test_support::TestPins::named("i8mtest-").expect("pins");
    let out = test_support::floodgate_cmd(BIN, &pins.pins)
        .args(["stats", "--prometheus"])
        .output()
        .expect("floodgate");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    promtool_check(&text);
    assert_eq!(sample(&text, "floodgate_up", &[]), Some(0.0));
}

#[test]
fn daemon_serves_the_same_counts_over_http() {
    let lab = lab();
    let delivered = send_blocked(&lab);
    let dir = TempDir::new("i8mpolicy-").expect("temp dir");
    let config = policy(&dir);
    let port = free_port(&lab);
    let d = daemon(&lab, &config, port);
    // A plain client gets the text format 0.0.4.
    let r = http_get(&lab, port, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    promtool_check(&r.body);
    assert_eq!(dropped_blocklist(&r.body, &lab.net.a_if), delivered as f64);
    assert_eq!(sample(&r.body, "floodgate_up", &[]), Some(1.0));
    assert_eq!(
        sample(&r.body, "floodgate_daemon_last_reload_success", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &r.body,
            "floodgate_daemon_reloads_total",
            &[("result", "ok")]
        ),
        Some(1.0)
    );
    // Prometheus asks for OpenMetrics and gets it, with the same count.
    let om = http_get(
        &lab,
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(om.status, 200);
    assert!(
        om.headers
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        om.headers
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert_eq!(dropped_blocklist(&om.body, &lab.net.a_if), delivered as f64);
    // And `stats --prometheus` agrees.
    let text = lab.ok(&["stats", "--prometheus"]);
    assert_eq!(dropped_blocklist(&text, &lab.net.a_if), delivered as f64);
    stop(d);
}

#[test]
fn daemon_answers_404_outside_metrics_and_405_to_other_methods() {
    let lab = lab();
    let dir = TempDir::new("i8mpolicy-").expect("temp dir");
    let config = policy(&dir);
    let port = free_port(&lab);
    let d = daemon(&lab, &config, port);
    for path in ["/", "/metricsx", "/metrics/", "/favicon.ico"] {
        assert_eq!(http_get(&lab, port, path, None).status, 404, "{path}");
    }
    let raw = in_netns(lab.net.a.path(), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .expect("netns thread")
    .expect("HTTP request");
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    stop(d);
}

#[test]
fn daemon_keeps_serving_health_while_the_pins_are_gone() {
    let lab = lab();
    let dir = TempDir::new("i8mpolicy-").expect("temp dir");
    let config = policy(&dir);
    let port = free_port(&lab);
    let mut d = daemon(&lab, &config, port);
    // Everything pinned goes away under the daemon.
    lab.ok(&["detach", "--all"]);
    let r = http_get(&lab, port, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    promtool_check(&r.body);
    assert_eq!(sample(&r.body, "floodgate_up", &[]), Some(0.0));
    assert_eq!(
        sample(&r.body, "floodgate_daemon_last_reload_success", &[]),
        Some(1.0)
    );
    assert!(!r.body.contains("floodgate_packets_total"));
    assert!(d.running(), "the daemon exited:\n{}", d.log_text());
    stop(d);
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    for bad in [
        "nonsense",
        "localhost:9464",
        "127.0.0.1",
        "127.0.0.1:0",
        "1.2.3.4:99999",
    ] {
        let out = Command::new(BIN)
            .args(["run", "--config", "/nonexistent.toml", "--metrics", bad])
            .output()
            .expect("floodgate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--metrics") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn a_metrics_port_in_use_is_a_runtime_error_naming_the_address() {
    let lab = lab();
    let dir = TempDir::new("i8mpolicy-").expect("temp dir");
    let config = policy(&dir);
    // A listener in the victim's namespace holds the port (a socket stays in the namespace
    // it was made in).
    let taken = in_netns(lab.net.a.path(), || TcpListener::bind("127.0.0.1:0"))
        .expect("netns thread")
        .expect("a listener");
    let addr = format!("127.0.0.1:{}", taken.local_addr().expect("address").port());
    // Spawned as a daemon so that, should it start after all, it is killed (by pid) on drop.
    let mut d = lab
        .spawn_daemon(std::path::Path::new(&config), &["--metrics", &addr])
        .expect("spawning the daemon");
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon exits");
    let log = d.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("cannot serve metrics on {addr}")),
        "{log}"
    );
    // Nothing was applied.
    let status = lab.status();
    assert!(status["policy"]["source"].is_null(), "{status}");
    drop(taken);
}

#[test]
fn idle_connections_do_not_keep_scrapes_out() {
    let lab = lab();
    let dir = TempDir::new("i8mpolicy-").expect("temp dir");
    let config = policy(&dir);
    let port = free_port(&lab);
    let d = daemon(&lab, &config, port);
    // More connections than the server serves at once, each sending nothing (as a stuck or
    // hostile client would); held open until the scrape below is answered.
    let idle = in_netns(lab.net.a.path(), move || {
        (0..80)
            .map(|_| TcpStream::connect(("127.0.0.1", port)))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .expect("netns thread")
    .expect("idle connections");
    let started = std::time::Instant::now();
    let reply = http_get(&lab, port, "/metrics", None);
    assert_eq!(reply.status, 200);
    // Idle slots are given back after the 2 s allowed for a request head, not after 10.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    stop(d);
}
