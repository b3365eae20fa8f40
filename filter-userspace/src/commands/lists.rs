//! `block` and `allow`: add, del, list, load, flush.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use filter_common::ListKind;

use crate::cli::ListAction;
use crate::lists::{self, entries, Edit};
use crate::outln;
use crate::state::{PinDir, Session};

pub fn run(pins: &PinDir, kind: ListKind, action: ListAction) -> Result<()> {
    let name = kind.name();
    // Input is read and checked before the lock is taken: a bad file changes nothing and
    // keeps no one waiting.
    let (edit, loading) = match action {
        ListAction::List => {
            let session = Session::open(pins)?;
            let snapshot = session.current()?;
            drop(session);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            for p in lists::entries(&snapshot, kind) {
                writeln!(out, "{p}")?;
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
        } => {
            let started = Instant::now();
            let prefixes = entries::read_list_file(&file)?;
            guard(pins, kind, &prefixes, force)?;
            let edit = if replace {
                Edit::Replace(prefixes)
            } else {
                Edit::Add(prefixes)
            };
            (edit, Some((file, started)))
        }
        ListAction::Flush => (Edit::Flush, None),
    };
    let change = lists::change(pins, kind, edit)?;
    if let Some((file, started)) = loading {
        eprintln!(
            "loaded {} in {:.2}s",
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    outln!(
        "{name} list: {} added, {} removed, {} entries (generation {})",
        change.added,
        change.removed,
        change.total,
        change.generation
    )?;
    Ok(())
}

/// Refuse block entries that would lock out the SSH client or a protected prefix.
fn guard(pins: &PinDir, kind: ListKind, adding: &[entries::Prefix], force: bool) -> Result<()> {
    if kind != ListKind::Block || force {
        return Ok(());
    }
    let session = Session::open(pins)?;
    crate::policy::guard::check_block_add(&session.current()?, adding)
}
