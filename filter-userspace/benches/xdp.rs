//! `cargo xtask bench`: per-packet cost of floodgate's XDP program through BPF_PROG_TEST_RUN,
//! next to a bare XDP_DROP floor and the kernel LPM trie holding the same lists, with fixed
//! frames and with a fresh random source per packet (the only honest way to price a 1M-entry
//! list: a replayed frame keeps every lookup in L1). Rows are interleaved and repeated; the
//! median is reported. Writes target/bench/latest.json.

mod chart;
mod peers;
mod veth;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, Result};
use filter_common::frames::{ethernet, ipv4, ipv6, udp};
use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP};
use filter_common::ListKind;
use floodgate::lists::entries::{parse_entry, read_list_file, Prefix};
use floodgate::lists::{self, Edit};
use serde_json::json;
use test_support::{gen, require_root, BenchObject};

/// Room for the largest P2 lists (1M IPv4 + 1M IPv6 real-world-shaped entries).
const BENCH_POOL_NODES: u32 = 1 << 22;

struct Config {
    rounds: usize,
    repeat: u32,
    sizes: Vec<usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn frame_v4(src: &str) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().unwrap();
    ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(
            src,
            Ipv4Addr::new(192, 0, 2, 254),
            IPPROTO_UDP,
            &[],
            0,
            &udp(1234, 53, &[0; 18]),
        ),
    )
}

fn frame_v6(src: &str) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().unwrap();
    ethernet(
        ETH_P_IPV6,
        &[],
        &ipv6(
            src,
            "2001:db8::fe".parse().unwrap(),
            IPPROTO_UDP,
            &[],
            &udp(1234, 53, &[0; 18]),
        ),
    )
}

