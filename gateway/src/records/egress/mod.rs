//! Sovereign egress: everything that leaves the site leaves through here.
//!
//! One direction of flow, one module per stage:
//! `enqueue` ([`Egress::enqueue`], jurisdiction check #1) → [`spool`] (durable, bounded) →
//! [`forwarder`] (jurisdiction check #2, backoff, reconciliation) → [`sink`] (NATS JetStream or
//! JSON-lines files), with an [`audit`] entry for every batch sent, refused or shed and
//! [`metrics`] for each of those outcomes. The input is what the policy engine emits
//! ([`item::EgressItem`]: releases and transformed records); raw records have no way in.
//! The spool and the audit log check what they stored and remember, through the [`state`]
//! marker, that they existed; [`health`] says whether egress can work now. The design and
//! the exactly-once argument are in `docs/egress.md`, the failure model in
//! `docs/reliability.md`.

pub mod audit;
pub mod forwarder;
pub mod health;
pub mod item;
pub mod jurisdiction;
pub mod metrics;
pub mod sink;
pub mod spool;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use audit::{AuditError, AuditLog, AuditRecord, Outcome};
use forwarder::{BackoffConfig, Forwarder, ForwarderError};
use health::Health;
use item::{BatchHeader, BatchId, EgressItem, OutputKind, encode_batch, valid_name};
use jurisdiction::{DenyReason, Permissions, Verdict, check_batch};
use metrics::{DestinationMetrics, EgressMetrics, StorageSnapshot};
use sink::{Sink, SinkConfig, SinkError};
use spool::{Spool, SpoolError, SpoolLimits, WhenFull};
use state::{Presence, StateMarker, StateMarkerError};
use tracing::error;

/// The spool database file inside `spool_dir`.
pub const SPOOL_FILE: &str = "spool.redb";

/// Egress configuration (the daemon's `[egress]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Directory of the spool database (the daemon defaults it to `<state dir>/spool`).
    #[serde(default)]
    pub spool_dir: PathBuf,
    /// Directory of the audit log (the daemon defaults it to `<state dir>/audit`).
    #[serde(default)]
    pub audit_dir: PathBuf,
    /// Directory of the state marker (`state.marker`) that remembers that this site has had a
    /// spool and an audit log, so that a vanished one is reported, not started afresh.
    /// Defaults to the directory that holds `spool_dir` (the daemon's state directory when
    /// `spool_dir` is left to its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Bound of each destination's spool.
    #[serde(default)]
    pub limits: SpoolLimits,
    /// What happens when a destination's spool is full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Reconnect backoff.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// How many batches a forwarder reads from the spool at a time.
    #[serde(default = "default_read_ahead")]
    pub read_ahead: usize,
    /// Where batches may go.
    pub destinations: Vec<DestinationConfig>,
}

fn default_read_ahead() -> usize {
    64
}

/// One problem with an `[egress]` value: where (a dotted path from `egress`, array indexes as
/// numbers, e.g. `egress.destinations.1.region`) and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key's path.
    pub key: String,
    /// What is wrong, and what to change.
    pub message: String,
}

