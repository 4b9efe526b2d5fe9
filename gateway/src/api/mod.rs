//! The local gRPC APIs (package `mecgw.v1`, protos in `proto/mecgw/v1`): what apps and the
//! operator on the site talk to.
//!
//! One module per service: [`traffic_rules`], [`sessions`], [`services`], [`telemetry`],
//! [`status`]; plus `grpc.health.v1` and reflection (v1 and v1alpha). [`identity`] owns who a
//! caller is (the SAN of its verified client certificate) and what it may do (its role and
//! what it owns, from [`ApiConfig`]); every handler asks it first. `limits` owns the request
//! size limits and the status a call over them ends with.
//!
//! This module never touches the kernel or the policy engine itself: it works against
//! [`ApiBackend`], which the daemon implements over its fast path, tables, policy engine and
//! egress (the daemon adapts its `Gateway` to it; this module never imports the daemon). A table change goes through [`ApiBackend::replace_tables`], which installs it in
//! the fast path before it returns, so a rule change is in force when the call answers.

pub mod config;
pub mod errors;
pub mod identity;
mod limits;
pub mod metrics;
pub mod services;
pub mod sessions;
pub mod status;
pub mod telemetry;
pub mod traffic_rules;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{
    server::NamedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::datapath::{CompiledTables, tables::overlay::Overlay};
pub use crate::records::{PublishedRecord, ReleasedOutput};
pub use errors::{BackendError, ReplaceError};
use limits::SMALL_MESSAGE_BYTES;

pub use config::{ApiConfig, AppConfig, Role};
pub use metrics::ApiMetrics;

/// The generated messages, servers and clients of `mecgw.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("mecgw.v1");

    /// Encoded descriptors of every `mecgw.v1` file, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("mecgw_v1_descriptor");
}

use proto::{
    edge_services_service_server::EdgeServicesServiceServer,
    sessions_service_server::SessionsServiceServer, status_service_server::StatusServiceServer,
    telemetry_service_server::TelemetryServiceServer,
    traffic_rules_service_server::TrafficRulesServiceServer,
};

/// A snapshot for the Status service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusReport {
    /// Fast-path (name, packets, bytes) by verdict.
    pub verdicts: Vec<(String, u64, u64)>,
    /// Fast-path (name, packets, bytes) by reason.
    pub reasons: Vec<(String, u64, u64)>,
    /// Hash of the policy in force, if one is loaded.
    pub policy_hash: Option<String>,
    /// (scope, epsilon left, delta left).
    pub budgets: Vec<(String, f64, f64)>,
    /// (destination, batches, bytes) waiting to leave the site.
    pub egress_backlog: Vec<(String, u64, u64)>,
}

/// What the API needs from the running gateway. The daemon implements it over its fast
/// path, tables, policy engine and egress; tests implement it over a loaded [`FastPath`].
///
/// [`FastPath`]: crate::datapath::FastPath
pub trait ApiBackend: Send + Sync + 'static {
    /// The tables in force: the tables file's entries and this API's, merged.
    fn tables(&self) -> Arc<CompiledTables>;

    /// What this API owns: the sessions and rules created through it and the states it set
    /// on the tables file's rules ([`Overlay`]).
    fn overlay(&self) -> Arc<Overlay>;

    /// Makes `next` what this API owns, if that is still `base` (pointer-equal): merges it
    /// with the tables file, compiles, stores it durably and installs the result in the
    /// datapath. Blocking (it writes a file and BPF maps). Returns the tables now in force.
    /// On any error the old tables and overlay stay in force.
    fn replace_overlay(
        &self,
        base: &Arc<Overlay>,
        next: Overlay,
    ) -> Result<Arc<CompiledTables>, ReplaceError>;

    /// Counters, policy hash, budget and egress backlog.
    fn status(&self) -> Result<StatusReport, BackendError>;

    /// `true` once the programs are attached and the policy loaded; `false` again while the
    /// gateway drains. Health reports SERVING exactly while it is `true`.
    fn readiness(&self) -> watch::Receiver<bool>;

    /// The record kinds the policy in force declares (what apps may publish at all).
    fn record_kinds(&self) -> Vec<String>;

    /// The bounded queue into the policy engine. When it is full, Publish waits at most
    /// [`ApiConfig::publish_wait_ms`] and then answers RESOURCE_EXHAUSTED.
    fn ingest(&self) -> mpsc::Sender<PublishedRecord>;

    /// Outputs released on this site, as they happen.
    fn releases(&self) -> broadcast::Receiver<Arc<ReleasedOutput>>;

    /// Resolves once every record queued on [`ingest`](Self::ingest) before the call is
    /// processed and what the policy emitted for it is durably spooled. Publish awaits it
    /// before it acknowledges, so an acknowledged record survives `kill -9`. `Err` says why
    /// not (e.g. the spool is full); the default has nothing to wait for.
    fn flush(&self) -> futures::future::BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Where to count calls per method and code (rendered on the daemon's `/metrics`);
    /// `None`: not counted.
    fn api_metrics(&self) -> Option<Arc<ApiMetrics>> {
        None
    }
}

