//! The one mechanism by which anything the program reads changes: generations.
//!
//! The program reads the generation word (`STATE`) once per packet and uses the root tables of
//! the set it names. A change:
//!
//! 1. stores the new generation's snapshot (`state/N+1`);
//! 2. marks the inactive set dirty, writes new partitions into free pool nodes (nothing live
//!    refers to them) and brings the inactive set's root tables to the new generation;
//! 3. flips the word: active set, generation N+1, the old set now dirty (one 8-byte store);
//! 4. waits until no packet can still be reading the old set (an RCU grace period);
//! 5. brings the old set up to date, clears the dirty mark and drops `state/N`.
//!
//! Killed anywhere, the word still names a complete generation whose snapshot exists: the next
//! command rewrites any dirty set from that snapshot and drops other snapshots before it does
//! anything else. So the program sees the old lists or the new ones, never a mix, and `list`
//! (which reads the snapshot the word names) always says what the program enforces.

use std::sync::atomic::{fence, Ordering};

use anyhow::{Context, Result};
use filter_common::maps::state;
use filter_common::trie::{part_index, root_word_index, Family, ROOT_CELLS, ROOT_WORDS, SETS};
use tracing::debug;

use super::maps::ListMaps;
use super::pins::{Lock, PinDir};
use super::snapshot::Snapshot;
use crate::lists::compile::{Extent, Partition, RootTables};

/// Everything a change writes, computed before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The next generation's snapshot.
    pub snapshot: Snapshot,
    /// Partitions to write into pool nodes no live structure refers to.
    pub partitions: Vec<(Extent, Partition)>,
    /// Root tables per family before and after.
    pub roots_before: [RootTables; 2],
    pub roots_after: [RootTables; 2],
}

/// A loaded filter, locked for the duration of one command, with any interrupted change
/// repaired.
pub struct Session {
    pub pins: PinDir,
    _lock: Lock,
    maps: ListMaps,
}

/// Wait until every XDP program run that started before now has finished: membarrier's global
/// command waits for an RCU grace period, and XDP runs inside RCU read-side sections.
fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier with a plain command and no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // nohz_full kernels refuse it; a program run lasts microseconds.
        debug!(
            "membarrier failed ({}); sleeping instead",
            std::io::Error::last_os_error()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Session {
    /// Lock a loaded filter's pin directory and repair what an interrupted change left.
    pub fn open(pins: &PinDir) -> Result<Session> {
        let lock = pins.lock()?;
        let maps = ListMaps::open(pins)?;
        let mut s = Session {
            pins: pins.clone(),
            _lock: lock,
            maps,
        };
        s.recover()?;
        Ok(s)
    }

    fn word(&self) -> u64 {
        self.maps.state.get(0)
    }

    fn set_word(&mut self, w: u64) {
        fence(Ordering::SeqCst);
        self.maps.state.set(0, w);
        fence(Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        state::generation(self.word())
    }

    pub fn pool_nodes(&self) -> u32 {
        self.maps.pool_nodes()
    }

    /// The live generation's snapshot.
    pub fn current(&self) -> Result<Snapshot> {
        load_current(&self.pins, self.generation())
    }

    fn recover(&mut self) -> Result<()> {
        let word = self.word();
        let generation = state::generation(word);
        remove_other_snapshots(&self.pins, generation)?;
        let dirty: Vec<u32> = (0..SETS).filter(|&s| state::is_dirty(word, s)).collect();
        if dirty.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            "a change was interrupted; restoring the list structures of generation {generation}"
        );
        let snapshot = self.current()?;
        // A packet may still have been reading the set the interrupted change was writing.
        grace_period();
        for set in dirty {
            for family in Family::ALL {
                let roots = snapshot.root_tables(family);
                self.write_roots(set, family, None, &roots);
            }
            let word = self.word() & !state::dirty_bit(set);
            self.set_word(word);
        }
        Ok(())
    }

    /// Write root tables of `set`: every word, or only those that differ from `before`.
    fn write_roots(
        &mut self,
        set: u32,
        family: Family,
        before: Option<&RootTables>,
        after: &RootTables,
    ) {
        let word_base = root_word_index(set, family, 0) as usize;
        let part_base = part_index(set, family, 0) as usize;
        for i in 0..ROOT_WORDS as usize {
            if before.is_none_or(|b| b.words[i] != after.words[i]) {
                self.maps.root.set(word_base + i, after.words[i]);
            }
        }
        for i in 0..ROOT_CELLS as usize {
            if before.is_none_or(|b| b.parts[i] != after.parts[i]) {
                self.maps.parts.set(part_base + i, after.parts[i]);
            }
        }
    }

    /// Publish `plan` as the next generation, atomically for the program (see the module doc).
    pub fn commit(&mut self, plan: Plan) -> Result<()> {
        let t = std::time::Instant::now();
        let word = self.word();
        let generation = state::generation(word);
        let active = state::active(word);
        let inactive = 1 - active;
        debug_assert_eq!(plan.snapshot.generation, generation + 1);
        plan.snapshot.store(&self.pins)?;
        debug!("stored snapshot: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);

        self.set_word(state::compose(
            generation,
            active,
            state::dirty_bit(inactive),
        ));
        for (extent, part) in &plan.partitions {
            let first = extent.first as usize;
            let n = part.nodes.len();
            self.maps.nodes.as_mut_slice()[first..first + n].copy_from_slice(&part.nodes);
            for (slot, meta) in self.maps.meta.as_mut_slice()[first..first + n]
                .iter_mut()
                .zip(part.placed(extent.first))
            {
                *slot = meta;
            }
        }
        debug!(
            "wrote partitions: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        for family in Family::ALL {
            let f = family as usize;
            self.write_roots(
                inactive,
                family,
                Some(&plan.roots_before[f]),
                &plan.roots_after[f],
            );
        }
        // The flip: from here on every new packet reads generation N+1.
        self.set_word(state::compose(
            generation + 1,
            inactive,
            state::dirty_bit(active),
        ));
        grace_period();
        debug!(
            "flipped, grace period over: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        for family in Family::ALL {
            let f = family as usize;
            self.write_roots(
                active,
                family,
                Some(&plan.roots_before[f]),
                &plan.roots_after[f],
            );
        }
        self.set_word(state::compose(generation + 1, inactive, 0));
        remove_other_snapshots(&self.pins, generation + 1)?;
        debug!("committed: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        Ok(())
    }
}

/// The snapshot of `generation`; generation 0 may have none (nothing was ever committed).
pub fn load_current(pins: &PinDir, generation: u64) -> Result<Snapshot> {
    if generation == 0 && !pins.snapshot(0).exists() {
        return Ok(Snapshot::default());
    }
    Snapshot::load(pins, generation)
}

/// Read the generation word without taking the lock (for `list` and `status`, which only
/// read: they show the generation live at that moment).
pub fn live_generation(pins: &PinDir) -> Result<u64> {
    let data = pins.open_map(filter_common::maps::STATE)?;
    let mapped = super::raw::Mapped::<u64>::new(&data, false).context("cannot map STATE")?;
    Ok(state::generation(mapped.get(0)))
}

/// Drop every snapshot but `keep`: leftovers of changes that never took effect, or of the
/// generation just replaced.
fn remove_other_snapshots(pins: &PinDir, keep: u64) -> Result<()> {
    let dir = pins.state_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(generation) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        if generation != keep {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}
