//! mecgw: a 5G MEC edge gateway.
//!
//! The library half of the `mecgw` binary. `datapath` owns the XDP fast path as userspace sees
//! it: the embedded eBPF object, loading, attaching and reading counters.
//! `replay` runs a capture through the real XDP program (`pcap` reads and writes captures).
//! `api` owns the local gRPC APIs (mTLS, roles) that apps and the operator call.
//! `daemon` owns `mecgw run`: configuration, lifecycle, reload and the operations port.
//! `records` owns the record path: flow records harvested from the fast path and records apps
//! publish, through the policy engine, to egress (spool, jurisdiction checks, sinks, audit log).

pub mod api;
pub mod daemon;
pub mod datapath;
pub mod log_limit;
pub mod openmetrics;
pub mod pcap;
pub mod pfcp;
pub mod progress;
pub mod records;
pub mod replay;