/// State shared by the service implementations.
pub(crate) struct Shared<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) authority: identity::Authority,
    pub(crate) config: ApiConfig,
    /// Serialises read-check-write of the tables through this API (SIGHUP reloads are
    /// detected by [`ApiBackend::replace_tables`]'s compare-and-swap instead).
    pub(crate) table_writes: tokio::sync::Mutex<()>,
    pub(crate) registry: services::Registry,
    /// Becomes `true` when shutdown starts: open streams end.
    pub(crate) draining: watch::Receiver<bool>,
}

impl<B> Shared<B> {
    /// A future that completes when shutdown starts.
    pub(crate) fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.draining.clone();
        async move {
            // An error means the sender is gone: the server is stopping anyway.
            let _ = rx.wait_for(|d| *d).await;
        }
    }
}

impl<B: ApiBackend> Shared<B> {
    /// Reads what this API owns and the tables in force, lets `edit` derive what the API
    /// owns next (and the answer to give), and installs it before returning. A reload in
    /// between (a conflict) makes it read again and re-run `edit`, so checks such as etags
    /// see the latest tables. Problems of the result are filed under the request's `field`.
    pub(crate) async fn edit_tables<T, F>(
        &self,
        field: &str,
        mut edit: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(&Overlay, &crate::datapath::Tables) -> Result<(Overlay, T), tonic::Status>,
    {
        let _writer = self.table_writes.lock().await;
        for _ in 0..EDIT_ATTEMPTS {
            let base = self.backend.overlay();
            let in_force = self.backend.tables();
            let (next, answer) = edit(&base, &in_force)?;
            let backend = self.backend.clone();
            let installed =
                tokio::task::spawn_blocking(move || backend.replace_overlay(&base, next))
                    .await
                    .map_err(|e| tonic::Status::internal(format!("table update failed: {e}")))?;
            match installed {
                Ok(_) => return Ok(answer),
                Err(ReplaceError::Conflict) => continue,
                Err(e @ ReplaceError::Internal(_)) => {
                    warn!(error = %e, "api: table update not installed");
                    return Err(errors::replace_status(e, field));
                }
                Err(e) => return Err(errors::replace_status(e, field)),
            }
        }
        Err(errors::replace_status(ReplaceError::Conflict, field))
    }
}

/// How often a table change is retried when a reload gets in between.
const EDIT_ATTEMPTS: usize = 3;

/// Serves the gRPC APIs on `config.listen` until `shutdown` completes.
///
/// TLS with a required, CA-verified client certificate unless `config.insecure`. Health
/// follows [`ApiBackend::readiness`]; when `shutdown` completes, health turns NOT_SERVING,
/// streams end, and for [`ApiConfig::drain_ms`] the server keeps answering before it stops.
pub async fn serve<B: ApiBackend>(
    backend: Arc<B>,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("api: cannot listen on {}", config.listen))?;
    serve_on(backend, config, listener, shutdown).await
}

