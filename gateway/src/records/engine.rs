//! The privacy plane inside `mecgw run`: regulated records in, only what the policy allows out.
//!
//! One direction of flow: records arrive from apps (`Publish`, through the API's bounded
//! ingest queue) and from the fast path (`flow` records, [`super::harvest`]); the policy
//! [`Engine`] transforms and aggregates them; what it emits for a destination is durably
//! spooled by [`Egress::enqueue`] (which checks the jurisdiction) and released cells are also
//! broadcast to local `Subscribe` streams. Nothing else leaves: raw records live only in this
//! thread's stack frames and in the engine's window state.
//!
//! The engine runs on its own thread (it is CPU-bound, and spooling blocks for an fsync).
//! Windows close on the clock, `window_grace_secs` after they end. A reload or a shutdown
//! closes the open windows early and releases them under the policy that collected them
//! (each charged to the budget as usual), so nothing accepted is dropped silently.
//! When the spool is full and configured for backpressure, the thread stops taking records
//! until there is room: the ingest queue fills and `Publish` answers RESOURCE_EXHAUSTED.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mecgw_policy::{
    budget::{self, Ledger},
    engine::{Engine, EngineFailure, KeySource, Output, Stats},
    noise::OsRandom,
};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    LoadedPolicy, PublishedRecord, ReleasedOutput,
    egress::{
        Egress, EnqueueError,
        item::EgressItem,
        state::{Presence, StateMarker, has_content},
    },
    harvest::{FlowHarvest, FlowSource},
};

/// Most records processed before their outputs are spooled: as many as the ingest queue
/// holds, so that when the engine is behind, one commit (one fsync per destination) covers
/// everything that queued up meanwhile (group commit).
const DRAIN_BATCH: usize = 8192;
/// Most items in one spooled batch.
const MAX_BATCH_ITEMS: usize = 512;
/// How often windows are checked against the clock.
const TICK: Duration = Duration::from_secs(1);
/// Pause between attempts to spool while the spool is full.
const BACKPRESSURE_RETRY: Duration = Duration::from_millis(200);
/// How long a shutdown keeps trying to spool the last outputs into a full spool.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

/// Where the privacy plane gets its inputs and puts its outputs.
pub struct Wiring {
    /// Records apps published.
    pub ingest: mpsc::Receiver<PublishedRecord>,
    /// Local subscribers of released cells.
    pub releases: broadcast::Sender<Arc<ReleasedOutput>>,
    /// The egress spool; `None` only if the policy names no destination.
    pub egress: Option<Arc<Egress>>,
    /// The gateway whose fast-path flow counters become `flow` records, and when; `None`:
    /// flow accounting is off.
    pub flows: Option<(Arc<dyn FlowSource>, FlowHarvest)>,
}

/// Settings of the privacy plane.
pub struct Settings {
    /// The policy's key paths are relative to this directory.
    pub keys_dir: PathBuf,
    /// The budget ledger's directory.
    pub ledger_dir: PathBuf,
    /// The state directory whose marker records that the ledger has had state (so a ledger
    /// deleted whole, head and all, is found missing, not started afresh); `None`: no marker.
    pub state_dir: Option<PathBuf>,
    /// Seconds after a window's end before it closes.
    pub window_grace_secs: u64,
}

/// The ledger's name in the state directory's marker.
const LEDGER_COMPONENT: &str = "budget-ledger";

