//! Sampled drop events, the controller's side: reader slots, the sampling word and its lease,
//! and reading one slot's ring (see `filter_common::sample` for the program's side).
//!
//! A reader claims one of the `READER_SLOTS` rings by holding a flock on the directory
//! `readers/N` under the pin directory for as long as it runs: the kernel drops the lock when
//! the reader dies, however it dies, so a slot whose lock can be taken belongs to nobody. The
//! sampling words in `STATE` are only written under a flock on `readers/` itself. The word the
//! program reads is always recomputed from the operator's setting and the live readers: a
//! reader that raises sampling (capture) never changes the setting, so ending it (normally, on
//! Ctrl-C or SIGTERM, or by dying) returns to it. A reader renews a lease every second; if it
//! is killed, the program turns sampling off by itself once the lease lapses, and the next
//! `capture` or `status` clears the dead reader's slot.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use filter_common::maps as names;
use filter_common::sample::{
    cpu_cap, effective, reader_word, SampleCpu, SampleWord, DEFAULT_CAP, LEASE_NS, MAX_CPU_CAP,
    READER_ACTIVE, READER_SLOTS, STATE_LEASE, STATE_READERS, STATE_SAMPLE, STATE_SAMPLE_CONF,
};

use crate::state::bans::now_ns;
use crate::state::raw::Mapped;
use crate::state::PinDir;
use crate::text;

/// 1 in this many drops when nobody set another (for readers that do not raise sampling).
pub const DEFAULT_EVERY: u32 = 1000;

fn readers_dir(pins: &PinDir) -> PathBuf {
    pins.root().join("readers")
}

fn slot_dir(pins: &PinDir, slot: u32) -> PathBuf {
    readers_dir(pins).join(slot.to_string())
}

/// Create the reader slots' lock directories: done when the filter is loaded, under the lock
/// that loading holds, so that a reader never creates (or recreates, racing a `detach --all`)
/// anything in the pin directory.
pub fn create_slots(pins: &PinDir) -> Result<()> {
    for slot in 0..READER_SLOTS {
        let d = slot_dir(pins, slot);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", text::path(&d)))?;
    }
    Ok(())
}

/// CPUs the program runs on: the cap is shared among them (possible but offline CPUs never
/// take a sample, so counting them would shrink the cap).
fn online_cpus() -> Result<u32> {
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?;
    Ok((cpus.len() as u32).max(1))
}

/// flock without waiting; false if someone else holds it.
fn try_lock(file: &File) -> Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e.into()),
        }
    }
}

/// The `STATE` map, mapped, with the lock on sampling's words held.
struct SamplingState {
    state: Mapped<u64>,
    _lock: File,
}

