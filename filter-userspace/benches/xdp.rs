//! `cargo xtask bench`: floodgate side by side with its peers, in one run.
//!
//! - P1: per-packet cost of floodgate's XDP program through BPF_PROG_TEST_RUN on fixed frames,
//!   next to xdp-filter's program on the same frames: 10-entry lists, and the real IPv6
//!   country list (~600k prefixes from Debian's geoip-database); and with a policy in force
//!   (benches/policies.rs): a rule hit and a frame no rule matches under 10 and 500 table
//!   rules, a source under its per-source limit, a banned source.
//! - P2: a fresh random source per packet (the only honest way to price a 1M-entry list: a
//!   replayed frame keeps every lookup in L1), against the no-list floor and the kernel LPM
//!   trie, at 10, 10k and 1M entries.
//! - P3: drop rate on a veth pair (benches/veth.rs), and the program's in-situ cost from the
//!   kernel's BPF statistics under that flood.
//! - P4: floods through the limiter on the veth pair (benches/limiter.rs): a random-source
//!   against a one-source flood, a legitimate client's loss during the random-source flood,
//!   and the limiter's accuracy at 2x, 10x and 100x overload.
//! - P5: `floodgate block load`, `add`, `del`, `status` and `load --replace` as processes.
//! - P6: kernel memory of the real IPv6 country list.
//!
//! This VM is noisy: every figure is paired with its reference measured in the same round, and
//! reported as the median of the per-round ratios with their min-max. Writes
//! target/bench/latest.json and latest.png.

mod chart;
mod cli;
mod geo;
mod limiter;
mod peers;
mod policies;
mod sampling;
mod stats;
mod timeline;
mod veth;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, Result};
use filter_common::frames::{ethernet, ipv4, ipv6, udp};
use filter_common::parse::{ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP};
use filter_common::ListKind;
use floodgate::lists::entries::{parse_entry, Prefix};
use floodgate::lists::{self, Edit};
use serde_json::{json, Value};
use test_support::{gen, require_root, BenchObject, LpmReference, XDP_DROP, XDP_PASS};

use chart::Bar;
use stats::Spread;

/// Room for the largest P2 lists (1M IPv4 + 1M IPv6 real-world-shaped entries).
const BENCH_POOL_NODES: u32 = 1 << 22;
/// P5's filter: 2M mixed entries (0.9M nodes), and two 1M IPv6 lists at once during
/// `--replace` (1.6M nodes). No larger: every CLI process maps the whole pool, so each command
/// pays for its size (P5's empty-list rows show how much).
const CLI_POOL_NODES: u32 = 1 << 21;
/// The real IPv6 list: whole countries, largest first, until at least this many prefixes.
const REAL_V6_ENTRIES: usize = 600_000;

type Report = serde_json::Map<String, Value>;
/// Samples per label, in round order (index i of every label is round i).
type Samples = BTreeMap<String, Vec<f64>>;

