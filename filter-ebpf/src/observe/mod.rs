//! What the program records about each packet: per-CPU counters per interface and reason, per
//! rule and per limit, and sampled drop events (see `filter_common::sample`).

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes};
use aya_ebpf::programs::XdpContext;
use filter_common::limits::gcra;
use filter_common::maps::{LIMIT_COUNTER_SLOTS, RULE_COUNTER_SLOTS};
use filter_common::packet::PORT_NONE;
use filter_common::parse::{ETH_HDR_LEN, ETH_P_8021AD, ETH_P_8021Q, MAX_VLAN_TAGS, VLAN_HDR_LEN};
use filter_common::sample::{
    SampleRecord, CAP_SHIFT, DROP_REASONS, EVERY_MASK, FAMILY_NONE, FAMILY_V4, FAMILY_V6,
    READERS_SHIFT, REASONS_SHIFT, SAMPLE_BYTES, STATE_LEASE, STATE_SAMPLE,
};
use filter_common::trie::Family;
use filter_common::{Counter, Reason, MAX_INTERFACES, REASON_SLOTS};

use crate::decide::limits;
use crate::maps::{
    COUNTERS, IFACE_SLOTS, LIMIT_COUNTERS, RULE_COUNTERS, SAMPLER, SAMPLES0, SAMPLES1, SAMPLES2,
    SAMPLES3, SAMPLE_CPU, STATE,
};
use crate::parse::{self, frame_len, Parsed};

/// The counter slot of the interface the packet arrived on (0: "other").
#[inline(always)]
pub fn slot(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match IFACE_SLOTS.get(ifindex) {
        Some(&s) if s < MAX_INTERFACES => s,
        _ => 0,
    }
}