impl EgressConfig {
    /// Every problem with the values (not the directories, which are opened later), in the
    /// order of the keys: what [`Egress::open`] refuses, found before anything is opened, so
    /// that the configuration loader can report each at its line and column.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: String, message: String| out.push(ConfigProblem { key, message });
        if let Err(e) = self.backoff.validate() {
            let key = ["multiplier", "jitter"]
                .into_iter()
                .find(|k| e.contains(k))
                .unwrap_or("initial_ms");
            problem(format!("egress.backoff.{key}"), e);
        }
        if self.limits.max_batches == 0 {
            problem(
                "egress.limits.max_batches".into(),
                "limits: max_batches must be > 0".into(),
            );
        }
        if self.limits.max_bytes == 0 {
            problem(
                "egress.limits.max_bytes".into(),
                "limits: max_bytes must be > 0".into(),
            );
        }
        if self.read_ahead == 0 {
            problem("egress.read_ahead".into(), "read_ahead must be > 0".into());
        }
        let mut names = BTreeSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            let at = |key: &str| format!("egress.destinations.{i}.{key}");
            if !valid_name(&d.name) {
                problem(
                    at("name"),
                    format!(
                        "destination name {:?} must be 1 to {} of [A-Za-z0-9_-]",
                        d.name,
                        item::MAX_NAME_LEN
                    ),
                );
            } else if !names.insert(d.name.as_str()) {
                problem(
                    at("name"),
                    format!("destination {} is configured twice", d.name),
                );
            }
            if d.region.is_empty() {
                problem(
                    at("region"),
                    format!("destination {}: region must not be empty", d.name),
                );
            }
            if let Err(e) = Sink::new(&d.sink, &d.name) {
                problem(at("sink"), format!("destination {}: {e}", d.name));
            }
        }
        out
    }

    /// Where the state marker lives: `state_dir`, or the directory that holds `spool_dir`.
    pub fn marker_dir(&self) -> PathBuf {
        match &self.state_dir {
            Some(d) => d.clone(),
            None => match self.spool_dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }
}

/// One destination: a name the policy routes to, the region its sink is in, and the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Name, as in the policy's `destinations`.
    pub name: String,
    /// Jurisdiction or region where the sink is, e.g. `EU-DE`.
    pub region: String,
    /// The sink.
    pub sink: SinkConfig,
}

/// Egress cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The configuration is invalid.
    #[error("egress configuration: {0}")]
    Config(String),
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The audit log cannot be opened (or its chain is broken).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The state marker cannot be read.
    #[error(transparent)]
    Marker(#[from] StateMarkerError),
    /// A sink is misconfigured.
    #[error("destination {destination}: {source}")]
    Sink {
        /// Destination.
        destination: String,
        /// Failure.
        source: SinkError,
    },
}

/// A batch was not accepted. Nothing was acknowledged; the producer still owns the items.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The destination is not configured.
    #[error("no destination {0:?} is configured")]
    UnknownDestination(String),
    /// An empty batch.
    #[error("a batch needs at least one item")]
    Empty,
    /// An item is routed to another destination.
    #[error("item {index} is for destination {item_destination:?}, not this one")]
    WrongDestination {
        /// Position of the item.
        index: usize,
        /// Its destination.
        item_destination: String,
    },
    /// Items from different policies in one batch.
    #[error("item {index} has policy hash {found:?}, the batch {expected:?}")]
    MixedPolicy {
        /// Position of the item.
        index: usize,
        /// Its policy hash.
        found: String,
        /// The first item's.
        expected: String,
    },
    /// The jurisdiction check refused it (audited and counted).
    #[error("refused by the jurisdiction check: {0}")]
    Refused(DenyReason),
    /// The spool refused it (e.g. full under backpressure; counted).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The refusal could not be audited.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl EnqueueError {
    /// True when the spool is full and the producer should retry later (backpressure).
    pub fn is_backpressure(&self) -> bool {
        matches!(self, Self::Spool(SpoolError::Full { .. }))
    }

    /// True when the spool or the audit log cannot be written now (a full disk, an I/O
    /// error): the producer keeps its items and retries later. Egress itself logs the failure
    /// and its end (the first time, then at most once a minute) and reports it in
    /// [`Egress::health`]: callers should not log every retry. The message says what is wrong
    /// (e.g. no space left for the spool, and where).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Spool(e) => e.is_unavailable(),
            Self::Audit(AuditError::Io { .. }) => true,
            _ => false,
        }
    }

    /// True when the file system of the spool or the audit log is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Spool(e) => matches!(e, SpoolError::NoSpace { .. }),
            Self::Audit(e) => e.is_no_space(),
            _ => false,
        }
    }
}

/// What the forwarders share with the enqueue path.
pub(crate) struct Shared {
    pub spool: Spool,
    pub audit: AuditLog,
    pub permissions: Arc<Permissions>,
}

struct Destination {
    config: DestinationConfig,
    notify: Arc<Notify>,
    drained: Arc<Notify>,
    metrics: Arc<DestinationMetrics>,
}

