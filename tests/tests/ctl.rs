//! `mecgw ctl`, `mecgw completions` and `mecgw man` as an operator runs them: the real
//! `mecgw` binary as a subprocess, against the real gRPC API server (mTLS, roles) on
//! loopback, with certificates made on the fly.
//!
//! The API here serves an in-memory backend (tables compiled, never installed in a fast
//! path), so these tests need neither root nor BPF: what is under test is the client, its
//! output and its exit codes, not the datapath.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::{Arc, RwLock},
};

use mecgw::{
    api::{
        ApiBackend, BackendError, PublishedRecord, ReleasedOutput, ReplaceError, StatusReport,
        proto::{
            CreateTrafficRuleRequest, RegisterServiceRequest, TrafficRule, TrafficRuleAction,
            TrafficRuleState, edge_services_service_client::EdgeServicesServiceClient,
            traffic_rules_service_client::TrafficRulesServiceClient,
        },
    },
    datapath::{CompiledTables, Problems, Tables, compile::compile, tables::overlay::Overlay},
};
use mecgw_tests::api::{Ca, Pem, Running, Site, TABLE_ENTRIES, edge_service};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

/// The daemon's part without a fast path: the API's tables are compiled and kept, nothing
/// is installed. Status reports fixed budget and backlog figures.
struct MemoryBackend {
    file: Tables,
    overlay: RwLock<Arc<Overlay>>,
    tables: RwLock<Arc<CompiledTables>>,
    ready: watch::Sender<bool>,
    ingest: mpsc::Sender<PublishedRecord>,
    _ingested: mpsc::Receiver<PublishedRecord>,
    released: broadcast::Sender<Arc<ReleasedOutput>>,
}

impl MemoryBackend {
    /// [`TABLE_ENTRIES`] as the API's own sessions and rules; ready.
    fn new() -> Arc<MemoryBackend> {
        let tables = mecgw::datapath::compile::from_toml(
            &mecgw_tests::tables_with(TABLE_ENTRIES),
            "ctl_tests.toml",
        )
        .unwrap();
        let mut file = Tables::clone(&tables);
        let overlay = Overlay {
            sessions: std::mem::take(&mut file.sessions),
            rules: std::mem::take(&mut file.rules),
            ..Overlay::default()
        };
        let (ingest, ingested) = mpsc::channel(16);
        Arc::new(MemoryBackend {
            file,
            overlay: RwLock::new(Arc::new(overlay)),
            tables: RwLock::new(Arc::new(tables)),
            ready: watch::channel(true).0,
            ingest,
            _ingested: ingested,
            released: broadcast::channel(4).0,
        })
    }
}

impl ApiBackend for MemoryBackend {
    fn tables(&self) -> Arc<CompiledTables> {
        self.tables.read().unwrap().clone()
    }

    fn overlay(&self) -> Arc<Overlay> {
        self.overlay.read().unwrap().clone()
    }

    fn replace_overlay(
        &self,
        base: &Arc<Overlay>,
        next: Overlay,
    ) -> Result<Arc<CompiledTables>, ReplaceError> {
        let mut overlay = self.overlay.write().unwrap();
        if !Arc::ptr_eq(&overlay, base) {
            return Err(ReplaceError::Conflict);
        }
        let merged = next
            .apply(self.file.clone(), "the operator API")
            .map_err(|p| ReplaceError::Invalid(Problems(p)))?;
        let compiled = Arc::new(compile(merged).map_err(ReplaceError::Invalid)?);
        *self.tables.write().unwrap() = compiled.clone();
        *overlay = Arc::new(next);
        Ok(compiled)
    }

    fn status(&self) -> Result<StatusReport, BackendError> {
        Ok(StatusReport {
            verdicts: vec![("pass".into(), 12, 3400), ("drop".into(), 1, 60)],
            reasons: vec![("rule_drop".into(), 1, 60)],
            policy_hash: Some("sha256:ctl-test".into()),
            budgets: vec![("cell_load".into(), 0.75, 1e-6)],
            egress_backlog: vec![("central".into(), 3, 4096)],
        })
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn record_kinds(&self) -> Vec<String> {
        vec!["app".into()]
    }

    fn ingest(&self) -> mpsc::Sender<PublishedRecord> {
        self.ingest.clone()
    }

    fn releases(&self) -> broadcast::Receiver<Arc<ReleasedOutput>> {
        self.released.subscribe()
    }
}

/// A site, the API serving a [`MemoryBackend`] on loopback, and client identities written
/// as PEM files (`<who>.pem`, `<who>.key`) next to the site's `ca.pem`.
struct World {
    site: Site,
    server: Running,
}

impl World {
    async fn start() -> World {
        let site = Site::new().unwrap();
        let server = Running::start(MemoryBackend::new(), site.config())
            .await
            .unwrap();
        let w = World { site, server };
        w.write_identity("operator", &w.site.operator().unwrap());
        w.write_identity("video", &w.site.app("video").unwrap());
        w.write_identity("stranger", &w.site.app("stranger").unwrap());
        let rogue = Ca::new("rogue CA").unwrap();
        w.write_identity(
            "forged",
            &rogue
                .client(&[], &[mecgw_tests::api::OPERATOR_URI])
                .unwrap(),
        );
        std::fs::write(w.path("rogue-ca.pem"), rogue.cert_pem()).unwrap();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.site.dir().join(name)
    }

