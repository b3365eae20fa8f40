//! P1 sampling rows: the data-path cost of sampled drop events on a blocklisted frame through
//! the product program (BPF_PROG_TEST_RUN), with sampling off, 1 in 1000 and 1 in 1.
//!
//! Sampling only happens while a reader holds a slot, so the bench claims one (as `capture`
//! does, through `observe::samples`) and a thread on the other CPU drains its ring while the
//! rows run: a ring left full would make every record fail at reserve, a cheaper path than
//! the one an operator's reader sees. The setting changes through `samples::configure`, as
//! `floodgate sampling` changes it. 1 in 1 runs at the default cap (what an operator gets in a
//! flood: nearly every packet is turned away by the cap) and at the cap's maximum; a test run
//! is far faster than that cap too, so one more row runs 1 in 1 in short runs of 1000 packets
//! that the maximum cap's burst and the ring both hold whole: every packet writes a record,
//! the worst case. Each row is paired with sampling off in the same round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use filter_common::sample::{cpu_cap, DEFAULT_CAP, MAX_CPU_CAP};
use filter_common::Reason;
use floodgate::observe::samples::{self, Reader};
use floodgate::state::PinDir;
use serde_json::{json, Value};
use test_support::{BenchObject, XDP_DROP};

use crate::stats::Spread;

/// Packets per run of the every-packet-recorded rows: 1000 records of 208 ring bytes fit the
/// 256 KiB ring, and ten runs fit the maximum cap's burst of one second.
const SHORT_RUN: u32 = 1000;
const SHORT_RUNS: u32 = 10;

/// One sampling setting under measurement.
#[derive(Clone, Copy)]
struct Setting {
    label: &'static str,
    /// 1 in `every` (0: off).
    every: u32,
    /// Records per second over all CPUs.
    cap: u32,
    /// Short runs (every packet recorded) rather than one run of the round's repeat.
    short: bool,
}

const OFF: &str = "off";
const OFF_SHORT: &str = "off, runs of 1000";

const SETTINGS: [Setting; 6] = [
    Setting {
        label: OFF,
        every: 0,
        cap: DEFAULT_CAP,
        short: false,
    },
    Setting {
        label: "1 in 1000, default cap (1000/s)",
        every: 1000,
        cap: DEFAULT_CAP,
        short: false,
    },
    Setting {
        label: "1 in 1, default cap (1000/s)",
        every: 1,
        cap: DEFAULT_CAP,
        short: false,
    },
    Setting {
        label: "1 in 1, cap at maximum",
        every: 1,
        cap: CAP_AT_MAXIMUM,
        short: false,
    },
    Setting {
        label: OFF_SHORT,
        every: 0,
        cap: CAP_AT_MAXIMUM,
        short: true,
    },
    Setting {
        label: "1 in 1, every packet recorded (cap at maximum, runs of 1000)",
        every: 1,
        cap: CAP_AT_MAXIMUM,
        short: true,
    },
];

/// A setting's cap: the most the program counts (its 16-bit per-CPU cap on every online CPU).
const CAP_AT_MAXIMUM: u32 = u32::MAX;

fn cap_of(cap: u32) -> Result<u32> {
    if cap != CAP_AT_MAXIMUM {
        return Ok(cap);
    }
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?.len() as u32;
    Ok(filter_common::sample::MAX_CPU_CAP * cpus.max(1))
}

/// The reader's drain thread: records read so far, and the flag that ends it.
struct Drain {
    read: AtomicU64,
    stop: AtomicBool,
}

impl Drain {
    /// Hold a reader slot for blocklist drops and drain its ring on CPU 0 until `stop`.
    fn run(&self, pins: &PinDir, ready: std::sync::mpsc::Sender<()>) -> Result<()> {
        test_support::pin_thread_to_cpu(0)?;
        let reasons = 1 << Reason::DroppedBlocklist as u32;
        let mut reader = Reader::claim(pins, reasons, false)?;
        let _ = ready.send(());
        let mut renewed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let mut n = 0;
            while let Some(item) = reader.ring().next() {
                if item.len() == std::mem::size_of::<filter_common::sample::SampleRecord>() {
                    n += 1;
                }
            }
            if n > 0 {
                self.read.fetch_add(n, Ordering::Relaxed);
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
            if renewed.elapsed() > Duration::from_secs(1) {
                reader.renew()?;
                renewed = Instant::now();
            }
        }
        reader.release()
    }

