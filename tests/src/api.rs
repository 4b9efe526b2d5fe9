//! Support for the gRPC API tests and benchmark: certificates made on the fly (rcgen), an
//! [`ApiBackend`] over a real loaded [`FastPath`] with the tables the tests share
//! ([`TABLE_ENTRIES`]), and mTLS clients.
//!
//! The backend here plays the daemon's part and nothing more: it holds the tables in force,
//! installs replacements in the fast path under compare-and-swap, and exposes the readiness,
//! ingest queue and release broadcast the tests drive.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, RwLock},
};

use anyhow::Context as _;
use mecgw::{
    api::{
        ApiBackend, ApiConfig, ApiMetrics, AppConfig, BackendError, PublishedRecord,
        ReleasedOutput, ReplaceError, Role, StatusReport,
        proto::{EdgeService, EdgeServiceState},
    },
    datapath::{
        CompiledTables, FastPath, Problems, Tables, compile::compile, tables::overlay::Overlay,
    },
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A PEM certificate and its private key.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> anyhow::Result<Pem> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose SANs are `dns` (DNS names) and `uris`.
    pub fn client(&self, dns: &[&str], uris: &[&str]) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "mecgw test client");
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into()?));
        }
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into()?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// The test site: a CA for clients and server, PEM files in `dir`, and an [`ApiConfig`] with
/// an operator (`spiffe://mec.test/operator`) and two apps, `video` (rules 100-199 except
/// none by default; see [`Site::config`]) and `maps`.
pub struct Site {
    pub ca: Ca,
    pub dir: tempfile::TempDir,
    pub server: Pem,
}

/// The SAN URI of the test operator.
pub const OPERATOR_URI: &str = "spiffe://mec.test/operator";

impl Site {
    /// A new CA and server certificate, written to a temporary directory.
    pub fn new() -> anyhow::Result<Site> {
        let ca = Ca::new("mecgw test client and server CA")?;
        let server = ca.server()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("server.pem"), &server.cert)?;
        std::fs::write(dir.path().join("server.key"), &server.key)?;
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem())?;
        Ok(Site { ca, dir, server })
    }

    /// mTLS configuration on 127.0.0.1 (port chosen by the caller's listener) with the
    /// operator and the apps `video` (owns rules 10 and 30, service `video`, may discover
    /// `maps`, publishes `app`, sees release `cell_load`) and `maps` (owns rule 20 and
    /// service `maps`).
    pub fn config(&self) -> ApiConfig {
        let mut c = ApiConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.cert = Some(self.path("server.pem"));
        c.key = Some(self.path("server.key"));
        c.client_ca = Some(self.path("ca.pem"));
        c.drain_ms = 200;
        c.publish_wait_ms = 20;
        c.apps.insert(
            "operator".into(),
            AppConfig {
                role: Some(Role::Operator),
                sans: vec![OPERATOR_URI.into()],
                ..AppConfig::default()
            },
        );
        c.apps.insert(
            "video".into(),
            AppConfig {
                role: Some(Role::App),
                rules: vec![10, 30],
                services: vec!["video".into()],
                discover: vec!["maps".into()],
                publish: vec!["app".into()],
                releases: vec!["cell_load".into()],
                ..AppConfig::default()
            },
        );
        c.apps.insert(
            "maps".into(),
            AppConfig {
                role: Some(Role::App),
                rules: vec![20],
                services: vec!["maps".into()],
                ..AppConfig::default()
            },
        );
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The operator's client identity.
    pub fn operator(&self) -> anyhow::Result<Pem> {
        self.ca.client(&[], &[OPERATOR_URI])
    }

    /// An app's client identity (its name as DNS SAN).
    pub fn app(&self, name: &str) -> anyhow::Result<Pem> {
        self.ca.client(&[name], &[])
    }

    /// The CA directory (PEM files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An mTLS channel to the server at `addr` as `who`: `"operator"` or an app's name.
    pub async fn channel(&self, addr: SocketAddr, who: &str) -> anyhow::Result<Channel> {
        let identity = if who == "operator" {
            self.operator()?
        } else {
            self.app(who)?
        };
        connect(addr, &self.ca.cert_pem(), Some(&identity)).await
    }
}

/// An active edge service `name` at `version` (owner left for the API to fill in).
pub fn edge_service(name: &str, version: &str) -> EdgeService {
    EdgeService {
        name: name.into(),
        version: version.into(),
        endpoint: "https://198.51.100.7:8443".into(),
        state: EdgeServiceState::Active as i32,
        owner: String::new(),
    }
}

