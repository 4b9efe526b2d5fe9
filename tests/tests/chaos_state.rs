#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chaos: state damaged while `mecgw run` is stopped (issue #12, items 5, 7 and 9), driven as
//! an operator meets it: the daemon restarted on the damaged state directory, its exit
//! status and log, the JetStream stream, and `mecgw audit verify`.
//! - a bit flipped in a record inside a spooled batch: that batch is not delivered but
//!   audited as quarantined and listed by `audit verify`; everything else is delivered once;
//! - the spool file emptied: the loss is audited (`audit verify` lists it) and logged, and
//!   the daemon carries on with a new spool;
//! - the audit head deleted and the last entry cut: the daemon refuses to start, naming the
//!   head file, and `audit verify` fails;
//! - garbage in the GTP-U restart counter: the daemon refuses to start, naming the file, and
//!   leaves it as found.
//!
//! Needs root (namespaces, XDP).

use std::collections::BTreeSet;
use std::time::Duration;

use mecgw::records::egress::SPOOL_FILE;
use mecgw::records::egress::audit::{self, AuditEntry, Outcome};
use mecgw_tests::chaos::{Scenario, daemon};
use mecgw_tests::{
    api::Site,
    bed::Bed,
    egress::{audit_entries, flip_all, verify_cli},
    nats::NatsServer,
    privacy::{self, STREAM},
};

/// A bed, a site and a configured daemon whose NATS destination is down.
struct Stopped {
    bed: Bed,
    site: Site,
    nats: NatsServer,
    config: std::path::PathBuf,
}

fn stopped() -> Stopped {
    let bed = Bed::new();
    let nats = NatsServer::stopped_in_netns(&bed.mec).unwrap();
    let site = Site::new().unwrap();
    let config = privacy::configure(&bed, &site, &nats.url());
    Stopped {
        bed,
        site,
        nats,
        config,
    }
}

impl Stopped {
    /// Runs the daemon, publishes `calls` (all must be acknowledged), and stops it.
    fn publish_and_stop(&self, calls: &[Vec<u64>]) {
        let mut d = self.bed.start(&self.config);
        self.bed.wait_ready(&mut d);
        for r in daemon::publish(&self.bed, &self.site, calls) {
            r.unwrap();
        }
        assert!(d.stop().success());
    }

    fn state(&self, name: &str) -> std::path::PathBuf {
        self.bed.path("state").join(name)
    }

    /// Runs the daemon, publishes `calls` (all must be acknowledged), waits until its spool
    /// is empty and stops it; returns its log.
    fn run(&self, calls: &[Vec<u64>]) -> String {
        let mut d = self.bed.start(&self.config);
        self.bed.wait_ready(&mut d);
        let log = daemon::log(&mut d);
        for r in daemon::publish(&self.bed, &self.site, calls) {
            r.unwrap();
        }
        privacy::wait_for_metrics(&self.bed, Duration::from_secs(30), |m| {
            privacy::destination_sample(m, "mecgw_egress_backlog_batches") == 0
        });
        assert!(d.stop().success());
        log.join().unwrap()
    }

    /// Starts the daemon, which must refuse to start: returns its log.
    fn refused(&self) -> String {
        let mut d = self.bed.start(&self.config);
        let log = daemon::log(&mut d);
        let status = daemon::exit(&mut d, Duration::from_secs(60));
        let log = log.join().unwrap();
        assert!(!status.success(), "mecgw started on damaged state:\n{log}");
        log
    }

    fn audit_entries(&self) -> Vec<AuditEntry> {
        audit_entries(&self.state("audit")).unwrap()
    }

    /// `mecgw audit verify` on the daemon's audit directory: (exit code, output).
    fn verify(&self) -> (i32, String) {
        verify_cli(&self.state("audit")).unwrap()
    }
}

/// `calls` Publish calls of 3 records each, numbered from `first`.
fn calls(first: u64, calls: u64) -> Vec<Vec<u64>> {
    (0..calls)
        .map(|c| (first + 3 * c..first + 3 * c + 3).collect())
        .collect()
}

