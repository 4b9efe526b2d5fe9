//! The privacy budget ledger: ε and δ per privacy unit per period, persisted across restarts
//! and tamper-evident.
//!
//! This module owns accounting. Every release of a window is charged before its output is
//! written; a charge that would exceed the period's budget is refused, and the refusal is
//! recorded too. It never releases anything itself, and never guesses what was spent: a
//! ledger it cannot account for is refused until an operator resets it.
//!
//! Files in the ledger's directory:
//! - `budget-ledger.jsonl`: one JSON object per line, each an [`Entry`] followed by `hash`, the
//!   lowercase hex SHA-256 of the line's bytes up to `,"hash"` closed by `}`. An entry carries
//!   its `index` (from 0) and `prev`, the hash of the entry before it ([`GENESIS`] for the
//!   first): changing a byte breaks the line's hash, removing or reordering lines breaks `prev`
//!   and `index`.
//! - `budget-ledger.head`: `<entries> <hash of the last entry>`, replaced atomically (temp
//!   file, fsync, rename) after every appended line is fsynced, so that cutting entries off the
//!   end, emptying or deleting the ledger is detected too. It is created with the ledger, so a
//!   ledger that once existed cannot silently start again from nothing.
//! - `budget-ledger.lock`: held (flock) by whoever has the ledger open, so that two processes
//!   never append to one chain and a reset never runs under a live engine.
//!
//! A crash can leave a torn last line (the write was interrupted; its charge was never
//! granted), which is cut off on open, or one complete entry the head does not yet count (the
//! crash fell between the line's fsync and the head's), which is accepted and counted. Any
//! other difference between the lines, their chain and the head is refused with
//! [`LedgerError::Broken`], naming the file, the line and what differs. [`reset`] is the
//! operator's explicit way out: it keeps the damaged files, starts a new chain whose first
//! entry records the reset, and carries over every entry it can still read.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{ReadError, open_regular, read_limited};
use crate::units::{Delta, Epsilon};

/// File name of the ledger inside its directory.
pub const LEDGER_FILE: &str = "budget-ledger.jsonl";
/// File name of the head inside the ledger's directory.
pub const HEAD_FILE: &str = "budget-ledger.head";
/// File name of the lock inside the ledger's directory.
pub const LOCK_FILE: &str = "budget-ledger.lock";
/// `prev` of the first entry, and the head's hash of an empty ledger.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest ledger line read; a longer one is damage, not buffered without bound.
pub const MAX_LINE: u64 = 1 << 16;

/// What is wrong with a ledger, its chain or its head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Broken {
    /// The line is not an entry of the chained format.
    #[error("the line is not a ledger entry ({0})")]
    Unreadable(String),
    /// The stored hash is not the hash of the line: the entry was changed.
    #[error(
        "its stored hash is {stored} but the entry hashes to {computed}: the entry was changed"
    )]
    HashMismatch {
        /// The hash on the line.
        stored: String,
        /// The hash of the line's entry.
        computed: String,
    },
    /// `prev` is not the previous entry's hash.
    #[error(
        "its prev is {stored} but the entry before it hashes to {expected}: an entry before it was removed or replaced"
    )]
    PrevMismatch {
        /// The entry's `prev`.
        stored: String,
        /// The previous entry's hash.
        expected: String,
    },
    /// Indexes must count up from 0 without gaps.
    #[error(
        "its index is {found}, expected {expected}: entries were removed, inserted or reordered"
    )]
    IndexGap {
        /// The entry's index.
        found: u64,
        /// The index it should have.
        expected: u64,
    },
    /// The ledger file is gone but its head is not.
    #[error(
        "the ledger file is missing but its head records {head_entries} entries: it was deleted"
    )]
    Missing {
        /// Entries the head records.
        head_entries: u64,
    },
    /// The ledger is empty but its head records entries.
    #[error("the ledger is empty but its head records {head_entries} entries: it was emptied")]
    Emptied {
        /// Entries the head records.
        head_entries: u64,
    },
    /// Entries are missing from the end.
    #[error(
        "the ledger holds {entries} entries but its head records {head_entries}: entries were removed from the end"
    )]
    Truncated {
        /// Complete entries in the ledger.
        entries: u64,
        /// Entries the head records.
        head_entries: u64,
    },
    /// The entry the head names has another hash.
    #[error(
        "the head records hash {head} for this entry but it hashes to {actual}: the entry was changed or replaced"
    )]
    HeadMismatch {
        /// Hash in the head.
        head: String,
        /// Hash of the entry.
        actual: String,
    },
    /// More than one complete entry past the head (a crash leaves at most one).
    #[error("{extra} entries follow the last one the head records (a crash leaves at most one)")]
    PastHead {
        /// Entries past the head.
        extra: u64,
    },
    /// Entries without a head.
    #[error(
        "the ledger holds {entries} entries but has no head file: the head was deleted, or the ledger predates the hash chain"
    )]
    NoHead {
        /// Complete lines in the ledger.
        entries: u64,
    },
    /// The head file is not `<entries> <64 hex>`.
    #[error("the head file is unreadable: {0}")]
    BadHead(String),
    /// The open ledger file was changed by someone else.
    #[error("the ledger file was replaced, cut or written to by another process while in use")]
    ChangedWhileOpen,
}

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Reading or writing a ledger file failed.
    #[error("budget ledger {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The ledger does not match its chain or its head: releases are withheld.
    #[error(
        "budget ledger {path}{}: {broken}; no release is charged or written until it is resolved: restore {ledger} and {head} together from a backup, or run `mecgw budget reset --state {dir} --reason TEXT` (docs/policy.md, \"Budget\")",
        line.map(|l| format!(" line {l}")).unwrap_or_default(),
        ledger = dir.join(LEDGER_FILE).display(),
        head = dir.join(HEAD_FILE).display(),
        dir = dir.display()
    )]
    Broken {
        /// The file that differs (the ledger or its head).
        path: PathBuf,
        /// The line of the ledger, from 1, when one line is at fault.
        line: Option<u64>,
        /// What differs.
        broken: Broken,
        /// The ledger's directory.
        dir: PathBuf,
    },
    /// A ledger file is not a regular file (a FIFO, a device), or could not be read.
    #[error("budget ledger {0}")]
    Read(ReadError),
    /// Another process holds the ledger.
    #[error(
        "budget ledger {}: in use by another process (mecgw run or policy apply with this state directory); stop it first",
        path.display()
    )]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
}

