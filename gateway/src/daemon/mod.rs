//! `mecgw run`: the gateway daemon.
//!
//! This module owns the daemon's lifecycle: it loads and attaches the XDP programs (or starts
//! the userspace datapath, [`userspace`], with `datapath.kind = "userspace"`), installs
//! the tables, validates the policy, serves the operations port, answers GTP-U echo, reloads
//! on SIGHUP (validate first, then swap; keep the old on failure) and detaches on SIGTERM or
//! SIGINT. [`Gateway`] is the state that the operations port and the APIs share.

mod api_backend;
pub mod config;
mod gtpu;
mod host;
pub mod metrics;
mod notify;
mod ops;
mod privileges;
pub mod userspace;

use std::{
    ffi::CString,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::datapath::{
    AttachMode, Attachment, CompiledTables, Counter, DatapathError, Direction, FastPath, Problems,
    Reason, Tables, Verdict,
    compile::{self, Reserved, compile_with},
    pins::InstancePins,
    tables::overlay::{Overlay, OverlayError},
};
use crate::records::{
    LoadedPolicy,
    egress::{
        Egress, EgressConfig,
        jurisdiction::{PermissionTable, Permissions},
    },
    engine,
    harvest::{FlowHarvest, FlowSource, SessionIdentity},
};
pub use config::{Config, DatapathKind, Overrides};

/// The datapath that judges frames: the XDP programs or the model in userspace.
pub enum Datapath {
    /// Boxed: the loaded object is large, the enum lives once.
    Xdp(Box<FastPath>),
    Userspace(userspace::UserspacePath),
}

impl Datapath {
    /// Puts `tables` in force; on error the old stay.
    pub fn install(&self, tables: &CompiledTables) -> Result<(), DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.install(tables),
            Datapath::Userspace(us) => us.install(tables),
        }
    }

    /// Frames and bytes per verdict.
    pub fn verdict_counters(&self) -> Result<Vec<(Verdict, Counter)>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.verdict_counters(),
            Datapath::Userspace(us) => Ok(us.verdict_counters()),
        }
    }

    /// Frames and bytes per reason.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.reason_counters(),
            Datapath::Userspace(us) => Ok(us.reason_counters()),
        }
    }

    /// The counter of rule `id`.
    pub fn rule_counter(&self, id: u32) -> Result<Option<Counter>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.rule_counter(id),
            Datapath::Userspace(us) => Ok(Some(us.rule_counter(id))),
        }
    }

    /// The counters of the rules `ids` (0 for one not installed), read at once.
    pub fn rule_counters(&self, ids: &[u32]) -> Result<Vec<(u32, Counter)>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.rule_counters(ids),
            Datapath::Userspace(us) => {
                Ok(ids.iter().map(|&id| (id, us.rule_counter(id))).collect())
            }
        }
    }

    /// The counters of the sessions `ids`, summed per direction (uplink, downlink), read at
    /// once.
    pub fn session_totals(&self, ids: &[u32]) -> Result<[Counter; 2], DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.session_totals(ids),
            Datapath::Userspace(us) => {
                let mut totals = [Counter::default(); 2];
                for &id in ids {
                    for dir in [Direction::Uplink, Direction::Downlink] {
                        let i = dir.index() as usize;
                        totals[i] = totals[i].plus(us.session_counter(id, dir));
                    }
                }
                Ok(totals)
            }
        }
    }

    /// The counter of session `id` in `direction`.
    pub fn session_counter(
        &self,
        id: u32,
        direction: Direction,
    ) -> Result<Option<Counter>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.session_counter(id, direction),
            Datapath::Userspace(us) => Ok(Some(us.session_counter(id, direction))),
        }
    }

    /// Per-flow counters since the last harvest; each packet counted is in exactly one
    /// harvest. Empty unless flow accounting is on.
    pub fn harvest_flows(&self) -> Result<Vec<crate::datapath::FlowSample>, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.harvest_flows(),
            Datapath::Userspace(us) => Ok(us.harvest_flows()),
        }
    }

    /// Flow records lost since the start (a full flow map).
    pub fn flow_losses(&self) -> Result<crate::datapath::FlowLosses, DatapathError> {
        match self {
            Datapath::Xdp(fp) => fp.flow_losses(),
            Datapath::Userspace(us) => Ok(us.flow_losses()),
        }
    }

    /// The XDP fast path's next-hop cache watch (`None` for the userspace datapath, which
    /// asks no FIB).
    pub fn fib_watch(&self) -> Option<crate::datapath::fib_watch::FibWatchStatus> {
        match self {
            Datapath::Xdp(fp) => fp.fib_watch(),
            Datapath::Userspace(_) => None,
        }
    }

    /// "xdp" or "userspace".
    pub fn kind(&self) -> DatapathKind {
        match self {
            Datapath::Xdp(_) => DatapathKind::Xdp,
            Datapath::Userspace(_) => DatapathKind::Userspace,
        }
    }
}

/// Counters the daemon keeps itself (the fast path's own are read from its maps).
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// 1 while the newest reload attempt failed (the old tables and policy stay in force).
    pub last_reload_failed: AtomicU64,
    pub gtpu: gtpu::GtpuCounters,
    /// Operations-port connections closed at accept: the connection limit was reached.
    pub ops_connections_refused: AtomicU64,
    /// Idle operations-port connections closed to make room for a new one at the limit.
    pub ops_connections_evicted: AtomicU64,
}