#[test]
fn a_flipped_bit_in_the_spool_is_quarantined_not_delivered() {
    let mut report = Scenario::new("spool-bit-flip");
    let mut s = stopped();
    let published = calls(1_000_000, 6);
    s.publish_and_stop(&published);
    // `"seq":1000007` is in exactly one spooled record; one bit of it flips on disk.
    let flipped = flip_all(&s.state("spool").join(SPOOL_FILE), b"\"seq\":1000007").unwrap();
    report.did(format!(
        "published 18 records while NATS was down, stopped mecgw, flipped one bit in a spooled record ({flipped} cop(ies) in spool.redb), started NATS and mecgw"
    ));

    s.nats.restart().unwrap();
    let log = s.run(&[]);
    let (seqs, _) = privacy::delivered(&s.nats.read(STREAM).unwrap());
    let delivered: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(delivered.len(), seqs.len(), "a record was delivered twice");
    assert!(!delivered.contains(&1_000_007));
    let entries = s.audit_entries();
    let quarantined: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.batch.outcome == Outcome::Quarantined)
        .collect();
    assert_eq!(quarantined.len(), 1, "{entries:?}");
    let q = &quarantined[0].batch;
    // Nothing else is missing: the quarantined batch held the records that were not sent.
    let all: BTreeSet<u64> = published.iter().flatten().copied().collect();
    assert_eq!(delivered.len() as u64 + q.records, all.len() as u64);
    assert!(delivered.is_subset(&all));
    assert!(log.contains("a spooled batch is damaged"), "{log}");
    let (code, out) = s.verify();
    assert_eq!(code, 0, "{out}");
    let id = q.batch_id.as_deref().unwrap();
    assert!(out.contains(&format!("quarantined {id}")), "{out}");
    report.saw(format!(
        "did not deliver batch {id} ({} records): audited it as quarantined (\"{}\"), logged it; delivered the other {} records exactly once; `audit verify` exit 0 and lists the quarantined batch",
        q.records,
        q.reason.as_deref().unwrap_or_default(),
        delivered.len()
    ));
    report.pass();
}

#[test]
fn an_emptied_spool_is_audited_as_lost_and_a_new_one_started() {
    let mut report = Scenario::new("spool-emptied");
    let mut s = stopped();
    s.publish_and_stop(&calls(2_000_000, 3));
    std::fs::File::create(s.state("spool").join(SPOOL_FILE)).unwrap();
    report.did(
        "published 9 records while NATS was down, stopped mecgw, truncated spool.redb to 0 bytes, started NATS and mecgw, published 6 more",
    );

    s.nats.restart().unwrap();
    let log = s.run(&calls(3_000_000, 2));
    assert!(log.contains("the spool vanished"), "{log}");
    let (seqs, _) = privacy::delivered(&s.nats.read(STREAM).unwrap());
    assert_eq!(seqs.iter().filter(|&&n| n >= 3_000_000).count(), 6);
    let lost: Vec<AuditEntry> = s
        .audit_entries()
        .into_iter()
        .filter(|e| e.batch.outcome == Outcome::Lost)
        .collect();
    assert_eq!(lost.len(), 1, "one destination");
    let (code, out) = s.verify();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("lost - (destination {})", privacy::DESTINATION)),
        "{out}"
    );
    report.saw(
        "logged that the spool vanished, audited the loss for its destination (`audit verify` lists it), started a new spool and delivered the 6 new records",
    );
    report.pass();
}

#[test]
fn a_deleted_audit_head_with_the_last_entry_cut_stops_the_daemon() {
    let mut report = Scenario::new("audit-head-deleted-tail-cut");
    let mut s = stopped();
    s.nats.restart().unwrap();
    s.run(&calls(4_000_000, 3));
    let log_path = s.state("audit").join(audit::LOG_FILE);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    lines.pop();
    std::fs::write(&log_path, lines.join("\n") + "\n").unwrap();
    std::fs::remove_file(s.state("audit").join(audit::HEAD_FILE)).unwrap();
    report.did("ran mecgw until batches were sent and audited, stopped it, deleted audit.head and cut the last audit entry, started mecgw");

    let log = s.refused();
    assert!(log.contains("audit.head is missing or empty"), "{log}");
    let (code, out) = s.verify();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit.head is missing or empty"), "{out}");
    report.saw("refused to start: \"audit.head is missing or empty\"; `audit verify` exit 1 naming the same");
    report.pass();
}

#[test]
fn garbage_in_the_gtpu_restart_counter_stops_the_daemon() {
    let mut report = Scenario::new("gtpu-restart-counter-garbage");
    let s = stopped();
    std::fs::create_dir_all(s.bed.path("state")).unwrap();
    let counter = s.state("gtpu-restart-counter");
    std::fs::write(&counter, "x7\n").unwrap();
    report.did("wrote \"x7\" into the GTP-U restart counter file and started mecgw");

    let log = s.refused();
    assert!(
        log.contains("gtpu-restart-counter") && log.contains("not a restart counter"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x7\n");
    report.saw(
        "refused to start naming the file (\"not a restart counter\"), left the file as found",
    );
    report.pass();
}