struct Config {
    rounds: usize,
    repeat: u32,
    sizes: Vec<usize>,
    /// Rounds of P5 (each CLI figure is the median over them).
    cli_rounds: usize,
    /// "1M" of P5's lists.
    cli_million: usize,
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

fn frame_v6(src: Ipv6Addr) -> Vec<u8> {
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

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// What runs a row: one of our programs, xdp-filter's, or the 10-entry LPM reference.
#[derive(Clone, Copy)]
enum Runner<'a> {
    Ours(&'a str),
    XdpFilter(&'a peers::XdpFilter),
    Lpm(&'a LpmReference),
    /// The product program of another load (its own pins and maps, a policy in force).
    Load(&'a policies::PolicyLoad),
}

impl Runner<'_> {
    fn run(&self, b: &BenchObject, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        match self {
            Runner::Ours(prog) => b.run(prog, frame, repeat),
            Runner::XdpFilter(f) => f.run(frame, repeat),
            Runner::Lpm(l) => l.run(frame, repeat),
            Runner::Load(l) => l.h.run(frame, repeat),
        }
    }
}

/// Measure every (label, runner, frame) once per round, rows interleaved within a round:
/// ns per packet per label, in round order (index i of every label is round i).
fn measure(b: &BenchObject, cfg: &Config, rows: &[(&str, Runner<'_>, &[u8])]) -> Result<Samples> {
    let mut samples = Samples::new();
    for round in 0..cfg.rounds {
        // Rotate the order so no row always follows the same one.
        for i in 0..rows.len() {
            let (label, runner, frame) = rows[(i + round) % rows.len()];
            let (_, ns) = runner
                .run(b, frame, cfg.repeat)
                .with_context(|| format!("running {label}"))?;
            samples.entry(label.to_string()).or_default().push(ns);
        }
    }
    Ok(samples)
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
            cli_rounds: 2,
            cli_million: 100_000,
        }
    } else {
        Config {
            rounds: 7,
            repeat: 1_000_000,
            sizes: vec![10, 10_000, 1_000_000],
            cli_rounds: 5,
            cli_million: 1_000_000,
        }
    };
    let mut report = Report::new();
    let mut goals = Report::new();
    let mut host: BTreeMap<&'static str, [f64; 2]> = BTreeMap::new();

    // Before pinning to one CPU, which would make this process see only that one.
    let machine = machine();
    let real = if want("p1") || want("p5") || want("p6") {
        match geo::RealList::load("IPv6 country list", gen::GEOIP_V6, REAL_V6_ENTRIES) {
            Ok(r) => {
                println!("real-world list: {}", r.summary());
                report.insert("real_list_ipv6".into(), r.describe());
                Some(r)
            }
            Err(e) => {
                println!("real-world list rows skipped: {e:#}");
                report.insert("real_list_ipv6".into(), json!({"error": format!("{e:#}")}));
                None
            }
        }
    } else {
        None
    };
    // `--only p4-flood`: P4's veth floods without its test-run accuracy rows.
    let named = |part: &str| {
        only.as_deref()
            .is_some_and(|o| o.split(',').any(|p| p == part))
    };
    if want("p1")
        || want("p2")
        || want("p3")
        || want("p4")
        || named("p4-flood")
        || named("p1-sampling")
    {
        let mut b = BenchObject::new(BENCH_POOL_NODES)?;
        if want("p1") || want("p2") || named("p1-sampling") {
            // test_run measures on the calling CPU: stay on one, or caches restart at each move.
            test_support::pin_thread_to_cpu(1)?;
            if want("p1") {
                let load = HostLoad::start();
                p1(&b, &cfg, &mut report, &mut goals, real.as_ref())?;
                load.end("p1", &mut host);
            } else if named("p1-sampling") {
                // `--only p1-sampling`: P1's sampling rows alone.
                let load = HostLoad::start();
                set_block(&b, &ten_entries())?;
                report.insert("p1_sampling".into(), p1_sampling(&b, &cfg)?);
                load.end("p1", &mut host);
            }
            if want("p2") {
                let load = HostLoad::start();
                p2(&mut b, &cfg, &mut report, &mut goals)?;
                load.end("p2", &mut host);
            }
        }
        if want("p3") {
            let load = HostLoad::start();
            report.insert("p3_veth".into(), p3(&mut b, &cfg, quick, &mut goals)?);
            load.end("p3", &mut host);
        }
        if want("p4") {
            let load = HostLoad::start();
            report.insert(
                "p4_limiter".into(),
                limiter::p4(&mut b, cfg.rounds, quick, &mut goals)?,
            );
            load.end("p4", &mut host);
        } else if named("p4-flood") {
            let load = HostLoad::start();
            report.insert(
                "p4_limiter".into(),
                json!({"flood": limiter::floods(&mut b, cfg.rounds, quick, &mut goals)?}),
            );
            load.end("p4", &mut host);
        }
    }
    // `--only p4-accuracy`: P4's test-run rows without its veth floods (no bench object).
    if named("p4-accuracy") && !want("p4") {
        let load = HostLoad::start();
        // Beside the floods of `--only p4-flood,p4-accuracy`, not in their place.
        let accuracy = limiter::accuracy(cfg.rounds, quick)?;
        match report.get_mut("p4_limiter").and_then(Value::as_object_mut) {
            Some(p4) => {
                p4.insert("accuracy".into(), accuracy);
            }
            None => {
                report.insert("p4_limiter".into(), json!({ "accuracy": accuracy }));
            }
        }
        load.end("p4", &mut host);
    }
    // The CLI compiles lists on every CPU: let its processes have them all.
    test_support::unpin_thread()?;
    if want("p5") {
        let load = HostLoad::start();
        report.insert(
            "p5_cli".into(),
            cli::p5(
                cfg.cli_rounds,
                CLI_POOL_NODES,
                cfg.cli_million,
                real.as_ref(),
                &mut goals,
            )?,
        );
        load.end("p5", &mut host);
    }
    // `--only p5-apply`: only P5's policy-apply rows.
    if named("p5-apply") && !want("p5") {
        let load = HostLoad::start();
        report.insert(
            "p5_cli".into(),
            json!({"apply_policy": cli::apply_rows(cfg.cli_rounds, CLI_POOL_NODES, cfg.cli_million)?}),
        );
        load.end("p5", &mut host);
    }
    if want("p6") {
        match &real {
            Some(r) => {
                report.insert("p6_memory_real_ipv6".into(), cli::p6(r)?);
            }
            None => println!("\nP6 skipped: no real-world list"),
        }
    }
    report.insert("machine".into(), json!(machine));
    println!(
        "\nhost load average (1 min) at the start and end of each part: {}",
        host.iter()
            .map(|(k, v)| format!("{k} {}-{}", v[0], v[1]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.insert("host_load_average_1min".into(), json!(host));
    if !goals.is_empty() {
        println!("\nGoals (median of the per-round figures; worst round beside it)");
        for (name, v) in &goals {
            println!("{}", stats::goal_line(name, v));
        }
    }
    report.insert("goals".into(), Value::Object(goals));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("latest.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(report.clone()))?,
    )?;
    println!("\nwrote {}", path.canonicalize()?.display());
    let png = dir.join("latest.png");
    match chart::draw(&png, &machine, &panels(&report)) {
        Ok(()) => println!("wrote {}", png.canonicalize()?.display()),
        Err(e) => println!("chart not drawn: {e:#}"),
    }
    if let Some(p4) = report.get("p4_limiter") {
        for (file, title, plots) in limiter::charts(p4) {
            let png = dir.join(file);
            match timeline::draw(&png, &format!("{title} — {machine}"), &plots) {
                Ok(()) => println!("wrote {}", png.canonicalize()?.display()),
                Err(e) => println!("{file} not drawn: {e:#}"),
            }
        }
    }
    Ok(())
}

/// The host's 1-minute load average around a part: on a shared VM, other work (a test suite,
/// a build) shows up here and explains a wide spread.
struct HostLoad(f64);

impl HostLoad {
    fn now() -> f64 {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn start() -> Self {
        Self(Self::now())
    }

    fn end(self, part: &'static str, into: &mut BTreeMap<&'static str, [f64; 2]>) {
        into.insert(part, [self.0, Self::now()]);
    }
}

const TEN_ENTRIES: [&str; 10] = [
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
];

fn ten_entries() -> Vec<Prefix> {
    TEN_ENTRIES
        .iter()
        .map(|e| parse_entry(e).unwrap())
        .collect()
}

/// One P1 case: a frame, what the list says about its source, and which list.
struct Case {
    label: String,
    frame: Vec<u8>,
    blocked: bool,
}

/// P1: fixed frames, floodgate against xdp-filter on the same frames, per-round ratios.
fn p1(
    b: &BenchObject,
    cfg: &Config,
    report: &mut Report,
    goals: &mut Report,
    real: Option<&geo::RealList>,
) -> Result<()> {
    let blocked4 = "198.51.100.7";
    let blocked6 = v6("2001:db8:bad::7");
    let ten_cases = vec![
        Case {
            label: "IPv4 pass".into(),
            frame: frame_v4("100.64.0.1"),
            blocked: false,
        },
        Case {
            label: "IPv4 pass, listed /25 in /24".into(),
            frame: frame_v4("192.0.2.1"),
            blocked: false,
        },
        Case {
            label: "IPv4 blocklisted".into(),
            frame: frame_v4(blocked4),
            blocked: true,
        },
        Case {
            label: "IPv6 pass".into(),
            frame: frame_v6(v6("2a01::1")),
            blocked: false,
        },
        Case {
            label: "IPv6 pass, listed /48s in /32".into(),
            frame: frame_v6(v6("2001:db8:600d::1")),
            blocked: false,
        },
        Case {
            label: "IPv6 blocklisted".into(),
            frame: frame_v6(blocked6),
            blocked: true,
        },
    ];
    let probes = real.map(|r| geo::probes(&r.prefixes)).unwrap_or_default();
    let real_cases: Vec<Case> = probes
        .iter()
        .map(|p| Case {
            label: p.label.to_string(),
            frame: frame_v6(p.src),
            blocked: p.blocked,
        })
        .collect();
    // xdp-filter denies exactly the listed sources of every row (its table is exact-match).
    let mut deny6 = vec![blocked6.octets()];
    deny6.extend(probes.iter().filter(|p| p.blocked).map(|p| p.src.octets()));
    let xdp_filter = peers::XdpFilter::load(&[blocked4.parse::<Ipv4Addr>()?.octets()], &deny6);
    if let Err(e) = &xdp_filter {
        println!("\nP1: xdp-filter rows skipped: {e:#}");
    }
    let xdp_filter = xdp_filter.ok();

    let mut all: Vec<(String, Vec<Row>)> = Vec::new();
    set_block(b, &ten_entries())?;
    // Policy rows: product loads of their own with the same ten entries, in the same rounds.
    let policy = policies::PolicyRows::new(&TEN_ENTRIES, Ipv4Addr::new(100, 64, 0, 1))?;
    let (rows, samples) = p1_phase(b, cfg, &ten_cases, xdp_filter.as_ref(), &policy.rows())?;
    all.push(("10-entry lists".into(), rows));
    policy.check()?;
    report.insert("p1_sampling".into(), p1_sampling(b, cfg)?);
    if let Some(r) = real {
        let secs = set_block(b, &r.prefixes)?;
        println!(
            "\nP1: {} prefixes of the real IPv6 list applied in {secs:.2}s",
            r.prefixes.len()
        );
        all.push((
            format!("real IPv6 country list, {} entries", r.prefixes.len()),
            p1_phase(b, cfg, &real_cases, xdp_filter.as_ref(), &[])?.0,
        ));
        report.insert(
            "p1_real_list_sources".into(),
            json!(probes
                .iter()
                .map(|p| (p.label.to_string(), p.detail.clone()))
                .collect::<BTreeMap<_, _>>()),
        );
    }

    println!(
        "\nP1  per-packet cost, fixed frame (BPF_PROG_TEST_RUN, {} rounds x {} runs; median (min-max); ratios per round)",
        cfg.rounds, cfg.repeat
    );
    let mut medians = serde_json::Map::new();
    let mut full = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    for (phase, rows) in &all {
        println!("-- {phase}");
        println!(
            "{:<54} {:>22} {:>22} {:>22} {:>22}",
            "row", "floodgate ns", "xdp-filter ns", "ours/xdp-filter", "(both over floor)"
        );
        for row in rows {
            let peer = row.peer.as_ref();
            println!(
                "{:<54} {:>22} {:>22} {:>22} {:>22}",
                row.label,
                row.ours.show(1),
                peer.map(|s| s.show(1)).unwrap_or_default(),
                row.ratio
                    .as_ref()
                    .map(|s| s.show_ratio())
                    .unwrap_or_default(),
                row.over_floor
                    .as_ref()
                    .map(|s| s.show_ratio())
                    .unwrap_or_default(),
            );
            medians.insert(format!("ours: {}", row.label), json!(row.ours.median));
            if let Some(p) = peer {
                medians.insert(format!("xdp-filter: {}", row.label), json!(p.median));
            }
            full.insert(
                row.label.clone(),
                json!({"list": phase, "ours_ns": row.ours.json(),
                       "xdp_filter_ns": peer.map(Spread::json),
                       "floor_ns": row.floor.json(), "verdict_checked": row.verdict_ok}),
            );
            if let (Some(r), Some(o)) = (&row.ratio, &row.over_floor) {
                ratios.insert(
                    format!("ours: {}", row.label),
                    json!({"raw": r.median, "over_floor": o.median,
                           "raw_spread": r.json(), "over_floor_spread": o.json()}),
                );
                let listed_v6 = row.label.starts_with("IPv6") && row.blocked;
                let near_miss = row.label.contains("near miss");
                if listed_v6 || near_miss {
                    goals.insert(
                        format!("P1 {} ({phase}): ours/xdp-filter <= 0.4", row.label),
                        stats::verdict_at_most(r, 0.4),
                    );
                }
            }
            if !row.verdict_ok {
                println!(
                    "   ^ WARNING: a program's verdict on this frame is not what the list says"
                );
            }
        }
        if let Some(floor) = rows.first().map(|r| &r.floor) {
            println!(
                "{:<54} {:>22}",
                "floor: XDP_DROP (same rounds)",
                floor.show(1)
            );
            medians.insert(format!("floor: XDP_DROP ({phase})"), json!(floor.median));
        }
    }
    report.insert("p1_fixed_frame_ns".into(), Value::Object(medians));
    report.insert("p1_fixed_frame".into(), Value::Object(full));
    report.insert("p1_ratio_to_xdp_filter".into(), Value::Object(ratios));
    report.insert(
        "p1_policy".into(),
        policies::PolicyRows::report(&samples, "ours: IPv4 pass", goals),
    );
    Ok(())
}

/// P1's sampling rows (benches/sampling.rs), on the blocklisted IPv4 frame of the 10-entry lists.
fn p1_sampling(b: &BenchObject, cfg: &Config) -> Result<Value> {
    sampling::rows(b, cfg.rounds, cfg.repeat, &frame_v4("198.51.100.7"))
}

/// A P1 row: floodgate, xdp-filter and the floor, over the same rounds.
struct Row {
    label: String,
    blocked: bool,
    ours: Spread,
    peer: Option<Spread>,
    floor: Spread,
    ratio: Option<Spread>,
    over_floor: Option<Spread>,
    verdict_ok: bool,
}

/// The rows of one P1 list phase, and every sample by label (`extra` rows are measured in the
/// same rounds, under their own labels).
fn p1_phase(
    b: &BenchObject,
    cfg: &Config,
    cases: &[Case],
    xdp_filter: Option<&peers::XdpFilter>,
    extra: &[(String, Runner<'_>, Vec<u8>)],
) -> Result<(Vec<Row>, Samples)> {
    // Each program must give the list's verdict on each frame, or the rows compare nothing.
    let mut verdict_ok = Vec::new();
    for c in cases {
        let want = if c.blocked { XDP_DROP } else { XDP_PASS };
        let ours = b.run("floodgate", &c.frame, 1)?.0;
        let peer = match xdp_filter {
            Some(f) => f.run(&c.frame, 1)?.0,
            None => want,
        };
        verdict_ok.push(ours == want && peer == want);
    }
    let labels: Vec<(String, String)> = cases
        .iter()
        .map(|c| {
            (
                format!("ours: {}", c.label),
                format!("xdp-filter: {}", c.label),
            )
        })
        .collect();
    let floor_frame = frame_v4("192.0.2.1");
    let mut rows: Vec<(&str, Runner<'_>, &[u8])> =
        vec![("floor", Runner::Ours("bench_drop_all"), &floor_frame)];
    for (c, (ours, peer)) in cases.iter().zip(&labels) {
        rows.push((ours, Runner::Ours("floodgate"), &c.frame));
        if let Some(f) = xdp_filter {
            rows.push((peer, Runner::XdpFilter(f), &c.frame));
        }
    }
    for (label, runner, frame) in extra {
        rows.push((label, *runner, frame));
    }
    let s = measure(b, cfg, &rows)?;
    let floor = &s["floor"];
    let out = cases
        .iter()
        .zip(&labels)
        .zip(verdict_ok)
        .map(|((c, (ours, peer)), ok)| {
            let o = &s[ours];
            let p = s.get(peer);
            Row {
                label: c.label.clone(),
                blocked: c.blocked,
                ours: Spread::of(o),
                peer: p.map(|p| Spread::of(p)),
                floor: Spread::of(floor),
                ratio: p.map(|p| Spread::ratio(o, p)),
                over_floor: p.map(|p| {
                    let of: Vec<f64> = o.iter().zip(floor).map(|(x, f)| x - f).collect();
                    let pf: Vec<f64> = p.iter().zip(floor).map(|(x, f)| x - f).collect();
                    Spread::ratio(&of, &pf)
                }),
                verdict_ok: ok,
            }
        })
        .collect();
    Ok((out, s))
}

/// P2: list scale with a random source per packet, against the no-list floor, the kernel LPM
/// trie holding the same list, and the LPM trie holding 10 entries, all in the same rounds.
fn p2(b: &mut BenchObject, cfg: &Config, report: &mut Report, goals: &mut Report) -> Result<()> {
    let clean4 = frame_v4("192.0.2.1");
    let clean6 = frame_v6(v6("2001:db8:600d::1"));
    let mut ten = gen::realistic_v4(10, 1);
    ten.extend(gen::realistic_v6(10, 2));
    let lpm10 = b.lpm_reference(&ten)?;
    let mut p2 = serde_json::Map::new();
    let mut loads = serde_json::Map::new();
    println!(
        "\nP2  list scale, random source per packet (ns/pkt, RNG cost subtracted; median (min-max) of {} rounds; ratios per round)",
        cfg.rounds
    );
    println!(
        "{:<10} {:<5} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20}",
        "entries",
        "",
        "floodgate",
        "LPM trie",
        "no-list floor",
        "LPM trie, 10",
        "ours / no-list",
        "ours / LPM 10",
        "LPM / LPM 10"
    );
    for &n in &cfg.sizes {
        let mut list = gen::realistic_v4(n, 1);
        list.extend(gen::realistic_v6(n, 2));
        let secs = set_block(b, &list)?;
        loads.insert(format!("apply_{}_entries_s", list.len()), json!(secs));
        b.set_lpm(&list)?;
        let s = measure(
            b,
            cfg,
            &[
                ("drop", Runner::Ours("bench_drop_all"), &clean4),
                ("rng4", Runner::Ours("bench_rng_only"), &clean4),
                ("rng6", Runner::Ours("bench_rng_only"), &clean6),
                ("floor4", Runner::Ours("bench_random_floor"), &clean4),
                ("floor6", Runner::Ours("bench_random_floor"), &clean6),
                ("ours4", Runner::Ours("bench_random_source"), &clean4),
                ("ours6", Runner::Ours("bench_random_source"), &clean6),
                ("lpm4", Runner::Ours("bench_random_lpm"), &clean4),
                ("lpm6", Runner::Ours("bench_random_lpm"), &clean6),
                ("lpm10_4", Runner::Lpm(&lpm10), &clean4),
                ("lpm10_6", Runner::Lpm(&lpm10), &clean6),
            ],
        )?;
        // What the RNG adds on top of running a program at all, per round.
        let minus_rng = |key: &str, rng: &str| -> Vec<f64> {
            s[key]
                .iter()
                .zip(&s[rng])
                .zip(&s["drop"])
                .map(|((x, r), d)| x - (r - d).max(0.0))
                .collect()
        };
        let mut row = serde_json::Map::new();
        for (fam, rng) in [("v4", "rng4"), ("v6", "rng6")] {
            let ours = minus_rng(&format!("ours{}", &fam[1..]), rng);
            let lpm = minus_rng(&format!("lpm{}", &fam[1..]), rng);
            let floor = minus_rng(&format!("floor{}", &fam[1..]), rng);
            let lpm10 = minus_rng(&format!("lpm10_{}", &fam[1..]), rng);
            let to_floor = Spread::ratio(&ours, &floor);
            let to_lpm10 = Spread::ratio(&ours, &lpm10);
            let lpm_growth = Spread::ratio(&lpm, &lpm10);
            println!(
                "{:<10} {:<5} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20}",
                n,
                fam,
                Spread::of(&ours).show(1),
                Spread::of(&lpm).show(1),
                Spread::of(&floor).show(1),
                Spread::of(&lpm10).show(1),
                to_floor.show_ratio(),
                to_lpm10.show_ratio(),
                lpm_growth.show_ratio(),
            );
            let name = if fam == "v4" { "IPv4" } else { "IPv6" };
            if n == 10 && fam == "v4" {
                goals.insert(
                    "P2 IPv4 10 entries: ours / no-list floor <= 1.2".into(),
                    stats::verdict_at_most(&to_floor, 1.2),
                );
            }
            if n >= 1_000_000 {
                goals.insert(
                    format!("P2 {name} 1M entries: ours / LPM trie with 10 entries <= 1.5"),
                    stats::verdict_at_most(&to_lpm10, 1.5),
                );
            }
            row.insert(format!("ours_{fam}"), json!(Spread::of(&ours).median));
            row.insert(format!("lpm_{fam}"), json!(Spread::of(&lpm).median));
            row.insert(format!("no_list_{fam}"), json!(Spread::of(&floor).median));
            row.insert(format!("lpm10_{fam}"), json!(Spread::of(&lpm10).median));
            row.insert(
                format!("{fam}_spread"),
                json!({"ours_ns": Spread::of(&ours).json(), "lpm_ns": Spread::of(&lpm).json(),
                       "no_list_ns": Spread::of(&floor).json(), "lpm10_ns": Spread::of(&lpm10).json(),
                       "ours_to_no_list": to_floor.json(), "ours_to_lpm10": to_lpm10.json(),
                       "lpm_to_lpm10": lpm_growth.json()}),
            );
        }
        row.insert("raw".into(), json!(s));
        p2.insert(n.to_string(), Value::Object(row));
    }
    report.insert("p2_random_source_ns".into(), Value::Object(p2));
    report.insert("list_load_seconds".into(), Value::Object(loads));
    Ok(())
}

/// P3: the flood crosses a real veth; see benches/veth.rs.
fn p3(b: &mut BenchObject, cfg: &Config, quick: bool, goals: &mut Report) -> Result<Value> {
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
    let stats_n = split_n / 2;
    let rounds = cfg.rounds;
    let mut mpps: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut nspp: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut bpf_ns: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut bpf_mpps: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut bpf_runs: BTreeMap<Receiver, Vec<u64>> = BTreeMap::new();
    // Each configuration's rate against the reference drop flooded just before and just after
    // it: the host's speed drifts over seconds, so the closest reference pairs best.
    let mut adjacent: BTreeMap<Receiver, Vec<f64>> = BTreeMap::new();
    let mut references: Vec<f64> = Vec::new();
    for round in 0..rounds {
        let mut before = reference_flood(&vb, b, &frame, split_n)?;
        references.push(before);
        // Rotate the order every round so no configuration always follows the same one.
        for i in 0..Receiver::ALL.len() {
            let r = Receiver::ALL[(i + round) % Receiver::ALL.len()];
            let link = vb
                .setup(b, r)
                .with_context(|| format!("setting up {r:?}"))?;
            let measured = (|| -> Result<()> {
                // Warm-up: NAPI thread placement, caches and the receiver's first packets.
                vb.flood(b, Layout::SplitCpus, &frame, split_n / 16)?;
                let (handled, secs) = vb.flood(b, Layout::SplitCpus, &frame, split_n)?;
                mpps.entry(r).or_default().push(handled as f64 / secs / 1e6);
                let (handled, secs) = vb.flood(b, Layout::SharedCpu, &frame, shared_n)?;
                nspp.entry(r)
                    .or_default()
                    .push(secs * 1e9 / handled.max(1) as f64);
                // The XDP programs' own cost, from the kernel, in a flood of its own: the
                // statistics cost two clock reads per packet, kept out of the rates above.
                if r.is_xdp() {
                    let st = vb.flood_bpf_stats(b, &frame, stats_n)?;
                    bpf_ns.entry(r).or_default().push(st.ns_per_run);
                    bpf_mpps.entry(r).or_default().push(st.mpps);
                    bpf_runs.entry(r).or_default().push(st.runs);
                }
                Ok(())
            })();
            let torn = vb
                .teardown(b, r, link)
                .with_context(|| format!("tearing down {r:?}"));
            measured.with_context(|| format!("flooding {r:?}"))?;
            torn?;
            let after = reference_flood(&vb, b, &frame, split_n)?;
            references.push(after);
            let rate = *mpps[&r].last().expect("measured this round");
            adjacent
                .entry(r)
                .or_default()
                .push(rate / ((before + after) / 2.0));
            before = after;
        }
        println!("  P3 round {}/{rounds} done", round + 1);
    }
    let drop_mpps = &mpps[&Receiver::DropAll];
    let drop_ns = &nspp[&Receiver::DropAll];
    println!(
        "\nP3  veth flood, IPv4 UDP from one blocked source ({rounds} rounds; median (min-max); ratios per round against the reference XDP_DROP of the same round)"
    );
    println!(
        "{:<30} {:>20} {:>20} {:>20} {:>20} {:>20} {:>22} {:>20}",
        "receiver",
        "Mpps, split CPUs",
        "vs drop, round",
        "vs adjacent drops",
        "ns/pkt, shared CPU",
        "ns over drop-all",
        "bpf_stats ns/pkt",
        "bpf ns over drop"
    );
    let mut rows = serde_json::Map::new();
    let drop_bpf = bpf_ns.get(&Receiver::DropAll).cloned();
    for r in Receiver::ALL {
        let m = Spread::of(&mpps[&r]);
        let ratio = Spread::ratio(&mpps[&r], drop_mpps);
        let adj = Spread::of(&adjacent[&r]);
        let ns = Spread::of(&nspp[&r]);
        let over = Spread::paired(&nspp[&r], drop_ns, |x, d| x - d);
        let bpf = bpf_ns.get(&r).map(|v| Spread::of(v));
        let bpf_over = match (bpf_ns.get(&r), &drop_bpf) {
            (Some(v), Some(d)) => Some(Spread::paired(v, d, |x, d| x - d)),
            _ => None,
        };
        println!(
            "{:<30} {:>20} {:>20} {:>20} {:>20} {:>20} {:>22} {:>20}",
            r.label(),
            m.show(2),
            ratio.show_ratio(),
            adj.show_ratio(),
            ns.show(0),
            over.show(0),
            bpf.as_ref().map(|s| s.show(1)).unwrap_or_default(),
            bpf_over.as_ref().map(|s| s.show(1)).unwrap_or_default(),
        );
        let mut row = json!({
            "split_cpu_mpps": m.median,
            "shared_cpu_ns_per_pkt": ns.median,
            "shared_cpu_ns_over_drop_all": over.median,
            "split_cpu_mpps_spread": m.json(),
            "split_cpu_ratio_to_drop_all": ratio.json(),
            "split_cpu_ratio_to_adjacent_drop_all": adj.json(),
            "shared_cpu_ns_spread": ns.json(),
            "shared_cpu_ns_over_drop_all_spread": over.json(),
        });
        if let Some(bpf) = &bpf {
            row["bpf_stats_ns_per_pkt"] = bpf.json();
            row["bpf_stats_flood_mpps"] = Spread::of(&bpf_mpps[&r]).json();
            row["bpf_stats_run_cnt"] = json!(bpf_runs[&r]);
        }
        if let Some(o) = &bpf_over {
            row["bpf_stats_ns_over_drop_all"] = o.json();
        }
        rows.insert(r.label().into(), row);
        match r {
            Receiver::Ours1 => {
                goals.insert(
                    "P3 floodgate 1 entry: Mpps / adjacent reference drops >= 0.9".into(),
                    stats::verdict_at_least(&adj, 0.9),
                );
                goals.insert(
                    "P3 floodgate 1 entry: Mpps / reference drop of the round >= 0.9".into(),
                    stats::verdict_at_least(&ratio, 0.9),
                );
            }
            Receiver::Ours1M => {
                goals.insert(
                    "P3 floodgate 1M entries: Mpps / adjacent reference drops >= 0.85".into(),
                    stats::verdict_at_least(&adj, 0.85),
                );
                goals.insert(
                    "P3 floodgate 1M entries: Mpps / reference drop of the round >= 0.85".into(),
                    stats::verdict_at_least(&ratio, 0.85),
                );
            }
            _ => {}
        }
    }
    rows.insert(
        "samples".into(),
        json!({
            "split_cpu_mpps": mpps.iter().map(|(k, v)| (k.label(), v.clone())).collect::<BTreeMap<_, _>>(),
            "shared_cpu_ns_per_pkt": nspp.iter().map(|(k, v)| (k.label(), v.clone())).collect::<BTreeMap<_, _>>(),
            "bpf_stats_ns_per_pkt": bpf_ns.iter().map(|(k, v)| (k.label(), v.clone())).collect::<BTreeMap<_, _>>(),
            "adjacent_reference_drop_mpps": references,
        }),
    );
    rows.insert(
        "method".into(),
        json!({"split_cpu_frames": split_n, "shared_cpu_frames": shared_n,
               "bpf_stats_frames": stats_n,
               "adjacent_reference_frames": split_n,
               "adjacent_reference": "a reference XDP_DROP flood before the first configuration of a round and after each one; a configuration's rate is divided by the mean of the two around it",
               "bpf_stats": "kernel.bpf_stats_enabled=1 during a separate split-CPU flood per XDP configuration; run_time_ns/run_cnt of the attached program (bpftool prog show) before and after"}),
    );
    Ok(Value::Object(rows))
}

/// The reference XDP_DROP on the receiving veth for one split-CPU flood of `count` frames,
/// after the same warm-up as every configuration (a shorter flood reads faster: the first
/// frames are slower); Mpps the receiver took.
fn reference_flood(
    vb: &veth::VethBench,
    b: &mut BenchObject,
    frame: &[u8],
    count: u32,
) -> Result<f64> {
    use veth::{Layout, Receiver};
    let link = vb.setup(b, Receiver::DropAll)?;
    let measured = (|| -> Result<f64> {
        vb.flood(b, Layout::SplitCpus, frame, count / 16)?;
        let (handled, secs) = vb.flood(b, Layout::SplitCpus, frame, count)?;
        Ok(handled as f64 / secs / 1e6)
    })();
    let torn = vb.teardown(b, Receiver::DropAll, link);
    let mpps = measured.context("reference drop flood")?;
    torn?;
    Ok(mpps)
}

fn spread_of(v: &Value) -> Option<Spread> {
    Some(Spread {
        median: v["median"].as_f64()?,
        min: v["min"].as_f64()?,
        max: v["max"].as_f64()?,
        samples: Vec::new(),
    })
}

/// Chart panels from the report, one per part that ran.
fn panels(report: &Report) -> Vec<chart::Panel> {
    let mut out = Vec::new();
    if let Some(p1) = report.get("p1_fixed_frame").and_then(|v| v.as_object()) {
        let mut rows = Vec::new();
        let mut ratio_rows = Vec::new();
        for (label, v) in p1 {
            if let Some(s) = spread_of(&v["ours_ns"]) {
                rows.push(Bar::spread(format!("floodgate: {label}"), &s, true));
            }
            if let Some(s) = spread_of(&v["xdp_filter_ns"]) {
                rows.push(Bar::spread(format!("xdp-filter: {label}"), &s, false));
            }
        }
        if let Some(r) = report
            .get("p1_ratio_to_xdp_filter")
            .and_then(|v| v.as_object())
        {
            for (label, v) in r {
                if let Some(s) = spread_of(&v["raw_spread"]) {
                    ratio_rows.push(Bar::spread(label.trim_start_matches("ours: "), &s, true));
                }
            }
        }
        out.push(chart::Panel {
            title: "P1  per-packet cost, fixed frame (BPF_PROG_TEST_RUN)".into(),
            unit: "ns",
            rows,
            mark: None,
        });
        if !ratio_rows.is_empty() {
            out.push(chart::Panel {
                title: "P1  floodgate / xdp-filter on the same frame, per round".into(),
                unit: "x",
                rows: ratio_rows,
                mark: Some((0.4, "goal for IPv6 listed and near miss: 0.4x".into())),
            });
        }
    }
    if let Some(smp) = report.get("p1_sampling").and_then(|v| v.as_object()) {
        let mut rows = Vec::new();
        let mut deltas = Vec::new();
        for (label, v) in smp {
            if let Some(s) = spread_of(&v["ns"]) {
                rows.push(Bar::spread(label.clone(), &s, v["every"] != 0));
            }
            if v["every"] != 0 {
                if let Some(s) = spread_of(&v["ns_over_off"]) {
                    deltas.push(Bar::spread(label.clone(), &s, true));
                }
            }
        }
        out.push(chart::Panel {
            title:
                "P1  sampled drop events: blocklisted frame, a reader draining (BPF_PROG_TEST_RUN)"
                    .into(),
            unit: "ns",
            rows,
            mark: None,
        });
        out.push(chart::Panel {
            title: "P1  sampling's cost over sampling off, per round".into(),
            unit: "ns",
            rows: deltas,
            mark: None,
        });
    }
    if let Some(pol) = report.get("p1_policy").and_then(|v| v.as_object()) {
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        for (label, v) in pol {
            if let Some(s) = spread_of(&v["ns"]) {
                rows.push(Bar::spread(label.clone(), &s, true));
            }
        }
        if let Some(r) = pol.get("ratio_500_to_10_rules").and_then(|v| v.as_object()) {
            for (what, v) in r {
                if let Some(s) = spread_of(&v["ratio_500_to_10"]) {
                    ratios.push(Bar::spread(
                        format!("{what}: 500 / 10 table rules"),
                        &s,
                        true,
                    ));
                }
            }
        }
        out.push(chart::Panel {
            title: "P1  policy in force: rules, limits, bans (BPF_PROG_TEST_RUN)".into(),
            unit: "ns",
            rows,
            mark: None,
        });
        out.push(chart::Panel {
            title: "P1  rule cost, 500 against 10 table rules, per round".into(),
            unit: "x",
            rows: ratios,
            mark: Some((1.2, "goal 1.2x".into())),
        });
    }
    if let Some(p2) = report
        .get("p2_random_source_ns")
        .and_then(|v| v.as_object())
    {
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        for (family, fam) in [("IPv4", "v4"), ("IPv6", "v6")] {
            for (n, v) in p2 {
                let sp = &v[format!("{fam}_spread")];
                if let Some(s) = spread_of(&sp["ours_ns"]) {
                    rows.push(Bar::spread(
                        format!("floodgate {family}, {n} entries"),
                        &s,
                        true,
                    ));
                }
                if let Some(s) = spread_of(&sp["lpm_ns"]) {
                    rows.push(Bar::spread(
                        format!("kernel LPM trie {family}, {n} entries"),
                        &s,
                        false,
                    ));
                }
                if let Some(s) = spread_of(&sp["ours_to_no_list"]) {
                    ratios.push(Bar::spread(
                        format!("{family} {n}: floodgate / no-list floor"),
                        &s,
                        true,
                    ));
                }
                if let Some(s) = spread_of(&sp["ours_to_lpm10"]) {
                    ratios.push(Bar::spread(
                        format!("{family} {n}: floodgate / LPM trie with 10"),
                        &s,
                        true,
                    ));
                }
                if let Some(s) = spread_of(&sp["lpm_to_lpm10"]) {
                    ratios.push(Bar::spread(
                        format!("{family} {n}: LPM trie / LPM trie with 10"),
                        &s,
                        false,
                    ));
                }
            }
            for (n, v) in p2.iter().take(1) {
                if let Some(s) = spread_of(&v[format!("{fam}_spread")]["no_list_ns"]) {
                    rows.push(Bar::spread(
                        format!("no-list floor {family} ({n} round)"),
                        &s,
                        false,
                    ));
                }
            }
        }
        out.push(chart::Panel {
            title: "P2  list scale, random source per packet".into(),
            unit: "ns",
            rows,
            mark: None,
        });
        out.push(chart::Panel {
            title: "P2  ratios per round (goals: IPv4 10 / no-list <= 1.2; 1M / LPM 10 <= 1.5)"
                .into(),
            unit: "x",
            rows: ratios,
            mark: Some((1.5, "1.5x".into())),
        });
    }
    if let Some(p3) = report.get("p3_veth").and_then(|v| v.as_object()) {
        let rows = |key: &str| -> Vec<Bar> {
            veth::Receiver::ALL
                .iter()
                .filter_map(|r| {
                    let v = p3.get(r.label())?;
                    let s = spread_of(&v[key]).or_else(|| {
                        v[key].as_f64().map(|m| Spread {
                            median: m,
                            min: f64::NAN,
                            max: f64::NAN,
                            samples: Vec::new(),
                        })
                    })?;
                    Some(Bar::spread(r.label(), &s, r.is_ours_or_reference()))
                })
                .collect()
        };
        out.push(chart::Panel {
            title: "P3  veth flood, receive NAPI on its own CPU: packets handled".into(),
            unit: "Mpps",
            rows: rows("split_cpu_mpps_spread"),
            mark: None,
        });
        out.push(chart::Panel {
            title: "P3  the same, against the reference XDP_DROP flooded just before and after"
                .into(),
            unit: "x",
            rows: rows("split_cpu_ratio_to_adjacent_drop_all"),
            mark: Some((0.9, "goal 0.9x (1 entry), 0.85x (1M)".into())),
        });
        out.push(chart::Panel {
            title: "P3  veth flood, sender and receiver on one CPU: cost per packet".into(),
            unit: "ns",
            rows: rows("shared_cpu_ns_spread"),
            mark: None,
        });
        out.push(chart::Panel {
            title:
                "P3  in-situ program cost under the flood (kernel bpf_stats: run_time_ns / run_cnt)"
                    .into(),
            unit: "ns",
            rows: rows("bpf_stats_ns_per_pkt"),
            mark: None,
        });
    }
    if let Some(flood) = report
        .get("p4_limiter")
        .and_then(|v| v.get("flood"))
        .and_then(|v| v.as_object())
    {
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        for (label, v) in flood {
            if let Some(s) = spread_of(&v["floodgate_mpps"]) {
                rows.push(Bar::spread(format!("floodgate: {label}"), &s, true));
            }
            if let Some(s) = spread_of(&v["reference_drop_mpps"]) {
                rows.push(Bar::spread(
                    format!("reference XDP_DROP: {label}"),
                    &s,
                    false,
                ));
            }
        }
        if let Some(s) = flood.get("random_to_one_source_mpps").and_then(spread_of) {
            ratios.push(Bar::spread("random-source / one-source flood", &s, true));
        }
        if let Some(s) = flood
            .get("random_to_one_source_each_vs_its_reference")
            .and_then(spread_of)
        {
            ratios.push(Bar::spread(
                "the same, each over its generator's reference drop",
                &s,
                false,
            ));
        }
        out.push(chart::Panel {
            title: "P4  flood through the limiter, veth pair: packets handled".into(),
            unit: "Mpps",
            rows,
            mark: None,
        });
        out.push(chart::Panel {
            title: "P4  random-source against one-source flood, per round".into(),
            unit: "x",
            rows: ratios,
            mark: Some((0.8, "goal 0.8x".into())),
        });
        if let Some(s) = flood
            .get("legit_client")
            .and_then(|v| v.get("loss_at_floodgate_percent"))
            .and_then(spread_of)
        {
            let mut loss = vec![Bar::spread("lost at floodgate", &s, true)];
            if let Some(all) = flood["legit_client"]
                .get("loss_in_all_percent")
                .and_then(spread_of)
            {
                loss.push(Bar::spread(
                    "lost in all (also at the veth's full ring)",
                    &all,
                    false,
                ));
            }
            out.push(chart::Panel {
                title: "P4  legitimate client during the random-source flood".into(),
                unit: "%",
                rows: loss,
                mark: Some((1.0, "goal < 1% at floodgate".into())),
            });
        }
    }
    if let Some(acc) = report
        .get("p4_limiter")
        .and_then(|v| v.get("accuracy"))
        .and_then(|v| v.as_object())
    {
        let rows = ["2x", "10x", "100x"]
            .iter()
            .filter_map(|k| {
                let s = spread_of(&acc.get(*k)?["passed_to_configured"])?;
                Some(Bar::spread(format!("{k} overload"), &s, true))
            })
            .collect();
        out.push(chart::Panel {
            title: "P4  limiter accuracy: passed / configured rate".into(),
            unit: "x",
            rows,
            mark: Some((1.0, "configured".into())),
        });
    }
    if let Some(p5) = report.get("p5_cli") {
        let mut loads = Vec::new();
        if let Some(l) = p5["load_into_empty"].as_object() {
            for v in l.values() {
                if let Some(s) = spread_of(&v["seconds"]) {
                    loads.push(Bar::spread(
                        format!("block load: {}", v["label"].as_str().unwrap_or("")),
                        &s,
                        true,
                    ));
                }
            }
        }
        if let Some(l) = p5["replace"].as_object() {
            for v in l.values() {
                if let Some(s) = spread_of(&v["seconds"]) {
                    loads.push(Bar::spread(
                        format!(
                            "block load --replace: {}",
                            v["label"].as_str().unwrap_or("")
                        ),
                        &s,
                        true,
                    ));
                }
            }
        }
        out.push(chart::Panel {
            title: "P5  floodgate CLI: list loads (wall time of the process)".into(),
            unit: "s",
            rows: loads,
            mark: Some((1.5, "goal 1.5 s per 1M".into())),
        });
        let mut changes = Vec::new();
        if let (Some(c), Some(l)) = (
            p5["single_changes_ms"].as_object(),
            p5["load_into_empty"].as_object(),
        ) {
            for (case, ops) in c {
                let label = l
                    .get(case)
                    .and_then(|v| v["label"].as_str())
                    .unwrap_or(case);
                for (op, v) in ops.as_object().into_iter().flatten() {
                    if let Some(s) = spread_of(v) {
                        changes.push(Bar::spread(format!("{label}: {op}"), &s, true));
                    }
                }
            }
        }
        out.push(chart::Panel {
            title: "P5  floodgate CLI with the large list in place: one command per process".into(),
            unit: "ms",
            rows: changes,
            mark: Some((50.0, "goal 50 ms".into())),
        });
    }
    if let Some(p6) = report.get("p6_memory_real_ipv6") {
        let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / f64::from(1u32 << 20);
        out.push(chart::Panel {
            title: format!(
                "P6  memory of the real IPv6 list ({} entries)",
                p6["entries"]
            ),
            unit: "MiB",
            rows: vec![
                Bar::new(
                    "pool nodes in use x 80 B",
                    mib(&p6["pool_bytes_used"]),
                    true,
                ),
                Bar::new(
                    "kernel memory of the maps (status --json)",
                    mib(&p6["kernel_memory_bytes_status"]["total"]),
                    true,
                ),
                Bar::new(
                    "kernel memory of the pinned maps (bpftool memlock)",
                    mib(&p6["kernel_memory_bytes_bpftool"]["total"]),
                    false,
                ),
            ],
            mark: None,
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
