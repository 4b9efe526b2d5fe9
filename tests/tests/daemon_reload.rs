//! A SIGHUP reload that withdraws a permission, inside `mecgw run` (issue 7): records are
//! published and spooled while the NATS destination is unreachable; the policy is then
//! reloaded with a version whose destination no longer lists their kind, and NATS comes up.
//! The queued batches must be refused at send time (counted, audited with the reason) and
//! never delivered; records published after the reload stay on site. Needs root
//! (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mecgw::records::egress::audit::{self, Outcome};
use mecgw_tests::{
    api::Site,
    bed::{Bed, sample},
    nats::NatsServer,
    privacy::{self, APP, STREAM, audit_verify, destination_sample},
};

#[test]
fn a_reload_that_withdraws_a_kind_refuses_its_queued_batches_at_send_time() {
    let bed = Bed::new();
    // Down from the start: everything published queues in the spool.
    let mut nats = NatsServer::stopped_in_netns(&bed.mec).unwrap();
    let site = Site::new().unwrap();
    let config = privacy::configure(&bed, &site, &nats.url());
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    let app = site.app(APP).unwrap();
    let publish = |seqs: Vec<Vec<u64>>| {
        mecgw_tests::in_netns(&bed.mec, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let channel = privacy::connect_app(&site, &app).await.unwrap();
                    for call in seqs {
                        privacy::publish(channel.clone(), &call).await.unwrap();
                    }
                })
        })
        .unwrap();
    };
    // Acknowledged, so durably spooled: one batch per call at least.
    publish((0..5).map(|c| (c * 4..c * 4 + 4).collect()).collect());
    let m = bed.http("/metrics").1;
    let queued = destination_sample(&m, "mecgw_egress_backlog_batches");
    assert!(queued >= 5, "{m}");
    assert_eq!(destination_sample(&m, "mecgw_egress_sent_batches_total"), 0);
    // The forwarder is trying, and failing, to reach NATS.
    privacy::wait_for_metrics(&bed, Duration::from_secs(10), |m| {
        destination_sample(m, "mecgw_egress_send_failures_total") > 0
    });

    std::fs::write(bed.path("policy.yaml"), privacy::policy(false)).unwrap();
    d.signal(libc::SIGHUP);
    bed.wait_for_sample("mecgw_reloads_total{result=\"ok\"}", 1);
    // After the reload the engine keeps tickets on site: they never reach egress.
    publish(vec![vec![100, 101, 102]]);
    let m = bed.wait_for_sample("mecgw_records_on_site_total", 3);
    assert_eq!(
        destination_sample(&m, "mecgw_egress_backlog_batches"),
        queued
    );

    nats.restart().unwrap();
    let m = privacy::wait_for_metrics(&bed, Duration::from_secs(30), |m| {
        destination_sample(m, "mecgw_egress_backlog_batches") == 0
    });
    assert_eq!(
        destination_sample(&m, "mecgw_egress_refused_at_send_total"),
        queued
    );
    assert_eq!(destination_sample(&m, "mecgw_egress_sent_batches_total"), 0);
    assert_eq!(
        destination_sample(&m, "mecgw_egress_refused_at_enqueue_total"),
        0
    );
    assert_eq!(sample(&m, "mecgw_last_reload_rejected"), 0);
    assert!(d.stop().success());
    let log = d.stderr();

    assert!(
        nats.read(STREAM).unwrap().is_empty(),
        "a withdrawn kind was delivered"
    );
    let audit_dir = bed.path("state").join("audit");
    audit_verify(&audit_dir);
    let entries: Vec<audit::AuditEntry> = std::fs::read_to_string(audit_dir.join(audit::LOG_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l.split_once(' ').unwrap().1).unwrap())
        .collect();
    assert_eq!(entries.len() as u64, queued, "{entries:?}");
    for e in &entries {
        assert_eq!(e.batch.outcome, Outcome::RefusedAtSend, "{e:?}");
        assert_eq!(e.batch.destination, privacy::DESTINATION);
        let reason = e.batch.reason.as_deref().unwrap_or_default();
        assert!(reason.contains(privacy::KIND), "{reason}");
    }
    assert!(log.contains("refused at send time"), "{log}");
}
