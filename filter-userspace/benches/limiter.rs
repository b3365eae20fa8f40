//! P4: floods through the limiter on the veth pair of benches/veth.rs, and the limiter's
//! accuracy.
//!
//! - Drop rate: a random-source flood (spoofed: the generator writes a fresh source address
//!   into every frame) and a one-source flood, through a policy with a per-source UDP limit
//!   and a global UDP threshold with known sources first. The receiver's rate for each is
//!   paired with a reference XDP_DROP flooded by the same generator in the same round, and
//!   random / one-source is taken per round.
//! - A legitimate client, seen in peacetime before the flood, sends a few thousand packets at
//!   a low rate from its own address during the random-source flood; its loss is counted by a
//!   socket in the receiving namespace.
//! - Accuracy: packets passed against the configured rate at 2x, 10x and 100x overload, one
//!   source through BPF_PROG_TEST_RUN (see [`accuracy`] for why).
//! - State over CPUs (issue 7): the product's per-source bucket shared by all CPUs and charged
//!   with compare-and-swap, against per-CPU buckets each holding 1/ncpu of the rate, both as
//!   bench programs in the same rounds: accuracy with the source's packets on all CPUs and on
//!   one CPU (one flow, one RSS queue), and ns per packet with two CPUs on the same source.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use filter_common::{Counter, Reason, REASON_SLOTS};
use serde_json::{json, Value};
use test_support::{BenchObject, TempFile};

use crate::stats::{self, Spread};
use crate::veth::{Generator, Layout, Receiver, VethBench, LEGIT4};

/// Per-source limit of the flood policy (pps, burst): far above the legitimate client's rate.
const PER_SOURCE_PPS: u64 = 5000;
const PER_SOURCE_BURST: u64 = 500;
/// The global UDP threshold for the interface (each CPU holds half).
const GLOBAL_PPS: u64 = 50_000;
/// The legitimate client's rate.
const LEGIT_PPS: u32 = 1000;

/// The strict per-source limit of the diagnostic row (the example policy's SYN limit): its
/// `track_after` is 25 packets per sketch epoch.
const STRICT_PPS: u64 = 200;
const STRICT_BURST: u64 = 50;

fn flood_policy() -> String {
    policy_with(PER_SOURCE_PPS, PER_SOURCE_BURST)
}

fn policy_with(pps: u64, burst: u64) -> String {
    format!(
        r#"[[limit]]
name = "udp-per-source"
class = "udp"
per = "source"
pps = {pps}
burst = {burst}

[[limit]]
name = "udp-global"
class = "udp"
per = "global"
pps = {GLOBAL_PPS}
known_sources_first = true
"#
    )
}

/// One configuration of a P4 round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    /// Reference XDP_DROP, each generator.
    Reference(Generator),
    /// floodgate with the flood policy: both floods, the legitimate client.
    Floodgate,
}

const CONFIGS: [Config; 3] = [
    Config::Reference(Generator::OneSource),
    Config::Reference(Generator::RandomSource),
    Config::Floodgate,
];

fn gen_label(g: Generator) -> &'static str {
    match g {
        Generator::OneSource => "one-source flood",
        Generator::RandomSource => "random-source flood",
    }
}

/// What one floodgate flood did, from its counters.
fn breakdown(
    before: &std::collections::HashMap<&str, u64>,
    after: &std::collections::HashMap<&str, u64>,
) -> Value {
    let mut out = serde_json::Map::new();
    let mut total = 0u64;
    for r in Reason::ALL {
        let n =
            after.get(r.name()).copied().unwrap_or(0) - before.get(r.name()).copied().unwrap_or(0);
        total += n;
        if n > 0 {
            out.insert(r.name().into(), json!(n));
        }
    }
    out.insert("judged".into(), json!(total));
    Value::Object(out)
}

fn share(v: &Value, reason: Reason) -> f64 {
    let judged = v["judged"].as_u64().unwrap_or(0).max(1) as f64;
    v[reason.name()].as_u64().unwrap_or(0) as f64 / judged
}

/// P4: the flood table and the accuracy table.
pub fn p4(
    b: &mut BenchObject,
    rounds: usize,
    quick: bool,
    goals: &mut serde_json::Map<String, Value>,
) -> Result<Value> {
    let mut out = serde_json::Map::new();
    out.insert("flood".into(), floods(b, rounds, quick, goals)?);
    out.insert("accuracy".into(), accuracy(rounds, quick)?);
    Ok(Value::Object(out))
}