impl SamplingState {
    fn open(pins: &PinDir) -> Result<Self> {
        // Never recreate the directories of a filter that `detach --all` removed meanwhile.
        pins.require_loaded()?;
        let dir = readers_dir(pins);
        // Gone: a `detach --all` removed the filter meanwhile (never recreate its directories).
        let lock = File::open(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => pins.not_loaded(),
            _ => anyhow::Error::new(e).context(format!("cannot open {}", text::path(&dir))),
        })?;
        loop {
            // SAFETY: flock on a descriptor we own; held briefly by whoever has it.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e).with_context(|| format!("cannot lock {}", text::path(&dir)));
            }
        }
        let data = pins.open_map(names::STATE)?;
        let state = Mapped::<u64>::new(&data, true).context("cannot map STATE")?;
        if state.len() != names::STATE_ENTRIES as usize {
            bail!(
                "map STATE holds {} entries, this floodgate expects {}: run `floodgate detach --all` and attach again",
                state.len(),
                names::STATE_ENTRIES
            );
        }
        Ok(Self { state, _lock: lock })
    }

    fn conf(&self) -> Result<SampleWord> {
        let w = self.state.get(STATE_SAMPLE_CONF as usize);
        if w != 0 {
            return Ok(SampleWord::unpack(w));
        }
        let cpus = online_cpus()?;
        Ok(SampleWord {
            every: DEFAULT_EVERY,
            cpu_cap: cpu_cap(DEFAULT_CAP, cpus),
            ..SampleWord::default()
        })
    }

    fn readers(&self) -> Vec<u64> {
        (0..READER_SLOTS)
            .map(|s| self.state.get((STATE_READERS + s) as usize))
            .collect()
    }

    /// Clear the slots of readers that are gone (their lock is free).
    fn tidy(&mut self, pins: &PinDir) -> Result<()> {
        for slot in 0..READER_SLOTS {
            let i = (STATE_READERS + slot) as usize;
            if self.state.get(i) & READER_ACTIVE == 0 {
                continue;
            }
            let dead = match File::open(slot_dir(pins, slot)) {
                Ok(f) => try_lock(&f)?,
                Err(_) => true,
            };
            if dead {
                tracing::info!("sample reader slot {slot} belonged to a reader that is gone");
                self.state.set(i, 0);
            }
        }
        Ok(())
    }

    /// Write the word the program reads, and a fresh lease if anyone reads.
    fn publish(&mut self) -> Result<u64> {
        let word = effective(self.conf()?, &self.readers());
        let lease = if word == 0 { 0 } else { now_ns() + LEASE_NS };
        // The lease first: the program must never see the new word with a lapsed lease.
        self.state.set(STATE_LEASE as usize, lease);
        self.state.set(STATE_SAMPLE as usize, word);
        Ok(word)
    }
}

/// What sampling has done since the filter was loaded, over all CPUs: samples written to the
/// readers' rings, samples the per-second cap refused, and records lost to a full ring (one per
/// ring that refused one: a reader that does not keep up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SampleTotals {
    pub written: u64,
    pub capped: u64,
    pub lost: u64,
}

/// Read [`SampleTotals`] (no lock, no write: a reading).
pub fn totals(pins: &PinDir) -> Result<SampleTotals> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let sums = crate::state::raw::percpu_array_sums::<SampleCpu>(
        &pins.open_map(names::SAMPLE_CPU)?,
        1,
        cpus,
        |a, b| {
            a.written += b.written;
            a.capped += b.capped;
            a.lost += b.lost;
        },
    )
    .context("cannot read the sampler's counters")?;
    let s = sums[0];
    Ok(SampleTotals {
        written: s.written,
        capped: s.capped,
        lost: s.lost,
    })
}

/// Sampling as it stands, for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SamplingStatus {
    /// The operator's setting: 1 in `every` drops, at most `cap_per_second` records.
    pub every: u32,
    pub cap_per_second: u64,
    /// Readers taking samples now, and whether one of them raised sampling to every drop.
    pub readers: u32,
    pub raised: bool,
    /// What the program applies now: 0 when sampling is off.
    pub effective_every: u32,
    pub samples: SampleTotals,
}

/// Clear dead readers and republish (so a killed capture leaves nothing raised), then report.
pub fn status(pins: &PinDir) -> Result<SamplingStatus> {
    let mut s = SamplingState::open(pins)?;
    s.tidy(pins)?;
    let word = s.publish()?;
    let conf = s.conf()?;
    let cpus = u64::from(online_cpus()?);
    let readers = s.readers();
    Ok(SamplingStatus {
        every: conf.every,
        cap_per_second: u64::from(conf.cpu_cap) * cpus,
        readers: readers.iter().filter(|&&r| r & READER_ACTIVE != 0).count() as u32,
        raised: readers
            .iter()
            .any(|&r| r & READER_ACTIVE != 0 && r & filter_common::sample::READER_RAISES != 0),
        effective_every: SampleWord::unpack(word).every,
        samples: totals(pins)?,
    })
}

