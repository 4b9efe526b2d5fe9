//! Sinks: where batches go when they leave the site.
//!
//! Owns the delivery contract every sink keeps: [`Sink::deliver`] returns only once the batch
//! is durably stored on the other side, and [`Sink::ready`] reports the id of the last batch
//! the sink holds for this destination, so the forwarder can skip what was delivered before a
//! crash (exactly once; docs/egress.md). A sink never decides what may leave: the forwarder has
//! already run the jurisdiction check.

pub mod file;
pub mod nats;

use serde::{Deserialize, Serialize};

use super::item::BatchId;

/// Where one destination's batches go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// NATS JetStream, one stream per destination.
    Nats(nats::NatsSinkConfig),
    /// JSON lines in a directory.
    File(file::FileSinkConfig),
}

/// A batch the sink has acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The sink already had this batch id (a redelivery it deduplicated).
    pub duplicate: bool,
}

/// Sink failures. All of them are retried with backoff; none loses a batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The sink's configuration cannot work.
    #[error("sink configuration: {0}")]
    Config(String),
    /// Cannot reach the sink.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Cannot set up or inspect the destination's stream.
    #[error("stream {stream}: {problem}")]
    Stream {
        /// Stream name.
        stream: String,
        /// What failed.
        problem: String,
    },
    /// The publish or its acknowledgement failed; the batch may or may not be stored.
    #[error("publish not acknowledged: {0}")]
    Publish(String),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A configured sink for one destination.
pub enum Sink {
    /// NATS JetStream (boxed: its client state is much larger than a file handle).
    Nats(Box<nats::NatsSink>),
    /// JSON lines.
    File(file::FileSink),
}

impl Sink {
    /// Builds the sink for `destination`; nothing is connected or opened yet.
    pub fn new(config: &SinkConfig, destination: &str) -> Result<Self, SinkError> {
        Ok(match config {
            SinkConfig::Nats(c) => Self::Nats(Box::new(nats::NatsSink::new(c, destination)?)),
            SinkConfig::File(c) => Self::File(file::FileSink::new(c, destination)),
        })
    }

    /// Connects if needed and returns the id of the last batch the sink holds for this
    /// destination, if it holds any.
    pub async fn ready(&mut self) -> Result<Option<BatchId>, SinkError> {
        match self {
            Self::Nats(s) => s.ready().await,
            Self::File(s) => s.ready(),
        }
    }

    /// Delivers one batch and waits for the sink's acknowledgement.
    pub async fn deliver(
        &mut self,
        id: &BatchId,
        payload: Vec<u8>,
    ) -> Result<Delivered, SinkError> {
        match self {
            Self::Nats(s) => s.deliver(id, payload).await,
            Self::File(s) => s.deliver(&payload),
        }
    }
}
