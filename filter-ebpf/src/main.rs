//! The product object: the `floodgate` XDP program and the maps it shares with the controller.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::bindings::xdp_action;
    use aya_ebpf::macros::xdp;
    use aya_ebpf::programs::XdpContext;
    use filter_ebpf::{decide, observe, parse};

    #[xdp]
    pub fn floodgate(ctx: XdpContext) -> u32 {
        let slot = observe::slot(&ctx);
        let (reason, id) = decide::verdict_id(parse::packet(&ctx), slot);
        observe::count(&ctx, slot, reason);
        observe::sample(&ctx, reason, id);
        if reason.is_drop() {
            xdp_action::XDP_DROP
        } else {
            xdp_action::XDP_PASS
        }
    }

    /// The sampler, reached by tail call from `floodgate` for a packet to sample (see
    /// `filter_common::sample`): records it and returns the verdict's action.
    #[xdp]
    pub fn fg_sample(ctx: XdpContext) -> u32 {
        observe::take(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: the verifier rejects any program that could reach this.
        unsafe { core::hint::unreachable_unchecked() }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
