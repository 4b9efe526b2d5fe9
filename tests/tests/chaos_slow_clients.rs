#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chaos: slow clients under `mecgw run` (issue #12, item 3).
//!
//! `ops-slow-loris`: more clients than the operations port serves at once (256) each send a
//! request's first line and then one header line at a time, never finishing. While they
//! trickle, /healthz, /readyz and /metrics answer another client every time: at the limit
//! mecgw closes the oldest connection that has no request in progress, and the header read
//! timeout closes the rest; afterwards every slow connection has been closed by mecgw.
//!
//! `grpc-stuck-readers`: operator clients open WatchServices streams on the gRPC API and never
//! read them, while another client changes services thousands of times. The changes keep
//! being accepted, a client that reads its own watch stream gets every change (or is told how
//! many it missed), the operations port and gRPC health answer, and a SIGTERM still stops
//! mecgw cleanly with the stuck streams open. `cargo xtask chaos` grows both
//! (`MECGW_CHAOS_SCALE`); CI runs scale 1. Needs root.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use futures::StreamExt as _;
use mecgw::api::proto::{
    RegisterServiceRequest, WatchServicesRequest,
    edge_services_service_client::EdgeServicesServiceClient,
};
use mecgw_tests::api::{OPERATOR_URI, Site, edge_service};
use mecgw_tests::bed::{Bed, sample};
use mecgw_tests::chaos::{self, Scenario, daemon};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The operations port's limit on connections served at once (`daemon::ops::MAX_CONNECTIONS`).
const OPS_LIMIT: u64 = 256;

/// The well-behaved client's probes: each must answer 200 with what it should say.
fn probes_answer(bed: &Bed) {
    assert_eq!(bed.http("/healthz"), (true, "ok\n".to_string()));
    assert_eq!(bed.http("/readyz"), (true, "ready\n".to_string()));
    let (ok, m) = bed.http("/metrics");
    assert!(ok && m.contains("mecgw_ready 1"), "{m}");
}

