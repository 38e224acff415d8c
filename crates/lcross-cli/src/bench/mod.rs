//! The benchmark harness of `lcross bench` (load drivers, peers, floors): what it
//! measures and how; `cmd/bench.rs` parses the flags, calls one of these and prints.

pub mod floors;
pub mod serve;
pub mod speed;
pub mod workload;
