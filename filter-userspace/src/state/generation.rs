//! The one mechanism by which anything the program reads changes: generations.
//!
//! The program reads the generation word (`STATE`) once per packet and uses the root tables of
//! the set it names. A change:
//!
//! 1. stores the new generation's snapshot (`state/N+1`);
//! 2. marks the inactive set dirty, writes new chunks into free pool nodes (nothing live
//!    refers to them) and writes the inactive set's root tables for generation N+1;
//! 3. flips the word in one 8-byte store: the active set, generation N+1, and the old set
//!    marked dirty (it still describes generation N);
//! 4. drops `state/N`.
//!
//! The next change waits, before its first write, until no packet can still be reading the old
//! set or the nodes only it refers to (an RCU grace period, started when the change begins so
//! it overlaps the planning), then overwrites that set whole. So a set is never written while
//! a packet may read it. Killed anywhere, the word still names a complete generation whose
//! snapshot exists; the next change repairs a dirty set the same way and drops snapshots of
//! other generations. So the program sees the old lists or the new ones, never a mix, and `list`
//! (which reads the snapshot the word names) always says what the program enforces.

use std::sync::atomic::{fence, Ordering};

use anyhow::{bail, Context, Result};
use filter_common::maps::state;
use filter_common::trie::{
    part_index, root_word_index, table, Family, ROOT_CELLS, ROOT_WORDS, TRIE_LISTS, TRIE_PROTECTED,
};
use tracing::debug;

use super::maps::ListMaps;
use super::pins::{Access, Locked, PinDir};
use super::snapshot::Snapshot;
use crate::lists::compile::{Placed, RootTables};
use crate::policy::apply::PolicyTables;

/// Everything a change writes, computed before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The next generation's snapshot.
    pub snapshot: Snapshot,
    /// Chunks to write into pool nodes no live structure refers to.
    pub chunks: Vec<Placed>,
    /// Root tables of the new generation, per trie and family.
    pub roots: [[RootTables; 2]; 2],
    /// Policy-wide tables of the new generation: settings, rules, limits.
    pub tables: PolicyTables,
}

/// A loaded filter, locked for the duration of one command.
pub struct Session {
    pub pins: PinDir,
    _locked: Locked,
    maps: ListMaps,
    /// The grace period a change must see end before it writes anything.
    grace: Grace,
}

/// Where the grace period of a change stands.
enum Grace {
    /// None was needed or started (a session for reading, or a clean inactive set).
    None,
    /// Under way on its own thread, overlapping the planning.
    Running(std::thread::JoinHandle<()>),
    /// Over (waited for on this thread when no thread could be started).
    Over,
}

impl Grace {
    /// Start a grace period on its own thread; if the thread cannot be started (a memory
    /// limit, say), wait for it here: slower, never wrong.
    fn start() -> Grace {
        match std::thread::Builder::new()
            .name("grace-period".into())
            .spawn(grace_period)
        {
            Ok(handle) => Grace::Running(handle),
            Err(e) => {
                debug!("cannot start a thread for the grace period ({e}); waiting here");
                grace_period();
                Grace::Over
            }
        }
    }
}