pub fn floods(
    b: &mut BenchObject,
    rounds: usize,
    quick: bool,
    goals: &mut serde_json::Map<String, Value>,
) -> Result<Value> {
    let vb = VethBench::new(Vec::new())?;
    vb.enable_legit_client()?;
    let policy = TempFile::new("fgbench-p4-", flood_policy().as_bytes())?;
    let strict = TempFile::new(
        "fgbench-p4s-",
        policy_with(STRICT_PPS, STRICT_BURST).as_bytes(),
    )?;
    let mut strict_mpps: Vec<f64> = Vec::new();
    let mut strict_ns: Vec<f64> = Vec::new();
    let mut strict_buckets: Vec<f64> = Vec::new();
    let frame = vb.frame(false);
    let n: u32 = if quick { 2_000_000 } else { 8_000_000 };
    let legit_max: u32 = if quick { 1500 } else { 5000 };
    // Mpps the receiver handled, per configuration and flood.
    let mut mpps: BTreeMap<(Config, Generator), Vec<f64>> = BTreeMap::new();
    let mut bpf_ns: BTreeMap<Generator, Vec<f64>> = BTreeMap::new();
    let mut counters: BTreeMap<Generator, Vec<Value>> = BTreeMap::new();
    let mut buckets: Vec<f64> = Vec::new();
    let mut legit: Vec<crate::veth::LegitTally> = Vec::new();
    let mut timeline: Option<Value> = None;
    for round in 0..rounds {
        for i in 0..CONFIGS.len() {
            let c = CONFIGS[(i + round) % CONFIGS.len()];
            match c {
                Config::Reference(g) => {
                    let link = vb.setup(b, Receiver::DropAll)?;
                    let measured = (|| -> Result<f64> {
                        vb.flood_from(b, Layout::SplitCpus, g, &frame, n / 16)?;
                        let (handled, secs) = vb.flood_from(b, Layout::SplitCpus, g, &frame, n)?;
                        Ok(handled as f64 / secs / 1e6)
                    })();
                    let torn = vb.teardown(b, Receiver::DropAll, link);
                    mpps.entry((c, g))
                        .or_default()
                        .push(measured.context("reference drop flood")?);
                    torn?;
                }
                Config::Floodgate => {
                    vb.setup_policy(&policy.path)?;
                    let measured = (|| -> Result<()> {
                        // Peacetime: the client is seen below every limit and becomes known.
                        let ((), peace) = vb.with_legit_client(LEGIT_PPS, 100, || {
                            std::thread::sleep(Duration::from_millis(150));
                            Ok(())
                        })?;
                        if peace.received == 0 {
                            bail!("the legitimate client got nothing through in peacetime");
                        }
                        let g = Generator::RandomSource;
                        vb.flood_from(b, Layout::SplitCpus, g, &frame, n / 16)?;
                        let buckets_before = vb.source_buckets()?;
                        let before = vb.counters()?;
                        // The last round's flood, over time, for the flood chart.
                        let record = round + 1 == rounds;
                        let (((handled, secs), ticks), tally) =
                            vb.with_legit_client(LEGIT_PPS, legit_max, || {
                                let flood = || vb.flood_from(b, Layout::SplitCpus, g, &frame, n);
                                if record {
                                    let (out, ticks) = recorded(&vb, flood)?;
                                    Ok((out, Some(ticks)))
                                } else {
                                    Ok((flood()?, None))
                                }
                            })?;
                        if let Some(ticks) = ticks {
                            timeline = Some(flood_timeline(&ticks, &tally));
                        }
                        let after = vb.counters()?;
                        mpps.entry((c, g))
                            .or_default()
                            .push(handled as f64 / secs / 1e6);
                        counters
                            .entry(g)
                            .or_default()
                            .push(breakdown(&before, &after));
                        legit.push(tally);
                        buckets.push(vb.source_buckets()?.saturating_sub(buckets_before) as f64);

                        let g = Generator::OneSource;
                        vb.flood_from(b, Layout::SplitCpus, g, &frame, n / 16)?;
                        let before = vb.counters()?;
                        let (handled, secs) = vb.flood_from(b, Layout::SplitCpus, g, &frame, n)?;
                        let after = vb.counters()?;
                        mpps.entry((c, g))
                            .or_default()
                            .push(handled as f64 / secs / 1e6);
                        counters
                            .entry(g)
                            .or_default()
                            .push(breakdown(&before, &after));

                        // The program's own cost under each flood (kernel bpf_stats).
                        for g in [Generator::RandomSource, Generator::OneSource] {
                            let st = vb.flood_bpf_stats_from(b, g, &frame, n / 2)?;
                            bpf_ns.entry(g).or_default().push(st.ns_per_run);
                        }

                        // Diagnostic: the same random-source flood under a strict per-source
                        // limit, whose sketch threshold a fast flood reaches.
                        vb.apply(&strict.path)?;
                        let g = Generator::RandomSource;
                        vb.flood_from(b, Layout::SplitCpus, g, &frame, n / 16)?;
                        let before = vb.source_buckets()?;
                        let (handled, secs) = vb.flood_from(b, Layout::SplitCpus, g, &frame, n)?;
                        strict_buckets.push(vb.source_buckets()?.saturating_sub(before) as f64);
                        strict_mpps.push(handled as f64 / secs / 1e6);
                        let st = vb.flood_bpf_stats_from(b, g, &frame, n / 2)?;
                        strict_ns.push(st.ns_per_run);
                        Ok(())
                    })();
                    let torn = vb.teardown_policy();
                    measured.context("flooding floodgate")?;
                    torn?;
                }
            }
        }
        println!("  P4 round {}/{rounds} done", round + 1);
    }

    let fg = |g| &mpps[&(Config::Floodgate, g)];
    let reference = |g| &mpps[&(Config::Reference(g), g)];
    let (rnd, one) = (Generator::RandomSource, Generator::OneSource);
    let ratio = Spread::ratio(fg(rnd), fg(one));
    // The same with each flood first divided by the reference drop of its own generator.
    let normalized = Spread::ratio(
        &Spread::ratio(fg(rnd), reference(rnd)).samples,
        &Spread::ratio(fg(one), reference(one)).samples,
    );
    let bpf_ratio = Spread::ratio(&bpf_ns[&one], &bpf_ns[&rnd]);
    let loss = Spread::of(&legit.iter().map(|t| t.loss_percent()).collect::<Vec<_>>());
    let filter_loss = Spread::of(
        &legit
            .iter()
            .map(|t| t.filter_loss_percent())
            .collect::<Vec<_>>(),
    );
    println!(
        "\nP4  flood through the limiter, veth pair, split CPUs ({rounds} rounds of {n} frames each; per-source UDP limit {PER_SOURCE_PPS} pps, global UDP {GLOBAL_PPS} pps with known sources first; median (min-max))"
    );
    println!(
        "{:<24} {:>20} {:>22} {:>20} {:>20} {:>16} {:>16}",
        "flood",
        "floodgate Mpps",
        "reference drop Mpps",
        "vs reference",
        "bpf_stats ns/pkt",
        "rate-limited",
        "passed"
    );
    let mut rows = serde_json::Map::new();
    for g in [rnd, one] {
        let m = Spread::of(fg(g));
        let r = Spread::of(reference(g));
        let vs = Spread::ratio(fg(g), reference(g));
        let ns = Spread::of(&bpf_ns[&g]);
        let limited = Spread::of(
            &counters[&g]
                .iter()
                .map(|v| share(v, Reason::DroppedRateLimit))
                .collect::<Vec<_>>(),
        );
        let passed = Spread::of(
            &counters[&g]
                .iter()
                .map(|v| share(v, Reason::Passed))
                .collect::<Vec<_>>(),
        );
        println!(
            "{:<24} {:>20} {:>22} {:>20} {:>20} {:>16} {:>16}",
            gen_label(g),
            m.show(2),
            r.show(2),
            vs.show_ratio(),
            ns.show(1),
            format!("{:.2}%", 100.0 * limited.median),
            format!("{:.3}%", 100.0 * passed.median),
        );
        rows.insert(
            gen_label(g).into(),
            json!({"floodgate_mpps": m.json(), "reference_drop_mpps": r.json(),
                   "ratio_to_reference": vs.json(), "bpf_stats_ns_per_pkt": ns.json(),
                   "share_rate_limited": limited.json(), "share_passed": passed.json(),
                   "counters": counters[&g]}),
        );
    }
    println!(
        "{:<24} {:>20} {:>22} {:>20} {:>20}",
        "random / one-source",
        ratio.show_ratio(),
        "",
        normalized.show_ratio(),
        format!("one/random {}", bpf_ratio.show_ratio()),
    );
    let strict_row = (
        Spread::of(&strict_mpps),
        Spread::ratio(&strict_mpps, reference(rnd)),
        Spread::of(&strict_ns),
        Spread::of(&strict_buckets),
    );
    println!(
        "{:<24} {:>20} {:>22} {:>20} {:>20}",
        format!("random, {STRICT_PPS} pps/source"),
        strict_row.0.show(2),
        "",
        strict_row.1.show_ratio(),
        strict_row.2.show(1),
    );
    let sent: u64 = legit.iter().map(|t| t.sent).sum();
    let received: u64 = legit.iter().map(|t| t.received).sum();
    let rcvbuf: u64 = legit.iter().map(|t| t.rcvbuf_errors).sum();
    let ring: u64 = legit.iter().map(|t| t.ring_drops).sum();
    println!(
        "legitimate client {LEGIT4} at {LEGIT_PPS} pps during the random-source flood (median (min-max) over rounds):"
    );
    println!(
        "  lost after reaching floodgate: {}% of those that reached it",
        filter_loss.show(2)
    );
    println!(
        "  lost in all: {}% ({received} of {sent} arrived; {ring} refused by the receiver's ring, full of flood frames, before any program saw them; {rcvbuf} receive-buffer overflows)",
        loss.show(2)
    );
    let b = Spread::of(&buckets);
    println!(
        "per-source buckets the random-source flood created: {} with the {PER_SOURCE_PPS} pps limit, {} with the {STRICT_PPS} pps limit (of {} in the LRU table)",
        b.show(0),
        strict_row.3.show(0),
        filter_common::limits::SOURCE_BUCKETS
    );
    goals.insert(
        "P4 random-source / one-source flood, Mpps handled >= 0.8".into(),
        stats::verdict_at_least(&ratio, 0.8),
    );
    goals.insert(
        "P4 legitimate client's loss at floodgate, random-source flood < 1%".into(),
        stats::verdict_at_most(&filter_loss, 1.0),
    );
    rows.insert("random_to_one_source_mpps".into(), ratio.json());
    rows.insert(
        "random_to_one_source_each_vs_its_reference".into(),
        normalized.json(),
    );
    rows.insert(
        format!("random-source flood, strict per-source limit ({STRICT_PPS} pps, burst {STRICT_BURST})"),
        json!({"floodgate_mpps": strict_row.0.json(), "ratio_to_reference": strict_row.1.json(),
               "bpf_stats_ns_per_pkt": strict_row.2.json(), "source_buckets_created": strict_row.3.json(),
               "policy": policy_with(STRICT_PPS, STRICT_BURST)}),
    );
    rows.insert("one_to_random_bpf_ns".into(), bpf_ratio.json());
    rows.insert(
        "legit_client".into(),
        json!({"loss_at_floodgate_percent": filter_loss.json(), "loss_in_all_percent": loss.json(),
               "pps": LEGIT_PPS, "sent": sent, "received": received,
               "ring_drops": ring, "rcvbuf_errors": rcvbuf,
               "per_round": legit.iter().map(|t| json!({"sent": t.sent, "received": t.received,
                   "ring_drops": t.ring_drops, "rcvbuf_errors": t.rcvbuf_errors})).collect::<Vec<_>>()}),
    );
    rows.insert("source_buckets_created_by_random_flood".into(), b.json());
    if let Some(t) = timeline {
        rows.insert("timeline_random_source".into(), t);
    }
    rows.insert(
        "method".into(),
        json!({"frames_per_flood": n, "warm_up_frames": n / 16, "bpf_stats_frames": n / 2,
               "policy": flood_policy(),
               "generators": "bench_tx (one source) and bench_tx_random_source (a fresh random IPv4 source per frame) with BPF_F_TEST_XDP_LIVE_FRAMES on CPU 0; receive NAPI threaded on CPU 1",
               "reference": "bench_drop_all attached in place of floodgate, flooded by the same generator in the same round",
               "legit_client": "a UDP socket on 198.18.0.2 in the sending namespace, 100 packets in peacetime (it becomes a known source), then up to the given count at its rate while the measured random-source flood runs; received = distinct sequence numbers read by a socket in the receiving namespace"}),
    );
    Ok(Value::Object(rows))
}

