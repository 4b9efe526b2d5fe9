#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JetStream sink against a server that requires client certificates (mTLS,
//! `--tlsverify`): with a client certificate from the CA the server trusts, batches are
//! delivered; without one, or with one from another CA, the connection fails with an error
//! that says so, the failure is counted, and the batch stays spooled. Given the right
//! certificate afterwards, egress delivers what it kept, each batch once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::Egress;
use mecgw::records::egress::audit;
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::sink::nats::{NatsSinkConfig, NatsTls};
use mecgw::records::egress::sink::{Sink, SinkConfig};
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::api::Ca;
use mecgw_tests::egress::{config, parse_batch, release, wait_until};
use mecgw_tests::nats::NatsServer;
use serde_json::json;

/// PEM files: the server's CA (`ca.pem`), the server (`server.*`, for 127.0.0.1), a client
/// of that CA (`client.*`) and a client of an unrelated CA (`stranger.*`).
fn certificates(dir: &Path) {
    let ca = Ca::new("mecgw test NATS CA").unwrap();
    let other = Ca::new("mecgw test unrelated CA").unwrap();
    let server = ca.server().unwrap();
    let client = ca.client(&["mecgw-egress"], &[]).unwrap();
    let stranger = other.client(&["mecgw-egress"], &[]).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    for (name, pem) in [
        ("server", &server),
        ("client", &client),
        ("stranger", &stranger),
    ] {
        std::fs::write(dir.join(format!("{name}.pem")), &pem.cert).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &pem.key).unwrap();
    }
}

/// A sink trusting `ca.pem`, presenting `identity` (`client`, `stranger`) if given.
fn mtls_sink(url: &str, certs: &Path, identity: Option<&str>) -> SinkConfig {
    let file = |name: String| -> PathBuf { certs.join(name) };
    let mut c = NatsSinkConfig::new(url);
    c.ack_timeout_ms = 1_000;
    c.connect_timeout_ms = 1_000;
    c.tls = Some(NatsTls {
        ca: Some(file("ca.pem".into())),
        cert: identity.map(|i| file(format!("{i}.pem"))),
        key: identity.map(|i| file(format!("{i}.key"))),
    });
    SinkConfig::Nats(c)
}

fn mtls_server(certs: &Path) -> NatsServer {
    NatsServer::start_with_args(vec![
        "--tls".into(),
        "--tlscert".into(),
        certs.join("server.pem").into(),
        "--tlskey".into(),
        certs.join("server.key").into(),
        "--tlscacert".into(),
        certs.join("ca.pem").into(),
        "--tlsverify".into(),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_foreign_client_certificate_is_refused_with_a_reason() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let server = mtls_server(certs.path());
    let connect = |identity: Option<&str>| {
        let config = mtls_sink(&server.url(), certs.path(), identity);
        async move { Sink::new(&config, "d").unwrap().ready().await }
    };
    let none = connect(None)
        .await
        .expect_err("connected without a client certificate");
    assert!(
        none.to_string()
            .contains("the server requires a client certificate: set tls.cert and tls.key"),
        "{none}"
    );
    let stranger = connect(Some("stranger"))
        .await
        .expect_err("connected with a certificate from another CA");
    assert!(
        stranger
            .to_string()
            .contains("the server refused the client certificate")
            && stranger.to_string().contains("stranger.pem"),
        "{stranger}"
    );
    assert_eq!(connect(Some("client")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_delivers_with_the_right_client_certificate_and_keeps_batches_until_it_has_one() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let server = mtls_server(certs.path());
    let permissions = Arc::new(Permissions::new(Arc::new(
        PermissionTable::new()
            .allow("good", "EU-DE", &["cells"], &[])
            .allow("nocert", "EU-DE", &["cells"], &[])
            .allow("stranger", "EU-DE", &["cells"], &[]),
    )));
    let dir = tempfile::tempdir().unwrap();
    let egress_config = |nocert: Option<&str>, stranger: &str| {
        config(
            dir.path(),
            vec![
                (
                    "good",
                    "EU-DE",
                    mtls_sink(&server.url(), certs.path(), Some("client")),
                ),
                (
                    "nocert",
                    "EU-DE",
                    mtls_sink(&server.url(), certs.path(), nocert),
                ),
                (
                    "stranger",
                    "EU-DE",
                    mtls_sink(&server.url(), certs.path(), Some(stranger)),
                ),
            ],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        )
    };

    let egress = Egress::open(egress_config(None, "stranger"), Arc::clone(&permissions)).unwrap();
    for (n, destination) in ["good", "nocert", "stranger"].into_iter().enumerate() {
        egress
            .enqueue(
                destination,
                &[release(destination, "cells", n as u64, json!({}))],
            )
            .unwrap();
    }
    let forwarders = egress.start().unwrap();
    let metrics = |d: &str| Arc::clone(egress.metrics().destination(d).unwrap());
    let (good, nocert, stranger) = (metrics("good"), metrics("nocert"), metrics("stranger"));
    wait_until("delivery over mTLS", Duration::from_secs(30), || {
        good.snapshot().sent_batches == 1
    })
    .await
    .unwrap();
    wait_until("refused handshakes", Duration::from_secs(30), || {
        nocert.snapshot().send_failures >= 2 && stranger.snapshot().send_failures >= 2
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    for (name, m) in [("nocert", &nocert), ("stranger", &stranger)] {
        assert_eq!(m.snapshot().sent_batches, 0, "{name}");
        assert_eq!(
            egress.backlog(name).unwrap().0,
            1,
            "{name}: kept for a retry"
        );
    }
    drop(egress);

    // The operator installs the right certificate: what was kept is delivered, once.
    let egress = Egress::open(egress_config(Some("client"), "client"), permissions).unwrap();
    let forwarders = egress.start().unwrap();
    let nocert = Arc::clone(egress.metrics().destination("nocert").unwrap());
    let stranger = Arc::clone(egress.metrics().destination("stranger").unwrap());
    wait_until(
        "delivery of the kept batches",
        Duration::from_secs(30),
        || nocert.snapshot().sent_batches == 1 && stranger.snapshot().sent_batches == 1,
    )
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    for (n, destination) in ["good", "nocert", "stranger"].into_iter().enumerate() {
        assert_eq!(egress.backlog(destination).unwrap().0, 0);
        let stored = read_stream_mtls(&server.url(), certs.path(), destination).await;
        assert_eq!(stored.len(), 1, "{destination}");
        assert_eq!(parse_batch(&stored[0]).unwrap().items[0]["n"], n);
    }
    let report = audit::verify(&dir.path().join("audit")).unwrap();
    assert_eq!(report.entries, 3, "one sent entry per batch");
}

/// Every message of `destination`'s stream, read with a plain async-nats client over mTLS.
async fn read_stream_mtls(url: &str, certs: &Path, destination: &str) -> Vec<Vec<u8>> {
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(certs.join("ca.pem"))
        .add_client_certificate(certs.join("client.pem"), certs.join("client.key"))
        .connect(url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("mecgw_egress_{destination}"))
        .await
        .unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        out.push(stream.get_raw_message(seq).await.unwrap().payload.to_vec());
    }
    out
}
