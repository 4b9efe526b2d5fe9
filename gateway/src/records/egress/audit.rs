//! The egress audit log: an append-only, SHA-256 hash-chained record of every batch that was
//! sent, refused, shed, quarantined or lost, and its verifier (`mecgw audit verify DIR`).
//!
//! Owns the files `DIR/audit.log` and `DIR/audit.head`. Each line of `audit.log` is
//! `<hash> <entry>\n`: `<entry>` is one compact JSON object carrying its `index` (from 0), the
//! time, the batch facts and `prev`, the hash of the entry before it (64 zeros for the first);
//! `<hash>` is the lowercase hex SHA-256 of exactly the `<entry>` bytes. Changing an entry
//! breaks its own hash; deleting or reordering one breaks the next entry's `prev` and index.
//! Entries never hold payload: only names, counts, ε and the payload's digest, so nothing the
//! policy transforms away can leak through the log.
//!
//! `audit.head` records how many entries the log has and the hash of the last, so cutting
//! entries off the end is detected too, and it is the per-write marker: before each append
//! (one entry, or a forwarder's group of entries, in one `write`) it announces the write
//! (the entry count and last hash the log will have after it), and after the write it
//! records them as done. A crash between the two leaves entries past the head that must be
//! exactly a prefix of the announced write, which the next open adopts; any other entry past
//! the head (an append that did not go through the writer) breaks the chain. Nothing is
//! fsynced: what a power loss drops from the tail is rewritten at the next start for sent
//! batches, because the forwarder reconciles against the sink (docs/egress.md).
//!
//! With a [`StateMarker`], the log knows whether this state directory has had an audit log:
//! once it has, a missing or emptied log (with or without its head) is a broken chain, not a
//! fresh start, and so is a log with entries but no head.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::health::{Problem, ProblemKind};
use super::item::{BatchId, OutputName};
use super::state::{self, StateMarker};

/// The log file inside the audit directory.
pub const LOG_FILE: &str = "audit.log";
/// The head file inside the audit directory.
pub const HEAD_FILE: &str = "audit.head";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line the verifier reads; longer is reported, not buffered without bound.
pub const MAX_LINE: usize = 1 << 20;
/// Most incidents a [`VerifyReport`] lists (all are counted).
pub const MAX_LISTED_INCIDENTS: usize = 1000;
/// Longest head file read; a head is one short line.
const MAX_HEAD: u64 = 1024;

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The sink acknowledged it.
    Sent,
    /// The jurisdiction check refused it at enqueue; it never entered the spool.
    RefusedAtEnqueue,
    /// The jurisdiction check refused it at send time; it was removed from the spool unsent.
    RefusedAtSend,
    /// It was dropped from a full spool (`shed-oldest`).
    Shed,
    /// Its stored bytes no longer match their digest: it was not sent, and was moved to the
    /// spool's quarantine, where it is kept.
    Quarantined,
    /// The spool that held the destination's batches vanished (its file is missing or
    /// empty though the state directory had one): whatever it held is lost. No batch id.
    Lost,
}

impl Outcome {
    /// True for outcomes that record damage or loss rather than a decision: what an operator
    /// must look into.
    pub fn is_incident(self) -> bool {
        matches!(self, Self::Quarantined | Self::Lost)
    }
}

/// The facts about one batch that the log keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The batch id (none for a batch refused at enqueue: it never got one).
    pub batch_id: Option<String>,
    /// Destination name.
    pub destination: String,
    /// Region of the destination's sink.
    pub region: String,
    /// Hash of the policy that produced the batch.
    pub policy_hash: String,
    /// The releases and record kinds in the batch.
    pub outputs: Vec<OutputName>,
    /// Number of releases.
    pub releases: u64,
    /// Number of transformed records.
    pub records: u64,
    /// ε spent by the releases.
    pub epsilon: f64,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for refusals, sheds, quarantines and losses.
    pub reason: Option<String>,
    /// `sha256:<hex>` of the payload as spooled (what the sink receives), for spooled batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// One line's JSON part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub index: u64,
    /// Milliseconds since the Unix epoch when it was written.
    pub time_ms: u64,
    /// Hash of the previous entry.
    pub prev: String,
    /// The batch facts.
    pub batch: AuditRecord,
}

