//! `status`: what is loaded and attached, the generation in force, list sizes, pool use and
//! the kernel memory the maps take. Reads the live snapshot in place (no entry is copied), so
//! it stays fast with million-entry lists.

use anyhow::Result;
use filter_common::maps as names;
use filter_common::trie::Family;
use filter_common::ListKind;
use serde_json::json;

use super::policy::malformed_name;
use crate::error::is_not_loaded;
use crate::outln;
use crate::state::attach::{program_status, LinkState};
use crate::state::{maps, raw, PinDir, Session};
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
    // Under the lock: a `detach --all` in progress finishes first, and then nothing is loaded.
    let session = match Session::open(pins) {
        Ok(s) => s,
        Err(e) if is_not_loaded(&e) => return not_loaded(pins, json),
        Err(e) => return Err(e),
    };
    let Some(prog) = program_status(pins)? else {
        return not_loaded(pins, json);
    };
    let snapshot = session.current()?;
    let pool = session.pool_nodes();
    drop(session);
    let config = maps::config(pins)?.get(&0, 0)?;
    let mut memory = serde_json::Map::new();
    let mut total = 0u64;
    for name in names::PRODUCT_MAPS.iter().chain([&names::ATTACHMENTS]) {
        if let Some(bytes) = pins.open_map(name).ok().as_ref().and_then(raw::memlock) {
            memory.insert(name.to_string(), json!(bytes));
            total += bytes;
        }
    }
    if let Some(bytes) = pins
        .open_map_at(&pins.snapshot(snapshot.generation))
        .ok()
        .as_ref()
        .and_then(raw::memlock)
    {
        memory.insert("snapshot".into(), json!(bytes));
        total += bytes;
    }
    let in_use = snapshot.pool_in_use();
    let malformed = malformed_name(config.malformed_policy);
    if json {
        let lists: serde_json::Map<String, serde_json::Value> = ListKind::ALL
            .iter()
            .map(|&k| {
                (
                    k.name().to_string(),
                    json!({
                        "ipv4": snapshot.list(k, Family::V4).len(),
                        "ipv6": snapshot.list(k, Family::V6).len(),
                    }),
                )
            })
            .collect();
        let v = json!({
            "loaded": true,
            "program_id": prog.program_id,
            "generation": snapshot.generation,
            "interfaces": prog.interfaces,
            "lists": lists,
            "list_pool": {"nodes_in_use": in_use, "capacity": pool},
            "kernel_memory_bytes": {"total": total, "maps": memory},
            "malformed_policy": malformed,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!(
        "program id {} pinned at {}, lists at generation {}",
        prog.program_id,
        crate::text::path(&pins.prog()),
        snapshot.generation
    )?;
    if !prog
        .interfaces
        .iter()
        .any(|a| a.state == LinkState::Attached)
    {
        outln!("attached to no interface")?;
    }
    for a in &prog.interfaces {
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
    for kind in ListKind::ALL {
        outln!(
            "{} list: {} IPv4 and {} IPv6 entries",
            kind.name(),
            snapshot.list(kind, Family::V4).len(),
            snapshot.list(kind, Family::V6).len()
        )?;
    }
    outln!(
        "list pool: {in_use} of {pool} nodes in use ({:.1}%)",
        in_use as f64 * 100.0 / f64::from(pool.max(1))
    )?;
    outln!(
        "kernel memory for maps: {:.1} MiB",
        total as f64 / (1u64 << 20) as f64
    )?;
    outln!("malformed packets: {malformed}")?;
    Ok(())
}
