//! The forwarder: one task per destination that moves batches from the spool to the sink, in
//! order, checking jurisdiction again just before each send.
//!
//! Owns retry and reconnection (exponential backoff with jitter, [`BackoffConfig`]) and the
//! reconciliation at every (re)connect: batches the sink already holds are removed from the
//! spool without being sent again. A batch leaves the spool only after its sink acknowledged it
//! or the send-time check refused it, and only after that outcome is in the audit log. Sends
//! are sequential: batch n+1 is published only after batch n is acknowledged, which is what
//! keeps the sink's order equal to the spool's across outages and crashes.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use super::audit::{AuditError, AuditRecord, Outcome};
use super::item::BatchId;
use super::jurisdiction::{Verdict, check_batch};
use super::metrics::DestinationMetrics;
use super::sink::Sink;
use super::spool::{SpoolError, SpooledBatch};
use super::{Shared, audit_record};

/// Most payload bytes a forwarder holds in memory at a time (besides `read_ahead` batches).
pub const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Reconnect backoff: attempt n (from 0) waits `min(max, initial · multiplier^n)`, scaled by a
/// random factor in `[1 - jitter, 1]` so that many gateways do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First delay, in milliseconds.
    pub initial_ms: u64,
    /// Longest delay, in milliseconds.
    pub max_ms: u64,
    /// Growth per failed attempt (≥ 1).
    pub multiplier: f64,
    /// Fraction of the delay that is random (0 to 1).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl BackoffConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_ms == 0 || self.max_ms < self.initial_ms {
            return Err("backoff: need 0 < initial_ms ≤ max_ms".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err("backoff: multiplier must be ≥ 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("backoff: jitter must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (from 0).
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let exp = self.multiplier.powi(attempt.min(64) as i32);
        let ceiling = (self.initial_ms as f64 * exp).min(self.max_ms as f64);
        let factor = 1.0 - self.jitter * rng.random::<f64>();
        Duration::from_secs_f64(ceiling * factor / 1000.0)
    }
}

/// Why a forwarder stopped for good (sink failures never stop it: they are retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwarderError {
    /// The spool failed.
    #[error("destination {destination}: {source}")]
    Spool {
        /// Destination.
        destination: String,
        /// Failure.
        source: SpoolError,
    },
    /// The audit log could not be written: nothing more is sent unaccounted.
    #[error("destination {destination}: {source}")]
    Audit {
        /// Destination.
        destination: String,
        /// Failure.
        source: AuditError,
    },
    /// The task panicked or was cancelled.
    #[error("destination {0}: the forwarder task ended abnormally")]
    Task(String),
}

pub(super) struct Forwarder {
    pub destination: String,
    pub region: String,
    pub sink: Sink,
    pub shared: Arc<Shared>,
    pub metrics: Arc<DestinationMetrics>,
    pub notify: Arc<Notify>,
    pub backoff: BackoffConfig,
    pub read_ahead: usize,
}

enum Step {
    /// The sink failed; back off and reconnect.
    SinkDown,
    /// Shutdown was requested.
    Stop,
}

