//! The PFCP endpoint: one UDP socket and one task that owns the sessions.
//!
//! Every datagram gets exactly one of: a response (the request applied, or refused with a
//! Cause and, where one IE is to blame, its Offending IE), the cached response to a
//! retransmitted request (applied once), or a counted silence (`mecgw_pfcp_ignored_total`:
//! not from a configured SMF, too short, unknown message type, an unexpected response).
//!
//! A Session Deletion is answered only after an RCU grace period, so that its usage report
//! counts every packet its rules judged. Grace periods are batched: while one runs, the
//! deletions that arrive wait for the next, so a burst of deletions costs a few grace periods,
//! not one each. Counter slots and TEIDs freed by modifications wait for one too.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mecgw_pfcp::{
    DecodeError, DecodeErrorKind, MAX_MESSAGE_BYTES, decode, encode,
    ie::{
        Cause, DownlinkDataReport, FSeid, NodeId, Qer, ReportType, UpFunctionFeatures, UsageReport,
    },
    message::{
        AssociationReleaseResponse, AssociationSetupResponse, AssociationUpdateResponse, Header,
        Heartbeat, Message, SessionDeletionResponse, SessionEstablishmentResponse,
        SessionModificationResponse, SessionReportRequest, message_type,
    },
};
use tokio::{net::UdpSocket, sync::watch};

use tracing::{debug, error, info, warn};

use crate::log_limit::LogBudget;

use super::{
    OnPeerLost, PfcpConfig, PfcpMetrics,
    neighbours::Prober,
    rules::Reject,
    sessions::{Datapath, Due, Identities, PendingDelete, Retired, Store, StoreOptions, ntp_now},
};

/// UP Function Features (§8.2.25) mecgw advertises: FTUP (it allocates F-TEIDs). Octet 5
/// bit 5; octet 6 all clear. Accepting BUFF/NOCP (a buffer of zero packets) implies no bit:
/// BUCP (buffering in the CP function), DDND, DLBD and UDBC (BAR parameters) are not done.
const UP_FEATURES: [u8; 2] = [0x10, 0x00];

/// How often every re-tunnel target is probed (GTP-U Echo), so the kernel keeps its
/// neighbour entry; a target is also probed when a session starts using it.
const PROBE_EVERY: Duration = Duration::from_secs(30);

/// The receive buffer asked for the PFCP socket (the kernel grants up to net.core.rmem_max).
const RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// Responses kept for retransmitted requests, at most.
const MAX_CACHED_RESPONSES: usize = 100_000;

/// The running endpoint.
pub struct PfcpEndpoint {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    local: SocketAddr,
}

/// An endpoint whose configuration is checked and whose socket is bound, not serving yet: the
/// daemon binds before it attaches anything, so that a taken port stops the start.
pub struct BoundPfcp {
    config: PfcpConfig,
    opts: StoreOptions,
    socket: std::net::UdpSocket,
    node_id: NodeId,
    seid_address: IpAddr,
    local: SocketAddr,
}

impl PfcpEndpoint {
    /// Binds `config.listen` (an error names it) and starts serving on a thread of its own.
    pub fn start(
        config: PfcpConfig,
        dp: Arc<dyn Datapath>,
        opts: StoreOptions,
        identities: Identities,
        metrics: Arc<PfcpMetrics>,
    ) -> anyhow::Result<PfcpEndpoint> {
        Self::bind(config, opts)?.serve(dp, identities, metrics)
    }

    /// Checks `config` and binds `config.listen` (an error names it); serves nothing yet.
    pub fn bind(config: PfcpConfig, opts: StoreOptions) -> anyhow::Result<BoundPfcp> {
        let problems = config.problems();
        if !problems.is_empty() {
            anyhow::bail!("[pfcp]: {}", problems.join("; "));
        }
        let node_id = node_id(&config.node_id);
        let seid_address = seid_address(&config, &node_id, &opts)?;
        let socket = std::net::UdpSocket::bind(config.listen)
            .with_context(|| format!("pfcp.listen {}: cannot bind", config.listen))?;
        socket
            .set_nonblocking(true)
            .context("pfcp.listen: setting the socket non-blocking")?;
        // An SMF pipelines requests: the default receive buffer (≈208 KiB) dropped a few of
        // every burst of 128 establishments, each then waiting T1 for its retransmission.
        // The kernel caps the size at net.core.rmem_max; what it grants is logged.
        let sock = socket2::SockRef::from(&socket);
        if let Err(e) = sock.set_recv_buffer_size(RECEIVE_BUFFER_BYTES) {
            warn!(error = %e, "PFCP: cannot enlarge the socket's receive buffer");
        }
        debug!(
            bytes = sock.recv_buffer_size().unwrap_or(0),
            "PFCP socket receive buffer"
        );
        let local = socket.local_addr().context("pfcp.listen: local address")?;
        Ok(BoundPfcp {
            config,
            opts,
            socket,
            node_id,
            seid_address,
            local,
        })
    }
}

impl BoundPfcp {
    /// Starts serving on a thread of its own, on the fast path `dp`.
    pub fn serve(
        self,
        dp: Arc<dyn Datapath>,
        identities: Identities,
        metrics: Arc<PfcpMetrics>,
    ) -> anyhow::Result<PfcpEndpoint> {
        let BoundPfcp {
            config,
            opts,
            socket,
            node_id,
            seid_address,
            local,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let store = Store::new(Arc::clone(&dp), opts, identities);
        let thread = std::thread::Builder::new()
            .name("mecgw-pfcp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        error!(error = %e, "PFCP: cannot start the endpoint's runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(s) => s,
                        Err(e) => {
                            error!(error = %e, "PFCP: cannot use the bound socket");
                            return;
                        }
                    };
                    let node = Node {
                        recovery: ntp_now(),
                        tick: tick_for(&config),
                        cache: ResponseCache::new(cache_ttl(&config), MAX_CACHED_RESPONSES),
                        config,
                        socket,
                        dp,
                        store,
                        metrics,
                        node_id,
                        seid_address,
                        peers: HashMap::new(),
                        outstanding: HashMap::new(),
                        next_sequence: 1,
                        awaiting_grace: Vec::new(),
                        next_report_check: Instant::now(),
                        next_threshold_check: Instant::now(),
                        next_probe: Instant::now() + PROBE_EVERY,
                        prober: Prober::new(),
                        unenforced_logged: false,
                        log: LogBudget::new("PFCP warnings", 20),
                    };
                    node.serve(stopped).await;
                });
            })
            .context("PFCP: starting the endpoint's thread")?;
        info!(listen = %local, "PFCP endpoint listening (N4)");
        Ok(PfcpEndpoint {
            stop,
            thread: Some(thread),
            local,
        })
    }
}

