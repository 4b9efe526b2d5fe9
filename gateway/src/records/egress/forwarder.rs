//! The forwarder: one task per destination that moves batches from the spool to the sink, in
//! order, checking jurisdiction again just before each send.
//!
//! Owns retry and reconnection (exponential backoff with jitter, [`BackoffConfig`]) and the
//! reconciliation at every (re)connect: batches the sink already holds are removed from the
//! spool without being sent again. A batch leaves the spool only after its sink acknowledged it
//! or the send-time check refused it, and only after that outcome is in the audit log; a batch
//! whose stored bytes fail their digest is never sent but audited and quarantined. Sends
//! are sequential: batch n+1 is published only after batch n is acknowledged, which is what
//! keeps the sink's order equal to the spool's across outages and crashes. A forwarder never
//! stops on a failure: sink, spool and audit-log failures (a full disk) are all retried with
//! backoff, and logged the first time and then at most once a minute.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::audit::{AuditError, AuditRecord, Outcome};
use super::health::Throttle;
use super::item::BatchId;
use super::jurisdiction::{Verdict, check_batch};
use super::metrics::DestinationMetrics;
use super::sink::Sink;
use super::spool::{SpoolError, SpooledBatch};
use super::{Shared, audit_record};

/// Most payload bytes in one group a forwarder reads from the spool (besides `read_ahead`
/// batches). It holds at most two groups: the one it sends and the next one, read meanwhile.
pub const READ_AHEAD_BYTES: u64 = 8 * 1024 * 1024;

/// Longest wait between retries after a spool or audit-log failure: space can come back at
/// any time, and the retry is what notices (the spool reopens at most once a second anyway).
pub const STORAGE_RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// Woken whenever this forwarder empties its destination's spool.
    pub drained: Arc<Notify>,
    pub backoff: BackoffConfig,
    pub read_ahead: usize,
}

