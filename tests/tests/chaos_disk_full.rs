#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chaos: the state directory's file system fills up under `mecgw run` (issue #12, item 8).
//!
//! The daemon's state directory (spool, audit log, marker) is a small tmpfs; an app
//! publishes records over mTLS while something else fills that file system, then frees it.
//! While it is full, Publish fails with RESOURCE_EXHAUSTED saying there is no space left for
//! the spool, and where (never "previous I/O error"); /readyz answers 503 with the reason and
//! /metrics shows `mecgw_egress_storage_no_space 1`. Once space returns, without a restart,
//! Publish succeeds again, /readyz answers 200 and the storage metrics are back to normal. After a clean stop every
//! record whose Publish returned OK is in the JetStream stream exactly once, nothing that
//! was never published is, and the audit log verifies. `cargo xtask chaos` repeats the
//! fill/free cycle (`MECGW_CHAOS_SCALE` times); CI runs one. Needs root.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mecgw_tests::chaos::{self, Scenario, daemon};
use mecgw_tests::{
    api::Site,
    bed::{Bed, sample},
    egress::Tmpfs,
    nats::NatsServer,
    privacy::{self, STREAM, audit_verify},
};

const FILLER: &str = "filler";
/// Records per Publish call.
const PER_CALL: u64 = 4;

