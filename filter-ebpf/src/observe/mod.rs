//! What the program records about each packet: per-CPU counters per interface and reason, per
//! rule and per limit. (Sampled drop events come here next.)

use aya_ebpf::programs::XdpContext;
use filter_common::maps::{LIMIT_COUNTER_SLOTS, RULE_COUNTER_SLOTS};
use filter_common::{Counter, Reason, MAX_INTERFACES, REASON_SLOTS};

use crate::maps::{COUNTERS, IFACE_SLOTS, LIMIT_COUNTERS, RULE_COUNTERS};

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
