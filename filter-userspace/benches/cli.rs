//! P5 and P6: what an operator waits for, through the real CLI. The `floodgate` binary runs as
//! a separate process per command against a throwaway pin directory whose program was loaded
//! with a pool large enough for every list here: `block load FILE` into an empty list, single
//! `block add`/`block del` and `status` with the large list in place, `block load --replace`;
//! and the kernel memory the real IPv6 country list takes.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use filter_common::trie::Family;
use floodgate::lists::entries::Prefix;
use floodgate::state::attach::ensure_loaded;
use serde_json::{json, Value};
use test_support::{floodgate_cmd, gen, TempFile, TestPins};

use crate::geo::{self, RealList};
use crate::stats::{self, Spread};

/// Bytes per pool node: 256 2-bit cells (64 B) and their child positions (16 B).
pub const NODE_BYTES: u64 = 80;

/// The floodgate binary against a pin directory of its own.
pub struct Cli {
    bin: &'static str,
    pub dir: TestPins,
    pub pool_nodes: u32,
}

impl Cli {
    pub fn new(pool_nodes: u32) -> Result<Self> {
        let dir = TestPins::new()?;
        ensure_loaded(&dir.pins, pool_nodes)
            .with_context(|| format!("loading the program with a {pool_nodes}-node pool"))?;
        Ok(Self {
            bin: env!("CARGO_BIN_EXE_floodgate"),
            dir,
            pool_nodes,
        })
    }

    /// Run `floodgate --pin-dir DIR ARGS` to completion: wall seconds and stdout.
    pub fn run(&self, args: &[&str]) -> Result<(f64, String)> {
        let mut cmd = floodgate_cmd(self.bin, &self.dir.pins);
        cmd.args(args);
        let started = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running floodgate {args:?}"))?;
        let secs = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "floodgate {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    pub fn status(&self) -> Result<Value> {
        let (_, out) = self.run(&["status", "--json"])?;
        serde_json::from_str(&out).context("status --json output")
    }

    pub fn path(file: &TempFile) -> Result<&str> {
        file.path.to_str().context("temp path")
    }
}

fn family_of(p: &Prefix) -> Family {
    match p {
        Prefix::V4 { .. } => Family::V4,
        Prefix::V6 { .. } => Family::V6,
    }
}

fn p16(p: &Prefix) -> u16 {
    match *p {
        Prefix::V4 { addr, .. } => (addr >> 16) as u16,
        Prefix::V6 { addr, .. } => (addr >> 112) as u16,
    }
}

/// A host entry (/32 or /128) not on `list`, in the /16 of `family` chosen by `pick` among the
/// /16s' entry counts (unicast /16s for IPv4, 2000::/3 for IPv6 when looking for few).
fn new_entry(
    list: &[Prefix],
    family: Family,
    busiest: bool,
    only: &dyn Fn(&Prefix) -> bool,
) -> Option<Prefix> {
    let mut count = BTreeMap::<u16, usize>::new();
    let candidates: Box<dyn Iterator<Item = u16>> = match family {
        Family::V4 => Box::new(0x0100..0xe000),
        Family::V6 => Box::new(0x2000..0x4000),
    };
    if !busiest {
        for c in candidates {
            count.insert(c, 0);
        }
    }
    for p in list.iter().filter(|p| family_of(p) == family && only(p)) {
        if let Some(n) = count.get_mut(&p16(p)) {
            *n += 1;
        } else if busiest {
            count.insert(p16(p), 1);
        }
    }
    let (&k, _) = if busiest {
        count
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?
    } else {
        count
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))?
    };
    let set: HashSet<&Prefix> = list.iter().collect();
    // In ::/16 (the IPv4 copy of the GeoIP database lives in ::/96), an IPv4-compatible host.
    (1u32..1 << 16).find_map(|host| {
        let p = match family {
            Family::V4 => Prefix::v4(u32::from(k) << 16 | host, 32),
            Family::V6 if k == 0 => Prefix::v6(u128::from(host) << 8 | 1, 128),
            Family::V6 => Prefix::v6(u128::from(k) << 112 | u128::from(host) << 16 | 1, 128),
        };
        (!set.contains(&p)).then_some(p)
    })
}