/// Cumulative counts at one moment of a recorded flood (seconds from its start).
struct FloodTick {
    t: f64,
    at: Instant,
    /// Frames the generator handed to the sending veth: taken by the receiver's ring, and
    /// refused (ring full).
    accepted: u64,
    refused: u64,
    /// floodgate's verdicts on the receiving veth.
    passed: u64,
    dropped: u64,
}

/// How often a recorded flood is read.
const FLOOD_TICK: Duration = Duration::from_millis(100);

/// Run `flood` while a thread reads the sending veth's statistics and floodgate's counters
/// every [`FLOOD_TICK`] (one `ethtool -S` process each: a few ms of a CPU per tick).
fn recorded<T: Send>(
    vb: &VethBench,
    flood: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<FloodTick>)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    let began = Instant::now();
    let tick = || -> Result<FloodTick> {
        let sender = vb.sender_stats()?;
        let at = Instant::now();
        let c = vb.counters()?;
        let get = |k: &str| sender.get(k).copied().unwrap_or(0);
        let count = |pick: &dyn Fn(Reason) -> bool| -> u64 {
            Reason::ALL
                .iter()
                .filter(|&&r| pick(r))
                .map(|r| c.get(r.name()).copied().unwrap_or(0))
                .sum()
        };
        Ok(FloodTick {
            t: at.duration_since(began).as_secs_f64(),
            at,
            accepted: get("tx_queue_0_xdp_xmit"),
            refused: get("tx_queue_0_xdp_xmit_errors"),
            passed: count(&|r| r == Reason::Passed),
            dropped: count(&|r| r.is_drop()),
        })
    };
    std::thread::scope(|s| {
        let reader = s.spawn(|| -> Result<Vec<FloodTick>> {
            let mut ticks = Vec::new();
            let mut next = Duration::ZERO;
            // Bounded by the flood's end, and by a minute whatever happens.
            loop {
                ticks.push(tick()?);
                if done.load(Ordering::Relaxed) || began.elapsed() > Duration::from_secs(60) {
                    return Ok(ticks);
                }
                next += FLOOD_TICK;
                if let Some(wait) = next.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        });
        let out = flood();
        done.store(true, Ordering::Relaxed);
        let ticks = reader.join().expect("flood reader panicked");
        Ok((out?, ticks?))
    })
}

