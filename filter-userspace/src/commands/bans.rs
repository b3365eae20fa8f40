//! `bans list|add|del|flush`.

use anyhow::Result;

use crate::cli::BansAction;
use crate::lists::entries;
use crate::outln;
use crate::policy::{apply, guard, limits::limit_id};
use crate::state::{bans, PinDir, Session};

pub fn run(pins: &PinDir, action: BansAction) -> Result<()> {
    match action {
        BansAction::List { json } => {
            let session = Session::open(pins)?;
            let snapshot = session.current()?;
            drop(session);
            let limits = &snapshot.policy.policy.limits;
            let live = bans::list(pins, |id| {
                limits
                    .iter()
                    .find(|l| limit_id(&l.name) == id)
                    .map(|l| l.name.clone())
            })?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&live)?)?;
                return Ok(());
            }
            if live.is_empty() {
                outln!("no bans")?;
            }
            for b in &live {
                let by = match (&b.limit, b.limit_id) {
                    (Some(name), _) => format!("limit {name}"),
                    (None, 0) => "by hand".to_string(),
                    (None, id) => format!("a limit no longer in the policy ({id:#x})"),
                };
                outln!("{:<44} {:>8} s left  ({by})", b.source, b.seconds_left)?;
            }
        }
        BansAction::Add {
            entries: texts,
            seconds,
            force,
        } => {
            let sources = entries::parse_args(&texts)?;
            if let Some(all) = sources.iter().find(|p| p.prefix_len() == 0) {
                // The program looks bans up at lengths of at least 1 bit: a /0 ban would be
                // listed but never enforced.
                return Err(crate::error::usage(format!(
                    "{all} would ban every source, which a ban cannot do; block it instead (floodgate block add {all})"
                )));
            }
            let session = Session::open_for_change(pins)?;
            if !force {
                guard::check_block_add(&session.current()?, &sources)?;
            }
            let lens: Vec<_> = sources
                .iter()
                .map(|p| (p.family(), p.prefix_len()))
                .collect();
            apply::ensure_ban_prefixes(session, &lens)?;
            bans::add(pins, &sources, seconds)?;
            outln!("banned {} source(s) for {seconds} s", sources.len())?;
        }
        BansAction::Del { entries: texts } => {
            let sources = entries::parse_args(&texts)?;
            let session = Session::open_for_change(pins)?;
            let missing = bans::remove(pins, &sources)?;
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
                return Err(crate::error::usage(format!(
                    "not banned: {} (see `floodgate bans list`)",
                    list.join(", ")
                )));
            }
            // Lengths no live ban uses any more are no longer looked up.
            apply::sync_ban_prefixes(session)?;
            outln!("lifted {} ban(s)", sources.len())?;
        }
        BansAction::Flush => {
            let session = Session::open_for_change(pins)?;
            let n = bans::flush(pins)?;
            apply::sync_ban_prefixes(session)?;
            outln!("lifted {n} ban(s)")?;
        }
    }
    Ok(())
}