/// Why a change of the tables was not installed. The tables in force stay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TablesChangeError {
    /// The tables changed since the caller read them (e.g. a SIGHUP reload): read again.
    #[error("the tables changed while this change was being made")]
    Conflict,
    /// The new tables are inconsistent.
    #[error("{0}")]
    Invalid(#[from] Problems),
    /// The overlay could not be stored.
    #[error("storing the change failed: {0}")]
    Store(#[from] OverlayError),
    /// The datapath refused the update.
    #[error("installing in the datapath failed: {0}")]
    Install(#[from] DatapathError),
}

/// The owners of the tables in force: the tables file and the operator API's overlay.
struct TableSources {
    /// The tables file's path, as configured.
    file: std::path::PathBuf,
    /// The tables file's own tables, as last loaded (before the overlay).
    file_tables: Arc<Tables>,
    /// What the operator API owns, and where it is kept.
    overlay: Arc<Overlay>,
    overlay_path: std::path::PathBuf,
}

/// Who the overlay belongs to, in messages.
const API_OWNER: &str = "the operator API";

/// What the daemon's tasks share.
pub struct Gateway {
    datapath: Datapath,
    /// Held while the tables in force change (reload, API change), so changes apply in order.
    sources: std::sync::Mutex<TableSources>,
    tables: RwLock<Arc<CompiledTables>>,
    policy: RwLock<Option<Arc<LoadedPolicy>>>,
    n3_ifindex: u32,
    local_ifindex: u32,
    /// Ready: every configured part serves; false again while draining.
    ready: tokio::sync::watch::Sender<bool>,
    draining: AtomicBool,
    pub metrics: DaemonMetrics,
    /// The gRPC API's per-method counters, once the API runs.
    api_metrics: std::sync::OnceLock<Arc<crate::api::ApiMetrics>>,
    /// The policy engine's thread, once it runs (a policy is configured).
    privacy: std::sync::OnceLock<engine::PrivacyHandle>,
    /// Egress (spool, forwarders, audit), once it runs (`[egress]` is configured).
    egress: std::sync::OnceLock<Arc<Egress>>,
    /// What the tables may not use (PFCP's id and TEID range, with `[pfcp]`).
    reserved: Reserved,
    /// The PFCP endpoint's counters and its sessions' identities, once it runs.
    pfcp: std::sync::OnceLock<PfcpParts>,
}

/// What the rest of the daemon sees of the PFCP endpoint.
struct PfcpParts {
    metrics: Arc<crate::pfcp::PfcpMetrics>,
    identities: crate::pfcp::sessions::Identities,
    teid_min: u32,
}

impl Gateway {
    /// The tables in force.
    pub fn tables(&self) -> Arc<CompiledTables> {
        match self.tables.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// What the operator API owns now.
    pub fn api_overlay(&self) -> Arc<Overlay> {
        Arc::clone(&self.lock_sources().overlay)
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, TableSources> {
        match self.sources.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes `next` what the operator API owns, if that is still `base` (pointer-equal):
    /// merges it with the tables file's entries in force, compiles, stores it under the
    /// state directory (so it survives SIGHUP and restarts) and installs the result. From
    /// the moment this returns the datapath judges every packet by the new tables, none by a
    /// mixture. On error nothing changes (the stored overlay is put back if the datapath
    /// refuses).
    pub fn replace_api_overlay(
        &self,
        base: &Arc<Overlay>,
        next: Overlay,
    ) -> Result<Arc<CompiledTables>, TablesChangeError> {
        let mut sources = self.lock_sources();
        if !Arc::ptr_eq(base, &sources.overlay) {
            return Err(TablesChangeError::Conflict);
        }
        let merged = next
            .apply(Tables::clone(&sources.file_tables), API_OWNER)
            .map_err(|p| TablesChangeError::Invalid(Problems(p)))?;
        let compiled = compile_with(merged, self.reserved)?;
        next.store(&sources.overlay_path)?;
        if let Err(e) = self.install(compiled) {
            if let Err(undo) = sources.overlay.store(&sources.overlay_path) {
                error!(error = %undo, "could not put the previous API overlay back after a failed install; the stored one may be ahead of the tables in force until the next change");
            }
            return Err(e);
        }
        sources.overlay = Arc::new(next);
        Ok(self.tables())
    }

    /// Installs `compiled` (on this host's interfaces) in the datapath, then makes it the
    /// tables in force. The caller holds `sources`.
    fn install(&self, compiled: CompiledTables) -> Result<(), TablesChangeError> {
        let compiled = compiled.on_interfaces(self.n3_ifindex, self.local_ifindex);
        let mut current = match self.tables.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.datapath.install(&compiled)?;
        *current = Arc::new(compiled);
        Ok(())
    }

    /// The datapath in use, XDP or userspace (counters).
    pub fn fast_path(&self) -> &Datapath {
        &self.datapath
    }

    /// The policy in force, if one is configured.
    pub fn policy(&self) -> Option<Arc<LoadedPolicy>> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_policy(&self, policy: Option<Arc<LoadedPolicy>>) {
        let mut slot = match self.policy.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = policy;
    }

    /// Ready: every configured part serves, not draining.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Readiness as it changes.
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The gRPC API's counters, if the API runs.
    pub fn api_metrics(&self) -> Option<&Arc<crate::api::ApiMetrics>> {
        self.api_metrics.get()
    }

    /// The policy engine, if it runs.
    pub fn privacy(&self) -> Option<&engine::PrivacyHandle> {
        self.privacy.get()
    }

    /// Egress, if it runs.
    pub fn egress(&self) -> Option<&Arc<Egress>> {
        self.egress.get()
    }

    /// The PFCP endpoint's counters, if it runs.
    pub fn pfcp_metrics(&self) -> Option<&Arc<crate::pfcp::PfcpMetrics>> {
        self.pfcp.get().map(|p| &p.metrics)
    }

    /// The XDP fast path (PFCP needs its maps).
    fn xdp(&self) -> Result<&FastPath, DatapathError> {
        match &self.datapath {
            Datapath::Xdp(fp) => Ok(fp),
            Datapath::Userspace(_) => Err(DatapathError::BadArgument(
                "PFCP sessions need the XDP datapath".into(),
            )),
        }
    }

    /// The datapath's name (`xdp` or `userspace`), for the status page.
    pub fn datapath_kind_name(&self) -> &'static str {
        self.datapath.kind().name()
    }

    /// Draining: shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

impl FlowSource for Gateway {
    fn harvest(&self) -> Result<Vec<crate::datapath::FlowSample>, DatapathError> {
        self.datapath.harvest_flows()
    }

    fn identities(&self, ids: &[u32]) -> std::collections::HashMap<u32, SessionIdentity> {
        let tables = self.tables();
        let wanted: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let mut found: std::collections::HashMap<u32, SessionIdentity> = tables
            .sessions
            .iter()
            .filter(|s| wanted.contains(&s.id))
            .map(|s| {
                let identity = SessionIdentity {
                    imsi: s.imsi.as_ref().map(|i| i.as_str().to_string()),
                    msisdn: None,
                    imei: None,
                    teid: s.uplink_teid.0,
                    qfi: s.qfi.get(),
                };
                (s.id, identity)
            })
            .collect();
        // PFCP sessions' ids are from pfcp.teid_min up (the tables' are below it).
        if let Some(p) = self.pfcp.get() {
            let pfcp = match p.identities.read() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            for id in ids.iter().filter(|id| **id >= p.teid_min) {
                if let Some(identity) = pfcp.get(id) {
                    found.insert(*id, identity.clone());
                }
            }
        }
        found
    }
}

/// The PFCP endpoint programs the fast path's PFCP maps (XDP only: `[pfcp]` is refused with
/// the userspace datapath at start).
impl crate::pfcp::sessions::Datapath for Gateway {
    fn put_tunnel(&self, teid: u32, t: &mecgw_ebpf::PfcpTunnel) -> Result<(), DatapathError> {
        self.xdp()?.put_pfcp_tunnel(teid, t)
    }
    fn remove_tunnel(&self, teid: u32) -> Result<(), DatapathError> {
        self.xdp()?.remove_pfcp_tunnel(teid)
    }
    fn put_downlink(
        &self,
        ue: crate::pfcp::rules::UeKey,
        d: &mecgw_ebpf::PfcpDownlink,
    ) -> Result<(), DatapathError> {
        crate::pfcp::sessions::Datapath::put_downlink(self.xdp()?, ue, d)
    }
    fn remove_downlink(&self, ue: crate::pfcp::rules::UeKey) -> Result<(), DatapathError> {
        crate::pfcp::sessions::Datapath::remove_downlink(self.xdp()?, ue)
    }
    fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError> {
        self.xdp()?.pdr_counter(slot)
    }
    fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError> {
        self.xdp()?.zero_pdr_counter(slot)
    }
    fn zero_session_counter(&self, slot: u32) -> Result<(), DatapathError> {
        self.xdp()?.zero_pfcp_session_counter(slot)
    }
    fn grace_period(&self) {
        if let Ok(fp) = self.xdp() {
            fp.grace_period();
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // systemd (Type=notify): READY=1 once everything serves, STOPPING=1 when draining, and
    // the watchdog kept alive from the start (loading a large table set takes a while).
    let notifier = Arc::new(notify::Notifier::from_env());
    let watchdog = notifier.watchdog_interval().map(|every| {
        let notifier = Arc::clone(&notifier);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.watchdog();
            }
        })
    });
    let n3_ifindex = ifindex(&config.interfaces.n3).context("interfaces.n3")?;
    let local_ifindex = ifindex(&config.interfaces.local).context("interfaces.local")?;
    std::fs::create_dir_all(&config.state.dir)
        .with_context(|| format!("state.dir {}", config.state.dir.display()))?;
    let overlay_path = config.state.dir.join(API_OVERLAY_FILE);
    let overlay = Overlay::load(&overlay_path)
        .context("reading what was created through the operator API")?;
    let reserved = Reserved {
        pfcp_from: config.pfcp.as_ref().map(|p| p.teid_min),
    };
    if config.pfcp.is_some() && config.datapath.kind == DatapathKind::Userspace {
        anyhow::bail!(
            "[pfcp] needs datapath.kind = \"xdp\": the userspace datapath has no PFCP \
             sessions (remove [pfcp], or run the XDP datapath)"
        );
    }
    let (file_tables, tables) = load_tables(&config.datapath.tables, &overlay, reserved)?;
    let tables = tables.on_interfaces(n3_ifindex, local_ifindex);
    // Every port is bound and the API's certificates are loaded before anything is attached:
    // a port in use or a bad certificate stops the start, instead of a daemon that says it is
    // ready and does not serve.
    let ops_listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .with_context(|| format!("metrics.listen {}: cannot listen", config.metrics.listen))?;
    let gtpu_socket = if config.gtpu.enabled {
        Some(
            tokio::net::UdpSocket::bind(config.gtpu.listen)
                .await
                .with_context(|| format!("gtpu.listen {}: cannot bind", config.gtpu.listen))?,
        )
    } else {
        None
    };
    let api_listener = match &config.api {
        Some(api_config) => Some(crate::api::prepare(api_config).await?),
        None => None,
    };
    let policy = match &config.policy {
        Some(p) => {
            let loaded = load_policy(&p.file)?;
            check_destinations(&loaded, config.egress.as_ref())?;
            Some(Arc::new(loaded))
        }
        None => {
            warn!("no policy configured: no regulated data will be released");
            None
        }
    };
    // Egress checks its values and opens its spool and audit log before anything is attached.
    let egress = match &config.egress {
        Some(egress_config) => {
            let table = policy
                .as_ref()
                .map(|p| PermissionTable::from_policy(&p.policy))
                .unwrap_or_default();
            let permissions = Arc::new(Permissions::new(Arc::new(table)));
            Some(Arc::new(
                Egress::open(egress_config.clone(), permissions).context("[egress]")?,
            ))
        }
        None => None,
    };
    // The policy engine's keys and ledger (a refused or vanished ledger, an unsafe key), the
    // GTP-U restart counter and the PFCP socket are checked, read and bound before anything
    // is attached too.
    let engine_settings = match &config.policy {
        Some(pc) => Some(engine::Settings {
            keys_dir: keys_dir(pc),
            ledger_dir: config.state.dir.join("budget"),
            state_dir: Some(config.state.dir.clone()),
            window_grace_secs: pc.window_grace_secs,
        }),
        None => None,
    };
    let prepared_engine = match (&policy, &engine_settings) {
        (Some(p), Some(settings)) => {
            Some(engine::PrivacyPlane::prepare(p, settings).context("starting the policy engine")?)
        }
        _ => None,
    };
    let gtpu_restart = match &gtpu_socket {
        Some(_) => Some(gtpu::next_restart_counter(&config.state.dir)?),
        None => None,
    };
    host::warn_problems(
        &tables,
        config.pfcp.is_some(),
        &config.interfaces.n3,
        &config.interfaces.local,
    );
    let pfcp_bound = match &config.pfcp {
        Some(p) => Some(crate::pfcp::server::PfcpEndpoint::bind(
            p.clone(),
            pfcp_store_options(p, &tables),
        )?),
        None => None,
    };
    // Flows are counted only for a policy that takes `flow` records: counting costs a map
    // update per packet (docs/fastpath.md), and in XDP the choice is made at load.
    let flow_accounting = config.flows.enabled
        && policy
            .as_ref()
            .is_some_and(|p| p.policy.kinds.contains_key(FLOW_KIND));
    if config.flows.enabled && !flow_accounting {
        info!("flow accounting off: the policy declares no `flow` record kind");
    }
    privileges::check(config.datapath.kind)?;
    let mut pins = None;
    let datapath = match config.datapath.kind {
        DatapathKind::Xdp => {
            // Load and fill a complete fast path first; only then does it take the
            // interfaces over, from nothing or from a previous instance (pins.rs).
            let mut instance = InstancePins::create(&config.xdp.pin_dir)
                .context("[xdp] pin_dir: the fast path's pins")?;
            let mut fast_path = FastPath::load_pinned(
                crate::datapath::FastPathOptions {
                    flow_accounting,
                    max_flows: config.flows.max_flows,
                    pfcp: config.pfcp.as_ref().map(pfcp_map_sizes),
                    // Nothing in the daemon asks for a frame's whole decision (the counters
                    // carry it): no store per packet for it.
                    record_decisions: false,
                    ..crate::datapath::FastPathOptions::default()
                },
                instance.instance(),
            )?;
            fast_path
                .install(&tables)
                .context("installing the tables into the fast path")?;
            for (direction, iface, index) in [
                (Direction::Uplink, &config.interfaces.n3, n3_ifindex),
                (Direction::Downlink, &config.interfaces.local, local_ifindex),
            ] {
                let attachment =
                    attach(&mut fast_path, &config, direction, iface, index, &instance)?;
                instance.record(iface, attachment);
            }
            let previous = instance
                .started()
                .context("listing the previous instances' pins")?;
            for dir in &previous {
                adopt_flows(&fast_path, dir);
                adopt_counters(&fast_path, dir);
            }
            let released = instance
                .remove_previous()
                .context("removing the previous instances' pins")?;
            if released > 0 {
                info!(
                    released,
                    "the previous fast path's programs and maps are released"
                );
            }
            pins = Some(instance);
            Datapath::Xdp(Box::new(fast_path))
        }
        DatapathKind::Userspace => Datapath::Userspace(
            userspace::UserspacePath::start(
                &config.interfaces.n3,
                &config.interfaces.local,
                &tables,
            )
            .context("starting the userspace datapath")?,
        ),
    };
    if let Datapath::Userspace(us) = &datapath {
        us.set_flow_accounting(flow_accounting, config.flows.max_flows);
    }
    let gw = Arc::new(Gateway {
        datapath,
        sources: std::sync::Mutex::new(TableSources {
            file: config.datapath.tables.clone(),
            file_tables: Arc::new(file_tables),
            overlay: Arc::new(overlay),
            overlay_path,
        }),
        tables: RwLock::new(Arc::new(tables)),
        policy: RwLock::new(None),
        n3_ifindex,
        local_ifindex,
        ready: tokio::sync::watch::channel(false).0,
        draining: AtomicBool::new(false),
        metrics: DaemonMetrics::default(),
        api_metrics: std::sync::OnceLock::new(),
        privacy: std::sync::OnceLock::new(),
        egress: std::sync::OnceLock::new(),
        reserved,
        pfcp: std::sync::OnceLock::new(),
    });
    if let Some(p) = &policy {
        info!(hash = %p.hash, "policy loaded");
    }
    gw.set_policy(policy.clone());
    return_freed_memory();

    // The privacy plane: egress first (the engine spools into it), then the engine.
    let forwarders = match (&config.egress, egress) {
        (Some(egress_config), Some(egress)) => {
            let forwarders = egress.start().context("starting the egress forwarders")?;
            info!(
                destinations = egress_config.destinations.len(),
                spool = %egress_config.spool_dir.display(),
                "egress started"
            );
            let _ = gw.egress.set(egress);
            Some(forwarders)
        }
        _ => None,
    };
    let (ingest_tx, ingest_rx) = tokio::sync::mpsc::channel(INGEST_QUEUE);
    let (releases_tx, _) = tokio::sync::broadcast::channel(RELEASE_BROADCAST);
    let privacy_plane = match (&policy, engine_settings, prepared_engine) {
        (Some(p), Some(settings), Some(prepared)) => {
            let plane = engine::PrivacyPlane::start_prepared(
                prepared,
                Arc::clone(p),
                settings,
                engine::Wiring {
                    ingest: ingest_rx,
                    releases: releases_tx.clone(),
                    egress: gw.egress().cloned(),
                    flows: flow_accounting.then(|| {
                        (
                            Arc::clone(&gw) as Arc<dyn FlowSource>,
                            FlowHarvest::new(config.flows.interval_secs, engine::now_unix()),
                        )
                    }),
                },
            )
            .context("starting the policy engine")?;
            let _ = gw.privacy.set(plane.handle());
            Some(plane)
        }
        // No policy: nothing consumes published records, and Publish says so.
        _ => {
            drop(ingest_rx);
            None
        }
    };
    let t = gw.tables();
    info!(
        sessions = t.sessions.len(),
        rules = t.rules.len(),
        "tables installed"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ops = tokio::spawn(ops::serve(Arc::clone(&gw), ops_listener, stop_rx.clone()));
    let gtpu = match (gtpu_socket, gtpu_restart) {
        (Some(socket), Some(restart)) => Some(tokio::spawn(gtpu::serve(
            Arc::clone(&gw),
            socket,
            restart,
            stop_rx.clone(),
        ))),
        _ => None,
    };
    let api = match (&config.api, api_listener) {
        (Some(api_config), Some(listener)) => Some(spawn_api(
            &gw,
            api_config,
            listener,
            ingest_tx,
            releases_tx,
            stop_rx.clone(),
        )),
        _ => None,
    };
    let pfcp = match (&config.pfcp, pfcp_bound) {
        (Some(p), Some(bound)) => Some(start_pfcp(&gw, p, bound)?),
        _ => None,
    };
    give_up_capabilities(config.datapath.kind);
    gw.ready.send_replace(true);
    notifier.ready();
    info!(
        datapath = gw.datapath.kind().name(),
        n3 = %config.interfaces.n3,
        local = %config.interfaces.local,
        metrics = %config.metrics.listen,
        "mecgw is ready"
    );

    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Reloads run on a blocking thread, one at a time: a SIGTERM is heard while a large
    // file is validated. SIGHUPs that arrive meanwhile make one more reload when it ends.
    let config = Arc::new(config);
    let mut reloading: Option<tokio::task::JoinHandle<()>> = None;
    let mut hup_pending = false;
    loop {
        let reload_done = async {
            match reloading.as_mut() {
                Some(h) => {
                    let _ = h.await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = hup.recv() => {
                if reloading.is_some() {
                    hup_pending = true;
                } else {
                    reloading = Some(spawn_reload(&gw, &config));
                }
            }
            () = reload_done => {
                reloading = None;
                if std::mem::take(&mut hup_pending) {
                    reloading = Some(spawn_reload(&gw, &config));
                }
            }
            _ = term.recv() => { info!("SIGTERM: draining"); break }
            _ = int.recv() => { info!("SIGINT: draining"); break }
        }
    }
    if reloading.is_some() {
        // Not waited for: a stop must not wait on a large file. The files are read again at
        // the next start; the programs detach when the process exits.
        info!("SIGTERM during a reload: the reload is abandoned");
    }
    gw.draining.store(true, Ordering::SeqCst);
    gw.ready.send_replace(false);
    notifier.stopping();
    // The SMFs first: deletions under way are answered, nothing new is accepted.
    if let Some(endpoint) = pfcp
        && let Err(e) = tokio::task::spawn_blocking(move || endpoint.stop()).await
    {
        warn!(error = %e, "the PFCP endpoint's shutdown task failed");
    }
    let _ = stop_tx.send(true);
    if let Err(e) = ops.await {
        warn!(error = %e, "operations port task ended abnormally");
    }
    if let Some(a) = api {
        match a.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "the gRPC API ended with an error"),
            Err(e) => warn!(error = %e, "the gRPC API task ended abnormally"),
        }
    }
    if let Some(g) = gtpu
        && let Err(e) = g.await
    {
        warn!(error = %e, "GTP-U task ended abnormally");
    }
    // The API has stopped, so no record arrives any more: the engine closes its windows
    // and spools what they release; then the forwarders send what they can and stop.
    if let Some(plane) = privacy_plane
        && let Err(e) = tokio::task::spawn_blocking(move || plane.stop()).await
    {
        warn!(error = %e, "the policy engine's shutdown task failed");
    }
    if let Some(f) = forwarders
        && let Err(e) = f.shutdown().await
    {
        warn!(error = %e, "an egress forwarder ended with an error");
    }
    // Dropping the last reference closes the XDP links: the programs detach (or stops the
    // userspace datapath and removes its rules, routes and TUN).
    if let Some(pins) = pins {
        let keep = config.xdp.keep_datapath;
        match pins.release(keep) {
            Ok(()) if keep => info!(
                "keep_datapath: the XDP programs stay on the interfaces with the tables in force; \
                 the next `mecgw run` adopts them (`mecgw datapath detach` removes them)"
            ),
            Ok(()) => {}
            Err(e) => warn!(error = %e, "could not remove the fast path's pins"),
        }
    }
    match Arc::try_unwrap(gw) {
        Ok(gw) => drop(gw),
        Err(_) => warn!("gateway state still referenced at shutdown; the kernel detaches at exit"),
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    info!("datapath stopped; mecgw stopped");
    Ok(())
}

/// Once the XDP programs are attached and every part serves, nothing the daemon still does
/// needs a capability (maps are written through descriptors it holds; the programs detach
/// when their links close): a non-root daemon gives up all of them, in every thread. Root
/// keeps them (without capabilities it would still own the system's files, so run as a
/// system user instead), as does the userspace datapath, which removes its ip rules and TUN
/// at stop. A failure is logged, not fatal: the daemon serves as it would have without.
fn give_up_capabilities(kind: DatapathKind) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root || kind != DatapathKind::Xdp {
        return;
    }
    match privileges::drop_all() {
        Ok(()) => info!("capabilities given up: the XDP programs are attached"),
        Err(e) => warn!(error = %e, "could not give up every capability; running with them"),
    }
}

/// The record kind the daemon makes from the fast path's flow counters.
pub const FLOW_KIND: &str = "flow";

/// Records an app may have queued for the policy engine before Publish waits.
const INGEST_QUEUE: usize = 8192;
/// Released cells kept for slow local subscribers (they are told how many they missed).
const RELEASE_BROADCAST: usize = 1024;

/// Starts the gRPC local APIs (mTLS unless `insecure`) on `gw`; they stop when `stop` turns
/// true. Publish feeds `ingest` (the policy engine's queue; closed when no policy runs, and
/// then Publish answers UNAVAILABLE), Subscribe follows `releases`.
fn spawn_api(
    gw: &Arc<Gateway>,
    config: &crate::api::ApiConfig,
    listener: tokio::net::TcpListener,
    ingest_tx: tokio::sync::mpsc::Sender<crate::api::PublishedRecord>,
    releases_tx: tokio::sync::broadcast::Sender<Arc<crate::api::ReleasedOutput>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    if config.insecure {
        warn!(listen = %config.listen, "the gRPC API is served in PLAINTEXT (insecure): no mTLS, no app identity from certificates");
    }
    let api = Arc::new(api_backend::GatewayApi::new(
        Arc::clone(gw),
        ingest_tx,
        releases_tx,
    ));
    let _ = gw.api_metrics.set(api.metrics());
    let config = config.clone();
    info!(listen = %config.listen, "serving the gRPC local APIs");
    tokio::spawn(async move {
        crate::api::serve_on(api, &config, listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    })
}

fn spawn_reload(gw: &Arc<Gateway>, config: &Arc<Config>) -> tokio::task::JoinHandle<()> {
    let (gw, config) = (Arc::clone(gw), Arc::clone(config));
    tokio::task::spawn_blocking(move || reload(&gw, &config))
}

/// SIGHUP: validate the tables and policy files again; swap only what is valid.
fn reload(gw: &Gateway, config: &Config) {
    info!("SIGHUP: reloading tables and policy");
    // Held from reading to installing: an API change in between would be lost.
    let mut sources = gw.lock_sources();
    let tables = load_tables(&sources.file, &sources.overlay, gw.reserved);
    let policy = match &config.policy {
        Some(p) => load_policy(&p.file)
            .and_then(|loaded| {
                check_destinations(&loaded, config.egress.as_ref())?;
                // The ledger is not checked here: a reload that changes the policy rebuilds
                // the engine, which refuses a damaged or vanished ledger and stops releasing
                // until it is reset, so the operator's `mecgw budget reset` can take its lock.
                engine::check_engine(&loaded, &keys_dir(p))?;
                Ok(loaded)
            })
            .map(|l| Some(Arc::new(l))),
        None => Ok(None),
    };
    let outcome = match (tables, policy) {
        (Ok((own, t)), Ok(p)) => {
            // Checked on what is about to be in force, said once it is.
            let host = host::problems(
                &t,
                config.pfcp.is_some(),
                &config.interfaces.n3,
                &config.interfaces.local,
                &host::proc_sys,
            );
            gw.install(t)
                .map(|()| {
                    for problem in host {
                        warn!("{problem}");
                    }
                    sources.file_tables = Arc::new(own);
                    if let Some(p) = &p {
                        // Egress checks batches already queued against the new permissions at
                        // send time; the engine switches after releasing the old one's windows.
                        if let Some(egress) = gw.egress() {
                            egress
                                .permissions()
                                .replace(Arc::new(PermissionTable::from_policy(&p.policy)));
                        }
                        if let Some(plane) = gw.privacy() {
                            plane.reload(Arc::clone(p));
                        }
                    }
                    gw.set_policy(p);
                })
                .map_err(anyhow::Error::from)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    drop(sources);
    match outcome {
        Ok(()) => {
            gw.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            gw.metrics.last_reload_failed.store(0, Ordering::Relaxed);
            let t = gw.tables();
            info!(
                sessions = t.sessions.len(),
                rules = t.rules.len(),
                policy = gw.policy().map(|p| p.hash.clone()).unwrap_or_default(),
                "reload applied"
            );
        }
        Err(e) => {
            gw.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
            gw.metrics.last_reload_failed.store(1, Ordering::Relaxed);
            error!(error = %format!("{e:#}"), "reload rejected; the previous tables and policy stay in force");
        }
    }
    return_freed_memory();
}

/// Hands the heap memory that loading tables (and a policy) freed back to the kernel.
/// Parsing allocates several times what the result keeps, and glibc keeps freed memory
/// resident for reuse: without this, `mecgw run` would hold tens of MiB it no longer uses
/// after a load of 100,000 sessions, and more after each SIGHUP reload.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases free memory; glibc locks each
    // arena while trimming it, so other threads may allocate meanwhile.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The tables file at `path` (its own tables) and, compiled, with `overlay` applied.
fn load_tables(
    path: &Path,
    overlay: &Overlay,
    reserved: Reserved,
) -> anyhow::Result<(Tables, CompiledTables)> {
    compile::load_with(path, overlay, API_OWNER, reserved).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The PFCP maps' sizes for `p`: tunnels and UE entries in proportion to its sessions.
fn pfcp_map_sizes(p: &crate::pfcp::PfcpConfig) -> crate::datapath::pfcp_maps::PfcpOptions {
    let scale = |max: u32| {
        let v =
            u64::from(max) * u64::from(p.max_sessions) / u64::from(mecgw_ebpf::MAX_PFCP_SESSIONS);
        (v as u32).max(16)
    };
    crate::datapath::pfcp_maps::PfcpOptions {
        sessions: p.max_sessions,
        tunnels: scale(mecgw_ebpf::MAX_PFCP_TUNNELS),
        ues: scale(mecgw_ebpf::MAX_PFCP_UES),
        pdrs: p.max_pdrs,
        teid_min: p.teid_min,
    }
}

/// The PFCP session store's options; N3's addresses are the tables'.
fn pfcp_store_options(
    config: &crate::pfcp::PfcpConfig,
    tables: &CompiledTables,
) -> crate::pfcp::sessions::StoreOptions {
    crate::pfcp::sessions::StoreOptions {
        teid_min: config.teid_min,
        max_sessions: config.max_sessions,
        max_pdrs: config.max_pdrs,
        n3_v4: tables.n3.ipv4,
        n3_v6: tables.n3.ipv6,
    }
}

/// Starts the PFCP endpoint, bound before anything was attached, on `gw`'s fast path.
fn start_pfcp(
    gw: &Arc<Gateway>,
    config: &crate::pfcp::PfcpConfig,
    bound: crate::pfcp::server::BoundPfcp,
) -> anyhow::Result<crate::pfcp::server::PfcpEndpoint> {
    let metrics = Arc::new(crate::pfcp::PfcpMetrics::default());
    let identities = crate::pfcp::sessions::Identities::default();
    let endpoint = bound.serve(
        Arc::clone(gw) as Arc<dyn crate::pfcp::sessions::Datapath>,
        Arc::clone(&identities),
        Arc::clone(&metrics),
    )?;
    let _ = gw.pfcp.set(PfcpParts {
        metrics,
        identities,
        teid_min: config.teid_min,
    });
    Ok(endpoint)
}

/// Where the operator API's overlay is kept, under the state directory.
pub const API_OVERLAY_FILE: &str = "api/tables.json";

fn load_policy(path: &Path) -> anyhow::Result<LoadedPolicy> {
    let shown = path.display().to_string();
    let src = mecgw_policy::yaml::read_source(path)
        .with_context(|| format!("reading the policy file {shown}"))?;
    match mecgw_policy::compile(&src) {
        Ok(policy) => Ok(LoadedPolicy {
            policy,
            hash: mecgw_policy::engine::policy_hash(&src),
            source: src,
        }),
        Err(diags) => {
            let all: Vec<String> = diags.0.iter().map(|d| d.render(&shown)).collect();
            anyhow::bail!("{}", all.join("\n"))
        }
    }
}

/// The directory the policy's key paths are relative to.
fn keys_dir(p: &config::Policy) -> std::path::PathBuf {
    match &p.keys {
        Some(dir) => dir.clone(),
        None => match p.file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        },
    }
}

/// Every destination the policy sends to must have a sink in `[egress]`; a sink in another
/// region than the policy permits is allowed (egress refuses and audits everything for it)
/// but warned about.
fn check_destinations(policy: &LoadedPolicy, egress: Option<&EgressConfig>) -> anyhow::Result<()> {
    for (name, d) in &policy.policy.destinations {
        let configured = egress.and_then(|e| e.destinations.iter().find(|c| &c.name == name));
        match configured {
            None => anyhow::bail!(
                "the policy sends to destination {name:?} (region {}), but [egress] has no \
                 destination of that name: add an [[egress.destinations]] entry with \
                 name = {name:?}, its region and a sink",
                d.region
            ),
            Some(c) if c.region != d.region => warn!(
                destination = %name,
                configured = %c.region,
                permitted = %d.region,
                "this destination's sink is in a region the policy does not permit: everything for it will be refused and audited"
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Takes over the flows a previous instance's programs counted after its last harvest (they
/// come with this daemon's first harvest), or says that they are dropped.
fn adopt_flows(fast_path: &FastPath, previous: &std::path::Path) {
    if !fast_path.flow_accounting() {
        info!(
            instance = %previous.display(),
            "flow accounting is off: flows the previous instance counted since its last harvest are not reported"
        );
        return;
    }
    match fast_path.adopt_flows(previous) {
        Ok(a) => info!(
            instance = %previous.display(),
            flows = a.flows,
            unreadable_flows = a.unreadable_flows,
            unreadable_maps = a.unreadable_maps,
            "flows counted by the previous instance adopted: they come with the next harvest"
        ),
        Err(e) => warn!(
            instance = %previous.display(),
            error = %e,
            "could not adopt the previous instance's flows; they are lost"
        ),
    }
}

/// Carries the previous instance's fast-path counters (verdicts, reasons, and the rules and
/// sessions these tables also have) into this daemon's, or says that they start over.
fn adopt_counters(fast_path: &FastPath, previous: &std::path::Path) {
    match fast_path.adopt_counters(previous) {
        Ok(Some(a)) => info!(
            instance = %previous.display(),
            packets = a.packets,
            rules = a.rules,
            session_directions = a.sessions,
            dropped = a.dropped,
            "the previous instance's counters carried over"
        ),
        Ok(None) => info!(
            instance = %previous.display(),
            "the previous instance (an older build) pinned no counters: the fast path's counters start from zero"
        ),
        Err(e) => warn!(
            instance = %previous.display(),
            error = %e,
            "could not carry the previous instance's counters over; they start from zero"
        ),
    }
}

/// Puts `direction`'s program on `iface` through its pinned link (see
/// [`FastPath::attach_pinned`]), falling back to generic mode if so configured.
fn attach(
    fast_path: &mut FastPath,
    config: &Config,
    direction: Direction,
    iface: &str,
    ifindex: u32,
    instance: &InstancePins,
) -> anyhow::Result<Attachment> {
    let mode = config.xdp.mode;
    let pins = instance.dir();
    let attached = match fast_path.attach_pinned(direction, iface, ifindex, mode, pins) {
        Err(e) if mode == AttachMode::Native && config.xdp.fallback_to_generic => {
            warn!(%iface, error = %e, "native XDP attach failed; falling back to generic mode");
            let a = fast_path
                .attach_pinned(direction, iface, ifindex, AttachMode::Generic, pins)
                .with_context(|| format!("attaching to {iface} in generic mode"))?;
            (a, AttachMode::Generic)
        }
        other => (
            other.with_context(|| format!("attaching to {iface}"))?,
            mode,
        ),
    };
    match attached {
        (Attachment::Attached, mode) => {
            info!(%iface, ?direction, mode = mode.name(), "XDP program attached")
        }
        (Attachment::Replaced { previous_program }, _) => info!(
            %iface,
            ?direction,
            previous_program,
            "XDP program replaced in the pinned link (no gap; the link keeps its mode)"
        ),
    }
    Ok(attached.0)
}

/// The index of interface `name`.
fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name).with_context(|| format!("interface name {name:?}"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        anyhow::bail!(
            "no interface named {name:?} in this network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(index)
}