    /// Records read once the ring has been quiet for a few milliseconds.
    fn settled(&self) -> u64 {
        let mut last = self.read.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(Duration::from_millis(3));
            let now = self.read.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// Per setting, over rounds: ns per packet, packets run and records read.
#[derive(Default, Clone)]
struct Tally {
    ns: Vec<f64>,
    packets: Vec<u64>,
    records: Vec<u64>,
}

/// The sampling rows on `frame` (a blocklisted source): printed, and their JSON.
pub fn rows(b: &BenchObject, rounds: usize, repeat: u32, frame: &[u8]) -> Result<Value> {
    let pins = &b.dir.pins;
    let drain = Drain {
        read: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let mut tallies: Vec<Tally> = vec![Tally::default(); SETTINGS.len()];
    std::thread::scope(|s| -> Result<()> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = s.spawn(|| drain.run(pins, ready_tx));
        let measured = (|| -> Result<()> {
            if ready_rx.recv().is_err() {
                bail!("the sample reader did not start");
            }
            for round in 0..rounds {
                for i in 0..SETTINGS.len() {
                    let k = (i + round) % SETTINGS.len();
                    let st = SETTINGS[k];
                    samples::configure(pins, Some(st.every), Some(cap_of(st.cap)?))?;
                    let before = drain.settled();
                    let (ns, packets) = if st.short {
                        // The maximum cap's bucket refills its burst (of a second) meanwhile.
                        std::thread::sleep(Duration::from_millis(250));
                        let mut sum = 0.0;
                        for _ in 0..SHORT_RUNS {
                            sum += run(b, frame, SHORT_RUN)?;
                        }
                        (
                            sum / f64::from(SHORT_RUNS),
                            u64::from(SHORT_RUN * SHORT_RUNS),
                        )
                    } else {
                        (run(b, frame, repeat)?, u64::from(repeat))
                    };
                    let records = drain.settled() - before;
                    let t = &mut tallies[k];
                    t.ns.push(ns);
                    t.packets.push(packets);
                    t.records.push(records);
                }
            }
            samples::configure(pins, Some(0), Some(DEFAULT_CAP))?;
            Ok(())
        })();
        drain.stop.store(true, Ordering::Relaxed);
        let released = reader.join().expect("sample reader panicked");
        measured?;
        released.context("the sample reader")
    })?;
    let off = |short: bool| {
        let label = if short { OFF_SHORT } else { OFF };
        let k = SETTINGS.iter().position(|s| s.label == label).unwrap();
        tallies[k].ns.clone()
    };
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?.len() as u32;
    println!(
        "\nP1  sampled drop events: blocklisted IPv4 frame through floodgate, a reader holding a slot and draining its ring on the other CPU ({rounds} rounds; {repeat} runs, or {SHORT_RUNS} x {SHORT_RUN}; median (min-max); against sampling off in the same round)"
    );
    println!(
        "{:<62} {:>20} {:>20} {:>20} {:>26}",
        "sampling", "ns/pkt", "vs off", "ns over off", "records read / candidates"
    );
    let mut out = serde_json::Map::new();
    for (st, t) in SETTINGS.iter().zip(&tallies) {
        let reference = off(st.short);
        let ns = Spread::of(&t.ns);
        let ratio = Spread::ratio(&t.ns, &reference);
        let delta = Spread::paired(&t.ns, &reference, |x, o| x - o);
        let candidates: Vec<u64> = t
            .packets
            .iter()
            .map(|&p| {
                if st.every == 0 {
                    0
                } else {
                    p / u64::from(st.every)
                }
            })
            .collect();
        let read: u64 = t.records.iter().sum();
        let offered: u64 = candidates.iter().sum();
        println!(
            "{:<62} {:>20} {:>20} {:>20} {:>26}",
            st.label,
            ns.show(1),
            ratio.show_ratio(),
            delta.show(1),
            format!("{read} / {offered}"),
        );
        let per_cpu_cap = cpu_cap(st.cap, cpus);
        out.insert(
            st.label.into(),
            json!({"every": st.every, "cap_per_second": u64::from(per_cpu_cap) * u64::from(cpus),
                   "cap_per_cpu_per_second": per_cpu_cap,
                   "ns": ns.json(), "ratio_to_off": ratio.json(), "ns_over_off": delta.json(),
                   "packets_per_round": t.packets, "candidates_per_round": candidates,
                   "records_read_per_round": t.records,
                   "not_recorded_per_round": candidates.iter().zip(&t.records)
                       .map(|(c, r)| c.saturating_sub(*r)).collect::<Vec<_>>()}),
        );
    }
    println!(
        "  candidates: packets / every; those not read were turned away by the per-CPU cap (cap_per_cpu_per_second: the cap over {cpus} CPUs; the maximum is {MAX_CPU_CAP}/s per CPU) or, if the reader fell behind, by a full ring"
    );
    out.insert(
        "method".into(),
        json!({"frame": "IPv4 UDP from a blocklisted source (10-entry lists)",
               "reader": "observe::samples::Reader claimed for the blocklist reason, not raising; its ring drained by a thread on CPU 0 while the runs go on CPU 1",
               "setting": "observe::samples::configure(every, cap) before each row, as `floodgate sampling` does",
               "runs": format!("{repeat} packets per test run; the 'runs of 1000' rows: {SHORT_RUNS} test runs of {SHORT_RUN} after 250 ms for the bucket to refill, so every packet is recorded"),
               "pairing": "ratio and difference against the 'off' row of the same kind, same round"}),
    );
    Ok(Value::Object(out))
}

/// Mean ns per packet of `repeat` runs of `frame`, which must be dropped.
fn run(b: &BenchObject, frame: &[u8], repeat: u32) -> Result<f64> {
    let (action, ns) = b.run("floodgate", frame, repeat)?;
    if action != XDP_DROP {
        bail!("the blocklisted frame was not dropped (action {action})");
    }
    Ok(ns)
}