/// One ledger entry, as written before its `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain, from 0.
    pub index: u64,
    /// Hash of the entry before ([`GENESIS`] for the first).
    pub prev: String,
    /// Index of the budget period (Unix seconds / period length).
    pub period: i64,
    /// Period length in seconds when the entry was written (informational: replay re-derives
    /// the period from `window` with the current period length).
    pub period_len: u64,
    /// Release name.
    pub release: String,
    /// Window start, Unix seconds.
    pub window: i64,
    /// ε in units of 1e-9.
    pub epsilon: u64,
    /// δ in units of 1e-18.
    pub delta: u64,
    /// `spent`, `refused`, or `reset` (the first entry of a chain started by [`reset`]).
    pub outcome: String,
    /// Hash of the policy that asked.
    pub policy: String,
    /// What a reset did (`reset` entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetRecord>,
}

/// The audit trail of a reset, in the first entry of the chain it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRecord {
    /// When, RFC 3339.
    pub time: String,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// What the ledger check found (the error, or that the chain was intact).
    pub found: String,
    /// The old head file's text, if it was readable.
    pub old_head: Option<String>,
    /// Where the old files were kept, relative to the ledger's directory.
    pub archived: Vec<String>,
    /// Entries of the old ledger that could still be read and follow this one.
    pub carried: u64,
    /// Complete lines of the old ledger that could not be read (their charges are lost).
    pub unreadable: u64,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Granted and recorded; the release may be written.
    Granted,
    /// Refused and recorded; nothing may be released. Carries what was already spent.
    Refused { spent: (Epsilon, Delta) },
}

/// The open files of a persisted ledger.
struct Files {
    dir: PathBuf,
    ledger: File,
    /// Bytes of the ledger (complete lines).
    len: u64,
    /// Entries in the chain.
    entries: u64,
    /// Hash of the last entry.
    last_hash: String,
    /// Held while the ledger is open; released when dropped.
    _lock: File,
}

/// The ledger: spent ε and δ per period, optionally persisted.
pub struct Ledger {
    budget: (Epsilon, Delta),
    period_len: u64,
    spent: BTreeMap<i64, (u64, u64)>,
    files: Option<Files>,
    refusals: u64,
}

/// What a successful check of a ledger directory saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the chain.
    pub entries: u64,
    /// Hash of the last entry ([`GENESIS`] if none).
    pub last_hash: String,
    /// Resets recorded in the chain.
    pub resets: u64,
    /// The ledger ended in a torn line (a crash during a write; it is not part of the chain).
    pub torn_tail: bool,
    /// The last entry is not yet counted by the head (a crash between the two writes).
    pub past_head: bool,
    /// The head does not exist yet (and the ledger holds no entry): a new ledger.
    pub fresh: bool,
}

/// A chain read from disk.
struct Scan {
    verified: Verified,
    entries: Vec<Entry>,
    /// Bytes of the complete lines.
    complete_len: u64,
}

