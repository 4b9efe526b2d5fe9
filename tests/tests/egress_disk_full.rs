#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A full disk under the spool and the audit log (issue #12, item 8), through the egress
//! library as the daemon uses it (`Egress::open`, `enqueue`, `start`, `health`, `storage`,
//! the metrics), on a small tmpfs state directory (needs root), with the sink elsewhere:
//! - while the file system is full, enqueues fail with the real reason (no space, and
//!   where), classified as `is_no_space`, counted in `rejected_unavailable`; `health()` is
//!   not ready and `storage()` shows no space;
//! - once space returns, without a restart, enqueues succeed again, health is ready again
//!   and the spool was reopened; batches delivered while the audit log could not be written
//!   are audited then, and removed;
//! - every accepted batch reaches the sink exactly once, in order, with one `sent` entry.
//!
//! The daemon's side (Publish's reason, recovery, nothing lost at shutdown) is
//! `chaos_disk_full.rs`.

use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::Egress;
use mecgw::records::egress::audit::{self, Outcome};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::file::FileSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::egress::{
    Tmpfs, audit_entries, config, eu_cells, parse_batch, release, wait_until,
};
use serde_json::json;

const FILLER: &str = "filler";

fn batch(n: u64) -> Vec<mecgw::records::egress::item::EgressItem> {
    // About 2 kB per batch: a few hundred fill the spool's share of the tmpfs quickly.
    vec![release("eu", "cells", n, json!({"pad": "x".repeat(2000)}))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_egress_recovers_when_space_returns() {
    let state = Tmpfs::mount(8 * 1024).unwrap();
    let out = tempfile::tempdir().unwrap();
    let egress = Arc::new(
        Egress::open(
            config(
                state.path(),
                vec![(
                    "eu",
                    "EU-DE",
                    SinkConfig::File(FileSinkConfig {
                        dir: out.path().to_path_buf(),
                    }),
                )],
                SpoolLimits::default(),
                WhenFull::Backpressure,
            ),
            eu_cells(),
        )
        .unwrap(),
    );
    let forwarders = egress.start().unwrap();
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());
    let mut accepted = 0u64;
    for n in 0..10 {
        egress.enqueue("eu", &batch(n)).unwrap();
        accepted += 1;
    }
    wait_until("the first batches", Duration::from_secs(30), || {
        metrics.snapshot().sent_batches == accepted
    })
    .await
    .unwrap();
    assert!(egress.health().is_ready());

    // The disk fills up (something else on the same file system).
    state.fill(FILLER).unwrap();
    let e = Arc::clone(&egress);
    let (accepted_while_full, err) = tokio::task::spawn_blocking(move || {
        // redb may still have room inside its file for a few batches.
        for n in 0..10_000 {
            if let Err(err) = e.enqueue("eu", &batch(1_000 + n)) {
                return (n, err);
            }
        }
        panic!("10,000 batches of 2 kB fit a full 8 MiB tmpfs");
    })
    .await
    .unwrap();
    accepted += accepted_while_full;
    assert!(err.is_no_space() && err.is_unavailable(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("no space left") && message.contains(&state.path().display().to_string()),
        "the reason must say what is wrong and where: {message}"
    );
    assert!(!message.contains("revious I/O"), "{message}");
    // Still refused, with the same reason, on retry (not "previous I/O error").
    let again = egress.enqueue("eu", &batch(2_000)).unwrap_err();
    assert!(again.is_no_space(), "{again}");
    let health = egress.health();
    assert!(!health.is_ready() && health.no_space(), "{health}");
    assert!(health.to_string().contains("no space"), "{health}");
    let storage = egress.storage();
    assert!(!storage.ready && storage.no_space && storage.spool_io_errors > 0);
    assert!(metrics.snapshot().rejected_unavailable >= 2);

    // Space returns: the next enqueues succeed, without a restart.
    state.free(FILLER).unwrap();
    let e = Arc::clone(&egress);
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Err(err) = e.enqueue("eu", &batch(3_000)) {
            assert!(err.is_unavailable(), "{err}");
            assert!(
                std::time::Instant::now() < deadline,
                "never recovered: {err}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    accepted += 1;
    for n in 0..10 {
        egress.enqueue("eu", &batch(4_000 + n)).unwrap();
        accepted += 1;
    }
    let waited = wait_until("every accepted batch", Duration::from_secs(60), || {
        let m = metrics.snapshot();
        m.sent_batches == accepted && m.backlog_batches == 0
    })
    .await;
    if let Err(e) = waited {
        panic!(
            "{e}: accepted {accepted}, {:?}, {}, {:?}",
            metrics.snapshot(),
            egress.health(),
            egress.storage()
        );
    }
    wait_until("egress to be ready", Duration::from_secs(30), || {
        egress.health().is_ready()
    })
    .await
    .unwrap();
    let storage = egress.storage();
    assert!(storage.ready && !storage.no_space && storage.spool_reopens >= 1);
    forwarders.shutdown().await.unwrap();

    // Exactly once, in order, each with one `sent` entry.
    let text = std::fs::read_to_string(out.path().join("eu.jsonl")).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| parse_batch(l.as_bytes()).unwrap().batch_id)
        .collect();
    assert_eq!(ids.len() as u64, accepted);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order or twice");
    let mut sent: Vec<String> = audit_entries(&state.path().join("audit"))
        .unwrap()
        .into_iter()
        .filter(|e| e.batch.outcome == Outcome::Sent)
        .map(|e| e.batch.batch_id.unwrap())
        .collect();
    sent.sort();
    assert_eq!(sent, ids);
    audit::verify(&state.path().join("audit")).unwrap();
}
