//! Driving the privacy plane of `mecgw run` towards a NATS JetStream destination: a policy
//! whose one record kind keeps only a non-identifying sequence number (`seq`), the daemon
//! configuration around it, an app that publishes records by sequence number over mTLS, and
//! reading the delivered sequence numbers back from the stream.
// Test support: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mecgw::api::proto::{PublishRequest, telemetry_service_client::TelemetryServiceClient};
use tonic::transport::Channel;

use crate::{
    api::{Pem, Site, connect},
    bed::{Bed, sample},
    egress::parse_batch,
    nats::StoredMessage,
};

/// The app that publishes.
pub const APP: &str = "ticket-app";
/// The record kind it publishes.
pub const KIND: &str = "ticket";
/// The one egress destination.
pub const DESTINATION: &str = "central";
/// The JetStream stream the NATS sink creates for [`DESTINATION`].
pub const STREAM: &str = "mecgw_egress_central";
/// Where the daemon serves the gRPC API, inside the bed's `mec` namespace.
pub const API: &str = "127.0.0.1:50051";

/// A policy whose kind `ticket` drops the subscriber identity and keeps `seq`, routed to
/// [`DESTINATION`] when `routed`; otherwise the destination lists only another kind, so
/// tickets stay on site.
pub fn policy(routed: bool) -> String {
    let kinds = if routed { KIND } else { "other" };
    format!(
        r#"version: 1
name: daemon egress test ({kinds})
budget: {{period: 1d, epsilon: 1.0, delta: 1e-6}}
kinds:
  {KIND}:
    privacy_unit: imsi
    time: time
    fields:
      imsi: string
      time: timestamp
      seq: integer
    transforms:
      time: {{bucket: {{width: 1h}}}}
      seq: keep
  other:
    privacy_unit: imsi
    time: time
    fields:
      imsi: string
      time: timestamp
    transforms:
      time: {{bucket: {{width: 1h}}}}
destinations:
  {DESTINATION}: {{region: EU-DE, kinds: [{kinds}]}}
"#
    )
}

/// Writes `policy.yaml` ([`policy`]`(true)`) and the daemon configuration: `[policy]`,
/// `[egress]` with one NATS destination at `nats_url` (short timeouts and backoff), and
/// `[api]` with [`APP`] allowed to publish [`KIND`].
pub fn configure(bed: &Bed, site: &Site, nats_url: &str) -> PathBuf {
    let config = bed.write("");
    std::fs::write(bed.path("policy.yaml"), policy(true)).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[policy]
file = "policy.yaml"

[egress]
[egress.backoff]
initial_ms = 50
max_ms = 500
multiplier = 2.0
jitter = 0.5
[[egress.destinations]]
name = "{DESTINATION}"
region = "EU-DE"
sink = {{ type = "nats", url = "{nats_url}", ack_timeout_ms = 1000, connect_timeout_ms = 500 }}

[api]
listen = "{API}"
cert = "{d}/server.pem"
key = "{d}/server.key"
client_ca = "{d}/ca.pem"
drain_ms = 100

[api.apps.{APP}]
role = "app"
publish = ["{KIND}"]
"#,
        d = site.dir().display(),
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// A `ticket` record with sequence number `seq` and a subscriber identity that must not
/// leave.
pub fn record(seq: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(r#"{{"imsi":"{CANARY_IMSI}{seq:07}","time":{now},"seq":{seq}}}"#)
}

/// The subscriber identity prefix of [`record`]: it must appear in no delivered byte.
pub const CANARY_IMSI: &str = "00101555";

/// An mTLS channel to the daemon's API as [`APP`] (call inside the bed's `mec` namespace).
pub async fn connect_app(site: &Site, app: &Pem) -> anyhow::Result<Channel> {
    let addr: SocketAddr = API.parse()?;
    connect(addr, &site.ca.cert_pem(), Some(app)).await
}

/// One Publish call with the records `seqs`; `Ok` once the daemon acknowledged all of them
/// (they are durably spooled).
pub async fn publish(channel: Channel, seqs: &[u64]) -> Result<(), tonic::Status> {
    let request = PublishRequest {
        kind: KIND.into(),
        records_json: seqs.iter().map(|&s| record(s)).collect(),
    };
    let accepted = TelemetryServiceClient::new(channel)
        .publish(futures::stream::iter([request]))
        .await?
        .into_inner()
        .accepted;
    if accepted != seqs.len() as u64 {
        return Err(tonic::Status::internal(format!(
            "{accepted} of {} records accepted with OK",
            seqs.len()
        )));
    }
    Ok(())
}

/// The sequence numbers in the stored batches, in stream order (one entry per delivery),
/// with the batch ids in stream order. Panics on a payload that is not a `ticket` batch, or
/// on a subscriber identity in it.
pub fn delivered(stored: &[StoredMessage]) -> (Vec<u64>, Vec<String>) {
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    for m in stored {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains(CANARY_IMSI),
            "a subscriber identity left: {text}"
        );
        let batch = parse_batch(&m.payload).unwrap();
        for item in &batch.items {
            assert_eq!(item["kind"], KIND, "{item}");
            seqs.push(item["record"]["seq"].as_u64().unwrap());
        }
        ids.push(batch.batch_id);
    }
    (seqs, ids)
}

/// `series` for [`DESTINATION`] on the daemon's `/metrics`, e.g. `mecgw_egress_backlog_batches`.
pub fn destination_sample(metrics: &str, series: &str) -> u64 {
    sample(
        metrics,
        &format!("{series}{{destination=\"{DESTINATION}\"}}"),
    )
}

/// Scrapes `/metrics` until `done(scrape)` (at most `timeout`); returns that scrape.
pub fn wait_for_metrics(bed: &Bed, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = std::time::Instant::now();
    loop {
        let (ok, m) = bed.http("/metrics");
        if ok && done(&m) {
            return m;
        }
        assert!(
            start.elapsed() < timeout,
            "the metrics never got there within {timeout:?}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
