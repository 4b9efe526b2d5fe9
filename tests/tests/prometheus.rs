//! mecgw as Prometheus sees it: the shipped alert rules (deploy/prometheus) pass
//! `promtool check rules` and their unit tests, and a real Prometheus server (Debian's
//! `prometheus`, installed by `cargo xtask setup`) scrapes `mecgw run` on the namespace bed,
//! loads the rules, and answers every query of the shipped Grafana dashboard
//! (deploy/grafana/mecgw.json) with data. No Grafana server is available here, so its queries
//! are run against Prometheus directly.
//!
//! Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mecgw::api::proto::{PublishRequest, telemetry_service_client::TelemetryServiceClient};
use mecgw_pfcp::{
    decode, encode,
    message::{Header, Heartbeat, Message},
};
use mecgw_tests::{
    api::{Site, connect},
    bed::Bed,
    packet,
    privacy::configure_app_events,
};

const APP: &str = "maps-app";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let dir = deploy().join("prometheus");
    for args in [
        vec!["check", "rules", "mecgw.rules.yml"],
        vec!["test", "rules", "mecgw.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian prometheus, installed by cargo xtask setup)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Prometheus, in the daemon's namespace; killed when dropped.
struct Prometheus {
    child: Child,
    ns: String,
}

impl Prometheus {
    fn start(ns: &str, dir: &Path) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let rules = deploy().join("prometheus/mecgw.rules.yml");
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: mecgw\n    static_configs:\n      - targets: [\"127.0.0.1:9464\"]\n",
                rules.canonicalize().unwrap().display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus"])
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian, installed by cargo xtask setup)");
        Prometheus {
            child,
            ns: ns.to_string(),
        }
    }

    /// The result vector of an instant query (empty while Prometheus is not up yet).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-s", "-G"])
            .arg("http://127.0.0.1:9090/api/v1/query")
            .arg("--data-urlencode")
            .arg(format!("query={expr}"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-s"])
            .arg(format!("http://127.0.0.1:9090{path}"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `expr` of every panel of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy().join("grafana/mecgw.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    queries
}

/// Traffic on every interface the dashboard shows: records published over the API, a PFCP
/// heartbeat from the SMF's address, a GTP-U echo from the gNB.
fn drive(bed: &Bed, site: &Site) {
    let app = site.app(APP).unwrap();
    let ca = site.ca.cert_pem();
    let addr: SocketAddr = "127.0.0.1:50051".parse().unwrap();
    let accepted = mecgw_tests::in_netns(&bed.mec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = connect(addr, &ca, Some(&app)).await.unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let records: Vec<String> = (0..20)
                .map(|i| {
                    format!(
                        r#"{{"imsi":"00101{i:010}","device_id":"dev-{i}","time":{now},"location":{{"lat":48.137,"lon":11.575}},"rtt_ms":20}}"#
                    )
                })
                .collect();
            TelemetryServiceClient::new(channel)
                .publish(futures::stream::iter([PublishRequest {
                    kind: "app_event".into(),
                    records_json: records,
                }]))
                .await
                .unwrap()
                .into_inner()
                .accepted
        })
    })
    .unwrap();
    assert_eq!(accepted, 20);

    mecgw_tests::in_netns(&bed.gnb, || {
        let s = UdpSocket::bind("198.18.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let heartbeat = Message::HeartbeatRequest(Heartbeat {
            recovery_time_stamp: 3_900_000_000,
        });
        let header = Header {
            message_type: heartbeat.message_type(),
            seid: None,
            sequence: 1,
            priority: None,
        };
        s.send_to(&encode(&header, &heartbeat), "198.18.0.2:8805")
            .unwrap();
        let mut buf = [0u8; 1024];
        let (n, _) = s.recv_from(&mut buf).expect("a Heartbeat Response");
        let (h, m) = decode(&buf[..n]).unwrap();
        assert_eq!(h.sequence, 1);
        assert!(matches!(m, Message::HeartbeatResponse(_)), "{m:?}");

        let echo = packet::Gtpu::encode(packet::gtp_type::ECHO_REQUEST, 0, Some(7), None, &[]);
        s.send_to(&echo, "198.18.0.2:2152").unwrap();
        s.recv_from(&mut buf).expect("an Echo Response");
    })
    .unwrap();
}

#[test]
fn a_real_prometheus_scrapes_mecgw_and_every_dashboard_query_returns_data() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure_app_events(&bed, &site, APP, false);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "\n[pfcp]\nlisten = \"198.18.0.2:8805\"\nnode_id = \"198.18.0.2\"\npeers = [\"198.18.0.1/32\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    drive(&bed, &site);

    let prometheus = Prometheus::start(&bed.mec, &bed.path("prometheus"));
    // Scraped (up = 1), and long enough for rate() over 1m to have two samples.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<(String, String)> = dashboard_queries();
    while Instant::now() < deadline && !missing.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
        missing.retain(|(_, expr)| prometheus.query(expr).is_empty());
    }
    assert_eq!(
        prometheus.query("up{job=\"mecgw\"}")[0]["value"][1],
        "1",
        "Prometheus scraped mecgw"
    );
    assert!(
        missing.is_empty(),
        "dashboard queries without data: {missing:#?}"
    );

    // The OpenMetrics-only families reach Prometheus too: the build (an info family) and the
    // process metrics.
    let build = prometheus.query("mecgw_build_info");
    assert_eq!(
        build[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build:?}"
    );
    for series in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(
            !prometheus.query(series).is_empty(),
            "no {series} in Prometheus"
        );
    }

    // The rules loaded in the server too, all ten, and none fires on a healthy daemon.
    let rules = prometheus.get("/api/v1/rules");
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, 10, "{rules}");
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}");
    assert!(firing.is_empty(), "alerts on a healthy daemon: {firing:?}");

    drop(prometheus);
    assert!(d.stop().success());
}