enum Step {
    /// The sink failed; back off and reconnect.
    SinkDown,
    /// The spool was reopened after an I/O failure: removals committed without fsync may be
    /// undone, so batches already sent can be back. Reconcile again (no backoff).
    Resync,
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
            if batches == 0 {
                self.drained.notify_waiters();
            }
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped). Failures are retried,
    /// never returned: `Err` only if the task itself fails.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ForwarderError> {
        let mut attempt: u32 = 0;
        let mut failed = false;
        // Spool and audit-log failures (a full disk): retried with their own backoff, and
        // logged once, then at most once a minute.
        let mut storage_attempt: u32 = 0;
        let mut storage_log = Throttle::default();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let mut storage_failed = false;
            match self.sink.ready().await {
                Ok(last) => {
                    if failed {
                        DestinationMetrics::add(&self.metrics.reconnects, 1);
                        info!(destination = %self.destination, attempt, "sink reachable again");
                    }
                    attempt = 0;
                    let step = match self.reconcile(last) {
                        Ok(()) => self.drain(&mut shutdown).await,
                        Err(e) => Err(e),
                    };
                    match step {
                        Ok(Step::Stop) => return Ok(()),
                        Ok(Step::SinkDown) => failed = true,
                        Ok(Step::Resync) => continue,
                        Err(e) => {
                            storage_failed = true;
                            if let Some(held_back) =
                                storage_log.occurrence(std::time::Instant::now())
                            {
                                error!(destination = %self.destination, error = %e, failures_since_last_report = held_back, "forwarding paused: the spool or the audit log cannot be written; retrying");
                            }
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    DestinationMetrics::add(&self.metrics.send_failures, 1);
                    warn!(destination = %self.destination, error = %e, attempt, "sink not ready");
                }
            }
            let delay = if storage_failed {
                storage_attempt = storage_attempt.saturating_add(1);
                self.backoff
                    .delay(storage_attempt - 1, &mut rand::rng())
                    .min(STORAGE_RETRY_MAX)
            } else {
                if storage_log.recovered() {
                    info!(destination = %self.destination, "forwarding resumed");
                }
                storage_attempt = 0;
                let d = self.backoff.delay(attempt, &mut rand::rng());
                attempt = attempt.saturating_add(1);
                d
            };
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

    /// Sends what is spooled until the sink fails or shutdown is requested, waiting for
    /// enqueues when the spool is empty.
    ///
    /// A group's outcomes are audited and the group removed from the spool by a flusher
    /// (a blocking task) while the next groups are sent, so a disk stall does not stall the
    /// uplink. Flushes run in send order and always audit before removing: a crash between
    /// leaves the batches spooled, and reconciliation at the next start audits them.
    async fn drain(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Step, ForwarderError> {
        let mut flusher = Flusher::start(&self.destination);
        let result = self.drain_groups(shutdown, &mut flusher).await;
        let flushed = flusher.close().await;
        let step = result?;
        flushed?;
        Ok(step)
    }

    /// Reads (and checks) the group of batches from `from_seq` on a blocking thread.
    fn read_group(&self, from_seq: u64) -> JoinHandle<Result<Vec<SpooledBatch>, SpoolError>> {
        let shared = Arc::clone(&self.shared);
        let destination = self.destination.clone();
        let read_ahead = self.read_ahead;
        tokio::task::spawn_blocking(move || {
            shared
                .spool
                .peek_from(&destination, from_seq, read_ahead, READ_AHEAD_BYTES)
        })
    }

    async fn drain_groups(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        flusher: &mut Flusher,
    ) -> Result<Step, ForwarderError> {
        // Sequence numbers below this were sent (or refused) and are being flushed.
        let mut next_seq = 0;
        let shared = Arc::clone(&self.shared);
        let generation = shared.spool.counters().reopens.load(Ordering::Relaxed);
        // The next group, read and checked against its digests on a blocking thread while
        // the current one is sent: neither the spool read nor the hashing is on the path
        // from one acknowledgement to the next publish.
        let mut next_group = None;
        loop {
            if *shutdown.borrow() {
                return Ok(Step::Stop);
            }
            if shared.spool.counters().reopens.load(Ordering::Relaxed) != generation {
                flusher.barrier().await?;
                info!(destination = %self.destination, "the spool was reopened: reconciling with the sink again");
                return Ok(Step::Resync);
            }
            let batches = next_group
                .take()
                .unwrap_or_else(|| self.read_group(next_seq))
                .await
                .map_err(|_| ForwarderError::Task(self.destination.clone()))?
                .map_err(self.spool_err())?;
            if let Some(last) = batches.last() {
                next_group = Some(self.read_group(last.id.seq + 1));
            }
            if batches.is_empty() {
                flusher.barrier().await?;
                tokio::select! {
                    () = self.notify.notified() => {}
                    _ = shutdown.changed() => {}
                    // A safety net: nothing is lost if a notification is, only delayed.
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            let mut group = Flush {
                shared: Arc::clone(&self.shared),
                metrics: Arc::clone(&self.metrics),
                drained: Arc::clone(&self.drained),
                destination: self.destination.clone(),
                audited: self
                    .shared
                    .audit
                    .last_sent(&self.destination, self.shared.spool.instance())
                    .unwrap_or(0),
                outcomes: Vec::with_capacity(batches.len()),
                done: Vec::with_capacity(batches.len()),
                quarantined: Vec::new(),
                sent: 0,
                sent_items: 0,
                refused: 0,
            };
            let mut sink_down = false;
            let mut last_seq = None;
            for batch in batches {
                if let Some(problem) = batch.damage {
                    // Never sent: the sink would get bytes the policy engine did not emit.
                    error!(destination = %self.destination, batch = %batch.id, %problem, "a spooled batch is damaged: not sent, quarantined");
                    group.outcomes.push(audit_record(
                        &batch.header,
                        &self.region,
                        Outcome::Quarantined,
                        Some(problem),
                    ));
                    group.quarantined.push(batch.id.seq);
                    last_seq = Some(batch.id.seq);
                    continue;
                }
                let permissions = self.shared.permissions.current();
                let verdict = check_batch(
                    permissions.as_ref(),
                    &self.destination,
                    &self.region,
                    &batch.header.outputs,
                );
                if let Verdict::Deny(reason) = verdict {
                    warn!(destination = %self.destination, batch = %batch.id, %reason, "refused at send time");
                    group.outcomes.push(audit_record(
                        &batch.header,
                        &self.region,
                        Outcome::RefusedAtSend,
                        Some(reason.to_string()),
                    ));
                    group.refused += 1;
                    group.done.push(batch.id.seq);
                    last_seq = Some(batch.id.seq);
                    continue;
                }
                match self.sink.deliver(&batch.id, batch.payload).await {
                    Ok(delivered) => {
                        if batch.id.seq > group.audited {
                            let reason = delivered.duplicate.then(|| {
                                "the sink already held it (redelivery deduplicated)".into()
                            });
                            group.outcomes.push(audit_record(
                                &batch.header,
                                &self.region,
                                Outcome::Sent,
                                reason,
                            ));
                            group.sent += 1;
                            group.sent_items += batch.header.items();
                        }
                        group.done.push(batch.id.seq);
                        last_seq = Some(batch.id.seq);
                    }
                    Err(e) => {
                        warn!(destination = %self.destination, batch = %batch.id, error = %e, "delivery failed; will retry");
                        DestinationMetrics::add(&self.metrics.send_failures, 1);
                        sink_down = true;
                        break;
                    }
                }
            }
            if let Some(last) = last_seq {
                next_seq = last + 1;
            }
            flusher.push(group).await?;
            if sink_down {
                return Ok(Step::SinkDown);
            }
        }
    }
}

/// A group's outcomes, to be audited and then removed from the spool.
struct Flush {
    shared: Arc<Shared>,
    metrics: Arc<DestinationMetrics>,
    drained: Arc<Notify>,
    destination: String,
    /// Highest sequence number audited as sent when the group started.
    audited: u64,
    outcomes: Vec<AuditRecord>,
    /// Sent or refused: removed from the spool.
    done: Vec<u64>,
    /// Damaged: moved to the quarantine.
    quarantined: Vec<u64>,
    sent: u64,
    sent_items: u64,
    refused: u64,
}

impl Flush {
    fn run(self) -> Result<(), ForwarderError> {
        self.shared
            .audit
            .append_all(self.outcomes)
            .map_err(|source| ForwarderError::Audit {
                destination: self.destination.clone(),
                source,
            })?;
        DestinationMetrics::add(&self.metrics.sent_batches, self.sent);
        DestinationMetrics::add(&self.metrics.sent_items, self.sent_items);
        DestinationMetrics::add(&self.metrics.refused_at_send, self.refused);
        DestinationMetrics::add(
            &self.metrics.quarantined_batches,
            self.quarantined.len() as u64,
        );
        self.shared
            .spool
            .settle(&self.destination, &self.done, &self.quarantined)
            .map_err(|source| ForwarderError::Spool {
                destination: self.destination.clone(),
                source,
            })?;
        if let Some((batches, bytes)) = self.shared.spool.backlog(&self.destination) {
            DestinationMetrics::set(&self.metrics.backlog_batches, batches);
            DestinationMetrics::set(&self.metrics.backlog_bytes, bytes);
            if batches == 0 {
                self.drained.notify_waiters();
            }
        }
        Ok(())
    }
}

/// How many groups may wait for the flusher before the forwarder waits for it.
const FLUSH_QUEUE: usize = 16;

enum FlushMsg {
    Group(Box<Flush>),
    Barrier(oneshot::Sender<()>),
}

/// Runs a forwarder's flushes, one at a time and in order, off the async runtime.
struct Flusher {
    destination: String,
    tx: Option<mpsc::Sender<FlushMsg>>,
    task: Option<JoinHandle<Result<(), ForwarderError>>>,
}

impl Flusher {
    fn start(destination: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<FlushMsg>(FLUSH_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    FlushMsg::Group(group) => group.run()?,
                    FlushMsg::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
            Ok(())
        });
        Self {
            destination: destination.to_string(),
            tx: Some(tx),
            task: Some(task),
        }
    }

    async fn send(&mut self, msg: FlushMsg) -> Result<(), ForwarderError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // The flusher stopped: its result says why.
            self.close().await?;
            Err(ForwarderError::Task(self.destination.clone()))
        }
    }

    async fn push(&mut self, group: Flush) -> Result<(), ForwarderError> {
        self.send(FlushMsg::Group(Box::new(group))).await
    }

    /// Waits until every group pushed so far is flushed.
    async fn barrier(&mut self) -> Result<(), ForwarderError> {
        let (done, flushed) = oneshot::channel();
        self.send(FlushMsg::Barrier(done)).await?;
        if flushed.await.is_err() {
            self.close().await?;
            return Err(ForwarderError::Task(self.destination.clone()));
        }
        Ok(())
    }

    /// Flushes what is queued and stops.
    async fn close(&mut self) -> Result<(), ForwarderError> {
        self.tx = None;
        match self.task.take() {
            None => Ok(()),
            Some(task) => task
                .await
                .map_err(|_| ForwarderError::Task(self.destination.clone()))?,
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
