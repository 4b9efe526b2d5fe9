#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Store and forward: the JetStream peer goes away while batches flow, production goes on,
//! the peer comes back, and the consumer sees every batch exactly once, in order.

use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::Egress;
use mecgw::records::egress::audit;
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::egress::{config, nats_sink, parse_batch, release, wait_until};
use mecgw_tests::nats::{NatsServer, read_stream};
use serde_json::json;

const BEFORE: u64 = 60;
const DURING: u64 = 60;
const AFTER: u64 = 60;
const ITEMS_PER_BATCH: u64 = 3;

fn produce(egress: &Egress, batches: std::ops::Range<u64>) {
    for b in batches {
        let items: Vec<_> = (0..ITEMS_PER_BATCH)
            .map(|i| release("eu", "cells", b * ITEMS_PER_BATCH + i, json!({})))
            .collect();
        egress.enqueue("eu", &items).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_every_batch_exactly_once_in_order() {
    let mut server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let permissions = Arc::new(Permissions::new(Arc::new(PermissionTable::new().allow(
        "eu",
        "EU-DE",
        &["cells"],
        &[],
    ))));
    let egress = Arc::new(
        Egress::open(
            config(
                dir.path(),
                vec![("eu", "EU-DE", nats_sink(&server.url()))],
                SpoolLimits::default(),
                WhenFull::Backpressure,
            ),
            permissions,
        )
        .unwrap(),
    );
    let forwarders = egress.start().unwrap();
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());

    let e = Arc::clone(&egress);
    tokio::task::spawn_blocking(move || produce(&e, 0..BEFORE))
        .await
        .unwrap();
    wait_until(
        "some batches to be delivered",
        Duration::from_secs(30),
        || metrics.snapshot().sent_batches > 0,
    )
    .await
    .unwrap();

    // Outage: the peer dies while batches are flowing; production goes on.
    server.stop();
    let e = Arc::clone(&egress);
    tokio::task::spawn_blocking(move || produce(&e, BEFORE..BEFORE + DURING))
        .await
        .unwrap();
    wait_until("a failed delivery attempt", Duration::from_secs(30), || {
        metrics.snapshot().send_failures > 0
    })
    .await
    .unwrap();
    let during = metrics.snapshot();
    assert!(
        during.backlog_batches > 0,
        "the spool holds what cannot be sent: {during:?}"
    );
    assert!(during.sent_batches < BEFORE + DURING);

    // The peer comes back on the same port with the same store.
    server.restart().unwrap();
    let e = Arc::clone(&egress);
    tokio::task::spawn_blocking(move || produce(&e, BEFORE + DURING..BEFORE + DURING + AFTER))
        .await
        .unwrap();
    let total = BEFORE + DURING + AFTER;
    wait_until("the spool to drain", Duration::from_secs(60), || {
        let m = metrics.snapshot();
        m.backlog_batches == 0 && m.sent_batches == total
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();

    let stored = read_stream(&server.url(), "mecgw_egress_eu").await.unwrap();
    assert_eq!(
        stored.len() as u64,
        total,
        "one message per batch, no duplicates"
    );
    let mut expected_n = 0;
    let mut last_seq = 0;
    for m in &stored {
        let batch = parse_batch(&m.payload).unwrap();
        assert_eq!(m.msg_id.as_deref(), Some(batch.batch_id.as_str()));
        let id: mecgw::records::egress::item::BatchId = batch.batch_id.parse().unwrap();
        assert!(id.seq > last_seq, "batches in spool order");
        last_seq = id.seq;
        for item in &batch.items {
            assert_eq!(item["n"], expected_n, "items exactly once, in order");
            expected_n += 1;
        }
    }
    assert_eq!(expected_n, total * ITEMS_PER_BATCH);

    let m = metrics.snapshot();
    assert!(m.reconnects >= 1, "{m:?}");
    assert_eq!(m.enqueued_batches, total);
    assert_eq!(m.sent_items, total * ITEMS_PER_BATCH);
    assert_eq!(m.refused_at_send + m.shed_batches + m.rejected_full, 0);
    let report = audit::verify(&dir.path().join("audit")).unwrap();
    assert_eq!(report.entries, total, "one audit entry per sent batch");
}