/// The egress stage: accepts batches and, once started, forwards them.
pub struct Egress {
    shared: Arc<Shared>,
    destinations: BTreeMap<String, Destination>,
    metrics: EgressMetrics,
    backoff: BackoffConfig,
    read_ahead: usize,
    audit_dir: PathBuf,
}

pub(crate) fn audit_record(
    header: &BatchHeader,
    region: &str,
    outcome: Outcome,
    reason: Option<String>,
) -> AuditRecord {
    AuditRecord {
        batch_id: Some(header.id.clone()),
        destination: header.destination.clone(),
        region: region.to_string(),
        policy_hash: header.policy_hash.clone(),
        outputs: header.outputs.iter().cloned().collect(),
        releases: header.releases,
        records: header.records,
        epsilon: header.epsilon,
        outcome,
        reason,
        digest: header.digest.clone(),
    }
}

/// The audit record of a vanished spool, for one destination.
fn lost_record(d: &DestinationConfig, spool: &std::path::Path) -> AuditRecord {
    AuditRecord {
        batch_id: None,
        destination: d.name.clone(),
        region: d.region.clone(),
        policy_hash: String::new(),
        outputs: Vec::new(),
        releases: 0,
        records: 0,
        epsilon: 0.0,
        outcome: Outcome::Lost,
        reason: Some(format!(
            "the spool {} vanished (missing or empty, though this state directory had one): \
             the batches it held for this destination are lost",
            spool.display()
        )),
        digest: None,
    }
}

/// ε a batch spent: what items state, plus, for release items that do not state it, the
/// release's ε once per distinct (release, window), since ε is charged per release window.
/// The header of a batch of `items` for `destination` (without id, size and digest, which the
/// spool sets), once every item is checked to be for it and of one policy.
fn batch_header(
    destination: &str,
    region: &str,
    items: &[EgressItem],
    permissions: &dyn jurisdiction::EgressPermissions,
) -> Result<BatchHeader, EnqueueError> {
    let first = items.first().ok_or(EnqueueError::Empty)?;
    let policy_hash = first.policy_hash();
    let mut header = BatchHeader {
        id: String::new(),
        destination: destination.to_string(),
        region: region.to_string(),
        policy_hash: policy_hash.to_string(),
        outputs: BTreeSet::new(),
        releases: 0,
        records: 0,
        epsilon: 0.0,
        bytes: 0,
        digest: None,
    };
    for (index, item) in items.iter().enumerate() {
        if item.destination() != destination {
            return Err(EnqueueError::WrongDestination {
                index,
                item_destination: item.destination().to_string(),
            });
        }
        if item.policy_hash() != policy_hash {
            return Err(EnqueueError::MixedPolicy {
                index,
                found: item.policy_hash().to_string(),
                expected: policy_hash.to_string(),
            });
        }
        match item.output().kind {
            OutputKind::Release => header.releases += 1,
            OutputKind::Record => header.records += 1,
        }
        // Most batches hold one output many times: a lookup, not a clone, for each.
        if !header.outputs.contains(item.output()) {
            header.outputs.insert(item.output().clone());
        }
    }
    header.epsilon = batch_epsilon(items, permissions);
    Ok(header)
}

fn batch_epsilon(items: &[EgressItem], permissions: &dyn jurisdiction::EgressPermissions) -> f64 {
    let mut windows = BTreeSet::new();
    let mut epsilon = 0.0;
    for item in items {
        match item.epsilon() {
            Some(e) => epsilon += e,
            None if item.output().kind == OutputKind::Release => {
                let window = item.window().unwrap_or_default();
                if windows.insert((item.output().name.as_str(), window)) {
                    epsilon += permissions
                        .release_epsilon(&item.output().name)
                        .unwrap_or(0.0);
                }
            }
            None => {}
        }
    }
    epsilon
}

