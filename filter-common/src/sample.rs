//! Sampled drop events: the record the program writes to the sample rings, and the sampling
//! word that says whether, how often and for whom it writes one. Defined once here; the
//! program fills records, the controller reads them (`floodgate capture`).
//!
//! **Cost.** The program reads the sampling word (`STATE[STATE_SAMPLE]`) after the verdict,
//! and only tests one bit of it: the bit of the packet's reason. With sampling off the word is
//! 0, so every packet pays one read of an array map (inlined by the verifier: an index check,
//! a null check, the load) and one branch, and passes are never sampled (their bits are never
//! set). Past that bit, a per-CPU countdown takes 1 in `every` packets; only those pay a tail
//! call, where a per-CPU token bucket (coarse clock) keeps at most `cap` records per second per
//! CPU (after a burst of up to one second's worth), and only then is a record filled and
//! handed to the rings.
//!
//! **A program of its own.** For a packet the countdown takes, the main program stores the
//! verdict in `SAMPLE_CPU` and tail-calls the sampler (`fg_sample`, in the `SAMPLER` program array), which parses the
//! frame again for the record's fields and returns the same action. The verifier checks the
//! sampler once, on its own, instead of once for every path through the verdict.
//!
//! **Readers.** A BPF ring buffer has one consumer position, so one ring cannot feed two
//! readers. There are [`READER_SLOTS`] rings (`SAMPLES0`...); a reader (capture, later top)
//! claims a free one and sets its bit in the word; the program writes each sampled record to
//! every ring whose bit is set, so every reader gets every sample.
//!
//! **Leases.** A reader renews `STATE[STATE_LEASE]` (a `bpf_ktime_get_coarse_ns` time) while
//! it runs. Once the lease lapses (or the word has no lease) the program itself turns sampling
//! off (it writes 0 to the
//! word and the lease), so a reader killed with SIGKILL cannot leave sampling raised: at most
//! [`LEASE_NS`] later the next candidate packet ends it, and the next `capture` or `status`
//! tidies the word as well.

use bytemuck::{Pod, Zeroable};

/// Bytes of the frame a record carries.
pub const SAMPLE_BYTES: usize = 128;
/// Rings (and so readers at once).
pub const READER_SLOTS: u32 = 4;
/// Bytes of each ring: about a second of records at the default cap (208 bytes each in the
/// ring), so a reader that wakes late loses nothing.
pub const RING_BYTES: u32 = 256 * 1024;
/// Default cap, records per second over all CPUs: a flood can never send a reader more than
/// this (about 200 KiB/s), and a capture of a modest flood still fills in seconds.
pub const DEFAULT_CAP: u32 = 1000;
/// How long a reader's raise lasts without renewal.
pub const LEASE_NS: u64 = 5_000_000_000;

/// `STATE` entries of sampling.
pub const STATE_SAMPLE: u32 = 2;
pub const STATE_LEASE: u32 = 3;
/// The operator's setting (`every` and `cap`, no readers): what readers that do not raise
/// sampling get, and what the effective word returns to when a raise ends.
pub const STATE_SAMPLE_CONF: u32 = 4;
/// One word per reader slot: 0 free, else [`reader_word`].
pub const STATE_READERS: u32 = 5;

/// Record id when no rule or limit decided.
pub const ID_NONE: u32 = u32::MAX;

/// The sampling word, packed: `every` (1 in N; 0 off) in bits 0..24, the reader rings in bits
/// 24..32, the sampled reasons in bits 32..48 (bit `32 + reason`), the per-CPU cap per second
/// in bits 48..64.
pub const EVERY_MASK: u64 = 0xff_ffff;
pub const MAX_EVERY: u32 = EVERY_MASK as u32;
pub const READERS_SHIFT: u32 = 24;
pub const REASONS_SHIFT: u32 = 32;
pub const CAP_SHIFT: u32 = 48;
pub const MAX_CPU_CAP: u32 = 0xffff;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleWord {
    pub every: u32,
    pub readers: u32,
    pub reasons: u32,
    pub cpu_cap: u32,
}

impl SampleWord {
    pub const fn pack(self) -> u64 {
        (self.every as u64 & EVERY_MASK)
            | ((self.readers as u64 & 0xff) << READERS_SHIFT)
            | ((self.reasons as u64 & 0xffff) << REASONS_SHIFT)
            | ((self.cpu_cap as u64 & 0xffff) << CAP_SHIFT)
    }

