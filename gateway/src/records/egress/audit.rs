//! The egress audit log: an append-only, SHA-256 hash-chained record of every batch that was
//! sent, refused or shed, and its verifier (`mecgw audit verify DIR`).
//!
//! Owns the files `DIR/audit.log` and `DIR/audit.head`. Each line of `audit.log` is
//! `<hash> <entry>\n`: `<entry>` is one compact JSON object carrying its `index` (from 0), the
//! time, the batch facts and `prev`, the hash of the entry before it (64 zeros for the first);
//! `<hash>` is the lowercase hex SHA-256 of exactly the `<entry>` bytes. Changing an entry
//! breaks its own hash; deleting or reordering one breaks the next entry's `prev` and index.
//! `audit.head` holds the index and hash of the last entry, rewritten in place after every
//! append, so that cutting entries off the end is detected too. Entries never hold payload:
//! only names, counts and ε, so nothing the policy transforms away can leak through the log.
//!
//! An append (one entry, or a forwarder's group of entries, which share one `time_ms`) is
//! written with one `write` and no fsync, then the head: a process crash leaves at most that
//! one append past the head, which the next open accepts. What a power loss might drop from
//! the tail is rewritten at the next start for sent batches, because the forwarder reconciles
//! against the sink (docs/egress.md).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use super::item::{BatchId, OutputName};

/// The log file inside the audit directory.
pub const LOG_FILE: &str = "audit.log";
/// The head file inside the audit directory.
pub const HEAD_FILE: &str = "audit.head";
/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line the verifier reads; longer is reported, not buffered without bound.
pub const MAX_LINE: usize = 1 << 20;

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
    /// Why, for refusals and sheds.
    pub reason: Option<String>,
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
    /// Entries of more than one append follow the head: a crash leaves at most one append
    /// (one write of one or more entries, all with the same `time_ms`) before the head
    /// names its last entry. The broken link is the first entry of the second append.
    #[error(
        "{extra} entries follow the last one the head records, from more than one append \
         (a crash leaves at most one)"
    )]
    PastHead {
        /// Entries past the head.
        extra: u64,
    },
    /// The head file is not `<20 digits> <64 hex>`.
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
}

struct Scan {
    report: VerifyReport,
    /// Bytes of complete lines.
    complete_len: u64,
    /// Highest sent sequence number per (destination, instance).
    last_sent: HashMap<(String, u64), u64>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_head(dir: &Path) -> Result<Option<(u64, String)>, (u64, BrokenLink)> {
    let path = dir.join(HEAD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err((0, BrokenLink::BadHead(e.to_string()))),
    };
    // `open` creates the head file before the first entry exists: empty means no head yet,
    // as a missing file does.
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || (0, BrokenLink::BadHead(format!("{:?}", text.trim_end())));
    let (index, hash) = text.trim_end().split_once(' ').ok_or_else(bad)?;
    let index = index.parse::<u64>().map_err(|_| bad())?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(Some((index, hash.to_string())))
}

fn scan(dir: &Path) -> Result<Scan, AuditError> {
    let path = dir.join(LOG_FILE);
    let broken = |entry: u64, line: u64, link: BrokenLink| AuditError::Broken {
        path: path.clone(),
        entry,
        line,
        link,
    };
    let head = read_head(dir).map_err(|(e, link)| broken(e, 0, link))?;
    let file = match File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    let mut report = VerifyReport {
        entries: 0,
        last_hash: GENESIS.to_string(),
        incomplete_tail: false,
    };
    let mut complete_len = 0u64;
    let mut last_sent = HashMap::new();
    let mut head_seen = false;
    // The `time_ms` of the first entry past the head, and the first entry past the head that
    // is not from the same append (`(entry, line)`).
    let mut past_head_time = None;
    let mut second_append = None;
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
            if let Some((head_index, head_hash)) = &head
                && *head_index == index
            {
                head_seen = true;
                if *head_hash != computed {
                    return Err(broken(
                        index,
                        line_no,
                        BrokenLink::HeadMismatch {
                            head: head_hash.clone(),
                            actual: computed,
                        },
                    ));
                }
            }
            if let Some((head_index, _)) = &head
                && index > *head_index
                && second_append.is_none()
                && *past_head_time.get_or_insert(entry.time_ms) != entry.time_ms
            {
                second_append = Some((index, line_no));
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
            report.entries += 1;
            report.last_hash = computed;
            complete_len += n as u64;
        }
    }
    if let Some((head_index, _)) = head {
        if !head_seen {
            return Err(broken(
                report.entries,
                report.entries + 1,
                BrokenLink::Truncated {
                    entries: report.entries,
                    head_index,
                },
            ));
        }
        if let Some((entry, line)) = second_append {
            let extra = report.entries - 1 - head_index;
            return Err(broken(entry, line, BrokenLink::PastHead { extra }));
        }
    }
    Ok(Scan {
        report,
        complete_len,
        last_sent,
    })
}

