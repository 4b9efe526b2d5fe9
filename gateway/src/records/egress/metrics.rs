//! Egress counters, per destination, as plain atomics the daemon exposes on `/metrics`. Every
//! way a batch can leave the spool or be kept out of it has a counter here: sent, refused (at
//! enqueue or at send), shed, quarantined, lost, rejected because the spool is full or cannot
//! be written. [`EgressCollector`] writes them, with the storage state ([`StorageSnapshot`],
//! from [`super::Egress::storage`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use crate::openmetrics::{counter, counters, gauge, gauges};

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
    /// Batches whose stored bytes failed their check: not sent, moved to the quarantine
    /// (audited).
    pub quarantined_batches: AtomicU64,
    /// Spools found vanished at start: what they held for this destination is lost (audited).
    pub lost_spools: AtomicU64,
    /// Enqueues rejected because the spool or the audit log could not be written (a full
    /// disk, an I/O error).
    pub rejected_unavailable: AtomicU64,
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
    pub quarantined_batches: u64,
    pub lost_spools: u64,
    pub rejected_unavailable: u64,
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
            quarantined_batches: r(&self.quarantined_batches),
            lost_spools: r(&self.lost_spools),
            rejected_unavailable: r(&self.rejected_unavailable),
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

/// The state of egress's storage (spool and audit log), for readiness and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageSnapshot {
    /// The spool and the audit log can be written (what `/readyz` should follow).
    pub ready: bool,
    /// Their file system (or quota) is full.
    pub no_space: bool,
    /// Spool operations that failed with an I/O error (a full disk included).
    pub spool_io_errors: u64,
    /// Times the spool was reopened after such a failure.
    pub spool_reopens: u64,
    /// Audit appends that failed.
    pub audit_write_failures: u64,
}

/// What `/metrics` shows of egress: every destination's counters and the storage state, read
/// when the scrape starts.
#[derive(Debug, Clone, Default)]
pub struct EgressCollector {
    /// Counters by destination.
    pub destinations: BTreeMap<String, MetricsSnapshot>,
    /// The spool's and audit log's state.
    pub storage: StorageSnapshot,
}

impl Collector for EgressCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        type Field = fn(&MetricsSnapshot) -> u64;
        let per_destination: [(&str, &str, Field); 13] = [
            (
                "mecgw_egress_enqueued_batches_total",
                "Batches spooled.",
                |m| m.enqueued_batches,
            ),
            (
                "mecgw_egress_enqueued_items_total",
                "Outputs spooled.",
                |m| m.enqueued_items,
            ),
            (
                "mecgw_egress_sent_batches_total",
                "Batches the sink acknowledged.",
                |m| m.sent_batches,
            ),
            (
                "mecgw_egress_sent_items_total",
                "Outputs the sink acknowledged.",
                |m| m.sent_items,
            ),
            (
                "mecgw_egress_refused_at_enqueue_total",
                "Batches refused by the jurisdiction check at enqueue.",
                |m| m.refused_at_enqueue,
            ),
            (
                "mecgw_egress_refused_at_send_total",
                "Spooled batches refused by the jurisdiction check at send time.",
                |m| m.refused_at_send,
            ),
            (
                "mecgw_egress_shed_batches_total",
                "Oldest batches shed from a full spool (shed-oldest).",
                |m| m.shed_batches,
            ),
            (
                "mecgw_egress_rejected_full_total",
                "Batches rejected because the spool was full (backpressure).",
                |m| m.rejected_full,
            ),
            (
                "mecgw_egress_send_failures_total",
                "Failed deliveries (retried).",
                |m| m.send_failures,
            ),
            ("mecgw_egress_reconnects_total", "Sink reconnects.", |m| {
                m.reconnects
            }),
            (
                "mecgw_egress_quarantined_batches_total",
                "Batches whose stored bytes failed their digest check: not sent, kept in the spool's quarantine (audited).",
                |m| m.quarantined_batches,
            ),
            (
                "mecgw_egress_lost_spools_total",
                "Spools found missing or emptied at start: what they held for the destination is lost (audited).",
                |m| m.lost_spools,
            ),
            (
                "mecgw_egress_rejected_unavailable_total",
                "Batches rejected because the spool or the audit log could not be written (full disk, I/O error).",
                |m| m.rejected_unavailable,
            ),
        ];
        let by_destination = |field: Field| {
            self.destinations
                .iter()
                .map(move |(d, m)| ([("destination", d.as_str())], field(m)))
        };
        for (name, help, field) in per_destination {
            counters(&mut e, name, help, by_destination(field))?;
        }
        gauges(
            &mut e,
            "mecgw_egress_backlog_batches",
            "Batches waiting in the spool.",
            by_destination(|m| m.backlog_batches),
        )?;
        gauges(
            &mut e,
            "mecgw_egress_backlog_bytes",
            "Bytes waiting in the spool.",
            by_destination(|m| m.backlog_bytes),
        )?;
        let storage = &self.storage;
        gauge(
            &mut e,
            "mecgw_egress_storage_ready",
            "1 when the spool and the audit log can be written; 0 while they cannot (see the log).",
            u64::from(storage.ready),
        )?;
        gauge(
            &mut e,
            "mecgw_egress_storage_no_space",
            "1 while the file system of the spool or the audit log is full.",
            u64::from(storage.no_space),
        )?;
        counter(
            &mut e,
            "mecgw_egress_spool_io_errors_total",
            "Spool operations that failed with an I/O error (a full disk included).",
            storage.spool_io_errors,
        )?;
        counter(
            &mut e,
            "mecgw_egress_spool_reopens_total",
            "Times the spool was reopened after an I/O error.",
            storage.spool_reopens,
        )?;
        counter(
            &mut e,
            "mecgw_egress_audit_write_failures_total",
            "Audit log appends that failed (retried; nothing is sent or dropped unaudited).",
            storage.audit_write_failures,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn every_family_renders_per_destination_and_for_storage() {
        let m = EgressMetrics::new(["eu"]);
        DestinationMetrics::add(&m.destination("eu").unwrap().quarantined_batches, 2);
        DestinationMetrics::set(&m.destination("eu").unwrap().backlog_bytes, 4096);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(EgressCollector {
            destinations: m.snapshot(),
            storage: StorageSnapshot {
                ready: false,
                no_space: true,
                spool_io_errors: 7,
                ..StorageSnapshot::default()
            },
        }));
        let out = crate::openmetrics::encode(&registry).unwrap();
        for line in [
            "mecgw_egress_quarantined_batches_total{destination=\"eu\"} 2\n",
            "mecgw_egress_lost_spools_total{destination=\"eu\"} 0\n",
            "mecgw_egress_sent_batches_total{destination=\"eu\"} 0\n",
            "mecgw_egress_backlog_bytes{destination=\"eu\"} 4096\n",
            "mecgw_egress_storage_ready 0\n",
            "mecgw_egress_storage_no_space 1\n",
            "mecgw_egress_spool_io_errors_total 7\n",
            "# TYPE mecgw_egress_spool_reopens counter\n",
            "# TYPE mecgw_egress_backlog_batches gauge\n",
        ] {
            assert!(out.contains(line), "no {line} in\n{out}");
        }
    }
}
