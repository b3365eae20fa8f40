//! The `floodgate` controller as a library, so integration tests drive the same code as the CLI.

pub mod attach;
pub mod cidr;
pub mod cli;
pub mod compile;
pub mod error;
pub mod lists;
pub mod pins;
pub mod privileges;
pub mod rawmap;
pub mod stats;
pub mod testing;

/// The XDP object built by build.rs (aya-build) from filter-ebpf.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floodgate"));