    fn write_identity(&self, who: &str, pem: &Pem) {
        std::fs::write(self.path(&format!("{who}.pem")), &pem.cert).unwrap();
        std::fs::write(self.path(&format!("{who}.key")), &pem.key).unwrap();
    }

    fn addr(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    /// `mecgw ctl --addr .. --cert <who>.pem --key <who>.key --ca ca.pem ARGS`.
    async fn ctl(&self, who: &str, args: &[&str]) -> Run {
        let mut full: Vec<String> = vec![
            "ctl".into(),
            "--addr".into(),
            self.addr(),
            "--cert".into(),
            self.path(&format!("{who}.pem")).display().to_string(),
            "--key".into(),
            self.path(&format!("{who}.key")).display().to_string(),
            "--ca".into(),
            self.path("ca.pem").display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        mecgw(full, &[]).await
    }
}

/// What a `mecgw` run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the real `mecgw` binary with `args` and `env` (and no MECGW_CTL_* from outside), off
/// the async workers that serve the API.
async fn mecgw(args: Vec<String>, env: &[(&str, String)]) -> Run {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(mecgw_tests::mecgw_bin().unwrap());
        for var in [
            "MECGW_CTL_ADDR",
            "MECGW_CTL_CERT",
            "MECGW_CTL_KEY",
            "MECGW_CTL_CA",
            "MECGW_CTL_SERVER_NAME",
        ] {
            command.env_remove(var);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = command.args(&args).envs(env).output().unwrap();
        Run {
            code: status.code().expect("exited, not killed"),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reads_status_rules_sessions_services_budget_and_egress() {
    let w = World::start().await;

    // A rule and a service made through the API show up in ctl.
    let op = w.site.channel(w.server.addr, "operator").await.unwrap();
    TrafficRulesServiceClient::new(op)
        .create_traffic_rule(CreateTrafficRuleRequest {
            rule: Some(TrafficRule {
                id: 40,
                priority: 40,
                state: TrafficRuleState::Active as i32,
                action: TrafficRuleAction::Drop as i32,
                destination_prefixes: vec!["198.51.100.0/24".into()],
                protocols: vec![17],
                teid: Some(0x100),
                ..TrafficRule::default()
            }),
        })
        .await
        .unwrap();
    let video = w.site.channel(w.server.addr, "video").await.unwrap();
    EdgeServicesServiceClient::new(video)
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("video", "1.2.3")),
        })
        .await
        .unwrap();

    // status: tables for people...
    let run = w.ctl("operator", &["status"]).await;
    run.expect_code(0);
    for want in [
        "ready           yes",
        "sessions        1",
        "traffic rules   4",
        "policy          sha256:ctl-test",
        "server version  not exposed by the API",
        "VERDICT  PACKETS  BYTES",
        "pass          12   3400",
        "cell_load",
        "central",
    ] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
    // ...and one JSON document for scripts.
    let status = w.ctl("operator", &["status", "--json"]).await;
    let s = status.expect_code(0).json();
    assert_eq!(s["ready"], true);
    assert_eq!(s["health"], "SERVING");
    assert_eq!(s["sessions"], 1);
    assert_eq!(s["rules"], 4);
    assert_eq!(s["policy_hash"], "sha256:ctl-test");
    assert_eq!(
        s["verdicts"][0],
        serde_json::json!({"name": "pass", "packets": 12, "bytes": 3400})
    );
    assert_eq!(s["budgets"][0]["scope"], "cell_load");
    assert_eq!(s["egress_backlog"][0]["backlog_batches"], 3);
    assert_eq!(s["ctl_version"], env!("CARGO_PKG_VERSION"));

    // rules: the created one among the table's, by id.
    let rules = w.ctl("operator", &["rules"]).await;
    rules.expect_code(0);
    let line = rules
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("40 "))
        .unwrap_or_else(|| panic!("rule 40 in:\n{}", rules.stdout));
    for want in ["ACTIVE", "DROP", "198.51.100.0/24", "17", "0x100"] {
        assert!(line.contains(want), "{want:?} in {line:?}");
    }
    assert!(
        rules.stdout.starts_with("ID  PRIO  STATE"),
        "{}",
        rules.stdout
    );
    let j = w.ctl("operator", &["--json", "rules"]).await.json();
    assert_eq!(ids(&j["rules"]), vec![10, 20, 30, 40]);
    let r40 = &j["rules"][3];
    assert_eq!(r40["action"], "DROP");
    assert_eq!(r40["teid"], 256);
    assert_eq!(r40["qfi"], Value::Null);
    assert!(!r40["etag"].as_str().unwrap().is_empty());

    let one = w.ctl("operator", &["rules", "get", "40", "--json"]).await;
    assert_eq!(one.expect_code(0).json()["rule"]["id"], 40);
    let one = w.ctl("operator", &["rules", "get", "40"]).await;
    assert!(
        one.expect_code(0).stdout.contains("action        DROP"),
        "{}",
        one.stdout
    );
    // An id that does not exist: the server's NOT_FOUND, exit code 4.
    let missing = w.ctl("operator", &["rules", "get", "99"]).await;
    missing.expect_code(4);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);