#[test]
fn slow_loris_clients_do_not_keep_the_probes_out() {
    let mut report = Scenario::new("ops-slow-loris");
    let clients = (OPS_LIMIT + 44) * chaos::scale().min(3);
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    let mut slow: Vec<TcpStream> = mecgw_tests::in_netns(&bed.mec, || {
        (0..clients)
            .map(|_| {
                let mut s = TcpStream::connect("127.0.0.1:9464").unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
                s
            })
            .collect()
    })
    .unwrap();
    report.did(format!(
        "opened {clients} connections to the operations port (limit {OPS_LIMIT}), each sending a request line and then one header line every 500 ms, never ending the headers"
    ));
    // Trickle past the 5 s header read timeout, probing as another client each round.
    let mut probes = 0;
    let mut closed_while_trickling = 0usize;
    for round in 0..14 {
        for s in &mut slow {
            if s.write_all(format!("X-Slow-{round}: 1\r\n").as_bytes())
                .is_err()
            {
                closed_while_trickling += 1;
            }
        }
        probes_answer(&bed);
        probes += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    report.saw(format!(
        "/healthz, /readyz and /metrics answered 200 all {probes} times they were asked while the slow clients trickled"
    ));

    // Every slow connection is closed by mecgw (30 s per read: a hang guard only).
    for rest in mecgw_tests::read_until_closed_by_peer(slow, "slow connection") {
        assert!(
            !String::from_utf8_lossy(&rest).contains("mecgw_ready"),
            "a request whose headers never ended was answered"
        );
    }
    let m = bed.http("/metrics").1;
    let evicted = sample(&m, "mecgw_ops_connections_evicted_total");
    let refused = sample(&m, "mecgw_ops_connections_refused_total");
    assert!(
        evicted >= clients - OPS_LIMIT,
        "{clients} slow clients against a limit of {OPS_LIMIT}: {evicted} evicted\n{m}"
    );
    assert_eq!(refused, 0, "a slow client is never serving a request: {m}");
    report.saw(format!(
        "mecgw closed every slow connection ({closed_while_trickling} writes already failed while trickling); mecgw_ops_connections_evicted_total {evicted}, refused {refused}"
    ));
    assert!(d.stop().success(), "{}", d.stderr());
    report.saw("SIGTERM stopped mecgw cleanly".to_string());
    report.pass();
}

#[test]
fn grpc_streams_that_are_never_read_do_not_hold_up_others() {
    let mut report = Scenario::new("grpc-stuck-readers");
    let scale = chaos::scale();
    let (stuck_channels, streams_each) = (4 * scale.min(4), 32u64);
    let changes = 1500 * scale;
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = bed.write("");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:50051\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n\
         client_ca = \"{d}/ca.pem\"\ndrain_ms = 100\n\n[api.apps.operator]\nrole = \"operator\"\nsans = [\"{OPERATOR_URI}\"]\n",
        d = site.dir().display(),
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let log = daemon::log(&mut d);
    let addr = "127.0.0.1:50051".parse().unwrap();

    let (seen, missed, stuck) = mecgw_tests::in_netns(&bed.mec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Streams opened and never polled: their flow-control windows fill up.
            let mut stuck = Vec::new();
            for _ in 0..stuck_channels {
                let mut client =
                    EdgeServicesServiceClient::new(site.channel(addr, "operator").await.unwrap());
                for _ in 0..streams_each {
                    stuck.push(
                        client
                            .watch_services(WatchServicesRequest {})
                            .await
                            .unwrap()
                            .into_inner(),
                    );
                }
            }
            // A client that reads its stream, and one that changes services.
            let channel = site.channel(addr, "operator").await.unwrap();
            let mut watch = EdgeServicesServiceClient::new(channel.clone())
                .watch_services(WatchServicesRequest {})
                .await
                .unwrap()
                .into_inner();
            let reader = tokio::spawn(async move {
                let (mut seen, mut missed) = (0u64, 0u64);
                while seen + missed < changes {
                    let w = tokio::time::timeout(Duration::from_secs(30), watch.next())
                        .await
                        .expect("the reading watcher got nothing for 30 s")
                        .expect("the watch stream ended")
                        .expect("a watch message");
                    seen += 1;
                    missed += w.missed;
                }
                (seen, missed)
            });
            let mut writer = EdgeServicesServiceClient::new(channel.clone());
            // Long endpoints, so that the stuck streams' windows fill quickly.
            let endpoint = format!("https://198.51.100.7:8443/{}", "x".repeat(200));
            for i in 0..changes {
                let mut s = edge_service(&format!("svc-{}", i % 50), &format!("1.{i}"));
                s.endpoint = endpoint.clone();
                tokio::time::timeout(
                    Duration::from_secs(20),
                    writer.register_service(RegisterServiceRequest { service: Some(s) }),
                )
                .await
                .expect("RegisterService got no answer in 20 s")
                .unwrap();
            }
            let (seen, missed) = reader.await.unwrap();
            // gRPC health and the operations port answer, the stuck streams still open.
            let health = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(health.status, ServingStatus::Serving as i32);
            probes_answer(&bed);
            (seen, missed, stuck)
        })
    })
    .unwrap();
    report.did(format!(
        "opened {} WatchServices streams on {stuck_channels} connections and never read them, then registered or updated services {changes} times from another connection",
        stuck.len()
    ));
    assert!(
        seen + missed >= changes,
        "{seen} seen, {missed} missed of {changes}"
    );
    report.saw(format!(
        "every RegisterService was answered; a watcher that reads got {seen} changes and was told of {missed} it missed; gRPC health SERVING and /healthz, /readyz, /metrics answered"
    ));
    // SIGTERM with the stuck streams still open: the drain ends them.
    assert!(d.stop().success());
    drop(stuck);
    let log = log.join().unwrap();
    assert!(log.contains("mecgw stopped"), "{log}");
    report.saw("SIGTERM stopped mecgw cleanly with the unread streams still open".to_string());
    report.pass();
}
