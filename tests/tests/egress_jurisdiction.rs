#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Jurisdiction: a destination in a region the policy does not permit receives nothing, and
//! a policy reload that withdraws a permission stops batches already queued. Canary
//! identifiers in the refused items never appear in any byte a sink received or stored (the
//! whole JetStream store and the file sink's directory are searched), nor in the audit log,
//! and every refusal is audited and counted.

use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::audit::{self, Outcome};
use mecgw::records::egress::jurisdiction::{DenyReason, PermissionTable, Permissions};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::file::FileSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw::records::egress::{Egress, EnqueueError};
use mecgw_tests::egress::{config, nats_sink, parse_batch, record, release, wait_until};
use mecgw_tests::nats::{NatsServer, dir_contains, read_stream};
use serde_json::json;

const CANARY_IMSI: &str = "001019912345678";
const CANARY_IMEI: &str = "353299110012345";
const CANARY_MSISDN: &str = "+4915199912345";
const CANARY_IP: &str = "198.51.100.213";
const CANARIES: [&str; 4] = [CANARY_IMSI, CANARY_IMEI, CANARY_MSISDN, CANARY_IP];
/// Carried by the permitted batch: proves the store search below does see stored bytes.
const MARKER: &str = "permitted-marker-5c1d7e";

fn canary_fields() -> serde_json::Value {
    json!({"imsi": CANARY_IMSI, "imei": CANARY_IMEI, "msisdn": CANARY_MSISDN, "ue": CANARY_IP})
}

/// The policy: `eu` (in EU-DE) may receive release `cells` and kind `flow_summary`; `us` is
/// named by the policy for EU-DE, but its sink is configured in US-VA.
fn policy() -> PermissionTable {
    PermissionTable::new()
        .allow("eu", "EU-DE", &["cells", "load"], &["flow_summary"])
        .allow("us", "EU-DE", &["cells"], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_permitted_regions_and_withdrawn_permissions_receive_nothing() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file_out = dir.path().join("file-sink");
    let permissions = Arc::new(Permissions::new(Arc::new(policy())));
    let egress = Egress::open(
        config(
            dir.path(),
            vec![
                ("eu", "EU-DE", nats_sink(&server.url())),
                ("us", "US-VA", nats_sink(&server.url())),
                (
                    "us_files",
                    "US-VA",
                    SinkConfig::File(FileSinkConfig {
                        dir: file_out.clone(),
                    }),
                ),
            ],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        Arc::clone(&permissions),
    )
    .unwrap();

    // Enqueue-time check: the region is not permitted; nothing is spooled.
    let err = egress
        .enqueue("us", &[release("us", "cells", 1, canary_fields())])
        .unwrap_err();
    assert!(
        matches!(
            err,
            EnqueueError::Refused(DenyReason::RegionNotPermitted { .. })
        ),
        "{err}"
    );
    let err = egress
        .enqueue(
            "us_files",
            &[release("us_files", "cells", 2, canary_fields())],
        )
        .unwrap_err();
    assert!(
        matches!(err, EnqueueError::Refused(DenyReason::UnknownDestination)),
        "{err}"
    );
    // A kind the destination may not receive, mixed into an otherwise permitted batch.
    let err = egress
        .enqueue(
            "eu",
            &[
                release("eu", "cells", 3, json!({})),
                record("eu", "flow", 4, canary_fields()),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, EnqueueError::Refused(DenyReason::NotListed(_))),
        "{err}"
    );

    // Send-time check: queued while permitted, then a reload withdraws `cells` for eu.
    for n in 10..15 {
        egress
            .enqueue("eu", &[release("eu", "cells", n, canary_fields())])
            .unwrap();
    }
    permissions.replace(Arc::new(PermissionTable::new().allow(
        "eu",
        "EU-DE",
        &["load"],
        &["flow_summary"],
    )));
    // What the new policy still permits goes through: the sink works, so "nothing" above
    // is a real refusal, not a dead sink.
    egress
        .enqueue(
            "eu",
            &[
                release("eu", "load", 20, json!({"marker": MARKER})),
                record("eu", "flow_summary", 21, json!({})),
            ],
        )
        .unwrap();
    assert_eq!(egress.backlog("eu").unwrap().0, 6);

    let forwarders = egress.start().unwrap();
    let eu = Arc::clone(egress.metrics().destination("eu").unwrap());
    wait_until("eu drained", Duration::from_secs(30), || {
        let m = eu.snapshot();
        m.backlog_batches == 0 && m.sent_batches == 1
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();

    let m = eu.snapshot();
    assert_eq!(m.refused_at_send, 5);
    assert_eq!(m.refused_at_enqueue, 1);
    let us = egress.metrics().destination("us").unwrap().snapshot();
    assert_eq!((us.refused_at_enqueue, us.sent_batches), (1, 0));
    let files = egress.metrics().destination("us_files").unwrap().snapshot();
    assert_eq!((files.refused_at_enqueue, files.sent_batches), (1, 0));

    // The sinks: us has no stream at all, eu holds exactly the one permitted batch.
    assert!(
        read_stream(&server.url(), "mecgw_egress_us")
            .await
            .unwrap()
            .is_empty()
    );
    let eu_stored = read_stream(&server.url(), "mecgw_egress_eu").await.unwrap();
    assert_eq!(eu_stored.len(), 1);
    let ns: Vec<_> = parse_batch(&eu_stored[0].payload)
        .unwrap()
        .items
        .iter()
        .map(|i| i["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![20, 21]);

    // No canary in any byte a sink received or stored, nor in the audit log.
    assert!(
        dir_contains(&server.store_dir(), MARKER.as_bytes()).unwrap(),
        "the store search must see what the sink stored"
    );
    for canary in CANARIES {
        for m in &eu_stored {
            assert!(
                !m.payload
                    .windows(canary.len())
                    .any(|w| w == canary.as_bytes())
            );
        }
        assert!(
            !dir_contains(&server.store_dir(), canary.as_bytes()).unwrap(),
            "{canary} reached the JetStream store"
        );
        assert!(
            !dir_contains(&file_out, canary.as_bytes()).unwrap(),
            "{canary} reached the file sink"
        );
        assert!(
            !dir_contains(&dir.path().join("audit"), canary.as_bytes()).unwrap(),
            "{canary} is in the audit log"
        );
    }

    // Every refusal is audited, with its reason.
    let log = std::fs::read_to_string(dir.path().join("audit").join(audit::LOG_FILE)).unwrap();
    let entries: Vec<audit::AuditEntry> = log
        .lines()
        .map(|l| serde_json::from_str(l.split_once(' ').unwrap().1).unwrap())
        .collect();
    let count = |o: Outcome| entries.iter().filter(|e| e.batch.outcome == o).count();
    assert_eq!(count(Outcome::RefusedAtEnqueue), 3);
    assert_eq!(count(Outcome::RefusedAtSend), 5);
    assert_eq!(count(Outcome::Sent), 1);
    assert!(
        entries
            .iter()
            .filter(|e| e.batch.outcome != Outcome::Sent)
            .all(|e| e.batch.reason.is_some())
    );
    audit::verify(&dir.path().join("audit")).unwrap();
}
