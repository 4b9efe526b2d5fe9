//! The NATS JetStream sink: one stream per destination, one message per batch.
//!
//! Each batch is published with its batch id as `Nats-Msg-Id`, and the sink waits for the
//! JetStream publish acknowledgement (the batch is stored by the server) before reporting it
//! delivered. A republished id inside the stream's duplicate window is acknowledged as a
//! duplicate and not stored twice. [`NatsSink::ready`] reads the `Nats-Msg-Id` of the last
//! message in the stream, which lets the forwarder skip batches delivered before a crash even
//! after the duplicate window has passed. TLS (rustls) is used when configured.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use serde::{Deserialize, Serialize};

use super::{Delivered, SinkError};
use crate::records::egress::item::BatchId;

/// Configuration of a NATS JetStream sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222` or `tls://broker.example:4222`.
    pub url: String,
    /// Stream name (default `mecgw_egress_<destination>`).
    #[serde(default)]
    pub stream: Option<String>,
    /// Subject the batches are published on (default `mecgw.egress.<destination>`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Duplicate window of the stream when egress creates it, in seconds.
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// How long to wait for a publish acknowledgement, in milliseconds.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// How long to wait for a connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// TLS settings; without them the connection is plaintext unless the server requires TLS.
    #[serde(default)]
    pub tls: Option<NatsTls>,
}

/// TLS material for the NATS connection (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of the CA certificates that sign the server's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require mTLS (needs `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_duplicate_window_secs() -> u64 {
    120
}
fn default_ack_timeout_ms() -> u64 {
    5_000
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}

impl NatsSinkConfig {
    /// A plaintext sink for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: None,
            subject: None,
            duplicate_window_secs: default_duplicate_window_secs(),
            ack_timeout_ms: default_ack_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            tls: None,
        }
    }

    /// The stream name used for `destination`.
    pub fn stream_name(&self, destination: &str) -> String {
        self.stream
            .clone()
            .unwrap_or_else(|| format!("mecgw_egress_{destination}"))
    }

    /// The subject used for `destination`.
    pub fn subject_name(&self, destination: &str) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| format!("mecgw.egress.{destination}"))
    }
}

/// What to change when a server that requires client certificates (mTLS) refused ours.
///
/// The server answers a missing or untrusted client certificate with a TLS alert
/// (`BadCertificate`, `CertificateRequired`, `UnknownCA`, …), which alone does not tell the
/// operator which side of the connection to fix. The server never judges its own
/// certificate, so a certificate alert *received* is always about the client's.
fn client_certificate_hint(
    error: &(dyn std::error::Error + 'static),
    tls: Option<&NatsTls>,
) -> Option<String> {
    use async_nats::rustls::{AlertDescription as A, Error as TlsError};
    let mut next = Some(error);
    while let Some(e) = next {
        // tokio-rustls reports TLS failures as an io::Error wrapping the rustls error, and
        // io::Error::source skips the wrapped error itself: look inside explicitly.
        let tls_error = e.downcast_ref::<TlsError>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<TlsError>())
        });
        if let Some(TlsError::AlertReceived(
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate,
        )) = tls_error
        {
            return Some(match tls.and_then(|t| t.cert.as_ref()) {
                None => {
                    "the server requires a client certificate: set tls.cert and tls.key".to_string()
                }
                Some(cert) => format!(
                    "the server refused the client certificate {}: it must be issued by a CA \
                     the server trusts for clients, and be valid now",
                    cert.display()
                ),
            });
        }
        next = e.source();
    }
    None
}

/// One destination's JetStream stream.
pub struct NatsSink {
    config: NatsSinkConfig,
    stream: String,
    subject: String,
    context: Option<jetstream::Context>,
}

