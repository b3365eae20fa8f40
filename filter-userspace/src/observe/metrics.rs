//! Prometheus metrics of one [`Observation`], encoded by prometheus-client: the text format
//! 0.0.4 (`stats --prometheus`, node-exporter's textfile collector, plain HTTP clients) or
//! OpenMetrics (Prometheus asks for it). Every name and label is listed in [`METRICS`]; the
//! README's table and the Grafana dashboard name the same ones, and tests hold all three to it.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::collect::Observation;
use crate::state::attach::LinkState;

/// What prometheus-client's OpenMetrics encoder writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a scrape wants its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// OpenMetrics when an HTTP `Accept` header offers it (as Prometheus does), else text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// What the daemon knows about itself (`None` outside the daemon: `stats --prometheus`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonHealth {
    /// Unix time the daemon started.
    pub started_at: f64,
    /// Applies of the policy file that succeeded and failed (the first one, at start, too).
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last apply: whether it succeeded, and when (Unix time).
    pub last_reload_ok: bool,
    pub last_reload_at: f64,
}

/// A metric family: its name as exposed (counters with their `_total`), kind and labels.
pub struct MetricDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric floodgate exposes. Names never change silently: tests compare this list with
/// the encoded text, the README and the Grafana dashboard.
pub const METRICS: &[MetricDef] = &[
    def("floodgate_up", "gauge", &[], "1 if this exposition read the filter's pinned state, 0 if it could not (not loaded, or the pins were unavailable)"),
    def("floodgate_packets_total", "counter", &["interface", "reason"], "Packets the XDP program judged, per interface and reason (passed, dropped-blocklist, dropped-rate-limit, ...)"),
    def("floodgate_bytes_total", "counter", &["interface", "reason"], "Bytes of the packets the XDP program judged, per interface and reason"),
    def("floodgate_rule_packets_total", "counter", &["rule", "mode"], "Packets each rule of the policy in force matched (in monitor mode: would have)"),
    def("floodgate_rule_bytes_total", "counter", &["rule", "mode"], "Bytes of the packets each rule matched"),
    def("floodgate_limit_packets_total", "counter", &["limit", "mode"], "Packets each limit of the policy in force refused (in monitor mode: would have)"),
    def("floodgate_limit_bytes_total", "counter", &["limit", "mode"], "Bytes of the packets each limit refused"),
    def("floodgate_list_entries", "gauge", &["list", "family"], "Entries of the block and allow lists, per address family"),
    def("floodgate_bans", "gauge", &[], "Sources banned now (bans not yet lapsed)"),
    def("floodgate_samples_total", "counter", &["outcome"], "Sampled drop events: written to the readers' rings, refused by the per-second cap (capped), or refused by a full ring (lost, one per ring)"),
    def("floodgate_map_entries", "gauge", &["map"], "Entries in use in a map (LIST_NODES: nodes of the list pool)"),
    def("floodgate_map_capacity_entries", "gauge", &["map"], "Entries a map can hold"),
    def("floodgate_map_memory_bytes", "gauge", &["map"], "Kernel memory charged for a map"),
    def("floodgate_interface_attached", "gauge", &["interface", "mode"], "1 for an interface the filter is attached to, 0 for a record of one it no longer filters"),
    def("floodgate_policy_generation", "gauge", &[], "Generation of the lists and policy in force"),
    def("floodgate_policy_rules", "gauge", &[], "Rules in the policy in force"),
    def("floodgate_policy_limits", "gauge", &[], "Limits in the policy in force"),
    def("floodgate_policy_applied_timestamp_seconds", "gauge", &[], "Unix time the policy in force was applied (0: never)"),
    def("floodgate_daemon_start_timestamp_seconds", "gauge", &[], "Unix time `floodgate run` started (only from the daemon)"),
    def("floodgate_daemon_reloads_total", "counter", &["result"], "Applies of the policy file by the daemon, at start and on SIGHUP or a change, by result (ok or failed)"),
    def("floodgate_daemon_last_reload_success", "gauge", &[], "1 if the daemon's last apply of its policy file succeeded"),
    def("floodgate_daemon_last_reload_timestamp_seconds", "gauge", &[], "Unix time of the daemon's last apply of its policy file"),
];

