#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged or vanished egress state, through the egress library as the daemon uses it
//! (`Egress::open`, `enqueue`, `start`, a file sink) and `mecgw audit verify` as an operator
//! runs it (issue #12, items 5 and 6):
//! - a byte flipped inside a spooled payload: that batch is never delivered but audited as
//!   quarantined (and kept in the spool file), counted, and listed by `audit verify`; every
//!   other batch is delivered once, and each `sent` entry carries the digest of exactly the
//!   line the sink holds;
//! - a spool file emptied or deleted while mecgw was stopped: the loss is audited for every
//!   destination and counted, and a new spool (new instance) takes over;
//! - a sink file whose last newline was damaged: the last batch, delivered and audited, stays
//!   in the sink, and the next batches follow it, each exactly once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::audit::{AuditEntry, Outcome};
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::file::FileSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull, payload_digest};
use mecgw::records::egress::{Egress, SPOOL_FILE};
use mecgw_tests::egress::{audit_entries, config, flip_all, parse_batch, release, wait_until};
use serde_json::json;

fn open(root: &Path) -> Egress {
    let sink = SinkConfig::File(FileSinkConfig {
        dir: root.join("out"),
    });
    let permissions = Arc::new(Permissions::new(Arc::new(
        PermissionTable::new()
            .allow("eu", "EU-DE", &["cells"], &[])
            .allow("us", "US-VA", &["cells"], &[]),
    )));
    let other = SinkConfig::File(FileSinkConfig {
        dir: root.join("out"),
    });
    Egress::open(
        config(
            root,
            vec![("eu", "EU-DE", sink), ("us", "US-VA", other)],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        permissions,
    )
    .unwrap()
}

/// Enqueues batches `range` for `eu`, each tagged with a unique note.
fn enqueue(egress: &Egress, range: std::ops::Range<u64>) {
    for n in range {
        egress
            .enqueue(
                "eu",
                &[release(
                    "eu",
                    "cells",
                    n,
                    json!({"note": format!("payload-of-batch-{n:04}")}),
                )],
            )
            .unwrap();
    }
}

/// Starts the forwarders, waits until `eu`'s spool is empty, and stops them.
async fn drain(egress: &Egress) {
    let forwarders = egress.start().unwrap();
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());
    wait_until("the spool to drain", Duration::from_secs(30), || {
        metrics.snapshot().backlog_batches == 0
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
}

fn entries(root: &Path) -> Vec<AuditEntry> {
    audit_entries(&root.join("audit")).unwrap()
}

fn sink_lines(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("out").join("eu.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `mecgw audit verify` on the audit directory: (exit code, stdout + stderr).
fn verify_cli(root: &Path) -> (i32, String) {
    mecgw_tests::egress::verify_cli(&root.join("audit")).unwrap()
}

/// The `n` of each batch in `eu`'s sink file, in file order.
fn delivered(root: &Path) -> Vec<u64> {
    sink_lines(root)
        .iter()
        .map(|l| {
            parse_batch(l.as_bytes()).unwrap().items[0]["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_spooled_payload_is_quarantined_not_sent() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    drop({
        let egress = open(root);
        enqueue(&egress, 0..6);
        egress
    });
    // While mecgw is stopped, one bit of batch 3's payload changes on disk.
    let spool = root.join("spool").join(SPOOL_FILE);
    flip_all(&spool, b"payload-of-batch-0003").unwrap();
    let damaged = {
        let mut v = b"payload-of-batch-0003".to_vec();
        v[10] ^= 0x01;
        v
    };

    let egress = open(root);
    drain(&egress).await;
    let m = egress.metrics().destination("eu").unwrap().snapshot();
    assert_eq!((m.sent_batches, m.quarantined_batches), (5, 1), "{m:?}");

    let lines = sink_lines(root);
    assert_eq!(
        delivered(root),
        [0, 1, 2, 4, 5],
        "damaged bytes must never leave"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.as_bytes().windows(damaged.len()).any(|w| w == damaged))
    );

    let entries = entries(root);
    let sent: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.batch.outcome == Outcome::Sent)
        .collect();
    assert_eq!(sent.len(), 5);
    // Each `sent` entry names exactly the bytes the sink holds.
    for (entry, line) in sent.iter().zip(&lines) {
        assert_eq!(
            entry.batch.digest.as_deref(),
            Some(payload_digest(line.as_bytes()).as_str())
        );
    }
    let quarantined: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.batch.outcome == Outcome::Quarantined)
        .collect();
    assert_eq!(quarantined.len(), 1);
    let q = &quarantined[0].batch;
    let batch_id = q.batch_id.clone().unwrap();
    assert!(batch_id.ends_with("00000000000000000004"), "{batch_id}");
    assert_eq!(q.region, "EU-DE");
    assert!(
        q.reason
            .as_deref()
            .unwrap()
            .contains("does not match its digest"),
        "{q:?}"
    );

    // Kept, not deleted: the damaged bytes are still in the spool file.
    drop(egress);
    let bytes = std::fs::read(&spool).unwrap();
    assert!(bytes.windows(damaged.len()).any(|w| w == damaged));

    let (code, out) = verify_cli(root);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("chain intact: 6 entries") && out.contains("1 entries record damaged"),
        "{out}"
    );
    assert!(
        out.contains(&format!("quarantined {batch_id}")),
        "verify must name the quarantined batch: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_emptied_or_deleted_while_stopped_is_audited_as_lost() {
    for delete in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let first_instance = {
            let egress = open(root);
            enqueue(&egress, 0..3);
            drain(&egress).await;
            enqueue(&egress, 3..5);
            entries(root)[0].batch.batch_id.clone().unwrap()
        };
        let spool = root.join("spool").join(SPOOL_FILE);
        if delete {
            std::fs::remove_file(&spool).unwrap();
        } else {
            std::fs::File::create(&spool).unwrap();
        }

        let egress = open(root);
        for d in ["eu", "us"] {
            let m = egress.metrics().destination(d).unwrap().snapshot();
            assert_eq!((m.lost_spools, m.backlog_batches), (1, 0), "{d}: {m:?}");
        }
        let lost: Vec<AuditEntry> = entries(root)
            .into_iter()
            .filter(|e| e.batch.outcome == Outcome::Lost)
            .collect();
        let dests: Vec<&str> = lost.iter().map(|e| e.batch.destination.as_str()).collect();
        assert_eq!(dests, ["eu", "us"]);
        assert!(
            lost[0]
                .batch
                .reason
                .as_deref()
                .unwrap()
                .contains(SPOOL_FILE)
        );

        // The new spool works, under a new instance: no batch id is reused.
        enqueue(&egress, 5..6);
        drain(&egress).await;
        let last = sink_lines(root).last().cloned().unwrap();
        let new_id = parse_batch(last.as_bytes()).unwrap().batch_id;
        assert_ne!(
            new_id[3..19],
            first_instance[3..19],
            "{new_id} {first_instance}"
        );
        drop(egress);

        let (code, out) = verify_cli(root);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("2 entries record damaged or lost")
                && out.contains("lost - (destination eu)"),
            "{out}"
        );
        // A restart on the new spool is a normal start: nothing more is audited as lost.
        drop(open(root));
        assert_eq!(
            entries(root)
                .iter()
                .filter(|e| e.batch.outcome == Outcome::Lost)
                .count(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_file_whose_last_newline_was_damaged_keeps_its_last_batch() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    {
        let egress = open(root);
        enqueue(&egress, 0..4);
        drain(&egress).await;
    }
    // While mecgw is stopped, the sink file's last newline becomes another byte.
    let path = root.join("out").join("eu.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    bytes.push(b'#');
    std::fs::write(&path, bytes).unwrap();

    let egress = open(root);
    enqueue(&egress, 4..6);
    drain(&egress).await;
    assert_eq!(
        delivered(root),
        [0, 1, 2, 3, 4, 5],
        "every batch exactly once, in order"
    );
    let sent = entries(root)
        .iter()
        .filter(|e| e.batch.outcome == Outcome::Sent)
        .count();
    assert_eq!(sent, 6);
    // The damaged byte is kept aside, not silently destroyed.
    let cut = std::fs::read(root.join("out").join("eu.jsonl.cut")).unwrap();
    assert_eq!(cut, b"#\n");
}
