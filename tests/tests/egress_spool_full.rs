#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A full spool does what it is configured to do, and it is counted: backpressure refuses
//! the producer (who still owns the batch) until the sink drains the spool; shed-oldest drops
//! the oldest batches, audits each, and the rest arrive in order.

use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::audit::{self, Outcome};
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw::records::egress::{Egress, EnqueueError};
use mecgw_tests::egress::{config, nats_sink, parse_batch, release, wait_until};
use mecgw_tests::nats::{NatsServer, read_stream};
use serde_json::json;

const LIMIT: u64 = 5;

fn open(dir: &std::path::Path, url: &str, when_full: WhenFull) -> Egress {
    let permissions = Arc::new(Permissions::new(Arc::new(PermissionTable::new().allow(
        "eu",
        "EU-DE",
        &["cells"],
        &[],
    ))));
    Egress::open(
        config(
            dir,
            vec![("eu", "EU-DE", nats_sink(url))],
            SpoolLimits {
                max_batches: LIMIT,
                max_bytes: 1 << 20,
            },
            when_full,
        ),
        permissions,
    )
    .unwrap()
}

fn numbers(messages: &[mecgw_tests::nats::StoredMessage]) -> Vec<u64> {
    messages
        .iter()
        .flat_map(|m| parse_batch(&m.payload).unwrap().items)
        .map(|i| i["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_refuses_the_producer_and_counts_it() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let egress = open(dir.path(), &server.url(), WhenFull::Backpressure);
    // The forwarder is not started yet: nothing drains the spool.
    for n in 0..LIMIT {
        egress
            .enqueue("eu", &[release("eu", "cells", n, json!({}))])
            .unwrap();
    }
    let err = egress
        .enqueue("eu", &[release("eu", "cells", 99, json!({}))])
        .unwrap_err();
    assert!(err.is_backpressure(), "{err}");
    assert!(matches!(err, EnqueueError::Spool(_)));
    let m = egress.metrics().destination("eu").unwrap().snapshot();
    assert_eq!(m.rejected_full, 1);
    assert_eq!(m.backlog_batches, LIMIT);
    assert_eq!(m.shed_batches, 0);

    let forwarders = egress.start().unwrap();
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());
    wait_until("drain", Duration::from_secs(30), || {
        metrics.snapshot().backlog_batches == 0
    })
    .await
    .unwrap();
    // Room again: the producer retries and is accepted.
    egress
        .enqueue("eu", &[release("eu", "cells", LIMIT, json!({}))])
        .unwrap();
    wait_until("drain", Duration::from_secs(30), || {
        metrics.snapshot().sent_batches == LIMIT + 1
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    let stored = read_stream(&server.url(), "mecgw_egress_eu").await.unwrap();
    assert_eq!(numbers(&stored), (0..=LIMIT).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_oldest_drops_audits_and_counts() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let egress = open(dir.path(), &server.url(), WhenFull::ShedOldest);
    let total = LIMIT + 3;
    for n in 0..total {
        egress
            .enqueue("eu", &[release("eu", "cells", n, json!({}))])
            .unwrap();
    }
    let m = egress.metrics().destination("eu").unwrap().snapshot();
    assert_eq!(m.shed_batches, 3);
    assert_eq!(m.backlog_batches, LIMIT);
    assert_eq!(m.enqueued_batches, total);

    let forwarders = egress.start().unwrap();
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());
    wait_until("drain", Duration::from_secs(30), || {
        metrics.snapshot().sent_batches == LIMIT
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    let stored = read_stream(&server.url(), "mecgw_egress_eu").await.unwrap();
    assert_eq!(numbers(&stored), (3..total).collect::<Vec<_>>());

    // Every shed batch is in the audit log, by id.
    let log = std::fs::read_to_string(dir.path().join("audit").join(audit::LOG_FILE)).unwrap();
    let entries: Vec<audit::AuditEntry> = log
        .lines()
        .map(|l| serde_json::from_str(l.split_once(' ').unwrap().1).unwrap())
        .collect();
    let shed: Vec<u64> = entries
        .iter()
        .filter(|e| e.batch.outcome == Outcome::Shed)
        .map(|e| {
            e.batch
                .batch_id
                .as_ref()
                .unwrap()
                .parse::<mecgw::records::egress::item::BatchId>()
                .unwrap()
                .seq
        })
        .collect();
    assert_eq!(shed, vec![1, 2, 3]);
    assert_eq!(
        audit::verify(&dir.path().join("audit")).unwrap().entries,
        total
    );
}