impl PfcpEndpoint {
    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops serving: deletions under way are finished and answered first.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            error!("the PFCP endpoint's thread panicked");
        }
    }
}

impl Drop for PfcpEndpoint {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The configured Node ID: an address when it parses as one, an FQDN otherwise.
fn node_id(text: &str) -> NodeId {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => NodeId::Ipv4(a),
        Ok(IpAddr::V6(a)) => NodeId::Ipv6(a),
        Err(_) => NodeId::Fqdn(text.to_string()),
    }
}

/// The address in the UP F-SEIDs mecgw hands out: where the SMF sends session messages.
fn seid_address(
    config: &PfcpConfig,
    node_id: &NodeId,
    opts: &StoreOptions,
) -> anyhow::Result<IpAddr> {
    match node_id {
        NodeId::Ipv4(a) => return Ok(IpAddr::V4(*a)),
        NodeId::Ipv6(a) => return Ok(IpAddr::V6(*a)),
        NodeId::Fqdn(_) => {}
    }
    if !config.listen.ip().is_unspecified() {
        return Ok(config.listen.ip());
    }
    opts.n3_v4.map(IpAddr::V4).ok_or_else(|| {
        anyhow::anyhow!(
            "pfcp.node_id is an FQDN and pfcp.listen is a wildcard: give pfcp.listen a \
             specific address, which mecgw puts in the F-SEIDs it hands out"
        )
    })
}

fn tick_for(config: &PfcpConfig) -> Duration {
    Duration::from_millis((config.response_timeout_ms / 4).clamp(10, 100))
}

/// How long a response is kept for retransmissions of its request: longer than a peer
/// with our own timers would keep trying.
fn cache_ttl(config: &PfcpConfig) -> Duration {
    let tries = u64::from(config.retries) + 1;
    Duration::from_millis(config.response_timeout_ms * tries * 2).max(Duration::from_secs(10))
}

/// The metric label of a message type.
fn message_name(t: u8) -> &'static str {
    use message_type::*;
    match t {
        HEARTBEAT_REQUEST => "heartbeat_request",
        HEARTBEAT_RESPONSE => "heartbeat_response",
        ASSOCIATION_SETUP_REQUEST => "association_setup_request",
        ASSOCIATION_SETUP_RESPONSE => "association_setup_response",
        ASSOCIATION_UPDATE_REQUEST => "association_update_request",
        ASSOCIATION_UPDATE_RESPONSE => "association_update_response",
        ASSOCIATION_RELEASE_REQUEST => "association_release_request",
        ASSOCIATION_RELEASE_RESPONSE => "association_release_response",
        VERSION_NOT_SUPPORTED_RESPONSE => "version_not_supported_response",
        SESSION_ESTABLISHMENT_REQUEST => "session_establishment_request",
        SESSION_ESTABLISHMENT_RESPONSE => "session_establishment_response",
        SESSION_MODIFICATION_REQUEST => "session_modification_request",
        SESSION_MODIFICATION_RESPONSE => "session_modification_response",
        SESSION_DELETION_REQUEST => "session_deletion_request",
        SESSION_DELETION_RESPONSE => "session_deletion_response",
        SESSION_REPORT_REQUEST => "session_report_request",
        SESSION_REPORT_RESPONSE => "session_report_response",
        _ => "other",
    }
}

/// An IPv4-mapped IPv6 sender is the IPv4 peer it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        a => a,
    }
}

/// An SMF mecgw has an association with.
struct Association {
    /// Where requests to it go (the address its Association Setup came from).
    addr: SocketAddr,
    node_id: NodeId,
    /// Its Recovery Time Stamp: a different one later means it restarted.
    recovery: u32,
    next_heartbeat: Instant,
    heartbeat_out: bool,
    /// When its heartbeats went unanswered N1 times.
    lost_since: Option<Instant>,
}

/// What a request mecgw sent was for.
enum Purpose {
    Heartbeat {
        peer: IpAddr,
    },
    Report {
        up_seid: u64,
        reports: Vec<UsageReport>,
        /// The PDRs of its Downlink Data Report (none without one).
        downlink_data: Vec<u16>,
    },
}

/// A request mecgw sent and has no response to yet.
struct Outstanding {
    to: SocketAddr,
    bytes: Vec<u8>,
    sent: Instant,
    /// Sends so far.
    sends: u32,
    name: &'static str,
    purpose: Purpose,
}

/// Where a deletion's response goes once its grace period has passed.
struct Reply {
    request: RequestKey,
    cp_seid: u64,
}

/// A session out of the fast path, waiting for a grace period for its final usage.
struct Deletion {
    pending: PendingDelete,
    /// `None` for sessions mecgw released itself (peer lost, restarted or released).
    reply: Option<Reply>,
}

/// A grace period under way: what waits for it.
struct Grace {
    handle: tokio::task::JoinHandle<()>,
    deletions: Vec<Deletion>,
    retired: Retired,
}