struct Case {
    key: &'static str,
    label: String,
    file: TempFile,
    entries: usize,
    /// (key, entry added then deleted, where it lands).
    changes: Vec<(String, Prefix, String)>,
}

impl Case {
    fn new(key: &'static str, label: String, list: &[Prefix], families: &[Family]) -> Result<Case> {
        let file = TempFile::list(list)?;
        let mut changes = Vec::new();
        for &f in families {
            let fam = f.name();
            let any = |_: &Prefix| true;
            for (busy, tag) in [(true, "busiest /16"), (false, "quietest /16")] {
                if let Some(p) = new_entry(list, f, busy, &any) {
                    changes.push((
                        format!("{fam} {tag}"),
                        p,
                        format!("{p} ({tag} of the list's {fam} entries)"),
                    ));
                }
            }
            // The real IPv6 list piles its IPv4 copies into ::/16: also a busy native /16.
            if f == Family::V6 && list.iter().any(|p| !geo::is_native_v6(p)) {
                if let Some(p) = new_entry(list, f, true, &geo::is_native_v6) {
                    changes.push((
                        "IPv6 busiest native /16".to_string(),
                        p,
                        format!("{p} (busiest /16 of native IPv6 entries)"),
                    ));
                }
            }
        }
        Ok(Case {
            key,
            label,
            file,
            entries: list.len(),
            changes,
        })
    }
}

