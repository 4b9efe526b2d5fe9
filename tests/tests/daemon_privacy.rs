//! The privacy plane inside `mecgw run`, driven through the same interfaces a user has: an
//! app publishes over mTLS gRPC, the policy engine in the daemon transforms and aggregates,
//! egress spools and delivers to file sinks, Subscribe streams the released cells, Status
//! and `/metrics` account for everything, and `mecgw audit verify` checks the audit chain.
//! Canary identifiers must never appear in any byte that leaves (sink files) or in the log.
//! Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mecgw::api::proto::{
    GetStatusRequest, PublishRequest, SubscribeRequest, status_service_client::StatusServiceClient,
    telemetry_service_client::TelemetryServiceClient,
};
use mecgw_tests::{
    api::{Site, connect},
    bed::{Bed, sample},
    privacy::{audit_verify, configure_app_events},
};

const APP: &str = "maps-app";
/// Identifiers that must never leave: subscriber identities and raw device ids.
const CANARY_IMSI: &str = "00101777";
const CANARY_DEVICE: &str = "CANARY-DEV-";

/// 300 people in one grid cell, 3 in another (below k = 5), three hours ago: their window
/// has ended, so the daemon closes it at its next tick.
fn records() -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = (now / 3600 - 3) * 3600 + 60;
    (0..303)
        .map(|i| {
            let (lat, lon) = if i < 300 {
                (48.13712, 11.57543)
            } else {
                (52.52001, 13.40495)
            };
            format!(
                r#"{{"imsi":"{CANARY_IMSI}{i:07}","device_id":"{CANARY_DEVICE}{i}","time":{},"location":{{"lat":{lat},"lon":{lon}}},"rtt_ms":{}}}"#,
                t + i,
                20 + i % 50
            )
        })
        .collect()
}

/// All items of all batches in `dir/<destination>.jsonl`.
fn delivered(dir: &Path, destination: &str) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(dir.join(format!("{destination}.jsonl"))) else {
        return Vec::new();
    };
    text.lines()
        .flat_map(|l| {
            let batch: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(batch["destination"], destination);
            batch["items"].as_array().unwrap().clone()
        })
        .collect()
}

