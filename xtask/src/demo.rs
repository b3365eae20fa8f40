//! `cargo xtask demo`: a flood from a blocklisted source next to legitimate traffic, inside
//! throwaway namespaces, with live counters; or the real thing on a named interface.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

fn floodgate_bin() -> PathBuf {
    workspace_root().join("target/release/floodgate")
}

fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Everything the demo creates; removed on drop, also after errors.
struct Sandbox {
    ns_a: String,
    ns_b: String,
    pin_dir: PathBuf,
}

impl Sandbox {
    fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let net = format!("--net=/run/netns/{ns}");
        let mut full = vec!["nsenter", net.as_str(), "--"];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn floodgate(&self, args: &[&str]) -> Result<String> {
        let bin = floodgate_bin();
        let pin = self.pin_dir.to_string_lossy().into_owned();
        let mut full = vec![bin.to_str().expect("utf-8 path"), "--pin-dir", &pin];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&self.exec(&self.ns_a, &full)?.stdout).into_owned())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(floodgate_bin())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(["detach", "--all"])
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        eprintln!(
            "demo: removed namespaces {} and {} and pins {}",
            self.ns_a,
            self.ns_b,
            self.pin_dir.display()
        );
    }
}

const VICTIM: &str = "198.18.0.1";
const LEGIT: &str = "198.18.0.2";
const ATTACKER: &str = "198.18.0.66";
const BLOCKED_NET: &str = "198.18.0.64/26";