/// A channel to `addr` over TLS trusting `ca_pem`, presenting `identity` if given.
pub async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Pem>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(channel)
}

/// One fast path per test process: loading (verifying) the programs takes seconds in a debug
/// build. Tests that use it hold [`exclusive`] so their tables do not mix.
pub fn shared_fast_path() -> anyhow::Result<Arc<FastPath>> {
    static FAST_PATH: OnceLock<Arc<FastPath>> = OnceLock::new();
    if let Some(f) = FAST_PATH.get() {
        return Ok(f.clone());
    }
    let loaded = Arc::new(FastPath::load()?);
    Ok(FAST_PATH.get_or_init(|| loaded).clone())
}

/// Exclusive use of the [`shared_fast_path`] for one test.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The sessions and rules the API tests serve, after the shared test interfaces
/// ([`crate::tables_with`]). The rules' owners are [`Site::config`]'s: video owns 10 and 30,
/// maps owns 20.
///
/// - session 1: uplink TEID 0x100, downlink 0x200, UE 10.45.0.1, gNB 198.18.1.1, QFI 9;
/// - rule 10: LOCAL to 192.0.2.0/24;
/// - rule 20: PASSTHROUGH to 192.0.2.128/25 (a longer prefix, lower priority);
/// - rule 30: DROP to 203.0.113.0/24.
pub const TABLE_ENTRIES: &str = r#"
[[sessions]]
id = 1
uplink_teid = 0x100
downlink_teid = 0x200
ue_ipv4 = "10.45.0.1"
gnb = "198.18.1.1"
qfi = 9

[[rules]]
id = 10
priority = 10
action = "LOCAL"
dst = ["192.0.2.0/24"]

[[rules]]
id = 20
priority = 20
action = "PASSTHROUGH"
dst = ["192.0.2.128/25"]

[[rules]]
id = 30
priority = 30
action = "DROP"
dst = ["203.0.113.0/24"]
"#;

/// The daemon's part, over a real loaded fast path. The sessions and rules it starts with
/// are the API's own (its overlay), on top of a "file" with the interfaces and defaults.
pub struct FastPathBackend {
    pub fast_path: Arc<FastPath>,
    file: Tables,
    overlay: RwLock<Arc<Overlay>>,
    tables: RwLock<Arc<CompiledTables>>,
    pub ready: watch::Sender<bool>,
    ingest: mpsc::Sender<PublishedRecord>,
    /// The engine's end of the ingest queue (the test reads it, or leaves it full).
    pub ingested: Mutex<Option<mpsc::Receiver<PublishedRecord>>>,
    pub released: broadcast::Sender<Arc<ReleasedOutput>>,
    pub kinds: Vec<String>,
    pub policy_hash: Option<String>,
    pub metrics: Arc<ApiMetrics>,
}

impl FastPathBackend {
    /// Installs `tables` in `fast_path`; the ingest queue holds `queue` records.
    pub fn new(
        fast_path: Arc<FastPath>,
        tables: CompiledTables,
        queue: usize,
    ) -> anyhow::Result<FastPathBackend> {
        fast_path.install(&tables)?;
        let mut file = Tables::clone(&tables);
        let overlay = Overlay {
            sessions: std::mem::take(&mut file.sessions),
            rules: std::mem::take(&mut file.rules),
            ..Overlay::default()
        };
        let (ingest, rx) = mpsc::channel(queue);
        Ok(FastPathBackend {
            fast_path,
            file,
            overlay: RwLock::new(Arc::new(overlay)),
            tables: RwLock::new(Arc::new(tables)),
            ready: watch::channel(false).0,
            ingest,
            ingested: Mutex::new(Some(rx)),
            released: broadcast::channel(64).0,
            kinds: vec!["app".into(), "flow".into()],
            policy_hash: Some("sha256:test".into()),
            metrics: Arc::default(),
        })
    }

    /// [`TABLE_ENTRIES`] installed in the [`shared_fast_path`], not ready yet (send `true` on
    /// [`Self::ready`] to make it so); the ingest queue holds `queue` records. The caller
    /// holds [`exclusive`].
    pub fn with_test_tables(queue: usize) -> anyhow::Result<Arc<FastPathBackend>> {
        let tables = mecgw::datapath::compile::from_toml(
            &crate::tables_with(TABLE_ENTRIES),
            "api_tests.toml",
        )?;
        Ok(Arc::new(FastPathBackend::new(
            shared_fast_path()?,
            tables,
            queue,
        )?))
    }

    /// The engine's end of the ingest queue (once).
    pub fn take_ingested(&self) -> Option<mpsc::Receiver<PublishedRecord>> {
        self.ingested.lock().ok()?.take()
    }
}

