//! The spool: the durable, bounded, per-destination queue of batches waiting for their sink.
//!
//! Owns the on-disk store (one redb database file) and the per-destination bounds. It never
//! holds a raw record: what goes in is a [`BatchHeader`] plus the encoded payload of items the
//! policy engine emitted. A push returns only after its transaction is durably committed
//! (fsync), so an acknowledged batch survives `kill -9` and power loss. A batch leaves only by
//! [`Spool::remove`] (after its sink acknowledged it or the send-time check refused it, both
//! audited) or by shedding (audited before the commit that drops it). Removals commit without
//! fsync: losing one in a crash only means re-sending a batch the sink already has, which the
//! sink's duplicate detection and the reconciliation at reconnect absorb (docs/egress.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::item::{BatchHeader, BatchId};

/// Key: (destination, sequence number). Value: `u32` header length (LE), header JSON, payload.
const BATCHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batches");
/// `instance` and `next_seq/<destination>`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
    /// The embedded store failed (I/O, corruption, lock held by another process).
    #[error("spool store: {0}")]
    Store(#[from] redb::Error),
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
    /// A stored value cannot be decoded: the file was changed behind our back.
    #[error("spool entry {destination}/{seq} is corrupt: {problem}")]
    Corrupt {
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

fn store<E: Into<redb::Error>>(e: E) -> SpoolError {
    SpoolError::Store(e.into())
}

/// A batch read from the spool.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// Its id.
    pub id: BatchId,
    /// What egress knows about it.
    pub header: BatchHeader,
    /// The bytes the sink receives.
    pub payload: Vec<u8>,
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReceipt {
    /// Id of the new batch.
    pub id: BatchId,
    /// Oldest batches shed to make room.
    pub shed: Vec<BatchId>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Backlog {
    next_seq: u64,
    batches: u64,
    bytes: u64,
}

/// The durable queue of batches, one ordered queue per destination.
pub struct Spool {
    db: Database,
    instance: u64,
    limits: SpoolLimits,
    when_full: WhenFull,
    /// Held across every write transaction so bookkeeping and store agree.
    backlog: Mutex<BTreeMap<String, Backlog>>,
}

impl Spool {
    /// Opens (or creates) the spool file at `path` for `destinations`.
    pub fn open(
        path: &Path,
        destinations: &[String],
        limits: SpoolLimits,
        when_full: WhenFull,
    ) -> Result<Self, SpoolError> {
        let db = Database::create(path).map_err(store)?;
        let txn = db.begin_write().map_err(store)?;
        let instance;
        let mut backlog = BTreeMap::new();
        {
            let mut meta = txn.open_table(META).map_err(store)?;
            let stored = meta.get("instance").map_err(store)?.map(|g| g.value());
            instance = match stored {
                Some(i) => i,
                None => {
                    let i = rand::random::<u64>() | 1;
                    meta.insert("instance", i).map_err(store)?;
                    i
                }
            };
            let batches = txn.open_table(BATCHES).map_err(store)?;
            for dest in destinations {
                let next_seq = meta
                    .get(format!("next_seq/{dest}").as_str())
                    .map_err(store)?
                    .map_or(1, |g| g.value());
                let mut b = Backlog {
                    next_seq,
                    ..Backlog::default()
                };
                for entry in batches
                    .range((dest.as_str(), 0u64)..=(dest.as_str(), u64::MAX))
                    .map_err(store)?
                {
                    let (k, v) = entry.map_err(store)?;
                    let header = decode(dest, k.value().1, v.value())?.0;
                    b.batches += 1;
                    b.bytes += header.bytes;
                }
                backlog.insert(dest.clone(), b);
            }
        }
        txn.commit().map_err(store)?;
        Ok(Self {
            db,
            instance,
            limits,
            when_full,
            backlog: Mutex::new(backlog),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Backlog>> {
        // Poisoning means a panic mid-update of plain counters; they are rebuilt on next open.
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a batch for `destination` and returns once it is durable.
    ///
    /// `build` receives the new batch id and returns the header and payload. When the spool is
    /// full and the behaviour is [`WhenFull::ShedOldest`], `on_shed` is called for each batch
    /// about to be dropped *before* the commit that drops it; if it fails nothing is shed and
    /// the push fails.
    pub fn push<B, S>(
        &self,
        destination: &str,
        build: B,
        mut on_shed: S,
    ) -> Result<PushReceipt, SpoolError>
    where
        B: FnOnce(&BatchId) -> Result<(BatchHeader, Vec<u8>), SpoolError>,
        S: FnMut(&BatchId, &BatchHeader) -> Result<(), String>,
    {
        let mut all = self.lock();
        let backlog = all
            .get_mut(destination)
            .ok_or_else(|| SpoolError::UnknownDestination(destination.to_string()))?;
        let id = BatchId {
            destination: destination.to_string(),
            instance: self.instance,
            seq: backlog.next_seq,
        };
        let (mut header, payload) = build(&id)?;
        let size = payload.len() as u64;
        header.bytes = size;
        if size > self.limits.max_bytes {
            return Err(SpoolError::TooLarge {
                bytes: size,
                max_bytes: self.limits.max_bytes,
            });
        }
        let fits = |batches: u64, bytes: u64| {
            batches < self.limits.max_batches && bytes + size <= self.limits.max_bytes
        };
        if !fits(backlog.batches, backlog.bytes) && self.when_full == WhenFull::Backpressure {
            return Err(SpoolError::Full {
                destination: destination.to_string(),
                batches: backlog.batches,
                bytes: backlog.bytes,
                max_batches: self.limits.max_batches,
                max_bytes: self.limits.max_bytes,
            });
        }
        let value = encode(&header, &payload);
        let mut txn = self.db.begin_write().map_err(store)?;
        txn.set_durability(Durability::Immediate).map_err(store)?;
        let mut shed = Vec::new();
        let (mut batches, mut bytes) = (backlog.batches, backlog.bytes);
        {
            let mut table = txn.open_table(BATCHES).map_err(store)?;
            while !fits(batches, bytes) {
                let oldest = {
                    let mut range = table
                        .range((destination, 0u64)..=(destination, u64::MAX))
                        .map_err(store)?;
                    match range.next() {
                        Some(entry) => {
                            let (k, v) = entry.map_err(store)?;
                            let seq = k.value().1;
                            Some((seq, decode(destination, seq, v.value())?.0))
                        }
                        None => None,
                    }
                };
                let Some((seq, old)) = oldest else { break };
                let old_id = BatchId { seq, ..id.clone() };
                on_shed(&old_id, &old).map_err(SpoolError::ShedNotRecorded)?;
                table.remove((destination, seq)).map_err(store)?;
                batches -= 1;
                bytes -= old.bytes;
                shed.push(old_id);
            }
            table
                .insert((destination, id.seq), value.as_slice())
                .map_err(store)?;
            let mut meta = txn.open_table(META).map_err(store)?;
            meta.insert(format!("next_seq/{destination}").as_str(), id.seq + 1)
                .map_err(store)?;
        }
        txn.commit().map_err(store)?;
        backlog.next_seq = id.seq + 1;
        backlog.batches = batches + 1;
        backlog.bytes = bytes + size;
        Ok(PushReceipt { id, shed })
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

    /// Like [`Spool::peek`], from sequence number `from_seq` on.
    pub fn peek_from(
        &self,
        destination: &str,
        from_seq: u64,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<SpooledBatch>, SpoolError> {
        let txn = self.db.begin_read().map_err(store)?;
        let table = txn.open_table(BATCHES).map_err(store)?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in table
            .range((destination, from_seq)..=(destination, u64::MAX))
            .map_err(store)?
            .take(max)
        {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            let (k, v) = entry.map_err(store)?;
            let seq = k.value().1;
            let (header, payload) = decode(destination, seq, v.value())?;
            bytes += payload.len() as u64;
            out.push(SpooledBatch {
                id: BatchId {
                    destination: destination.to_string(),
                    instance: self.instance,
                    seq,
                },
                header,
                payload: payload.to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes delivered or refused batches. Commits without fsync (see the module docs).
    pub fn remove(&self, destination: &str, seqs: &[u64]) -> Result<(), SpoolError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut all = self.lock();
        let mut txn = self.db.begin_write().map_err(store)?;
        txn.set_durability(Durability::None).map_err(store)?;
        let mut removed = 0;
        let mut removed_bytes = 0;
        {
            let mut table = txn.open_table(BATCHES).map_err(store)?;
            for &seq in seqs {
                if let Some(v) = table.remove((destination, seq)).map_err(store)? {
                    removed += 1;
                    removed_bytes += decode(destination, seq, v.value())?.0.bytes;
                }
            }
        }
        txn.commit().map_err(store)?;
        if let Some(b) = all.get_mut(destination) {
            b.batches = b.batches.saturating_sub(removed);
            b.bytes = b.bytes.saturating_sub(removed_bytes);
        }
        Ok(())
    }
}

fn encode(header: &BatchHeader, payload: &[u8]) -> Vec<u8> {
    // Serialising a struct of strings, numbers and a set of such cannot fail.
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut value = Vec::with_capacity(4 + header.len() + payload.len());
    value.extend_from_slice(&(header.len() as u32).to_le_bytes());
    value.extend_from_slice(&header);
    value.extend_from_slice(payload);
    value
}

fn decode<'v>(
    destination: &str,
    seq: u64,
    value: &'v [u8],
) -> Result<(BatchHeader, &'v [u8]), SpoolError> {
    let corrupt = |problem: String| SpoolError::Corrupt {
        destination: destination.to_string(),
        seq,
        problem,
    };
    let len_bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("shorter than its length prefix".into()))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let header = value
        .get(4..4 + len)
        .ok_or_else(|| corrupt("header length past the end".into()))?;
    let header: BatchHeader =
        serde_json::from_slice(header).map_err(|e| corrupt(format!("header: {e}")))?;
    Ok((header, &value[4 + len..]))
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
        }
    }

    fn push(spool: &Spool, dest: &str, body: &str) -> Result<PushReceipt, SpoolError> {
        spool.push(
            dest,
            |id| Ok((header(id, body.len() as u64), body.as_bytes().to_vec())),
            |_, _| Ok(()),
        )
    }

    fn open(dir: &Path, limits: SpoolLimits, when_full: WhenFull) -> Spool {
        Spool::open(
            &dir.join("spool.redb"),
            &["a".to_string(), "b".to_string()],
            limits,
            when_full,
        )
        .unwrap()
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
                |id, _| {
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
                |_, _| Err("audit down".into()),
            )
            .unwrap_err();
        assert!(matches!(err, SpoolError::ShedNotRecorded(_)));
        assert_eq!(s.peek("a", 10, u64::MAX).unwrap().len(), 2);
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