/// The first thing found wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokenLink {
    /// The line is not `<64 hex> <json>` or the JSON is not an entry.
    #[error("unreadable line: {0}")]
    Unreadable(String),
    /// The stored hash is not the hash of the entry bytes: the entry was changed.
    #[error("stored hash {stored} but the entry hashes to {computed}: the entry was changed")]
    HashMismatch {
        /// The hash on the line.
        stored: String,
        /// The hash of the entry bytes.
        computed: String,
    },
    /// `prev` is not the previous entry's hash: an entry before it was removed or replaced.
    #[error(
        "prev is {stored} but the previous entry's hash is {expected}: an entry before it was removed or replaced"
    )]
    PrevMismatch {
        /// The entry's `prev`.
        stored: String,
        /// The previous entry's hash.
        expected: String,
    },
    /// Indexes must count up from 0 without gaps.
    #[error("index is {found}, expected {expected}: entries were removed, inserted or reordered")]
    IndexGap {
        /// The entry's index.
        found: u64,
        /// The index it should have.
        expected: u64,
    },
    /// The head names an entry whose hash differs.
    #[error("the head records hash {head} for this entry but it is {actual}")]
    HeadMismatch {
        /// Hash in the head file.
        head: String,
        /// Hash of the entry.
        actual: String,
    },
    /// The log ends before the entry the head records: entries were cut off the end.
    #[error(
        "the log ends at {entries} entries but the head records entry {head_index}: entries were cut off the end"
    )]
    Truncated {
        /// Entries in the log.
        entries: u64,
        /// Index in the head file.
        head_index: u64,
    },
    /// Entries follow the last one the head records that are not the write the head
    /// announced: they were appended by something other than the log's writer (a crash
    /// leaves at most a prefix of the one announced write). The broken link is the first
    /// entry past what the head allows.
    #[error(
        "{extra} entries follow the last one the head records, beyond the write it announced \
         (a crash leaves at most that write): they were not written by mecgw"
    )]
    PastHead {
        /// Entries past the head.
        extra: u64,
    },
    /// The entries past the head end where the announced write ends but are not that write.
    #[error("the head announced a write ending in hash {announced} but the log ends in {actual}")]
    NotAnnounced {
        /// Hash the head announced.
        announced: String,
        /// Hash of the last entry.
        actual: String,
    },
    /// The log has entries but the head file is missing or empty: it was deleted or emptied,
    /// which also hides entries cut off the end.
    #[error(
        "the log has {entries} entries but {HEAD_FILE} is missing or empty: it was deleted or \
         emptied, and entries cut off the end can no longer be seen"
    )]
    HeadMissing {
        /// Entries in the log.
        entries: u64,
    },
    /// The log is missing or empty but the state marker records that this state directory
    /// has had an audit log: it was deleted or emptied.
    #[error(
        "the log is missing or empty but the state marker {} records an audit log here: it was \
         deleted or emptied; restore it, or, to start a new chain and accept the loss, delete \
         the line `audit` from that file",
        marker.display()
    )]
    Vanished {
        /// The state marker file.
        marker: PathBuf,
    },
    /// The head file is not one of the formats the writer writes.
    #[error("unreadable head file: {0}")]
    BadHead(String),
}

/// Audit log failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The chain is broken at entry `entry` (line `line` of the log).
    #[error("{}: chain broken at entry {entry} (line {line}): {link}", path.display())]
    Broken {
        /// The log file.
        path: PathBuf,
        /// Index the broken entry has, or should have.
        entry: u64,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        link: BrokenLink,
    },
    /// The state marker cannot be read or written.
    #[error(transparent)]
    Marker(#[from] state::StateMarkerError),
    /// The log is not a regular file (a FIFO, a device), or could not be opened.
    #[error("audit log {0}")]
    Read(mecgw_policy::files::ReadError),
}

impl AuditError {
    /// True when the disk (or quota) is full: writing may work again once space returns.
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Io { source, .. } => super::spool::is_no_space(source),
            Self::Broken { .. } | Self::Marker(_) | Self::Read(_) => false,
        }
    }
}