/// Checks `config` (values, certificates, keys and CA, read and parsed as serving would) and
/// binds its port: what can fail when the API starts fails here, before the daemon attaches
/// anything or says it is ready.
pub async fn prepare(config: &ApiConfig) -> anyhow::Result<tokio::net::TcpListener> {
    config
        .validate()
        .map_err(|errors| anyhow::anyhow!("[api]: {}", errors.join("; ")))?;
    if !config.insecure {
        // Building the acceptor is what serving does first: a key that does not match its
        // certificate fails here.
        Server::builder()
            .tls_config(tls_config(config)?)
            .context("api: TLS configuration (api.cert, api.key, api.client_ca)")?;
    }
    tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("api.listen {}: cannot listen", config.listen))
}

/// [`serve`] on a listener the caller bound (tests bind port 0 and read the address).
pub async fn serve_on<B: ApiBackend>(
    backend: Arc<B>,
    config: &ApiConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    config
        .validate()
        .map_err(|errors| anyhow::anyhow!("api configuration: {}", errors.join("; ")))?;
    let local: SocketAddr = listener.local_addr().context("api: listener address")?;
    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if config.insecure {
        warn!(
            listen = %local,
            "api: serving WITHOUT TLS (insecure = true): anyone who can reach this port can \
             claim to be any configured app with the mecgw-app header; never do this outside \
             a test bench"
        );
    } else {
        builder = builder
            .tls_config(tls_config(config)?)
            .context("api: TLS configuration")?;
    }

    let metrics = backend.api_metrics().unwrap_or_default();
    let limits = limits::Limits {
        api: config.max_message_bytes,
    };
    // Outermost first: the metrics count the code the limit layer leaves.
    let mut builder = builder
        .layer(metrics::MetricsLayer(metrics))
        .layer(limits::LimitLayer(limits));

    let (drain_tx, drain_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        backend: backend.clone(),
        authority: identity::Authority::new(config),
        config: config.clone(),
        table_writes: tokio::sync::Mutex::new(()),
        registry: services::Registry::new(),
        draining: drain_rx,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    let names = [
        "",
        <TrafficRulesServiceServer<traffic_rules::TrafficRules<B>> as NamedService>::NAME,
        <SessionsServiceServer<sessions::Sessions<B>> as NamedService>::NAME,
        <EdgeServicesServiceServer<services::EdgeServices<B>> as NamedService>::NAME,
        <TelemetryServiceServer<telemetry::Telemetry<B>> as NamedService>::NAME,
        <StatusServiceServer<status::Status<B>> as NamedService>::NAME,
    ];
    for name in names {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let mut readiness = backend.readiness();
    let mut draining = shared.draining.clone();
    let health_task = {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                let serving = *readiness.borrow_and_update() && !*draining.borrow_and_update();
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in names {
                    health.set_service_status(name, status).await;
                }
                tokio::select! {
                    r = readiness.changed() => if r.is_err() { break },
                    r = draining.changed() => if r.is_err() { break },
                }
            }
        })
    };

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("api: reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("api: reflection v1alpha")?;

    // Each service's decoding limit is the one `limits` reports a message over.
    let max = limits.api;
    let router = builder
        .add_service(
            TrafficRulesServiceServer::new(traffic_rules::TrafficRules(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            SessionsServiceServer::new(sessions::Sessions(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            EdgeServicesServiceServer::new(services::EdgeServices(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            TelemetryServiceServer::new(telemetry::Telemetry(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            StatusServiceServer::new(status::Status(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            health_service
                .max_decoding_message_size(SMALL_MESSAGE_BYTES)
                .max_encoding_message_size(SMALL_MESSAGE_BYTES),
        )
        .add_service(
            reflection_v1
                .max_decoding_message_size(SMALL_MESSAGE_BYTES)
                .max_encoding_message_size(max),
        )
        .add_service(
            reflection_v1alpha
                .max_decoding_message_size(SMALL_MESSAGE_BYTES)
                .max_encoding_message_size(max),
        );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // `Server::tcp_nodelay` applies only to listeners tonic binds itself: set it here, or every
    // unary answer waits on Nagle and the client's delayed ACK (≈40 ms a call).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    info!(listen = %local, tls = !config.insecure, "api: serving");
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    });
    let drain = Duration::from_millis(config.drain_ms);
    let control = async move {
        shutdown.await;
        info!(drain_ms = drain.as_millis() as u64, "api: draining");
        // Health turns NOT_SERVING and the API's own streams end; unary calls still work.
        let _ = drain_tx.send(true);
        tokio::time::sleep(drain).await;
        let _ = stop_tx.send(());
        drain_tx
    };
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        drain_tx = control => {
            // Graceful stop: in-flight calls finish; streams the API does not own (health
            // Watch) are cut after a bound.
            let r = match tokio::time::timeout(STOP_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(grace_s = STOP_GRACE.as_secs(), "api: calls still open after the grace period; closing");
                    Ok(())
                }
            };
            drop(drain_tx);
            r
        }
    };
    health_task.abort();
    result.context("api: server")?;
    info!("api: stopped");
    Ok(())
}

/// At most this many concurrent calls per connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest certificate, key or CA bundle file read (PEM).
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// How long a graceful stop may wait for calls still open.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a PEM file (a certificate, a CA, a key) must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemHolds {
    Certificate,
    PrivateKey,
}

/// Checks that `bytes` hold at least one PEM block of the kind wanted, and that every
/// certificate in them parses; the error says what is wrong, for the caller to prefix with
/// the file and the setting that named it (rustls would fail later, naming neither).
pub fn check_pem(bytes: &[u8], holds: PemHolds) -> Result<(), String> {
    let mut found = false;
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| format!("not PEM: {e}"))?;
        match holds {
            PemHolds::Certificate if pem.label == "CERTIFICATE" => {
                pem.parse_x509()
                    .map_err(|e| format!("a certificate that does not parse: {e}"))?;
                found = true;
            }
            PemHolds::PrivateKey if pem.label.ends_with("PRIVATE KEY") => found = true,
            _ => {}
        }
    }
    if !found {
        return Err(match holds {
            PemHolds::Certificate => "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
            PemHolds::PrivateKey => "no PEM private key (BEGIN … PRIVATE KEY) in it".into(),
        });
    }
    Ok(())
}

/// [`check_pem`] of `api.{what}`, read from `path`.
fn check_api_pem(
    what: &str,
    path: Option<&std::path::Path>,
    bytes: &[u8],
    holds: PemHolds,
) -> anyhow::Result<()> {
    check_pem(bytes, holds).map_err(|why| {
        let shown = path.map_or_else(String::new, |p| p.display().to_string());
        anyhow::anyhow!("api.{what} {shown}: {why}")
    })
}

fn tls_config(config: &ApiConfig) -> anyhow::Result<ServerTlsConfig> {
    let read = |what: &str, path: &Option<std::path::PathBuf>| -> anyhow::Result<Vec<u8>> {
        let path = path
            .as_ref()
            .with_context(|| format!("api.{what} is required unless api.insecure = true"))?;
        mecgw_policy::files::read_limited(path, MAX_PEM_BYTES)
            .with_context(|| format!("api.{what}: cannot read {}", path.display()))
    };
    let cert = read("cert", &config.cert)?;
    let key = read("key", &config.key)?;
    let ca = read("client_ca", &config.client_ca)?;
    // tonic parses the PEM only when it serves: check here, naming the file at fault.
    check_api_pem("cert", config.cert.as_deref(), &cert, PemHolds::Certificate)?;
    check_api_pem("key", config.key.as_deref(), &key, PemHolds::PrivateKey)?;
    check_api_pem(
        "client_ca",
        config.client_ca.as_deref(),
        &ca,
        PemHolds::Certificate,
    )?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false)
        .timeout(Duration::from_secs(10)))
}
