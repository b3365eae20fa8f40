//! What the controller reads back about traffic: counters, and sampled drop events (written to
//! pcap files by `capture`). Metrics next.

pub mod pcap;
pub mod samples;
pub mod stats;
