//! What the program records about each packet: per-CPU counters per interface and reason.
//! (Sampled drop events come here next.)

use aya_ebpf::programs::XdpContext;
use filter_common::{Reason, MAX_INTERFACES, REASON_SLOTS};

use crate::maps::{COUNTERS, IFACE_SLOTS};

#[inline(always)]
pub fn count(ctx: &XdpContext, reason: Reason) {
    let ifindex = ctx.ingress_ifindex() as u32;
    let slot = match IFACE_SLOTS.get(ifindex) {
        Some(&s) if s < MAX_INTERFACES => s,
        _ => 0,
    };
    if let Some(c) = COUNTERS.get_ptr_mut(slot * REASON_SLOTS + reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}