/// How mecgw answers a request.
enum Answer {
    /// With this message, whose header carries this SEID (session messages).
    Now(Option<u64>, Box<Message>),
    /// After a grace period (a deletion): retransmissions meanwhile are not applied again.
    Later,
    /// Not at all (a request mecgw does not take, counted): nothing is cached, so that
    /// nothing waits for an answer that never comes.
    Never,
}

/// A request as the retransmission cache knows it: sender, sequence number and a fingerprint
/// of its bytes. A retransmission is a copy (TS 29.244 §6.4); another request that reuses
/// the sequence number is not one and is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RequestKey {
    from: SocketAddr,
    sequence: u32,
    fingerprint: u64,
}

impl RequestKey {
    fn of(bytes: &[u8], sequence: u32, from: SocketAddr) -> RequestKey {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        RequestKey {
            from,
            sequence,
            fingerprint: BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes),
        }
    }
}

enum Cached {
    InProgress,
    Done(Vec<u8>),
}

/// Responses by request, so that a retransmitted request is answered with the first response
/// and not applied twice. Bounded in time and size.
struct ResponseCache {
    entries: HashMap<RequestKey, Cached>,
    order: VecDeque<(Instant, RequestKey)>,
    ttl: Duration,
    capacity: usize,
}

impl ResponseCache {
    fn new(ttl: Duration, capacity: usize) -> ResponseCache {
        ResponseCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity,
        }
    }

    fn get(&self, key: &RequestKey) -> Option<&Cached> {
        self.entries.get(key)
    }

    fn put(&mut self, key: RequestKey, value: Cached) {
        if self.entries.insert(key, value).is_none() {
            self.order.push_back((Instant::now(), key));
        }
        // Entries still in progress are kept (each is one deletion waiting for its grace
        // period, so there are few): one pass over the queue at most, never a spin when
        // they alone fill it.
        let mut budget = self.order.len();
        while self.order.len() > self.capacity && budget > 0 {
            self.evict_one();
            budget -= 1;
        }
    }

    fn evict_one(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            // An answer still being prepared stays (its deletion will fill it in).
            if let Some(Cached::InProgress) = self.entries.get(&key) {
                self.order.push_back((Instant::now(), key));
            } else {
                self.entries.remove(&key);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let mut budget = self.order.len();
        while budget > 0
            && let Some(&(at, _)) = self.order.front()
            && now.duration_since(at) >= self.ttl
        {
            self.evict_one();
            budget -= 1;
        }
    }
}

/// The endpoint's state, owned by its one task.
struct Node {
    config: PfcpConfig,
    socket: UdpSocket,
    dp: Arc<dyn Datapath>,
    store: Store,
    metrics: Arc<PfcpMetrics>,
    node_id: NodeId,
    seid_address: IpAddr,
    /// NTP seconds of this start: our Recovery Time Stamp.
    recovery: u32,
    tick: Duration,
    peers: HashMap<IpAddr, Association>,
    cache: ResponseCache,
    outstanding: HashMap<u32, Outstanding>,
    next_sequence: u32,
    awaiting_grace: Vec<Deletion>,
    next_report_check: Instant,
    next_threshold_check: Instant,
    /// Re-tunnel targets: probed when first used and every [`PROBE_EVERY`].
    prober: Prober,
    next_probe: Instant,
    /// Whether the one log line about QER rates not enforced was written.
    unenforced_logged: bool,
    /// Warnings a peer can cause: at most 20 a minute.
    log: LogBudget,
}

impl Node {
    async fn serve(mut self, mut stopped: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut grace: Option<Grace> = None;
        loop {
            if grace.is_none() && (!self.awaiting_grace.is_empty() || self.store.has_retired()) {
                let dp = Arc::clone(&self.dp);
                grace = Some(Grace {
                    handle: tokio::task::spawn_blocking(move || dp.grace_period()),
                    deletions: std::mem::take(&mut self.awaiting_grace),
                    retired: self.store.begin_grace(),
                });
            }
            tokio::select! {
                _ = stopped.changed() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let datagram = buf.get(..n).unwrap_or_default().to_vec();
                        self.on_datagram(&datagram, from).await;
                    }
                    Err(e) => {
                        if self.log.allow() {
                            warn!(error = %e, "PFCP: receiving failed");
                        }
                    }
                },
                _ = tick.tick() => self.on_tick().await,
                _ = async {
                    match grace.as_mut() {
                        Some(g) => {
                            let _ = (&mut g.handle).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    if let Some(g) = grace.take() {
                        self.after_grace(g).await;
                    }
                }
            }
        }
        // Deletions already out of the fast path are answered before the endpoint goes.
        if let Some(mut g) = grace.take() {
            let _ = (&mut g.handle).await;
            self.after_grace(g).await;
        }
        if !self.awaiting_grace.is_empty() {
            self.dp.grace_period();
            let g = Grace {
                handle: tokio::spawn(async {}),
                deletions: std::mem::take(&mut self.awaiting_grace),
                retired: self.store.begin_grace(),
            };
            self.after_grace(g).await;
        }
        info!(
            sessions = self.store.len(),
            "PFCP endpoint stopped (its sessions stay in the fast path until the datapath stops)"
        );
    }