    // An app sees only its own rules.
    let j = w.ctl("video", &["rules", "--json"]).await;
    assert_eq!(ids(&j.expect_code(0).json()["rules"]), vec![10, 30]);

    // sessions
    let sessions = w.ctl("operator", &["sessions"]).await;
    sessions.expect_code(0);
    assert!(
        sessions.stdout.contains("0x100") && sessions.stdout.contains("10.45.0.1"),
        "{}",
        sessions.stdout
    );
    let j = w.ctl("operator", &["sessions", "--json"]).await.json();
    assert_eq!(ids(&j["sessions"]), vec![1]);
    assert_eq!(j["sessions"][0]["uplink_teid"], 0x100);
    assert_eq!(j["sessions"][0]["downlink_teid"], 0x200);
    assert_eq!(j["sessions"][0]["ue_ipv4"], "10.45.0.1");
    assert_eq!(j["sessions"][0]["ue_ipv6"], Value::Null);
    assert_eq!(j["sessions"][0]["gnb"], "198.18.1.1");
    assert_eq!(j["sessions"][0]["qfi"], 9);

    // services
    let j = w.ctl("operator", &["services", "--json"]).await.json();
    assert_eq!(
        j["services"],
        serde_json::json!([{
            "name": "video", "version": "1.2.3", "endpoint": "https://198.51.100.7:8443",
            "state": "ACTIVE", "owner": "video"
        }])
    );