#[test]
fn the_daemon_survives_a_full_state_disk_and_loses_nothing() {
    let mut report = Scenario::new("disk-full");
    let cycles = chaos::scale();
    let bed = Bed::new();
    let state = Tmpfs::mount(12 * 1024).unwrap();
    let nats = NatsServer::start_in_netns(&bed.mec).unwrap();
    let site = Site::new().unwrap();
    let config = privacy::configure(&bed, &site, &nats.url());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &bed.path("state").display().to_string(),
        &state.path().display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    report.did(format!(
        "ran mecgw with its state directory on a 12 MiB tmpfs, publishing {PER_CALL} records per Publish call"
    ));

    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let log = daemon::log(&mut d);
    let mut next = 1_000_000u64;
    let mut acked = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut publish = |calls: u64, acked: &mut BTreeSet<u64>, unknown: &mut BTreeSet<u64>| {
        let batch: Vec<Vec<u64>> = (0..calls)
            .map(|c| (next + c * PER_CALL..next + (c + 1) * PER_CALL).collect())
            .collect();
        next += calls * PER_CALL;
        let results = daemon::publish(&bed, &site, &batch);
        let mut failures = Vec::new();
        for (call, r) in batch.into_iter().zip(results) {
            match r {
                Ok(()) => acked.extend(call),
                Err(status) => {
                    // Maybe spooled later (the engine keeps them): never published again.
                    unknown.extend(call);
                    failures.push(status);
                }
            }
        }
        failures
    };
    assert!(publish(10, &mut acked, &mut unknown).is_empty());

    let mut reasons = BTreeSet::new();
    let mut readyz_full = String::new();
    for cycle in 0..cycles {
        state.fill(FILLER).unwrap();
        // Until Publish notices (the spool may still have room inside its file).
        let mut failures = Vec::new();
        let start = Instant::now();
        while failures.is_empty() {
            failures = publish(5, &mut acked, &mut unknown);
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Publish never failed on a full disk"
            );
        }
        failures.extend(publish(3, &mut acked, &mut unknown));
        for f in &failures {
            assert_eq!(f.code(), tonic::Code::ResourceExhausted, "{f:?}");
            assert!(!f.message().contains("revious I/O"), "{f:?}");
            // The reason is the full disk, and where.
            assert!(
                f.message().contains("no space left")
                    && f.message().contains(&state.path().display().to_string()),
                "{f:?}"
            );
            // The same reason for every call: numbers and paths aside.
            let reason: String = f
                .message()
                .split(':')
                .skip(1)
                .collect::<Vec<_>>()
                .join(":")
                .replace(&state.path().display().to_string(), "STATE");
            let mut digits = false;
            let reason: String = reason
                .trim()
                .chars()
                .filter_map(|c| {
                    let was = std::mem::replace(&mut digits, c.is_ascii_digit());
                    match (c.is_ascii_digit(), was) {
                        (true, true) => None,
                        (true, false) => Some('N'),
                        _ => Some(c),
                    }
                })
                .collect();
            reasons.insert(reason);
        }

        // Not ready while the disk is full, saying why; the storage metrics say so too.
        let (code, body) = bed.http_status("/readyz");
        assert_eq!(code, 503, "/readyz while the disk is full: {body}");
        assert!(body.contains("no space left"), "/readyz: {body}");
        let m = bed.http("/metrics").1;
        assert_eq!(sample(&m, "mecgw_egress_storage_no_space"), 1, "{m}");
        assert_eq!(sample(&m, "mecgw_egress_storage_ready"), 0, "{m}");
        assert_eq!(sample(&m, "mecgw_ready"), 0, "{m}");
        readyz_full = body.trim().to_string();

        state.free(FILLER).unwrap();
        // Without a restart, Publish works again.
        let start = Instant::now();
        loop {
            let before = acked.len();
            publish(1, &mut acked, &mut unknown);
            if acked.len() > before {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Publish did not recover within 60 s of space returning (cycle {cycle})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(publish(10, &mut acked, &mut unknown).is_empty());
        // Ready again once the spool and the audit log have both been written (the
        // forwarders retry the audit write that failed; no restart, no new traffic needed),
        // and the metrics say the storage is writable.
        let start = Instant::now();
        loop {
            let (code, body) = bed.http_status("/readyz");
            if code == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "/readyz still {code} 60 s after space returned: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let m = bed.http("/metrics").1;
        assert_eq!(sample(&m, "mecgw_egress_storage_no_space"), 0, "{m}");
        assert_eq!(sample(&m, "mecgw_egress_storage_ready"), 1, "{m}");
        assert_eq!(sample(&m, "mecgw_ready"), 1, "{m}");
    }
    report.did(format!(
        "filled that file system and freed it again, {cycles} time(s), publishing throughout"
    ));
    report.saw(format!(
        "while full, Publish answered RESOURCE_EXHAUSTED, saying: {}",
        reasons
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(" or ")
    ));
    report.saw(format!(
        "while full, /readyz answered 503 \"{readyz_full}\" and /metrics showed \
         mecgw_egress_storage_no_space 1, mecgw_egress_storage_ready 0, mecgw_ready 0"
    ));
    report.saw(
        "once space returned, Publish succeeded again without a restart, /readyz answered 200 \
         and the storage metrics went back to no_space 0, ready 1"
            .to_string(),
    );

    // Everything acknowledged reaches the stream before a clean stop.
    privacy::wait_for_metrics(&bed, Duration::from_secs(60), |m| {
        privacy::destination_sample(m, "mecgw_egress_backlog_batches") == 0
            && privacy::destination_sample(m, "mecgw_egress_sent_batches_total") > 0
    });
    assert!(d.stop().success());
    let log = log.join().unwrap();
    let (seqs, ids) = privacy::delivered(&nats.read(STREAM).unwrap());
    let delivered: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(delivered.len(), seqs.len(), "a record was delivered twice");
    let distinct_ids: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct_ids.len(), ids.len(), "a batch was delivered twice");
    let missing: Vec<&u64> = acked.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?}\n{log}"
    );
    assert!(
        delivered.is_subset(&acked.union(&unknown).copied().collect()),
        "delivered something never published"
    );
    audit_verify(&state.path().join("audit"));
    assert!(log.contains("the spool is writable again"), "{log}");
    report.saw(format!(
        "all {} acknowledged records delivered exactly once ({} of {} records from failed calls delivered too), audit chain intact",
        acked.len(),
        delivered.len() - acked.len(),
        unknown.len()
    ));
    report.pass();
}