/// Let Ctrl-C stop the child that shows counters, not us: we still have to clean up.
pub fn ignore_sigint() {
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Send UDP from `src` inside namespace `ns` for `secs` seconds (bounded by time and count).
fn flood(ns: &Path, src: &str, dst: &str, secs: u32) -> std::thread::JoinHandle<Result<u64>> {
    let ns = ns.to_path_buf();
    let src: SocketAddr = format!("{src}:0").parse().expect("literal");
    let dst: SocketAddr = format!("{dst}:9").parse().expect("literal");
    std::thread::spawn(move || -> Result<u64> {
        let f = std::fs::File::open(&ns)?;
        // SAFETY: setns on our fd, for this thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let sock = UdpSocket::bind(src)?;
        let end = Instant::now() + Duration::from_secs(u64::from(secs));
        let payload = [0x46u8; 18];
        let mut sent = 0u64;
        while sent < 50_000_000 && Instant::now() < end {
            for _ in 0..256 {
                if sock.send_to(&payload, dst).is_ok() {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    })
}

pub fn self_contained(seconds: u32) -> Result<()> {
    ignore_sigint();
    let id = std::process::id() % 0xfffff;
    let sb = Sandbox {
        ns_a: format!("fgdemo-a-{id:x}"),
        ns_b: format!("fgdemo-b-{id:x}"),
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/floodgate-demo-{id:x}")),
    };
    let (va, vb) = (format!("fgda{id:x}"), format!("fgdb{id:x}"));
    println!(
        "demo: creating namespaces {} (victim) and {} (clients), veth {va} <-> {vb}",
        sb.ns_a, sb.ns_b
    );
    sh(&["ip", "netns", "add", &sb.ns_a])?;
    sh(&["ip", "netns", "add", &sb.ns_b])?;
    sh(&[
        "ip", "link", "add", &va, "netns", &sb.ns_a, "type", "veth", "peer", "name", &vb, "netns",
        &sb.ns_b,
    ])?;
    sb.exec(
        &sb.ns_a,
        &["ip", "addr", "add", &format!("{VICTIM}/24"), "dev", &va],
    )?;
    sb.exec(&sb.ns_a, &["ip", "link", "set", &va, "up"])?;
    for a in [LEGIT, ATTACKER] {
        sb.exec(
            &sb.ns_b,
            &["ip", "addr", "add", &format!("{a}/24"), "dev", &vb],
        )?;
    }
    sb.exec(&sb.ns_b, &["ip", "link", "set", &vb, "up"])?;

    println!("demo: floodgate attach {va}");
    print!("{}", sb.floodgate(&["attach", &va])?);
    println!("demo: floodgate block add {BLOCKED_NET}   (the attacker is {ATTACKER})");
    print!("{}", sb.floodgate(&["block", "add", BLOCKED_NET])?);
    println!("demo: the floodgate command has exited; the filter keeps enforcing from the kernel");
    println!("demo: flooding UDP from {ATTACKER} for {seconds}s while {LEGIT} pings {VICTIM}...");
    std::thread::sleep(Duration::from_millis(500));

    let flooder = flood(
        &PathBuf::from(format!("/run/netns/{}", sb.ns_b)),
        ATTACKER,
        VICTIM,
        seconds,
    );
    let pings = (seconds * 5).to_string();
    let net_b = format!("--net=/run/netns/{}", sb.ns_b);
    let ping = Command::new("nsenter")
        .args([
            net_b.as_str(),
            "--",
            "ping",
            "-n",
            "-q",
            "-i",
            "0.2",
            "-W",
            "1",
            "-c",
            &pings,
            "-I",
            LEGIT,
            VICTIM,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ping")?;
    let pin = sb.pin_dir.to_string_lossy().into_owned();
    let count = seconds.to_string();
    let _ = Command::new(floodgate_bin())
        .args(["--pin-dir", &pin, "stats", "--watch", "--count", &count])
        .status();
    let sent = flooder
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    let ping_out = ping.wait_with_output()?;
    let stats = sb.floodgate(&["stats", "--json"])?;
    let v: Vec<serde_like::Iface> = serde_like::parse(&stats);
    let iface = v
        .iter()
        .find(|i| i.name == va)
        .context("no stats for the demo interface")?;
    let summary = String::from_utf8_lossy(&ping_out.stdout);
    let loss = summary
        .lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or("no ping summary")
        .trim();
    println!();
    println!(
        "demo: attacker sent {sent} UDP packets; floodgate dropped {} as blocklisted ({:.1}%)",
        iface.dropped_blocklist,
        iface.dropped_blocklist as f64 * 100.0 / sent.max(1) as f64
    );
    println!("demo: legitimate ping from {LEGIT}: {loss}");
    println!("demo: final counters:");
    print!("{}", sb.floodgate(&["stats"])?);
    Ok(())
}

/// Just enough JSON reading for the stats summary, to keep xtask free of serde.
mod serde_like {
    pub struct Iface {
        pub name: String,
        pub dropped_blocklist: u64,
    }

    /// The elements of `stats --json`'s `interfaces` array (the rules and limits beside it
    /// are not the demo's business).
    pub fn parse(json: &str) -> Vec<Iface> {
        let mut out = Vec::new();
        let Some(at) = json.find("\"interfaces\"") else {
            return out;
        };
        let interfaces = &json[at..];
        let end = ["\"rules\"", "\"limits\"", "\"generation\""]
            .iter()
            .filter_map(|k| interfaces.find(k))
            .min()
            .unwrap_or(interfaces.len());
        for chunk in interfaces[..end].split("\"interface\"").skip(1) {
            let name = chunk.split('"').nth(1).unwrap_or("").to_string();
            let dropped = chunk
                .split("\"dropped-blocklist\"")
                .nth(1)
                .and_then(|s| s.split("\"packets\":").nth(1))
                .and_then(|s| s.trim_start().split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            out.push(Iface {
                name,
                dropped_blocklist: dropped,
            });
        }
        out
    }
}

pub fn on_interface(iface: &str) -> Result<()> {
    let bin = floodgate_bin();
    let status = Command::new(&bin).args(["attach", iface]).status()?;
    if !status.success() {
        bail!("floodgate attach {iface} failed");
    }
    println!(
        "demo: attached to {iface}. Add entries with `{} block add CIDR` or `block load FILE`.",
        bin.display()
    );
    println!("demo: live counters follow; Ctrl-C stops the display, the filter stays attached");
    println!("demo: (remove it with `{} detach {iface}`)", bin.display());
    ignore_sigint();
    let _ = Command::new(&bin).args(["stats", "--watch"]).status();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::serde_like;

    #[test]
    fn reads_each_interface_of_stats_json_and_nothing_beside_it() {
        let json = r#"{
  "generation": 2,
  "interfaces": [
    { "interface": "fgva", "reasons": { "dropped-blocklist": { "bytes": 600, "packets": 10 } } },
    { "interface": "other", "reasons": { "dropped-blocklist": { "bytes": 0, "packets": 0 } } }
  ],
  "limits": [],
  "rules": [ { "name": "interface", "matched": { "packets": 7, "bytes": 70 } } ]
}"#;
        let got = serde_like::parse(json);
        let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["fgva", "other"]);
        assert_eq!(got[0].dropped_blocklist, 10);
        assert_eq!(got[1].dropped_blocklist, 0);
    }
}
