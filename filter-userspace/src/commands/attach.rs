//! `attach` and `detach`.

use anyhow::{bail, Result};

use crate::outln;
use crate::state::attach::{self as attachments, AttachOutcome, Mode};
use crate::state::PinDir;

pub fn attach(
    pins: &PinDir,
    interfaces: &[String],
    mode: Mode,
    capacity: Option<u32>,
) -> Result<()> {
    for (name, outcome) in attachments::attach(pins, interfaces, mode, capacity)? {
        match outcome {
            AttachOutcome::Attached { mode } => {
                outln!("attached to {name} in {mode} mode (its counters start at zero)")?
            }
            AttachOutcome::AlreadyAttached { mode } => {
                outln!("{name}: already attached ({mode} mode), nothing to do")?
            }
        }
    }
    Ok(())
}

pub fn detach(pins: &PinDir, interfaces: &[String], all: bool) -> Result<()> {
    if all {
        let removed = attachments::detach_all(pins)?;
        let names = if removed.interfaces.is_empty() {
            "nothing".to_string()
        } else {
            removed.interfaces.join(", ")
        };
        if removed.foreign.is_empty() {
            outln!("detached {names} and removed {}", pins.root().display())?;
        } else {
            outln!(
                "detached {names} and removed floodgate's pins; left {} in place (floodgate did not create {}): {}",
                pins.root().display(),
                if removed.foreign.len() == 1 { "it" } else { "them" },
                removed
                    .foreign
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        return Ok(());
    }
    let missing = attachments::detach(pins, interfaces)?;
    for name in interfaces {
        if !missing.contains(name) {
            outln!("detached from {name}")?;
        }
    }
    if !missing.is_empty() {
        bail!(
            "not attached: {} (see `floodgate status`)",
            missing.join(", ")
        );
    }
    Ok(())
}
