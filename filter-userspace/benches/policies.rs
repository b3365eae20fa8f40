//! Policy files for the bench: realistic L4 rules (10 and 500 table rules), limits, and the
//! frames that probe them. Written to temporary files and applied as an operator would,
//! through `floodgate::policy::apply::apply`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use filter_common::frames::{ethernet, ipv4, udp};
use filter_common::parse::{ETH_P_IPV4, IPPROTO_UDP};
use filter_common::Reason;
use rand::{Rng, SeedableRng};
use test_support::{Harness, TempFile};

/// UDP destination port the last rule of both rule sets drops ("discard" and its
/// neighbours): the rule-hit rows send to it.
pub const HIT_PORT: u16 = 9;

/// The ten table rules of a small real policy: both presets (reflection expands to three
/// table rules), ports, a port range, TCP flags, length and TTL, ICMP, fragments; the last one
/// drops UDP to ports 7-19.
const TEN_RULES: &str = r#"
[[rule]]
name = "no-reflection"
preset = "reflection"

[[rule]]
name = "bad-tcp-flags"
preset = "tcp-flags"

[[rule]]
name = "no-telnet"
protocol = "tcp"
dst_ports = [23, "2323-2324"]

[[rule]]
name = "odd-udp"
protocol = "udp"
src_ports = "0-1023"
dst_ports = 9999
length = "1200-65535"
ttl = "0-5"

[[rule]]
name = "tcp-syn-to-admin"
protocol = "tcp"
dst_ports = 8443
tcp_flags = "SYN,!ACK"

[[rule]]
name = "no-echo"
protocol = "icmp"
icmp_type = 8

[[rule]]
name = "no-fragments"
protocol = "any"
fragments = "later"

[[rule]]
name = "no-small-services"
protocol = "udp"
dst_ports = "7-19"
"#;

/// `n - 10` generated rules of the kinds operators write (service ports, port ranges, SYN to a
/// port, source-port ranges with a length, ICMP types, TTL ranges, first fragments), then the
/// ten rules above: the rule-hit frame meets the last table rule, the worst place for a
/// first match. No generated rule matches the bench's probe frames (UDP to ports 53 and 9 from
/// port 1234, TTL 64); [`RulesLoad::new`] checks that through the program.
pub fn rules_toml(n: usize, seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut s = String::new();
    let high = |rng: &mut rand::rngs::StdRng| rng.random_range(1024u32..65000);
    for i in 0..n.saturating_sub(10) {
        let _ = write!(s, "\n[[rule]]\nname = \"gen-{i}\"\n");
        let _ = match i % 8 {
            0 => write!(
                s,
                "protocol = \"tcp\"\ndst_ports = {}\n",
                rng.random_range(1u32..65535)
            ),
            1 => {
                let a = high(&mut rng);
                write!(
                    s,
                    "protocol = \"udp\"\ndst_ports = \"{a}-{}\"\n",
                    a + rng.random_range(0..500)
                )
            }
            2 => write!(
                s,
                "protocol = \"tcp\"\ndst_ports = {}\ntcp_flags = \"SYN,!ACK\"\n",
                rng.random_range(1u32..65535)
            ),
            3 => {
                let a = rng.random_range(0u32..1024);
                write!(
                    s,
                    "protocol = \"udp\"\nsrc_ports = \"{a}-{}\"\ndst_ports = {}\nlength = \"{}-65535\"\n",
                    a + rng.random_range(0..64),
                    high(&mut rng),
                    rng.random_range(100u32..1400)
                )
            }
            4 => write!(
                s,
                "protocol = \"icmp\"\nicmp_type = {}\n",
                rng.random_range(0u32..256)
            ),
            5 => write!(
                s,
                "protocol = \"tcp\"\ndst_ports = {}\nttl = \"0-{}\"\n",
                rng.random_range(1u32..65535),
                rng.random_range(1u32..10)
            ),
            6 => write!(
                s,
                "protocol = \"udp\"\ndst_ports = {}\nttl = \"{}-255\"\n",
                high(&mut rng),
                rng.random_range(100u32..250)
            ),
            _ => write!(
                s,
                "protocol = \"udp\"\ndst_ports = {}\nfragments = \"first\"\n",
                high(&mut rng)
            ),
        };
    }
    s.push_str(TEN_RULES);
    s
}

/// `[lists]` with P1's ten block entries, so a policy row differs from the plain "IPv4 pass"
/// row by the policy alone.
fn lists_toml(block: &[String]) -> String {
    let quoted: Vec<String> = block.iter().map(|e| format!("\"{e}\"")).collect();
    format!("[lists]\nblock = [{}]\n", quoted.join(", "))
}

