//! The mecgw privacy policy language and engine.
//!
//! This crate owns everything between a regulated record entering the gateway and a release
//! leaving it: parsing and validating policy files, field transforms, windowed aggregation,
//! k-anonymity floors, differential-privacy noise and the privacy budget. It never performs
//! I/O towards a destination; the gateway's egress stage does that with what this crate emits.
#![forbid(unsafe_code)]