/// Checks the chain in `dir` and reports the first broken link.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    scan(dir).map(|s| s.report)
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
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. A log whose chain is broken is not appended to:
    /// the error says where it broke. An incomplete last line (a crash mid-write) is cut off.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let scan = scan(dir)?;
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
        if writer.next_index > 0 {
            write_head(&writer.head, writer.next_index - 1, &writer.last_hash)
                .map_err(io(&head_path))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Mutex::new(writer),
        })
    }

    /// Appends one entry and returns its index.
    pub fn append(&self, batch: AuditRecord) -> Result<u64, AuditError> {
        self.append_all(vec![batch]).map(|index| index.unwrap_or(0))
    }

    /// Appends entries in one write (and one head update); returns the index of the last.
    /// If the write fails, the log is cut back to where it was: no partial entry stays.
    pub fn append_all(&self, batches: Vec<AuditRecord>) -> Result<Option<u64>, AuditError> {
        if batches.is_empty() {
            return Ok(None);
        }
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
        let log_path = self.dir.join(LOG_FILE);
        if let Err(e) = w.log.write_all(text.as_bytes()) {
            let _ = w.log.set_len(w.len);
            return Err(io(&log_path)(e));
        }
        w.len += text.len() as u64;
        write_head(&w.head, index - 1, &last_hash).map_err(io(&self.dir.join(HEAD_FILE)))?;
        w.next_index = index;
        w.last_hash = last_hash;
        for id in sent {
            let e = w
                .last_sent
                .entry((id.destination, id.instance))
                .or_insert(0);
            *e = (*e).max(id.seq);
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

fn write_head(head: &File, index: u64, hash: &str) -> std::io::Result<()> {
    // Fixed width, rewritten in place with one pwrite: never a torn or stale-tailed head.
    head.write_all_at(format!("{index:020} {hash}\n").as_bytes(), 0)
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
        }
    }

    fn write_log(dir: &Path, n: u64) {
        let log = AuditLog::open(dir).unwrap();
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
        text.push('\n');
        std::fs::write(dir.join(LOG_FILE), text).unwrap();
    }

    fn broken_at(dir: &Path) -> (u64, BrokenLink) {
        match verify(dir) {
            Err(AuditError::Broken { entry, link, .. }) => (entry, link),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn chain_verifies_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.append(record(4, Outcome::Shed)).unwrap(), 3);
        assert_eq!(log.last_sent("eu", 7), Some(3));
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.entries, 4);
        assert!(!report.incomplete_tail);
        assert_eq!(
            verify(tempfile::tempdir().unwrap().path()).unwrap().entries,
            0
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
    fn a_crash_mid_write_is_tolerated_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all(b"0123 {\"index\":2").unwrap();
        assert!(verify(dir.path()).unwrap().incomplete_tail);
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(record(3, Outcome::Sent)).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.entries, 3);
        assert!(!report.incomplete_tail);
    }

    #[test]
    fn a_crash_between_a_group_write_and_its_head_update_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        // A forwarder's flusher audits a whole group in one write.
        log.append_all((3..=5).map(|i| record(i, Outcome::Sent)).collect())
            .unwrap();
        drop(log);
        // kill -9 after that write, before the head's: the head still names entry 1.
        std::fs::write(dir.path().join(HEAD_FILE), head).unwrap();
        assert_eq!(verify(dir.path()).unwrap().entries, 5);
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.last_sent("eu", 7), Some(5));
        log.append(record(6, Outcome::Sent)).unwrap();
        assert_eq!(verify(dir.path()).unwrap().entries, 6);
    }

    #[test]
    fn entries_of_more_than_one_append_past_the_head_are_found() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append_all(vec![record(3, Outcome::Sent), record(4, Outcome::Sent)])
            .unwrap();
        log.append(record(5, Outcome::Sent)).unwrap();
        drop(log);
        // The two appends may share a millisecond: give the second (the last entry) its own.
        let mut l = lines(dir.path());
        let mut entry: AuditEntry = serde_json::from_str(l[4].split_once(' ').unwrap().1).unwrap();
        entry.time_ms += 1;
        let body = serde_json::to_string(&entry).unwrap();
        l[4] = format!("{} {body}", sha256_hex(body.as_bytes()));
        write_lines(dir.path(), &l);
        std::fs::write(dir.path().join(HEAD_FILE), head).unwrap();
        let (entry, link) = broken_at(dir.path());
        assert_eq!(entry, 4);
        assert_eq!(link, BrokenLink::PastHead { extra: 3 });
    }

    #[test]
    fn a_broken_log_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let mut l = lines(dir.path());
        l[0] = l[0].replace("EU-DE", "US-VA");
        write_lines(dir.path(), &l);
        assert!(matches!(
            AuditLog::open(dir.path()),
            Err(AuditError::Broken { entry: 0, .. })
        ));
    }

    #[test]
    fn a_log_opened_and_closed_without_entries_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        drop(AuditLog::open(dir.path()).unwrap());
        drop(AuditLog::open(dir.path()).unwrap());
        assert_eq!(verify(dir.path()).unwrap().entries, 0);
    }
}