/// What the privacy plane did, for `/metrics` and Status. Counters add up over reloads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrivacySnapshot {
    /// Records taken from apps (`Publish`).
    pub records_in_api: u64,
    /// Flow records made from the fast path's counters.
    pub records_in_flow: u64,
    /// Records the policy transformed.
    pub records_transformed: u64,
    /// Records that could not be used, by reason (never values).
    pub records_bad: BTreeMap<String, u64>,
    /// Transformed records emitted towards a destination (once per destination).
    pub records_released: u64,
    /// Transformed records no destination may receive: they stay on site.
    pub records_on_site: u64,
    /// Released cells (once per destination).
    pub cells_released: u64,
    /// Groups withheld by the cohort floor `k`.
    pub groups_below_k: u64,
    /// Groups withheld by differentially private partition selection.
    pub groups_below_threshold: u64,
    /// Windows by outcome: released, refused (budget), suppressed (state cap), failed.
    pub windows: BTreeMap<&'static str, u64>,
    /// Rows for windows already closed.
    pub rows_late: u64,
    /// Windows open now.
    pub open_windows: u64,
    /// Budget left in the current period.
    pub budget_epsilon_left: f64,
    /// Budget left in the current period.
    pub budget_delta_left: f64,
    /// Outputs egress refused at enqueue (jurisdiction; audited by egress).
    pub outputs_refused: u64,
    /// Outputs waiting for room in a full spool.
    pub outputs_waiting: u64,
    /// Outputs lost because the spool stayed full through a shutdown (logged as errors).
    pub outputs_lost_at_shutdown: u64,
    /// Reloads the plane applied.
    pub policy_reloads: u64,
    /// Flow harvests that failed.
    pub flow_harvest_failures: u64,
}

/// Shared view of the plane's counters.
#[derive(Debug, Default)]
pub struct PrivacyMetrics(Mutex<PrivacySnapshot>);

impl PrivacyMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> PrivacySnapshot {
        match self.0.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, s: PrivacySnapshot) {
        match self.0.lock() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }
}

/// Why records accepted by the engine are not (yet) durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The engine is not running (no policy, or shutting down).
    #[error("the policy engine is not running")]
    Stopped,
    /// The egress spool is full under backpressure; the outputs wait in memory until it
    /// drains (a sink catches up or the operator frees room).
    #[error(
        "the egress spool is full: {waiting} output(s) are held in memory until it drains, \
         not yet durable"
    )]
    SpoolFull { waiting: u64 },
    /// The file system of the spool or the audit log is full; spooling resumes by itself
    /// once there is room (the outputs wait in memory meanwhile).
    #[error("spooling for {destination} failed: {message}")]
    NoSpace {
        destination: String,
        message: String,
    },
    /// Spooling failed for another reason (e.g. an I/O error); it is retried.
    #[error("spooling for {destination} failed: {message}")]
    Spool {
        destination: String,
        message: String,
    },
}

impl FlushError {
    /// How long a publisher should wait before trying again, where that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FlushError::Stopped => None,
            FlushError::SpoolFull { .. }
            | FlushError::NoSpace { .. }
            | FlushError::Spool { .. } => Some(BACKPRESSURE_RETRY),
        }
    }
}

enum Control {
    /// Answer once everything queued before is processed and spooled.
    Flush(oneshot::Sender<Result<(), FlushError>>),
    /// Switch to this (validated) policy.
    Reload(Arc<LoadedPolicy>),
    /// Close every window, spool, and end.
    Stop,
}

/// The handle the daemon and the API keep.
#[derive(Clone)]
pub struct PrivacyHandle {
    control: mpsc::UnboundedSender<Control>,
    metrics: Arc<PrivacyMetrics>,
}