/// Load times, change times and pool use through the CLI; `rounds` rounds, case order rotated.
pub fn p5(
    rounds: usize,
    pool_nodes: u32,
    million: usize,
    real: Option<&RealList>,
    goals: &mut serde_json::Map<String, Value>,
) -> Result<Value> {
    let cli = Cli::new(pool_nodes)?;
    // The same commands on empty lists, with the default pool and with this one: what a
    // process costs before any list work (the controller maps the whole pool).
    let default_pool = filter_common::maps::DEFAULT_POOL_NODES;
    let baselines = [
        (
            format!("empty list, {}-node pool (default)", default_pool),
            Cli::new(default_pool)?,
        ),
        (
            format!("empty list, {pool_nodes}-node pool"),
            Cli::new(pool_nodes)?,
        ),
    ];
    let mut baseline: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let m = million;
    let mk = |n: usize| {
        if n >= 1_000_000 {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{}k", n / 1000)
        }
    };
    let v4s = gen::scattered_v4(m, 21);
    let v4r = gen::realistic_v4(m, 1);
    let v6r = gen::realistic_v6(m, 2);
    let mut mixed = v4r.clone();
    mixed.extend(v6r.iter().copied());
    let mut cases = vec![
        Case::new(
            "ipv4_scattered",
            format!("{} IPv4, gen::scattered_v4", mk(m)),
            &v4s,
            &[Family::V4],
        )?,
        Case::new(
            "ipv4_realistic",
            format!("{} IPv4, gen::realistic_v4", mk(m)),
            &v4r,
            &[Family::V4],
        )?,
        Case::new(
            "ipv6_realistic",
            format!("{} IPv6, gen::realistic_v6", mk(m)),
            &v6r,
            &[Family::V6],
        )?,
        Case::new(
            "mixed",
            format!("{} mixed ({}+{})", mk(2 * m), mk(m), mk(m)),
            &mixed,
            &[Family::V4, Family::V6],
        )?,
    ];
    drop((v4s, mixed));
    if let Some(r) = real {
        cases.push(Case::new(
            "ipv6_real",
            format!("{} IPv6, real country list", mk(r.prefixes.len())),
            &r.prefixes,
            &[Family::V6],
        )?);
    }
    // --replace: FILE2 over FILE1, both of the same shape, different seeds.
    let replaces = [
        (
            "ipv4_realistic",
            format!("{} IPv4 over {} IPv4", mk(m), mk(m)),
            TempFile::list(&v4r)?,
            TempFile::list(&gen::realistic_v4(m, 3))?,
        ),
        (
            "ipv6_realistic",
            format!("{} IPv6 over {} IPv6", mk(m), mk(m)),
            TempFile::list(&v6r)?,
            TempFile::list(&gen::realistic_v6(m, 4))?,
        ),
    ];
    drop((v4r, v6r));

    let mut load: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut change: BTreeMap<(&str, String), Vec<f64>> = BTreeMap::new();
    let mut status: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut replace: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut pool: BTreeMap<&str, Value> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..cases.len() {
            let case = &cases[(i + round) % cases.len()];
            cli.run(&["block", "flush"])?;
            let (secs, _) = cli
                .run(&["block", "load", Cli::path(&case.file)?])
                .with_context(|| format!("loading {}", case.label))?;
            load.entry(case.key).or_default().push(secs);
            let st = cli.status()?;
            let listed = st["lists"]["block"]["ipv4"].as_u64().unwrap_or(0)
                + st["lists"]["block"]["ipv6"].as_u64().unwrap_or(0);
            if listed != case.entries as u64 {
                bail!(
                    "{}: {listed} entries listed after the load, expected {}",
                    case.label,
                    case.entries
                );
            }
            pool.entry(case.key).or_insert_with(|| {
                let used = st["list_pool"]["nodes_in_use"].as_u64().unwrap_or(0);
                json!({"entries": case.entries, "nodes_in_use": used,
                       "pool_bytes_used": used * NODE_BYTES,
                       "pool_bytes_per_entry": (used * NODE_BYTES) as f64 / case.entries as f64,
                       "nodes_capacity": st["list_pool"]["capacity"],
                       "kernel_memory_bytes": st["kernel_memory_bytes"]["total"]})
            });
            for (key, p, _) in &case.changes {
                let text = p.to_string();
                let (add, _) = cli.run(&["block", "add", &text])?;
                let (del, _) = cli.run(&["block", "del", &text])?;
                change
                    .entry((case.key, format!("add {key}")))
                    .or_default()
                    .push(add);
                change
                    .entry((case.key, format!("del {key}")))
                    .or_default()
                    .push(del);
            }
            let (secs, _) = cli.run(&["status"])?;
            status.entry(case.key).or_default().push(secs);
        }
        for (i, (_, b)) in baselines.iter().enumerate() {
            for (op, args) in [
                ("block add", &["block", "add", "192.0.2.1"][..]),
                ("block del", &["block", "del", "192.0.2.1"][..]),
                ("status", &["status"][..]),
            ] {
                let (secs, _) = b.run(args)?;
                baseline.entry((i, op)).or_default().push(secs * 1e3);
            }
        }
        for (key, _, file1, file2) in &replaces {
            cli.run(&["block", "flush"])?;
            cli.run(&["block", "load", Cli::path(file1)?])?;
            let (secs, _) = cli.run(&["block", "load", "--replace", Cli::path(file2)?])?;
            replace.entry(key).or_default().push(secs);
        }
        println!("  P5 round {}/{rounds} done", round + 1);
    }
    cli.run(&["block", "flush"])?;

    println!(
        "\nP5  list loads and changes through the floodgate CLI, wall time per process (median (min-max) of {rounds}; pool {} nodes)",
        cli.pool_nodes
    );
    println!(
        "{:<44} {:>22} {:>12} {:>10}",
        "block load FILE into an empty list", "seconds", "nodes used", "B/entry"
    );
    let mut out_load = serde_json::Map::new();
    for case in &cases {
        let s = Spread::of(&load[case.key]);
        let p = &pool[case.key];
        println!(
            "{:<44} {:>22} {:>12} {:>10.1}",
            case.label,
            s.show(2),
            p["nodes_in_use"],
            p["pool_bytes_per_entry"].as_f64().unwrap_or(0.0)
        );
        out_load.insert(
            case.key.into(),
            json!({"label": case.label, "entries": case.entries, "seconds": s.json(), "pool": p}),
        );
        // 1.5 s per million entries (the issue's goal for 1M; scaled for 2M, as is for 600k).
        let bound = (1.5 * case.entries as f64 / 1e6).max(1.5);
        let bound = (bound * 100.0).round() / 100.0;
        goals.insert(
            format!("P5 block load {} <= {bound} s", case.label),
            stats::verdict_at_most(&s, bound),
        );
    }
    println!(
        "\n{:<44} {:>22}",
        "with the list in place, one process each", "milliseconds"
    );
    let mut out_change = serde_json::Map::new();
    for case in &cases {
        let mut rows = serde_json::Map::new();
        for (what, samples) in change.iter().filter(|((k, _), _)| *k == case.key) {
            let ms: Vec<f64> = samples.iter().map(|s| s * 1e3).collect();
            let s = Spread::of(&ms);
            println!(
                "{:<44} {:>22}",
                format!("{}: block {}", case.label, what.1),
                s.show(1)
            );
            rows.insert(what.1.clone(), s.json());
            goals.insert(
                format!("P5 {}: block {} <= 50 ms", case.label, what.1),
                stats::verdict_at_most(&s, 50.0),
            );
        }
        let ms: Vec<f64> = status[case.key].iter().map(|s| s * 1e3).collect();
        let s = Spread::of(&ms);
        println!(
            "{:<44} {:>22}",
            format!("{}: status", case.label),
            s.show(1)
        );
        rows.insert("status".into(), s.json());
        goals.insert(
            format!("P5 {}: status <= 50 ms", case.label),
            stats::verdict_at_most(&s, 50.0),
        );
        rows.insert(
            "entries_changed".into(),
            json!(case
                .changes
                .iter()
                .map(|(k, _, d)| (k.clone(), d.clone()))
                .collect::<BTreeMap<_, _>>()),
        );
        out_change.insert(case.key.into(), Value::Object(rows));
    }
    let mut out_baseline = serde_json::Map::new();
    for (i, (label, b)) in baselines.iter().enumerate() {
        let mut rows = serde_json::Map::new();
        for ((_, op), ms) in baseline.iter().filter(|((j, _), _)| *j == i) {
            let s = Spread::of(ms);
            println!("{:<44} {:>22}", format!("{label}: {op}"), s.show(1));
            rows.insert(op.to_string(), s.json());
        }
        rows.insert("pool_nodes".into(), json!(b.pool_nodes));
        out_baseline.insert(label.clone(), Value::Object(rows));
    }
    println!(
        "\n{:<44} {:>22}",
        "block load --replace FILE2 over FILE1", "seconds"
    );
    let mut out_replace = serde_json::Map::new();
    for (key, label, _, _) in &replaces {
        let s = Spread::of(&replace[key]);
        println!("{label:<44} {:>22}", s.show(2));
        out_replace.insert(
            key.to_string(),
            json!({"label": label, "seconds": s.json()}),
        );
    }
    let pool_nodes = cli.pool_nodes;
    drop(cli);
    let apply = apply_rows(rounds, pool_nodes, million)?;
    Ok(json!({
        "pool_nodes": pool_nodes,
        "rounds": rounds,
        "load_into_empty": out_load,
        "single_changes_ms": out_change,
        "empty_list_baseline_ms": out_baseline,
        "replace": out_replace,
        "apply_policy": apply,
    }))
}