    pub const fn unpack(w: u64) -> SampleWord {
        SampleWord {
            every: (w & EVERY_MASK) as u32,
            readers: ((w >> READERS_SHIFT) & 0xff) as u32,
            reasons: ((w >> REASONS_SHIFT) & 0xffff) as u32,
            cpu_cap: (w >> CAP_SHIFT) as u32,
        }
    }
}

/// Reasons whose action is XDP_DROP (bit per reason), for the sampler's return.
pub const DROP_REASONS: u32 = {
    use crate::Reason::*;
    (1 << DroppedBlocklist as u32)
        | (1 << DroppedMalformed as u32)
        | (1 << DroppedRule as u32)
        | (1 << DroppedRateLimit as u32)
        | (1 << DroppedBanned as u32)
};

/// Reasons that may ever be sampled: drops and monitored packets, never passes.
pub const fn sampleable(reason_bits: u32) -> u32 {
    reason_bits & (DROP_REASONS | (1 << crate::Reason::Monitored as u32))
}

/// A reader slot's word: its reasons (bits 0..16), and bit 16 when it raises sampling to
/// every packet (as far as the cap allows).
pub const READER_RAISES: u64 = 1 << 16;
pub const READER_ACTIVE: u64 = 1 << 17;
pub const fn reader_word(reasons: u32, raises: bool) -> u64 {
    (reasons as u64 & 0xffff) | READER_ACTIVE | if raises { READER_RAISES } else { 0 }
}

/// The effective word for the operator's setting `conf` and the reader slots' words
/// (index = slot): 0 when no reader is registered or nothing would be sampled.
pub fn effective(conf: SampleWord, readers: &[u64]) -> u64 {
    let mut w = SampleWord {
        every: conf.every,
        readers: 0,
        reasons: 0,
        cpu_cap: conf.cpu_cap,
    };
    for (i, &r) in readers.iter().enumerate() {
        if r & READER_ACTIVE == 0 {
            continue;
        }
        w.readers |= 1 << i;
        w.reasons |= sampleable(r as u32 & 0xffff);
        if r & READER_RAISES != 0 {
            w.every = 1;
        }
    }
    if w.readers == 0 || w.reasons == 0 || w.every == 0 || w.cpu_cap == 0 {
        return 0;
    }
    w.pack()
}

/// Per-CPU cap for a total cap over `cpus` CPUs (rounded up, within the word's 16 bits).
pub fn cpu_cap(total: u32, cpus: u32) -> u32 {
    total.div_ceil(cpus.max(1)).clamp(1, MAX_CPU_CAP)
}

/// Family values of a record.
pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// One sampled packet, as the program writes it to a ring (208 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SampleRecord {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was judged.
    pub time_ns: u64,
    pub ifindex: u32,
    /// [`Reason`](crate::Reason) as u32.
    pub reason: u32,
    /// Counter slot of the rule or limit that decided, or [`ID_NONE`].
    pub id: u32,
    /// Frame length on the wire, and the bytes of it in `data`.
    pub wire_len: u32,
    pub cap_len: u32,
    /// The 1 in N this sample was taken at: how many drops it stands for (readers' estimates
    /// weigh it by this, not by a setting read later).
    pub every: u32,
    pub reserved2: u32,
    /// `FAMILY_*`, and the transport protocol (0 for a frame that was not parsed).
    pub family: u8,
    pub proto: u8,
    pub reserved: u16,
    /// Ports, or [`PORT_NONE`](crate::packet::PORT_NONE).
    pub sport: u32,
    pub dport: u32,
    /// Source and destination: an IPv4 address in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub data: [u8; SAMPLE_BYTES],
}

/// What the program keeps per CPU for sampling: the countdown, the token bucket, the verdict
/// being sampled and the record being filled (too large for the BPF stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SampleCpu {
    /// Candidates to skip before the next sample.
    pub countdown: u32,
    /// The cap `cost` was computed for.
    pub cap: u32,
    /// Nanoseconds per record at the cap, and the bucket's theoretical arrival time.
    pub cost: u64,
    pub tat: u64,
    /// The verdict handed to the sampler program (`fg_sample`, reached by tail call).
    pub reason: u32,
    pub id: u32,
    /// Records this CPU wrote to the readers' rings (one per ring), samples the cap refused,
    /// and records a full ring refused (one per ring): what a reader missed, and why.
    pub written: u64,
    pub capped: u64,
    pub lost: u64,
    pub record: SampleRecord,
}