impl Egress {
    /// Opens the spool and the audit log and checks the configuration.
    pub fn open(config: EgressConfig, permissions: Arc<Permissions>) -> Result<Self, EgressError> {
        if config.spool_dir.as_os_str().is_empty() || config.audit_dir.as_os_str().is_empty() {
            return Err(EgressError::Config(
                "spool_dir and audit_dir must be set".into(),
            ));
        }
        // The daemon's loader reports these at their line and column first; checked again
        // here for every other caller.
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(EgressError::Config(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        let names: BTreeSet<String> = config.destinations.iter().map(|d| d.name.clone()).collect();
        std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
            EgressError::Config(format!("spool_dir {}: {e}", config.spool_dir.display()))
        })?;
        let names: Vec<String> = names.into_iter().collect();
        let marker = Arc::new(StateMarker::open(&config.marker_dir())?);
        let audit = AuditLog::open(&config.audit_dir, Arc::clone(&marker))?;
        let spool_path = config.spool_dir.join(SPOOL_FILE);
        // A spool the marker remembers but whose file is missing or empty took its batches
        // with it: audit the loss before a new spool is created in its place (if this start
        // fails after the audit, the next one audits it again rather than not at all).
        let vanished = Spool::presence(&spool_path, &marker)? == Presence::Vanished;
        if vanished {
            error!(
                spool = %spool_path.display(),
                marker = %marker.path().display(),
                "the spool vanished (its file is missing or empty though this state directory \
                 had one): the batches it held are lost; audited, and a new spool is started"
            );
            audit.append_all(
                config
                    .destinations
                    .iter()
                    .map(|d| lost_record(d, &spool_path))
                    .collect(),
            )?;
        }
        let spool = Spool::open(
            &spool_path,
            &names,
            config.limits,
            config.when_full,
            &marker,
        )?;
        let metrics = EgressMetrics::new(names.iter().map(String::as_str));
        let mut destinations = BTreeMap::new();
        for d in config.destinations {
            let m = metrics.destination(&d.name).cloned().unwrap_or_default();
            if vanished {
                DestinationMetrics::add(&m.lost_spools, 1);
            }
            if let Some((batches, bytes)) = spool.backlog(&d.name) {
                DestinationMetrics::set(&m.backlog_batches, batches);
                DestinationMetrics::set(&m.backlog_bytes, bytes);
            }
            destinations.insert(
                d.name.clone(),
                Destination {
                    config: d,
                    notify: Arc::new(Notify::new()),
                    drained: Arc::new(Notify::new()),
                    metrics: m,
                },
            );
        }
        Ok(Self {
            shared: Arc::new(Shared {
                spool,
                audit,
                permissions,
            }),
            destinations,
            metrics,
            backoff: config.backoff,
            read_ahead: config.read_ahead,
            audit_dir: config.audit_dir.clone(),
        })
    }