/// The recorded flood as JSON: cumulative counts at each tick, the legitimate client's
/// deliveries by then included.
fn flood_timeline(ticks: &[FloodTick], tally: &crate::veth::LegitTally) -> Value {
    let col = |f: &dyn Fn(&FloodTick) -> u64| ticks.iter().map(f).collect::<Vec<_>>();
    json!({"interval_s": FLOOD_TICK.as_secs_f64(),
           "what": "the last round's measured random-source flood: cumulative frames at each tick from its start; offered = taken + refused by the receiving veth's ring (the generator's frames), passed and dropped = floodgate's verdicts, legit_delivered = the legitimate client's packets its socket had received",
           "legit_pps": LEGIT_PPS, "global_udp_pps": GLOBAL_PPS, "per_source_pps": PER_SOURCE_PPS,
           "t_s": ticks.iter().map(|k| k.t).collect::<Vec<_>>(),
           "offered": col(&|k| k.accepted + k.refused),
           "accepted": col(&|k| k.accepted),
           "passed": col(&|k| k.passed),
           "dropped": col(&|k| k.dropped),
           "legit_delivered": col(&|k| tally.arrivals.iter().filter(|&&a| a <= k.at).count() as u64)})
}

/// The limiter and flood charts from P4's report (whichever of the two it holds).
pub fn charts(p4: &Value) -> Vec<(&'static str, String, Vec<crate::timeline::Plot>)> {
    use crate::timeline::{rates, Line, Plot, BLUE, GREEN, GREY, ORANGE, RED};
    let series = |v: &Value, key: &str| -> Vec<(f64, u64)> {
        let t = v["t_s"].as_array().cloned().unwrap_or_default();
        let c = v[key].as_array().cloned().unwrap_or_default();
        t.iter()
            .zip(&c)
            .filter_map(|(t, c)| Some((t.as_f64()?, c.as_u64()?)))
            .collect()
    };
    let end = |v: &Value| {
        v["t_s"]
            .as_array()
            .and_then(|t| t.last())
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let mut out = Vec::new();
    if let Some(v) = p4["accuracy"].get(format!("timeline_{TIMELINE_OVERLOAD}x")) {
        let configured = v["configured_pps"].as_f64().unwrap_or(f64::NAN);
        let warm_up = v["warm_up_s"].as_f64().unwrap_or(f64::NAN);
        out.push((
            "limiter.png",
            format!(
                "floodgate limiter: one source at {TIMELINE_OVERLOAD}x its per-source limit (BPF_PROG_TEST_RUN from 2 CPUs, paced)"
            ),
            vec![Plot {
                title: format!(
                    "passed against configured, per {} ms (burst {}; window after {warm_up} s)",
                    TICK.as_millis(),
                    v["burst"]
                ),
                unit: "packets per second".into(),
                lines: vec![
                    Line::new("offered", rates(&series(v, "offered"), 1.0), ORANGE),
                    Line::flat("configured", configured, 0.0, end(v), GREY),
                    Line::new("passed", rates(&series(v, "passed"), 1.0), BLUE),
                ],
            }],
        ));
    }
    if let Some(v) = p4["flood"].get("timeline_random_source") {
        let t1 = end(v);
        let mpps = 1e-6;
        out.push((
            "p4-flood.png",
            "floodgate P4: random-source (spoofed) flood through the limiter on a veth pair, with a legitimate client".into(),
            vec![
                Plot {
                    title: format!(
                        "frames per {} ms: offered by the generator, dropped by floodgate",
                        FLOOD_TICK.as_millis()
                    ),
                    unit: "Mpps".into(),
                    lines: vec![
                        Line::new("offered", rates(&series(v, "offered"), mpps), ORANGE),
                        Line::new(
                            "taken by the receiver's ring",
                            rates(&series(v, "accepted"), mpps),
                            GREY,
                        ),
                        Line::new("dropped", rates(&series(v, "dropped"), mpps), RED),
                    ],
                },
                Plot {
                    title: format!(
                        "passed (per-source {} pps, global UDP {} pps, known sources first)",
                        v["per_source_pps"], v["global_udp_pps"]
                    ),
                    unit: "packets per second".into(),
                    lines: vec![
                        Line::flat(
                            "global UDP threshold",
                            v["global_udp_pps"].as_f64().unwrap_or(f64::NAN),
                            0.0,
                            t1,
                            GREY,
                        ),
                        Line::new("passed", rates(&series(v, "passed"), 1.0), BLUE),
                    ],
                },
                Plot {
                    title: "the legitimate client (a known source) during the flood: what it lost, the receiving veth ring refused before any program saw it".into(),
                    unit: "packets per second".into(),
                    lines: vec![
                        Line::flat(
                            "sent",
                            v["legit_pps"].as_f64().unwrap_or(f64::NAN),
                            0.0,
                            t1,
                            GREY,
                        ),
                        Line::new(
                            "delivered",
                            rates(&series(v, "legit_delivered"), 1.0),
                            GREEN,
                        ),
                    ],
                },
            ],
        ));
    }
    out
}

/// The product's per-reason counters in slot 0 (test runs), summed over CPUs.
fn totals(h: &test_support::Harness, cpus: usize) -> Result<[u64; REASON_SLOTS as usize]> {
    let sums = floodgate::state::raw::percpu_array_sums::<Counter>(
        &floodgate::state::maps::counters_raw(h.pins())?,
        REASON_SLOTS,
        cpus,
        |a, b| a.packets += b.packets,
    )?;
    let mut out = [0u64; REASON_SLOTS as usize];
    for (o, c) in out.iter_mut().zip(sums) {
        *o = c.packets;
    }
    Ok(out)
}

/// Configured rate of the accuracy runs, and their overloads.
const ACCURACY_PPS: u64 = 20_000;
const OVERLOADS: [u64; 3] = [2, 10, 100];

/// Limiter accuracy through BPF_PROG_TEST_RUN rather than the veth pair: the number of
/// packets offered is then exact (every run is judged; a veth drops frames at its ring before
/// any program sees them, more the faster the flood), the rate is set by the bench instead of
/// by how fast the generator happens to run, and the counters say exactly what passed. The
/// program reads `bpf_ktime_get_coarse_ns` in a test run as on a NIC. One source offers
/// `overload` times a per-source limit of 20,000 pps (default burst, 2,000) from two threads,
/// one per CPU, so the bucket is shared through compare-and-swap as under RSS. Each thread
/// runs batches every millisecond to keep to its share of the rate; the time is read from
/// CLOCK_MONOTONIC_COARSE, the program's clock. After a warm-up (the source gets its bucket
/// and uses up its burst), passed / (configured rate x measured time) over the window.
pub fn accuracy(rounds: usize, quick: bool) -> Result<Value> {
    let h = test_support::Harness::new()?;
    let policy = TempFile::new(
        "fgbench-acc-",
        format!(
            "[[limit]]\nname = \"udp-per-source\"\nclass = \"udp\"\nper = \"source\"\npps = {ACCURACY_PPS}\n"
        )
        .as_bytes(),
    )?;
    floodgate::policy::apply::apply(h.pins(), &policy.path, false, true)?;
    // Attached to an interface, the program stays in the kernel's XDP dispatcher; otherwise
    // every test run adds it and takes it out again, each an RCU grace period (~30 ms here).
    // The bench's own veth pair, in its own namespaces; no traffic crosses it.
    let net = test_support::VethPair::new()?;
    let root = h.pins().root().to_string_lossy().into_owned();
    net.a.exec(&[
        env!("CARGO_BIN_EXE_floodgate"),
        "--pin-dir",
        &root,
        "attach",
        "--mode",
        "native",
        &net.a_if,
    ])?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let all_cpus: Vec<usize> = (0..cpus).collect();
    let mut variants = Variants::new(&h, cpus as u32)?;
    let window = if quick { 1.0 } else { 3.0 };
    let warm_up = 0.5;
    let mut ratios: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut offered_rates: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut source = 0u32;
    let mut state_acc: BTreeMap<(u64, Arrival, State), Vec<f64>> = BTreeMap::new();
    let mut state_ns: BTreeMap<(bool, usize, State), Vec<f64>> = BTreeMap::new();
    let mut timeline: Vec<Tick> = Vec::new();
    let cost_runs: u32 = if quick { 200_000 } else { 1_000_000 };
    for round in 0..rounds {
        for i in 0..OVERLOADS.len() {
            let overload = OVERLOADS[(i + round) % OVERLOADS.len()];
            // A fresh source each time: a bucket of its own, no state from the last run.
            source += 1;
            let frame = test_support::udp_frame_from(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 72, 0, 0)) + source).into(),
            );
            let rate = (ACCURACY_PPS * overload) as f64;
            // The first round's 10x run, over time, for the limiter chart.
            let record = (round == 0 && overload == TIMELINE_OVERLOAD).then_some(&mut timeline);
            let (passed, offered, secs) = offer(
                &h,
                cpus,
                &all_cpus,
                &|f: &[u8], n| h.run(f, n).map(drop),
                &frame,
                rate,
                (warm_up, window),
                record,
            )?;
            ratios
                .entry(overload)
                .or_default()
                .push(passed as f64 / (ACCURACY_PPS as f64 * secs));
            offered_rates
                .entry(overload)
                .or_default()
                .push(offered as f64 / secs / rate);
        }
        // The two ways of holding the limit over CPUs, in the same round: accuracy, then
        // cost. The order of state, arrival and overload turns with the round.
        variants.set(ACCURACY_PPS, ACCURACY_PPS / 10)?;
        let states = [State::Shared, State::PerCpu];
        let arrivals = [Arrival::AllCpus, Arrival::OneCpu];
        for k in 0..states.len() * arrivals.len() * OVERLOADS.len() {
            let k = (k + round) % (states.len() * arrivals.len() * OVERLOADS.len());
            let state = states[k % 2];
            let arrival = arrivals[(k / 2) % 2];
            let overload = OVERLOADS[k / 4];
            source += 1;
            let frame = test_support::udp_frame_from(
                Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 72, 0, 0)) + source).into(),
            );
            let rate = (ACCURACY_PPS * overload) as f64;
            let on: &[usize] = match arrival {
                Arrival::AllCpus => &all_cpus,
                Arrival::OneCpu => &all_cpus[..1],
            };
            let prog = variants.prog(state)?;
            let (passed, _, secs) = offer(
                &h,
                cpus,
                on,
                &|f: &[u8], n| test_support::run_frame(prog, f, n).map(drop),
                &frame,
                rate,
                (warm_up, window),
                None,
            )?;
            state_acc
                .entry((overload, arrival, state))
                .or_default()
                .push(passed as f64 / (ACCURACY_PPS as f64 * secs));
        }
        // All CPUs on the source at once, and one CPU alone for reference.
        for (charged, pps) in [(true, CHARGED_PPS), (false, ACCURACY_PPS)] {
            variants.set(pps, pps / 10)?;
            for on in [&all_cpus[..], &all_cpus[..1]] {
                for i in 0..states.len() {
                    let state = states[(i + round) % states.len()];
                    source += 1;
                    let frame = test_support::udp_frame_from(
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 73, 0, 0)) + source).into(),
                    );
                    let ns = contended_ns(variants.prog(state)?, on, &frame, cost_runs)?;
                    state_ns
                        .entry((charged, on.len(), state))
                        .or_default()
                        .push(ns);
                }
            }
        }
        println!("  P4 accuracy round {}/{rounds} done", round + 1);
    }
    println!(
        "\nP4  limiter accuracy: one source at 2x, 10x and 100x a per-source limit of {ACCURACY_PPS} pps (BPF_PROG_TEST_RUN from 2 CPUs, paced; {rounds} rounds, {window} s windows after {warm_up} s)"
    );
    println!(
        "{:<14} {:>16} {:>26} {:>26}",
        "overload", "offered pps", "offered / intended", "passed / configured"
    );
    let mut out = serde_json::Map::new();
    for (overload, r) in &ratios {
        let s = Spread::of(r);
        let o = Spread::of(&offered_rates[overload]);
        println!(
            "{:<14} {:>16} {:>26} {:>26}",
            format!("{overload}x"),
            ACCURACY_PPS * overload,
            o.show_ratio_prec(3),
            s.show_ratio_prec(3)
        );
        out.insert(
            format!("{overload}x"),
            json!({"passed_to_configured": s.json(), "offered_to_intended": o.json()}),
        );
    }
    out.insert(
        format!("timeline_{TIMELINE_OVERLOAD}x"),
        json!({"configured_pps": ACCURACY_PPS, "offered_pps": ACCURACY_PPS * TIMELINE_OVERLOAD,
               "burst": ACCURACY_PPS / 10, "warm_up_s": warm_up, "interval_s": TICK.as_secs_f64(),
               "what": "the first round's run: cumulative packets offered, passed and rate-limited, read every interval from the start of the warm-up",
               "t_s": timeline.iter().map(|t| t.t).collect::<Vec<_>>(),
               "offered": timeline.iter().map(|t| t.offered).collect::<Vec<_>>(),
               "passed": timeline.iter().map(|t| t.passed).collect::<Vec<_>>(),
               "rate_limited": timeline.iter().map(|t| t.limited).collect::<Vec<_>>()}),
    );
    out.insert(
        "state_over_cpus".into(),
        state_table(&state_acc, &state_ns, rounds, window, cpus, cost_runs),
    );
    out.insert(
        "method".into(),
        json!({"configured_pps": ACCURACY_PPS, "burst": ACCURACY_PPS / 10, "window_s": window,
               "warm_up_s": warm_up, "threads": 2,
               "why_test_run": "the offered count is exact (a veth drops frames at its ring before the program sees them), the rate is the bench's, and the counters give exactly what passed; bpf_ktime_get_coarse_ns behaves as on a NIC",
               "clock": "CLOCK_MONOTONIC_COARSE (the program's bpf_ktime_get_coarse_ns), 4 ms tick at HZ=250"}),
    );
    Ok(Value::Object(out))
}

