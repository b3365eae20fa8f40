//! `top`'s numbers, apart from any terminal: the top dropped sources, source prefixes,
//! destination ports and reasons over a sliding window of sampled drops, and each reason's
//! rate and rate history from the counters. The command feeds it samples and counter readings
//! with their times (CLOCK_MONOTONIC ns, the records' clock) and prints or draws a
//! [`Snapshot`]; tests feed it by hand.
//!
//! Samples are 1 in N, so sample counts are shown as they are, beside an estimate (each sample
//! weighs the N in effect when it arrived); the estimate undercounts when the per-second cap
//! binds. Rates come from the counters and are exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::packet::PORT_NONE;
use filter_common::sample::{SampleRecord, DROP_REASONS};
use filter_common::Reason;
use serde::Serialize;

/// Seconds of samples (and of counter readings) the tables cover.
pub const WINDOW_SECONDS: u64 = 10;
/// Rows of each table.
pub const TOP_ROWS: usize = 10;
/// Rates kept per reason for its sparkline, one per reading.
pub const HISTORY_LEN: usize = 60;

const NS: u64 = 1_000_000_000;

/// The reasons `top` shows: the drops (in `Reason::ALL` order).
pub fn drop_reasons() -> impl Iterator<Item = Reason> {
    Reason::ALL
        .into_iter()
        .filter(|r| DROP_REASONS & (1 << *r as u32) != 0)
}

/// One sampled drop, as the tables count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it was judged (CLOCK_MONOTONIC ns).
    pub at_ns: u64,
    pub reason: Reason,
    /// None for a frame that was not parsed as IP.
    pub source: Option<IpAddr>,
    /// Transport protocol and destination port; None without ports (ICMP, a fragment).
    pub port: Option<(u8, u16)>,
    /// The N of "1 in N" in effect when it arrived: the drops it stands for.
    pub weight: u64,
}

impl Sample {
    /// `None` for a record whose reason this floodgate does not know.
    pub fn from_record(r: &SampleRecord, weight: u64) -> Option<Sample> {
        Some(Sample {
            at_ns: r.time_ns,
            reason: r.reason()?,
            source: r.src_addr(),
            port: (r.dport != PORT_NONE && r.dport <= 0xffff).then_some((r.proto, r.dport as u16)),
            weight: weight.max(1),
        })
    }
}

/// The source prefix a table groups by: the /24 of an IPv4 source, the /48 of an IPv6 one.
pub fn prefix_of(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => {
            let masked = u32::from(v4) & 0xffff_ff00;
            format!("{}/24", Ipv4Addr::from(masked))
        }
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & !((1u128 << 80) - 1);
            format!("{}/48", Ipv6Addr::from(masked))
        }
    }
}

