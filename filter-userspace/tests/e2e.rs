//! End to end: the real `floodgate` binary attaches to a veth in a throwaway namespace and
//! exits; real packets (ICMP echo, UDP, TCP SYN, IPv4 and IPv6) from the peer namespace are
//! dropped or delivered, and the drop counters equal what was sent from blocked sources.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use filter_common::Reason;
use floodgate::observe::stats::IfaceStats;
use socket2::{Domain, Socket, Type};
use test_support::{in_netns, require_root, TestPins, VethPair};

const A4: &str = "198.18.0.1";
const CLEAN4: &str = "198.18.0.5";
const ALLOWED4: &str = "198.18.0.2"; // inside the blocked /30, but allowlisted
const BLOCKED4: &str = "198.18.0.3";
const A6: &str = "fd00:f100::1";
const CLEAN6: &str = "fd00:f100::5";
const BLOCKED6: &str = "fd00:f100::3";

struct Env {
    net: VethPair,
    dir: TestPins,
}

impl Env {
    fn new() -> Env {
        require_root();
        let net = VethPair::new().unwrap();
        let dir = TestPins::new().unwrap();
        let (a, b) = (&net.a, &net.b);
        a.exec(&["ip", "addr", "add", &format!("{A4}/24"), "dev", &net.a_if])
            .unwrap();
        a.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{A6}/64"),
            "dev",
            &net.a_if,
            "nodad",
        ])
        .unwrap();
        for src in [CLEAN4, ALLOWED4, BLOCKED4] {
            b.exec(&["ip", "addr", "add", &format!("{src}/24"), "dev", &net.b_if])
                .unwrap();
        }
        for src in [CLEAN6, BLOCKED6] {
            b.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{src}/64"),
                "dev",
                &net.b_if,
                "nodad",
            ])
            .unwrap();
        }
        // Static neighbours: no ARP/NDP from blocked sources muddies the exact counts.
        let mac = |ns: &test_support::Netns, dev: &str| -> String {
            let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
            out.unwrap_or_else(|_| {
                // /sys in our mount namespace shows the root netns; ask ip instead.
                let link = ns.exec(&["ip", "-o", "link", "show", dev]).unwrap();
                link.split("link/ether ")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .trim()
            .to_string()
        };
        let mac_a = mac(a, &net.a_if);
        let mac_b = mac(b, &net.b_if);
        for dst in [A4, A6] {
            b.exec(&[
                "ip",
                "neigh",
                "replace",
                dst,
                "lladdr",
                &mac_a,
                "dev",
                &net.b_if,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        for src in [CLEAN4, ALLOWED4, BLOCKED4, CLEAN6, BLOCKED6] {
            a.exec(&[
                "ip",
                "neigh",
                "replace",
                src,
                "lladdr",
                &mac_b,
                "dev",
                &net.a_if,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        Env { net, dir }
    }

    /// Run the real binary in the receiving namespace.
    fn floodgate(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.net.a.path().display()))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_floodgate"))
            .arg("--pin-dir")
            .arg(self.dir.pins.root())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.floodgate(args);
        assert_eq!(code, 0, "floodgate {args:?} failed: {err}");
        out
    }

    fn counters(&self) -> HashMap<Reason, u64> {
        let stats = parse_stats(&self.ok(&["stats", "--json"]));
        let iface = stats
            .iter()
            .find(|s| s.interface == self.net.a_if)
            .expect("interface in stats");
        Reason::ALL
            .iter()
            .map(|r| (*r, iface.get(*r).packets))
            .collect()
    }

    fn ping(&self, src: &str, dst: &str, count: u32) -> u32 {
        let out = self
            .net
            .b
            .exec(&[
                "sh",
                "-c",
                &format!("ping -n -q -c {count} -i 0.05 -W 1 -I {src} {dst} || true"),
            ])
            .unwrap();
        let line = out
            .lines()
            .find(|l| l.contains("received"))
            .expect("ping summary");
        line.split(", ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The interfaces of `stats --json`. IfaceStats is Serialize only (it borrows reason names);
/// read the JSON by hand.
fn parse_stats(json: &str) -> Vec<IfaceStats> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| IfaceStats {
            interface: i["interface"].as_str().unwrap().to_string(),
            reasons: Reason::ALL
                .iter()
                .map(|r| {
                    let t = &i["reasons"][r.name()];
                    (
                        r.name(),
                        floodgate::observe::stats::Totals {
                            packets: t["packets"].as_u64().unwrap(),
                            bytes: t["bytes"].as_u64().unwrap(),
                        },
                    )
                })
                .collect(),
        })
        .collect()
}

fn delta(before: &HashMap<Reason, u64>, after: &HashMap<Reason, u64>, r: Reason) -> u64 {
    after[&r] - before[&r]
}

/// Send `n` UDP datagrams from each source to `dst` and count what arrives, per source.
fn udp_exchange(env: &Env, dst: &str, sources: &[&str], n: usize) -> HashMap<IpAddr, usize> {
    let dst: IpAddr = dst.parse().unwrap();
    let receiver = in_netns(env.net.a.path(), move || -> std::io::Result<UdpSocket> {
        let s = Socket::new(
            if dst.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            },
            Type::DGRAM,
            None,
        )?;
        // Room for every datagram: the test counts them after sending.
        s.set_recv_buffer_size(8 << 20)?;
        s.bind(&SocketAddr::new(dst, 0).into())?;
        Ok(s.into())
    })
    .unwrap()
    .unwrap();
    let port = receiver.local_addr().unwrap().port();
    for src in sources {
        let src: IpAddr = src.parse().unwrap();
        let sender = in_netns(env.net.b.path(), move || {
            UdpSocket::bind(SocketAddr::new(src, 0))
        })
        .unwrap()
        .unwrap();
        for i in 0..n {
            sender
                .send_to(
                    format!("datagram {i}").as_bytes(),
                    SocketAddr::new(dst, port),
                )
                .unwrap();
            if i % 32 == 31 {
                // Stay below the veth ring (256 frames): this test is about the filter.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let mut got: HashMap<IpAddr, usize> = HashMap::new();
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match receiver.recv_from(&mut buf) {
            Ok((_, from)) => *got.entry(from.ip()).or_default() += 1,
            Err(_) => break, // quiet for 300 ms: everything that will arrive has arrived
        }
    }
    got
}

/// One TCP connection attempt from `src`; true if the handshake completed.
fn tcp_connects(env: &Env, src: &str, dst: &str) -> bool {
    let dst: IpAddr = dst.parse().unwrap();
    let listener = in_netns(env.net.a.path(), move || {
        std::net::TcpListener::bind(SocketAddr::new(dst, 0))
    })
    .unwrap()
    .unwrap();
    let to = SocketAddr::new(dst, listener.local_addr().unwrap().port());
    let src: IpAddr = src.parse().unwrap();
    in_netns(env.net.b.path(), move || {
        let s = Socket::new(
            if src.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            },
            Type::STREAM,
            None,
        )
        .unwrap();
        s.bind(&SocketAddr::new(src, 0).into()).unwrap();
        // Shorter than the 1 s initial retransmission timeout: exactly one SYN is sent.
        s.connect_timeout(&to.into(), Duration::from_millis(500))
            .is_ok()
    })
    .unwrap()
}

#[test]
fn blocks_real_traffic_after_the_controller_exits() {
    let env = Env::new();
    let out = env.ok(&["attach", &env.net.a_if]);
    assert!(out.contains("attached to"), "{out}");
    // Attaching again is a no-op.
    assert!(env
        .ok(&["attach", &env.net.a_if])
        .contains("already attached"));
    env.ok(&["block", "add", "198.18.0.0/30", BLOCKED6]);
    env.ok(&["allow", "add", ALLOWED4]);
    let status = env.ok(&["status", "--json"]);
    assert!(status.contains(&env.net.a_if), "{status}");

    let before = env.counters();
    assert_eq!(
        env.ping(BLOCKED4, A4, 5),
        0,
        "blocked source got echo replies"
    );
    assert_eq!(env.ping(CLEAN4, A4, 5), 5);
    assert_eq!(env.ping(ALLOWED4, A4, 5), 5);
    assert_eq!(env.ping(BLOCKED6, A6, 5), 0);
    assert_eq!(env.ping(CLEAN6, A6, 5), 5);
    let got = udp_exchange(&env, A4, &[BLOCKED4, CLEAN4, ALLOWED4], 200);
    assert_eq!(
        got.get(&BLOCKED4.parse().unwrap()),
        None,
        "blocked UDP arrived"
    );
    assert_eq!(got[&CLEAN4.parse().unwrap()], 200);
    assert_eq!(got[&ALLOWED4.parse().unwrap()], 200);
    let got = udp_exchange(&env, A6, &[BLOCKED6, CLEAN6], 200);
    assert_eq!(got.get(&BLOCKED6.parse().unwrap()), None);
    assert_eq!(got[&CLEAN6.parse().unwrap()], 200);
    assert!(
        !tcp_connects(&env, BLOCKED4, A4),
        "TCP from a blocked source connected"
    );
    assert!(!tcp_connects(&env, BLOCKED6, A6));
    assert!(tcp_connects(&env, CLEAN4, A4));
    assert!(tcp_connects(&env, ALLOWED4, A4));
    assert!(tcp_connects(&env, CLEAN6, A6));
    let after = env.counters();

    // Every packet from a blocked source was counted as a blocklist drop, and nothing else was.
    let sent_blocked = 5 + 5 + 200 + 200 + 1 + 1;
    assert_eq!(
        delta(&before, &after, Reason::DroppedBlocklist),
        sent_blocked
    );
    // Allowlisted: 5 echo requests, 200 datagrams, and the TCP handshake (SYN, ACK, FIN...).
    assert!(delta(&before, &after, Reason::PassedAllowlisted) >= 5 + 200 + 2);
    assert_eq!(delta(&before, &after, Reason::DroppedMalformed), 0);

    // Detached, the same blocked source gets through.
    assert!(env.ok(&["detach", &env.net.a_if]).contains("detached from"));
    assert_eq!(env.ping(BLOCKED4, A4, 3), 3);
    env.ok(&["detach", "--all"]);
    assert!(!env.dir.pins.root().exists());
}

#[test]
fn refuses_without_privileges() {
    require_root();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_floodgate"))
        .args(["status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN") && err.contains("root"),
        "{err}"
    );
}

#[test]
fn controller_errors_and_exit_codes() {
    let env = Env::new();
    let (code, _, err) = env.floodgate(&["attach", "no-such-if0"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = env.floodgate(&["block", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("not loaded"), "{err}");
    let (code, _, _) = env.floodgate(&["block", "frobnicate"]);
    assert_eq!(code, 2);
    env.ok(&["attach", "--mode", "native", &env.net.a_if]);
    let (code, _, err) = env.floodgate(&["block", "add", "10.0.0.1/8"]);
    assert_eq!(code, 2);
    assert!(err.contains("10.0.0.0/8"), "{err}");

    // A list file with bad lines changes nothing and names every bad line.
    // Removed on drop, also when an assertion below fails.
    let file = test_support::TempFile::new("fg-list-", b"").unwrap();
    let path = file.path.clone();
    std::fs::write(
        &path,
        "# test\n198.51.100.0/24\nnot-an-ip\n2001:db8::/32\n10.0.0.0/33\n",
    )
    .unwrap();
    let (code, _, err) = env.floodgate(&["block", "load", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(":3:") && err.contains(":5:") && !err.contains(":2:"),
        "{err}"
    );
    assert_eq!(env.ok(&["block", "list"]), "");
    std::fs::write(
        &path,
        "# test\n198.51.100.0/24\n2001:db8::/32 # documentation\n",
    )
    .unwrap();
    env.ok(&["block", "load", path.to_str().unwrap()]);
    assert_eq!(
        env.ok(&["block", "list"]),
        "198.51.100.0/24\n2001:db8::/32\n"
    );
    std::fs::write(&path, "203.0.113.0/24\n").unwrap();
    env.ok(&["block", "load", "--replace", path.to_str().unwrap()]);
    assert_eq!(env.ok(&["block", "list"]), "203.0.113.0/24\n");
    let (code, _, err) = env.floodgate(&["block", "del", "192.0.2.0/24"]);
    assert_eq!(code, 2, "{err}");
    env.ok(&["block", "del", "203.0.113.0/24"]);
    // Entries of every length list (in address order) and delete alike.
    env.ok(&[
        "block",
        "add",
        "2001:db8:1::/48",
        "2001:db8::5",
        "2001:db8::/32",
    ]);
    assert_eq!(
        env.ok(&["block", "list"]),
        "2001:db8::/32\n2001:db8::5/128\n2001:db8:1::/48\n"
    );
    env.ok(&["block", "del", "2001:db8::5"]);
    assert_eq!(
        env.ok(&["block", "list"]),
        "2001:db8::/32\n2001:db8:1::/48\n"
    );
    env.ok(&["block", "flush"]);
    assert_eq!(env.ok(&["block", "list"]), "");
    env.ok(&["policy", "--malformed", "pass"]);
    assert!(env.ok(&["status"]).contains("malformed packets: pass"));
    env.ok(&["detach", "--all"]);
}

#[test]
fn native_mode_needs_driver_support_and_auto_falls_back() {
    let env = Env::new();
    // A bridge has no native XDP: --mode native must say so, auto must fall back to skb.
    let bridge = test_support::unique_name("fgbr");
    env.net
        .a
        .exec(&["ip", "link", "add", &bridge, "type", "bridge"])
        .unwrap();
    env.net
        .a
        .exec(&["ip", "link", "set", &bridge, "up"])
        .unwrap();
    let (code, _, err) = env.floodgate(&["attach", "--mode", "native", &bridge]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("native XDP is not available") && err.contains("--mode skb"),
        "{err}"
    );
    let out = env.ok(&["attach", &bridge, &env.net.a_if]);
    assert!(
        out.contains(&format!("attached to {bridge} in skb mode")),
        "{out}"
    );
    assert!(
        out.contains(&format!("attached to {} in native mode", env.net.a_if)),
        "{out}"
    );
    let status = env.ok(&["status"]);
    assert!(
        status.contains(&bridge) && status.contains("skb"),
        "{status}"
    );
    // Both interfaces share one program and one set of maps.
    env.ok(&["block", "add", BLOCKED4]);
    assert_eq!(env.ping(BLOCKED4, A4, 2), 0);
    // An interface that disappears is reported, and detach tidies up after it.
    env.net.a.exec(&["ip", "link", "del", &bridge]).unwrap();
    assert!(env.ok(&["status"]).contains("interface gone"));
    assert!(env.ok(&["detach", &bridge]).contains("detached from"));
    env.ok(&["detach", "--all"]);
}
