//! The spool: the durable, bounded, per-destination queue of batches waiting for their sink.
//!
//! Owns the on-disk store (one redb database file), the per-destination bounds, the integrity
//! of what it stores, and the store's recovery from I/O failures. It never holds a raw record:
//! what goes in is a [`BatchHeader`] plus the encoded payload of items the policy engine
//! emitted. A push returns only after its transaction is durably committed (fsync), so an
//! acknowledged batch survives `kill -9` and power loss. A batch leaves only by
//! [`Spool::settle`] (after its sink acknowledged it or the send-time check refused it, both
//! audited) or by shedding (audited before the commit that drops it). Removals commit without
//! fsync: losing one in a crash only means re-sending a batch the sink already has, which the
//! sink's duplicate detection and the reconciliation at reconnect absorb (docs/egress.md).
//!
//! **Integrity.** Every batch is stored with the SHA-256 of its payload in its header and the
//! SHA-256 of its header in front of it, checked whenever it is read for sending: a batch whose
//! bytes changed is never handed out as sendable but marked damaged, and [`Spool::settle`]
//! moves it to the quarantine table, where it is kept as found (never deleted by mecgw).
//!
//! **I/O failures.** After a failed write (a full disk, typically) redb refuses every later
//! operation until the database is reopened. The spool then closes the store, answers
//! [`SpoolError::NoSpace`] or [`SpoolError::Unavailable`] (with the original cause), and
//! reopens it on the next operation once [`REOPEN_EVERY`] has passed, so that it works again
//! as soon as space returns, without a restart. Transitions are logged once each, a lasting
//! failure at most every [`super::health::REPEAT_LOG_EVERY`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::audit::sha256_hex;
use super::health::{Problem, ProblemKind, Throttle};
use super::item::{BatchHeader, BatchId};
use super::state::{self, Presence, StateMarker};

/// Key: (destination, sequence number). Value: see [`encode`].
const BATCHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batches");
/// Batches whose stored bytes failed their check, kept exactly as found: same key and value.
const QUARANTINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("quarantine");
/// `instance` and `next_seq/<destination>`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// First bytes of a checked value. As the first version's `u32` header length (little
/// endian) they would be larger than any value, so the two formats cannot be confused.
const MAGIC: [u8; 4] = [b'M', b'S', 2, 0xff];
/// Bytes of a SHA-256.
const DIGEST_LEN: usize = 32;