/// Limits above anything BPF_PROG_TEST_RUN can send (its ~30 Mpps against 1e9 pps), so every
/// run goes the whole way through them and passes: a per-source UDP limit that bans, a global
/// UDP threshold with known sources first, and a SYN limit the UDP frames skip.
const LIMITS_TOML: &str = r#"
[[limit]]
name = "udp-per-source"
class = "udp"
per = "source"
pps = 1000000000
ban_seconds = 60

[[limit]]
name = "udp-global"
class = "udp"
per = "global"
pps = 1000000000
known_sources_first = true

[[limit]]
name = "syn-per-source"
class = "tcp-syn"
per = "source"
pps = 200
burst = 50
ban_seconds = 60
"#;

/// A UDP frame from `src` (port 1234) to `dport`, as P1's frames.
pub fn udp_frame(src: Ipv4Addr, dport: u16) -> Vec<u8> {
    ethernet(
        ETH_P_IPV4,
        &[],
        &ipv4(
            src,
            Ipv4Addr::new(192, 0, 2, 254),
            IPPROTO_UDP,
            &[],
            0,
            &udp(1234, dport, &[0; 18]),
        ),
    )
}

/// A product load of its own (own pin directory and maps) with a policy applied.
pub struct PolicyLoad {
    pub h: Harness,
    pub describe: String,
    _file: TempFile,
}

impl PolicyLoad {
    pub fn new(toml: &str, describe: impl Into<String>) -> Result<Self> {
        let h = Harness::new()?;
        let file = TempFile::new("fgbench-policy-", toml.as_bytes())?;
        // Lockout guard off: the bench has no SSH session to protect.
        floodgate::policy::apply::apply(h.pins(), &file.path, false, true)
            .context("applying a bench policy")?;
        Ok(Self {
            h,
            describe: describe.into(),
            _file: file,
        })
    }

    /// The list entries and `rules` table rules.
    pub fn rules(block: &[String], rules: usize) -> Result<Self> {
        let toml = format!("{}{}", lists_toml(block), rules_toml(rules, 7));
        let load = Self::new(&toml, format!("{rules} table rules"))?;
        let p = floodgate::policy::load(&load._file.path)?;
        if p.table_rules() != rules {
            bail!(
                "the bench policy has {} table rules, not {rules}",
                p.table_rules()
            );
        }
        Ok(load)
    }