type Labels = Vec<(&'static str, String)>;

fn meta(name: &str) -> &'static MetricDef {
    METRICS
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("metric {name} is not in METRICS"))
}

/// The registry name of a metric (prometheus-client adds `_total` to counters itself).
fn base(m: &MetricDef) -> &'static str {
    m.name.strip_suffix("_total").unwrap_or(m.name)
}

struct Builder {
    registry: Registry,
}

impl Builder {
    fn gauge(&mut self, name: &str, value: i64) {
        let m = meta(name);
        let g: Gauge = Gauge::default();
        g.set(value);
        self.registry.register(base(m), m.help, g);
    }

    fn gauge_f64(&mut self, name: &str, value: f64) {
        let m = meta(name);
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.registry.register(base(m), m.help, g);
    }

    fn gauges(&mut self, name: &str, series: impl IntoIterator<Item = (Labels, i64)>) {
        let m = meta(name);
        let f: Family<Labels, Gauge> = Family::default();
        for (labels, v) in series {
            debug_assert!(labels.iter().map(|l| l.0).eq(m.labels.iter().copied()));
            f.get_or_create(&labels).set(v);
        }
        self.registry.register(base(m), m.help, f);
    }

    fn counters(&mut self, name: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let m = meta(name);
        let f: Family<Labels, Counter> = Family::default();
        for (labels, v) in series {
            debug_assert!(labels.iter().map(|l| l.0).eq(m.labels.iter().copied()));
            f.get_or_create(&labels).inc_by(v);
        }
        self.registry.register(base(m), m.help, f);
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The registry of one reading (`None`: the filter could not be read) and the daemon's health.
pub fn registry(obs: Option<&Observation>, daemon: Option<&DaemonHealth>) -> Registry {
    let mut b = Builder {
        registry: Registry::default(),
    };
    b.gauge("floodgate_up", i64::from(obs.is_some()));
    if let Some(o) = obs {
        for (name, bytes) in [
            ("floodgate_packets_total", false),
            ("floodgate_bytes_total", true),
        ] {
            b.counters(
                name,
                o.counters.iter().flat_map(|iface| {
                    iface.reasons.iter().map(move |(reason, t)| {
                        (
                            vec![
                                ("interface", iface.interface.clone()),
                                ("reason", (*reason).to_string()),
                            ],
                            if bytes { t.bytes } else { t.packets },
                        )
                    })
                }),
            );
        }
        for (name, list, key, bytes) in [
            ("floodgate_rule_packets_total", &o.rules, "rule", false),
            ("floodgate_rule_bytes_total", &o.rules, "rule", true),
            ("floodgate_limit_packets_total", &o.limits, "limit", false),
            ("floodgate_limit_bytes_total", &o.limits, "limit", true),
        ] {
            b.counters(
                name,
                list.iter().map(|c| {
                    (
                        vec![(key, c.name.clone()), ("mode", c.mode.to_string())],
                        if bytes { c.bytes } else { c.packets },
                    )
                }),
            );
        }
        b.gauges(
            "floodgate_list_entries",
            o.lists.iter().map(|l| {
                (
                    vec![
                        ("list", l.list.to_string()),
                        ("family", l.family.to_string()),
                    ],
                    clamp(l.entries),
                )
            }),
        );
        b.gauge("floodgate_bans", clamp(o.bans));
        b.counters(
            "floodgate_samples_total",
            [
                ("written", o.samples.written),
                ("capped", o.samples.capped),
                ("lost", o.samples.lost),
            ]
            .map(|(outcome, v)| (vec![("outcome", outcome.to_string())], v)),
        );
        b.gauges(
            "floodgate_map_entries",
            o.fill
                .iter()
                .map(|f| (vec![("map", f.map.to_string())], clamp(f.entries))),
        );
        b.gauges(
            "floodgate_map_capacity_entries",
            o.fill
                .iter()
                .map(|f| (vec![("map", f.map.to_string())], clamp(f.capacity))),
        );
        b.gauges(
            "floodgate_map_memory_bytes",
            o.memory
                .iter()
                .map(|(m, bytes)| (vec![("map", m.clone())], clamp(*bytes))),
        );
        b.gauges(
            "floodgate_interface_attached",
            o.interfaces.iter().map(|a| {
                (
                    vec![("interface", a.name.clone()), ("mode", a.mode.to_string())],
                    i64::from(a.state == LinkState::Attached),
                )
            }),
        );
        let applied = &o.snapshot.policy;
        b.gauge("floodgate_policy_generation", clamp(o.generation()));
        b.gauge(
            "floodgate_policy_rules",
            clamp(applied.policy.rules.len() as u64),
        );
        b.gauge(
            "floodgate_policy_limits",
            clamp(applied.policy.limits.len() as u64),
        );
        b.gauge_f64(
            "floodgate_policy_applied_timestamp_seconds",
            applied.applied_at as f64,
        );
    }
    if let Some(d) = daemon {
        b.gauge_f64("floodgate_daemon_start_timestamp_seconds", d.started_at);
        b.counters(
            "floodgate_daemon_reloads_total",
            [
                (vec![("result", "ok".to_string())], d.reloads_ok),
                (vec![("result", "failed".to_string())], d.reloads_failed),
            ],
        );
        b.gauge(
            "floodgate_daemon_last_reload_success",
            i64::from(d.last_reload_ok),
        );
        b.gauge_f64(
            "floodgate_daemon_last_reload_timestamp_seconds",
            d.last_reload_at,
        );
    }
    b.registry
}

/// The exposition text of one reading.
pub fn encode(obs: Option<&Observation>, daemon: Option<&DaemonHealth>, format: Format) -> String {
    let registry = registry(obs, daemon);
    let mut out = String::new();
    let done = match format {
        Format::Text => prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => openmetrics_text::encode(&mut out, &registry),
    };
    // Writing into a String cannot fail.
    done.expect("encoding into a String");
    out
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::observe::collect::{ListSize, MapFill};
    use crate::observe::stats::{IfaceStats, PolicyCounter, Totals};

    /// Labels floodgate's metrics may carry.
    const LABELS: &[&str] = &[
        "interface",
        "reason",
        "rule",
        "limit",
        "list",
        "family",
        "map",
        "mode",
        "result",
        "outcome",
    ];

    fn observation() -> Observation {
        let mut reasons = BTreeMap::new();
        for r in filter_common::Reason::ALL {
            reasons.insert(r.name(), Totals::default());
        }
        reasons.insert(
            "dropped-blocklist",
            Totals {
                packets: 7,
                bytes: 420,
            },
        );
        Observation {
            program_id: 42,
            interfaces: Vec::new(),
            snapshot: crate::state::Snapshot::default(),
            counters: vec![IfaceStats {
                interface: "eth0".into(),
                reasons,
            }],
            rules: vec![PolicyCounter {
                name: "no-telnet".into(),
                mode: "monitor",
                packets: 3,
                bytes: 180,
            }],
            limits: vec![PolicyCounter {
                name: "syn".into(),
                mode: "enforce",
                packets: 5,
                bytes: 300,
            }],
            lists: vec![ListSize {
                list: "block",
                family: "ipv4",
                entries: 2,
            }],
            bans: 1,
            samples: crate::observe::samples::SampleTotals {
                written: 4,
                capped: 2,
                lost: 1,
            },
            pool_in_use: 10,
            pool_nodes: 1024,
            fill: vec![MapFill {
                map: "BANS",
                entries: 1,
                capacity: 262_144,
            }],
            memory: BTreeMap::from([("COUNTERS".to_string(), 4096)]),
        }
    }

    fn health() -> DaemonHealth {
        DaemonHealth {
            started_at: 1_700_000_000.0,
            reloads_ok: 2,
            reloads_failed: 1,
            last_reload_ok: false,
            last_reload_at: 1_700_000_100.5,
        }
    }

    /// (name, labels, value) of every sample line.
    fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => {
                        let inner = rest.strip_suffix('}').expect("closing brace");
                        let labels = inner
                            .split("\",")
                            .filter(|p| !p.is_empty())
                            .map(|p| {
                                let (k, v) = p.split_once("=\"").expect("label=\"value\"");
                                (k.to_string(), v.trim_end_matches('"').to_string())
                            })
                            .collect();
                        (n.to_string(), labels)
                    }
                    None => (series.to_string(), BTreeMap::new()),
                };
                (name, labels, value.to_string())
            })
            .collect()
    }

    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<String> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples(text)
            .into_iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| v)
    }

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("floodgate_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            match m.kind {
                "counter" => assert!(m.name.ends_with("_total"), "{}", m.name),
                "gauge" => assert!(!m.name.ends_with("_total"), "{}", m.name),
                k => panic!("{}: unexpected kind {k}", m.name),
            }
            for l in m.labels {
                assert!(LABELS.contains(l), "{}: label {l}", m.name);
            }
            assert!(!m.help.contains('\\') && !m.help.contains('\n'));
        }
        // Units are in the names: seconds and bytes, never milliseconds or bits.
        assert!(METRICS
            .iter()
            .filter(|m| m.name.contains("timestamp"))
            .all(|m| m.name.ends_with("_seconds")));
    }

    #[test]
    fn text_exposition_declares_every_metric_with_its_type() {
        let text = encode(Some(&observation()), Some(&health()), Format::Text);
        // The fixture attaches nothing (an empty family is left out; the end-to-end test
        // sees this one).
        for m in METRICS
            .iter()
            .filter(|m| m.name != "floodgate_interface_attached")
        {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", m.name, m.kind)),
                "no TYPE line for {} in:\n{text}",
                m.name
            );
            assert!(text.contains(&format!("# HELP {} ", m.name)), "{}", m.name);
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn every_sample_is_a_listed_metric_with_its_labels() {
        let text = encode(Some(&observation()), Some(&health()), Format::Text);
        let all = samples(&text);
        assert!(!all.is_empty());
        for (name, labels, value) in all {
            let m = METRICS
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("sample {name} is not in METRICS"));
            let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
            let want: BTreeSet<&str> = m.labels.iter().copied().collect();
            assert_eq!(keys, want, "labels of {name}");
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{name}: value {value}"));
        }
    }

    #[test]
    fn samples_carry_the_observed_values() {
        let text = encode(Some(&observation()), Some(&health()), Format::Text);
        let v = |name, labels: &[(&str, &str)]| value(&text, name, labels);
        assert_eq!(v("floodgate_up", &[]).as_deref(), Some("1"));
        let blocked = [("interface", "eth0"), ("reason", "dropped-blocklist")];
        assert_eq!(v("floodgate_packets_total", &blocked).as_deref(), Some("7"));
        assert_eq!(v("floodgate_bytes_total", &blocked).as_deref(), Some("420"));
        assert_eq!(
            v(
                "floodgate_packets_total",
                &[("interface", "eth0"), ("reason", "passed")]
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            v(
                "floodgate_rule_packets_total",
                &[("rule", "no-telnet"), ("mode", "monitor")]
            )
            .as_deref(),
            Some("3")
        );
        assert_eq!(
            v(
                "floodgate_limit_bytes_total",
                &[("limit", "syn"), ("mode", "enforce")]
            )
            .as_deref(),
            Some("300")
        );
        assert_eq!(
            v(
                "floodgate_list_entries",
                &[("list", "block"), ("family", "ipv4")]
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(v("floodgate_bans", &[]).as_deref(), Some("1"));
        assert_eq!(
            v("floodgate_map_capacity_entries", &[("map", "BANS")]).as_deref(),
            Some("262144")
        );
        assert_eq!(
            v("floodgate_daemon_reloads_total", &[("result", "failed")]).as_deref(),
            Some("1")
        );
        assert_eq!(
            v("floodgate_daemon_last_reload_success", &[]).as_deref(),
            Some("0")
        );
        assert_eq!(
            v("floodgate_daemon_last_reload_timestamp_seconds", &[])
                .and_then(|s| s.parse::<f64>().ok()),
            Some(1_700_000_100.5)
        );
    }

    #[test]
    fn an_unreadable_filter_still_exposes_health() {
        let text = encode(None, Some(&health()), Format::Text);
        assert_eq!(value(&text, "floodgate_up", &[]).as_deref(), Some("0"));
        assert!(value(&text, "floodgate_daemon_last_reload_success", &[]).is_some());
        assert!(!text.contains("floodgate_packets_total"));
    }

    #[test]
    fn outside_the_daemon_there_are_no_daemon_metrics() {
        let text = encode(Some(&observation()), None, Format::Text);
        assert!(!text.contains("floodgate_daemon_"));
    }

    #[test]
    fn openmetrics_exposition_ends_with_eof_and_types_counters_by_family() {
        let text = encode(Some(&observation()), Some(&health()), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE floodgate_packets counter\n"));
        assert_eq!(
            value(
                &text,
                "floodgate_packets_total",
                &[("interface", "eth0"), ("reason", "dropped-blocklist")]
            )
            .as_deref(),
            Some("7")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut o = observation();
        o.rules[0].name = "a\"b\\c".into();
        let text = encode(Some(&o), None, Format::Text);
        assert!(
            text.contains(r#"rule="a\"b\\c""#),
            "label value not escaped:\n{text}"
        );
    }

    #[test]
    fn accept_header_chooses_the_format() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(Format::Text
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
    }

    /// `floodgate_...` names in a text.
    fn metric_names(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("floodgate_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
        out
    }

    const DASHBOARD: &str = include_str!("../../../dist/grafana-dashboard.json");

    #[test]
    fn grafana_dashboard_queries_only_metrics_that_exist() {
        let v: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        match (k.as_str(), x) {
                            ("expr" | "definition", serde_json::Value::String(s)) => {
                                out.push(s.clone())
                            }
                            _ => walk(x, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&v, &mut exprs);
        assert!(exprs.len() >= 7, "too few queries: {exprs:?}");
        let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
        for name in &used {
            assert!(
                METRICS.iter().any(|m| m.name == name),
                "the dashboard queries {name}, which floodgate does not expose"
            );
        }
        // What the dashboard is for: drops by reason, rule and limit, passed traffic, bans,
        // list sizes and map fill.
        for needed in [
            "floodgate_packets_total",
            "floodgate_rule_packets_total",
            "floodgate_limit_packets_total",
            "floodgate_bans",
            "floodgate_list_entries",
            "floodgate_map_entries",
            "floodgate_map_capacity_entries",
        ] {
            assert!(
                used.contains(needed),
                "the dashboard does not show {needed}"
            );
        }
    }

    #[test]
    fn readme_documents_every_metric() {
        let readme = include_str!("../../../README.md");
        let named = metric_names(readme);
        for m in METRICS {
            assert!(
                readme.contains(&format!("`{}`", m.name)),
                "README.md does not document {}",
                m.name
            );
        }
        for name in &named {
            // A counter's OpenMetrics family name (without `_total`) counts as its name.
            let total = format!("{name}_total");
            assert!(
                METRICS.iter().any(|m| m.name == name || m.name == total),
                "README.md names {name}, which floodgate does not expose"
            );
        }
    }
}
