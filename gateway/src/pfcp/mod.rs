//! mecgw's PFCP endpoint (TS 29.244, N4): the user-plane side an SMF programs.
//!
//! - [`server`]: the UDP socket, associations and heartbeats both ways, the retransmission
//!   cache, requests mecgw sends (heartbeats, session reports) with their retries, and what
//!   the endpoint answers to every datagram, good or bad;
//! - [`sessions`]: the sessions, what they took (SEIDs, TEIDs, counter slots) and what they
//!   put into the fast path, with their URRs' measurements;
//! - [`rules`]: one session's PDRs, FARs, QERs and URRs, and how they compile into fast-path
//!   entries;
//! - [`sdf`]: SDF filters' flow descriptions.
//!
//! The wire format is the `mecgw-pfcp` crate's. This module never parses bytes itself and
//! never touches the kernel except through [`sessions::Datapath`].

pub mod neighbours;
pub mod rules;
pub mod sdf;
pub mod server;
pub mod sessions;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Deserialize;

use crate::datapath::tables::IpPrefix;

/// `[pfcp]` in the daemon's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PfcpConfig {
    /// UDP address the endpoint listens on (default `0.0.0.0:8805`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// mecgw's Node ID: an IPv4 or IPv6 address, or an FQDN.
    pub node_id: String,
    /// The SMFs answered: addresses or prefixes. Datagrams from anyone else are not
    /// answered (counted).
    pub peers: Vec<IpPrefix>,
    /// Seconds between the Heartbeat Requests mecgw sends to each associated SMF.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u64,
    /// How long mecgw waits for a response before sending a request again (T1), ms.
    #[serde(default = "default_timeout")]
    pub response_timeout_ms: u64,
    /// How many times a request is sent again before giving up (N1); a peer whose
    /// heartbeats go unanswered that many times is lost.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// What happens to a lost peer's sessions: `keep` (they stay in force until the peer
    /// comes back with a new Recovery Time Stamp, or `lost_session_timeout_secs`) or
    /// `release` (deleted at once).
    #[serde(default)]
    pub on_peer_lost: OnPeerLost,
    /// With `on_peer_lost = "keep"`: seconds after which a lost peer's sessions are deleted.
    #[serde(default = "default_lost_timeout")]
    pub lost_session_timeout_secs: u64,
    /// Seconds between checks of URRs' volume thresholds (each check reads their PDRs'
    /// counters).
    #[serde(default = "default_threshold_check")]
    pub threshold_check_secs: u64,
    /// Sessions the fast path holds for PFCP (map sizes chosen at load).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// PDRs the fast path counts for PFCP (map sizes chosen at load).
    #[serde(default = "default_max_pdrs")]
    pub max_pdrs: u32,
    /// The first TEID of PFCP's range (mecgw allocates from here up; the tables file's
    /// sessions must use TEIDs and ids below it).
    #[serde(default = "default_teid_min")]
    pub teid_min: u32,
}

/// What happens to a lost peer's sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPeerLost {
    #[default]
    Keep,
    Release,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8805))
}
fn default_heartbeat() -> u64 {
    10
}
fn default_timeout() -> u64 {
    1000
}
fn default_retries() -> u32 {
    3
}
fn default_lost_timeout() -> u64 {
    600
}
fn default_threshold_check() -> u64 {
    2
}
fn default_max_sessions() -> u32 {
    mecgw_ebpf::MAX_PFCP_SESSIONS
}
fn default_max_pdrs() -> u32 {
    mecgw_ebpf::MAX_PDR_COUNTERS
}
fn default_teid_min() -> u32 {
    0x8000_0000
}

impl PfcpConfig {
    /// Every problem with the values, as `pfcp.field: what`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.node_id.is_empty() || self.node_id.len() > 255 {
            out.push("pfcp.node_id: give an address or an FQDN (1-255 characters)".into());
        }
        if self.peers.is_empty() {
            out.push("pfcp.peers: list the SMFs' addresses (nobody would be answered)".into());
        }
        if self.heartbeat_interval_secs == 0 {
            out.push("pfcp.heartbeat_interval_secs: must be at least 1".into());
        }
        if !(10..=60_000).contains(&self.response_timeout_ms) {
            out.push("pfcp.response_timeout_ms: must be 10-60000".into());
        }
        if self.retries == 0 || self.retries > 20 {
            out.push("pfcp.retries: must be 1-20".into());
        }
        if self.max_sessions == 0 || self.max_sessions > mecgw_ebpf::MAX_PFCP_SESSIONS {
            out.push(format!(
                "pfcp.max_sessions: must be 1-{}",
                mecgw_ebpf::MAX_PFCP_SESSIONS
            ));
        }
        if self.max_pdrs == 0 || self.max_pdrs > 4 * mecgw_ebpf::MAX_PDR_COUNTERS {
            out.push(format!(
                "pfcp.max_pdrs: must be 1-{}",
                4 * mecgw_ebpf::MAX_PDR_COUNTERS
            ));
        }
        if self.teid_min < 0x100 || self.teid_min.checked_add(self.max_sessions).is_none() {
            out.push(
                "pfcp.teid_min: must leave room below it for the tables (at least 0x100) and \
                 above it for max_sessions ids"
                    .into(),
            );
        }
        if self.threshold_check_secs == 0 {
            out.push("pfcp.threshold_check_secs: must be at least 1".into());
        }
        out
    }

    /// Whether datagrams from `addr` are answered.
    pub fn is_peer(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            a => a,
        };
        self.peers.iter().any(|p| p.contains(addr))
    }
}