/// An entry that records damage or loss ([`Outcome::is_incident`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Index of the entry.
    pub index: u64,
    /// Quarantined or lost.
    pub outcome: Outcome,
    /// The batch, for a quarantined one.
    pub batch_id: Option<String>,
    /// The destination.
    pub destination: String,
    /// What was found.
    pub reason: Option<String>,
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the chain.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] for an empty log).
    pub last_hash: String,
    /// The log ended in an incomplete line (a crash during a write); it is not part of the chain.
    pub incomplete_tail: bool,
    /// Entries past the head from a write that a crash interrupted (adopted at the next start).
    pub unfinished_write: u64,
    /// Entries recording damage or loss: the first [`MAX_LISTED_INCIDENTS`].
    pub incidents: Vec<Incident>,
    /// How many such entries there are.
    pub incident_count: u64,
}

struct Scan {
    report: VerifyReport,
    /// Bytes of complete lines.
    complete_len: u64,
    /// Highest sent sequence number per (destination, instance).
    last_sent: HashMap<(String, u64), u64>,
}

pub(crate) use mecgw_policy::hex::sha256 as sha256_hex;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `audit.head` says: the log's entry count and last hash, and the write in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    entries: u64,
    hash: String,
    /// Entry count and last hash the log will have once the announced write is done; equal
    /// to the above when no write is in progress.
    intent_entries: u64,
    intent_hash: String,
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Head {
    /// `v2 <entries:020> <hash> <announced entries:020> <announced hash>`, or the first
    /// version's `<index of the last entry:020> <hash>` (read, never written).
    fn parse(text: &str) -> Option<Self> {
        let fields: Vec<&str> = text.trim_end_matches('\n').split(' ').collect();
        match fields[..] {
            ["v2", entries, hash, intent_entries, intent_hash] => {
                let head = Self {
                    entries: entries.parse().ok()?,
                    hash: hash.to_string(),
                    intent_entries: intent_entries.parse().ok()?,
                    intent_hash: intent_hash.to_string(),
                };
                (is_hash(hash) && is_hash(intent_hash) && head.intent_entries >= head.entries)
                    .then_some(head)
            }
            [index, hash] if is_hash(hash) => {
                let entries = index.parse::<u64>().ok()?.checked_add(1)?;
                Some(Self {
                    entries,
                    hash: hash.to_string(),
                    intent_entries: entries,
                    intent_hash: hash.to_string(),
                })
            }
            _ => None,
        }
    }

    fn render(&self) -> String {
        // Fixed width, rewritten in place with one pwrite: never a torn or stale-tailed head.
        format!(
            "v2 {:020} {} {:020} {}\n",
            self.entries, self.hash, self.intent_entries, self.intent_hash
        )
    }
}