/// Test runs of `repeat` copies of a frame through the program under measurement.
type Run<'a> = &'a (dyn Fn(&[u8], u32) -> Result<()> + Sync);

/// The overload whose run is recorded over time, and how often.
const TIMELINE_OVERLOAD: u64 = 10;
const TICK: Duration = Duration::from_millis(100);

/// Cumulative packets at one moment of an accuracy run (seconds from its start).
struct Tick {
    t: f64,
    offered: u64,
    passed: u64,
    limited: u64,
}

/// Offer `frame` at `rate` pps through `run`, from one thread on each CPU of `on`, for
/// `warm_up` + `window` seconds (`phases`); returns (packets passed, packets offered, seconds)
/// over the window, from the product's counters (which the bench programs share). With
/// `timeline`, also the cumulative counts every [`TICK`] from the start of the warm-up.
#[expect(
    clippy::too_many_arguments,
    reason = "one paced run: each argument is one of its knobs"
)]
fn offer(
    h: &test_support::Harness,
    cpus: usize,
    on: &[usize],
    run: Run<'_>,
    frame: &[u8],
    rate: f64,
    (warm_up, window): (f64, f64),
    mut timeline: Option<&mut Vec<Tick>>,
) -> Result<(u64, u64, f64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;
    let now = floodgate::state::bans::now_ns;
    let threads = on.len();
    let per_thread = rate / threads as f64;
    let offered = AtomicU64::new(0);
    // Every packet offered, warm-up included (for the timeline).
    let offered_all = AtomicU64::new(0);
    // Main thread + workers meet at the window's start and end.
    let start = Barrier::new(threads + 1);
    let mark = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    let total = Duration::from_secs_f64(warm_up + window);
    std::thread::scope(|s| -> Result<(u64, u64, f64)> {
        let mut workers = Vec::new();
        for &cpu in on {
            let (offered, offered_all) = (&offered, &offered_all);
            let (start, mark, end) = (&start, &mark, &end);
            workers.push(s.spawn(move || -> Result<()> {
                test_support::pin_thread_to_cpu(cpu)?;
                start.wait();
                let began = Instant::now();
                let mut sent = 0f64;
                let mut marked = false;
                let mut result = Ok(());
                while began.elapsed() < total {
                    let t = began.elapsed().as_secs_f64();
                    if !marked && t >= warm_up {
                        mark.wait();
                        marked = true;
                    }
                    // Catch up to the schedule, at most 10 ms of it at once.
                    let due = (per_thread * t - sent).min(per_thread / 100.0);
                    if due >= 1.0 {
                        let n = due as u32;
                        if let Err(e) = run(frame, n) {
                            result = Err(e);
                            break;
                        }
                        sent += f64::from(n);
                        offered_all.fetch_add(u64::from(n), Ordering::Relaxed);
                        if marked {
                            offered.fetch_add(u64::from(n), Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                if !marked {
                    mark.wait();
                }
                end.wait();
                result
            }));
        }
        start.wait();
        let began = Instant::now();
        let tick = || -> Result<Tick> {
            let c = totals(h, cpus)?;
            Ok(Tick {
                t: began.elapsed().as_secs_f64(),
                offered: offered_all.load(Ordering::Relaxed),
                passed: c[Reason::Passed as usize],
                limited: c[Reason::DroppedRateLimit as usize],
            })
        };
        // Ticks up to the window's start (the workers wait at `mark` for this thread), then
        // through the window until the last tick before its end.
        let mut next = Duration::ZERO;
        let mut tick_until = |limit: f64, timeline: &mut Option<&mut Vec<Tick>>| -> Result<()> {
            let Some(series) = timeline else {
                return Ok(());
            };
            while next.as_secs_f64() + 0.02 < limit {
                if let Some(wait) = next.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
                series.push(tick()?);
                next += TICK;
            }
            Ok(())
        };
        tick_until(warm_up, &mut timeline)?;
        mark.wait();
        let (t0, before) = (now(), totals(h, cpus)?);
        tick_until(warm_up + window, &mut timeline)?;
        end.wait();
        let (t1, after) = (now(), totals(h, cpus)?);
        if let Some(series) = &mut timeline {
            series.push(tick()?);
        }
        for w in workers {
            w.join().expect("offering thread panicked")?;
        }
        let passed = after[Reason::Passed as usize] - before[Reason::Passed as usize];
        let dropped =
            after[Reason::DroppedRateLimit as usize] - before[Reason::DroppedRateLimit as usize];
        let judged = passed + dropped;
        let offered = offered.load(Ordering::Relaxed);
        if judged.abs_diff(offered) > offered / 100 + 1000 {
            bail!("offered {offered} packets in the window but the program judged {judged}");
        }
        Ok((passed, offered, (t1 - t0) as f64 / 1e9))
    })
}

/// The limit of the cost rows where every packet conforms and is charged: far above what two
/// CPUs of test runs offer, so every packet moves the bucket (for the shared bucket, a
/// compare-and-swap on a cache line both CPUs write).
const CHARGED_PPS: u64 = 1_000_000_000;

/// How a per-source limit is held over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// One bucket for all CPUs, compare-and-swap (the product's choice).
    Shared,
    /// One bucket per CPU, each with 1/ncpu of the rate and burst.
    PerCpu,
}

impl State {
    fn program(self) -> &'static str {
        match self {
            State::Shared => "bench_limit_shared",
            State::PerCpu => "bench_limit_percpu",
        }
    }

    fn key(self) -> &'static str {
        match self {
            State::Shared => "shared_cas",
            State::PerCpu => "per_cpu_split",
        }
    }
}

/// Which CPUs the source's packets arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Arrival {
    /// Spread evenly over every CPU (many flows, RSS spreads them).
    AllCpus,
    /// One CPU only (one flow hashes to one queue).
    OneCpu,
}

