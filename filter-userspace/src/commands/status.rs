//! `status`: what is loaded and attached, the policy in force (where it came from, its
//! generation, every rule and limit with its mode), list sizes, pool use, bans and the kernel
//! memory the maps take. Reads the live snapshot in place; fast with million-entry lists.

use anyhow::Result;
use filter_common::limits::{CLASS_NAMES, PER_GLOBAL};
use filter_common::trie::Family;
use filter_common::ListKind;
use serde_json::json;

use super::policy::malformed_name;
use crate::observe::collect::collect;
use crate::outln;
use crate::policy::limits::limit_id;
use crate::state::attach::LinkState;
use crate::state::PinDir;
use crate::text;

fn not_loaded(pins: &PinDir, json: bool) -> Result<()> {
    if json {
        outln!("{}", json!({"loaded": false}))?;
    } else {
        outln!(
            "floodgate is not loaded (nothing pinned at {})",
            pins.shown()
        )?;
    }
    Ok(())
}

pub fn status(pins: &PinDir, json: bool) -> Result<()> {
    let Some(obs) = collect(pins)? else {
        return not_loaded(pins, json);
    };
    let snapshot = &obs.snapshot;
    // Also clears the slots of sample readers that died (a capture killed with SIGKILL).
    let sampling = crate::observe::samples::status(pins)?;
    let applied = &snapshot.policy;
    let policy = &applied.policy;
    let memory: serde_json::Map<String, serde_json::Value> = obs
        .memory
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let total = obs.memory_total();
    let bans = obs.bans;
    let in_use = obs.pool_in_use;
    let pool = obs.pool_nodes;
    let malformed = malformed_name(policy.malformed_pass);
    let mut lists = serde_json::Map::new();
    for l in &obs.lists {
        lists
            .entry(l.list)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object")
            .insert(l.family.to_string(), json!(l.entries));
    }
    let (rule_counts, limit_counts) = (&obs.rules, &obs.limits);
    let rules: Vec<serde_json::Value> = policy
        .rules
        .iter()
        .zip(rule_counts)
        .map(|(r, c)| {
            json!({
                "name": r.name,
                "action": if r.drop { "drop" } else { "pass" },
                "mode": r.mode.name(),
                "preset": r.preset,
                "counter": applied.rule_slots.get(&r.name),
                "matched": {"packets": c.packets, "bytes": c.bytes},
            })
        })
        .collect();
    let limits: Vec<serde_json::Value> = policy
        .limits
        .iter()
        .zip(limit_counts)
        .map(|(l, c)| {
            json!({
                "refused": {"packets": c.packets, "bytes": c.bytes},
                "name": l.name,
                "class": CLASS_NAMES[l.class as usize],
                "per": if l.per == PER_GLOBAL { "global" } else { "source" },
                "pps": l.pps,
                "bps": l.bps,
                "burst": l.burst,
                "ban_seconds": l.ban_seconds,
                "mode": l.mode.name(),
                "id": limit_id(&l.name),
            })
        })
        .collect();
    if json {
        let v = json!({
            "loaded": true,
            "program_id": obs.program_id,
            "generation": snapshot.generation,
            "interfaces": obs.interfaces,
            "policy": {
                "source": policy.source,
                "applied_at": applied.applied_at,
                "block_list_mode": if policy.block_monitor { "monitor" } else { "enforce" },
                "malformed": malformed,
                "rules": rules,
                "limits": limits,
            },
            "bans": bans,
            "lists": lists,
            "list_pool": {"nodes_in_use": in_use, "capacity": pool},
            "kernel_memory_bytes": {"total": total, "maps": memory},
            "malformed_policy": malformed,
            "sampling": sampling,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!(
        "program id {} pinned at {}, generation {} in force",
        obs.program_id,
        crate::text::path(&pins.prog()),
        snapshot.generation
    )?;
    if !obs
        .interfaces
        .iter()
        .any(|a| a.state == LinkState::Attached)
    {
        outln!("attached to no interface")?;
    }
    for a in &obs.interfaces {
        let name = text::name(&a.name);
        let state = match a.state {
            LinkState::Attached if a.slot.is_none() => format!(
                "attached, but not recorded: its packets count as 'other' (`floodgate attach {name}` records it)"
            ),
            LinkState::Attached if !a.present => {
                "attached (renamed, or in another network namespace)".to_string()
            }
            LinkState::Attached => "attached".to_string(),
            LinkState::InterfaceGone => {
                format!("interface gone (run `floodgate detach {name}` to tidy up)")
            }
            LinkState::Stale => "not attached: an attach or detach was cut short and left this record (the next `floodgate attach` or `detach` clears it)".to_string(),
        };
        outln!(
            "  {name:<16} ifindex {:<6} {:<7} {state}",
            a.ifindex,
            a.mode
        )?;
    }
    match &policy.source {
        Some(src) => outln!(
            "policy: {} ({}, {})",
            text::path(src),
            text::count(policy.rules.len(), "rule", "rules"),
            text::count(policy.limits.len(), "limit", "limits")
        )?,
        None => outln!("policy: none applied (lists from block/allow commands only)")?,
    }
    for (r, c) in policy.rules.iter().zip(rule_counts) {
        outln!(
            "  rule  {:<24} {:<5} {:<8} {:>12} packets matched{}",
            text::name(&r.name),
            if r.drop { "drop" } else { "pass" },
            r.mode.name(),
            c.packets,
            r.preset
                .as_deref()
                .map(|p| format!(", preset {p}"))
                .unwrap_or_default()
        )?;
    }
    for (l, c) in policy.limits.iter().zip(limit_counts) {
        let rate = match (l.pps, l.bps) {
            (Some(p), Some(b)) => format!("{p} pps, {b} bit/s"),
            (Some(p), None) => format!("{p} pps"),
            (None, Some(b)) => format!("{b} bit/s"),
            (None, None) => String::new(),
        };
        outln!(
            "  limit {:<24} {:<7} per {:<6} {rate}, burst {}{}, {}: {} packets refused",
            text::name(&l.name),
            CLASS_NAMES[l.class as usize],
            if l.per == PER_GLOBAL {
                "global"
            } else {
                "source"
            },
            l.burst,
            l.ban_seconds
                .map(|s| format!(", ban {s} s"))
                .unwrap_or_default(),
            l.mode.name(),
            c.packets
        )?;
    }
    for kind in ListKind::ALL {
        outln!(
            "{} list: {} IPv4 and {} IPv6 entries{}",
            kind.name(),
            snapshot.union_len(kind, Family::V4),
            snapshot.union_len(kind, Family::V6),
            if kind == ListKind::Block && policy.block_monitor {
                " (monitor mode)"
            } else {
                ""
            }
        )?;
    }
    outln!("bans: {bans}")?;
    outln!(
        "list pool: {in_use} of {pool} nodes in use ({:.1}%)",
        in_use as f64 * 100.0 / f64::from(pool.max(1))
    )?;
    outln!(
        "kernel memory for maps: {:.1} MiB",
        total as f64 / (1u64 << 20) as f64
    )?;
    outln!("malformed packets: {malformed}")?;
    outln!("{}", super::sampling::render(&sampling))?;
    Ok(())
}