    async fn send(&mut self, bytes: &[u8], to: SocketAddr, name: &'static str) {
        self.metrics.message(name, "out");
        if let Err(e) = self.socket.send_to(bytes, to).await
            && self.log.allow()
        {
            warn!(error = %e, peer = %to, message = name, "PFCP: sending failed");
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let peer = canonical(from.ip());
        if !self.config.is_peer(peer) {
            self.metrics.ignore("not_a_peer");
            if self.log.allow() {
                debug!(%from, "PFCP: a datagram from an address not in pfcp.peers: not answered");
            }
            return;
        }
        let (header, message) = match decode(bytes) {
            Ok(m) => m,
            Err(e) => return self.on_undecodable(e, bytes, from).await,
        };
        let t = header.message_type;
        self.metrics.message(message_name(t), "in");
        if !message_type::is_request(t) {
            return self.on_response(&header, message, from);
        }
        let request = RequestKey::of(bytes, header.sequence, from);
        if self.answered_before(request, header.message_type).await {
            return;
        }
        let answer = self.on_request(&header, message, request, peer).await;
        self.answer(request, answer).await;
    }

    /// A retransmitted request: answered from the cache (or silently, while its first copy
    /// is still being answered). True when it was one.
    async fn answered_before(&mut self, request: RequestKey, message_type: u8) -> bool {
        let bytes = match self.cache.get(&request) {
            None => return false,
            Some(Cached::InProgress) => None,
            Some(Cached::Done(b)) => Some(b.clone()),
        };
        self.metrics
            .retransmissions_answered
            .fetch_add(1, Ordering::Relaxed);
        if let Some(bytes) = bytes {
            let name = message_name(message_type.saturating_add(1));
            self.send(&bytes, request.from, name).await;
        }
        true
    }

    async fn answer(&mut self, request: RequestKey, answer: Answer) {
        match answer {
            Answer::Later => self.cache.put(request, Cached::InProgress),
            Answer::Never => {}
            Answer::Now(seid, message) => {
                let bytes = self.response_bytes(request.sequence, seid, &message);
                self.cache.put(request, Cached::Done(bytes.clone()));
                self.send(&bytes, request.from, message_name(message.message_type()))
                    .await;
            }
        }
    }

    fn response_bytes(&self, sequence: u32, seid: Option<u64>, message: &Message) -> Vec<u8> {
        encode(
            &Header {
                message_type: message.message_type(),
                seid,
                sequence,
                priority: None,
            },
            message,
        )
    }

    async fn on_undecodable(&mut self, e: DecodeError, bytes: &[u8], from: SocketAddr) {
        let reason = match (&e.kind, &e.header) {
            (DecodeErrorKind::VersionNotSupported(_), Some(h)) => {
                let bytes =
                    self.response_bytes(h.sequence, None, &Message::VersionNotSupportedResponse);
                self.send(&bytes, from, "version_not_supported_response")
                    .await;
                return;
            }
            (DecodeErrorKind::VersionNotSupported(_) | DecodeErrorKind::TooShort, _) => "too_short",
            (DecodeErrorKind::UnknownMessageType(_), _) => "unknown_message_type",
            (_, Some(h)) if message_type::is_request(h.message_type) => {
                let request = RequestKey::of(bytes, h.sequence, from);
                if self.answered_before(request, h.message_type).await {
                    return;
                }
                let seid = self.cp_seid_of(h, canonical(from.ip()));
                if let Some(message) = self.refusal(h.message_type, e.cause(), e.offending_ie()) {
                    self.metrics.message(message_name(h.message_type), "in");
                    self.metrics.reject(e.cause().name());
                    if self.log.allow() {
                        warn!(peer = %from, message = message_name(h.message_type), cause = e.cause().name(), error = %e, "PFCP: request refused");
                    }
                    let seid = message_type::is_session_message(h.message_type).then_some(seid);
                    self.answer(request, Answer::Now(seid, Box::new(message)))
                        .await;
                    return;
                }
                "malformed_heartbeat"
            }
            _ => "malformed_response",
        };
        self.metrics.ignore(reason);
        if self.log.allow() {
            debug!(peer = %from, error = %e, reason, "PFCP: datagram not answered");
        }
    }

    /// The SEID a response to a session request carries: the SMF's SEID of the session the
    /// header names, or 0 when there is none (§7.2.2.4.2).
    fn cp_seid_of(&self, h: &Header, peer: IpAddr) -> u64 {
        h.seid
            .and_then(|s| self.store.get(s))
            .filter(|s| s.peer == peer)
            .map_or(0, |s| s.cp.seid)
    }

    /// The response to a request of type `t` refused with `cause`, if the message has one
    /// (a Heartbeat Response has no Cause).
    fn refusal(&self, t: u8, cause: Cause, offending_ie: Option<u16>) -> Option<Message> {
        use message_type::*;
        Some(match t {
            ASSOCIATION_SETUP_REQUEST => {
                Message::AssociationSetupResponse(AssociationSetupResponse {
                    node_id: self.node_id.clone(),
                    cause,
                    recovery_time_stamp: self.recovery,
                    up_function_features: None,
                })
            }
            ASSOCIATION_UPDATE_REQUEST => {
                Message::AssociationUpdateResponse(AssociationUpdateResponse {
                    node_id: self.node_id.clone(),
                    cause,
                    up_function_features: None,
                })
            }
            ASSOCIATION_RELEASE_REQUEST => {
                Message::AssociationReleaseResponse(AssociationReleaseResponse {
                    node_id: self.node_id.clone(),
                    cause,
                })
            }
            SESSION_ESTABLISHMENT_REQUEST => {
                Message::SessionEstablishmentResponse(SessionEstablishmentResponse {
                    node_id: self.node_id.clone(),
                    cause,
                    offending_ie,
                    up_f_seid: None,
                    created_pdr: Vec::new(),
                })
            }
            SESSION_MODIFICATION_REQUEST => {
                Message::SessionModificationResponse(SessionModificationResponse {
                    cause,
                    offending_ie,
                    created_pdr: Vec::new(),
                    usage_report: Vec::new(),
                })
            }
            SESSION_DELETION_REQUEST => Message::SessionDeletionResponse(SessionDeletionResponse {
                cause,
                offending_ie,
                usage_report: Vec::new(),
            }),
            _ => return None,
        })
    }

    /// A refusal of a request of type `t`, counted and logged.
    fn refuse(&mut self, t: u8, seid: Option<u64>, peer: IpAddr, reject: Reject) -> Answer {
        self.metrics.reject(reject.cause.name());
        if self.log.allow() {
            warn!(%peer, message = message_name(t), cause = reject.cause.name(), offending_ie = ?reject.offending_ie, why = %reject.why, "PFCP: request refused");
        }
        match self.refusal(t, reject.cause, reject.offending_ie) {
            Some(m) => Answer::Now(seid, Box::new(m)),
            // Only requests with a Cause reach here.
            None => Answer::Never,
        }
    }

    fn no_association(&mut self, t: u8, seid: Option<u64>, peer: IpAddr) -> Answer {
        self.refuse(
            t,
            seid,
            peer,
            Reject {
                cause: Cause::NO_ESTABLISHED_PFCP_ASSOCIATION,
                offending_ie: None,
                why: "no PFCP association with this SMF: send an Association Setup Request \
                      first"
                    .into(),
            },
        )
    }

    async fn on_request(
        &mut self,
        h: &Header,
        message: Message,
        request: RequestKey,
        peer: IpAddr,
    ) -> Answer {
        let from = request.from;
        let t = h.message_type;
        match message {
            Message::HeartbeatRequest(hb) => {
                self.heard_from(peer, hb.recovery_time_stamp);
                Answer::Now(
                    None,
                    Box::new(Message::HeartbeatResponse(Heartbeat {
                        recovery_time_stamp: self.recovery,
                    })),
                )
            }
            Message::AssociationSetupRequest(r) => {
                let kept = match self.peers.get(&peer) {
                    Some(old) if old.recovery != r.recovery_time_stamp => {
                        self.release_peer_sessions(peer, "the SMF restarted (a new Recovery Time Stamp in its Association Setup)");
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                // A heartbeat of the association this one replaces must not find this one
                // lost.
                self.forget_heartbeats(peer);
                self.peers.insert(
                    peer,
                    Association {
                        addr: from,
                        node_id: r.node_id.clone(),
                        recovery: r.recovery_time_stamp,
                        next_heartbeat: Instant::now()
                            + Duration::from_secs(self.config.heartbeat_interval_secs),
                        heartbeat_out: false,
                        lost_since: None,
                    },
                );
                self.metrics
                    .associations
                    .store(self.peers.len() as u64, Ordering::Relaxed);
                info!(%peer, node_id = ?r.node_id, sessions_kept = kept && !self.store.of_peer(peer).is_empty(), "PFCP association set up");
                Answer::Now(
                    None,
                    Box::new(Message::AssociationSetupResponse(
                        AssociationSetupResponse {
                            node_id: self.node_id.clone(),
                            cause: Cause::ACCEPTED,
                            recovery_time_stamp: self.recovery,
                            up_function_features: Some(UpFunctionFeatures(UP_FEATURES.to_vec())),
                        },
                    )),
                )
            }
            Message::AssociationUpdateRequest(r) => {
                let Some(a) = self.peers.get_mut(&peer) else {
                    return self.no_association(t, None, peer);
                };
                a.node_id = r.node_id;
                a.addr = from;
                Answer::Now(
                    None,
                    Box::new(Message::AssociationUpdateResponse(
                        AssociationUpdateResponse {
                            node_id: self.node_id.clone(),
                            cause: Cause::ACCEPTED,
                            up_function_features: Some(UpFunctionFeatures(UP_FEATURES.to_vec())),
                        },
                    )),
                )
            }
            Message::AssociationReleaseRequest(_) => {
                if !self.peers.contains_key(&peer) {
                    return self.no_association(t, None, peer);
                }
                self.release_peer_sessions(peer, "the SMF released the association");
                self.end_association(peer);
                info!(%peer, "PFCP association released by the SMF");
                Answer::Now(
                    None,
                    Box::new(Message::AssociationReleaseResponse(
                        AssociationReleaseResponse {
                            node_id: self.node_id.clone(),
                            cause: Cause::ACCEPTED,
                        },
                    )),
                )
            }
            Message::SessionEstablishmentRequest(r) => {
                let cp_seid = Some(r.cp_f_seid.seid);
                if !self.peers.contains_key(&peer) {
                    return self.no_association(t, cp_seid, peer);
                }
                if let Some(stale) = self.store.by_cp_seid(peer, r.cp_f_seid.seid) {
                    // The SMF establishes again under a CP F-SEID it already gave a session:
                    // it has lost that one (restarted unnoticed, or a reused SEID). The old
                    // session is stale; it goes, and the new one takes its place (its UE
                    // address among what it frees).
                    if let Err(reject) = self.replace_stale(peer, stale) {
                        return self.refuse(t, cp_seid, peer, reject);
                    }
                }
                match self.store.establish(peer, &r) {
                    Ok((up_seid, created_pdr)) => {
                        self.sessions_changed();
                        self.after_change(up_seid, r.create_qer.iter());
                        debug!(%peer, up_seid = format_args!("{up_seid:#x}"), "PFCP session established");
                        let (ipv4, ipv6) = match self.seid_address {
                            IpAddr::V4(a) => (Some(a), None),
                            IpAddr::V6(a) => (None, Some(a)),
                        };
                        Answer::Now(
                            cp_seid,
                            Box::new(Message::SessionEstablishmentResponse(
                                SessionEstablishmentResponse {
                                    node_id: self.node_id.clone(),
                                    cause: Cause::ACCEPTED,
                                    offending_ie: None,
                                    up_f_seid: Some(FSeid {
                                        seid: up_seid,
                                        ipv4,
                                        ipv6,
                                    }),
                                    created_pdr,
                                },
                            )),
                        )
                    }
                    Err(reject) => self.refuse(t, cp_seid, peer, reject),
                }
            }
            Message::SessionModificationRequest(r) => {
                let Some(up_seid) = self.session_of(h, peer) else {
                    return self.unknown_session(t, h, peer);
                };
                let cp_seid = Some(self.cp_seid_of(h, peer));
                if !self.peers.contains_key(&peer) {
                    return self.no_association(t, cp_seid, peer);
                }
                match self.store.modify(up_seid, &r) {
                    Ok((created_pdr, usage_report)) => {
                        self.after_change(up_seid, r.create_qer.iter().chain(&r.update_qer));
                        for _ in &usage_report {
                            self.metrics.usage_report("modification_response");
                        }
                        Answer::Now(
                            cp_seid,
                            Box::new(Message::SessionModificationResponse(
                                SessionModificationResponse {
                                    cause: Cause::ACCEPTED,
                                    offending_ie: None,
                                    created_pdr,
                                    usage_report,
                                },
                            )),
                        )
                    }
                    Err(reject) => self.refuse(t, cp_seid, peer, reject),
                }
            }
            Message::SessionDeletionRequest => {
                let Some(up_seid) = self.session_of(h, peer) else {
                    return self.unknown_session(t, h, peer);
                };
                let cp_seid = self.cp_seid_of(h, peer);
                match self.store.delete(up_seid) {
                    Ok(pending) => {
                        // Out of force now: the gauge says so before the response does.
                        self.sessions_changed();
                        self.awaiting_grace.push(Deletion {
                            pending,
                            reply: Some(Reply { request, cp_seid }),
                        });
                        Answer::Later
                    }
                    Err(reject) => self.refuse(t, Some(cp_seid), peer, reject),
                }
            }
            _ => {
                // Requests an SMF does not send (a Session Report Request is the UP's).
                self.metrics.ignore("unexpected_request");
                Answer::Never
            }
        }
    }

    /// The UP SEID the header names, if it is a session of `peer`.
    fn session_of(&self, h: &Header, peer: IpAddr) -> Option<u64> {
        h.seid
            .and_then(|s| self.store.get(s))
            .filter(|s| s.peer == peer)
            .map(|s| s.up_seid)
    }

    fn unknown_session(&mut self, t: u8, h: &Header, peer: IpAddr) -> Answer {
        let seid = h.seid.unwrap_or(0);
        self.refuse(
            t,
            Some(0),
            peer,
            Reject {
                cause: Cause::SESSION_CONTEXT_NOT_FOUND,
                offending_ie: None,
                why: format!("no session with SEID {seid:#x} for this SMF"),
            },
        )
    }

    fn sessions_changed(&self) {
        self.metrics
            .sessions
            .store(self.store.len() as u64, Ordering::Relaxed);
    }

    /// A heartbeat (request or response) from `peer` with its Recovery Time Stamp.
    fn heard_from(&mut self, peer: IpAddr, recovery: u32) {
        let Some(a) = self.peers.get_mut(&peer) else {
            return;
        };
        if a.recovery != recovery {
            // It restarted: it has forgotten its sessions and will set the association up
            // again (TS 29.244 §6.2.2).
            self.release_peer_sessions(
                peer,
                "the SMF restarted (a new Recovery Time Stamp in its heartbeat)",
            );
            self.end_association(peer);
            return;
        }
        if a.lost_since.take().is_some() {
            info!(%peer, sessions = self.store.of_peer(peer).len(), "PFCP: the lost SMF answers again, with the same Recovery Time Stamp: its sessions stay");
        }
    }

    /// After a session was established or modified: its new re-tunnel targets are probed,
    /// and QERs with rates mecgw does not enforce are counted.
    fn after_change<'a>(&mut self, up_seid: u64, qers: impl Iterator<Item = &'a Qer>) {
        if let Some(s) = self.store.get(up_seid) {
            let targets: Vec<IpAddr> = s.installed.retunnel_targets().collect();
            let sent = self.prober.probe(targets, PROBE_EVERY);
            self.metrics
                .neighbour_probes
                .fetch_add(sent as u64, Ordering::Relaxed);
        }
        let unenforced = qers.filter(|q| q.mbr.is_some() || q.gbr.is_some()).count();
        if unenforced > 0 {
            self.metrics
                .unenforced
                .fetch_add(unenforced as u64, Ordering::Relaxed);
            if !self.unenforced_logged {
                self.unenforced_logged = true;
                info!(
                    "PFCP: QER MBR/GBR are accepted but not enforced (counted in mecgw_pfcp_unenforced_total; docs/pfcp.md)"
                );
            }
        }
    }

    /// Deletes `stale`, a session of `peer` that a new establishment replaces (its final
    /// usage is read after the grace period; there is no SMF that wants it).
    fn replace_stale(&mut self, peer: IpAddr, stale: u64) -> Result<(), Reject> {
        let pending = self.store.delete(stale)?;
        self.metrics.stale_replaced.fetch_add(1, Ordering::Relaxed);
        if self.log.allow() {
            warn!(%peer, up_seid = format_args!("{stale:#x}"), "PFCP: an establishment reuses a CP F-SEID in use: the old session is stale and deleted");
        }
        self.awaiting_grace.push(Deletion {
            pending,
            reply: None,
        });
        self.sessions_changed();
        Ok(())
    }

    /// The association with `peer` ends (its sessions were released or kept elsewhere).
    fn end_association(&mut self, peer: IpAddr) {
        self.peers.remove(&peer);
        self.forget_heartbeats(peer);
        self.metrics
            .associations
            .store(self.peers.len() as u64, Ordering::Relaxed);
    }

    /// Stops waiting for responses to the heartbeats sent to `peer`: they were of an
    /// association that ended, and must not declare a later one lost when they go
    /// unanswered.
    fn forget_heartbeats(&mut self, peer: IpAddr) {
        self.outstanding
            .retain(|_, o| !matches!(o.purpose, Purpose::Heartbeat { peer: p } if p == peer));
    }

    /// Takes every session of `peer` out of the fast path (final usage read after a grace
    /// period, with no SMF to report it to).
    fn release_peer_sessions(&mut self, peer: IpAddr, why: &str) {
        let seids = self.store.of_peer(peer);
        if seids.is_empty() {
            return;
        }
        let mut released = 0usize;
        for seid in seids {
            match self.store.delete(seid) {
                Ok(pending) => {
                    released += 1;
                    self.awaiting_grace.push(Deletion {
                        pending,
                        reply: None,
                    });
                }
                Err(e) => error!(%peer, seid, why = %e.why, "PFCP: could not release a session"),
            }
        }
        self.sessions_changed();
        warn!(%peer, sessions = released, why, "PFCP: sessions released");
    }

    fn on_response(&mut self, h: &Header, message: Message, from: SocketAddr) {
        // A response from anyone but the request's addressee leaves the request waiting for
        // its own (and its retries going).
        let Some(out) = self
            .outstanding
            .remove_entry(&h.sequence)
            .and_then(|(sequence, o)| {
                if canonical(o.to.ip()) == canonical(from.ip()) {
                    Some(o)
                } else {
                    self.outstanding.insert(sequence, o);
                    None
                }
            })
        else {
            self.metrics.ignore("unexpected_response");
            return;
        };
        match (out.purpose, message) {
            (Purpose::Heartbeat { peer }, Message::HeartbeatResponse(hb)) => {
                if let Some(a) = self.peers.get_mut(&peer) {
                    a.heartbeat_out = false;
                }
                self.heard_from(peer, hb.recovery_time_stamp);
            }
            (
                Purpose::Report {
                    up_seid,
                    reports,
                    downlink_data,
                },
                Message::SessionReportResponse(r),
            ) => {
                if r.cause == Cause::ACCEPTED {
                    return;
                }
                if r.cause == Cause::SESSION_CONTEXT_NOT_FOUND {
                    // The SMF does not know the session: it will never delete it.
                    warn!(
                        up_seid,
                        "PFCP: the SMF does not know a session mecgw reported on: releasing it"
                    );
                    if let Ok(pending) = self.store.delete(up_seid) {
                        self.awaiting_grace.push(Deletion {
                            pending,
                            reply: None,
                        });
                        self.sessions_changed();
                    }
                } else {
                    if self.log.allow() {
                        warn!(
                            up_seid,
                            cause = r.cause.name(),
                            "PFCP: the SMF refused a session report: its volumes (and downlink data) go into the next one"
                        );
                    }
                    self.store.carry_back(up_seid, &reports, &downlink_data);
                }
            }
            (purpose, _) => {
                // Not the response the request wanted: keep waiting for the right one.
                self.metrics.ignore("unexpected_response");
                self.outstanding
                    .insert(h.sequence, Outstanding { purpose, ..out });
            }
        }
    }

    async fn after_grace(&mut self, g: Grace) {
        for d in g.deletions {
            let reports = self.store.finish(d.pending);
            match d.reply {
                Some(r) => {
                    for _ in &reports {
                        self.metrics.usage_report("deletion_response");
                    }
                    let message = Message::SessionDeletionResponse(SessionDeletionResponse {
                        cause: Cause::ACCEPTED,
                        offending_ie: None,
                        usage_report: reports,
                    });
                    let bytes = self.response_bytes(r.request.sequence, Some(r.cp_seid), &message);
                    self.cache.put(r.request, Cached::Done(bytes.clone()));
                    self.send(&bytes, r.request.from, "session_deletion_response")
                        .await;
                }
                None if !reports.is_empty() => {
                    debug!(
                        reports = reports.len(),
                        "PFCP: final usage of a session released without its SMF is not reported"
                    );
                }
                None => {}
            }
        }
        self.store.end_grace(g.retired);
        self.sessions_changed();
    }

    async fn send_request(
        &mut self,
        to: SocketAddr,
        seid: Option<u64>,
        message: Message,
        purpose: Purpose,
    ) {
        let sequence = self.next_sequence;
        self.next_sequence = (self.next_sequence + 1) & 0x00FF_FFFF;
        let name = message_name(message.message_type());
        let bytes = self.response_bytes(sequence, seid, &message);
        self.send(&bytes, to, name).await;
        self.outstanding.insert(
            sequence,
            Outstanding {
                to,
                bytes,
                sent: Instant::now(),
                sends: 1,
                name,
                purpose,
            },
        );
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.cache.expire(now);
        self.retransmit(now).await;
        self.heartbeats(now).await;
        self.expire_lost(now);
        if now >= self.next_probe {
            self.next_probe = now + PROBE_EVERY;
            let targets = self.store.retunnel_targets();
            // Targets a new session probed within the period are skipped.
            let sent = self.prober.probe(targets, PROBE_EVERY);
            self.metrics
                .neighbour_probes
                .fetch_add(sent as u64, Ordering::Relaxed);
        }
        if now >= self.next_report_check {
            self.next_report_check = now + Duration::from_secs(1);
            let thresholds = now >= self.next_threshold_check;
            if thresholds {
                self.next_threshold_check =
                    now + Duration::from_secs(self.config.threshold_check_secs);
            }
            self.reports(thresholds).await;
        }
    }

    async fn retransmit(&mut self, now: Instant) {
        let t1 = Duration::from_millis(self.config.response_timeout_ms);
        let due: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, o)| now.duration_since(o.sent) >= t1)
            .map(|(s, _)| *s)
            .collect();
        for sequence in due {
            let Some(mut out) = self.outstanding.remove(&sequence) else {
                continue;
            };
            if out.sends <= self.config.retries {
                out.sends += 1;
                out.sent = now;
                let (bytes, to, name) = (out.bytes.clone(), out.to, out.name);
                self.outstanding.insert(sequence, out);
                self.send(&bytes, to, name).await;
                continue;
            }
            match out.purpose {
                Purpose::Heartbeat { peer } => self.peer_lost(peer, now),
                Purpose::Report {
                    up_seid,
                    reports,
                    downlink_data,
                } => {
                    if self.log.allow() {
                        warn!(
                            up_seid,
                            "PFCP: a session report went unanswered: its volumes (and downlink data) go into the next one"
                        );
                    }
                    self.store.carry_back(up_seid, &reports, &downlink_data);
                }
            }
        }
    }

