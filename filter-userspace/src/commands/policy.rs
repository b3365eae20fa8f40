//! `policy`: the malformed-packet policy; `check` and `apply`: policy files.

use std::path::Path;

use anyhow::Result;

use crate::cli::MalformedArg;
use crate::outln;
use crate::policy::{self, apply::Report, Invalid};
use crate::state::{PinDir, Session};

pub fn malformed_name(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "drop"
    }
}

pub fn malformed(pins: &PinDir, malformed: Option<MalformedArg>, json: bool) -> Result<()> {
    let (pass, generation) = match malformed {
        Some(m) => {
            let pass = m == MalformedArg::Pass;
            let generation = policy::apply::set_malformed(pins, pass)?;
            let done = format!("the policy is in force (generation {generation})");
            return if json {
                super::report_done(
                    &done,
                    format_args!(
                        "{}\n",
                        serde_json::json!({"malformed": malformed_name(pass), "generation": generation})
                    ),
                )
            } else {
                super::report_done(
                    &done,
                    format_args!("malformed packets: {}\n", malformed_name(pass)),
                )
            };
        }
        None => {
            let session = Session::open(pins)?;
            let current = session.current()?;
            (current.policy.policy.malformed_pass, current.generation)
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({"malformed": malformed_name(pass), "generation": generation})
        )?;
    } else {
        outln!("malformed packets: {}", malformed_name(pass))?;
    }
    Ok(())
}

pub fn check(file: &Path, json: bool) -> Result<()> {
    match policy::load(file) {
        Ok(p) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "valid": true,
                        "problems": [],
                        "rules": p.rules.len(),
                        "table_rules": p.table_rules(),
                        "limits": p.limits.len(),
                        "lists": {
                            "block": p.lists.block.len(),
                            "allow": p.lists.allow.len(),
                            "protected": p.lists.protected.len(),
                        },
                    })
                )?;
            } else {
                outln!(
                    "{}: valid: {} rules ({} in the tables), {} limits, lists of {} block, {} allow and {} protected entries",
                    file.display(),
                    p.rules.len(),
                    p.table_rules(),
                    p.limits.len(),
                    p.lists.block.len(),
                    p.lists.allow.len(),
                    p.lists.protected.len()
                )?;
            }
            Ok(())
        }
        Err(e) => {
            if json {
                if let Some(invalid) = e.downcast_ref::<Invalid>() {
                    outln!(
                        "{}",
                        serde_json::json!({"valid": false, "problems": invalid.0})
                    )?;
                }
            }
            Err(e)
        }
    }
}

fn say_report(r: &Report, dry_run: bool) -> Result<()> {
    let verb = if dry_run { "would" } else { "did" };
    if r.loads {
        outln!("{verb} load the filter (it is not loaded)")?;
    }
    for (list, (added, removed)) in &r.lists {
        if added + removed > 0 {
            outln!("{list} list (from the policy): {verb} add {added}, remove {removed}")?;
        }
    }
    for (what, names) in [
        ("add rule", &r.rules_added),
        ("remove rule", &r.rules_removed),
        ("change rule", &r.rules_changed),
        ("add limit", &r.limits_added),
        ("remove limit", &r.limits_removed),
        ("change limit", &r.limits_changed),
        ("attach", &r.attach),
        ("detach", &r.detach),
        ("change setting", &r.settings_changed),
    ] {
        for n in names {
            outln!("{verb} {what} {n}")?;
        }
    }
    Ok(())
}

pub fn apply(pins: &PinDir, file: &Path, dry_run: bool, force: bool, json: bool) -> Result<()> {
    let report = policy::apply::apply(pins, file, dry_run, force)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"dry_run": dry_run, "report": report})
        )?;
        return Ok(());
    }
    say_report(&report, dry_run)?;
    if dry_run {
        outln!(
            "{}: valid; nothing was changed (generation {} stays in force)",
            file.display(),
            report.generation
        )?;
    } else if report.unchanged {
        outln!(
            "{} is the policy in force already: nothing was changed (generation {} stays in force)",
            file.display(),
            report.generation
        )?;
    } else {
        outln!(
            "applied {} as generation {}",
            file.display(),
            report.generation
        )?;
    }
    Ok(())
}