impl NatsSink {
    pub(super) fn new(config: &NatsSinkConfig, destination: &str) -> Result<Self, SinkError> {
        let stream = config.stream_name(destination);
        if stream.is_empty()
            || stream
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(SinkError::Config(format!(
                "stream name {stream:?} must be non-empty without '.', '*', '>' or spaces"
            )));
        }
        if let Some(tls) = &config.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err(SinkError::Config(
                "tls: cert and key must be given together".into(),
            ));
        }
        Ok(Self {
            stream,
            subject: config.subject_name(destination),
            config: config.clone(),
            context: None,
        })
    }

    async fn connect(&self) -> Result<jetstream::Context, SinkError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("mecgw-egress")
            .connection_timeout(Duration::from_millis(self.config.connect_timeout_ms));
        if let Some(tls) = &self.config.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let client = options
            .connect(self.config.url.as_str())
            .await
            .map_err(|e| {
                let hint = client_certificate_hint(&e, self.config.tls.as_ref())
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                SinkError::Connect(format!("{}: {e}{hint}", self.config.url))
            })?;
        let mut context = jetstream::new(client);
        context.set_timeout(Duration::from_millis(self.config.ack_timeout_ms));
        Ok(context)
    }

    /// Connects (once; the client then reconnects by itself), makes sure the stream exists,
    /// and returns the batch id of the last message on the destination's subject.
    pub async fn ready(&mut self) -> Result<Option<BatchId>, SinkError> {
        let context = match &self.context {
            Some(c) => c.clone(),
            None => {
                let c = self.connect().await?;
                self.context = Some(c.clone());
                c
            }
        };
        let stream_err = |problem: String| SinkError::Stream {
            stream: self.stream.clone(),
            problem,
        };
        let stream = context
            .get_or_create_stream(jetstream::stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                duplicate_window: Duration::from_secs(self.config.duplicate_window_secs),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => Ok(message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .and_then(|v| v.as_str().parse::<BatchId>().ok())),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(stream_err(format!("reading the last message: {e}"))),
        }
    }

    /// Publishes one batch with its id as `Nats-Msg-Id` and waits for the stream's ack.
    pub async fn deliver(
        &mut self,
        id: &BatchId,
        payload: Vec<u8>,
    ) -> Result<Delivered, SinkError> {
        let Some(context) = &self.context else {
            return Err(SinkError::Connect("NATS sink used before ready()".into()));
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_string());
        let ack = context
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
            .map_err(|e| SinkError::Publish(e.to_string()))?
            .await
            .map_err(|e| SinkError::Publish(e.to_string()))?;
        if ack.stream != self.stream {
            return Err(SinkError::Stream {
                stream: self.stream.clone(),
                problem: format!(
                    "subject {} is stored by stream {}, not ours",
                    self.subject, ack.stream
                ),
            });
        }
        Ok(Delivered {
            duplicate: ack.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use async_nats::rustls::{AlertDescription, Error as TlsError};

    /// How tokio-rustls reports a TLS alert, inside async-nats' connect error.
    fn alert(a: AlertDescription) -> async_nats::ConnectError {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, TlsError::AlertReceived(a));
        async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, io)
    }

    #[test]
    fn a_refused_client_certificate_says_which_setting_to_fix() {
        let none = NatsTls {
            ca: None,
            cert: None,
            key: None,
        };
        let hint = client_certificate_hint(&alert(AlertDescription::BadCertificate), Some(&none));
        assert!(hint.unwrap().contains("set tls.cert and tls.key"));
        let with = NatsTls {
            cert: Some("/etc/mecgw/nats-client.pem".into()),
            key: Some("/etc/mecgw/nats-client.key".into()),
            ..none
        };
        let hint = client_certificate_hint(&alert(AlertDescription::UnknownCA), Some(&with));
        assert!(hint.unwrap().contains("/etc/mecgw/nats-client.pem"));
        // Not about our certificate: no hint.
        assert_eq!(
            client_certificate_hint(&alert(AlertDescription::HandshakeFailure), Some(&with)),
            None
        );
    }
}
