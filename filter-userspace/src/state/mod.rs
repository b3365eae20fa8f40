//! Everything the controller keeps on bpffs: the pin directory, typed map handles, the
//! generation mechanism every change goes through, the per-generation snapshots, and the
//! program's attachments.

pub mod attach;
pub mod bans;
pub mod generation;
pub mod maps;
pub mod netlink;
pub mod pins;
pub mod raw;
pub mod snapshot;

pub use generation::{Plan, Session};
pub use pins::PinDir;
pub use snapshot::{Entry, Snapshot};