    /// The audit log's head as written (`<entries> <hash of the last entry>`), for operators
    /// to compare with `mecgw audit verify`; `None` before the first entry.
    pub fn audit_head(&self) -> Option<String> {
        let bytes =
            mecgw_policy::files::read_limited(&self.audit_dir.join(audit::HEAD_FILE), 1024).ok()?;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// The counters, per destination.
    pub fn metrics(&self) -> &EgressMetrics {
        &self.metrics
    }

    /// The permissions in force; a policy reload replaces them here.
    pub fn permissions(&self) -> &Arc<Permissions> {
        &self.shared.permissions
    }

    /// Batches and bytes waiting for `destination`.
    pub fn backlog(&self, destination: &str) -> Option<(u64, u64)> {
        self.shared.spool.backlog(destination)
    }

    /// Whether egress can accept and forward batches now: not while the spool or the audit
    /// log cannot be written (a full disk, an I/O error). The daemon's `/readyz` should answer
    /// 503 with this text while [`Health::is_ready`] is false.
    pub fn health(&self) -> Health {
        Health {
            problems: [self.shared.spool.problem(), self.shared.audit.problem()]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// The storage state and failure counters, for `/metrics` ([`metrics::EgressCollector`]).
    pub fn storage(&self) -> StorageSnapshot {
        let health = self.health();
        let counters = self.shared.spool.counters();
        StorageSnapshot {
            ready: health.is_ready(),
            no_space: health.no_space(),
            spool_io_errors: counters
                .io_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            spool_reopens: counters.reopens.load(std::sync::atomic::Ordering::Relaxed),
            audit_write_failures: self.shared.audit.write_failures(),
        }
    }

    /// Waits until `destination`'s spool is empty (returns at once if it is, or if there is
    /// no such destination). Only forwarders empty a spool: start them first.
    pub async fn wait_drained(&self, destination: &str) {
        let Some(dest) = self.destinations.get(destination) else {
            return;
        };
        loop {
            // Created before the check: a wake-up between the check and the await is not lost.
            let drained = dest.drained.notified();
            if self
                .backlog(destination)
                .is_none_or(|(batches, _)| batches == 0)
            {
                return;
            }
            drained.await;
        }
    }

    /// Accepts one batch of items for `destination`. When this returns `Ok`, the batch is
    /// durably spooled (it survives `kill -9`) and will be delivered exactly once, or refused
    /// at send time or shed, and audited either way. Blocks for one fsync: call it from a
    /// blocking context (`spawn_blocking`) in async code.
    pub fn enqueue(
        &self,
        destination: &str,
        items: &[EgressItem],
    ) -> Result<BatchId, EnqueueError> {
        let (mut ids, stopped) = self.enqueue_many(destination, &[items]);
        match (stopped, ids.pop()) {
            (Some(e), _) => Err(e),
            (None, Some(id)) => Ok(id),
            (None, None) => Err(EnqueueError::Empty),
        }
    }

    /// Accepts batches for `destination`, in order, as [`Egress::enqueue`] does each, with one
    /// commit and one fsync for all the batches spooled (group commit).
    ///
    /// Returns the ids of the batches now durable, a prefix of `batches`, and the error that
    /// stopped at the next one, if any; the batches after it were not looked at. A batch the
    /// jurisdiction check refuses stops the group too (it is audited and counted once, when
    /// everything before it is spooled): the caller drops it and goes on with the rest.
    pub fn enqueue_many(
        &self,
        destination: &str,
        batches: &[&[EgressItem]],
    ) -> (Vec<BatchId>, Option<EnqueueError>) {
        let Some(dest) = self.destinations.get(destination) else {
            return (
                Vec::new(),
                Some(EnqueueError::UnknownDestination(destination.to_string())),
            );
        };
        let region = dest.config.region.as_str();
        let permissions = self.shared.permissions.current();
        // The headers of the batches before the first one that cannot go in.
        let mut headers = Vec::new();
        let mut refused = None;
        for items in batches {
            match batch_header(destination, region, items, permissions.as_ref()) {
                Ok(header) => {
                    if let Verdict::Deny(reason) =
                        check_batch(permissions.as_ref(), destination, region, &header.outputs)
                    {
                        refused = Some((header, reason));
                        break;
                    }
                    headers.push(header);
                }
                Err(e) => return self.enqueue_group(destination, dest, batches, headers, Some(e)),
            }
        }
        let (ids, stopped) = self.enqueue_group(destination, dest, batches, headers, None);
        if stopped.is_some() {
            return (ids, stopped);
        }
        let Some((header, reason)) = refused else {
            return (ids, None);
        };
        // Everything before the refused batch is spooled: now it is audited and counted.
        let mut record = audit_record(
            &header,
            region,
            Outcome::RefusedAtEnqueue,
            Some(reason.to_string()),
        );
        record.batch_id = None;
        if let Err(e) = self.shared.audit.append(record) {
            DestinationMetrics::add(&dest.metrics.rejected_unavailable, 1);
            return (ids, Some(e.into()));
        }
        DestinationMetrics::add(&dest.metrics.refused_at_enqueue, 1);
        (ids, Some(EnqueueError::Refused(reason)))
    }

    /// Spools the first `headers.len()` of `batches` in one transaction; `invalid` is the
    /// error of the batch after them, returned if they all go in.
    fn enqueue_group(
        &self,
        destination: &str,
        dest: &Destination,
        batches: &[&[EgressItem]],
        headers: Vec<BatchHeader>,
        invalid: Option<EnqueueError>,
    ) -> (Vec<BatchId>, Option<EnqueueError>) {
        if headers.is_empty() {
            return (Vec::new(), invalid);
        }
        let region = dest.config.region.as_str();
        let audit = &self.shared.audit;
        let builds = headers.into_iter().zip(batches).map(|(mut header, items)| {
            move |id: &BatchId| {
                let payload =
                    encode_batch(id, region, &header.policy_hash, items).map_err(|e| {
                        SpoolError::Encode {
                            destination: id.destination.clone(),
                            seq: id.seq,
                            problem: e.to_string(),
                        }
                    })?;
                header.id = id.to_string();
                header.bytes = payload.len() as u64;
                Ok((header, payload))
            }
        });
        let (receipts, stopped) = self.shared.spool.push_many(
            destination,
            builds,
            |_, old, damage| {
                let record = match damage {
                    None => audit_record(
                        old,
                        region,
                        Outcome::Shed,
                        Some("spool full (shed-oldest)".into()),
                    ),
                    Some(problem) => {
                        error!(%destination, batch = %old.id, %problem, "a spooled batch is damaged: quarantined, not shed");
                        audit_record(old, region, Outcome::Quarantined, Some(problem.into()))
                    }
                };
                audit.append(record).map(drop).map_err(|e| e.to_string())
            },
        );
        if let Some(e) = &stopped {
            if matches!(e, SpoolError::Full { .. }) {
                DestinationMetrics::add(&dest.metrics.rejected_full, 1);
            }
            if e.is_unavailable() {
                DestinationMetrics::add(&dest.metrics.rejected_unavailable, 1);
            }
        }
        let mut ids = Vec::with_capacity(receipts.len());
        for (receipt, items) in receipts.into_iter().zip(batches) {
            DestinationMetrics::add(&dest.metrics.shed_batches, receipt.shed.len() as u64);
            DestinationMetrics::add(
                &dest.metrics.quarantined_batches,
                receipt.quarantined.len() as u64,
            );
            DestinationMetrics::add(&dest.metrics.enqueued_batches, 1);
            DestinationMetrics::add(&dest.metrics.enqueued_items, items.len() as u64);
            ids.push(receipt.id);
        }
        if !ids.is_empty() {
            if let Some((batches, bytes)) = self.shared.spool.backlog(destination) {
                DestinationMetrics::set(&dest.metrics.backlog_batches, batches);
                DestinationMetrics::set(&dest.metrics.backlog_bytes, bytes);
            }
            dest.notify.notify_one();
        }
        match stopped {
            Some(e) => (ids, Some(e.into())),
            None => (ids, invalid),
        }
    }

    /// Starts one forwarder task per destination on the current tokio runtime.
    pub fn start(&self) -> Result<Forwarders, EgressError> {
        let (tx, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (name, d) in &self.destinations {
            let sink = Sink::new(&d.config.sink, name).map_err(|source| EgressError::Sink {
                destination: name.clone(),
                source,
            })?;
            let forwarder = Forwarder {
                destination: name.clone(),
                region: d.config.region.clone(),
                sink,
                shared: Arc::clone(&self.shared),
                metrics: Arc::clone(&d.metrics),
                notify: Arc::clone(&d.notify),
                drained: Arc::clone(&d.drained),
                backoff: self.backoff,
                read_ahead: self.read_ahead,
            };
            tasks.push((name.clone(), tokio::spawn(forwarder.run(rx.clone()))));
        }
        Ok(Forwarders {
            shutdown: tx,
            tasks,
        })
    }
}

/// The running forwarders.
pub struct Forwarders {
    shutdown: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<Result<(), ForwarderError>>)>,
}

impl Forwarders {
    /// Asks every forwarder to stop after its current send and waits for them.
    pub async fn shutdown(self) -> Result<(), ForwarderError> {
        let _ = self.shutdown.send(true);
        let mut first_error = None;
        for (name, task) in self.tasks {
            let result = match task.await {
                Ok(r) => r,
                Err(_) => Err(ForwarderError::Task(name)),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// True if some forwarder has stopped: only a panic stops one (sink, spool and audit-log
    /// failures are retried).
    pub fn any_stopped(&self) -> bool {
        self.tasks.iter().any(|(_, t)| t.is_finished())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use jurisdiction::PermissionTable;

    /// The example in docs/egress.md, which the daemon's configuration will embed.
    const EXAMPLE: &str = r#"
[egress]
spool_dir = "/var/lib/mecgw/spool"
audit_dir = "/var/lib/mecgw/audit"
when_full = "shed-oldest"
read_ahead = 64
[egress.limits]
max_batches = 100000
max_bytes = 268435456
[egress.backoff]
initial_ms = 100
max_ms = 30000
multiplier = 2.0
jitter = 0.5
[[egress.destinations]]
name = "eu-analytics"
region = "EU-DE"
sink = { type = "nats", url = "tls://broker.example:4222", tls = { ca = "/etc/mecgw/nats-ca.pem" } }
[[egress.destinations]]
name = "local-archive"
region = "EU-DE"
sink = { type = "file", dir = "/var/lib/mecgw/out" }
"#;

    #[derive(Deserialize)]
    struct Daemon {
        egress: EgressConfig,
    }

    #[test]
    fn the_documented_configuration_parses() {
        let c: Daemon = toml::from_str(EXAMPLE).unwrap();
        let c = c.egress;
        assert_eq!(c.when_full, WhenFull::ShedOldest);
        assert_eq!(c.destinations.len(), 2);
        match &c.destinations[0].sink {
            SinkConfig::Nats(n) => {
                assert_eq!(n.duplicate_window_secs, 120);
                assert!(n.tls.as_ref().unwrap().ca.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.destinations[1].sink, SinkConfig::File(_)));
        let typo = EXAMPLE.replace("read_ahead", "read_ahaed");
        assert!(toml::from_str::<Daemon>(&typo).is_err());
    }

    fn open(destinations: Vec<DestinationConfig>) -> Result<Egress, EgressError> {
        let dir = tempfile::tempdir().unwrap();
        let config = EgressConfig {
            spool_dir: dir.path().join("spool"),
            audit_dir: dir.path().join("audit"),
            state_dir: None,
            limits: SpoolLimits::default(),
            when_full: WhenFull::Backpressure,
            backoff: BackoffConfig::default(),
            read_ahead: 64,
            destinations,
        };
        Egress::open(
            config,
            Arc::new(Permissions::new(Arc::new(PermissionTable::new()))),
        )
    }

    fn file_destination(name: &str) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            region: "EU".into(),
            sink: SinkConfig::File(sink::file::FileSinkConfig {
                dir: "/nonexistent".into(),
            }),
        }
    }

    #[test]
    fn release_epsilon_is_counted_once_per_release_window() {
        let cell = |window: u32, cell: &str| {
            EgressItem::from_json(serde_json::json!({
                "kind": "release", "release": "cells", "window": {"start": window},
                "destination": "d", "policy": "h", "group": {"cell": cell}
            }))
            .unwrap()
        };
        let stated = EgressItem::from_json(serde_json::json!({
            "release": "other", "destination": "d", "policy": "h", "epsilon": 0.25
        }))
        .unwrap();
        let table = PermissionTable::new().with_release_epsilon("cells", 0.5);
        // Three cells of window 1 and one of window 2: two windows of 0.5, plus 0.25 stated.
        let items = [
            cell(1, "a"),
            cell(1, "b"),
            cell(1, "c"),
            cell(2, "a"),
            stated,
        ];
        assert_eq!(batch_epsilon(&items, &table), 1.25);
        assert_eq!(batch_epsilon(&items[..3], &PermissionTable::new()), 0.0);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let err = open(vec![file_destination("a.b")]).err().unwrap();
        assert!(err.to_string().contains("\"a.b\""), "{err}");
        let err = open(vec![file_destination("a"), file_destination("a")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("twice"), "{err}");
        let egress = open(vec![file_destination("a")]).unwrap();
        assert!(matches!(
            egress.enqueue("zzz", &[]),
            Err(EnqueueError::UnknownDestination(_))
        ));
        assert!(matches!(egress.enqueue("a", &[]), Err(EnqueueError::Empty)));
    }
}
