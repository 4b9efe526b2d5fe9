//! Crash safety of the whole record path inside `mecgw run` (issue 7): an app publishes
//! records with unique sequence numbers in many small Publish calls while the daemon
//! forwards them to NATS JetStream; the daemon is `kill -9`ed at random moments and
//! restarted on the same state directory. A record counts as acknowledged when its Publish
//! call returned OK. Records of a call that failed are never sent again (they may or may not
//! have been spooled), so any duplicate in the stream comes from the gateway, not the test.
//! Afterwards: every acknowledged record is in the stream, none twice, the stream holds
//! nothing that was never published, and the audit log verifies with one `sent` entry per
//! stored batch. Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    io::Read as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mecgw::records::egress::audit::{self, Outcome};
use mecgw_tests::{
    api::Site,
    bed::{Bed, Daemon},
    nats::NatsServer,
    privacy::{self, APP, STREAM, audit_verify},
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

/// Daemons killed with SIGKILL before the last one, which drains.
const KILLS: usize = 5;

/// What the publisher knows.
#[derive(Default)]
struct Published {
    /// Sequence numbers of records whose Publish call returned OK.
    acked: BTreeSet<u64>,
    /// Sequence numbers sent in calls that failed: maybe spooled, never sent again.
    unknown: BTreeSet<u64>,
    /// Publish calls that returned OK / failed.
    calls_ok: u64,
    calls_failed: u64,
}

/// Publishes 1–8 fresh records per call until `stop`, reconnecting whenever a call fails.
fn spawn_publisher(
    bed: &Bed,
    site: Arc<Site>,
    seed: u64,
    state: Arc<Mutex<Published>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let mec = bed.mec.clone();
    std::thread::spawn(move || {
        mecgw_tests::in_netns(&mec, move || {
            let app = site.app(APP).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut next = 0u64;
                let mut channel = None;
                while !stop.load(Ordering::SeqCst) {
                    let ch = match &channel {
                        Some(c) => Clone::clone(c),
                        None => {
                            let connected = tokio::time::timeout(
                                Duration::from_secs(5),
                                privacy::connect_app(&site, &app),
                            )
                            .await;
                            match connected {
                                Ok(Ok(c)) => {
                                    channel = Some(c.clone());
                                    c
                                }
                                _ => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                }
                            }
                        }
                    };
                    let n = rng.random_range(1..=8);
                    let seqs: Vec<u64> = (next..next + n).collect();
                    next += n;
                    // A safety net only: a call the daemon never answers counts as failed.
                    let outcome =
                        tokio::time::timeout(Duration::from_secs(20), privacy::publish(ch, &seqs))
                            .await;
                    let mut s = state.lock().unwrap();
                    if let Ok(Ok(())) = outcome {
                        s.calls_ok += 1;
                        s.acked.extend(seqs);
                    } else {
                        s.calls_failed += 1;
                        s.unknown.extend(seqs);
                        drop(s);
                        channel = None;
                    }
                }
            });
        })
        .unwrap();
    })
}

/// Reads the daemon's log in the background, so a full pipe never blocks it.
fn drain_log(d: &mut Daemon) -> JoinHandle<String> {
    let mut stderr = d.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    })
}

fn acked(state: &Mutex<Published>) -> usize {
    state.lock().unwrap().acked.len()
}

/// Waits until more than `before` records are acknowledged: this daemon is taking records.
fn wait_for_acks(state: &Mutex<Published>, before: usize, d: &mut Daemon) {
    let start = Instant::now();
    while acked(state) <= before {
        if let Some(status) = d.child.try_wait().unwrap() {
            panic!("mecgw exited ({status}) before acknowledging anything");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no Publish acknowledged within 30 s of the daemon being ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_9_during_ingest_and_upload_loses_no_acknowledged_record_and_duplicates_none() {
    let seed = std::env::var("MECGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed} (rerun with MECGW_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let bed = Bed::new();
    let nats = NatsServer::start_in_netns(&bed.mec).unwrap();
    let site = Arc::new(Site::new().unwrap());
    let config = privacy::configure(&bed, &site, &nats.url());
    let state = Arc::new(Mutex::new(Published::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(
        &bed,
        Arc::clone(&site),
        rng.random(),
        Arc::clone(&state),
        Arc::clone(&stop),
    );

    for kill in 0..KILLS {
        let mut d = bed.start(&config);
        let log = drain_log(&mut d);
        bed.wait_ready(&mut d);
        let before = acked(&state);
        wait_for_acks(&state, before, &mut d);
        // A random moment while records come in and batches go out.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1000)));
        d.signal(libc::SIGKILL);
        let status = d.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "mecgw ended before the kill: {}",
            log.join().unwrap()
        );
        drop(log);
        eprintln!("kill {kill}: {} records acknowledged so far", acked(&state));
    }

    // The last daemon is not killed: it takes a few more records, then drains.
    let mut d = bed.start(&config);
    let log = drain_log(&mut d);
    bed.wait_ready(&mut d);
    let before = acked(&state);
    wait_for_acks(&state, before, &mut d);
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    // Every Publish call has returned: what was acknowledged is spooled. Wait for the backlog
    // to reach the stream.
    privacy::wait_for_metrics(&bed, Duration::from_secs(30), |m| {
        privacy::destination_sample(m, "mecgw_egress_backlog_batches") == 0
    });
    assert!(d.stop().success(), "{}", log.join().unwrap());
    let log = log.join().unwrap();

    let published = state.lock().unwrap();
    eprintln!(
        "{} calls acknowledged ({} records), {} failed ({} records of unknown fate)",
        published.calls_ok,
        published.acked.len(),
        published.calls_failed,
        published.unknown.len()
    );
    let stored = nats.read(STREAM).unwrap();
    let (seqs, batch_ids) = privacy::delivered(&stored);
    let mut seen = BTreeSet::new();
    for s in &seqs {
        assert!(seen.insert(*s), "record {s} delivered twice");
    }
    let lost: Vec<_> = published.acked.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    let invented: Vec<_> = seen
        .iter()
        .filter(|s| !published.acked.contains(s) && !published.unknown.contains(s))
        .collect();
    assert!(
        invented.is_empty(),
        "delivered but never published: {invented:?}"
    );
    eprintln!(
        "{} of the records of unknown fate were delivered",
        published.unknown.intersection(&seen).count()
    );
    let ids: BTreeSet<&String> = batch_ids.iter().collect();
    assert_eq!(ids.len(), batch_ids.len(), "a batch stored twice");

    // The audit chain is intact (the real binary, as an auditor runs it) and accounts for
    // every stored batch exactly once.
    let audit_dir = bed.path("state").join("audit");
    audit_verify(&audit_dir);
    let entries = std::fs::read_to_string(audit_dir.join(audit::LOG_FILE)).unwrap();
    let mut sent = Vec::new();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for line in entries.lines() {
        let entry: audit::AuditEntry =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(entry.batch.outcome, Outcome::Sent, "{line}");
        *reasons
            .entry(entry.batch.reason.unwrap_or_else(|| "sent".into()))
            .or_default() += 1;
        sent.push(entry.batch.batch_id.unwrap());
    }
    // Which recovery paths this run took (they depend on where the kills landed).
    eprintln!("audit entries by reason: {reasons:?}");
    let sent_set: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(sent.len(), sent_set.len(), "a batch audited as sent twice");
    assert_eq!(sent_set, ids, "one sent entry per stored batch");
    assert!(
        !log.contains(privacy::CANARY_IMSI),
        "a subscriber identity in the log"
    );
}