/// redb's page cache. Its default, 1 GiB, lets the daemon's resident memory grow with the
/// pages of the spool it has touched, up to that much (a backlog of up to `max_bytes` per
/// destination included): not a bound the daemon can promise. The forwarders read batches
/// shortly after they are written, so a small cache holds what they need; the backlog stays
/// on disk.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Shortest time between two attempts to reopen a store closed after an I/O failure.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// How big one destination's spool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolLimits {
    /// Most batches waiting for one destination.
    pub max_batches: u64,
    /// Most payload bytes waiting for one destination.
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            max_batches: 100_000,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What happens when a push would take a destination past its [`SpoolLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Refuse the push with [`SpoolError::Full`]: the producer sees it and must slow down.
    #[default]
    Backpressure,
    /// Drop the oldest batches until the new one fits; each is audited and counted as shed.
    ShedOldest,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The embedded store failed (corruption, lock held by another process, …).
    #[error("spool store {}: {source}", path.display())]
    Store {
        /// The spool file.
        path: PathBuf,
        /// The failure (boxed: redb's error is large, and this one is rare).
        source: Box<redb::Error>,
    },
    /// The spool's file system (or quota) is full.
    #[error(
        "no space left for the spool {}: free space on its file system; egress reopens the \
         spool by itself once there is room, and nothing already accepted is lost",
        path.display()
    )]
    NoSpace {
        /// The spool file.
        path: PathBuf,
    },
    /// The store is closed after an I/O failure and is reopened by the next operation after
    /// [`REOPEN_EVERY`].
    #[error(
        "the spool {} is closed after an I/O error ({problem}); egress reopens it by itself, and \
         nothing already accepted is lost",
        path.display()
    )]
    Unavailable {
        /// The spool file.
        path: PathBuf,
        /// The failure that closed it.
        problem: String,
    },
    /// The spool file cannot be opened at all (damaged, or not a spool).
    #[error(
        "cannot open the spool {}: {problem}; move the file aside to start with an empty spool \
         (its batches are then audited as lost) or restore it from a backup",
        path.display()
    )]
    Damaged {
        /// The spool file.
        path: PathBuf,
        /// What failed.
        problem: String,
    },
    /// The state marker cannot be read or written.
    #[error(transparent)]
    Marker(#[from] state::StateMarkerError),
    /// The destination is not configured.
    #[error("no destination {0:?} is configured")]
    UnknownDestination(String),
    /// Backpressure: the destination's spool is at its limit.
    #[error(
        "spool for {destination:?} is full ({batches} batches, {bytes} bytes; limits {max_batches} \
         batches, {max_bytes} bytes)"
    )]
    Full {
        /// Destination.
        destination: String,
        /// Batches waiting.
        batches: u64,
        /// Bytes waiting.
        bytes: u64,
        /// Limit on batches.
        max_batches: u64,
        /// Limit on bytes.
        max_bytes: u64,
    },
    /// One batch is larger than the destination's whole byte limit.
    #[error("batch of {bytes} bytes can never fit a spool limited to {max_bytes} bytes")]
    TooLarge {
        /// Size of the batch.
        bytes: u64,
        /// The byte limit.
        max_bytes: u64,
    },
    /// A batch cannot be encoded.
    #[error("batch {destination}/{seq} cannot be encoded: {problem}")]
    Encode {
        /// Destination.
        destination: String,
        /// Sequence number.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
    /// Recording a shed batch failed, so it was not shed.
    #[error("cannot record a shed batch: {0}")]
    ShedNotRecorded(String),
}

impl SpoolError {
    /// True when the spool cannot be written now (full disk or another I/O failure) but will
    /// be retried by itself: the producer keeps its items and tries again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NoSpace { .. } | Self::Unavailable { .. })
    }
}

/// True for the I/O errors of a full file system or quota.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A batch read from the spool.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// Its id.
    pub id: BatchId,
    /// What egress knows about it (for a damaged batch whose header is damaged too: the id
    /// and size only).
    pub header: BatchHeader,
    /// The bytes the sink receives.
    pub payload: Vec<u8>,
    /// Why the stored bytes fail their check; such a batch must not be sent.
    pub damage: Option<String>,
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReceipt {
    /// Id of the new batch.
    pub id: BatchId,
    /// Oldest batches shed to make room.
    pub shed: Vec<BatchId>,
    /// Oldest batches found damaged while making room: moved to the quarantine, not shed.
    pub quarantined: Vec<BatchId>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Backlog {
    next_seq: u64,
    batches: u64,
    bytes: u64,
}

/// Why the store is closed, and when to try reopening it.
struct Closed {
    kind: ProblemKind,
    problem: String,
    next_attempt: Instant,
    log: Throttle,
}

/// Counters of the store's failures, shared with the metrics.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Operations that failed with an I/O error (a full disk included).
    pub io_errors: AtomicU64,
    /// Times the store was reopened after such a failure.
    pub reopens: AtomicU64,
}

/// The durable queue of batches, one ordered queue per destination.
pub struct Spool {
    path: PathBuf,
    /// `None` while closed after an I/O failure.
    db: RwLock<Option<Database>>,
    closed: Mutex<Option<Closed>>,
    counters: SpoolCounters,
    instance: u64,
    destinations: Vec<String>,
    limits: SpoolLimits,
    when_full: WhenFull,
    /// Held across every write transaction so bookkeeping and store agree.
    backlog: Mutex<BTreeMap<String, Backlog>>,
}

/// What [`load`] finds in a store.
struct Loaded {
    instance: u64,
    backlog: BTreeMap<String, Backlog>,
}

fn create(path: &Path) -> Result<Database, redb::Error> {
    // redb documents that opening a file damaged outside redb may panic: keep that a failure
    // of this open, not of the process.
    match std::panic::catch_unwind(|| Database::builder().set_cache_size(CACHE_BYTES).create(path))
    {
        Ok(db) => db.map_err(redb::Error::from),
        Err(_) => Err(redb::Error::Corrupted(
            "the database structure is damaged (redb panicked reading it)".into(),
        )),
    }
}

/// Reads (and on first use, writes) the instance and every destination's backlog.
fn load(db: &Database, destinations: &[String]) -> Result<Loaded, redb::Error> {
    let txn = db.begin_write()?;
    let instance;
    let mut backlog = BTreeMap::new();
    {
        let mut meta = txn.open_table(META)?;
        let stored = meta.get("instance")?.map(|g| g.value());
        instance = match stored {
            Some(i) => i,
            None => {
                let i = rand::random::<u64>() | 1;
                meta.insert("instance", i)?;
                i
            }
        };
        let batches = txn.open_table(BATCHES)?;
        txn.open_table(QUARANTINE)?;
        for dest in destinations {
            let next_seq = meta
                .get(format!("next_seq/{dest}").as_str())?
                .map_or(1, |g| g.value());
            let mut b = Backlog {
                next_seq,
                ..Backlog::default()
            };
            for entry in batches.range((dest.as_str(), 0u64)..=(dest.as_str(), u64::MAX))? {
                let (_, v) = entry?;
                b.batches += 1;
                b.bytes += stored_bytes(v.value());
            }
            backlog.insert(dest.clone(), b);
        }
    }
    txn.commit()?;
    Ok(Loaded { instance, backlog })
}

impl Spool {
    /// The spool file's state against the state marker: a spool the marker records that is
    /// now missing or empty has [`Presence::Vanished`] (its batches are lost; audit that before
    /// [`Spool::open`] creates a new one).
    pub fn presence(path: &Path, marker: &StateMarker) -> Result<Presence, SpoolError> {
        let has = state::has_content(path).map_err(|e| SpoolError::Damaged {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Ok(marker.presence(state::SPOOL, has))
    }

    /// Opens (or creates) the spool file at `path` for `destinations`, and records in the
    /// state marker that this state directory has a spool.
    pub fn open(
        path: &Path,
        destinations: &[String],
        limits: SpoolLimits,
        when_full: WhenFull,
        marker: &StateMarker,
    ) -> Result<Self, SpoolError> {
        let damaged = |e: redb::Error| SpoolError::Damaged {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        let db = create(path).map_err(|e| match &e {
            redb::Error::Io(io) if is_no_space(io) => SpoolError::NoSpace {
                path: path.to_path_buf(),
            },
            _ => damaged(e),
        })?;
        let loaded = load(&db, destinations).map_err(|e| match &e {
            redb::Error::Io(io) if is_no_space(io) => SpoolError::NoSpace {
                path: path.to_path_buf(),
            },
            _ => damaged(e),
        })?;
        marker.record(state::SPOOL)?;
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
            closed: Mutex::new(None),
            counters: SpoolCounters::default(),
            instance: loaded.instance,
            destinations: destinations.to_vec(),
            limits,
            when_full,
            backlog: Mutex::new(loaded.backlog),
        })
    }

    /// Random id of this spool database, part of every batch id.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Batches and bytes waiting for `destination`.
    pub fn backlog(&self, destination: &str) -> Option<(u64, u64)> {
        self.lock().get(destination).map(|b| (b.batches, b.bytes))
    }

    /// The store's failure counters.
    pub fn counters(&self) -> &SpoolCounters {
        &self.counters
    }

    /// What keeps the spool from working now, if anything.
    pub fn problem(&self) -> Option<Problem> {
        self.lock_closed().as_ref().map(|c| Problem {
            component: "spool",
            kind: c.kind,
            message: format!("{} ({})", c.problem, self.path.display()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Backlog>> {
        // Poisoning means a panic mid-update of plain counters; they are rebuilt on next open.
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_closed(&self) -> std::sync::MutexGuard<'_, Option<Closed>> {
        // Plain state: a panic mid-update leaves it usable.
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self, closed: &Closed) -> SpoolError {
        match closed.kind {
            ProblemKind::NoSpace => SpoolError::NoSpace {
                path: self.path.clone(),
            },
            ProblemKind::Io => SpoolError::Unavailable {
                path: self.path.clone(),
                problem: closed.problem.clone(),
            },
        }
    }

    /// Turns a store error into the spool's; an I/O failure closes the store (redb refuses
    /// every later operation until it is reopened) and is remembered as the reason.
    fn failed(&self, e: redb::Error) -> SpoolError {
        let kind = match &e {
            redb::Error::Io(io) if is_no_space(io) => ProblemKind::NoSpace,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
                ProblemKind::Io
            }
            _ => {
                return SpoolError::Store {
                    path: self.path.clone(),
                    source: Box::new(e),
                };
            }
        };
        self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
        let mut closed = self.lock_closed();
        if closed.is_none() {
            let mut log = Throttle::default();
            log.occurrence(Instant::now());
            error!(spool = %self.path.display(), error = %e, "the spool cannot be written; closing it until it can be reopened");
            *closed = Some(Closed {
                kind,
                problem: match kind {
                    ProblemKind::NoSpace => "no space left on its file system".into(),
                    ProblemKind::Io => e.to_string(),
                },
                next_attempt: Instant::now() + REOPEN_EVERY,
                log,
            });
            // Another operation may still hold the store; whoever holds it last drops it.
            if let Ok(mut db) = self.db.try_write() {
                *db = None;
            }
        }
        // `closed` was set just above if it was not already.
        closed.as_ref().map_or_else(
            || SpoolError::Unavailable {
                path: self.path.clone(),
                problem: e.to_string(),
            },
            |c| self.closed_error(c),
        )
    }

    /// Runs `f` on the open store. Callers reopen a closed store first
    /// ([`Spool::reopen_if_due`], before taking the backlog lock) and turn an error into the
    /// spool's with [`Spool::failed`] after releasing it.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(redb::Error::DatabaseClosed),
        }
    }

    fn reopen_if_due(&self) -> Result<(), SpoolError> {
        let mut closed = self.lock_closed();
        let Some(c) = closed.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < c.next_attempt {
            return Err(self.closed_error(c));
        }
        c.next_attempt = now + REOPEN_EVERY;
        if !state::has_content(&self.path).unwrap_or(false) {
            // Reopening would create an empty spool in its place and lose track of the loss.
            c.kind = ProblemKind::Io;
            c.problem = "the spool file vanished while in use; restart mecgw to audit the loss \
                         and start a new spool"
                .into();
            return Err(self.closed_error(c));
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The failed store must be closed before the file can be opened again.
        *db = None;
        let reopened = create(&self.path).and_then(|fresh| {
            let loaded = load(&fresh, &self.destinations)?;
            Ok((fresh, loaded))
        });
        match reopened {
            Ok((fresh, loaded)) if loaded.instance == self.instance => {
                *self.lock() = loaded.backlog;
                *db = Some(fresh);
                *closed = None;
                self.counters.reopens.fetch_add(1, Ordering::Relaxed);
                info!(spool = %self.path.display(), "the spool is writable again (reopened)");
                Ok(())
            }
            Ok(_) => {
                c.kind = ProblemKind::Io;
                c.problem = "the spool file was replaced by another spool while in use".into();
                Err(self.closed_error(c))
            }
            Err(e) => {
                self.counters.io_errors.fetch_add(1, Ordering::Relaxed);
                if let redb::Error::Io(io) = &e
                    && is_no_space(io)
                {
                    c.kind = ProblemKind::NoSpace;
                }
                if let Some(held_back) = c.log.occurrence(now) {
                    warn!(spool = %self.path.display(), error = %e, failures_since_last_report = held_back, "the spool still cannot be reopened");
                }
                Err(self.closed_error(c))
            }
        }
    }

    /// Appends a batch for `destination` and returns once it is durable.
    ///
    /// `build` receives the new batch id and returns the header and payload; the spool adds
    /// the payload's digest and size to the header. When the spool is full and the behaviour
    /// is [`WhenFull::ShedOldest`], `on_shed` is called for each batch about to be dropped
    /// *before* the commit that drops it, with the reason if that batch is damaged (it is then
    /// moved to the quarantine instead); if it fails nothing is shed and the push fails.
    pub fn push<B, S>(
        &self,
        destination: &str,
        build: B,
        on_shed: S,
    ) -> Result<PushReceipt, SpoolError>
    where
        B: FnOnce(&BatchId) -> Result<(BatchHeader, Vec<u8>), SpoolError>,
        S: FnMut(&BatchId, &BatchHeader, Option<&str>) -> Result<(), String>,
    {
        let (mut receipts, stopped) = self.push_many(destination, [build], on_shed);
        match (receipts.pop(), stopped) {
            (_, Some(e)) => Err(e),
            (Some(r), None) => Ok(r),
            // One build in, no error: its receipt is there.
            (None, None) => Err(SpoolError::Encode {
                destination: destination.to_string(),
                seq: 0,
                problem: "no batch was pushed".into(),
            }),
        }
    }

    /// Appends batches for `destination`, in order, in one transaction: one commit and one
    /// fsync for all of them (group commit), instead of one each. Each `build` is as in
    /// [`Spool::push`].
    ///
    /// Returns the receipts of the batches now durable, a prefix of `builds`, and the error
    /// that stopped the rest, if any: the first batch that does not fit under backpressure,
    /// is too large or cannot be encoded ends the group there (what comes before it is
    /// committed, what comes after is not tried, so the order of a destination's batches is
    /// kept); a failed commit commits none of them.
    pub fn push_many<B, S>(
        &self,
        destination: &str,
        builds: impl IntoIterator<Item = B>,
        mut on_shed: S,
    ) -> (Vec<PushReceipt>, Option<SpoolError>)
    where
        B: FnOnce(&BatchId) -> Result<(BatchHeader, Vec<u8>), SpoolError>,
        S: FnMut(&BatchId, &BatchHeader, Option<&str>) -> Result<(), String>,
    {
        if let Err(e) = self.reopen_if_due() {
            return (Vec::new(), Some(e));
        }
        let mut all = self.lock();
        let Some(backlog) = all.get_mut(destination) else {
            return (
                Vec::new(),
                Some(SpoolError::UnknownDestination(destination.to_string())),
            );
        };
        let fits = |batches: u64, bytes: u64, size: u64| {
            batches < self.limits.max_batches && bytes + size <= self.limits.max_bytes
        };
        // Each batch's id, header and stored value, built before the transaction; the first
        // one that cannot go in ends the group.
        let mut values = Vec::new();
        let mut stopped = None;
        let (mut batches, mut bytes) = (backlog.batches, backlog.bytes);
        for (n, build) in builds.into_iter().enumerate() {
            let id = BatchId {
                destination: destination.to_string(),
                instance: self.instance,
                seq: backlog.next_seq + n as u64,
            };
            let (mut header, payload) = match build(&id) {
                Ok(built) => built,
                Err(e) => {
                    stopped = Some(e);
                    break;
                }
            };
            let size = payload.len() as u64;
            header.bytes = size;
            header.digest = Some(payload_digest(&payload));
            if size > self.limits.max_bytes {
                stopped = Some(SpoolError::TooLarge {
                    bytes: size,
                    max_bytes: self.limits.max_bytes,
                });
                break;
            }
            // Under backpressure, the batches already in the group count against the limit;
            // shedding makes room inside the transaction below.
            if self.when_full == WhenFull::Backpressure && !fits(batches, bytes, size) {
                stopped = Some(SpoolError::Full {
                    destination: destination.to_string(),
                    batches,
                    bytes,
                    max_batches: self.limits.max_batches,
                    max_bytes: self.limits.max_bytes,
                });
                break;
            }
            batches += 1;
            bytes += size;
            values.push((id, size, encode(&header, &payload)));
        }
        if values.is_empty() {
            return (Vec::new(), stopped);
        }
        let mut receipts: Vec<PushReceipt> = Vec::with_capacity(values.len());
        let (mut batches, mut bytes) = (backlog.batches, backlog.bytes);
        let mut shed_failure = None;
        let committed = self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(BATCHES)?;
                for (id, size, value) in &values {
                    let mut shed = Vec::new();
                    let mut quarantined = Vec::new();
                    while !fits(batches, bytes, *size) {
                        let oldest = {
                            let mut range =
                                table.range((destination, 0u64)..=(destination, u64::MAX))?;
                            match range.next() {
                                Some(entry) => {
                                    let (k, v) = entry?;
                                    Some((k.value().1, v.value().to_vec()))
                                }
                                None => None,
                            }
                        };
                        let Some((seq, stored)) = oldest else { break };
                        let old_id = BatchId { seq, ..id.clone() };
                        let (old, damage) = match check(&stored, &old_id) {
                            Ok((h, _)) => (h, None),
                            Err(damage) => {
                                let (h, problem) = damage.header_or(&old_id, stored.len());
                                (h, Some(problem))
                            }
                        };
                        if let Err(e) = on_shed(&old_id, &old, damage.as_deref()) {
                            shed_failure = Some(e);
                            return Ok(false);
                        }
                        table.remove((destination, seq))?;
                        if damage.is_some() {
                            // Opened only when needed: most pushes never shed a damaged batch.
                            txn.open_table(QUARANTINE)?
                                .insert((destination, seq), stored.as_slice())?;
                            quarantined.push(old_id);
                        } else {
                            shed.push(old_id);
                        }
                        batches -= 1;
                        bytes -= stored_bytes(&stored);
                    }
                    table.insert((destination, id.seq), value.as_slice())?;
                    batches += 1;
                    bytes += size;
                    receipts.push(PushReceipt {
                        id: id.clone(),
                        shed,
                        quarantined,
                    });
                }
                let next = values
                    .last()
                    .map_or(backlog.next_seq, |(id, ..)| id.seq + 1);
                let mut meta = txn.open_table(META)?;
                meta.insert(format!("next_seq/{destination}").as_str(), next)?;
            }
            txn.commit()?;
            Ok(true)
        });
        match committed {
            Ok(true) => {}
            Ok(false) => {
                return (
                    Vec::new(),
                    Some(SpoolError::ShedNotRecorded(
                        shed_failure.unwrap_or_default(),
                    )),
                );
            }
            Err(e) => {
                drop(all);
                return (Vec::new(), Some(self.failed(e)));
            }
        }
        backlog.next_seq += receipts.len() as u64;
        backlog.batches = batches;
        backlog.bytes = bytes;
        (receipts, stopped)
    }

    /// The oldest batches for `destination`, in order: at most `max` of them, and no more
    /// than `max_bytes` of payload (but always the oldest one, whatever its size).
    pub fn peek(
        &self,
        destination: &str,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        self.peek_from(destination, 0, max, max_bytes)
    }

    /// Like [`Spool::peek`], from sequence number `from_seq` on. Each batch is checked against
    /// its digests; one that fails comes back with [`SpooledBatch::damage`] set.
    pub fn peek_from(
        &self,
        destination: &str,
        from_seq: u64,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        self.reopen_if_due()?;
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(BATCHES)?;
            let mut out = Vec::new();
            let mut bytes = 0u64;
            for entry in table
                .range((destination, from_seq)..=(destination, u64::MAX))?
                .take(max)
            {
                if !out.is_empty() && bytes >= max_bytes {
                    break;
                }
                let (k, v) = entry?;
                let id = BatchId {
                    destination: destination.to_string(),
                    instance: self.instance,
                    seq: k.value().1,
                };
                let value = v.value();
                let batch = match check(value, &id) {
                    Ok((header, payload)) => SpooledBatch {
                        id,
                        header,
                        payload: payload.to_vec(),
                        damage: None,
                    },
                    Err(damage) => {
                        let (header, problem) = damage.header_or(&id, value.len());
                        SpooledBatch {
                            header,
                            id,
                            payload: Vec::new(),
                            damage: Some(problem),
                        }
                    }
                };
                bytes += batch.header.bytes;
                out.push(batch);
            }
            Ok(out)
        })
        .map_err(|e| self.failed(e))
    }

    /// Removes delivered or refused batches, and moves damaged ones to the quarantine, in one
    /// transaction. Commits without fsync unless something is quarantined (see the module
    /// docs): a quarantine must not be undone by a crash, or reconciliation could later take
    /// the damaged batch for a delivered one and remove it.
    pub fn settle(
        &self,
        destination: &str,
        removed: &[u64],
        quarantined: &[u64],
    ) -> Result<(), SpoolError> {
        if removed.is_empty() && quarantined.is_empty() {
            return Ok(());
        }
        self.reopen_if_due()?;
        let mut all = self.lock();
        let settled = self.with_db(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(if quarantined.is_empty() {
                Durability::None
            } else {
                Durability::Immediate
            })?;
            let mut gone = 0;
            let mut gone_bytes = 0;
            {
                let mut table = txn.open_table(BATCHES)?;
                for &seq in removed {
                    if let Some(v) = table.remove((destination, seq))? {
                        gone += 1;
                        gone_bytes += stored_bytes(v.value());
                    }
                }
                if !quarantined.is_empty() {
                    let mut quarantine = txn.open_table(QUARANTINE)?;
                    for &seq in quarantined {
                        let stored = table
                            .remove((destination, seq))?
                            .map(|v| v.value().to_vec());
                        if let Some(v) = stored {
                            gone += 1;
                            gone_bytes += stored_bytes(&v);
                            quarantine.insert((destination, seq), v.as_slice())?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok((gone, gone_bytes))
        });
        let (gone, gone_bytes) = match settled {
            Ok(g) => g,
            Err(e) => {
                drop(all);
                return Err(self.failed(e));
            }
        };
        if let Some(b) = all.get_mut(destination) {
            b.batches = b.batches.saturating_sub(gone);
            b.bytes = b.bytes.saturating_sub(gone_bytes);
        }
        Ok(())
    }

    /// Removes delivered or refused batches (see [`Spool::settle`]).
    pub fn remove(&self, destination: &str, seqs: &[u64]) -> Result<(), SpoolError> {
        self.settle(destination, seqs, &[])
    }

    /// The sequence numbers of `destination`'s batches in the quarantine, at most `max`.
    pub fn quarantined(&self, destination: &str, max: usize) -> Result<Vec<u64>, SpoolError> {
        self.reopen_if_due()?;
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(QUARANTINE)?;
            table
                .range((destination, 0u64)..=(destination, u64::MAX))?
                .take(max)
                .map(|entry| Ok(entry?.0.value().1))
                .collect()
        })
        .map_err(|e| self.failed(e))
    }
}

/// `sha256:<hex>` of a payload, as headers and audit entries carry it.
pub fn payload_digest(payload: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(payload))
}

/// `MAGIC | SHA-256(header) | u32 header length (LE) | header JSON | payload`. The header
/// carries the payload's digest, so the header's digest covers everything.
fn encode(header: &BatchHeader, payload: &[u8]) -> Vec<u8> {
    // Serialising a struct of strings, numbers and a set of such cannot fail.
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut value = Vec::with_capacity(MAGIC.len() + DIGEST_LEN + 4 + header.len() + payload.len());
    value.extend_from_slice(&MAGIC);
    value.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &header).as_ref());
    value.extend_from_slice(&(header.len() as u32).to_le_bytes());
    value.extend_from_slice(&header);
    value.extend_from_slice(payload);
    value
}

/// Splits a stored value into its header and payload, checking the header's digest. The
/// first version's values (`u32 header length | header | payload`, no digests) are read as
/// they are. `Err` says what is damaged.
fn decode(value: &[u8]) -> Result<(BatchHeader, &[u8]), String> {
    let (checked, rest) = match value.strip_prefix(&MAGIC) {
        Some(rest) => {
            let (digest, rest) = rest
                .split_at_checked(DIGEST_LEN)
                .ok_or("shorter than its header digest")?;
            (Some(digest), rest)
        }
        None => (None, value),
    };
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("shorter than its length prefix")?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let header = rest.get(4..4 + len).ok_or("header length past the end")?;
    if let Some(digest) = checked
        && ring::digest::digest(&ring::digest::SHA256, header).as_ref() != digest
    {
        return Err("the header does not match its digest".into());
    }
    let parsed: BatchHeader =
        serde_json::from_slice(header).map_err(|e| format!("header unreadable: {e}"))?;
    if checked.is_some() && parsed.digest.is_none() {
        return Err("the header has no payload digest".into());
    }
    Ok((parsed, &rest[4 + len..]))
}

/// Why a stored value fails its check, with its header if that is intact itself (only the
/// payload changed): its facts are then still right for the audit entry.
struct Damage {
    header: Option<Box<BatchHeader>>,
    problem: String,
}

impl Damage {
    fn header_or(self, id: &BatchId, stored_len: usize) -> (BatchHeader, String) {
        let header = self
            .header
            .map_or_else(|| placeholder(id, stored_len), |h| *h);
        (header, self.problem)
    }
}

/// Decodes a stored value and checks all of it: header digest, payload digest and size, and
/// that it is stored under its own id.
fn check<'v>(value: &'v [u8], id: &BatchId) -> Result<(BatchHeader, &'v [u8]), Damage> {
    let (header, payload) = decode(value).map_err(|problem| Damage {
        header: None,
        problem,
    })?;
    match check_identity(&header, id).and_then(|()| check_payload(&header, payload)) {
        Ok(()) => Ok((header, payload)),
        Err(problem) => {
            let trusted = header.digest.is_some() && header.id == id.to_string();
            Err(Damage {
                header: trusted.then(|| Box::new(header)),
                problem,
            })
        }
    }
}

/// Checks a payload against the digest and size in its header.
fn check_payload(header: &BatchHeader, payload: &[u8]) -> Result<(), String> {
    if header.bytes != payload.len() as u64 {
        return Err(format!(
            "the payload has {} bytes, its header says {}",
            payload.len(),
            header.bytes
        ));
    }
    if let Some(stored) = &header.digest {
        let computed = payload_digest(payload);
        if *stored != computed {
            return Err(format!(
                "the payload does not match its digest (stored {stored}, computed {computed})"
            ));
        }
    }
    Ok(())
}

/// Checks that a header belongs to the key it is stored under.
fn check_identity(header: &BatchHeader, id: &BatchId) -> Result<(), String> {
    if header.id != id.to_string() || header.destination != id.destination {
        return Err(format!(
            "the header is for batch {} of {}, stored as {id}",
            header.id, header.destination
        ));
    }
    Ok(())
}

/// Payload bytes a stored value accounts for in the backlog (its whole size if damaged).
fn stored_bytes(value: &[u8]) -> u64 {
    decode(value).map_or(value.len() as u64, |(h, _)| h.bytes)
}

/// What is known of a damaged batch: its id and size.
fn placeholder(id: &BatchId, stored_len: usize) -> BatchHeader {
    BatchHeader {
        id: id.to_string(),
        destination: id.destination.clone(),
        region: String::new(),
        policy_hash: String::new(),
        outputs: Default::default(),
        releases: 0,
        records: 0,
        epsilon: 0.0,
        bytes: stored_len as u64,
        digest: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use super::*;

    fn header(id: &BatchId, bytes: u64) -> BatchHeader {
        BatchHeader {
            id: id.to_string(),
            destination: id.destination.clone(),
            region: "EU".into(),
            policy_hash: "h".into(),
            outputs: BTreeSet::new(),
            releases: 1,
            records: 0,
            epsilon: 0.1,
            bytes,
            digest: None,
        }
    }

    fn push(spool: &Spool, dest: &str, body: &str) -> Result<PushReceipt, SpoolError> {
        spool.push(
            dest,
            |id| Ok((header(id, body.len() as u64), body.as_bytes().to_vec())),
            |_, _, _| Ok(()),
        )
    }

    fn open(dir: &Path, limits: SpoolLimits, when_full: WhenFull) -> Spool {
        Spool::open(
            &dir.join("spool.redb"),
            &["a".to_string(), "b".to_string()],
            limits,
            when_full,
            &StateMarker::open(dir).unwrap(),
        )
        .unwrap()
    }

    fn push_many(spool: &Spool, dest: &str, bodies: &[&str]) -> (Vec<u64>, Option<SpoolError>) {
        let builds = bodies.iter().map(|body| {
            move |id: &BatchId| Ok((header(id, body.len() as u64), body.as_bytes().to_vec()))
        });
        let (receipts, stopped) = spool.push_many(dest, builds, |_, _, _| Ok(()));
        (receipts.iter().map(|r| r.id.seq).collect(), stopped)
    }

    /// Group commit: the batches that fit go in together, in order, durable across a reopen;
    /// the first that does not fit stops the group and nothing after it is tried.
    #[test]
    fn a_group_commits_the_batches_that_fit_in_order_and_stops_at_the_first_that_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_batches: 3,
            max_bytes: 1000,
        };
        {
            let s = open(dir.path(), limits, WhenFull::Backpressure);
            push(&s, "a", "0").unwrap();
            let (seqs, stopped) = push_many(&s, "a", &["1", "2", "3", "4"]);
            assert_eq!(seqs, vec![2, 3]);
            assert!(
                matches!(stopped, Some(SpoolError::Full { batches: 3, .. })),
                "{stopped:?}"
            );
            let (seqs, stopped) = push_many(&s, "b", &["x", "y"]);
            assert_eq!((seqs, stopped.is_none()), (vec![1, 2], true));
        }
        let s = open(dir.path(), limits, WhenFull::Backpressure);
        let bodies: Vec<String> = s
            .peek("a", 10, u64::MAX)
            .unwrap()
            .iter()
            .map(|b| String::from_utf8(b.payload.clone()).unwrap())
            .collect();
        assert_eq!(bodies, ["0", "1", "2"]);
        assert_eq!(s.backlog("a"), Some((3, 3)));
        // The next batch takes the next sequence number: nothing was used by the refused ones.
        s.settle("a", &[1], &[]).unwrap();
        let (seqs, _) = push_many(&s, "a", &["5"]);
        assert_eq!(seqs, vec![4]);
    }

    /// Flips one bit of the stored value of `a`/`seq` at byte `at` (from the end if
    /// negative), as damage on disk would, and returns the damaged value.
    fn damage(s: &Spool, seq: u64, at: isize) -> Vec<u8> {
        let db = s.db.read().unwrap();
        let txn = db.as_ref().unwrap().begin_write().unwrap();
        let value = {
            let mut t = txn.open_table(BATCHES).unwrap();
            let mut v = t.get(("a", seq)).unwrap().unwrap().value().to_vec();
            let i = if at < 0 {
                v.len() - at.unsigned_abs()
            } else {
                at as usize
            };
            v[i] ^= 0x01;
            t.insert(("a", seq), v.as_slice()).unwrap();
            v
        };
        txn.commit().unwrap();
        value
    }

    #[test]
    fn batches_come_back_in_order_per_destination_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let instance;
        {
            let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
            instance = s.instance();
            for i in 0..5 {
                push(&s, "a", &format!("a{i}")).unwrap();
            }
            push(&s, "b", "b0").unwrap();
            s.remove("a", &[1, 2]).unwrap();
        }
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        assert_eq!(s.instance(), instance);
        let a = s.peek("a", 10, u64::MAX).unwrap();
        let bodies: Vec<_> = a.iter().map(|b| b.payload.clone()).collect();
        assert_eq!(bodies, vec![b"a2".to_vec(), b"a3".to_vec(), b"a4".to_vec()]);
        assert_eq!(a[0].id.seq, 3);
        assert!(a.iter().all(|b| b.damage.is_none()));
        assert_eq!(
            a[0].header.digest.as_deref(),
            Some(payload_digest(b"a2").as_str())
        );
        assert_eq!(s.backlog("a"), Some((3, 6)));
        // Sequence numbers are never reused, even after removal and reopen.
        assert_eq!(push(&s, "a", "a5").unwrap().id.seq, 6);
        assert_eq!(s.peek("b", 10, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn peek_is_bounded_by_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        for _ in 0..5 {
            push(&s, "a", "0123456789").unwrap();
        }
        assert_eq!(s.peek("a", 3, u64::MAX).unwrap().len(), 3);
        assert_eq!(s.peek("a", 10, 25).unwrap().len(), 3);
        // The oldest batch always comes back, even if larger than the byte bound.
        assert_eq!(s.peek("a", 10, 1).unwrap().len(), 1);
        let tail: Vec<_> = s
            .peek_from("a", 4, 10, u64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.id.seq)
            .collect();
        assert_eq!(tail, vec![4, 5]);
    }

    #[test]
    fn a_flipped_payload_byte_is_damage_and_the_batch_is_quarantined_as_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        push(&s, "a", "first-batch-payload").unwrap();
        push(&s, "a", "second-batch-payload").unwrap();
        push(&s, "a", "third-batch-payload").unwrap();
        let damaged_value = damage(&s, 2, -3);
        let batches = s.peek("a", 10, u64::MAX).unwrap();
        let damage: Vec<_> = batches.iter().map(|b| b.damage.is_some()).collect();
        assert_eq!(damage, [false, true, false]);
        let problem = batches[1].damage.as_deref().unwrap();
        assert!(problem.contains("does not match its digest"), "{problem}");
        assert!(
            batches[1].payload.is_empty(),
            "damaged bytes are never handed out"
        );
        assert_eq!(batches[1].header.id, batches[1].id.to_string());
        // Its header is intact (its own digest holds): its facts go into the audit entry.
        assert_eq!(batches[1].header.releases, 1);
        assert_eq!(
            batches[1].header.digest.as_deref(),
            Some(payload_digest(b"second-batch-payload").as_str())
        );

        s.settle("a", &[1], &[2]).unwrap();
        assert_eq!(s.backlog("a").unwrap().0, 1);
        assert_eq!(s.quarantined("a", 10).unwrap(), vec![2]);
        drop(s);
        let db = Database::create(dir.path().join("spool.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let kept = txn.open_table(QUARANTINE).unwrap();
        assert_eq!(
            kept.get(("a", 2)).unwrap().unwrap().value(),
            damaged_value.as_slice(),
            "kept byte for byte, across a reopen"
        );
    }

    #[test]
    fn a_damaged_header_or_digest_is_damage_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        for _ in 0..4 {
            push(&s, "a", "x").unwrap();
        }
        let header_at = (MAGIC.len() + DIGEST_LEN + 4 + 8) as isize;
        damage(&s, 1, 0);
        damage(&s, 2, MAGIC.len() as isize);
        damage(&s, 3, header_at);
        let b = s.peek("a", 10, u64::MAX).unwrap();
        for batch in &b[..3] {
            assert!(
                batch.damage.as_deref().unwrap().contains("header"),
                "{:?}",
                batch.damage
            );
        }
        assert_eq!(b[3].damage, None);
    }

    #[test]
    fn values_of_the_first_format_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let id = BatchId {
            destination: "a".into(),
            instance: 0,
            seq: 1,
        };
        {
            let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
            let id = BatchId {
                instance: s.instance(),
                ..id.clone()
            };
            let h = serde_json::to_vec(&header(&id, 3)).unwrap();
            let mut v = (h.len() as u32).to_le_bytes().to_vec();
            v.extend_from_slice(&h);
            v.extend_from_slice(b"old");
            let db = s.db.read().unwrap();
            let txn = db.as_ref().unwrap().begin_write().unwrap();
            txn.open_table(BATCHES)
                .unwrap()
                .insert(("a", 1), v.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        let b = s.peek("a", 10, u64::MAX).unwrap();
        assert_eq!(b[0].payload, b"old");
        assert_eq!(b[0].damage, None);
        assert_eq!(s.backlog("a"), Some((1, 3)));
    }

    #[test]
    fn a_store_closed_by_a_full_disk_says_so_and_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        push(&s, "a", "kept").unwrap();
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(matches!(
            s.failed(redb::Error::Io(full)),
            SpoolError::NoSpace { .. }
        ));
        // What redb answers after that is the earlier cause, not "previous I/O error".
        assert!(matches!(
            s.failed(redb::Error::PreviousIo),
            SpoolError::NoSpace { .. }
        ));
        let err = push(&s, "a", "later").unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("no space left"), "{err}");
        assert_eq!(s.problem().unwrap().kind, ProblemKind::NoSpace);
        // The reopen is due (as it is REOPEN_EVERY later).
        s.lock_closed().as_mut().unwrap().next_attempt = Instant::now();
        push(&s, "a", "later").unwrap();
        assert!(s.problem().is_none());
        assert_eq!(s.counters().reopens.load(Ordering::Relaxed), 1);
        assert_eq!(s.backlog("a"), Some((2, 9)));
        let seqs: Vec<_> = s
            .peek("a", 10, u64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.id.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_spool_file_that_vanished_is_told_apart_from_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let marker = StateMarker::open(dir.path()).unwrap();
        assert_eq!(Spool::presence(&path, &marker).unwrap(), Presence::Fresh);
        drop(open(
            dir.path(),
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ));
        let marker = StateMarker::open(dir.path()).unwrap();
        assert_eq!(Spool::presence(&path, &marker).unwrap(), Presence::Present);
        std::fs::File::create(&path).unwrap();
        assert_eq!(Spool::presence(&path, &marker).unwrap(), Presence::Vanished);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(Spool::presence(&path, &marker).unwrap(), Presence::Vanished);
    }

    #[test]
    fn a_file_that_is_not_a_spool_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spool.redb"), vec![0x5a; 8192]).unwrap();
        let err = Spool::open(
            &dir.path().join("spool.redb"),
            &["a".to_string()],
            SpoolLimits::default(),
            WhenFull::Backpressure,
            &StateMarker::open(dir.path()).unwrap(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, SpoolError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("move the file aside"), "{err}");
    }

    #[test]
    fn backpressure_refuses_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_batches: 2,
            max_bytes: 1000,
        };
        let s = open(dir.path(), limits, WhenFull::Backpressure);
        push(&s, "a", "1").unwrap();
        push(&s, "a", "2").unwrap();
        assert!(matches!(
            push(&s, "a", "3"),
            Err(SpoolError::Full { batches: 2, .. })
        ));
        assert_eq!(s.peek("a", 10, u64::MAX).unwrap().len(), 2);
        // The other destination has its own bound.
        push(&s, "b", "1").unwrap();
    }

    #[test]
    fn shed_oldest_reports_every_batch_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_batches: 100,
            max_bytes: 10,
        };
        let s = open(dir.path(), limits, WhenFull::ShedOldest);
        push(&s, "a", "aaaa").unwrap();
        push(&s, "a", "bbbb").unwrap();
        let mut seen = Vec::new();
        let r = s
            .push(
                "a",
                |id| Ok((header(id, 6), b"cccccc".to_vec())),
                |id, _, damage| {
                    assert_eq!(damage, None);
                    seen.push(id.seq);
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(seen, vec![1]);
        assert_eq!(r.shed.len(), 1);
        let left: Vec<_> = s
            .peek("a", 10, u64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.id.seq)
            .collect();
        assert_eq!(left, vec![2, 3]);
        assert!(matches!(
            push(&s, "a", "01234567890"),
            Err(SpoolError::TooLarge { .. })
        ));
        // A shed that cannot be recorded does not happen.
        let err = s
            .push(
                "a",
                |id| Ok((header(id, 6), b"dddddd".to_vec())),
                |_, _, _| Err("audit down".into()),
            )
            .unwrap_err();
        assert!(matches!(err, SpoolError::ShedNotRecorded(_)));
        assert_eq!(s.peek("a", 10, u64::MAX).unwrap().len(), 2);
    }

    #[test]
    fn shedding_a_damaged_batch_quarantines_it_instead() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            max_batches: 2,
            max_bytes: 1000,
        };
        let s = open(dir.path(), limits, WhenFull::ShedOldest);
        push(&s, "a", "oldest-payload").unwrap();
        push(&s, "a", "second-payload").unwrap();
        damage(&s, 1, -1);
        let mut seen = Vec::new();
        let r = s
            .push(
                "a",
                |id| Ok((header(id, 3), b"new".to_vec())),
                |id, _, damage| {
                    seen.push((id.seq, damage.is_some()));
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(seen, vec![(1, true)]);
        assert!(r.shed.is_empty());
        assert_eq!(r.quarantined.len(), 1);
        assert_eq!(s.quarantined("a", 10).unwrap(), vec![1]);
        assert_eq!(s.backlog("a").unwrap().0, 2);
    }

    #[test]
    fn unknown_destination_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), SpoolLimits::default(), WhenFull::Backpressure);
        assert!(matches!(
            push(&s, "zzz", "x"),
            Err(SpoolError::UnknownDestination(_))
        ));
    }
}