/// P6: kernel memory of the real IPv6 list in a filter loaded with the default pool (larger
/// if the list does not fit), from `status --json` and, as a cross-check, bpftool's memlock of
/// every pinned map.
pub fn p6(real: &RealList) -> Result<Value> {
    let file = TempFile::list(&real.prefixes)?;
    let mut pool_nodes = filter_common::maps::DEFAULT_POOL_NODES;
    let (cli, secs) = loop {
        let cli = Cli::new(pool_nodes)?;
        match cli.run(&["block", "load", Cli::path(&file)?]) {
            Ok((secs, _)) => break (cli, secs),
            Err(e) if pool_nodes < 1 << 26 && format!("{e:#}").contains("pool") => {
                println!(
                    "  P6: {} nodes are not enough ({e:#}); doubling",
                    pool_nodes
                );
                pool_nodes *= 2;
            }
            Err(e) => return Err(e),
        }
    };
    let st = cli.status()?;
    let used = st["list_pool"]["nodes_in_use"].as_u64().unwrap_or(0);
    let total = st["kernel_memory_bytes"]["total"].as_u64().unwrap_or(0);
    let bpftool = bpftool_memlock(cli.dir.pins.root())?;
    let bpftool_total: u64 = bpftool.values().sum();
    let n = real.prefixes.len() as f64;
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!(
        "\nP6  memory of the real IPv6 country list ({} entries), pool of {pool_nodes} nodes",
        real.prefixes.len()
    );
    println!("  pool nodes in use          {used:>12} ({:.1} MiB at {NODE_BYTES} B/node, {:.1} B per entry)", mib(used * NODE_BYTES), (used * NODE_BYTES) as f64 / n);
    println!(
        "  kernel memory (status)     {total:>12} B ({:.1} MiB, {:.0} B per entry)",
        mib(total),
        total as f64 / n
    );
    println!(
        "  kernel memory (bpftool)    {bpftool_total:>12} B ({:.1} MiB) over {} pinned maps",
        mib(bpftool_total),
        bpftool.len()
    );
    println!("  load time into the default-size filter: {secs:.2} s");
    Ok(json!({
        "list": "ipv6_real",
        "entries": real.prefixes.len(),
        "pool_nodes_capacity": pool_nodes,
        "nodes_in_use": used,
        "pool_bytes_used": used * NODE_BYTES,
        "pool_bytes_per_entry": (used * NODE_BYTES) as f64 / n,
        "kernel_memory_bytes_status": st["kernel_memory_bytes"],
        "kernel_memory_bytes_bpftool": {"total": bpftool_total, "maps": bpftool},
        "kernel_memory_bytes_per_entry": total as f64 / n,
        "load_seconds": secs,
    }))
}

