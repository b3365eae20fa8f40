//! floodgate's XDP program as a library of layers, shared by the product object
//! (`src/main.rs`) and the bench object (`src/bench.rs`):
//!
//! - `parse`: bounds-checked reads and the Ethernet, VLAN, IPv4, IPv6 and transport headers;
//! - `decide`: the verdict for a parsed packet (lists now; rules, limits and bans next);
//! - `observe`: what is counted (per-CPU counters now; sampled events next);
//! - `maps`: every map, named as `filter_common::maps` says.
//!
//! The per-packet path does no logging, takes only bounded loops and touches per-CPU counters.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "compare-and-swap on map values: the bpf target offers no atomic types"
    )
)]

#[cfg(target_arch = "bpf")]
mod btf_map;
#[cfg(target_arch = "bpf")]
pub mod decide;
#[cfg(target_arch = "bpf")]
pub mod maps;
#[cfg(target_arch = "bpf")]
pub mod observe;
#[cfg(target_arch = "bpf")]
pub mod parse;
