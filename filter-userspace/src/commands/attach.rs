//! `attach` and `detach`.

use anyhow::{anyhow, Result};

use super::report_done;
use crate::error::{exit_code, usage};
use crate::state::attach::{self as attachments, AttachOutcome, DetachOutcome, Mode};
use crate::state::PinDir;
use crate::text;

pub fn attach(
    pins: &PinDir,
    interfaces: &[String],
    mode: Mode,
    capacity: Option<u32>,
) -> Result<()> {
    let report = attachments::attach(pins, interfaces, mode, capacity)?;
    let mut lines = String::new();
    let mut changed = false;
    let mut failed = Vec::new();
    for (name, outcome) in report.outcomes {
        let shown = text::name(&name);
        match outcome {
            AttachOutcome::Attached { mode } => {
                changed = true;
                lines.push_str(&format!(
                    "attached to {shown} in {mode} mode (its counters start at zero)\n"
                ));
            }
            AttachOutcome::AlreadyAttached { mode } => {
                lines.push_str(&format!(
                    "{shown}: already attached ({mode} mode), nothing to do\n"
                ));
            }
            AttachOutcome::Failed(e) => failed.push((shown, e)),
        }
    }
    if changed {
        report_done("the filter is attached", format_args!("{lines}"))?;
    } else {
        super::out(format_args!("{lines}"))?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    let usage_only = failed.iter().all(|(_, e)| exit_code(e) == 2);
    let mut msg = if let [(name, e)] = failed.as_slice() {
        format!("not attached to {name}: {e:#}")
    } else {
        format!(
            "not attached to {} interfaces:{}",
            failed.len(),
            text::capped(
                failed.iter().map(|(name, e)| format!("\n  {name}: {e:#}")),
                ""
            )
        )
    };
    if report.unloaded {
        msg.push_str("\nnothing is attached, so this command removed what it had loaded");
    }
    Err(if usage_only { usage(msg) } else { anyhow!(msg) })
}

pub fn detach(pins: &PinDir, interfaces: &[String], all: bool) -> Result<()> {
    if all {
        return detach_all(pins);
    }
    let mut lines = String::new();
    let mut missing = Vec::new();
    for (name, outcome) in attachments::detach(pins, interfaces)? {
        let shown = text::name(&name);
        match outcome {
            DetachOutcome::Detached => lines.push_str(&format!("detached from {shown}\n")),
            DetachOutcome::Finished => lines.push_str(&format!(
                "detached from {shown} (it was only half detached: an attach or detach had been cut short)\n"
            )),
            DetachOutcome::NotAttached => missing.push(shown),
        }
    }
    if !lines.is_empty() {
        report_done("the interfaces are detached", format_args!("{lines}"))?;
    }
    if !missing.is_empty() {
        return Err(anyhow!(
            "not attached: {} (see `floodgate status`)",
            text::capped(missing, ", ")
        ));
    }
    Ok(())
}

fn detach_all(pins: &PinDir) -> Result<()> {
    let Some(removed) = attachments::detach_all(pins)? else {
        return super::out(format_args!(
            "nothing to remove: there is no pin directory at {}\n",
            pins.shown()
        ))
        .map_err(Into::into);
    };
    let names = if removed.interfaces.is_empty() {
        "no interface was attached".to_string()
    } else {
        format!(
            "detached {}",
            text::capped(removed.interfaces.iter().map(|n| text::name(n)), ", ")
        )
    };
    let done = if removed.removed_dir {
        format!("{names}; removed {}", pins.shown())
    } else {
        format!(
            "{names}; removed floodgate's pins; left {} in place (floodgate did not create {}): {}",
            pins.shown(),
            if removed.foreign.len() == 1 {
                "this"
            } else {
                "these"
            },
            text::capped(removed.foreign.iter().map(|p| text::path(p)), ", ")
        )
    };
    report_done(
        "everything is detached and removed",
        format_args!("{done}\n"),
    )
}