impl Forwarder {
    fn spool_err(&self) -> impl FnOnce(SpoolError) -> ForwarderError + '_ {
        |source| ForwarderError::Spool {
            destination: self.destination.clone(),
            source,
        }
    }

    fn audit(&self, record: AuditRecord) -> Result<(), ForwarderError> {
        self.shared
            .audit
            .append(record)
            .map(drop)
            .map_err(|source| ForwarderError::Audit {
                destination: self.destination.clone(),
                source,
            })
    }

    fn update_backlog(&self) {
        if let Some((batches, bytes)) = self.shared.spool.backlog(&self.destination) {
            DestinationMetrics::set(&self.metrics.backlog_batches, batches);
            DestinationMetrics::set(&self.metrics.backlog_bytes, bytes);
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ForwarderError> {
        let mut attempt: u32 = 0;
        let mut failed = false;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self.sink.ready().await {
                Ok(last) => {
                    if failed {
                        DestinationMetrics::add(&self.metrics.reconnects, 1);
                        info!(destination = %self.destination, attempt, "sink reachable again");
                    }
                    attempt = 0;
                    self.reconcile(last)?;
                    match self.drain(&mut shutdown).await? {
                        Step::Stop => return Ok(()),
                        Step::SinkDown => failed = true,
                    }
                }
                Err(e) => {
                    failed = true;
                    DestinationMetrics::add(&self.metrics.send_failures, 1);
                    warn!(destination = %self.destination, error = %e, attempt, "sink not ready");
                }
            }
            let delay = self.backoff.delay(attempt, &mut rand::rng());
            attempt = attempt.saturating_add(1);
            debug!(destination = %self.destination, ?delay, "backing off");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Removes batches the sink already holds (delivered before a crash), auditing any whose
    /// `sent` entry did not make it into the log.
    fn reconcile(&self, last: Option<BatchId>) -> Result<(), ForwarderError> {
        let spool = &self.shared.spool;
        let Some(last) =
            last.filter(|l| l.instance == spool.instance() && l.destination == self.destination)
        else {
            return Ok(());
        };
        loop {
            let batches = spool
                .peek(&self.destination, self.read_ahead, READ_AHEAD_BYTES)
                .map_err(self.spool_err())?;
            let held: Vec<&SpooledBatch> =
                batches.iter().filter(|b| b.id.seq <= last.seq).collect();
            if held.is_empty() {
                return Ok(());
            }
            let audited = self
                .shared
                .audit
                .last_sent(&self.destination, spool.instance())
                .unwrap_or(0);
            for b in &held {
                if b.id.seq > audited {
                    self.audit(audit_record(
                        &b.header,
                        &self.region,
                        Outcome::Sent,
                        Some("found in the sink at reconnect".into()),
                    ))?;
                    DestinationMetrics::add(&self.metrics.sent_batches, 1);
                    DestinationMetrics::add(&self.metrics.sent_items, b.header.items());
                }
            }
            info!(destination = %self.destination, batches = held.len(), "already in the sink; not sent again");
            let seqs: Vec<u64> = held.iter().map(|b| b.id.seq).collect();
            spool
                .remove(&self.destination, &seqs)
                .map_err(self.spool_err())?;
            self.update_backlog();
            if held.len() < batches.len() {
                return Ok(());
            }
        }
    }

    async fn drain(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Step, ForwarderError> {
        loop {
            if *shutdown.borrow() {
                return Ok(Step::Stop);
            }
            let batches = self
                .shared
                .spool
                .peek(&self.destination, self.read_ahead, READ_AHEAD_BYTES)
                .map_err(self.spool_err())?;
            if batches.is_empty() {
                tokio::select! {
                    () = self.notify.notified() => {}
                    _ = shutdown.changed() => {}
                    // A safety net: nothing is lost if a notification is, only delayed.
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let mut done = Vec::with_capacity(batches.len());
            // Outcomes are audited in one write per group, before the spool removal: a crash
            // in between leaves the batches spooled, and reconciliation audits them then.
            let mut outcomes = Vec::with_capacity(batches.len());
            let (mut sent, mut sent_items, mut refused) = (0, 0, 0);
            let audited = self
                .shared
                .audit
                .last_sent(&self.destination, self.shared.spool.instance())
                .unwrap_or(0);
            let mut sink_down = false;
            for batch in batches {
                let permissions = self.shared.permissions.current();
                let verdict = check_batch(
                    permissions.as_ref(),
                    &self.destination,
                    &self.region,
                    &batch.header.outputs,
                );
                if let Verdict::Deny(reason) = verdict {
                    warn!(destination = %self.destination, batch = %batch.id, %reason, "refused at send time");
                    outcomes.push(audit_record(
                        &batch.header,
                        &self.region,
                        Outcome::RefusedAtSend,
                        Some(reason.to_string()),
                    ));
                    refused += 1;
                    done.push(batch.id.seq);
                    continue;
                }
                match self.sink.deliver(&batch.id, batch.payload).await {
                    Ok(delivered) => {
                        if batch.id.seq > audited {
                            let reason = delivered.duplicate.then(|| {
                                "the sink already held it (redelivery deduplicated)".into()
                            });
                            outcomes.push(audit_record(
                                &batch.header,
                                &self.region,
                                Outcome::Sent,
                                reason,
                            ));
                            sent += 1;
                            sent_items += batch.header.items();
                        }
                        done.push(batch.id.seq);
                    }
                    Err(e) => {
                        warn!(destination = %self.destination, batch = %batch.id, error = %e, "delivery failed; will retry");
                        DestinationMetrics::add(&self.metrics.send_failures, 1);
                        sink_down = true;
                        break;
                    }
                }
            }
            self.shared
                .audit
                .append_all(outcomes)
                .map_err(|source| ForwarderError::Audit {
                    destination: self.destination.clone(),
                    source,
                })?;
            DestinationMetrics::add(&self.metrics.sent_batches, sent);
            DestinationMetrics::add(&self.metrics.sent_items, sent_items);
            DestinationMetrics::add(&self.metrics.refused_at_send, refused);
            self.shared
                .spool
                .remove(&self.destination, &done)
                .map_err(self.spool_err())?;
            self.update_backlog();
            if sink_down {
                return Ok(Step::SinkDown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn backoff_grows_to_its_ceiling_with_bounded_jitter() {
        let b = BackoffConfig {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.5,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 0..20 {
            let ceiling = (100.0 * 2f64.powi(attempt as i32)).min(1_000.0);
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng).as_secs_f64() * 1000.0;
                assert!(
                    d <= ceiling + 1e-6 && d >= ceiling * 0.5 - 1e-6,
                    "{attempt}: {d}"
                );
            }
        }
        let none = BackoffConfig { jitter: 0.0, ..b };
        assert_eq!(none.delay(3, &mut rng), Duration::from_millis(800));
        assert!(
            BackoffConfig {
                multiplier: 0.5,
                ..b
            }
            .validate()
            .is_err()
        );
        assert!(BackoffConfig { jitter: 1.5, ..b }.validate().is_err());
        assert!(b.validate().is_ok());
    }
}
