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

/// An app-telemetry policy: kind `app_event` (device id pseudonymised, time bucketed,
/// location coarsened, IMSI dropped), release `users_per_area` (count per grid cell, k = 5),
/// destinations `analytics` (records) and `stats` (the release), and, with `mirror`, a
/// destination `mirror` for records whose sink [`configure_app_events`] puts in a region the
/// policy does not permit.
pub fn app_event_policy(mirror: bool) -> String {
    let mirror = if mirror {
        "  mirror: {region: EU-DE, kinds: [app_event]}\n"
    } else {
        ""
    };
    format!(
        r#"version: 1
name: daemon privacy test
budget: {{period: 1d, epsilon: 12.0, delta: 1e-4}}
keys:
  app: {{path: keys/app.key, rotation: 1d}}
kinds:
  app_event:
    privacy_unit: imsi
    time: time
    fields:
      imsi: string
      device_id: string
      time: timestamp
      location: geo
      rtt_ms: decimal
    transforms:
      device_id: {{pseudonymise: {{key: app}}}}
      time: {{bucket: {{width: 1h}}}}
      location: {{coarsen: {{grid: 0.01}}}}
      rtt_ms: {{bucket: {{width: 10}}}}
releases:
  users_per_area:
    kind: app_event
    window: 1h
    group_by: [location]
    contribution: {{max_groups: 1, max_rows: 1}}
    k: 5
    epsilon: 0.5
    delta: 1e-6
    noise: laplace
    metrics: [count]
destinations:
  analytics: {{region: EU-DE, kinds: [app_event]}}
  stats: {{region: EU-DE, releases: [users_per_area]}}
{mirror}"#
    )
}

/// Writes [`app_event_policy`], its key, and the daemon config with `[policy]` (grace 0),
/// `[egress]` (file sinks in `out/`; with `mirror`, a `mirror` sink in US-CA) and `[api]`
/// (the operator, and `app` allowed to publish `app_event` and see `users_per_area`).
pub fn configure_app_events(bed: &Bed, site: &Site, app: &str, mirror: bool) -> PathBuf {
    let config = bed.write("");
    let keys = bed.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(
        keys.join("app.key"),
        "6d656367772d6461656d6f6e2d746573742d6b65792d6e6f742d7265616c2121\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(keys.join("app.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(bed.path("policy.yaml"), app_event_policy(mirror)).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[policy]
file = "policy.yaml"
window_grace_secs = 0

[egress]
[[egress.destinations]]
name = "analytics"
region = "EU-DE"
sink = {{ type = "file", dir = "out" }}
[[egress.destinations]]
name = "stats"
region = "EU-DE"
sink = {{ type = "file", dir = "out" }}
{mirror_sink}
[api]
listen = "127.0.0.1:50051"
cert = "{d}/server.pem"
key = "{d}/server.key"
client_ca = "{d}/ca.pem"
drain_ms = 100

[api.apps.operator]
role = "operator"
sans = ["{op}"]

[api.apps.{app}]
role = "app"
publish = ["app_event"]
releases = ["users_per_area"]
"#,
        d = site.dir().display(),
        op = crate::api::OPERATOR_URI,
        mirror_sink = if mirror {
            "# The policy permits EU-DE only: everything for this sink must be refused.\n\
             [[egress.destinations]]\nname = \"mirror\"\nregion = \"US-CA\"\n\
             sink = { type = \"file\", dir = \"out\" }\n"
        } else {
            ""
        },
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// Runs `mecgw audit verify DIR` as an auditor does and asserts the chain is intact.
pub fn audit_verify(dir: &std::path::Path) {
    let verify = std::process::Command::new(crate::mecgw_bin().unwrap())
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