impl Arrival {
    fn key(self) -> &'static str {
        match self {
            Arrival::AllCpus => "all_cpus",
            Arrival::OneCpu => "one_cpu",
        }
    }
}

/// The bench object's two per-source limiter programs, sharing the harness's pinned maps
/// (they count into its counters), each attached to an interface of a veth pair of their own
/// so that a test run does not add them to the kernel's XDP dispatcher and take them out
/// again (an RCU grace period each). No traffic crosses that pair.
struct Variants {
    ebpf: aya::Ebpf,
    cpus: u32,
    // Declared last: dropped after the programs' links.
    _net: test_support::VethPair,
}

impl Variants {
    fn new(h: &test_support::Harness, cpus: u32) -> Result<Self> {
        let net = test_support::VethPair::new()?;
        let mut ebpf = aya::EbpfLoader::new()
            .default_map_pin_directory(h.pins().maps_dir())
            .load(test_support::BENCH_OBJECT)?;
        for (state, ns, ifname) in [
            (State::Shared, &net.a, &net.a_if),
            (State::PerCpu, &net.b, &net.b_if),
        ] {
            let name = state.program();
            let prog: &mut aya::programs::Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            attach_in(ns, prog, ifname).with_context(|| format!("attaching {name}"))?;
        }
        Ok(Self {
            ebpf,
            cpus,
            _net: net,
        })
    }