/// bpftool's `bytes_memlock` of every map pinned under `root`, by path relative to it.
fn bpftool_memlock(root: &Path) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(p) = path.to_str() else { continue };
            // Programs, links and the lock file are not maps: bpftool refuses them.
            let Ok(text) = test_support::sh(&["bpftool", "map", "show", "pinned", p, "--json"])
            else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).context("bpftool map show output")?;
            if let Some(bytes) = v["bytes_memlock"].as_u64() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.insert(rel, bytes);
            }
        }
    }
    Ok(out)
}

/// Table rules of the applied policy (benches/policies.rs generates them).
const APPLY_RULES: usize = 500;

/// `floodgate apply --force FILE` of a policy with `block_files = [FILE of `entries` mixed
/// real-world-shaped entries]` and 500 table rules, to a filter attached to a veth of the
/// bench's own (no traffic crosses it), each a process timed end to end: (a) into a freshly
/// loaded, empty filter, (b) the same file again, (c) the same with one rule changed. A fresh
/// load and pair every round.
pub fn apply_rows(rounds: usize, pool_nodes: u32, entries: usize) -> Result<Value> {
    let mut list = gen::realistic_v4(entries / 2, 31);
    list.extend(gen::realistic_v6(entries - entries / 2, 32));
    let list_file = TempFile::list(&list)?;
    drop(list);
    let rules = crate::policies::rules_toml(APPLY_RULES, 7);
    let lists = format!("[lists]\nblock_files = [\"{}\"]\n", Cli::path(&list_file)?);
    // One rule changed: the telnet rule gains a port.
    let changed_rules = rules.replacen(
        r#"dst_ports = [23, "2323-2324"]"#,
        r#"dst_ports = [23, "2323-2325"]"#,
        1,
    );
    if changed_rules == rules {
        bail!("the bench's rule set no longer holds the rule the apply rows change");
    }
    let policy = TempFile::new("fgbench-apply-", format!("{lists}{rules}").as_bytes())?;
    let changed = TempFile::new(
        "fgbench-apply-",
        format!("{lists}{changed_rules}").as_bytes(),
    )?;
    let parsed = floodgate::policy::load(&policy.path)?;
    if parsed.table_rules() != APPLY_RULES {
        bail!(
            "the apply rows' policy has {} table rules, not {APPLY_RULES}",
            parsed.table_rules()
        );
    }
    drop(parsed);
    let steps = [
        ("first", "first apply into an empty filter", &policy),
        ("unchanged", "re-apply, file unchanged", &policy),
        ("one_rule_changed", "re-apply, one rule changed", &changed),
    ];
    let mut secs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let net = test_support::VethPair::new()?;
        let cli = Cli::new(pool_nodes)?;
        let root = cli.dir.pins.root().to_string_lossy().into_owned();
        net.a.exec(&[
            cli.bin,
            "--pin-dir",
            &root,
            "attach",
            "--mode",
            "native",
            &net.a_if,
        ])?;
        for (key, label, file) in steps {
            let (s, _) = cli
                .run(&["apply", "--force", Cli::path(file)?])
                .with_context(|| format!("apply: {label}"))?;
            secs.entry(key).or_default().push(s);
        }
        let st = cli.status()?;
        let listed = st["lists"]["block"]["ipv4"].as_u64().unwrap_or(0)
            + st["lists"]["block"]["ipv6"].as_u64().unwrap_or(0);
        let in_force = st["policy"]["rules"].as_array().map_or(0, Vec::len);
        if listed != entries as u64 || st["interfaces"].as_array().is_none_or(Vec::is_empty) {
            bail!(
                "after the applies: {listed} entries listed (expected {entries}), interfaces {}",
                st["interfaces"]
            );
        }
        println!(
            "  P5 apply round {}/{rounds} done ({in_force} policy rules in force, presets expanded to {APPLY_RULES} table rules)",
            round + 1
        );
        // The pins go first (the filter with them), then the pair.
        drop(cli);
        drop(net);
    }
    println!(
        "\nP5  floodgate apply --force FILE: {} block entries (block_files, gen::realistic_v4 + realistic_v6 halves) and {APPLY_RULES} table rules, filter attached, one process each (median (min-max) of {rounds}; seconds)",
        entries
    );
    let mut out = serde_json::Map::new();
    for (key, label, _) in steps {
        let s = Spread::of(&secs[key]);
        println!("{label:<44} {:>22}", s.show(2));
        out.insert(key.into(), json!({"label": label, "seconds": s.json()}));
    }
    out.insert(
        "method".into(),
        json!({"entries": entries, "table_rules": APPLY_RULES, "rounds": rounds, "pool_nodes": pool_nodes,
               "list": "block_files = [one file]: gen::realistic_v4(n/2, 31) and gen::realistic_v6(n/2, 32)",
               "rules": "benches/policies.rs rules_toml(500, 7): the P1 500-rule set",
               "changed_rule": "no-telnet's dst_ports 2323-2324 -> 2323-2325",
               "filter": "a fresh load per round, attached (native) to a veth of the bench's own namespaces; apply run as a process with --pin-dir"}),
    );
    Ok(Value::Object(out))
}