#[inline(always)]
fn add(c: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = c {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count(ctx: &XdpContext, slot: u32, reason: Reason) {
    add(
        COUNTERS.get_ptr_mut(slot * REASON_SLOTS + reason as u32),
        (ctx.data_end() - ctx.data()) as u64,
    );
}

#[inline(always)]
pub fn count_rule(counter: u32, len: u32) {
    add(
        RULE_COUNTERS.get_ptr_mut(counter % RULE_COUNTER_SLOTS),
        u64::from(len),
    );
}

#[inline(always)]
pub fn count_limit(counter: u32, len: u32) {
    add(
        LIMIT_COUNTERS.get_ptr_mut(counter % LIMIT_COUNTER_SLOTS),
        u64::from(len),
    );
}

/// Sample a judged packet if the sampling word asks for its reason: one load and one branch
/// when it does not (sampling off, or a reason nobody samples; passes never are). When it does,
/// the verdict goes to `SAMPLE_CPU` and the sampler program takes over by tail call, returning
/// the same action (if the tail call fails, the caller goes on as if nothing was sampled).
#[inline(always)]
pub fn sample(ctx: &XdpContext, reason: Reason, id: u32) {
    let word = match STATE.get(STATE_SAMPLE) {
        // SAFETY: an aligned u64 in a map value; read once, whatever the controller writes.
        Some(w) => unsafe { core::ptr::read_volatile(w) },
        None => 0,
    };
    if (word >> (REASONS_SHIFT + (reason as u32 & 15))) & 1 == 0 {
        return;
    }
    let Some(c) = SAMPLE_CPU.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value: only this CPU touches it while this program runs.
    let c = unsafe { &mut *c };
    // The 1-in-N countdown here, not in the sampler: the N-1 skipped candidates pay no tail
    // call.
    let every = (word & EVERY_MASK) as u32;
    let left = c.countdown;
    if left != 0 && left < every {
        c.countdown = left - 1;
        return;
    }
    c.countdown = every.saturating_sub(1);
    c.reason = reason as u32;
    c.id = id;
    c.record.every = every;
    // SAFETY: the sampler returns the action of the verdict handed over in `SAMPLE_CPU`.
    unsafe {
        SAMPLER.tail_call(ctx, 0);
    }
}

/// The sampler program's body: lease, token bucket, then the record, written to every
/// reader's ring. Returns the action of the verdict the main program handed over.
#[inline(always)]
pub fn take(ctx: &XdpContext) -> u32 {
    let Some(c) = SAMPLE_CPU.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU value: only this CPU touches it while this program runs.
    let c = unsafe { &mut *c };
    let reason = c.reason & 15;
    let action = if DROP_REASONS & (1 << reason) != 0 {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    let word = match STATE.get(STATE_SAMPLE) {
        // SAFETY: as in `sample`.
        Some(w) => unsafe { core::ptr::read_volatile(w) },
        None => 0,
    };
    let now = limits::now();
    if let Some(lease) = STATE.get_ptr_mut(STATE_LEASE) {
        // SAFETY: an aligned u64 in a map value.
        let expires = unsafe { core::ptr::read_volatile(lease) };
        // A word without a lease is lapsed too: the controller writes the lease before the
        // word, so only this clearing racing a republish leaves one, and a live reader
        // republishes within a second.
        if expires == 0 || now > expires {
            // The readers stopped renewing (killed): sampling ends here, not never.
            if let Some(w) = STATE.get_ptr_mut(STATE_SAMPLE) {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(w, 0) };
            }
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(lease, 0) };
            return action;
        }
    }
    let cap = (word >> CAP_SHIFT) as u32;
    if cap == 0 {
        return action;
    }
    if c.cap != cap {
        c.cap = cap;
        c.cost = 1_000_000_000 / u64::from(cap);
    }
    // A burst of one second's worth, then `cap` per second.
    let Some(tat) = gcra(c.tat, now, c.cost, c.cost * u64::from(cap - 1)) else {
        c.capped += 1;
        return action;
    };
    c.tat = tat;
    let id = c.id;
    let r = &mut c.record;
    // SAFETY: helper without preconditions.
    r.time_ns = unsafe { bpf_ktime_get_ns() };
    r.ifindex = ctx.ingress_ifindex() as u32;
    r.reason = reason;
    r.id = id;
    // The whole frame, all its fragments (multi-buffer XDP), not only the linear part.
    // SAFETY: ctx.ctx is the xdp_md the kernel passed in.
    r.wire_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    r.cap_len = copy_frame(ctx, &mut r.data) as u32;
    r.family = FAMILY_NONE;
    r.proto = 0;
    r.sport = PORT_NONE;
    r.dport = PORT_NONE;
    r.src = [0; 16];
    r.dst = [0; 16];
    if let Parsed::Ip(p) = parse::packet(ctx) {
        r.proto = p.proto;
        r.sport = p.sport;
        r.dport = p.dport;
        r.src[..8].copy_from_slice(&p.src_hi.to_be_bytes());
        r.src[8..].copy_from_slice(&p.src_lo.to_be_bytes());
        // The destination, from the copied headers (the parser checked they are there).
        let off = l3_offset(&r.data);
        match p.family {
            Family::V4 => {
                r.family = FAMILY_V4;
                let mut i = 0;
                while i < 4 {
                    r.dst[i] = r.data[(off + 16 + i) & (SAMPLE_BYTES - 1)];
                    i += 1;
                }
            }
            Family::V6 => {
                r.family = FAMILY_V6;
                let mut i = 0;
                while i < 16 {
                    r.dst[i] = r.data[(off + 24 + i) & (SAMPLE_BYTES - 1)];
                    i += 1;
                }
            }
        }
    }
    // One record per reader's ring: written, or lost to a full ring.
    let readers = (word >> READERS_SHIFT) as u32;
    let mut lost = 0;
    let mut written = 0;
    if readers & 1 != 0 {
        match SAMPLES0.output::<SampleRecord>(&*r, 0) {
            Ok(()) => written += 1,
            Err(_) => lost += 1,
        }
    }
    if readers & 2 != 0 {
        match SAMPLES1.output::<SampleRecord>(&*r, 0) {
            Ok(()) => written += 1,
            Err(_) => lost += 1,
        }
    }
    if readers & 4 != 0 {
        match SAMPLES2.output::<SampleRecord>(&*r, 0) {
            Ok(()) => written += 1,
            Err(_) => lost += 1,
        }
    }
    if readers & 8 != 0 {
        match SAMPLES3.output::<SampleRecord>(&*r, 0) {
            Ok(()) => written += 1,
            Err(_) => lost += 1,
        }
    }
    c.written += written;
    c.lost += lost;
    action
}

/// Where the network header starts in copied frame bytes (after up to two VLAN tags).
#[inline(always)]
fn l3_offset(d: &[u8; SAMPLE_BYTES]) -> usize {
    let mut off = ETH_HDR_LEN;
    let mut et = u16::from_be_bytes([d[12], d[13]]);
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (et == ETH_P_8021Q || et == ETH_P_8021AD) {
        et = u16::from_be_bytes([d[off + 2], d[off + 3]]);
        off += VLAN_HDR_LEN;
        tags += 1;
    }
    off
}

/// Copy the frame's first bytes (at most `SAMPLE_BYTES`) into `out` with one helper call
/// (`bpf_xdp_load_bytes`): no per-byte branches for the verifier to walk. Returns the bytes
/// copied.
#[inline(always)]
fn copy_frame(ctx: &XdpContext, out: &mut [u8; SAMPLE_BYTES]) -> usize {
    let len = frame_len(ctx);
    let n = if len < SAMPLE_BYTES {
        len
    } else {
        SAMPLE_BYTES
    };
    if n == 0 {
        return 0;
    }
    // SAFETY: `out` has room for `n` <= SAMPLE_BYTES bytes; the helper checks the frame.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, out.as_mut_ptr().cast(), n as u32) };
    if rc == 0 {
        n
    } else {
        0
    }
}