    /// Configure both programs for a per-source limit of `pps` and `burst`: the shared
    /// bucket as the product's per-source limits hold it, the per-CPU buckets as its global
    /// limits do (rate and burst divided by the CPUs). Fresh buckets follow (new sources).
    fn set(&mut self, pps: u64, burst: u64) -> Result<()> {
        use filter_common::limits::{CLASS_UDP, PER_GLOBAL, PER_SOURCE};
        use floodgate::policy::limits::conf;
        let limit = |per| floodgate::policy::Limit {
            name: "bench-per-source".into(),
            class: CLASS_UDP,
            per,
            pps: Some(pps),
            bps: None,
            burst,
            prefix_v4: 32,
            prefix_v6: 64,
            ban_seconds: None,
            mode: Default::default(),
            known_sources_first: false,
        };
        let mut confs: aya::maps::Array<_, filter_common::limits::LimitConf> =
            aya::maps::Array::try_from(self.ebpf.map_mut("BENCH_LIMIT").context("BENCH_LIMIT")?)?;
        confs.set(0, conf(&limit(PER_SOURCE), 0, self.cpus), 0)?;
        confs.set(1, conf(&limit(PER_GLOBAL), 0, self.cpus), 0)?;
        Ok(())
    }

    fn prog(&self, state: State) -> Result<&aya::programs::Xdp> {
        let name = state.program();
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }
}

