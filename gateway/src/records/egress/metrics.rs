//! Egress counters, per destination, as plain atomics the daemon exposes (issue 6 serves them
//! as Prometheus text). Every way a batch can leave the spool or be kept out of it has a
//! counter here: sent, refused (at enqueue or at send), shed, rejected because the spool is full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for one destination. Monotonic except the two `backlog_*` gauges.
#[derive(Debug, Default)]
pub struct DestinationMetrics {
    /// Batches accepted into the spool (acknowledged to the producer).
    pub enqueued_batches: AtomicU64,
    /// Items in those batches.
    pub enqueued_items: AtomicU64,
    /// Batches the sink acknowledged.
    pub sent_batches: AtomicU64,
    /// Items in those batches.
    pub sent_items: AtomicU64,
    /// Batches refused by the jurisdiction check at enqueue (never spooled).
    pub refused_at_enqueue: AtomicU64,
    /// Batches refused by the jurisdiction check at send time (removed from the spool, audited).
    pub refused_at_send: AtomicU64,
    /// Batches dropped from a full spool under `shed-oldest` (audited).
    pub shed_batches: AtomicU64,
    /// Enqueues rejected because the spool is full under `backpressure`.
    pub rejected_full: AtomicU64,
    /// Delivery attempts that failed (sink unreachable, no ack in time, …).
    pub send_failures: AtomicU64,
    /// Times the sink became reachable again after a failure.
    pub reconnects: AtomicU64,
    /// Batches in the spool now (gauge).
    pub backlog_batches: AtomicU64,
    /// Payload bytes in the spool now (gauge).
    pub backlog_bytes: AtomicU64,
}

/// A consistent-enough copy of [`DestinationMetrics`] for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MetricsSnapshot {
    pub enqueued_batches: u64,
    pub enqueued_items: u64,
    pub sent_batches: u64,
    pub sent_items: u64,
    pub refused_at_enqueue: u64,
    pub refused_at_send: u64,
    pub shed_batches: u64,
    pub rejected_full: u64,
    pub send_failures: u64,
    pub reconnects: u64,
    pub backlog_batches: u64,
    pub backlog_bytes: u64,
}

impl DestinationMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            enqueued_batches: r(&self.enqueued_batches),
            enqueued_items: r(&self.enqueued_items),
            sent_batches: r(&self.sent_batches),
            sent_items: r(&self.sent_items),
            refused_at_enqueue: r(&self.refused_at_enqueue),
            refused_at_send: r(&self.refused_at_send),
            shed_batches: r(&self.shed_batches),
            rejected_full: r(&self.rejected_full),
            send_failures: r(&self.send_failures),
            reconnects: r(&self.reconnects),
            backlog_batches: r(&self.backlog_batches),
            backlog_bytes: r(&self.backlog_bytes),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }
}

/// The counters of every configured destination.
#[derive(Debug, Default)]
pub struct EgressMetrics {
    destinations: BTreeMap<String, Arc<DestinationMetrics>>,
}

impl EgressMetrics {
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            destinations: names
                .into_iter()
                .map(|n| (n.to_string(), Arc::default()))
                .collect(),
        }
    }

    /// The counters of one destination.
    pub fn destination(&self, name: &str) -> Option<&Arc<DestinationMetrics>> {
        self.destinations.get(name)
    }

    /// Every destination's counters, by name.
    pub fn snapshot(&self) -> BTreeMap<String, MetricsSnapshot> {
        self.destinations
            .iter()
            .map(|(n, m)| (n.clone(), m.snapshot()))
            .collect()
    }
}
