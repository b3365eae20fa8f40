//! What the controller reads back about traffic and state: [`collect`] reads a loaded filter
//! once; `stats` holds the counter readers it uses; [`metrics`] encodes a reading for
//! Prometheus; [`samples`] reads sampled drop events, which `capture` writes with [`pcap`]
//! and [`top`] ranks.
//! Commands print; nothing here writes to the terminal.

pub mod collect;
pub mod metrics;
pub mod pcap;
pub mod samples;
pub mod stats;
pub mod top;
