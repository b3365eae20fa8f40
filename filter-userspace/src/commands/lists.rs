//! `block` and `allow`: add, del, list, load, flush.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use filter_common::ListKind;

use super::report_done;
use crate::cli::ListAction;
use crate::error::usage;
use crate::lists::{self, entries, Edit};
use crate::state::{Entry, PinDir, Session};
use crate::text;

pub fn run(pins: &PinDir, kind: ListKind, action: ListAction) -> Result<()> {
    let name = kind.name();
    // Input is read and checked before the lock is taken: a bad file changes nothing and
    // keeps no one waiting.
    let (edit, loading) = match action {
        ListAction::List { json } => {
            let session = Session::open(pins)?;
            let snapshot = session.current()?;
            drop(session);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            if json {
                // Written entry by entry: two million entries need no document in memory.
                write!(
                    out,
                    "{{\"list\":\"{name}\",\"generation\":{},\"entries\":[",
                    snapshot.generation
                )?;
                for (i, p) in lists::entries(&snapshot, kind).enumerate() {
                    // A prefix prints as digits, dots, colons and a slash: nothing to escape.
                    write!(out, "{}\"{p}\"", if i == 0 { "" } else { "," })?;
                }
                writeln!(out, "]}}")?;
            } else {
                for p in lists::entries(&snapshot, kind) {
                    writeln!(out, "{p}")?;
                }
            }
            out.flush()?;
            return Ok(());
        }
        ListAction::Add { entries, force } => {
            let prefixes = entries::parse_args(&entries)?;
            guard(pins, kind, &prefixes, force)?;
            (Edit::Add(prefixes), None)
        }
        ListAction::Del { entries } => (Edit::Del(entries::parse_args(&entries)?), None),
        ListAction::Load {
            file,
            replace,
            force,
            allow_empty,
        } => {
            let started = Instant::now();
            let prefixes = entries::read_list_file(&file)?;
            let shown = if file.as_os_str() == "-" {
                "standard input".to_string()
            } else {
                text::path(&file)
            };
            if replace && prefixes.is_empty() && !allow_empty {
                // `curl ... | floodgate block load --replace -` must not flush the list
                // when the download fails.
                return Err(usage(format!(
                    "{shown} holds no entries: --replace would empty the {name} list, so nothing was changed; if the list should be empty, add --allow-empty (or run `floodgate {name} flush`)"
                )));
            }
            guard(pins, kind, &prefixes, force)?;
            let edit = if replace {
                Edit::Replace(prefixes)
            } else {
                Edit::Add(prefixes)
            };
            (edit, Some((shown, started)))
        }
        ListAction::Flush => (Edit::Flush, None),
    };
    let change = match edit {
        Edit::Del(prefixes) => {
            // Checked here so the message stays short whatever was passed.
            let session = Session::open_for_change(pins)?;
            refuse_absent(&session, kind, &prefixes)?;
            lists::change_in(session, kind, Edit::Del(prefixes))?
        }
        edit => lists::change(pins, kind, edit)?,
    };
    if let Some((shown, started)) = loading {
        let _ = writeln!(
            std::io::stderr(),
            "loaded {shown} in {:.2}s",
            started.elapsed().as_secs_f64()
        );
    }
    let report = format_args!(
        "{name} list: {} added, {} removed, {} (generation {})\n",
        change.added,
        change.removed,
        text::count(change.total, "entry", "entries"),
        change.generation
    );
    if change.added == 0 && change.removed == 0 {
        return super::out(report).map_err(Into::into);
    }
    report_done(
        &format!(
            "the change took effect (the {name} list is at generation {})",
            change.generation
        ),
        report,
    )
}

/// Refuse to delete entries that are not on the list (exactly as added): the first ten are
/// named, the rest counted.
fn refuse_absent(session: &Session, kind: ListKind, prefixes: &[entries::Prefix]) -> Result<()> {
    let snapshot = session.current()?;
    let mut absent: Vec<entries::Prefix> = prefixes
        .iter()
        .copied()
        .filter(|p| {
            !snapshot
                .list(crate::state::snapshot::Origin::Cli, kind, p.family())
                .contains(&Entry::of(*p))
        })
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    absent.sort_unstable();
    absent.dedup();
    let name = kind.name();
    Err(usage(format!(
        "not on the {name} list: {}; nothing was changed (see `floodgate {name} list`)",
        text::capped(absent.iter().map(|p| p.to_string()), ", ")
    )))
}

/// Refuse block entries that would lock out the SSH client or a protected prefix.
fn guard(pins: &PinDir, kind: ListKind, adding: &[entries::Prefix], force: bool) -> Result<()> {
    if kind != ListKind::Block || force {
        return Ok(());
    }
    let session = Session::open(pins)?;
    crate::policy::guard::check_block_add(&session.current()?, adding)
}