impl ApiBackend for FastPathBackend {
    fn tables(&self) -> Arc<CompiledTables> {
        match self.tables.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn overlay(&self) -> Arc<Overlay> {
        match self.overlay.read() {
            Ok(o) => o.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn replace_overlay(
        &self,
        base: &Arc<Overlay>,
        next: Overlay,
    ) -> Result<Arc<CompiledTables>, ReplaceError> {
        let mut overlay = match self.overlay.write() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        if !Arc::ptr_eq(&overlay, base) {
            return Err(ReplaceError::Conflict);
        }
        let merged = next
            .apply(self.file.clone(), "the operator API")
            .map_err(|p| ReplaceError::Invalid(Problems(p)))?;
        let compiled = compile(merged).map_err(ReplaceError::Invalid)?;
        self.fast_path
            .install(&compiled)
            .map_err(|e| ReplaceError::Internal(Box::new(e)))?;
        let compiled = Arc::new(compiled);
        match self.tables.write() {
            Ok(mut t) => *t = compiled.clone(),
            Err(p) => *p.into_inner() = compiled.clone(),
        }
        *overlay = Arc::new(next);
        Ok(compiled)
    }

    fn status(&self) -> Result<StatusReport, BackendError> {
        let internal = |e: mecgw::datapath::DatapathError| BackendError::Internal(Box::new(e));
        let verdicts = self
            .fast_path
            .verdict_counters()
            .map_err(internal)?
            .into_iter()
            .map(|(v, c)| (v.name().to_string(), c.packets, c.bytes))
            .collect();
        let reasons = self
            .fast_path
            .reason_counters()
            .map_err(internal)?
            .into_iter()
            .map(|(r, c)| (r.name().to_string(), c.packets, c.bytes))
            .collect();
        Ok(StatusReport {
            verdicts,
            reasons,
            policy_hash: self.policy_hash.clone(),
            budgets: vec![("cell_load".into(), 0.75, 1e-6)],
            egress_backlog: vec![("central".into(), 3, 4096)],
        })
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn record_kinds(&self) -> Vec<String> {
        self.kinds.clone()
    }

    fn ingest(&self) -> mpsc::Sender<PublishedRecord> {
        self.ingest.clone()
    }

    fn releases(&self) -> broadcast::Receiver<Arc<ReleasedOutput>> {
        self.released.subscribe()
    }

    fn api_metrics(&self) -> Option<Arc<ApiMetrics>> {
        Some(self.metrics.clone())
    }
}

/// One API test's world: exclusive use of the [`shared_fast_path`] (until it drops), a
/// [`Site`], a [`FastPathBackend`] with [`TABLE_ENTRIES`], and the API serving it on loopback.
pub struct ApiTest {
    pub site: Site,
    pub backend: Arc<FastPathBackend>,
    pub server: Running,
    // Last, so it is released after the server and the backend are gone.
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

impl ApiTest {
    /// A ready backend whose ingest queue holds `queue` records, served with the site's
    /// configuration.
    pub async fn start(queue: usize) -> anyhow::Result<ApiTest> {
        Self::start_with(queue, true, |_| {}).await
    }

    /// The same, ready or not, with the site's configuration as `configure` changes it.
    pub async fn start_with(
        queue: usize,
        ready: bool,
        configure: impl FnOnce(&mut ApiConfig),
    ) -> anyhow::Result<ApiTest> {
        let exclusive = exclusive().await;
        let site = Site::new()?;
        let backend = FastPathBackend::with_test_tables(queue)?;
        backend.ready.send_replace(ready);
        let mut config = site.config();
        configure(&mut config);
        let server = Running::start(backend.clone(), config).await?;
        Ok(ApiTest {
            site,
            backend,
            server,
            _exclusive: exclusive,
        })
    }

    /// An mTLS channel to the server as `who`: `"operator"` or an app's name.
    pub async fn channel(&self, who: &str) -> anyhow::Result<Channel> {
        self.site.channel(self.server.addr, who).await
    }
}

/// A running API server on loopback.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Serves `backend` with `config` on 127.0.0.1 (an ephemeral port).
    pub async fn start<B: ApiBackend>(
        backend: Arc<B>,
        config: ApiConfig,
    ) -> anyhow::Result<Running> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            mecgw::api::serve_on(backend, &config, listener, async {
                let _ = rx.await;
            })
            .await
        });
        Ok(Running {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Starts shutdown (health turns NOT_SERVING, then the server stops after the drain).
    pub fn begin_shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Shuts down and waits for the server to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        self.task.await?
    }
}