/// What runs a row: one of our programs, or xdp-filter's.
#[derive(Clone, Copy)]
enum Runner<'a> {
    Ours(&'a str),
    XdpFilter(&'a peers::XdpFilter),
}

/// Measure every (label, runner, frame) `rounds` times, interleaved; median ns per packet.
fn measure(
    b: &BenchObject,
    cfg: &Config,
    rows: &[(&str, Runner<'_>, &[u8])],
) -> Result<BTreeMap<String, f64>> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..cfg.rounds {
        for (label, runner, frame) in rows {
            let (_, ns) = match runner {
                Runner::Ours(prog) => b.run(prog, frame, cfg.repeat),
                Runner::XdpFilter(f) => f.run(frame, cfg.repeat),
            }
            .with_context(|| format!("running {label}"))?;
            samples.entry(label.to_string()).or_default().push(ns);
        }
    }
    Ok(samples.into_iter().map(|(k, v)| (k, median(v))).collect())
}

fn set_block(b: &BenchObject, prefixes: &[Prefix]) -> Result<f64> {
    let started = Instant::now();
    lists::change(
        &b.dir.pins,
        ListKind::Block,
        Edit::Replace(prefixes.to_vec()),
    )?;
    Ok(started.elapsed().as_secs_f64())
}

/// Time `block load FILE` through the same code path as the CLI (parse file, then apply).
fn time_file_load(b: &BenchObject, prefixes: &[Prefix]) -> Result<(f64, f64)> {
    let path = std::env::temp_dir().join(format!("floodgate-bench-{}.txt", std::process::id()));
    let text: String = prefixes.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(&path, text)?;
    // Into an empty list, as `floodgate block flush; floodgate block load FILE` would.
    set_block(b, &[])?;
    let started = Instant::now();
    let parsed = read_list_file(&path)?;
    let parse = started.elapsed().as_secs_f64();
    lists::change(&b.dir.pins, ListKind::Block, Edit::Add(parsed))?;
    let total = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((parse, total))
}

fn main() -> Result<()> {
    require_root();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let want = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let cfg = if quick {
        Config {
            rounds: 3,
            repeat: 200_000,
            sizes: vec![10, 10_000, 100_000],
        }
    } else {
        Config {
            rounds: 7,
            repeat: 1_000_000,
            sizes: vec![10, 10_000, 1_000_000],
        }
    };
    let mut b = BenchObject::new(BENCH_POOL_NODES)?;
    let mut report = serde_json::Map::new();

    // Before pinning to one CPU, which would make this process see only that one.
    let machine = machine();
    if want("p1") || want("p2") {
        // test_run measures on the calling CPU: stay on one, or caches restart at each move.
        test_support::pin_thread_to_cpu(1)?;
        p1_p2(&mut b, &cfg, &mut report, &want)?;
    }
    if want("p3") {
        report.insert("p3_veth".into(), p3(&mut b, &cfg, quick)?);
    }
    report.insert("machine".into(), json!(machine));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("latest.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::Value::Object(report.clone()))?,
    )?;
    println!("\nwrote {}", path.canonicalize()?.display());
    let png = dir.join("latest.png");
    match chart::draw(&png, &machine, &panels(&report)) {
        Ok(()) => println!("wrote {}", png.canonicalize()?.display()),
        Err(e) => println!("chart not drawn: {e:#}"),
    }
    Ok(())
}

/// P1 (fixed frames) and P2 (list scale with random sources).
fn p1_p2(
    b: &mut BenchObject,
    cfg: &Config,
    report: &mut serde_json::Map<String, serde_json::Value>,
    want: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let clean4 = frame_v4("192.0.2.1");
    let blocked4 = frame_v4("198.51.100.7");
    let clean6 = frame_v6("2001:db8:600d::1");
    let blocked6 = frame_v6("2001:db8:bad::7");
    let ten: Vec<Prefix> = [
        "198.51.100.0/24",
        "203.0.113.0/24",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.0.2.128/25",
        "2001:db8:bad::/48",
        "2001:db8:dead::/48",
        "fd00::/8",
        "2001:db8:1::/64",
        "2001:db8:2::5",
    ]
    .iter()
    .map(|e| parse_entry(e).unwrap())
    .collect();
    set_block(b, &ten)?;
    if want("p1") {
        let xdp_filter = peers::XdpFilter::load(
            [198, 51, 100, 7],
            "2001:db8:bad::7".parse::<Ipv6Addr>()?.octets(),
        );
        if let Err(e) = &xdp_filter {
            println!("\nP1: xdp-filter rows skipped: {e:#}");
        }
        let ours = Runner::Ours("floodgate");
        let far4 = frame_v4("100.64.0.1");
        let far6 = frame_v6("2a01::1");
        let cases: [(&str, &[u8]); 6] = [
            ("IPv4 pass", &far4),
            ("IPv4 pass, listed /25 in /24", &clean4),
            ("IPv4 blocklisted", &blocked4),
            ("IPv6 pass", &far6),
            ("IPv6 pass, listed /48s in /32", &clean6),
            ("IPv6 blocklisted", &blocked6),
        ];
        let labels: Vec<(String, String)> = cases
            .iter()
            .map(|(c, _)| (format!("ours: {c}"), format!("xdp-filter: {c}")))
            .collect();
        let mut rows: Vec<(&str, Runner<'_>, &[u8])> =
            vec![("floor: XDP_DROP", Runner::Ours("bench_drop_all"), &clean4)];
        for ((_, frame), (our_label, peer_label)) in cases.iter().zip(&labels) {
            rows.push((our_label, ours, frame));
            if let Ok(f) = &xdp_filter {
                rows.push((peer_label, Runner::XdpFilter(f), frame));
            }
        }
        let p1 = measure(b, cfg, &rows)?;
        let floor = p1["floor: XDP_DROP"];
        println!(
            "\nP1  per-packet cost, fixed frame, 10-entry lists (BPF_PROG_TEST_RUN, median of {} x {} runs)",
            cfg.rounds, cfg.repeat
        );
        println!(
            "{:<30} {:>8} {:>11} {:>13} {:>15}",
            "row", "ns/pkt", "over floor", "vs xdp-filter", "(over floor)"
        );
        println!("{:<30} {floor:>8.1}", "floor: XDP_DROP");
        let mut ratios = serde_json::Map::new();
        for (our_label, peer_label) in &labels {
            for label in [our_label, peer_label] {
                let Some(&ns) = p1.get(label.as_str()) else {
                    continue;
                };
                let versus = match (label == our_label, p1.get(peer_label.as_str())) {
                    (true, Some(&peer)) => {
                        ratios.insert(
                            our_label.clone(),
                            json!({"raw": ns / peer, "over_floor": (ns - floor) / (peer - floor)}),
                        );
                        format!(
                            "{:>12.2}x {:>14.2}x",
                            ns / peer,
                            (ns - floor) / (peer - floor)
                        )
                    }
                    _ => String::new(),
                };
                println!("{label:<42} {ns:>8.1} {:>11.1} {versus}", ns - floor);
            }
        }
        report.insert("p1_fixed_frame_ns".into(), json!(p1));
        report.insert(
            "p1_ratio_to_xdp_filter".into(),
            serde_json::Value::Object(ratios),
        );
    }

    if !want("p2") {
        return Ok(());
    }
    // P2: list scale with a random source per packet, ours against the kernel LPM trie.
    let mut p2 = serde_json::Map::new();
    let mut loads = serde_json::Map::new();
    println!("\nP2  list scale, random source per packet (ns/pkt, RNG cost subtracted)");
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "entries", "ours v4", "LPM v4", "ours v6", "LPM v6", "no-list v4"
    );
    let mut base: Option<(f64, f64, f64, f64)> = None;
    for &n in &cfg.sizes {
        let mut list = gen::realistic_v4(n, 1);
        list.extend(gen::realistic_v6(n, 2));
        if n >= 1_000_000 {
            // The CLI path, from a file, once per family on an empty list.
            let (parse4, total4) = time_file_load(b, &list[..n])?;
            let (parse6, total6) = time_file_load(b, &list[n..])?;
            println!("  block load of {n} IPv4 entries from a file: {total4:.2}s (parse {parse4:.2}s); {n} IPv6: {total6:.2}s (parse {parse6:.2}s)");
            loads.insert(format!("file_load_{n}_v4_s"), json!(total4));
            loads.insert(format!("file_load_{n}_v6_s"), json!(total6));
        }
        let secs = set_block(b, &list)?;
        loads.insert(format!("apply_{}_entries_s", list.len()), json!(secs));
        b.set_lpm(&list)?;
        let r = measure(
            b,
            cfg,
            &[
                ("drop", Runner::Ours("bench_drop_all"), &clean4),
                ("rng4", Runner::Ours("bench_rng_only"), &clean4),
                ("rng6", Runner::Ours("bench_rng_only"), &clean6),
                ("floor4", Runner::Ours("bench_random_floor"), &clean4),
                ("ours4", Runner::Ours("bench_random_source"), &clean4),
                ("lpm4", Runner::Ours("bench_random_lpm"), &clean4),
                ("ours6", Runner::Ours("bench_random_source"), &clean6),
                ("lpm6", Runner::Ours("bench_random_lpm"), &clean6),
            ],
        )?;
        // What the RNG adds on top of running a program at all.
        let rng4 = (r["rng4"] - r["drop"]).max(0.0);
        let rng6 = (r["rng6"] - r["drop"]).max(0.0);
        let ours4 = r["ours4"] - rng4;
        let lpm4 = r["lpm4"] - rng4;
        let ours6 = r["ours6"] - rng6;
        let lpm6 = r["lpm6"] - rng6;
        let floor4 = r["floor4"] - rng4;
        println!("{n:<10} {ours4:>12.1} {lpm4:>12.1} {ours6:>12.1} {lpm6:>12.1} {floor4:>12.1}");
        p2.insert(
            n.to_string(),
            json!({"ours_v4": ours4, "lpm_v4": lpm4, "ours_v6": ours6, "lpm_v6": lpm6, "no_list_v4": floor4,
                   "rng_v4": rng4, "rng_v6": rng6, "raw": r}),
        );
        if base.is_none() {
            base = Some((ours4, lpm4, ours6, lpm6));
        }
        if let Some((b4, bl4, b6, bl6)) = base {
            if n != cfg.sizes[0] {
                println!(
                    "{:<10} {:>11.2}x {:>11.2}x {:>11.2}x {:>11.2}x   (vs {} entries)",
                    "",
                    ours4 / b4,
                    lpm4 / bl4,
                    ours6 / b6,
                    lpm6 / bl6,
                    cfg.sizes[0]
                );
            }
        }
    }
    report.insert("p2_random_source_ns".into(), serde_json::Value::Object(p2));
    report.insert("list_load_seconds".into(), serde_json::Value::Object(loads));
    Ok(())
}

/// P3: the flood crosses a real veth; see benches/veth.rs.
fn p3(b: &mut BenchObject, cfg: &Config, quick: bool) -> Result<serde_json::Value> {
    use veth::{Layout, Receiver, VethBench};
    let million = if quick {
        gen::realistic_v4(100_000, 11)
    } else {
        gen::realistic_v4(1_000_000, 11)
    };
    let vb = VethBench::new(million)?;
    let frame = vb.frame(false);
    let (split_n, shared_n) = if quick {
        (2_000_000, 500_000)
    } else {
        (8_000_000, 2_000_000)
    };
    let rounds = cfg.rounds;
    let mut mpps: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut nspp: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        // Rotate the order every round so no configuration always follows the same one.
        for i in 0..Receiver::ALL.len() {
            let r = Receiver::ALL[(i + round) % Receiver::ALL.len()];
            let link = vb
                .setup(b, r)
                .with_context(|| format!("setting up {r:?}"))?;
            // Warm-up: NAPI thread placement, caches and the receiver's first packets.
            vb.flood(b, Layout::SplitCpus, &frame, split_n / 16)?;
            let split = vb.flood(b, Layout::SplitCpus, &frame, split_n);
            let shared = vb.flood(b, Layout::SharedCpu, &frame, shared_n);
            vb.teardown(b, r, link)
                .with_context(|| format!("tearing down {r:?}"))?;
            let (handled, secs) = split?;
            mpps.entry(r).or_default().push(handled as f64 / secs / 1e6);
            let (handled, secs) = shared?;
            nspp.entry(r)
                .or_default()
                .push(secs * 1e9 / handled.max(1) as f64);
        }
    }
    let samples = json!({
        "split_cpu_mpps": mpps.iter().map(|(k, v)| (k.label(), v.clone())).collect::<BTreeMap<_, _>>(),
        "shared_cpu_ns_per_pkt": nspp.iter().map(|(k, v)| (k.label(), v.clone())).collect::<BTreeMap<_, _>>(),
    });
    let mpps: BTreeMap<Receiver, f64> = mpps.into_iter().map(|(k, v)| (k, median(v))).collect();
    let nspp: BTreeMap<Receiver, f64> = nspp.into_iter().map(|(k, v)| (k, median(v))).collect();
    let floor = nspp[&Receiver::DropAll];
    let drop_all = mpps[&Receiver::DropAll];
    println!("\nP3  veth flood, IPv4 UDP from one blocked source (median of {rounds})");
    println!(
        "{:<32} {:>10} {:>12} {:>12} {:>14}",
        "receiver", "Mpps", "vs drop-all", "ns/pkt", "ns over floor"
    );
    let mut rows = serde_json::Map::new();
    for r in Receiver::ALL {
        println!(
            "{:<32} {:>10.2} {:>11.2}x {:>12.0} {:>14.0}",
            r.label(),
            mpps[&r],
            mpps[&r] / drop_all,
            nspp[&r],
            nspp[&r] - floor
        );
        rows.insert(r.label().into(), json!({"split_cpu_mpps": mpps[&r], "shared_cpu_ns_per_pkt": nspp[&r], "shared_cpu_ns_over_drop_all": nspp[&r] - floor}));
    }
    rows.insert("samples".into(), samples);
    Ok(serde_json::Value::Object(rows))
}

/// Chart panels from the report, one per part that ran.
fn panels(report: &serde_json::Map<String, serde_json::Value>) -> Vec<chart::Panel> {
    let mut out = Vec::new();
    if let Some(p1) = report.get("p1_fixed_frame_ns").and_then(|v| v.as_object()) {
        out.push(chart::Panel {
            title: "P1  per-packet cost, fixed frame (BPF_PROG_TEST_RUN)".into(),
            unit: "ns",
            rows: p1
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_f64().unwrap_or(0.0),
                        !k.starts_with("xdp-filter"),
                    )
                })
                .collect(),
        });
    }
    if let Some(p2) = report
        .get("p2_random_source_ns")
        .and_then(|v| v.as_object())
    {
        let mut rows = Vec::new();
        for (family, ours, lpm) in [("IPv4", "ours_v4", "lpm_v4"), ("IPv6", "ours_v6", "lpm_v6")] {
            for (n, v) in p2 {
                rows.push((
                    format!("floodgate {family}, {n} entries"),
                    v[ours].as_f64().unwrap_or(0.0),
                    true,
                ));
                rows.push((
                    format!("kernel LPM trie {family}, {n} entries"),
                    v[lpm].as_f64().unwrap_or(0.0),
                    false,
                ));
            }
        }
        out.push(chart::Panel {
            title: "P2  list scale, random source per packet".into(),
            unit: "ns",
            rows,
        });
    }
    if let Some(p3) = report.get("p3_veth").and_then(|v| v.as_object()) {
        let rows = |key: &str| -> Vec<(String, f64, bool)> {
            veth::Receiver::ALL
                .iter()
                .filter_map(|r| {
                    let v = p3.get(r.label())?[key].as_f64()?;
                    let ours = matches!(
                        r,
                        veth::Receiver::Ours1 | veth::Receiver::Ours1M | veth::Receiver::DropAll
                    );
                    Some((r.label().to_string(), v, ours))
                })
                .collect()
        };
        out.push(chart::Panel {
            title: "P3  veth flood, receive NAPI on its own CPU: packets handled".into(),
            unit: "Mpps",
            rows: rows("split_cpu_mpps"),
        });
        out.push(chart::Panel {
            title: "P3  veth flood, sender and receiver on one CPU: cost per packet".into(),
            unit: "ns",
            rows: rows("shared_cpu_ns_per_pkt"),
        });
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {} CPUs, Linux {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim()
    )
}