/// Change the operator's setting (1 in `every`, `cap` records per second over all CPUs).
pub fn configure(pins: &PinDir, every: Option<u32>, cap: Option<u32>) -> Result<()> {
    let mut s = SamplingState::open(pins)?;
    let mut conf = s.conf()?;
    if let Some(e) = every {
        conf.every = e;
    }
    if let Some(c) = cap {
        let cpus = online_cpus()?;
        let most = u64::from(MAX_CPU_CAP) * u64::from(cpus);
        if u64::from(c) > most {
            return Err(crate::error::usage(format!(
                "--cap {c} is more than the program can count: at most {most} records/s on this machine ({MAX_CPU_CAP} per CPU); sampling was not changed"
            )));
        }
        conf.cpu_cap = cpu_cap(c, cpus);
    }
    conf.readers = 0;
    conf.reasons = 0;
    s.state.set(STATE_SAMPLE_CONF as usize, conf.pack());
    s.tidy(pins)?;
    s.publish()?;
    Ok(())
}

/// A reader of samples: one ring, claimed for as long as this lives.
pub struct Reader {
    pins: PinDir,
    slot: u32,
    word: u64,
    ring: RingBuf<MapData>,
    /// The flock on `readers/N` that makes the slot ours.
    _claim: File,
    released: bool,
}

impl Reader {
    /// Claim a free slot and start sampling `reasons` (bit per reason) into it; `raises`
    /// takes every such drop (as far as the cap allows) while this reader lives.
    pub fn claim(pins: &PinDir, reasons: u32, raises: bool) -> Result<Reader> {
        let mut s = SamplingState::open(pins)?;
        s.tidy(pins)?;
        let mut claimed = None;
        for slot in 0..READER_SLOTS {
            let f = File::open(slot_dir(pins, slot))?;
            if try_lock(&f)? {
                claimed = Some((slot, f));
                break;
            }
        }
        let Some((slot, claim)) = claimed else {
            bail!(
                "{READER_SLOTS} readers are taking samples already (captures or top): wait for one to end"
            );
        };
        let data = pins.open_map(names::SAMPLES[slot as usize])?;
        let mut ring = RingBuf::try_from(aya::maps::Map::RingBuf(data))
            .with_context(|| format!("{} is not a ring buffer", names::SAMPLES[slot as usize]))?;
        // What a previous reader of this slot left unread is not ours.
        while ring.next().is_some() {}
        let word = reader_word(reasons, raises);
        s.state.set((STATE_READERS + slot) as usize, word);
        s.publish()?;
        Ok(Reader {
            pins: pins.clone(),
            slot,
            word,
            ring,
            _claim: claim,
            released: false,
        })
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The ring, to read.
    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// The ring's descriptor registered with the tokio runtime, to wait until it is readable.
    pub fn readable(&mut self) -> Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
        use std::os::fd::AsFd;
        let dup = self
            .ring
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate the ring's descriptor")?;
        // SAFETY: the AsyncFd owns `dup`, open until the AsyncFd is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        Ok(fd)
    }

    /// Renew the lease (call every second or so); re-registers if the program let the lease
    /// lapse (this process was stopped for longer than the lease).
    pub fn renew(&mut self) -> Result<()> {
        let mut s = SamplingState::open(&self.pins)?;
        s.state.set((STATE_READERS + self.slot) as usize, self.word);
        s.tidy(&self.pins)?;
        s.publish()?;
        Ok(())
    }

    /// Stop sampling for this reader and return the word to what the others (or the setting)
    /// need.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        Self::unregister(&self.pins, self.slot)
    }

    fn unregister(pins: &PinDir, slot: u32) -> Result<()> {
        let mut s = SamplingState::open(pins)?;
        s.state.set((STATE_READERS + slot) as usize, 0);
        s.tidy(pins)?;
        s.publish()?;
        Ok(())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = Self::unregister(&self.pins, self.slot) {
                tracing::warn!(
                    "could not end sampling for reader slot {}: {e:#}",
                    self.slot
                );
            }
        }
    }
}
