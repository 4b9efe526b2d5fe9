//! The file sink: each destination's batches as JSON lines in `DIR/<destination>.jsonl`, one
//! batch per line. The embedded default (the demo uses it).
//!
//! A batch counts as delivered only once its whole line, newline included, is written and
//! fsynced. A crash mid-write leaves an incomplete last line; [`FileSink::ready`] cuts it off
//! before anything else is written, so a reader never sees it as a batch, and the batch is
//! still in the spool to be written again.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

    /// Opens the file, cuts off an incomplete last line, and returns the last batch id in it.
    pub fn ready(&mut self) -> Result<Option<BatchId>, SinkError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(self.io())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(self.io())?;
        let len = file.metadata().map_err(self.io())?.len();
        // End of the last complete line.
        let complete = match rfind_newline(&file, len).map_err(self.io())? {
            Some(pos) => pos + 1,
            None => 0,
        };
        if complete != len {
            file.set_len(complete).map_err(self.io())?;
            file.sync_data().map_err(self.io())?;
        }
        let last = if complete == 0 {
            None
        } else {
            let start = rfind_newline(&file, complete - 1)
                .map_err(self.io())?
                .map_or(0, |p| p + 1);
            let mut line = vec![0; (complete - 1 - start) as usize];
            file.read_exact_at(&mut line, start).map_err(self.io())?;
            last_batch_id(&line)
        };
        self.file = Some(file);
        Ok(last)
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
    }
}