fn read_head(dir: &Path) -> Result<Option<Head>, BrokenLink> {
    let path = dir.join(HEAD_FILE);
    let mut text = String::new();
    // Only a regular file (a device or a FIFO is refused, never read or waited on).
    match mecgw_policy::files::open_regular(&path) {
        Ok(f) => {
            f.take(MAX_HEAD)
                .read_to_string(&mut text)
                .map_err(|e| BrokenLink::BadHead(e.to_string()))?;
        }
        Err(mecgw_policy::files::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(BrokenLink::BadHead(e.to_string())),
    }
    // `open` creates the head file before the first entry exists: empty means no head yet,
    // as a missing file does.
    if text.is_empty() {
        return Ok(None);
    }
    Head::parse(&text)
        .map(Some)
        .ok_or_else(|| BrokenLink::BadHead(format!("{:?}", text.trim_end())))
}

fn scan(dir: &Path, marker: Option<&StateMarker>) -> Result<Scan, AuditError> {
    let path = dir.join(LOG_FILE);
    let broken = |entry: u64, line: u64, link: BrokenLink| AuditError::Broken {
        path: path.clone(),
        entry,
        line,
        link,
    };
    let head = read_head(dir).map_err(|link| broken(0, 0, link))?;
    // Only a regular file (a FIFO is refused, not waited on; a device, not read forever),
    // streamed a line at a time, each line bounded by MAX_LINE.
    let file = match mecgw_policy::files::open_regular(&path) {
        Ok(f) => Some(f),
        Err(mecgw_policy::files::ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(e) => return Err(AuditError::Read(e)),
    };
    let mut report = VerifyReport {
        entries: 0,
        last_hash: GENESIS.to_string(),
        incomplete_tail: false,
        unfinished_write: 0,
        incidents: Vec::new(),
        incident_count: 0,
    };
    let mut complete_len = 0u64;
    let mut last_sent = HashMap::new();
    if let Some(file) = file {
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            let n = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(io(&path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let index = report.entries;
            if line.last() != Some(&b'\n') {
                if n > MAX_LINE {
                    return Err(broken(
                        index,
                        line_no,
                        BrokenLink::Unreadable(format!("longer than {MAX_LINE} bytes")),
                    ));
                }
                // A crash during a write leaves at most this; it was never acknowledged.
                report.incomplete_tail = true;
                break;
            }
            let text = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| broken(index, line_no, BrokenLink::Unreadable("not UTF-8".into())))?;
            let (stored, body) = text.split_once(' ').ok_or_else(|| {
                broken(
                    index,
                    line_no,
                    BrokenLink::Unreadable("no space after the hash".into()),
                )
            })?;
            let computed = sha256_hex(body.as_bytes());
            if stored != computed {
                return Err(broken(
                    index,
                    line_no,
                    BrokenLink::HashMismatch {
                        stored: stored.to_string(),
                        computed,
                    },
                ));
            }
            let entry: AuditEntry = serde_json::from_str(body)
                .map_err(|e| broken(index, line_no, BrokenLink::Unreadable(e.to_string())))?;
            if entry.index != index {
                return Err(broken(
                    index,
                    line_no,
                    BrokenLink::IndexGap {
                        found: entry.index,
                        expected: index,
                    },
                ));
            }
            if entry.prev != report.last_hash {
                return Err(broken(
                    index,
                    line_no,
                    BrokenLink::PrevMismatch {
                        stored: entry.prev,
                        expected: report.last_hash,
                    },
                ));
            }
            if let Some(h) = &head
                && h.entries == index + 1
                && h.hash != computed
            {
                return Err(broken(
                    index,
                    line_no,
                    BrokenLink::HeadMismatch {
                        head: h.hash.clone(),
                        actual: computed,
                    },
                ));
            }
            if entry.batch.outcome == Outcome::Sent
                && let Some(id) = entry
                    .batch
                    .batch_id
                    .as_deref()
                    .and_then(|s| s.parse::<BatchId>().ok())
            {
                let e = last_sent.entry((id.destination, id.instance)).or_insert(0);
                *e = (*e).max(id.seq);
            }
            if entry.batch.outcome.is_incident() {
                report.incident_count += 1;
                if report.incidents.len() < MAX_LISTED_INCIDENTS {
                    report.incidents.push(Incident {
                        index,
                        outcome: entry.batch.outcome,
                        batch_id: entry.batch.batch_id,
                        destination: entry.batch.destination,
                        reason: entry.batch.reason,
                    });
                }
            }
            report.entries += 1;
            report.last_hash = computed;
            complete_len += n as u64;
        }
    }
    let entries = report.entries;
    if entries == 0
        && let Some(marker) = marker
        && marker.had_state(state::AUDIT)
    {
        return Err(broken(
            0,
            1,
            BrokenLink::Vanished {
                marker: marker.path().to_path_buf(),
            },
        ));
    }
    match head {
        None if entries > 0 => {
            return Err(broken(
                entries - 1,
                entries,
                BrokenLink::HeadMissing { entries },
            ));
        }
        None => {}
        Some(h) => {
            if entries < h.entries {
                return Err(broken(
                    entries,
                    entries + 1,
                    BrokenLink::Truncated {
                        entries,
                        head_index: h.entries - 1,
                    },
                ));
            }
            if entries > h.intent_entries {
                return Err(broken(
                    h.intent_entries,
                    h.intent_entries + 1,
                    BrokenLink::PastHead {
                        extra: entries - h.entries,
                    },
                ));
            }
            if entries > h.entries
                && entries == h.intent_entries
                && report.last_hash != h.intent_hash
            {
                return Err(broken(
                    entries - 1,
                    entries,
                    BrokenLink::NotAnnounced {
                        announced: h.intent_hash,
                        actual: report.last_hash,
                    },
                ));
            }
            report.unfinished_write = entries - h.entries;
        }
    }
    Ok(Scan {
        report,
        complete_len,
        last_sent,
    })
}

/// Checks the chain in `dir` and reports the first broken link. Without the state marker it
/// cannot tell a vanished log from one that never existed: use [`verify_with_marker`] where
/// the state directory is known.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    scan(dir, None).map(|s| s.report)
}

/// Like [`verify`], and a log that the state marker says existed must still have entries.
pub fn verify_with_marker(dir: &Path, marker: &StateMarker) -> Result<VerifyReport, AuditError> {
    scan(dir, Some(marker)).map(|s| s.report)
}

struct Writer {
    log: File,
    /// Length of the log (complete entries only).
    len: u64,
    head: File,
    next_index: u64,
    last_hash: String,
    last_sent: HashMap<(String, u64), u64>,
}

/// The append side of the log, shared by the enqueue path and every forwarder.
pub struct AuditLog {
    dir: PathBuf,
    writer: Mutex<Writer>,
    marker: Arc<StateMarker>,
    /// The marker records this log (it has had an entry).
    recorded: AtomicBool,
    /// Why the last append failed, until one succeeds.
    failing: Mutex<Option<Problem>>,
    write_failures: AtomicU64,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. A log whose chain is broken is not appended to:
    /// the error says where it broke; neither is a log that `marker` says existed but that is
    /// now missing or empty. An incomplete last line (a crash mid-write) is cut off, and the
    /// entries of a write a crash interrupted are adopted.
    pub fn open(dir: &Path, marker: Arc<StateMarker>) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let scan = scan(dir, Some(&marker))?;
        let path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if scan.report.incomplete_tail {
            log.set_len(scan.complete_len).map_err(io(&path))?;
        }
        let head_path = dir.join(HEAD_FILE);
        let head = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&head_path)
            .map_err(io(&head_path))?;
        let writer = Writer {
            log,
            len: scan.complete_len,
            head,
            next_index: scan.report.entries,
            last_hash: scan.report.last_hash,
            last_sent: scan.last_sent,
        };
        let has_entries = writer.next_index > 0;
        if has_entries {
            writer
                .write_head(writer.next_index, &writer.last_hash)
                .map_err(io(&head_path))?;
            // A log from before the marker existed: remember it now.
            marker.record(state::AUDIT)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Mutex::new(writer),
            marker,
            recorded: AtomicBool::new(has_entries),
            failing: Mutex::new(None),
            write_failures: AtomicU64::new(0),
        })
    }

    /// Appends one entry and returns its index.
    pub fn append(&self, batch: AuditRecord) -> Result<u64, AuditError> {
        self.append_all(vec![batch]).map(|index| index.unwrap_or(0))
    }

    /// Appends entries in one write, announced in the head before and recorded there after;
    /// returns the index of the last. If the write fails, the log is cut back to where it
    /// was: no partial entry stays.
    pub fn append_all(&self, batches: Vec<AuditRecord>) -> Result<Option<u64>, AuditError> {
        if batches.is_empty() {
            return Ok(None);
        }
        let result = self.write(batches);
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => {
                if failing.take().is_some() {
                    info!(log = %self.dir.join(LOG_FILE).display(), "the audit log is writable again");
                }
            }
            Err(e) => {
                self.write_failures.fetch_add(1, Ordering::Relaxed);
                if failing.is_none() {
                    error!(error = %e, "cannot append to the audit log; nothing is sent, refused or shed unaudited meanwhile");
                }
                *failing = Some(Problem {
                    component: "audit",
                    kind: if e.is_no_space() {
                        ProblemKind::NoSpace
                    } else {
                        ProblemKind::Io
                    },
                    message: e.to_string(),
                });
            }
        }
        result
    }

    /// What keeps the log from being written now: the failure of the last append, if it
    /// failed.
    pub fn problem(&self) -> Option<Problem> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends that failed since the log was opened.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    fn write(&self, batches: Vec<AuditRecord>) -> Result<Option<u64>, AuditError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut text = String::new();
        let mut index = w.next_index;
        let mut last_hash = w.last_hash.clone();
        let mut sent = Vec::new();
        for batch in batches {
            if let (Outcome::Sent, Some(id)) = (&batch.outcome, &batch.batch_id)
                && let Ok(id) = id.parse::<BatchId>()
            {
                sent.push(id);
            }
            let entry = AuditEntry {
                index,
                time_ms,
                prev: last_hash,
                batch,
            };
            // Serialising strings, numbers and enums cannot fail.
            let body = serde_json::to_string(&entry).unwrap_or_default();
            last_hash = sha256_hex(body.as_bytes());
            text.push_str(&last_hash);
            text.push(' ');
            text.push_str(&body);
            text.push('\n');
            index += 1;
        }
        let head_path = self.dir.join(HEAD_FILE);
        w.announce(index, &last_hash).map_err(io(&head_path))?;
        if let Err(e) = w.log.write_all(text.as_bytes()) {
            let _ = w.log.set_len(w.len);
            // Withdraw the announcement; if that fails too, the next open still accepts the
            // head (the log ends where it did, inside the announced write).
            let _ = w.write_head(w.next_index, &w.last_hash);
            return Err(io(&self.dir.join(LOG_FILE))(e));
        }
        w.len += text.len() as u64;
        w.write_head(index, &last_hash).map_err(io(&head_path))?;
        w.next_index = index;
        w.last_hash = last_hash;
        for id in sent {
            let e = w
                .last_sent
                .entry((id.destination, id.instance))
                .or_insert(0);
            *e = (*e).max(id.seq);
        }
        drop(w);
        if !self.recorded.load(Ordering::Acquire) {
            match self.marker.record(state::AUDIT) {
                Ok(()) => self.recorded.store(true, Ordering::Release),
                // The entries are written; the marker is retried at the next append.
                Err(e) => warn!(error = %e, "cannot record the audit log in the state marker"),
            }
        }
        Ok(Some(index - 1))
    }

    /// Highest sequence number audited as sent for a destination and spool instance.
    pub fn last_sent(&self, destination: &str, instance: u64) -> Option<u64> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.last_sent
            .get(&(destination.to_string(), instance))
            .copied()
    }

    /// Flushes the log to stable storage.
    pub fn sync(&self) -> Result<(), AuditError> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.log.sync_data().map_err(io(&self.dir.join(LOG_FILE)))?;
        w.head.sync_data().map_err(io(&self.dir.join(HEAD_FILE)))
    }
}