#[cfg(feature = "std")]
impl SampleRecord {
    pub fn src_addr(&self) -> Option<std::net::IpAddr> {
        addr(self.family, &self.src)
    }

    pub fn dst_addr(&self) -> Option<std::net::IpAddr> {
        addr(self.family, &self.dst)
    }

    pub fn reason(&self) -> Option<crate::Reason> {
        crate::Reason::from_u32(self.reason)
    }

    /// The captured bytes (at most [`SAMPLE_BYTES`], however the record claims more).
    pub fn bytes(&self) -> &[u8] {
        &self.data[..(self.cap_len as usize).min(SAMPLE_BYTES)]
    }

    /// A record read from a ring: `None` if it is not exactly one record.
    pub fn from_bytes(b: &[u8]) -> Option<SampleRecord> {
        (b.len() == core::mem::size_of::<SampleRecord>()).then(|| bytemuck::pod_read_unaligned(b))
    }
}

#[cfg(feature = "std")]
fn addr(family: u8, a: &[u8; 16]) -> Option<std::net::IpAddr> {
    match family {
        FAMILY_V4 => Some(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()),
        FAMILY_V6 => Some(std::net::Ipv6Addr::from(*a).into()),
        _ => None,
    }
}

const _: () = assert!(core::mem::size_of::<SampleRecord>() == 208);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;

    #[test]
    fn word_round_trips() {
        let w = SampleWord {
            every: 1000,
            readers: 0b101,
            reasons: 1 << 3,
            cpu_cap: 500,
        };
        assert_eq!(SampleWord::unpack(w.pack()), w);
        assert_eq!(w.pack() >> (REASONS_SHIFT + 3) & 1, 1);
    }

    #[test]
    fn no_reader_means_off() {
        let conf = SampleWord {
            every: 10,
            cpu_cap: 100,
            ..Default::default()
        };
        assert_eq!(effective(conf, &[0; 4]), 0);
    }

    #[test]
    fn a_raising_reader_samples_every_packet_of_its_reasons_only_drops() {
        let conf = SampleWord {
            every: 1000,
            cpu_cap: 100,
            ..Default::default()
        };
        let reasons = (1 << Reason::DroppedBlocklist as u32) | (1 << Reason::Passed as u32);
        let w = SampleWord::unpack(effective(conf, &[0, reader_word(reasons, true), 0, 0]));
        assert_eq!(w.every, 1);
        assert_eq!(w.readers, 0b10);
        assert_eq!(w.reasons, 1 << Reason::DroppedBlocklist as u32);
        assert_eq!(w.cpu_cap, 100);
    }

    #[test]
    fn a_reader_that_does_not_raise_gets_the_setting() {
        let conf = SampleWord {
            every: 1000,
            cpu_cap: 100,
            ..Default::default()
        };
        let w = SampleWord::unpack(effective(conf, &[reader_word(0xffff, false)]));
        assert_eq!(w.every, 1000);
        let off = SampleWord { every: 0, ..conf };
        assert_eq!(effective(off, &[reader_word(0xffff, false)]), 0);
    }

    #[test]
    fn drop_reasons_are_the_drops() {
        for r in Reason::ALL {
            assert_eq!(DROP_REASONS & (1 << r as u32) != 0, r.is_drop(), "{r:?}");
        }
    }

    #[test]
    fn cap_is_split_over_cpus() {
        assert_eq!(cpu_cap(1000, 3), 334);
        assert_eq!(cpu_cap(1, 64), 1);
        assert_eq!(cpu_cap(u32::MAX, 1), MAX_CPU_CAP);
    }

    #[cfg(feature = "std")]
    #[test]
    fn record_decodes() {
        use std::string::ToString;
        let mut r = SampleRecord::zeroed();
        r.family = FAMILY_V4;
        r.src[..4].copy_from_slice(&[198, 18, 0, 66]);
        r.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
        r.cap_len = 300;
        r.reason = Reason::DroppedBlocklist as u32;
        let back = SampleRecord::from_bytes(bytemuck::bytes_of(&r)).unwrap();
        assert_eq!(back.src_addr().unwrap().to_string(), "198.18.0.66");
        assert_eq!(back.dst_addr().unwrap().to_string(), "198.18.0.1");
        assert_eq!(back.bytes().len(), SAMPLE_BYTES);
        assert_eq!(back.reason(), Some(Reason::DroppedBlocklist));
        assert!(SampleRecord::from_bytes(&[0u8; 10]).is_none());
    }
}