    /// The list entries and the limits above; `banned` banned by hand as `floodgate bans add`
    /// does (the binary itself, on this load's pins).
    pub fn limits(block: &[String], banned: Ipv4Addr) -> Result<Self> {
        let toml = format!("{}{LIMITS_TOML}", lists_toml(block));
        let load = Self::new(&toml, "3 limits, a ban")?;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .arg("--pin-dir")
            .arg(load.h.pins().root())
            .args(["bans", "add", "--seconds", "86400", "--force"])
            .arg(banned.to_string())
            .output()?;
        if !out.status.success() {
            bail!(
                "floodgate bans add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(load)
    }

    /// The reason the program gives `frame`, which must be `want`.
    pub fn expect(&self, frame: &[u8], want: Reason, what: &str) -> Result<()> {
        let (_, got) = self.h.verdict(frame)?;
        if got != want {
            bail!(
                "{} ({what}): the program says {got:?}, not {want:?}",
                self.describe
            );
        }
        Ok(())
    }
}

/// P1's policy rows: a rule hit and a frame no rule matches under 10 and under 500 table
/// rules, a source under its per-source limit with limits in force, and a banned source. Each
/// set is a product load of its own holding the same ten list entries as P1's 10-entry rows,
/// and is measured in the same rounds as those rows and their floor.
pub struct PolicyRows {
    rules10: PolicyLoad,
    rules500: PolicyLoad,
    limits: PolicyLoad,
    hit: Vec<u8>,
    miss: Vec<u8>,
    banned: Vec<u8>,
}

pub const HIT_10: &str = "policy: rule hit (UDP to port 9), 10 rules";
pub const HIT_500: &str = "policy: rule hit (UDP to port 9), 500 rules";
pub const MISS_10: &str = "policy: no rule matches, 10 rules";
pub const MISS_500: &str = "policy: no rule matches, 500 rules";
pub const UNDER_LIMIT: &str = "policy: under a per-source limit (3 limits, passes)";
pub const BANNED: &str = "policy: banned source";

impl PolicyRows {
    /// `source` is P1's "IPv4 pass" source: the miss and under-limit frames are that row's
    /// frame, so each policy row minus it is what the policy adds.
    pub fn new(block: &[&str], source: Ipv4Addr) -> Result<Self> {
        let block: Vec<String> = block.iter().map(|s| s.to_string()).collect();
        let banned_src = Ipv4Addr::new(100, 64, 0, 99);
        let rows = Self {
            rules10: PolicyLoad::rules(&block, 10)?,
            rules500: PolicyLoad::rules(&block, 500)?,
            limits: PolicyLoad::limits(&block, banned_src)?,
            hit: udp_frame(source, HIT_PORT),
            miss: udp_frame(source, 53),
            banned: udp_frame(banned_src, 53),
        };
        rows.check()?;
        Ok(rows)
    }

    /// Every row gets the verdict it stands for (also after the rounds: the under-limit
    /// source must still pass).
    pub fn check(&self) -> Result<()> {
        for l in [&self.rules10, &self.rules500] {
            l.expect(&self.hit, Reason::DroppedRule, "rule hit")?;
            l.expect(&self.miss, Reason::Passed, "no rule matches")?;
        }
        self.limits
            .expect(&self.miss, Reason::Passed, "under the limits")?;
        self.limits
            .expect(&self.banned, Reason::DroppedBanned, "banned")?;
        Ok(())
    }

    /// (label, runner, frame) for `measure`.
    pub fn rows(&self) -> Vec<(String, crate::Runner<'_>, Vec<u8>)> {
        use crate::Runner::Load;
        vec![
            (HIT_10.into(), Load(&self.rules10), self.hit.clone()),
            (HIT_500.into(), Load(&self.rules500), self.hit.clone()),
            (MISS_10.into(), Load(&self.rules10), self.miss.clone()),
            (MISS_500.into(), Load(&self.rules500), self.miss.clone()),
            (UNDER_LIMIT.into(), Load(&self.limits), self.miss.clone()),
            (BANNED.into(), Load(&self.limits), self.banned.clone()),
        ]
    }

    /// Print the policy table from the phase's samples (round i of every label is the same
    /// round) and record the "flat" goal.
    pub fn report(
        s: &std::collections::BTreeMap<String, Vec<f64>>,
        pass_label: &str,
        goals: &mut serde_json::Map<String, serde_json::Value>,
    ) -> serde_json::Value {
        use crate::stats::{self, Spread};
        use serde_json::json;
        let floor = &s["floor"];
        let pass = &s[pass_label];
        println!(
            "-- policy in force: product loads of their own with the same 10 entries, same rounds"
        );
        println!(
            "{:<54} {:>22} {:>22} {:>22}",
            "row", "floodgate ns", "over IPv4 pass, ns", "over floor, ns"
        );
        let mut out = serde_json::Map::new();
        for label in [HIT_10, HIT_500, MISS_10, MISS_500, UNDER_LIMIT, BANNED] {
            let v = &s[label];
            let ns = Spread::of(v);
            let over_pass = Spread::paired(v, pass, |x, p| x - p);
            let over_floor = Spread::paired(v, floor, |x, f| x - f);
            println!(
                "{:<54} {:>22} {:>22} {:>22}",
                label.trim_start_matches("policy: "),
                ns.show(1),
                over_pass.show(1),
                over_floor.show(1)
            );
            out.insert(
                label.trim_start_matches("policy: ").into(),
                json!({"ns": ns.json(), "over_ipv4_pass_ns": over_pass.json(),
                       "over_floor_ns": over_floor.json()}),
            );
        }
        let mut ratios = serde_json::Map::new();
        for (what, big, small) in [
            ("no rule matches", MISS_500, MISS_10),
            ("rule hit", HIT_500, HIT_10),
        ] {
            let r = Spread::ratio(&s[big], &s[small]);
            let over = Spread::ratio(
                &s[big]
                    .iter()
                    .zip(floor)
                    .map(|(x, f)| x - f)
                    .collect::<Vec<_>>(),
                &s[small]
                    .iter()
                    .zip(floor)
                    .map(|(x, f)| x - f)
                    .collect::<Vec<_>>(),
            );
            println!(
                "{:<54} {:>22} {:>22}",
                format!("500 / 10 table rules, {what}"),
                r.show_ratio(),
                format!("over floor {}", over.show_ratio())
            );
            goals.insert(
                format!("P1 rule cost flat: {what}, 500 / 10 table rules <= 1.2"),
                stats::verdict_at_most(&r, 1.2),
            );
            ratios.insert(
                what.into(),
                json!({"ratio_500_to_10": r.json(), "over_floor_ratio": over.json()}),
            );
        }
        out.insert("ratio_500_to_10_rules".into(), json!(ratios));
        out.insert(
            "method".into(),
            json!("BPF_PROG_TEST_RUN of the product program of separate loads (own pins and maps), each holding P1's ten list entries and a policy applied with floodgate::policy::apply; rules: both presets, ports, ranges, TCP flags, length, TTL, ICMP, fragments (benches/policies.rs), the hit rule last in file order; limits: per-source UDP (bans), global UDP (known sources first), SYN per source, all above the test-run rate; ban placed with `floodgate bans add`. Same rounds as the 10-entry rows and floor; differences and ratios per round."),
        );
        serde_json::Value::Object(out)
    }
}
