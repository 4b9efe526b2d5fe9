//! The file sink: each destination's batches as JSON lines in `DIR/<destination>.jsonl`, one
//! batch per line. The embedded default (the demo uses it).
//!
//! A batch counts as delivered only once its whole line, newline included, is written and
//! fsynced. A crash mid-write leaves an incomplete last line; [`FileSink::ready`] cuts it off
//! before anything else is written, so a reader never sees it as a batch, and the batch is
//! still in the spool to be written again. A last line that is a whole batch and lacks only
//! its newline (a short write, or the newline damaged later) is a delivered batch: its newline
//! is restored, never the batch cut off (it may be audited as sent and gone from the spool).
//! Bytes cut off the end are not destroyed but appended to `DIR/<destination>.jsonl.cut`.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Delivered, SinkError};
use crate::records::egress::item::BatchId;

/// Configuration of a file sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Directory of the `<destination>.jsonl` files.
    pub dir: PathBuf,
}

/// JSON lines for one destination.
pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
}

const CHUNK: u64 = 64 * 1024;

impl FileSink {
    pub(super) fn new(config: &FileSinkConfig, destination: &str) -> Self {
        Self {
            path: config.dir.join(format!("{destination}.jsonl")),
            file: None,
        }
    }

    /// The file this sink appends to.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
        |source| SinkError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The file where bytes cut off the end of the sink file are kept.
    pub fn cut_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".cut");
        PathBuf::from(p)
    }

    /// Opens the file, repairs its end, and returns the last batch id in it.
    ///
    /// Bytes after the last newline are either a whole batch whose newline is missing (it is
    /// kept and the newline restored) or an unfinished write (it is cut off). Either way what
    /// does not stay in the file is appended to [`FileSink::cut_path`] first.
    pub fn ready(&mut self) -> Result<Option<BatchId>, SinkError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(self.io())?;
        let len = file.metadata().map_err(self.io())?.len();
        // End of the last complete line.
        let mut complete = match rfind_newline(&file, len).map_err(self.io())? {
            Some(pos) => pos + 1,
            None => 0,
        };
        let mut restored = None;
        if complete != len {
            let batch = whole_batch_at(&file, complete, len - complete).map_err(self.io())?;
            let keep_to = match &batch {
                Some((_, end)) => complete + end,
                None => complete,
            };
            if keep_to < len {
                self.keep_aside(&file, keep_to, len - keep_to)?;
                warn!(
                    sink = %self.path.display(),
                    bytes = len - keep_to,
                    kept_in = %self.cut_path().display(),
                    "cut an unfinished write off the end of the sink file"
                );
            }
            file.set_len(keep_to).map_err(self.io())?;
            if let Some((id, _)) = batch {
                file.write_all(b"\n").map_err(self.io())?;
                warn!(sink = %self.path.display(), batch = %id, "the last batch in the sink file had lost its newline; restored");
                complete = keep_to + 1;
                restored = Some(id);
            }
            file.sync_data().map_err(self.io())?;
        }
        let last = match restored {
            Some(id) => Some(id),
            None if complete == 0 => None,
            None => {
                let start = rfind_newline(&file, complete - 1)
                    .map_err(self.io())?
                    .map_or(0, |p| p + 1);
                let mut line = vec![0; (complete - 1 - start) as usize];
                file.read_exact_at(&mut line, start).map_err(self.io())?;
                last_batch_id(&line)
            }
        };
        self.file = Some(file);
        Ok(last)
    }

    /// Appends `len` bytes of `file` from `start` to the cut file, and a newline, durably.
    fn keep_aside(&self, file: &File, start: u64, len: u64) -> Result<(), SinkError> {
        let cut_path = self.cut_path();
        let io = |source| SinkError::Io {
            path: cut_path.clone(),
            source,
        };
        let mut cut = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cut_path)
            .map_err(io)?;
        let mut reader = file.try_clone().map_err(self.io())?;
        reader.seek(SeekFrom::Start(start)).map_err(self.io())?;
        std::io::copy(&mut reader.take(len), &mut cut).map_err(io)?;
        cut.write_all(b"\n")
            .and_then(|()| cut.sync_data())
            .map_err(io)
    }

    /// Appends the batch as one line and fsyncs before acknowledging.
    pub fn deliver(&mut self, payload: &[u8]) -> Result<Delivered, SinkError> {
        if payload.contains(&b'\n') {
            return Err(SinkError::Config(
                "a batch payload must not contain a newline".into(),
            ));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(SinkError::Connect("file sink used before ready()".into()));
        };
        let mut line = Vec::with_capacity(payload.len() + 1);
        line.extend_from_slice(payload);
        line.push(b'\n');
        let written = file.write_all(&line).and_then(|()| file.sync_data());
        if let Err(source) = written {
            // The file may now end in a partial line: ready() repairs it before the retry.
            self.file = None;
            return Err(SinkError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok(Delivered { duplicate: false })
    }
}

/// Position of the last `\n` before `end`.
fn rfind_newline(file: &File, end: u64) -> std::io::Result<Option<u64>> {
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// If the `len` bytes of `file` at `start` begin with one whole JSON object with a valid
/// `batch_id`, that id and the object's length. Streams the bytes: nothing is held in memory
/// but the id.
fn whole_batch_at(file: &File, start: u64, len: u64) -> std::io::Result<Option<(BatchId, u64)>> {
    #[derive(Deserialize)]
    struct Head {
        batch_id: String,
    }
    let mut reader = file.try_clone()?;
    reader.seek(SeekFrom::Start(start))?;
    let reader = std::io::BufReader::new(reader.take(len));
    let mut stream = serde_json::Deserializer::from_reader(reader).into_iter::<Head>();
    Ok(match stream.next() {
        Some(Ok(head)) => head
            .batch_id
            .parse()
            .ok()
            .map(|id| (id, stream.byte_offset() as u64)),
        _ => None,
    })
}

fn last_batch_id(line: &[u8]) -> Option<BatchId> {
    #[derive(Deserialize)]
    struct Head {
        batch_id: String,
    }
    serde_json::from_slice::<Head>(line)
        .ok()
        .and_then(|h| h.batch_id.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn batch(seq: u64) -> (BatchId, Vec<u8>) {
        let id = BatchId {
            destination: "d".into(),
            instance: 9,
            seq,
        };
        let payload = format!(r#"{{"batch_id":"{id}","items":[]}}"#).into_bytes();
        (id, payload)
    }

    #[test]
    fn lines_are_appended_and_the_last_id_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            dir: dir.path().to_path_buf(),
        };
        let mut sink = FileSink::new(&config, "d");
        assert_eq!(sink.ready().unwrap(), None);
        for seq in 1..=3 {
            sink.deliver(&batch(seq).1).unwrap();
        }
        let mut again = FileSink::new(&config, "d");
        assert_eq!(again.ready().unwrap(), Some(batch(3).0));
        let text = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn an_incomplete_last_line_is_cut_off_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            dir: dir.path().to_path_buf(),
        };
        let mut sink = FileSink::new(&config, "d");
        sink.ready().unwrap();
        sink.deliver(&batch(1).1).unwrap();
        let half = &batch(2).1[..10];
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("d.jsonl"))
            .unwrap();
        f.write_all(half).unwrap();
        let mut again = FileSink::new(&config, "d");
        assert_eq!(again.ready().unwrap(), Some(batch(1).0));
        again.deliver(&batch(2).1).unwrap();
        let text = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].as_bytes(), batch(2).1.as_slice());
        // The cut bytes are kept aside, not destroyed.
        let cut = std::fs::read(again.cut_path()).unwrap();
        assert_eq!(cut, [half, b"\n"].concat());
    }

    #[test]
    fn a_last_batch_that_lost_its_newline_is_kept_and_the_newline_restored() {
        for damage in [None, Some(b' '), Some(b'x'), Some(0u8)] {
            let dir = tempfile::tempdir().unwrap();
            let config = FileSinkConfig {
                dir: dir.path().to_path_buf(),
            };
            let mut sink = FileSink::new(&config, "d");
            sink.ready().unwrap();
            for seq in 1..=2 {
                sink.deliver(&batch(seq).1).unwrap();
            }
            let path = dir.path().join("d.jsonl");
            let mut bytes = std::fs::read(&path).unwrap();
            match damage {
                None => {
                    bytes.pop();
                }
                Some(b) => *bytes.last_mut().unwrap() = b,
            }
            std::fs::write(&path, &bytes).unwrap();
            let mut again = FileSink::new(&config, "d");
            assert_eq!(again.ready().unwrap(), Some(batch(2).0), "{damage:?}");
            again.deliver(&batch(3).1).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<_> = text.lines().map(str::as_bytes).collect();
            assert_eq!(
                lines,
                [&batch(1).1[..], &batch(2).1[..], &batch(3).1[..]],
                "{damage:?}"
            );
        }
    }
}
