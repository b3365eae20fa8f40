//! What the controller reads back about traffic: counters now; sampled events and metrics next.

pub mod stats;