/// Attach `prog` (native mode) to `ifname` in namespace `ns`, from a thread that entered it.
fn attach_in(ns: &test_support::Netns, prog: &mut aya::programs::Xdp, ifname: &str) -> Result<()> {
    let path = ns.path();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            use std::os::fd::AsRawFd;
            let file =
                std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
            // SAFETY: setns on an fd we own, affecting only this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            prog.attach(ifname, aya::programs::XdpMode::Driver)?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attaching thread panicked"))?
    })
}

/// Mean ns per packet of `prog` with one thread on each CPU of `on` running `repeat` copies
/// of `frame` (one source) at once: the kernel's test-run mean of each thread, averaged.
fn contended_ns(prog: &aya::programs::Xdp, on: &[usize], frame: &[u8], repeat: u32) -> Result<f64> {
    use std::sync::Barrier;
    // The source's bucket exists before the measured runs.
    test_support::run_frame(prog, frame, 1000)?;
    let start = Barrier::new(on.len());
    std::thread::scope(|s| -> Result<f64> {
        let workers: Vec<_> = on
            .iter()
            .map(|&cpu| {
                let start = &start;
                s.spawn(move || -> Result<f64> {
                    test_support::pin_thread_to_cpu(cpu)?;
                    start.wait();
                    Ok(test_support::run_frame(prog, frame, repeat)?.1)
                })
            })
            .collect();
        let mut sum = 0.0;
        for w in workers {
            sum += w.join().expect("test-run thread panicked")?;
        }
        Ok(sum / on.len() as f64)
    })
}

/// The shared-against-per-CPU table: printed, and its JSON.
fn state_table(
    acc: &BTreeMap<(u64, Arrival, State), Vec<f64>>,
    ns: &BTreeMap<(bool, usize, State), Vec<f64>>,
    rounds: usize,
    window: f64,
    cpus: usize,
    cost_runs: u32,
) -> Value {
    let (sh, pc) = (State::Shared, State::PerCpu);
    println!(
        "\nP4  per-source limit state over CPUs: one bucket shared by all CPUs, compare-and-swap (product), against one bucket per CPU with 1/{cpus} of the rate and burst each (bench programs bench_limit_shared / bench_limit_percpu; limit {ACCURACY_PPS} pps, burst {}; {rounds} rounds, {window} s windows; median (min-max); ratios per round)",
        ACCURACY_PPS / 10
    );
    println!(
        "{:<10} {:<12} {:>24} {:>24} {:>24}",
        "overload", "arrives on", "shared CAS", "per-CPU split", "per-CPU / shared"
    );
    let mut accuracy = serde_json::Map::new();
    for overload in OVERLOADS {
        let mut row = serde_json::Map::new();
        for arrival in [Arrival::AllCpus, Arrival::OneCpu] {
            let (Some(a), Some(b)) = (
                acc.get(&(overload, arrival, sh)),
                acc.get(&(overload, arrival, pc)),
            ) else {
                continue;
            };
            let (s, p, r) = (Spread::of(a), Spread::of(b), Spread::ratio(b, a));
            println!(
                "{:<10} {:<12} {:>24} {:>24} {:>24}",
                format!("{overload}x"),
                match arrival {
                    Arrival::AllCpus => format!("all {cpus} CPUs"),
                    Arrival::OneCpu => "one CPU".into(),
                },
                s.show_ratio_prec(3),
                p.show_ratio_prec(3),
                r.show_ratio_prec(3)
            );
            row.insert(
                arrival.key().into(),
                json!({sh.key(): {"passed_to_configured": s.json()},
                       pc.key(): {"passed_to_configured": p.json()},
                       "per_cpu_to_shared": r.json()}),
            );
        }
        accuracy.insert(format!("{overload}x"), Value::Object(row));
    }
    println!(
        "ns per packet, one source (BPF_PROG_TEST_RUN, {cost_runs} runs per CPU; with all CPUs at once, the mean of the CPUs):"
    );
    let mut cost = serde_json::Map::new();
    for (charged, label, key) in [
        (
            true,
            "under its limit (every packet charged)",
            "every_packet_charged",
        ),
        (false, "over its limit (20,000 pps)", "over_limit"),
    ] {
        let mut row = serde_json::Map::new();
        for (threads, on, on_key) in [
            (cpus, format!("{cpus} CPUs at once"), "all_cpus_at_once"),
            (1, "one CPU alone".into(), "one_cpu_alone"),
        ] {
            let (Some(a), Some(b)) = (
                ns.get(&(charged, threads, sh)),
                ns.get(&(charged, threads, pc)),
            ) else {
                continue;
            };
            let (s, p, r) = (Spread::of(a), Spread::of(b), Spread::ratio(b, a));
            println!(
                "{:<40} {:<16} {:>22} {:>22} {:>20}",
                label,
                on,
                format!("shared {}", s.show(1)),
                format!("per-CPU {}", p.show(1)),
                r.show_ratio()
            );
            row.insert(
                on_key.into(),
                json!({sh.key(): s.json(), pc.key(): p.json(), "per_cpu_to_shared": r.json()}),
            );
        }
        cost.insert(key.into(), Value::Object(row));
    }
    json!({"accuracy": accuracy, "ns_per_pkt_contended": cost,
           "method": {"limit_pps": ACCURACY_PPS, "burst": ACCURACY_PPS / 10, "cpus": cpus,
                      "shared_cas": "bench_limit_shared: the source's bucket in an LRU hash shared by all CPUs, charged with the product's compare-and-swap GCRA (limit as the product holds a per-source limit)",
                      "per_cpu_split": "bench_limit_percpu: the source's bucket in an LRU per-CPU hash, plain GCRA, each CPU with 1/ncpu of the rate and burst (as the product holds a global limit)",
                      "arrival": "all_cpus: one paced thread per CPU, each offering 1/ncpu of the load; one_cpu: one paced thread on CPU 0 offering all of it",
                      "cost": format!("every CPU (or CPU 0 alone) runs {cost_runs} test runs of the same one-source frame at once; the kernel's mean per run, averaged over the CPUs; every_packet_charged at a limit of {CHARGED_PPS} pps, over_limit at {ACCURACY_PPS} pps"),
                      "neither_variant_has": "the product's lists, rules, sketch or counters per limit: the two differ only in how the bucket is held"}})
}