    fn peer_lost(&mut self, peer: IpAddr, now: Instant) {
        let Some(a) = self.peers.get_mut(&peer) else {
            return;
        };
        a.heartbeat_out = false;
        if a.lost_since.is_some() {
            return;
        }
        a.lost_since = Some(now);
        self.metrics.peers_lost.fetch_add(1, Ordering::Relaxed);
        let sessions = self.store.of_peer(peer).len();
        match self.config.on_peer_lost {
            OnPeerLost::Keep => warn!(
                %peer,
                sessions,
                keep_for_secs = self.config.lost_session_timeout_secs,
                "PFCP: the SMF does not answer heartbeats: its sessions stay in force until it comes back or the timeout"
            ),
            OnPeerLost::Release => {
                warn!(%peer, sessions, "PFCP: the SMF does not answer heartbeats: releasing its sessions (on_peer_lost = release)");
                self.release_peer_sessions(peer, "the SMF was lost");
                self.end_association(peer);
            }
        }
    }

    fn expire_lost(&mut self, now: Instant) {
        let timeout = Duration::from_secs(self.config.lost_session_timeout_secs);
        let expired: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, a)| {
                a.lost_since
                    .is_some_and(|t| now.duration_since(t) >= timeout)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.release_peer_sessions(
                peer,
                "the SMF stayed lost past pfcp.lost_session_timeout_secs",
            );
            self.end_association(peer);
        }
    }

    async fn heartbeats(&mut self, now: Instant) {
        let interval = Duration::from_secs(self.config.heartbeat_interval_secs);
        let due: Vec<(IpAddr, SocketAddr)> = self
            .peers
            .iter_mut()
            .filter(|(_, a)| !a.heartbeat_out && now >= a.next_heartbeat)
            .map(|(p, a)| {
                a.heartbeat_out = true;
                a.next_heartbeat = now + interval;
                (*p, a.addr)
            })
            .collect();
        for (peer, addr) in due {
            let message = Message::HeartbeatRequest(Heartbeat {
                recovery_time_stamp: self.recovery,
            });
            self.send_request(addr, None, message, Purpose::Heartbeat { peer })
                .await;
        }
    }

    async fn reports(&mut self, check_thresholds: bool) {
        for due in self.store.due_reports(check_thresholds) {
            let Due {
                up_seid,
                cp,
                peer,
                usage: reports,
                downlink_data,
            } = due;
            let reachable = self
                .peers
                .get(&peer)
                .filter(|a| a.lost_since.is_none())
                .map(|a| a.addr);
            let Some(addr) = reachable else {
                // Nobody to tell now: the volumes and downlink data wait for the next report.
                self.store.carry_back(up_seid, &reports, &downlink_data);
                continue;
            };
            for r in &reports {
                self.metrics.usage_report(trigger_name(r));
            }
            let mut report_type = 0;
            if !reports.is_empty() {
                report_type |= ReportType::USAGE;
            }
            let downlink_data_report = (!downlink_data.is_empty()).then(|| {
                report_type |= ReportType::DOWNLINK_DATA;
                self.metrics
                    .downlink_data_reports
                    .fetch_add(1, Ordering::Relaxed);
                DownlinkDataReport {
                    pdr_ids: downlink_data.clone(),
                }
            });
            let message = Message::SessionReportRequest(SessionReportRequest {
                report_type: ReportType(report_type),
                downlink_data_report,
                usage_report: reports.clone(),
            });
            self.send_request(
                addr,
                Some(cp.seid),
                message,
                Purpose::Report {
                    up_seid,
                    reports,
                    downlink_data,
                },
            )
            .await;
        }
    }
}