    // budget and egress: what GetStatus has, and what the API does not expose said so.
    let j = w.ctl("operator", &["budget", "--json"]).await.json();
    assert_eq!(
        j,
        serde_json::json!({"budgets": [{"scope": "cell_load", "epsilon_left": 0.75, "delta_left": 1e-6}]})
    );
    let j = w.ctl("operator", &["egress", "--json"]).await.json();
    assert_eq!(
        j,
        serde_json::json!({
            "destinations": [{"destination": "central", "backlog_batches": 3, "backlog_bytes": 4096}],
            "not_exposed": ["sent", "refused"]
        })
    );
    let egress = w.ctl("operator", &["egress"]).await;
    assert!(
        egress
            .expect_code(0)
            .stdout
            .contains("not exposed by the API"),
        "{}",
        egress.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_options_come_from_the_environment_too() {
    let w = World::start().await;
    let env = [
        ("MECGW_CTL_ADDR", w.addr()),
        (
            "MECGW_CTL_CERT",
            w.path("operator.pem").display().to_string(),
        ),
        (
            "MECGW_CTL_KEY",
            w.path("operator.key").display().to_string(),
        ),
        ("MECGW_CTL_CA", w.path("ca.pem").display().to_string()),
    ];
    let run = mecgw(vec!["ctl".into(), "rules".into(), "--json".into()], &env).await;
    assert_eq!(ids(&run.expect_code(0).json()["rules"]), vec![10, 20, 30]);

    // --server-name: verify the server as `localhost` while dialling its address.
    let run = mecgw(
        vec![
            "ctl".into(),
            "--server-name".into(),
            "localhost".into(),
            "status".into(),
        ],
        &env,
    )
    .await;
    run.expect_code(0);
    // A name the server's certificate does not carry fails the handshake: exit code 2.
    let run = mecgw(
        vec![
            "ctl".into(),
            "--server-name".into(),
            "gw.elsewhere.example".into(),
            "status".into(),
        ],
        &env,
    )
    .await;
    run.expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_tls_failures_have_their_own_exit_codes() {
    let w = World::start().await;

    // An app without the operator role: the server's PERMISSION_DENIED, exit code 3.
    let run = w.ctl("video", &["status"]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(w.ctl("video", &["sessions", "--json"]).await.code, 3);
    // A certificate from the right CA naming no configured app: refused too.
    let run = w.ctl("stranger", &["rules"]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("PERMISSION_DENIED"), "{}", run.stderr);

    // A client certificate from another CA: the TLS handshake fails, exit code 2.
    let run = w.ctl("forged", &["status"]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);

    // A server certificate not signed by --ca: exit code 2.
    let mut args = vec![
        "ctl".to_string(),
        "--addr".into(),
        w.addr(),
        "--cert".into(),
        w.path("operator.pem").display().to_string(),
        "--key".into(),
        w.path("operator.key").display().to_string(),
        "--ca".into(),
        w.path("rogue-ca.pem").display().to_string(),
        "status".into(),
    ];
    let run = mecgw(args.clone(), &[]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);

    // Nothing listening: exit code 2.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    args[2] = format!("https://{closed}");
    args[8] = w.path("ca.pem").display().to_string();
    let run = mecgw(args.clone(), &[]).await;
    run.expect_code(2);
    assert!(run.stderr.contains(&closed.to_string()), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_problems_exit_with_1_and_name_the_file() {
    let w = World::start().await;
    let base = |cert: &Path, key: &Path| -> Vec<String> {
        vec![
            "ctl".into(),
            "--addr".into(),
            w.addr(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--ca".into(),
            w.path("ca.pem").display().to_string(),
            "status".into(),
        ]
    };
    let missing = w.path("no-such-client.pem");
    let run = mecgw(base(&missing, &w.path("operator.key")), &[]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );

    // A key file that holds a certificate instead.
    let run = mecgw(base(&w.path("operator.pem"), &w.path("operator.pem")), &[]).await;
    run.expect_code(1);
    assert!(
        run.stderr.contains("operator.pem") && run.stderr.contains("private key"),
        "{}",
        run.stderr
    );

    // No certificate at all.
    let run = mecgw(vec!["ctl".into(), "status".into()], &[]).await;
    run.expect_code(1);
    assert!(run.stderr.contains("--cert"), "{}", run.stderr);

    // Usage errors are 1 under ctl (2 means "cannot connect" there).
    let run = mecgw(vec!["ctl".into(), "--no-such-flag".into()], &[]).await;
    run.expect_code(1);
    let run = mecgw(
        vec!["ctl".into(), "rules".into(), "get".into(), "x".into()],
        &[],
    )
    .await;
    run.expect_code(1);

    // --help documents the exit codes.
    let run = mecgw(vec!["ctl".into(), "--help".into()], &[]).await;
    run.expect_code(0);
    for want in ["Exit codes:", "2  cannot connect", "3  the server refused"] {
        assert!(run.stdout.contains(want), "{want:?} in:\n{}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_pages_are_generated_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let run = mecgw(vec!["completions".into(), shell.into()], &[]).await;
        run.expect_code(0);
        assert!(run.stdout.contains("ctl"), "{shell}:\n{}", run.stdout);
        assert!(run.stdout.contains("server-name"), "{shell}");
    }
    let run = mecgw(vec!["completions".into(), "tcsh".into()], &[]).await;
    assert_ne!(run.code, 0);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let run = mecgw(vec!["man".into(), out.display().to_string()], &[]).await;
    run.expect_code(0);
    for page in [
        "mecgw.1",
        "mecgw-ctl.1",
        "mecgw-ctl-status.1",
        "mecgw-ctl-rules.1",
        "mecgw-ctl-rules-get.1",
        "mecgw-completions.1",
        "mecgw-man.1",
        "mecgw-run.1",
    ] {
        let text = std::fs::read_to_string(out.join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}; stdout:\n{}", run.stdout));
        assert!(text.starts_with(".ie") || text.starts_with(".TH"), "{page}");
        assert!(text.contains(".TH "), "{page}:\n{text}");
    }
    let ctl = std::fs::read_to_string(out.join("mecgw-ctl.1")).unwrap();
    assert!(ctl.contains("Exit codes"), "{ctl}");

    // Where man(1) is installed, it must render the page.
    if let Ok(rendered) = std::process::Command::new("man")
        .arg("-l")
        .arg(out.join("mecgw-ctl.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
    {
        assert!(rendered.status.success(), "man -l: {rendered:?}");
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("--server-name"), "{text}");
    }
}