impl PrivacyHandle {
    /// Waits until every record queued before this call is processed and its outputs are
    /// durably spooled. Fails if the spool is full (the outputs are held in memory) or the
    /// plane has stopped.
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Flush(tx))
            .map_err(|_| FlushError::Stopped)?;
        rx.await.map_err(|_| FlushError::Stopped)?
    }

    /// Switches to `policy` (already validated) after closing the old policy's windows.
    pub fn reload(&self, policy: Arc<LoadedPolicy>) {
        if self.control.send(Control::Reload(policy)).is_err() {
            warn!("policy reload not applied: the policy engine is not running");
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<PrivacyMetrics> {
        &self.metrics
    }
}

/// The running plane: its handle and its thread.
pub struct PrivacyPlane {
    handle: PrivacyHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The engine for a policy with its keys loaded and its ledger open (and locked), not running
/// yet: the daemon prepares it before it attaches anything, so that a refused ledger or an
/// unsafe key stops the start first.
pub struct PreparedEngine(Engine);

impl PrivacyPlane {
    /// Starts the engine thread for `policy`. Fails if the keys or the ledger cannot be
    /// loaded. Must be called inside a tokio runtime.
    pub fn start(
        policy: Arc<LoadedPolicy>,
        settings: Settings,
        wiring: Wiring,
    ) -> anyhow::Result<PrivacyPlane> {
        let engine = Self::prepare(&policy, &settings)?;
        Self::start_prepared(engine, policy, settings, wiring)
    }

    /// Loads the keys and opens the ledger for `policy` (see [`PreparedEngine`]).
    pub fn prepare(policy: &LoadedPolicy, settings: &Settings) -> anyhow::Result<PreparedEngine> {
        build_engine(policy, settings).map(PreparedEngine)
    }

    /// Starts the engine thread with `engine`, prepared for `policy` and `settings`. Must be
    /// called inside a tokio runtime.
    pub fn start_prepared(
        engine: PreparedEngine,
        policy: Arc<LoadedPolicy>,
        settings: Settings,
        wiring: Wiring,
    ) -> anyhow::Result<PrivacyPlane> {
        let engine = Some(engine.0);
        let metrics = Arc::new(PrivacyMetrics::default());
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        let mut worker = Worker {
            engine,
            policy,
            settings,
            wiring,
            control: control_rx,
            pending: BTreeMap::new(),
            earlier: Stats::default(),
            snapshot: PrivacySnapshot::default(),
            metrics: Arc::clone(&metrics),
            line: 0,
            deferred_reload: None,
            no_engine: 0,
        };
        worker.publish_metrics();
        let thread = std::thread::Builder::new()
            .name("mecgw-privacy".into())
            .spawn(move || worker.run(&runtime))?;
        Ok(PrivacyPlane {
            handle: PrivacyHandle {
                control: control_tx,
                metrics,
            },
            thread: Some(thread),
        })
    }

    /// A handle for the API and the reload path.
    pub fn handle(&self) -> PrivacyHandle {
        self.handle.clone()
    }

    /// Closes every window, spools what they release and ends the thread. Blocking.
    pub fn stop(mut self) {
        let _ = self.handle.control.send(Control::Stop);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            error!("the policy engine thread panicked");
        }
    }
}

/// The engine for `policy`, with its keys and the durable ledger. A ledger that does not match
/// its hash chain and head is refused (the error names the file and `mecgw budget reset`):
/// at start the daemon then does not start; at a reload no engine runs and nothing is
/// released until the ledger is restored or reset and the daemon reloaded.
fn build_engine(policy: &LoadedPolicy, settings: &Settings) -> anyhow::Result<Engine> {
    let b = &policy.policy.budget;
    let ledger = match &settings.state_dir {
        Some(dir) => open_ledger(dir, &settings.ledger_dir, b)?,
        None => Ledger::open(&settings.ledger_dir, b.epsilon, b.delta, b.period.0)?,
    };
    Ok(Engine::new(
        &policy.policy,
        &policy.source,
        KeySource::Files(&settings.keys_dir),
        ledger,
        Box::new(OsRandom::new()),
    )?)
}

/// Opens the durable ledger in `ledger_dir` for `budget`, as the daemon and `mecgw policy
/// apply --state` both do: refused if the marker of `state_dir` says a ledger existed there
/// and it is now gone (ledger and head deleted together, which the chain alone cannot see),
/// and recorded in the marker once open, so that from then on its vanishing is a finding.
pub fn open_ledger(
    state_dir: &Path,
    ledger_dir: &Path,
    budget: &mecgw_policy::model::Budget,
) -> anyhow::Result<Ledger> {
    let marker = ledger_not_vanished(state_dir, ledger_dir)?;
    let ledger = Ledger::open(ledger_dir, budget.epsilon, budget.delta, budget.period.0)?;
    // The ledger exists now (its head is written with it).
    marker.record(LEDGER_COMPONENT)?;
    Ok(ledger)
}

/// Refuses a ledger the state directory's marker says existed and that is now gone or empty:
/// opening it would start the budget afresh, giving back what was spent.
pub fn ledger_not_vanished(state_dir: &Path, ledger_dir: &Path) -> anyhow::Result<StateMarker> {
    let marker = StateMarker::open(state_dir)?;
    let file = ledger_dir.join(budget::LEDGER_FILE);
    // A ledger that was opened but never spent has an empty log and a head saying "0 entries":
    // it is present. Whether a present log agrees with its head is the chain check's job.
    let present = ledger_dir.join(budget::HEAD_FILE).exists() || has_content(&file)?;
    if marker.presence(LEDGER_COMPONENT, present) == Presence::Vanished {
        anyhow::bail!(
            "the budget ledger {} and its head are missing, but {} says the ledger existed: nothing \
             will be released, since starting afresh would give back the budget already spent. \
             Restore the ledger, or record the loss with `mecgw budget reset --state {} \
             --reason TEXT` (audited)",
            file.display(),
            state_dir.join(super::egress::state::MARKER_FILE).display(),
            ledger_dir.display()
        );
    }
    Ok(marker)
}

/// Checks that the engine for `policy` can start (keys load, mechanisms are in range) without
/// changing anything: what a reload verifies before it swaps anything.
pub fn check_engine(policy: &LoadedPolicy, keys_dir: &Path) -> anyhow::Result<()> {
    let b = &policy.policy.budget;
    Engine::new(
        &policy.policy,
        &policy.source,
        KeySource::Files(keys_dir),
        Ledger::in_memory(b.epsilon, b.delta, b.period.0),
        Box::new(OsRandom::new()),
    )?;
    Ok(())
}

enum Event {
    Control(Option<Control>),
    Record(Option<PublishedRecord>),
    Tick,
}

struct Worker {
    /// `None` only if neither the new nor the old policy's engine could start after a
    /// reload: records are then counted as `no_engine` and nothing is released.
    engine: Option<Engine>,
    policy: Arc<LoadedPolicy>,
    settings: Settings,
    wiring: Wiring,
    control: mpsc::UnboundedReceiver<Control>,
    /// Outputs not yet spooled, per destination, in emission order.
    pending: BTreeMap<String, Vec<EgressItem>>,
    /// The stats of engines replaced by reloads.
    earlier: Stats,
    snapshot: PrivacySnapshot,
    metrics: Arc<PrivacyMetrics>,
    line: u64,
    /// A reload that arrived while the spool was full.
    deferred_reload: Option<Arc<LoadedPolicy>>,
    /// Records that found no engine (see `engine`).
    no_engine: u64,
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Worker {
    fn run(mut self, rt: &tokio::runtime::Handle) {
        info!(policy = %self.policy.hash, "policy engine started");
        let mut ingest_open = true;
        let mut next_tick = Instant::now() + TICK;
        // A control taken from the queue while collecting flushes, handled next.
        let mut held: Option<Control> = None;
        loop {
            // Checked here as well as in the select: under a steady stream of records the
            // biased select would never pick the timer, and windows would never close.
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.tick();
                if self.spool_until_room(rt) {
                    break;
                }
            }
            let deadline = tokio::time::Instant::from_std(next_tick);
            let event = match held.take() {
                Some(c) => Event::Control(Some(c)),
                None => rt.block_on(async {
                    tokio::select! {
                        biased;
                        c = self.control.recv() => Event::Control(c),
                        r = self.wiring.ingest.recv(), if ingest_open => Event::Record(r),
                        () = tokio::time::sleep_until(deadline) => Event::Tick,
                    }
                }),
            };
            match event {
                Event::Control(None | Some(Control::Stop)) => break,
                Event::Control(Some(Control::Flush(ack))) => {
                    // Every flush already waiting is answered by the same commit (group
                    // commit across concurrent Publish calls); the first other control
                    // waits for the next turn, so controls keep their order.
                    let mut acks = vec![ack];
                    while let Ok(c) = self.control.try_recv() {
                        match c {
                            Control::Flush(ack) => acks.push(ack),
                            other => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    // Everything queued before the flushes were requested is in the queue now.
                    let queued = self.wiring.ingest.len();
                    self.drain(queued);
                    let result = self.spool_once();
                    for ack in acks {
                        let _ = ack.send(result.clone());
                    }
                }
                Event::Control(Some(Control::Reload(policy))) => self.reload(policy),
                Event::Record(None) => ingest_open = false,
                Event::Record(Some(r)) => {
                    self.take(r);
                    self.drain(DRAIN_BATCH - 1);
                    if self.spool_until_room(rt) {
                        break;
                    }
                }
                Event::Tick => {
                    next_tick = Instant::now() + TICK;
                    self.tick();
                    if self.spool_until_room(rt) {
                        break;
                    }
                }
            }
            if let Some(p) = self.deferred_reload.take() {
                self.reload(p);
            }
            self.publish_metrics();
        }
        self.shutdown();
    }

    /// Takes up to `n` more queued records without waiting.
    fn drain(&mut self, n: usize) {
        for _ in 0..n {
            match self.wiring.ingest.try_recv() {
                Ok(r) => self.take(r),
                Err(_) => break,
            }
        }
    }

    fn take(&mut self, r: PublishedRecord) {
        self.snapshot.records_in_api += 1;
        self.process_with(|engine, line, emit| {
            engine.process_line_of_kind(line, &r.kind, &r.json, emit)
        });
    }

    /// Runs one record through the engine; its outputs join `pending`.
    fn process(&mut self, record: Value) {
        self.process_with(|engine, line, emit| engine.process_value(line, record, emit));
    }

    /// Runs `f` (one record) on the engine with the record's line number.
    fn process_with(
        &mut self,
        f: impl FnOnce(
            &mut Engine,
            u64,
            &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
        ) -> Result<(), EngineFailure>,
    ) {
        self.line += 1;
        let line = self.line;
        match self.with_engine(|engine, emit| f(engine, line, emit)) {
            None => self.no_engine += 1,
            Some(Err(e)) => {
                error!(error = %e, "the policy engine failed on a record; nothing of it was released")
            }
            Some(Ok(())) => {}
        }
    }

    /// Runs `f` on the engine with an emitter that routes every output ([`collect`]);
    /// `None` if no engine runs.
    fn with_engine(
        &mut self,
        f: impl FnOnce(
            &mut Engine,
            &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
        ) -> Result<(), EngineFailure>,
    ) -> Option<Result<(), EngineFailure>> {
        let Worker {
            engine,
            pending,
            wiring,
            snapshot,
            ..
        } = self;
        let engine = engine.as_mut()?;
        let mut emit = |o: &Output<'_>| collect(o, pending, &wiring.releases, snapshot);
        Some(f(engine, &mut emit))
    }

    /// Closes the windows whose grace has passed, and harvests flows when due.
    fn tick(&mut self) {
        let now = now_unix();
        let harvested = self
            .wiring
            .flows
            .as_mut()
            .and_then(|(source, harvest)| harvest.due(source.as_ref(), now));
        match harvested {
            None => {}
            Some(Ok(window)) => {
                self.snapshot.records_in_flow += window.len() as u64;
                for (n, r) in window.records().enumerate() {
                    self.process(r);
                    // Spooled as the window goes, so that a million flows' outputs do not all
                    // wait in memory; if the spool refuses (full, disk), they wait in
                    // `pending` as before and the caller's `spool_until_room` retries.
                    if (n + 1) % DRAIN_BATCH == 0 {
                        let _ = self.spool_once();
                    }
                }
            }
            Some(Err(e)) => {
                self.snapshot.flow_harvest_failures += 1;
                warn!(error = %format!("{e:#}"), "flow harvest failed; its counters are read at the next harvest");
            }
        }
        let grace = i64::try_from(self.settings.window_grace_secs).unwrap_or(i64::MAX);
        if let Some(Err(e)) = self.with_engine(|engine, emit| engine.close_ended(now, grace, emit))
        {
            error!(error = %e, "closing release windows failed");
        }
    }

    /// Closes every window of the current engine (releasing what they hold).
    fn finish_engine(&mut self) {
        if let Some(Err(e)) = self.with_engine(|engine, emit| engine.finish(emit)) {
            error!(error = %e, "closing release windows failed");
        }
    }

    fn reload(&mut self, policy: Arc<LoadedPolicy>) {
        // The same policy again is a no-op, unless no engine runs (its ledger was refused, say):
        // then the reload is the operator's way to start it again, after `mecgw budget reset`.
        if policy.hash == self.policy.hash && self.engine.is_some() {
            return;
        }
        self.finish_engine();
        // Dropping the old engine closes its ledger file before the new one replays it.
        if let Some(old) = self.engine.take() {
            self.earlier += &old.stats;
        }
        match build_engine(&policy, &self.settings) {
            Ok(engine) => {
                self.engine = Some(engine);
                info!(from = %self.policy.hash, to = %policy.hash, "policy engine switched policies");
                self.policy = policy;
                self.snapshot.policy_reloads += 1;
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot start the new policy's engine; the old policy stays");
                match build_engine(&self.policy, &self.settings) {
                    Ok(engine) => self.engine = Some(engine),
                    Err(e) => error!(
                        error = %format!("{e:#}"),
                        "cannot restart the old policy's engine either; records are counted as no_engine and nothing is released"
                    ),
                }
            }
        }
    }

    /// Spools `pending`; while the spool is full (backpressure), waits and retries, still
    /// answering flushes (with an error). Returns `true` if a Stop arrived meanwhile.
    fn spool_until_room(&mut self, rt: &tokio::runtime::Handle) -> bool {
        while let Err(why) = self.spool_once() {
            self.publish_metrics();
            let wait = rt.block_on(async {
                tokio::select! {
                    c = self.control.recv() => Some(c),
                    () = tokio::time::sleep(BACKPRESSURE_RETRY) => None,
                }
            });
            match wait {
                None => {}
                Some(Some(Control::Flush(ack))) => {
                    // Answered with what keeps the outputs from the spool (full, disk full,
                    // I/O error), so the publisher gets the right reason.
                    let _ = ack.send(Err(why));
                }
                Some(Some(Control::Reload(p))) => {
                    // The egress permissions changed already; the engine switches once
                    // the outputs of the old one are spooled.
                    self.deferred_reload = Some(p);
                }
                Some(None | Some(Control::Stop)) => return true,
            }
        }
        false
    }

    fn waiting(&self) -> u64 {
        self.pending.values().map(|v| v.len() as u64).sum()
    }

    /// One attempt to spool everything pending. `Err` only for a full spool (backpressure)
    /// or a spool failure; refusals are counted (and audited by egress) and dropped.
    fn spool_once(&mut self) -> Result<(), FlushError> {
        let Some(egress) = self.wiring.egress.clone() else {
            self.pending.clear();
            return Ok(());
        };
        let mut result = Ok(());
        for (destination, items) in &mut self.pending {
            while !items.is_empty() {
                // Batches of at most MAX_BATCH_ITEMS, each of one policy (split where the
                // hash changes), all spooled in one commit.
                let mut batches: Vec<&[EgressItem]> = Vec::new();
                let mut rest = &items[..];
                while !rest.is_empty() {
                    let n = rest.len().min(MAX_BATCH_ITEMS);
                    let hash = rest[0].policy_hash();
                    let n = rest[..n]
                        .iter()
                        .position(|i| i.policy_hash() != hash)
                        .unwrap_or(n);
                    let (batch, after) = rest.split_at(n);
                    batches.push(batch);
                    rest = after;
                }
                let (spooled, stopped) = egress.enqueue_many(destination, &batches);
                let done: usize = batches[..spooled.len()].iter().map(|b| b.len()).sum();
                let next = batches.get(spooled.len()).map_or(0, |b| b.len());
                items.drain(..done);
                let Some(e) = stopped else { continue };
                let n = next;
                match e {
                    EnqueueError::Refused(reason) => {
                        self.snapshot.outputs_refused += n as u64;
                        warn!(%destination, %reason, outputs = n, "egress refused a batch (audited)");
                        items.drain(..n);
                    }
                    e if e.is_backpressure() => {
                        result = Err(FlushError::SpoolFull {
                            waiting: items.len() as u64,
                        });
                        break;
                    }
                    e @ EnqueueError::UnknownDestination(_) => {
                        self.snapshot.outputs_refused += items.len() as u64;
                        error!(error = %e, outputs = items.len(), "no such egress destination; outputs refused");
                        items.clear();
                    }
                    e if e.is_no_space() => {
                        // Egress logs the failure and its end itself, throttled.
                        result = Err(FlushError::NoSpace {
                            destination: destination.clone(),
                            message: e.to_string(),
                        });
                        break;
                    }
                    e => {
                        if !e.is_unavailable() {
                            error!(%destination, error = %e, "spooling failed; will retry");
                        }
                        result = Err(FlushError::Spool {
                            destination: destination.clone(),
                            message: e.to_string(),
                        });
                        break;
                    }
                }
            }
        }
        self.pending.retain(|_, v| !v.is_empty());
        result
    }

    fn shutdown(&mut self) {
        self.drain(usize::MAX);
        self.finish_engine();
        let give_up = Instant::now() + SHUTDOWN_PATIENCE;
        while self.spool_once().is_err() && Instant::now() < give_up {
            std::thread::sleep(BACKPRESSURE_RETRY);
        }
        let lost = self.waiting();
        if lost > 0 {
            self.snapshot.outputs_lost_at_shutdown += lost;
            error!(
                outputs = lost,
                "the egress spool stayed full through shutdown: these outputs were not spooled"
            );
            self.pending.clear();
        }
        self.publish_metrics();
        info!("policy engine stopped");
    }

    fn publish_metrics(&mut self) {
        let mut total = self.earlier.clone();
        if let Some(e) = &self.engine {
            total += &e.stats;
        }
        let waiting = self.waiting();
        let s = &mut self.snapshot;
        s.records_transformed = total.records_ok;
        s.records_bad = total
            .bad
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        if self.no_engine > 0 {
            s.records_bad.insert("no_engine".into(), self.no_engine);
        }
        s.records_released = total.records_out;
        s.records_on_site = total.records_on_site;
        let r = total.release_totals();
        s.cells_released = r.cells;
        s.groups_below_k = r.groups_below_k;
        s.groups_below_threshold = r.groups_below_threshold;
        s.rows_late = r.rows_late;
        s.windows = BTreeMap::from([
            ("released", r.windows_released),
            ("refused", r.windows_refused),
            ("suppressed", r.windows_suppressed),
            ("failed", r.windows_failed),
        ]);
        if let Some(engine) = &self.engine {
            s.open_windows = engine.open_windows() as u64;
            let (e, d) = engine.budget_left(now_unix());
            s.budget_epsilon_left = e;
            s.budget_delta_left = d;
        }
        s.outputs_waiting = waiting;
        self.metrics.store(s.clone());
    }
}

/// Routes one engine output: every output to its destination's pending batch; released
/// cells also to local subscribers.
fn collect(
    o: &Output<'_>,
    pending: &mut BTreeMap<String, Vec<EgressItem>>,
    releases: &broadcast::Sender<Arc<ReleasedOutput>>,
    snapshot: &mut PrivacySnapshot,
) -> std::io::Result<()> {
    let item = EgressItem::from_output(o);
    if let Output::Release { release, .. } = o {
        // No subscriber is fine: the broadcast only feeds live streams.
        let _ = releases.send(Arc::new(ReleasedOutput {
            release: (*release).to_string(),
            json: match &item {
                Ok(item) => item.json().to_string(),
                Err(_) => o.to_value().to_string(),
            },
        }));
    }
    match item {
        Ok(item) => pending
            .entry(item.destination().to_string())
            .or_default()
            .push(item),
        Err(e) => {
            // The engine's outputs always carry the tags egress needs; if one did not, it
            // is refused here rather than sent untagged.
            snapshot.outputs_refused += 1;
            error!(error = %e, "an engine output lacks egress tags; refused");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const QUEUE: usize = 200_000;

    const POLICY: &str = r#"version: 1
name: worker test
budget: {period: 1d, epsilon: 24.0, delta: 1e-4}
kinds:
  ev:
    privacy_unit: imsi
    time: time
    fields: {imsi: string, time: timestamp, cell: string}
    transforms: {cell: keep}
releases:
  per_cell:
    kind: ev
    window: 1h
    group_by: [cell]
    contribution: {max_groups: 1, max_rows: 1}
    k: 2
    epsilon: 1.0
    delta: 1e-6
    metrics: [count]
destinations:
  stats: {region: EU-DE, releases: [per_cell]}
"#;

    /// The plane on [`POLICY`], keys and ledger under `dir`, no egress, no flows.
    fn start(
        dir: &std::path::Path,
        ingest: mpsc::Receiver<PublishedRecord>,
        releases: broadcast::Sender<Arc<ReleasedOutput>>,
    ) -> PrivacyPlane {
        let policy = Arc::new(LoadedPolicy {
            policy: mecgw_policy::compile(POLICY).unwrap(),
            hash: mecgw_policy::engine::policy_hash(POLICY),
            source: POLICY.to_string(),
        });
        PrivacyPlane::start(
            policy,
            Settings {
                keys_dir: dir.to_path_buf(),
                ledger_dir: dir.join("budget"),
                state_dir: None,
                window_grace_secs: 0,
            },
            Wiring {
                ingest,
                releases,
                egress: None,
                flows: None,
            },
        )
        .unwrap()
    }

    /// Windows must close while records keep arriving: the queue never runs dry here, so
    /// a timer that only fires when nothing else is ready would never fire.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn windows_close_while_the_ingest_queue_never_runs_dry() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (releases, mut released) = broadcast::channel(16);
        // Three hours ago: the window has ended, so the first tick must release it.
        let t = now_unix() / 3600 * 3600 - 3 * 3600;
        let record = move |i: u64| PublishedRecord {
            app: Arc::from("app"),
            kind: Arc::from("ev"),
            json: serde_json::json!({
                "imsi": format!("{i:015}"), "time": t + 60, "cell": "c"
            })
            .to_string(),
        };
        // A full queue before the engine looks at it, kept full by a producer.
        for i in 0..QUEUE as u64 {
            tx.try_send(record(i)).unwrap();
        }
        let plane = start(dir.path(), rx, releases);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut i = QUEUE as u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if tx.blocking_send(record(i)).is_err() {
                        break;
                    }
                    i += 1;
                }
            })
        };
        let cell = tokio::time::timeout(Duration::from_secs(30), released.recv()).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        producer.join().unwrap();
        let cell = cell
            .expect("no window closed while records kept arriving")
            .unwrap();
        assert_eq!(cell.release, "per_cell");
        tokio::task::spawn_blocking(move || plane.stop())
            .await
            .unwrap();
    }

    /// Flushes that wait together are answered together, each only after every record
    /// queued before it was processed; a stop queued behind them is not lost while the
    /// engine collects them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_waiting_together_are_all_answered_and_a_stop_behind_them_still_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(QUEUE);
        let t = now_unix();
        for i in 0..10_000u64 {
            tx.try_send(PublishedRecord {
                app: Arc::from("app"),
                kind: Arc::from("ev"),
                json: format!(r#"{{"imsi":"{i:015}","time":{t},"cell":"c"}}"#),
            })
            .unwrap();
        }
        let plane = start(dir.path(), rx, broadcast::channel(16).0);
        let handle = plane.handle();
        let flushes: Vec<_> = (0..32)
            .map(|_| {
                let h = handle.clone();
                tokio::spawn(async move { h.flush().await })
            })
            .collect();
        // The stop joins the control queue behind (some of) the flushes.
        let stopped = tokio::task::spawn_blocking(move || plane.stop());
        for f in flushes {
            // Answered Ok, or Stopped if the stop overtook it: never left waiting.
            match f.await.unwrap() {
                Ok(()) | Err(FlushError::Stopped) => {}
                Err(e) => panic!("{e}"),
            }
        }
        tokio::time::timeout(Duration::from_secs(30), stopped)
            .await
            .expect("the stop behind the flushes was lost")
            .unwrap();
        assert_eq!(handle.metrics().snapshot().records_in_api, 10_000);
    }
}
