#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The JetStream sink over TLS (rustls): with the CA that signed the server's certificate a
//! batch is delivered; with another CA the handshake fails, the failure is counted and the
//! batch stays in the spool.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::Egress;
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::nats::{NatsSinkConfig, NatsTls};
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::egress::{config, parse_batch, release, wait_until};
use mecgw_tests::nats::NatsServer;
use serde_json::json;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, plus an unrelated CA.
fn certificates(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=mecgw test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

fn tls_sink(url: &str, ca: &Path) -> SinkConfig {
    let mut c = NatsSinkConfig::new(url);
    c.ack_timeout_ms = 1_000;
    c.connect_timeout_ms = 1_000;
    c.tls = Some(NatsTls {
        ca: Some(ca.to_path_buf()),
        cert: None,
        key: None,
    });
    SinkConfig::Nats(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_delivers_and_with_another_ca_does_not() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let server = NatsServer::start_with_args(vec![
        "--tls".into(),
        "--tlscert".into(),
        certs.path().join("server.pem").into(),
        "--tlskey".into(),
        certs.path().join("server.key").into(),
    ])
    .unwrap();
    let permissions = Arc::new(Permissions::new(Arc::new(
        PermissionTable::new()
            .allow("good", "EU-DE", &["cells"], &[])
            .allow("bad", "EU-DE", &["cells"], &[]),
    )));
    let dir = tempfile::tempdir().unwrap();
    let egress = Egress::open(
        config(
            dir.path(),
            vec![
                (
                    "good",
                    "EU-DE",
                    tls_sink(&server.url(), &certs.path().join("ca.pem")),
                ),
                (
                    "bad",
                    "EU-DE",
                    tls_sink(&server.url(), &certs.path().join("other-ca.pem")),
                ),
            ],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        permissions,
    )
    .unwrap();
    egress
        .enqueue("good", &[release("good", "cells", 1, json!({}))])
        .unwrap();
    egress
        .enqueue("bad", &[release("bad", "cells", 2, json!({}))])
        .unwrap();
    let forwarders = egress.start().unwrap();
    let g = Arc::clone(egress.metrics().destination("good").unwrap());
    let b = Arc::clone(egress.metrics().destination("bad").unwrap());
    wait_until("delivery over TLS", Duration::from_secs(30), || {
        g.snapshot().sent_batches == 1
    })
    .await
    .unwrap();
    wait_until("a failed TLS handshake", Duration::from_secs(30), || {
        b.snapshot().send_failures >= 2
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    assert_eq!(b.snapshot().sent_batches, 0);
    assert_eq!(
        egress.backlog("bad").unwrap().0,
        1,
        "kept for a later retry"
    );

    // Read back over TLS with a plain async-nats client trusting the right CA.
    let stored = read_stream_tls(&server.url(), &certs.path().join("ca.pem")).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(parse_batch(&stored[0]).unwrap().items[0]["n"], 1);
}

async fn read_stream_tls(url: &str, ca: &Path) -> Vec<Vec<u8>> {
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.to_path_buf())
        .connect(url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("mecgw_egress_good").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        out.push(stream.get_raw_message(seq).await.unwrap().payload.to_vec());
    }
    out
}