impl Writer {
    /// Records that the log has `entries` entries, the last with hash `hash`, and no write in
    /// progress.
    fn write_head(&self, entries: u64, hash: &str) -> std::io::Result<()> {
        let head = Head {
            entries,
            hash: hash.to_string(),
            intent_entries: entries,
            intent_hash: hash.to_string(),
        };
        self.head.write_all_at(head.render().as_bytes(), 0)
    }

    /// Announces a write that will leave `entries` entries ending in `hash`.
    fn announce(&self, entries: u64, hash: &str) -> std::io::Result<()> {
        let head = Head {
            entries: self.next_index,
            hash: self.last_hash.clone(),
            intent_entries: entries,
            intent_hash: hash.to_string(),
        };
        self.head.write_all_at(head.render().as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::records::egress::item::OutputKind;

    fn record(n: u64, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            batch_id: Some(
                BatchId {
                    destination: "eu".into(),
                    instance: 7,
                    seq: n,
                }
                .to_string(),
            ),
            destination: "eu".into(),
            region: "EU-DE".into(),
            policy_hash: "sha256:abc".into(),
            outputs: vec![OutputName {
                kind: OutputKind::Release,
                name: "cells".into(),
            }],
            releases: 1,
            records: 0,
            epsilon: 0.25,
            outcome,
            reason: None,
            digest: Some(format!("sha256:{}", sha256_hex(&n.to_le_bytes()))),
        }
    }

    /// The log in `dir`, with the state marker in `dir` too.
    fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open(dir, Arc::new(StateMarker::open(dir).unwrap()))
    }

