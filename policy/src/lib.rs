//! The mecgw privacy policy language and engine.
//!
//! This crate owns everything between a regulated record entering the gateway and a release
//! leaving it: parsing and validating policy files, field transforms, windowed aggregation,
//! k-anonymity floors, differential-privacy noise and the privacy budget. It never performs
//! I/O towards a destination; the gateway's egress stage does that with what this crate emits.
//!
//! The flow is one direction: [`yaml`] → [`compile`](mod@compile) → [`model::Policy`]; records →
//! [`transform`] → [`aggregate`] → [`release`] (noise from [`noise`], charged to [`budget`]) →
//! [`engine`] output objects.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod batch;
pub mod budget;
pub mod compile;
pub mod diag;
pub mod engine;
pub mod explain;
pub mod files;
pub mod hex;
pub mod keys;
pub mod model;
pub mod noise;
pub mod record;
pub mod release;
pub mod schema;
pub mod testcases;
pub mod transform;
pub mod units;
pub mod yaml;

pub use compile::compile;
pub use diag::{Code, Diagnostic, Diagnostics, Pos};
pub use model::Policy;