/// The metric label of a usage report's trigger.
fn trigger_name(r: &UsageReport) -> &'static str {
    use mecgw_pfcp::ie::UsageReportTrigger as T;
    let t = r.trigger.0;
    if t & T::VOLUME_THRESHOLD != 0 {
        "volume_threshold"
    } else if t & T::PERIODIC != 0 {
        "periodic"
    } else if t & T::TERMINATION != 0 {
        "termination"
    } else if t & T::IMMEDIATE != 0 {
        "immediate"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sequence: u32) -> RequestKey {
        RequestKey::of(
            b"request",
            sequence,
            SocketAddr::from(([127, 0, 0, 1], 8805)),
        )
    }

    #[test]
    fn the_response_cache_forgets_the_oldest_answers_first() {
        let mut cache = ResponseCache::new(Duration::from_secs(60), 2);
        for s in 1..=3 {
            cache.put(key(s), Cached::Done(vec![s as u8]));
        }
        assert!(cache.get(&key(1)).is_none());
        assert!(matches!(cache.get(&key(2)), Some(Cached::Done(b)) if b == &[2]));
        assert!(matches!(cache.get(&key(3)), Some(Cached::Done(b)) if b == &[3]));
    }

    #[test]
    fn answers_in_progress_outlive_the_bound_without_a_spin() {
        // Before, a cache full of answers in progress looped for ever on the next put.
        let mut cache = ResponseCache::new(Duration::from_secs(60), 2);
        for s in 1..=3 {
            cache.put(key(s), Cached::InProgress);
        }
        assert!((1..=3).all(|s| matches!(cache.get(&key(s)), Some(Cached::InProgress))));
        // Filled in: the oldest finished answers go first, down to the bound.
        for s in 1..=3 {
            cache.put(key(s), Cached::Done(Vec::new()));
        }
        cache.put(key(4), Cached::Done(Vec::new()));
        assert_eq!(cache.entries.len(), 2);
        assert!(cache.get(&key(4)).is_some());
        assert!(cache.get(&key(1)).is_none());
    }

    #[test]
    fn answers_expire_after_their_time() {
        let mut cache = ResponseCache::new(Duration::from_millis(10), 100);
        cache.put(key(1), Cached::Done(Vec::new()));
        cache.expire(Instant::now() + Duration::from_secs(1));
        assert!(cache.get(&key(1)).is_none());
    }
}