fn all_bytes_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes_under(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn published_records_leave_only_as_policy_outputs_through_spool_sinks_and_subscribe() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure_app_events(&bed, &site, APP, true);
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    let app = site.app(APP).unwrap();
    let operator = site.operator().unwrap();
    let ca = site.ca.cert_pem();
    let addr: SocketAddr = "127.0.0.1:50051".parse().unwrap();
    let (accepted, subscribed, status) = mecgw_tests::in_netns(&bed.mec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = connect(addr, &ca, Some(&app)).await.unwrap();
            let mut sub = TelemetryServiceClient::new(channel.clone())
                .subscribe(SubscribeRequest {
                    releases: vec!["users_per_area".into()],
                })
                .await
                .unwrap()
                .into_inner();
            let batches: Vec<PublishRequest> = records()
                .chunks(50)
                .map(|c| PublishRequest {
                    kind: "app_event".into(),
                    records_json: c.to_vec(),
                })
                .collect();
            let accepted = TelemetryServiceClient::new(channel.clone())
                .publish(futures::stream::iter(batches))
                .await
                .unwrap()
                .into_inner()
                .accepted;
            // The window ended hours ago: the engine's next tick (1 s) releases it.
            let cell = tokio::time::timeout(Duration::from_secs(20), sub.message())
                .await
                .expect("no release reached Subscribe within 20 s")
                .unwrap()
                .expect("the Subscribe stream ended");
            let operator = connect(addr, &ca, Some(&operator)).await.unwrap();
            let status = StatusServiceClient::new(operator)
                .get_status(GetStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            (accepted, cell, status)
        })
    })
    .unwrap();
    assert_eq!(accepted, 303);
    assert_eq!(subscribed.release, "users_per_area");
    let cell: serde_json::Value = serde_json::from_str(&subscribed.output_json).unwrap();
    assert_eq!(
        cell["group"]["location"],
        serde_json::json!({"lat": 48.13, "lon": 11.57}),
        "{cell}"
    );
    assert!(!status.policy_hash.is_empty());
    assert_eq!(status.budgets.len(), 1, "{status:?}");
    let destinations: Vec<&str> = status
        .egress_backlog
        .iter()
        .map(|b| b.destination.as_str())
        .collect();
    assert_eq!(destinations, ["analytics", "mirror", "stats"]);

    // Delivery is asynchronous (spool → forwarder → sink): wait for it.
    let out = bed.path("out");
    let start = Instant::now();
    while delivered(&out, "analytics").len() < 303 || delivered(&out, "stats").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not delivered: analytics {} stats {}",
            delivered(&out, "analytics").len(),
            delivered(&out, "stats").len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = delivered(&out, "analytics");
    assert_eq!(records.len(), 303, "every accepted record exactly once");
    for r in &records {
        assert_eq!(r["kind"], "app_event");
        let device = r["record"]["device_id"].as_str().unwrap();
        assert!(!device.contains("CANARY"), "raw device id left: {r}");
        assert!(r["record"].get("imsi").is_none(), "imsi left: {r}");
    }
    let cells = delivered(&out, "stats");
    assert_eq!(cells.len(), 1, "only the cell with ≥ k people: {cells:?}");
    assert_eq!(cells[0]["release"], "users_per_area");
    assert!(
        delivered(&out, "mirror").is_empty(),
        "a destination in a region the policy does not permit received data"
    );

    let m = bed.wait_for_sample("mecgw_records_in_total{source=\"api\"}", 303);
    assert_eq!(sample(&m, "mecgw_records_transformed_total"), 303);
    assert_eq!(
        sample(&m, "mecgw_release_windows_total{outcome=\"released\"}"),
        1
    );
    assert!(
        sample(
            &m,
            "mecgw_release_groups_suppressed_total{reason=\"below_k\"}"
        ) >= 1
    );
    assert!(
        sample(
            &m,
            "mecgw_egress_refused_at_enqueue_total{destination=\"mirror\"}"
        ) >= 1
    );
    assert_eq!(
        sample(
            &m,
            "mecgw_egress_sent_items_total{destination=\"analytics\"}"
        ),
        303
    );
    assert_eq!(
        sample(
            &m,
            "mecgw_egress_backlog_batches{destination=\"analytics\"}"
        ),
        0
    );

    assert!(d.stop().success());
    let log = d.stderr();
    // No identifier in any egress byte, in the spool, the audit log, or the log.
    let mut places = all_bytes_under(&out);
    places.extend(all_bytes_under(&bed.path("state")));
    places.push(("stderr".into(), log.clone().into_bytes()));
    for (place, bytes) in &places {
        for canary in [CANARY_IMSI, CANARY_DEVICE] {
            assert!(!contains(bytes, canary), "{canary} found in {place}");
        }
    }
    audit_verify(&bed.path("state").join("audit"));
}

#[test]
fn a_policy_destination_without_a_sink_is_a_startup_error_that_names_it() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure_app_events(&bed, &site, APP, true);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("name = \"stats\"", "name = \"statistics\"");
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mecgw started anyway"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = d.stderr();
    assert!(
        log.contains("destination \"stats\"") && log.contains("[[egress.destinations]]"),
        "{log}"
    );
}