/// Wait until every XDP program run that started before now has finished: membarrier's global
/// command waits for an RCU grace period, and XDP runs inside RCU read-side sections.
fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier with a plain command and no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // nohz_full kernels refuse it; a program run lasts microseconds, so a pause stands in
        // (a heuristic, not RCU's guarantee).
        tracing::warn!(
            "membarrier failed ({}); waiting 50 ms instead of an RCU grace period",
            std::io::Error::last_os_error()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Session {
    /// Lock a loaded filter's pin directory to read it (the live generation is consistent
    /// whatever the other set holds); other readers may hold it too.
    pub fn open(pins: &PinDir) -> Result<Session> {
        Self::open_with(pins, Access::Read)
    }

    fn open_with(pins: &PinDir, access: Access) -> Result<Session> {
        let locked = Locked::loaded(pins, access)?;
        let maps = ListMaps::open(pins)?;
        Ok(Session {
            pins: pins.clone(),
            _locked: locked,
            maps,
            grace: Grace::None,
        })
    }

    /// Lock a loaded filter's pin directory to change it: snapshots of other generations
    /// (from a change cut short) are dropped, and if the inactive set may still be read by a
    /// packet from before the last flip, a grace period starts.
    pub fn open_for_change(pins: &PinDir) -> Result<Session> {
        let mut s = Self::open_with(pins, Access::Write)?;
        let word = s.word();
        remove_other_snapshots(&s.pins, state::generation(word))?;
        if state::is_dirty(word, 1 - state::active(word)) {
            s.grace = Grace::start();
        }
        Ok(s)
    }

    /// Wait for the grace period started at open, if any.
    fn settle(&mut self) {
        if let Grace::Running(g) = std::mem::replace(&mut self.grace, Grace::Over) {
            if g.join().is_err() {
                // The thread panicked before the grace period surely ended: wait again.
                grace_period();
            }
        }
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

    /// Zero the per-rule and per-limit counters of slots that new names now own.
    pub fn reset_counters(&mut self, rules: &[u32], limits: &[u32]) -> Result<()> {
        self.maps.reset_counters(&self.pins, rules, limits)
    }

    /// The live generation's snapshot.
    pub fn current(&self) -> Result<Snapshot> {
        let s = load_current(&self.pins, self.generation())?;
        s.check_pool(self.pool_nodes())?;
        Ok(s)
    }

    /// Write the root tables of `set` (about a megabyte per trie for both families: cheaper
    /// than working out which words differ).
    fn write_roots(&mut self, set: u32, trie: u32, family: Family, roots: &RootTables) {
        let t = table(set, trie, family);
        let word_base = root_word_index(t, 0) as usize;
        let part_base = part_index(t, 0) as usize;
        self.maps.root.as_mut_slice()[word_base..word_base + ROOT_WORDS as usize]
            .copy_from_slice(&roots.words);
        self.maps.parts.as_mut_slice()[part_base..part_base + ROOT_CELLS as usize]
            .copy_from_slice(&roots.parts);
    }

    /// Publish `plan` as the next generation, atomically for the program (see the module
    /// doc). Consumes the session: a second change must open a new one, which waits for a
    /// new grace period before writing the set this flip left behind.
    pub fn commit(mut self, plan: Plan) -> Result<()> {
        let t = std::time::Instant::now();
        let word = self.word();
        let generation = state::generation(word);
        let active = state::active(word);
        let inactive = 1 - active;
        debug_assert_eq!(plan.snapshot.generation, generation + 1);
        if state::is_dirty(word, inactive) && matches!(self.grace, Grace::None) {
            bail!("internal error: a change in a session not opened for change");
        }
        plan.snapshot.store(&self.pins)?;
        debug!("stored snapshot: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        self.settle();
        debug!(
            "grace period over: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        self.set_word(state::compose(
            generation,
            active,
            state::dirty_bit(inactive),
        ));
        // Chunks are mostly placed one after another from the first free node: write each
        // run of adjacent chunks through one mapping of just those nodes.
        let mut chunks: Vec<&Placed> = plan.chunks.iter().collect();
        chunks.sort_unstable_by_key(|c| c.extent.first);
        let mut i = 0;
        while i < chunks.len() {
            let first = chunks[i].extent.first;
            let mut end = chunks[i].extent.end();
            let mut j = i + 1;
            while j < chunks.len() && chunks[j].extent.first == end {
                end = chunks[j].extent.end();
                j += 1;
            }
            let (mut cells, mut metas) = self.maps.pool_window(first, end - first)?;
            for chunk in &chunks[i..j] {
                let at = (chunk.extent.first - first) as usize;
                let n = chunk.nodes.len();
                cells.as_mut_slice()[at..at + n].copy_from_slice(&chunk.nodes);
                metas.as_mut_slice()[at..at + n].copy_from_slice(&chunk.meta);
            }
            i = j;
        }
        for trie in [TRIE_LISTS, TRIE_PROTECTED] {
            for family in Family::ALL {
                self.write_roots(
                    inactive,
                    trie,
                    family,
                    &plan.roots[trie as usize][family as usize],
                );
            }
        }
        self.maps.write_policy(inactive, &plan.tables);
        debug!(
            "wrote the inactive set: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        // The flip: from here on every new packet reads generation N+1. The old set keeps
        // generation N until the next change rewrites it.
        self.set_word(state::compose(
            generation + 1,
            inactive,
            state::dirty_bit(active),
        ));
        // The change is in force: a leftover snapshot is only tidied by the next change.
        if let Err(e) = remove_other_snapshots(&self.pins, generation + 1) {
            tracing::warn!("generation {} is in force, but: {e:#}", generation + 1);
        }
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

/// Read the generation word without taking the lock: the generation live at that moment.
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
                .with_context(|| format!("cannot remove {}", crate::text::path(&entry.path())))?;
        }
    }
    Ok(())
}