/// A protocol's name for the ports table (its number when it has none here).
pub fn protocol_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// Sampling as it stood at the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sampling {
    /// 1 in `every` drops is sampled now (0: off); what the estimates multiply by.
    pub every: u32,
    /// At most this many samples per second over all CPUs: past it estimates undercount.
    pub cap_per_second: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceRow {
    pub source: String,
    pub samples: u64,
    pub estimated_packets: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixRow {
    pub prefix: String,
    pub samples: u64,
    pub estimated_packets: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRow {
    pub port: u16,
    pub protocol: String,
    pub samples: u64,
    pub estimated_packets: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReasonRow {
    pub reason: &'static str,
    /// From the counters: the rate between the last two readings, the drops within the
    /// window and since the filter was loaded.
    pub packets_per_second: f64,
    pub packets_in_window: u64,
    pub packets_total: u64,
    /// From the samples within the window.
    pub samples: u64,
    pub estimated_packets: u64,
    /// Rates of the last readings, oldest first (at most [`HISTORY_LEN`]).
    pub history: Vec<f64>,
}

/// What a counter grew by from `prev` to `now`. A counter that went back was reset (an
/// interface attached anew starts its slot at zero): it grew by all it holds now.
fn grown(prev: u64, now: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

/// What `top` shows at one moment; `--json` prints it as it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    pub window_seconds: u64,
    /// Seconds between the last two counter readings (what the rates are over).
    pub interval_seconds: f64,
    pub sampling: Sampling,
    /// Samples within the window, and the drops they stand for.
    pub samples: u64,
    pub estimated_packets: u64,
    pub sources: Vec<SourceRow>,
    pub prefixes: Vec<PrefixRow>,
    pub ports: Vec<PortRow>,
    pub reasons: Vec<ReasonRow>,
}

/// Drop counters per reason (summed over interfaces), at one reading.
pub type Totals = BTreeMap<Reason, u64>;

/// The window of samples and counter readings.
pub struct Top {
    window_ns: u64,
    samples: VecDeque<Sample>,
    /// Readings within the window, oldest first (the oldest may be just past its start).
    readings: VecDeque<(u64, Totals)>,
    /// Rate per reason per reading, oldest first.
    history: BTreeMap<Reason, VecDeque<f64>>,
}

impl Default for Top {
    fn default() -> Self {
        Self::new(WINDOW_SECONDS)
    }
}

impl Top {
    pub fn new(window_seconds: u64) -> Top {
        Top {
            window_ns: window_seconds * NS,
            samples: VecDeque::new(),
            readings: VecDeque::new(),
            history: drop_reasons().map(|r| (r, VecDeque::new())).collect(),
        }
    }

    /// Count a sampled drop (reasons `top` does not show are ignored).
    pub fn add(&mut self, s: Sample) {
        if DROP_REASONS & (1 << s.reason as u32) != 0 {
            self.samples.push_back(s);
        }
    }

    /// A counter reading at `at_ns`: adds each reason's rate since the previous reading to
    /// its history, and forgets what has left the window.
    pub fn reading(&mut self, at_ns: u64, totals: Totals) {
        if let Some((prev_at, prev)) = self.readings.back() {
            let secs = at_ns.saturating_sub(*prev_at) as f64 / NS as f64;
            for (reason, h) in &mut self.history {
                let delta = grown(
                    prev.get(reason).copied().unwrap_or(0),
                    totals.get(reason).copied().unwrap_or(0),
                );
                h.push_back(if secs > 0.0 { delta as f64 / secs } else { 0.0 });
                if h.len() > HISTORY_LEN {
                    h.pop_front();
                }
            }
        }
        self.readings.push_back((at_ns, totals));
        self.expire(at_ns);
    }

    fn expire(&mut self, now_ns: u64) {
        let start = now_ns.saturating_sub(self.window_ns);
        while self.samples.front().is_some_and(|s| s.at_ns < start) {
            self.samples.pop_front();
        }
        // Keep the newest reading at or before the window's start: the window's counts are
        // measured from it.
        while self.readings.len() > 1 && self.readings[1].0 <= start {
            self.readings.pop_front();
        }
    }

    /// The tables as of the last reading, `rows` rows each.
    pub fn snapshot(&self, sampling: Sampling, rows: usize) -> Snapshot {
        let now_ns = self.readings.back().map_or(0, |r| r.0);
        let start = now_ns.saturating_sub(self.window_ns);
        let live: Vec<&Sample> = self.samples.iter().filter(|s| s.at_ns >= start).collect();
        let sources = rank(
            live.iter().filter_map(|s| Some((s.source?, s.weight))),
            rows,
        )
        .into_iter()
        .map(|(a, samples, est)| SourceRow {
            source: a.to_string(),
            samples,
            estimated_packets: est,
        })
        .collect();
        let prefixes = rank(
            live.iter()
                .filter_map(|s| Some((prefix_of(s.source?), s.weight))),
            rows,
        )
        .into_iter()
        .map(|(p, samples, est)| PrefixRow {
            prefix: p,
            samples,
            estimated_packets: est,
        })
        .collect();
        let ports = rank(
            live.iter()
                .filter_map(|s| Some(((s.port?.1, s.port?.0), s.weight))),
            rows,
        )
        .into_iter()
        .map(|((port, proto), samples, est)| PortRow {
            port,
            protocol: protocol_name(proto),
            samples,
            estimated_packets: est,
        })
        .collect();
        let last = self.readings.back();
        let interval_seconds = match self.readings.len() {
            n if n >= 2 => (now_ns - self.readings[n - 2].0) as f64 / NS as f64,
            _ => 0.0,
        };
        let counter = |r: Option<&(u64, Totals)>, reason: Reason| {
            r.and_then(|(_, t)| t.get(&reason).copied()).unwrap_or(0)
        };
        let reasons = drop_reasons()
            .map(|reason| {
                let mine = live.iter().filter(|s| s.reason == reason);
                let history: Vec<f64> = self.history[&reason].iter().copied().collect();
                ReasonRow {
                    reason: reason.name(),
                    packets_per_second: history.last().copied().unwrap_or(0.0),
                    packets_in_window: self
                        .readings
                        .iter()
                        .zip(self.readings.iter().skip(1))
                        .map(|(a, b)| grown(counter(Some(a), reason), counter(Some(b), reason)))
                        .sum(),
                    packets_total: counter(last, reason),
                    samples: mine.clone().count() as u64,
                    estimated_packets: mine.map(|s| s.weight).sum(),
                    history,
                }
            })
            .collect();
        Snapshot {
            window_seconds: self.window_ns / NS,
            interval_seconds,
            sampling,
            samples: live.len() as u64,
            estimated_packets: live.iter().map(|s| s.weight).sum(),
            sources,
            prefixes,
            ports,
            reasons,
        }
    }
}

/// The `rows` keys with the most samples (ties: the larger estimate, then the smaller key),
/// each with its samples and estimate.
fn rank<K: Ord + Hash + Clone>(
    items: impl Iterator<Item = (K, u64)>,
    rows: usize,
) -> Vec<(K, u64, u64)> {
    let mut by: HashMap<K, (u64, u64)> = HashMap::new();
    for (k, w) in items {
        let e = by.entry(k).or_default();
        e.0 += 1;
        e.1 += w;
    }
    let mut out: Vec<(K, u64, u64)> = by.into_iter().map(|(k, (n, w))| (k, n, w)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    out.truncate(rows);
    out
}

/// Drop counters per reason summed over interfaces, from one `collect` reading.
pub fn totals(counters: &[super::stats::IfaceStats]) -> Totals {
    drop_reasons()
        .map(|r| (r, counters.iter().map(|i| i.get(r).packets).sum()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, reason: Reason, src: &str, port: u16, weight: u64) -> Sample {
        Sample {
            at_ns: (at_s * NS as f64) as u64,
            reason,
            source: Some(src.parse().unwrap()),
            port: Some((17, port)),
            weight,
        }
    }

    fn totals_of(pairs: &[(Reason, u64)]) -> Totals {
        pairs.iter().copied().collect()
    }

    const ON: Sampling = Sampling {
        every: 10,
        cap_per_second: 1000,
    };

    #[test]
    fn prefixes_are_the_24_of_v4_and_the_48_of_v6() {
        assert_eq!(prefix_of("198.18.0.66".parse().unwrap()), "198.18.0.0/24");
        assert_eq!(
            prefix_of("2001:db8:aa:bb::1".parse().unwrap()),
            "2001:db8:aa::/48"
        );
    }

    #[test]
    fn the_top_source_prefix_and_port_come_first_with_samples_and_estimates() {
        let mut top = Top::new(10);
        top.reading(0, Totals::new());
        for i in 0..5 {
            top.add(sample(
                0.1 * f64::from(i),
                Reason::DroppedBlocklist,
                "198.18.0.66",
                7000,
                10,
            ));
        }
        top.add(sample(0.6, Reason::DroppedBlocklist, "198.18.0.77", 53, 10));
        top.add(sample(0.7, Reason::DroppedRule, "203.0.113.5", 53, 10));
        top.add(sample(0.8, Reason::DroppedRule, "203.0.113.6", 53, 10));
        top.reading(
            NS,
            totals_of(&[(Reason::DroppedBlocklist, 60), (Reason::DroppedRule, 20)]),
        );
        let s = top.snapshot(ON, 10);
        assert_eq!(s.samples, 8);
        assert_eq!(s.estimated_packets, 80);
        assert_eq!(
            s.sources[0],
            SourceRow {
                source: "198.18.0.66".into(),
                samples: 5,
                estimated_packets: 50
            }
        );
        assert_eq!(s.sources.len(), 4);
        assert_eq!(s.prefixes[0].prefix, "198.18.0.0/24");
        assert_eq!(s.prefixes[0].samples, 6);
        assert_eq!(s.prefixes[1].prefix, "203.0.113.0/24");
        assert_eq!(
            s.ports[0],
            PortRow {
                port: 7000,
                protocol: "udp".into(),
                samples: 5,
                estimated_packets: 50
            }
        );
        assert_eq!(s.ports[1].port, 53);
        assert_eq!(s.ports[1].samples, 3);
    }

    #[test]
    fn tables_keep_only_the_rows_asked_for() {
        let mut top = Top::new(10);
        for i in 0..30u16 {
            top.add(sample(
                0.5,
                Reason::DroppedBlocklist,
                &format!("10.0.{i}.1"),
                1000 + i,
                1,
            ));
        }
        top.reading(NS, Totals::new());
        let s = top.snapshot(ON, 3);
        assert_eq!(
            (s.sources.len(), s.prefixes.len(), s.ports.len()),
            (3, 3, 3)
        );
        assert_eq!(s.samples, 30);
    }

    #[test]
    fn reason_rates_come_from_the_counters_and_their_history_grows() {
        let mut top = Top::new(10);
        top.reading(0, totals_of(&[(Reason::DroppedBlocklist, 100)]));
        top.reading(NS, totals_of(&[(Reason::DroppedBlocklist, 150)]));
        top.reading(3 * NS, totals_of(&[(Reason::DroppedBlocklist, 350)]));
        let s = top.snapshot(ON, 10);
        let row = s
            .reasons
            .iter()
            .find(|r| r.reason == "dropped-blocklist")
            .unwrap();
        assert_eq!(row.history, vec![50.0, 100.0]);
        assert_eq!(row.packets_per_second, 100.0);
        assert_eq!(row.packets_in_window, 250);
        assert_eq!(row.packets_total, 350);
        assert_eq!(s.interval_seconds, 2.0);
        let rule = s
            .reasons
            .iter()
            .find(|r| r.reason == "dropped-rule")
            .unwrap();
        assert_eq!(rule.packets_per_second, 0.0);
        assert!(s.reasons.iter().all(|r| !r.reason.starts_with("passed")));
    }

    #[test]
    fn the_window_forgets_old_samples_and_counts() {
        let mut top = Top::new(10);
        top.reading(0, totals_of(&[(Reason::DroppedBlocklist, 0)]));
        top.add(sample(
            1.0,
            Reason::DroppedBlocklist,
            "198.18.0.66",
            7000,
            1,
        ));
        top.reading(2 * NS, totals_of(&[(Reason::DroppedBlocklist, 10)]));
        top.add(sample(
            12.0,
            Reason::DroppedBlocklist,
            "198.18.0.77",
            7001,
            1,
        ));
        top.reading(12 * NS, totals_of(&[(Reason::DroppedBlocklist, 30)]));
        let s = top.snapshot(ON, 10);
        assert_eq!(s.samples, 1);
        assert_eq!(s.sources[0].source, "198.18.0.77");
        // Measured from the reading at 2 s, the newest at or before the window's start (12 - 10).
        assert_eq!(s.reasons[0].packets_in_window, 20);
    }

    #[test]
    fn a_counter_that_went_back_was_reset_and_counts_what_it_holds() {
        let mut t = Top::default();
        let totals = |n: u64| Totals::from([(Reason::DroppedBlocklist, n)]);
        t.reading(0, totals(1000));
        t.reading(NS, totals(2000));
        // Detached and attached again: the slot starts from zero.
        t.reading(2 * NS, totals(300));
        t.reading(3 * NS, totals(1300));
        let s = t.snapshot(Sampling::default(), 10);
        let row = s
            .reasons
            .iter()
            .find(|r| r.reason == "dropped-blocklist")
            .unwrap();
        assert_eq!(row.history, vec![1000.0, 300.0, 1000.0]);
        assert_eq!(row.packets_in_window, 1000 + 300 + 1000);
    }

    #[test]
    fn history_is_bounded() {
        let mut top = Top::new(10);
        for i in 0..(HISTORY_LEN as u64 + 20) {
            top.reading(i * NS, totals_of(&[(Reason::DroppedBanned, i * 3)]));
        }
        let s = top.snapshot(ON, 10);
        let row = s
            .reasons
            .iter()
            .find(|r| r.reason == "dropped-banned")
            .unwrap();
        assert_eq!(row.history.len(), HISTORY_LEN);
        assert!(row.history.iter().all(|&r| r == 3.0));
    }

    #[test]
    fn records_without_ports_or_address_still_count_by_reason() {
        use bytemuck::Zeroable;
        let mut r = SampleRecord::zeroed();
        r.reason = Reason::DroppedMalformed as u32;
        r.dport = PORT_NONE;
        r.time_ns = NS / 2;
        let s = Sample::from_record(&r, 0).unwrap();
        assert_eq!((s.source, s.port, s.weight), (None, None, 1));
        let mut top = Top::new(10);
        top.add(s);
        top.reading(NS, Totals::new());
        let snap = top.snapshot(ON, 10);
        assert!(snap.sources.is_empty() && snap.ports.is_empty());
        let row = snap
            .reasons
            .iter()
            .find(|r| r.reason == "dropped-malformed")
            .unwrap();
        assert_eq!(row.samples, 1);
    }
}
