//! The `floodgate` controller as a library, so integration tests drive the same code as the
//! CLI. One module per concern: `commands` (one per command), `state` (everything on bpffs and
//! the generation mechanism), `lists` (editing and compiling the lists), `observe` (counters).

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod error;
pub mod lists;
pub mod observe;
pub mod policy;
pub mod privileges;
pub mod state;
pub mod text;

/// The XDP object built by build.rs (aya-build) from filter-ebpf.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floodgate"));