    fn write_log(dir: &Path, n: u64) {
        let log = open(dir).unwrap();
        for i in 1..=n {
            log.append(record(i, Outcome::Sent)).unwrap();
        }
    }

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        std::fs::write(dir.join(LOG_FILE), text).unwrap();
    }

    fn hash_of(line: &str) -> String {
        line.split_once(' ').unwrap().0.to_string()
    }

    /// The head as a crash between announcing a write and recording it leaves it.
    fn announced_head(committed: &[String], after: &[String]) -> String {
        Head {
            entries: committed.len() as u64,
            hash: committed.last().map_or(GENESIS.into(), |l| hash_of(l)),
            intent_entries: after.len() as u64,
            intent_hash: hash_of(after.last().unwrap()),
        }
        .render()
    }

    fn broken_at(dir: &Path) -> (u64, BrokenLink) {
        broken(verify(dir))
    }

    fn broken(result: Result<VerifyReport, AuditError>) -> (u64, BrokenLink) {
        match result {
            Err(AuditError::Broken { entry, link, .. }) => (entry, link),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let log = open(dir.path()).unwrap();
        assert_eq!(log.append(record(4, Outcome::Shed)).unwrap(), 3);
        assert_eq!(log.last_sent("eu", 7), Some(3));
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.entries, 4);
        assert!(!report.incomplete_tail);
        assert_eq!(report.unfinished_write, 0);
        assert_eq!(
            verify(tempfile::tempdir().unwrap().path()).unwrap().entries,
            0
        );
    }

    #[test]
    fn incidents_are_listed_by_the_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path()).unwrap();
        log.append(record(1, Outcome::Sent)).unwrap();
        let mut q = record(2, Outcome::Quarantined);
        q.reason = Some("payload digest mismatch".into());
        log.append(q).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.incident_count, 1);
        assert_eq!(report.incidents[0].index, 1);
        assert_eq!(report.incidents[0].outcome, Outcome::Quarantined);
        assert_eq!(
            report.incidents[0].reason.as_deref(),
            Some("payload digest mismatch")
        );
    }

    #[test]
    fn a_changed_entry_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 5);
        let mut l = lines(dir.path());
        l[2] = l[2].replace("\"epsilon\":0.25", "\"epsilon\":0.05");
        write_lines(dir.path(), &l);
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 2);
        assert!(matches!(link, BrokenLink::HashMismatch { .. }));
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 5);
        let mut l = lines(dir.path());
        let body = l[1].split_once(' ').unwrap().1.replace("sent", "shed");
        l[1] = format!("{} {body}", sha256_hex(body.as_bytes()));
        write_lines(dir.path(), &l);
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 2);
        assert!(matches!(link, BrokenLink::PrevMismatch { .. }));
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 5);
        let mut l = lines(dir.path());
        l.remove(1);
        write_lines(dir.path(), &l);
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 1);
        assert!(matches!(
            link,
            BrokenLink::IndexGap {
                found: 2,
                expected: 1
            }
        ));
    }

    #[test]
    fn entries_cut_off_the_end_are_found() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 5);
        let mut l = lines(dir.path());
        l.truncate(3);
        write_lines(dir.path(), &l);
        let (_, link) = broken_at(dir.path());
        assert_eq!(
            link,
            BrokenLink::Truncated {
                entries: 3,
                head_index: 4
            }
        );
    }

    #[test]
    fn a_deleted_or_emptied_head_with_the_last_entry_cut_is_found() {
        for empty_it in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), 5);
            let mut l = lines(dir.path());
            l.truncate(4);
            write_lines(dir.path(), &l);
            if empty_it {
                std::fs::write(dir.path().join(HEAD_FILE), "").unwrap();
            } else {
                std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
            }
            let (entry, link) = broken_at(dir.path());
            assert_eq!(entry, 3);
            assert_eq!(link, BrokenLink::HeadMissing { entries: 4 });
            assert!(open(dir.path()).is_err());
        }
    }

    #[test]
    fn a_log_that_had_entries_and_vanished_is_found_with_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let marker = StateMarker::open(dir.path()).unwrap();
        assert!(marker.had_state(state::AUDIT));
        for remove in [false, true] {
            if remove {
                std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
                std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
            } else {
                std::fs::write(dir.path().join(LOG_FILE), "").unwrap();
                std::fs::write(dir.path().join(HEAD_FILE), "").unwrap();
            }
            // Without the marker, nothing tells an emptied log from a new one.
            assert_eq!(verify(dir.path()).unwrap().entries, 0);
            let (entry, link) = broken(verify_with_marker(dir.path(), &marker));
            assert_eq!(entry, 0);
            assert!(matches!(link, BrokenLink::Vanished { .. }), "{link}");
            assert!(link.to_string().contains("delete the line `audit`"));
            assert!(matches!(
                open(dir.path()),
                Err(AuditError::Broken {
                    link: BrokenLink::Vanished { .. },
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_crash_mid_write_is_tolerated_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(b"0123 {\"index\":2").unwrap();
        assert!(verify(dir.path()).unwrap().incomplete_tail);
        let log = open(dir.path()).unwrap();
        log.append(record(3, Outcome::Sent)).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.entries, 3);
        assert!(!report.incomplete_tail);
    }

    #[test]
    fn a_crash_between_a_group_write_and_its_head_update_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let before = lines(dir.path());
        let log = open(dir.path()).unwrap();
        // A forwarder's flusher audits a whole group in one write.
        log.append_all((3..=5).map(|i| record(i, Outcome::Sent)).collect())
            .unwrap();
        drop(log);
        let after = lines(dir.path());
        // kill -9 after that write, before the head records it: the head still announces it.
        std::fs::write(dir.path().join(HEAD_FILE), announced_head(&before, &after)).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.entries, report.unfinished_write), (5, 3));
        // A prefix of the announced write (a write cut short) is tolerated as well.
        write_lines(dir.path(), &after[..4]);
        assert_eq!(verify(dir.path()).unwrap().unfinished_write, 2);
        write_lines(dir.path(), &after);
        let log = open(dir.path()).unwrap();
        assert_eq!(log.last_sent("eu", 7), Some(5));
        log.append(record(6, Outcome::Sent)).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.entries, report.unfinished_write), (6, 0));
    }

    /// An entry appended by something other than the writer, chained correctly and with the
    /// time of the last real write (which the first version's rule accepted).
    fn forge(dir: &Path) {
        let mut l = lines(dir);
        let last: AuditEntry =
            serde_json::from_str(l.last().unwrap().split_once(' ').unwrap().1).unwrap();
        let entry = AuditEntry {
            index: last.index + 1,
            time_ms: last.time_ms,
            prev: hash_of(l.last().unwrap()),
            batch: record(99, Outcome::Sent),
        };
        let body = serde_json::to_string(&entry).unwrap();
        l.push(format!("{} {body}", sha256_hex(body.as_bytes())));
        write_lines(dir, &l);
    }

    #[test]
    fn a_forged_append_past_the_head_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        forge(dir.path());
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 3);
        assert_eq!(link, BrokenLink::PastHead { extra: 1 });
        assert!(open(dir.path()).is_err());

        // Also behind the residue of a write a crash interrupted.
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let before = lines(dir.path());
        let log = open(dir.path()).unwrap();
        log.append_all(vec![record(3, Outcome::Sent), record(4, Outcome::Sent)])
            .unwrap();
        drop(log);
        let after = lines(dir.path());
        std::fs::write(dir.path().join(HEAD_FILE), announced_head(&before, &after)).unwrap();
        forge(dir.path());
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 4);
        assert_eq!(link, BrokenLink::PastHead { extra: 3 });
    }

    #[test]
    fn a_log_with_a_first_version_head_verifies_and_is_continued() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let l = lines(dir.path());
        std::fs::write(
            dir.path().join(HEAD_FILE),
            format!("{:020} {}\n", 2, hash_of(&l[2])),
        )
        .unwrap();
        assert_eq!(verify(dir.path()).unwrap().entries, 3);
        open(dir.path())
            .unwrap()
            .append(record(4, Outcome::Sent))
            .unwrap();
        assert_eq!(verify(dir.path()).unwrap().entries, 4);
        std::fs::write(dir.path().join(HEAD_FILE), "garbage\n").unwrap();
        assert!(matches!(broken_at(dir.path()).1, BrokenLink::BadHead(_)));
    }

    #[test]
    fn a_broken_log_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let mut l = lines(dir.path());
        l[0] = l[0].replace("EU-DE", "US-VA");
        write_lines(dir.path(), &l);
        assert!(matches!(
            open(dir.path()),
            Err(AuditError::Broken { entry: 0, .. })
        ));
    }

    #[test]
    fn a_log_opened_and_closed_without_entries_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        drop(open(dir.path()).unwrap());
        assert_eq!(verify(dir.path()).unwrap().entries, 0);
        assert!(
            !StateMarker::open(dir.path())
                .unwrap()
                .had_state(state::AUDIT)
        );
    }
}
