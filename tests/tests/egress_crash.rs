#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash safety: the egress driver is `kill -9`ed at random moments while it enqueues and
//! uploads, then restarted on the same spool and audit log. On the JetStream side every
//! batch acknowledged to the producer is present, none twice, each run's batches in order;
//! the audit log verifies and has exactly one `sent` entry per stored batch.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mecgw::records::egress::audit::{self, Outcome};
use mecgw_tests::egress::parse_batch;
use mecgw_tests::nats::{NatsServer, read_stream};
use rand::Rng as _;

const KILLED_RUNS: u64 = 6;

fn driver(dir: &std::path::Path, url: &str, run: u64, batches: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_egress_driver"))
        .arg("--dir")
        .arg(dir)
        .args(["--nats", url])
        .args(["--run", &run.to_string()])
        .args(["--batches", &batches.to_string()])
        .env("MECGW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads `ACK run i` lines until the pipe closes; `first` hears about the first one.
fn collect_acks(
    child: &mut Child,
    first: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<(Vec<(u64, u64)>, bool)> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut drained = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "DRAINED" {
                drained = true;
            } else if let Some(rest) = line.strip_prefix("ACK ") {
                let (r, i) = rest.split_once(' ').unwrap();
                acks.push((r.parse().unwrap(), i.parse().unwrap()));
                if acks.len() == 1 {
                    let _ = first.send(());
                }
            }
        }
        (acks, drained)
    })
}

#[test]
fn kill_9_during_ingest_and_upload_loses_nothing_and_duplicates_nothing() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked = BTreeSet::new();
    for run in 0..KILLED_RUNS {
        let mut child = driver(dir.path(), &server.url(), run, 100_000);
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = collect_acks(&mut child, first_tx);
        // Kill at a random moment once ingest (and so upload) is under way, however slow
        // the machine is to start the driver.
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the driver acknowledged nothing within 60 s");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (acks, _) = reader.join().unwrap();
        eprintln!(
            "run {run}: {} batches acknowledged before kill -9",
            acks.len()
        );
        acked.extend(acks);
    }
    // A last run that is not killed: it adds a few batches and drains everything.
    let final_run = KILLED_RUNS;
    let mut child = driver(dir.path(), &server.url(), final_run, 20);
    let reader = collect_acks(&mut child, std::sync::mpsc::channel().0);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the final run did not drain");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "final run: {status}");
    let (acks, drained) = reader.join().unwrap();
    assert!(drained);
    assert_eq!(acks.len(), 20);
    acked.extend(acks);
    assert!(
        acked.len() >= 20 + KILLED_RUNS as usize,
        "every killed run acknowledged something"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = runtime
        .block_on(read_stream(&server.url(), "mecgw_egress_eu"))
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut last_in_run: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for m in &stored {
        let batch = parse_batch(&m.payload).unwrap();
        assert!(
            ids.insert(batch.batch_id.clone()),
            "batch {} twice",
            batch.batch_id
        );
        let run = batch.items[0]["run"].as_u64().unwrap();
        let i = batch.items[0]["n"].as_u64().unwrap();
        assert!(seen.insert((run, i)), "batch ({run}, {i}) delivered twice");
        if let Some(prev) = last_in_run.insert(run, i) {
            assert!(i > prev, "run {run}: {i} after {prev}");
        }
    }
    let lost: Vec<_> = acked.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );

    let audit_dir = dir.path().join("audit");
    let report = audit::verify(&audit_dir).unwrap();
    let log = std::fs::read_to_string(audit_dir.join(audit::LOG_FILE)).unwrap();
    let sent: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<audit::AuditEntry>(l.split_once(' ').unwrap().1).unwrap())
        .filter(|e| e.batch.outcome == Outcome::Sent)
        .map(|e| e.batch.batch_id.unwrap())
        .collect();
    let sent_set: BTreeSet<_> = sent.iter().cloned().collect();
    assert_eq!(sent.len(), sent_set.len(), "a batch audited as sent twice");
    assert_eq!(sent_set, ids, "one sent entry per stored batch");
    assert_eq!(report.entries as usize, sent.len());
}