const FLOW_POLICY: &str = r#"version: 1
name: daemon flow records test
budget: {period: 1d, epsilon: 1.0, delta: 1e-6}
keys:
  subscriber: {path: keys/app.key, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields:
      imsi: string
      ue_ip: ip
      dst_ip: ip
      protocol: string
      dst_port: integer
      packets_up: integer
      bytes_up: integer
      rule: integer
      start: timestamp
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      ue_ip: {truncate: {ipv4: 24, ipv6: 48}}
      dst_ip: keep
      protocol: keep
      dst_port: keep
      packets_up: keep
      bytes_up: keep
      rule: keep
      start: {bucket: {width: 1m}}
destinations:
  analytics: {region: EU-DE, kinds: [flow]}
"#;

#[test]
fn fast_path_flow_records_reach_the_sink_only_through_the_policy() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure_app_events(&bed, &site, APP, true);
    std::fs::write(bed.path("policy.yaml"), FLOW_POLICY).unwrap();
    // The session gets an IMSI (the canary), and flows are harvested every second.
    let imsi = format!("{CANARY_IMSI}0000001");
    let tables = std::fs::read_to_string(bed.path("tables.toml"))
        .unwrap()
        .replace(
            "[[sessions]]\nid = 1\n",
            &format!("[[sessions]]\nid = 1\nimsi = \"{imsi}\"\n"),
        );
    assert!(tables.contains(&imsi));
    std::fs::write(bed.path("tables.toml"), tables).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[egress]",
        "[flows]\nenabled = true\ninterval_secs = 1\n\n[egress]",
    );
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    // From the gNB: 5 G-PDUs of one UDP flow to the edge (LOCAL by rule 10), 3 of another.
    let ue: std::net::IpAddr = "198.19.0.1".parse().unwrap();
    let edge: std::net::IpAddr = "198.18.1.2".parse().unwrap();
    mecgw_tests::in_netns(&bed.gnb, || {
        let s = std::net::UdpSocket::bind("198.18.0.1:2152").unwrap();
        for (dport, n) in [(7u16, 5), (9, 3)] {
            let inner = mecgw_tests::packet::inner::udp(ue, edge, 4000, dport, &[0xab; 100]);
            let gpdu = mecgw_tests::packet::Gtpu::g_pdu(
                0x1000,
                Some((mecgw_tests::packet::PduType::Uplink, 9)),
                &inner,
            );
            for _ in 0..n {
                s.send_to(&gpdu, "198.18.0.2:2152").unwrap();
            }
        }
    })
    .unwrap();

    let out = bed.path("out");
    let per_port = |items: &[serde_json::Value], port: u64| -> (u64, u64) {
        items
            .iter()
            .filter(|r| r["record"]["dst_port"] == port)
            .fold((0, 0), |(p, b), r| {
                (
                    p + r["record"]["packets_up"].as_u64().unwrap(),
                    b + r["record"]["bytes_up"].as_u64().unwrap(),
                )
            })
    };
    let start = Instant::now();
    loop {
        let items = delivered(&out, "analytics");
        if per_port(&items, 7).0 >= 5 && per_port(&items, 9).0 >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "flow records not delivered: {items:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Give a further harvest the chance to (wrongly) count anything twice.
    std::thread::sleep(Duration::from_millis(2500));
    let items = delivered(&out, "analytics");
    // Inner IP bytes: 20 (IPv4) + 8 (UDP) + 100.
    assert_eq!(per_port(&items, 7), (5, 5 * 128), "{items:?}");
    assert_eq!(per_port(&items, 9), (3, 3 * 128), "{items:?}");
    for r in &items {
        assert_eq!(r["kind"], "flow");
        let rec = &r["record"];
        assert_eq!(rec["ue_ip"], "198.19.0.0/24", "{r}");
        assert_eq!(rec["dst_ip"], "198.18.1.2", "{r}");
        assert_eq!(rec["protocol"], "udp", "{r}");
        assert_eq!(rec["rule"], 10, "{r}");
        assert!(
            rec["imsi"].as_str().unwrap().contains(':'),
            "not a pseudonym: {r}"
        );
    }
    let m = bed.http("/metrics").1;
    assert!(sample(&m, "mecgw_records_in_total{source=\"flow\"}") >= 2);
    assert_eq!(sample(&m, "mecgw_flow_harvest_failures_total"), 0);

    assert!(d.stop().success());
    let log = d.stderr();
    let mut places = all_bytes_under(&out);
    places.extend(all_bytes_under(&bed.path("state")));
    places.push(("stderr".into(), log.into_bytes()));
    for (place, bytes) in &places {
        assert!(!contains(bytes, &imsi), "the IMSI left in {place}");
    }
}