/// The regular file at `path` opened for reading, `None` if there is none; anything else
/// there (a FIFO, a device, a directory) is refused without blocking or reading.
fn open_existing(path: &Path) -> Result<Option<File>, LedgerError> {
    match open_regular(path) {
        Ok(f) => Ok(Some(f)),
        Err(ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(LedgerError::Read(e)),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LedgerError + '_ {
    move |error| LedgerError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The line of `entry` (without the newline) and its hash.
fn line_of(entry: &Entry) -> (String, String) {
    // Serialising strings and integers cannot fail; an empty body would be refused on
    // replay rather than accepted.
    let body = serde_json::to_string(entry).unwrap_or_default();
    let hash = crate::hex::sha256(body.as_bytes());
    let mut line = body;
    line.pop(); // the closing brace
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// The entry and hash of one complete line (without its newline), checked against itself.
fn parse_line(line: &[u8]) -> Result<(Entry, String), Broken> {
    const TAIL: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let text = std::str::from_utf8(line).map_err(|_| Broken::Unreadable("not UTF-8".into()))?;
    let split = text
        .len()
        .checked_sub(TAIL)
        .filter(|&at| text.is_char_boundary(at) && text[at..].starts_with(",\"hash\":\""))
        .filter(|_| text.ends_with("\"}"))
        .ok_or_else(|| Broken::Unreadable("no hash at its end".into()))?;
    let stored = &text[split + 9..split + 9 + 64];
    let body = format!("{}}}", &text[..split]);
    let computed = crate::hex::sha256(body.as_bytes());
    if stored != computed {
        return Err(Broken::HashMismatch {
            stored: stored.to_owned(),
            computed,
        });
    }
    let entry: Entry =
        serde_json::from_str(&body).map_err(|e| Broken::Unreadable(e.to_string()))?;
    Ok((entry, computed))
}

/// The head file: `Some((entries, hash))`, `None` if it does not exist.
fn read_head(dir: &Path) -> Result<Option<(u64, String)>, LedgerError> {
    let path = dir.join(HEAD_FILE);
    let broken = |what: String| LedgerError::Broken {
        path: path.clone(),
        line: None,
        broken: Broken::BadHead(what),
        dir: dir.to_path_buf(),
    };
    let mut text = String::new();
    // Only a regular file: a FIFO is refused, not waited on; a device, not read forever.
    match open_existing(&path)? {
        Some(f) => {
            f.take(256)
                .read_to_string(&mut text)
                .map_err(|e| broken(e.to_string()))?;
        }
        None => return Ok(None),
    }
    let bad = || broken(format!("{:?}", text.trim_end()));
    let (entries, hash) = text
        .strip_suffix('\n')
        .and_then(|t| t.split_once(' '))
        .ok_or_else(bad)?;
    let entries = entries.parse::<u64>().map_err(|_| bad())?;
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    Ok(Some((entries, hash.to_owned())))
}

/// Replaces the head atomically and durably.
fn write_head(dir: &Path, entries: u64, hash: &str) -> Result<(), LedgerError> {
    let path = dir.join(HEAD_FILE);
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{entries} {hash}\n").as_bytes())
        .map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads and checks the chain in `dir` against its head; changes nothing.
fn scan(dir: &Path) -> Result<Scan, LedgerError> {
    let path = dir.join(LEDGER_FILE);
    let broken = |line: Option<u64>, broken: Broken| LedgerError::Broken {
        path: path.clone(),
        line,
        broken,
        dir: dir.to_path_buf(),
    };
    let head = read_head(dir)?;
    // Streamed a line at a time, each line bounded by MAX_LINE.
    let file = open_existing(&path)?;
    let mut verified = Verified {
        entries: 0,
        last_hash: GENESIS.to_owned(),
        resets: 0,
        torn_tail: false,
        past_head: false,
        fresh: head.is_none(),
    };
    let ledger_exists = file.is_some();
    let mut entries = Vec::new();
    let mut complete_len = 0u64;
    if let Some(file) = file {
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut buf)
                .map_err(io(&path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let Some(line) = buf.strip_suffix(b"\n") else {
                if n as u64 > MAX_LINE {
                    return Err(broken(
                        Some(line_no),
                        Broken::Unreadable(format!("longer than {MAX_LINE} bytes")),
                    ));
                }
                // The write a crash interrupted: never granted, not part of the chain.
                verified.torn_tail = true;
                break;
            };
            let (entry, hash) = parse_line(line).map_err(|b| broken(Some(line_no), b))?;
            if entry.index != verified.entries {
                return Err(broken(
                    Some(line_no),
                    Broken::IndexGap {
                        found: entry.index,
                        expected: verified.entries,
                    },
                ));
            }
            if entry.prev != verified.last_hash {
                return Err(broken(
                    Some(line_no),
                    Broken::PrevMismatch {
                        stored: entry.prev,
                        expected: verified.last_hash,
                    },
                ));
            }
            if let Some((head_entries, head_hash)) = &head
                && verified.entries + 1 == *head_entries
                && *head_hash != hash
            {
                return Err(broken(
                    Some(line_no),
                    Broken::HeadMismatch {
                        head: head_hash.clone(),
                        actual: hash,
                    },
                ));
            }
            if entry.outcome == "reset" {
                verified.resets += 1;
            }
            verified.entries += 1;
            verified.last_hash = hash;
            complete_len += n as u64;
            entries.push(entry);
        }
    }
    let n = verified.entries;
    match head {
        None if n > 0 => return Err(broken(None, Broken::NoHead { entries: n })),
        None => {}
        Some((head_entries, _)) if !ledger_exists => {
            return Err(broken(None, Broken::Missing { head_entries }));
        }
        Some((head_entries, head_hash)) => {
            if n == 0 && head_entries > 0 {
                return Err(broken(None, Broken::Emptied { head_entries }));
            }
            if n < head_entries {
                return Err(broken(
                    Some(n + 1),
                    Broken::Truncated {
                        entries: n,
                        head_entries,
                    },
                ));
            }
            if head_entries == 0 && head_hash != GENESIS {
                return Err(LedgerError::Broken {
                    path: dir.join(HEAD_FILE),
                    line: None,
                    broken: Broken::BadHead(format!("0 entries with hash {head_hash}")),
                    dir: dir.to_path_buf(),
                });
            }
            match n - head_entries {
                0 => {}
                1 => verified.past_head = true,
                extra => {
                    return Err(broken(Some(head_entries + 2), Broken::PastHead { extra }));
                }
            }
        }
    }
    Ok(Scan {
        verified,
        entries,
        complete_len,
    })
}

/// Checks the ledger in `dir` (its chain and its head) without changing anything.
pub fn verify(dir: &Path) -> Result<Verified, LedgerError> {
    scan(dir).map(|s| s.verified)
}

/// Takes the ledger's lock, or says who holds it.
fn lock(dir: &Path) -> Result<File, LedgerError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::InUse { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

impl Ledger {
    /// A ledger that lives in memory only (tests, and `apply` without `--state`).
    pub fn in_memory(epsilon: Epsilon, delta: Delta, period_len: u64) -> Self {
        Self {
            budget: (epsilon, delta),
            period_len,
            spent: BTreeMap::new(),
            files: None,
            refusals: 0,
        }
    }

    /// Opens (or creates) the ledger in `dir`, checks its chain against its head and replays
    /// it. A torn last line is cut off and a head one entry behind is brought up to date;
    /// anything else that differs is [`LedgerError::Broken`].
    pub fn open(
        dir: &Path,
        epsilon: Epsilon,
        delta: Delta,
        period_len: u64,
    ) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock(dir)?;
        let scan = scan(dir)?;
        let path = dir.join(LEDGER_FILE);
        let ledger = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let v = &scan.verified;
        if v.torn_tail {
            ledger.set_len(scan.complete_len).map_err(io(&path))?;
            ledger.sync_all().map_err(io(&path))?;
        }
        if v.fresh || v.past_head {
            ledger.sync_all().map_err(io(&path))?;
            write_head(dir, v.entries, &v.last_hash)?;
        }
        let mut l = Self::in_memory(epsilon, delta, period_len);
        for e in &scan.entries {
            l.replay(e);
        }
        l.files = Some(Files {
            dir: dir.to_path_buf(),
            ledger,
            len: scan.complete_len,
            entries: scan.verified.entries,
            last_hash: scan.verified.last_hash,
            _lock: lock,
        });
        Ok(l)
    }

    fn replay(&mut self, e: &Entry) {
        match e.outcome.as_str() {
            "spent" => {
                // Re-derive the period from the window, so that a policy whose period
                // changed still counts what earlier runs spent on the same windows.
                let period = self.period_of(e.window);
                let s = self.spent.entry(period).or_default();
                s.0 = s.0.saturating_add(e.epsilon);
                s.1 = s.1.saturating_add(e.delta);
            }
            "refused" => self.refusals += 1,
            _ => {}
        }
    }

    /// The budget of each period (ε, δ).
    pub fn budget(&self) -> (Epsilon, Delta) {
        self.budget
    }

    /// The period a window starting at `window_start` is charged to.
    pub fn period_of(&self, window_start: i64) -> i64 {
        window_start.div_euclid(i64::try_from(self.period_len).unwrap_or(i64::MAX).max(1))
    }

    /// What has been spent in `period`.
    pub fn spent(&self, period: i64) -> (Epsilon, Delta) {
        let (e, d) = self.spent.get(&period).copied().unwrap_or_default();
        (Epsilon(e), Delta(d))
    }

    /// Refusals recorded so far (including those replayed from the file).
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Charges one release of one window. Granted only if the period's spend stays within the
    /// budget; either way the outcome is appended and fsynced, and the head advanced, before
    /// returning. A ledger changed by someone else since it was opened is refused.
    pub fn charge(
        &mut self,
        release: &str,
        window_start: i64,
        epsilon: Epsilon,
        delta: Delta,
        policy: &str,
    ) -> Result<Charge, LedgerError> {
        let period = self.period_of(window_start);
        let (se, sd) = self.spent.get(&period).copied().unwrap_or_default();
        let fits = se
            .checked_add(epsilon.0)
            .is_some_and(|v| v <= self.budget.0.0)
            && sd
                .checked_add(delta.0)
                .is_some_and(|v| v <= self.budget.1.0);
        // Counted before it is written: if the write fails, this process over-counts (the
        // safe direction) and the engine releases nothing for the window.
        if fits {
            self.spent.insert(period, (se + epsilon.0, sd + delta.0));
        } else {
            self.refusals += 1;
        }
        if let Some(files) = &mut self.files {
            let entry = Entry {
                index: files.entries,
                prev: files.last_hash.clone(),
                period,
                period_len: self.period_len,
                release: release.to_owned(),
                window: window_start,
                epsilon: epsilon.0,
                delta: delta.0,
                outcome: if fits { "spent" } else { "refused" }.to_owned(),
                policy: policy.to_owned(),
                reset: None,
            };
            files.append(&entry)?;
        }
        Ok(if fits {
            Charge::Granted
        } else {
            Charge::Refused {
                spent: (Epsilon(se), Delta(sd)),
            }
        })
    }
}

impl Files {
    /// Appends `entry` (fsynced), then advances the head. A failed write is cut back, so no
    /// partial line stays in the chain.
    fn append(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        let path = self.dir.join(LEDGER_FILE);
        self.check_unchanged(&path)?;
        let (mut line, hash) = line_of(entry);
        line.push('\n');
        if let Err(e) = self
            .ledger
            .write_all(line.as_bytes())
            .and_then(|()| self.ledger.sync_data())
        {
            let _ = self.ledger.set_len(self.len);
            return Err(io(&path)(e));
        }
        self.len += line.len() as u64;
        self.entries += 1;
        self.last_hash = hash;
        write_head(&self.dir, self.entries, &self.last_hash)
    }

    /// The ledger path still names the file we hold, and it has the length we wrote.
    fn check_unchanged(&self, path: &Path) -> Result<(), LedgerError> {
        use std::os::unix::fs::MetadataExt as _;
        let ours = self.ledger.metadata().map_err(io(path))?;
        let named = std::fs::metadata(path).ok();
        let same = named.is_some_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        if same && ours.len() == self.len {
            return Ok(());
        }
        Err(LedgerError::Broken {
            path: path.to_path_buf(),
            line: None,
            broken: Broken::ChangedWhileOpen,
            dir: self.dir.clone(),
        })
    }
}

/// What [`reset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// The reset entry as written (the audit trail).
    pub record: ResetRecord,
    /// Entries in the new chain (the reset entry and those carried over).
    pub entries: u64,
    /// Hash of the new chain's last entry.
    pub last_hash: String,
}

/// A lenient reading of an old ledger line (chained or from before the chain): what a reset
/// can carry over.
#[derive(Deserialize)]
struct Readable {
    period: i64,
    period_len: u64,
    release: String,
    window: i64,
    epsilon: u64,
    delta: u64,
    outcome: String,
    policy: String,
    #[serde(default)]
    reset: Option<ResetRecord>,
}

/// Resets the ledger in `dir`, as an operator asked for `reason` at `now` (Unix seconds):
/// keeps the old ledger and head as `<file>.reset-<now>` beside them, and starts a new chain
/// whose first entry records the reset (time, reason, what the check found, the old head if
/// readable, where the old files are) followed by every old entry that can still be read
/// (so a reset never gives back more budget than the damage already lost). Refused while
/// another process holds the ledger. Crash-safe: until the new head is in place, the
/// directory is refused as before.
pub fn reset(dir: &Path, reason: &str, now: i64) -> Result<ResetReport, LedgerError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _lock = lock(dir)?;
    let found = match verify(dir) {
        Ok(v) if v.fresh => "no ledger head yet (a new ledger)".to_owned(),
        Ok(v) => format!(
            "chain intact: {} entries, last hash {}",
            v.entries, v.last_hash
        ),
        Err(e) => e.to_string(),
    };
    let ledger_path = dir.join(LEDGER_FILE);
    let head_path = dir.join(HEAD_FILE);
    let old_head = read_limited(&head_path, 256)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned());
    let (carried, unreadable) = readable_entries(&ledger_path)?;
    // Keep the old files under new names first: the originals stay in place (and refused)
    // until the new chain replaces them.
    let mut archived = Vec::new();
    for path in [&ledger_path, &head_path] {
        if !path.exists() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut keep = format!("{name}.reset-{now}");
        let mut n = 1;
        while dir.join(&keep).exists() {
            keep = format!("{name}.reset-{now}-{n}");
            n += 1;
        }
        let target = dir.join(&keep);
        if std::fs::hard_link(path, &target).is_err() {
            std::fs::copy(path, &target).map_err(io(&target))?;
        }
        archived.push(keep);
    }
    sync_dir(dir)?;
    let record = ResetRecord {
        time: crate::units::format_rfc3339(now),
        reason: reason.to_owned(),
        found,
        old_head,
        archived,
        carried: carried.len() as u64,
        unreadable,
    };
    let mut entries = vec![Entry {
        index: 0,
        prev: GENESIS.to_owned(),
        period: 0,
        period_len: 0,
        release: String::new(),
        window: now,
        epsilon: 0,
        delta: 0,
        outcome: "reset".to_owned(),
        policy: String::new(),
        reset: Some(record.clone()),
    }];
    entries.extend(carried.into_iter().map(|r| Entry {
        index: 0,
        prev: String::new(),
        period: r.period,
        period_len: r.period_len,
        release: r.release,
        window: r.window,
        epsilon: r.epsilon,
        delta: r.delta,
        outcome: r.outcome,
        policy: r.policy,
        reset: r.reset,
    }));
    let mut text = String::new();
    let mut last_hash = GENESIS.to_owned();
    for (i, e) in entries.iter_mut().enumerate() {
        e.index = i as u64;
        e.prev = last_hash;
        let (line, hash) = line_of(e);
        text.push_str(&line);
        text.push('\n');
        last_hash = hash;
    }
    let tmp = dir.join(format!("{LEDGER_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &ledger_path).map_err(io(&ledger_path))?;
    let n = entries.len() as u64;
    write_head(dir, n, &last_hash)?;
    Ok(ResetReport {
        record,
        entries: n,
        last_hash,
    })
}

/// The entries of the ledger at `path` that can still be read, whatever their chain, and the
/// number of complete lines that cannot.
fn readable_entries(path: &Path) -> Result<(Vec<Readable>, u64), LedgerError> {
    let Some(file) = open_existing(path)? else {
        return Ok((Vec::new(), 0));
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let (mut readable, mut unreadable) = (Vec::new(), 0);
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io(path))?;
        if n == 0 {
            break;
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            if n as u64 > MAX_LINE {
                // Skip the rest of an overlong line.
                unreadable += 1;
                reader.skip_until(b'\n').map_err(io(path))?;
                continue;
            }
            break; // a torn tail was never granted
        };
        match serde_json::from_slice::<Readable>(line) {
            Ok(r) if matches!(r.outcome.as_str(), "spent" | "refused" | "reset") => {
                readable.push(r);
            }
            _ => unreadable += 1,
        }
    }
    Ok((readable, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmpdir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("mecgw-ledger-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open(dir, Epsilon(1_000), Delta(10), 86_400)
    }

    fn broken(r: Result<Ledger, LedgerError>) -> (Option<u64>, Broken) {
        match r {
            Err(LedgerError::Broken { line, broken, .. }) => (line, broken),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a broken ledger opened"),
        }
    }

    /// A ledger with `n` granted charges, closed.
    fn ledger_with(tag: &str, n: i64) -> PathBuf {
        let dir = tmpdir(tag);
        let mut l = open(&dir).unwrap();
        for i in 0..n {
            l.charge("r", i * 86_400, Epsilon(100), Delta(1), "h")
                .unwrap();
        }
        dir
    }

    fn lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(LEDGER_FILE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        std::fs::write(dir.join(LEDGER_FILE), text).unwrap();
    }

    #[test]
    fn refuses_when_spent_and_records_the_refusal() {
        let dir = tmpdir("refuse");
        let mut l = open(&dir).unwrap();
        assert_eq!(
            l.charge("r", 0, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Granted
        );
        assert_eq!(
            l.charge("r", 3600, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Refused {
                spent: (Epsilon(600), Delta(5))
            }
        );
        // Another period has its own budget.
        assert_eq!(
            l.charge("r", 86_400, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Granted
        );
        drop(l);
        let text = std::fs::read_to_string(dir.join(LEDGER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("\"outcome\":\"refused\"")
        );
        let l = open(&dir).unwrap();
        assert_eq!(l.spent(0), (Epsilon(600), Delta(5)));
        assert_eq!(l.refusals(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_period_still_counts_earlier_spending() {
        let dir = tmpdir("period");
        let mut l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 3600).unwrap();
        l.charge("r", 0, Epsilon(600), Delta(0), "h").unwrap();
        l.charge("r", 3600, Epsilon(600), Delta(0), "h").unwrap();
        drop(l);
        // A policy with a daily period sees both hourly charges in its first day.
        let mut l = open(&dir).unwrap();
        assert_eq!(l.spent(0).0, Epsilon(1_200));
        assert!(matches!(
            l.charge("r", 7200, Epsilon(1), Delta(0), "h").unwrap(),
            Charge::Refused { .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_are_json_chained_by_hash_and_the_head_counts_them() {
        let dir = ledger_with("format", 2);
        let l = lines(&dir);
        let first: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
        assert_eq!(first["index"], 0);
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["outcome"], "spent");
        assert_eq!(second["prev"], first["hash"]);
        // The hash covers the line up to `,"hash"`.
        let body = format!("{}}}", &l[1][..l[1].find(",\"hash\"").unwrap()]);
        assert_eq!(second["hash"], crate::hex::sha256(body.as_bytes()));
        let head = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
        assert_eq!(head, format!("2 {}\n", second["hash"].as_str().unwrap()));
        let v = verify(&dir).unwrap();
        assert_eq!(
            (v.entries, v.last_hash.as_str()),
            (2, second["hash"].as_str().unwrap())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_ledger_has_a_head_at_once() {
        let dir = tmpdir("new");
        drop(open(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap(),
            format!("0 {GENESIS}\n")
        );
        // Deleting the empty ledger after that is refused too.
        std::fs::remove_file(dir.join(LEDGER_FILE)).unwrap();
        assert_eq!(
            broken(open(&dir)),
            (None, Broken::Missing { head_entries: 0 })
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_ledger_opens() {
        let dir = ledger_with("torn", 1);
        let path = dir.join(LEDGER_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"index\":1,\"prev\":\"ab").unwrap();
        drop(f);
        let l = open(&dir).unwrap();
        assert_eq!(l.spent(0).0, Epsilon(100));
        drop(l);
        assert_eq!(lines(&dir).len(), 1);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_entry_past_the_head_is_a_crash_between_the_writes_and_is_accepted() {
        let dir = ledger_with("past", 2);
        let head = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
        let mut l = open(&dir).unwrap();
        l.charge("r", 5 * 86_400, Epsilon(100), Delta(1), "h")
            .unwrap();
        drop(l);
        // Put back the head of before the last charge: as if the crash hit before it moved.
        std::fs::write(dir.join(HEAD_FILE), &head).unwrap();
        let l = open(&dir).unwrap();
        assert_eq!(l.spent(5).0, Epsilon(100));
        drop(l);
        assert!(
            std::fs::read_to_string(dir.join(HEAD_FILE))
                .unwrap()
                .starts_with("3 ")
        );
        // Two past the head is not a crash.
        let mut l = open(&dir).unwrap();
        l.charge("r", 6 * 86_400, Epsilon(100), Delta(1), "h")
            .unwrap();
        l.charge("r", 7 * 86_400, Epsilon(100), Delta(1), "h")
            .unwrap();
        drop(l);
        std::fs::write(dir.join(HEAD_FILE), &head).unwrap();
        assert_eq!(broken(open(&dir)), (Some(4), Broken::PastHead { extra: 3 }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_kind_of_tampering_is_refused_with_what_differs() {
        // Emptied.
        let dir = ledger_with("empty", 3);
        std::fs::write(dir.join(LEDGER_FILE), "").unwrap();
        assert_eq!(
            broken(open(&dir)),
            (None, Broken::Emptied { head_entries: 3 })
        );
        // Deleted, head present.
        std::fs::remove_file(dir.join(LEDGER_FILE)).unwrap();
        assert_eq!(
            broken(open(&dir)),
            (None, Broken::Missing { head_entries: 3 })
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // One byte of a spent line changed (ε 100 → 000).
        let dir = ledger_with("byte", 3);
        let mut l = lines(&dir);
        l[1] = l[1].replace("\"epsilon\":100", "\"epsilon\":000");
        write_lines(&dir, &l);
        assert!(matches!(
            broken(open(&dir)),
            (Some(2), Broken::HashMismatch { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        // The last complete line damaged, or removed.
        let dir = ledger_with("last", 3);
        let mut l = lines(&dir);
        l[2] = l[2].replace("spent", "spenx");
        write_lines(&dir, &l);
        assert!(matches!(
            broken(open(&dir)),
            (Some(3), Broken::HashMismatch { .. })
        ));
        l.pop();
        write_lines(&dir, &l);
        assert_eq!(
            broken(open(&dir)),
            (
                Some(3),
                Broken::Truncated {
                    entries: 2,
                    head_entries: 3
                }
            )
        );
        // The last line replaced by a valid entry of another chain.
        let other = tmpdir("other");
        let mut o = open(&other).unwrap();
        for i in 0..3 {
            o.charge("other", i * 86_400, Epsilon(7), Delta(0), "h")
                .unwrap();
        }
        drop(o);
        l.push(lines(&other)[2].clone());
        write_lines(&dir, &l);
        assert!(matches!(
            broken(open(&dir)),
            (Some(3), Broken::PrevMismatch { .. })
        ));
        std::fs::remove_dir_all(&other).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        // A middle line removed; lines reordered.
        let dir = ledger_with("middle", 3);
        let l = lines(&dir);
        write_lines(&dir, &[l[0].clone(), l[2].clone()]);
        assert!(matches!(
            broken(open(&dir)),
            (
                Some(2),
                Broken::IndexGap {
                    found: 2,
                    expected: 1
                }
            )
        ));
        write_lines(&dir, &[l[1].clone(), l[0].clone(), l[2].clone()]);
        assert!(matches!(
            broken(open(&dir)),
            (
                Some(1),
                Broken::IndexGap {
                    found: 1,
                    expected: 0
                }
            )
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        // Entries without a head; an unreadable head.
        let dir = ledger_with("nohead", 2);
        let head = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
        std::fs::remove_file(dir.join(HEAD_FILE)).unwrap();
        assert_eq!(broken(open(&dir)), (None, Broken::NoHead { entries: 2 }));
        std::fs::write(dir.join(HEAD_FILE), head.replace(' ', "x")).unwrap();
        assert!(matches!(broken(open(&dir)), (None, Broken::BadHead(_))));
        std::fs::remove_dir_all(&dir).unwrap();

        // A ledger from before the hash chain (no head, unchained lines).
        let dir = tmpdir("legacy");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(LEDGER_FILE),
            "{\"period\":0,\"period_len\":86400,\"release\":\"r\",\"window\":0,\"epsilon\":600,\"delta\":0,\"outcome\":\"spent\",\"policy\":\"h\"}\n",
        )
        .unwrap();
        assert!(matches!(
            broken(open(&dir)),
            (Some(1), Broken::Unreadable(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_error_names_the_file_and_the_way_out() {
        let dir = ledger_with("message", 2);
        std::fs::write(dir.join(LEDGER_FILE), "").unwrap();
        let e = open(&dir).err().unwrap().to_string();
        for want in [
            format!("budget ledger {}:", dir.join(LEDGER_FILE).display()),
            "the ledger is empty but its head records 2 entries: it was emptied".to_owned(),
            format!("mecgw budget reset --state {} --reason TEXT", dir.display()),
        ] {
            assert!(e.contains(&want), "{want:?} not in {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ledger_changed_while_open_refuses_the_next_charge() {
        let dir = ledger_with("live", 1);
        let mut l = open(&dir).unwrap();
        std::fs::write(dir.join(LEDGER_FILE), "").unwrap();
        let e = l
            .charge("r", 86_400, Epsilon(1), Delta(0), "h")
            .unwrap_err();
        assert!(
            matches!(
                e,
                LedgerError::Broken {
                    broken: Broken::ChangedWhileOpen,
                    ..
                }
            ),
            "{e}"
        );
        drop(l);
        let dir2 = ledger_with("live2", 1);
        let mut l = open(&dir2).unwrap();
        std::fs::remove_file(dir2.join(LEDGER_FILE)).unwrap();
        assert!(l.charge("r", 86_400, Epsilon(1), Delta(0), "h").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn one_ledger_one_process() {
        let dir = tmpdir("lock");
        let l = open(&dir).unwrap();
        assert!(matches!(open(&dir), Err(LedgerError::InUse { .. })));
        assert!(matches!(
            reset(&dir, "test", 0),
            Err(LedgerError::InUse { .. })
        ));
        drop(l);
        assert!(open(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reset_keeps_the_old_files_records_itself_and_carries_what_it_can_read() {
        let dir = ledger_with("reset", 3);
        let head = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
        let mut l = lines(&dir);
        l[1] = l[1].replace("spent", "spenx"); // unreadable for the reset too
        write_lines(&dir, &l);
        let old = std::fs::read_to_string(dir.join(LEDGER_FILE)).unwrap();
        let report = reset(&dir, "restored host after disk failure", 1_795_690_000).unwrap();
        assert_eq!(report.entries, 3);
        let r = &report.record;
        assert_eq!(r.time, "2026-11-26T10:46:40Z");
        assert_eq!(r.reason, "restored host after disk failure");
        assert_eq!(r.old_head.as_deref(), Some(head.trim_end()));
        assert!(r.found.contains("line 2"), "{}", r.found);
        assert_eq!((r.carried, r.unreadable), (2, 1));
        // The damaged files are kept, byte for byte.
        assert_eq!(
            r.archived,
            [
                "budget-ledger.jsonl.reset-1795690000",
                "budget-ledger.head.reset-1795690000"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(&r.archived[0])).unwrap(),
            old
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(&r.archived[1])).unwrap(),
            head
        );
        // The new chain verifies, starts with the reset, and replays what was carried.
        let v = verify(&dir).unwrap();
        assert_eq!((v.entries, v.resets), (3, 1));
        let first: serde_json::Value = serde_json::from_str(&lines(&dir)[0]).unwrap();
        assert_eq!(first["outcome"], "reset");
        assert_eq!(first["reset"]["reason"], "restored host after disk failure");
        let l = open(&dir).unwrap();
        assert_eq!(l.spent(0).0, Epsilon(100));
        assert_eq!(l.spent(1).0, Epsilon(0), "the unreadable charge is lost");
        assert_eq!(l.spent(2).0, Epsilon(100));
        drop(l);
        // A second reset in the same second keeps both archives.
        let again = reset(&dir, "again", 1_795_690_000).unwrap();
        assert_eq!(
            again.record.archived[0],
            "budget-ledger.jsonl.reset-1795690000-1"
        );
        assert_eq!(again.record.carried, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reset_adopts_a_ledger_from_before_the_chain() {
        let dir = tmpdir("adopt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(LEDGER_FILE),
            "{\"period\":0,\"period_len\":86400,\"release\":\"r\",\"window\":0,\"epsilon\":600,\"delta\":0,\"outcome\":\"spent\",\"policy\":\"h\"}\n",
        )
        .unwrap();
        let report = reset(&dir, "upgrade", 0).unwrap();
        assert_eq!((report.record.carried, report.record.old_head), (1, None));
        assert_eq!(open(&dir).unwrap().spent(0).0, Epsilon(600));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever sequence of charges and restarts, the spend in any period never exceeds the
        /// budget, and what was granted equals what the reopened ledger reports.
        #[test]
        fn ledger_never_exceeds_budget_across_restarts(
            ops in proptest::collection::vec((0i64..3, 1u64..400, 0u64..4, any::<bool>()), 1..40),
        ) {
            let dir = tmpdir("prop");
            let budget = (Epsilon(1_000), Delta(6));
            let mut l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
            let mut granted = BTreeMap::<i64, (u64, u64)>::new();
            for (period, eps, delta, restart) in ops {
                if restart {
                    drop(l);
                    l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
                }
                if l.charge("r", period * 100 + 5, Epsilon(eps), Delta(delta), "h").unwrap() == Charge::Granted {
                    let g = granted.entry(period).or_default();
                    g.0 += eps;
                    g.1 += delta;
                }
                for p in 0..3 {
                    let (e, d) = l.spent(p);
                    prop_assert!(e <= budget.0 && d <= budget.1);
                }
            }
            drop(l);
            let l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
            for (p, (e, d)) in granted {
                prop_assert_eq!(l.spent(p), (Epsilon(e), Delta(d)));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }

        /// Any change to one byte of a chained ledger, or cutting anything off its end (the
        /// head counts every complete line), is refused; a torn line after the entries the
        /// head counts (a crash during a write) is cut off and the ledger opens.
        #[test]
        fn any_one_byte_change_or_cut_is_refused(n in 1i64..5, at in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
            let dir = ledger_with("chainprop", n);
            let path = dir.join(LEDGER_FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            let whole = bytes.clone();
            let i = at % bytes.len();
            if cut {
                bytes.truncate(i);
                std::fs::write(&path, &bytes).unwrap();
                let r = open(&dir);
                prop_assert!(matches!(r, Err(LedgerError::Broken { .. })), "cut at {i}: {:?}", r.err());
                // A fragment of a line after the whole chain is a torn write.
                let fragment = &whole[..i.max(1)];
                if !fragment.contains(&b'\n') {
                    let mut torn = whole.clone();
                    torn.extend_from_slice(fragment);
                    std::fs::write(&path, &torn).unwrap();
                    let l = open(&dir);
                    prop_assert!(l.is_ok(), "torn {i}: {:?}", l.err());
                    drop(l);
                    prop_assert_eq!(std::fs::read(&path).unwrap(), whole);
                }
            } else if bytes[i] != byte {
                bytes[i] = byte;
                std::fs::write(&path, &bytes).unwrap();
                let r = open(&dir);
                prop_assert!(matches!(r, Err(LedgerError::Broken { .. })), "byte {i}: {:?}", r.err());
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
