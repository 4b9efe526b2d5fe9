//! The record path: regulated records in, only what the policy allows out.
//!
//! One direction of flow, one place per stage:
//! 1. **harvest** ([`harvest`]): the fast path's per-flow counters become `flow` records
//!    every `[flows] interval_secs`, with the identity of each flow's session; apps add
//!    their own records through the gRPC `Publish` call ([`PublishedRecord`]);
//! 2. **engine** ([`engine`]): the policy engine's thread pseudonymises, generalises and
//!    aggregates them, with k-anonymity floors, differential-privacy noise and a durable
//!    budget; released cells also go to local `Subscribe` streams ([`ReleasedOutput`]);
//! 3. **egress** ([`egress`]): what the policy emits for a destination is spooled durably,
//!    checked against the destination's jurisdiction at enqueue and at send, forwarded to
//!    its sink and written into the audit chain.
//!
//! Raw records never leave this module: they live in the engine thread's stack frames and
//! window state only. This module never touches the kernel (the datapath does) and never
//! answers a network peer (the API does).

pub mod egress;
pub mod engine;
pub mod harvest;

use std::sync::Arc;

/// A loaded, validated policy.
#[derive(Debug)]
pub struct LoadedPolicy {
    pub policy: mecgw_policy::Policy,
    /// SHA-256 of the policy source: tags every release and the audit log.
    pub hash: String,
    /// The policy text.
    pub source: String,
}

/// A record an app published, on its way into the policy engine: one JSON object whose
/// `kind` member, if it has one, equals `kind` (the API checked both).
///
/// The record stays the text the app sent, moved out of the gRPC message: the engine reads
/// it with its borrowed line reader, so no `serde_json::Value` is built (and freed) for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedRecord {
    /// The app that published it (its name in the API's `[[api.apps]]`).
    pub app: Arc<str>,
    /// The declared record kind.
    pub kind: Arc<str>,
    /// The record, as JSON text.
    pub json: String,
}

/// An output the policy engine released on this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedOutput {
    /// The release (policy name) that produced it.
    pub release: String,
    /// The output, one JSON object.
    pub json: String,
}