/// Counters of the endpoint, rendered on the operations port.
#[derive(Debug, Default)]
pub struct PfcpMetrics {
    pub associations: AtomicU64,
    pub sessions: AtomicU64,
    pub peers_lost: AtomicU64,
    pub retransmissions_answered: AtomicU64,
    /// GTP-U Echo Requests sent to re-tunnel targets.
    pub neighbour_probes: AtomicU64,
    /// QERs accepted with an MBR or GBR, which mecgw does not enforce.
    pub unenforced: AtomicU64,
    /// Sessions deleted because an establishment reused their CP F-SEID.
    pub stale_replaced: AtomicU64,
    /// Session Report Requests sent with a Downlink Data Report (a buffering PDR's first
    /// packet).
    pub downlink_data_reports: AtomicU64,
    /// (message name, direction "in"/"out") → count.
    pub messages: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Cause name → requests refused with it.
    pub rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Reason → datagrams not answered.
    pub ignored: Mutex<BTreeMap<&'static str, u64>>,
    /// Trigger → usage reports sent.
    pub usage_reports: Mutex<BTreeMap<&'static str, u64>>,
}

fn snapshot<K: Ord + Clone>(m: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut g = match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    *g.entry(key).or_insert(0) += 1;
}

impl PfcpMetrics {
    pub fn message(&self, name: &'static str, direction: &'static str) {
        bump(&self.messages, (name, direction));
    }
    pub fn reject(&self, cause: &'static str) {
        bump(&self.rejected, cause);
    }
    pub fn ignore(&self, reason: &'static str) {
        bump(&self.ignored, reason);
    }
    pub fn usage_report(&self, trigger: &'static str) {
        bump(&self.usage_reports, trigger);
    }
}

impl prometheus_client::collector::Collector for PfcpMetrics {
    fn encode(&self, mut e: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use crate::openmetrics::{counter, counters, gauge};
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        gauge(
            &mut e,
            "mecgw_pfcp_associations",
            "PFCP associations with SMFs (lost ones included until they end).",
            load(&self.associations),
        )?;
        gauge(
            &mut e,
            "mecgw_pfcp_sessions",
            "PFCP sessions in force.",
            load(&self.sessions),
        )?;
        for (name, help, value) in [
            (
                "mecgw_pfcp_peers_lost_total",
                "SMFs declared lost (heartbeats unanswered).",
                &self.peers_lost,
            ),
            (
                "mecgw_pfcp_retransmissions_total",
                "Retransmitted requests answered from the cache (applied once).",
                &self.retransmissions_answered,
            ),
            (
                "mecgw_pfcp_neighbour_probes_total",
                "GTP-U Echo Requests sent to re-tunnel targets (so their neighbour entries resolve).",
                &self.neighbour_probes,
            ),
            (
                "mecgw_pfcp_stale_sessions_replaced_total",
                "Sessions deleted because the SMF established again under their CP F-SEID.",
                &self.stale_replaced,
            ),
            (
                "mecgw_pfcp_unenforced_total",
                "QERs accepted with an MBR or GBR, which mecgw does not enforce.",
                &self.unenforced,
            ),
            (
                "mecgw_pfcp_downlink_data_reports_total",
                "Downlink Data Reports sent (a buffering PDR's first packet; BUFF buffers zero packets).",
                &self.downlink_data_reports,
            ),
        ] {
            counter(&mut e, name, help, load(value))?;
        }
        counters(
            &mut e,
            "mecgw_pfcp_messages_total",
            "PFCP messages received (in) and sent (out), by message.",
            snapshot(&self.messages)
                .into_iter()
                .map(|((name, dir), v)| ([("message", name), ("direction", dir)], v)),
        )?;
        for (family, help, label, map) in [
            (
                "mecgw_pfcp_rejected_total",
                "Requests refused, by Cause (nothing was changed).",
                "cause",
                &self.rejected,
            ),
            (
                "mecgw_pfcp_ignored_total",
                "Datagrams not answered, by reason.",
                "reason",
                &self.ignored,
            ),
            (
                "mecgw_pfcp_usage_reports_total",
                "Usage reports sent, by trigger.",
                "trigger",
                &self.usage_reports,
            ),
        ] {
            counters(
                &mut e,
                family,
                help,
                snapshot(map).into_iter().map(|(k, v)| ([(label, k)], v)),
            )?;
        }
        Ok(())
    }
}
