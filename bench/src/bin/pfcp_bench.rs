//! The PFCP benchmark behind `cargo xtask bench pfcp` (run in release mode, as root).
//!
//! The endpoint (`mecgw::pfcp::server::PfcpEndpoint`) runs on a real fast path (the XDP
//! programs loaded with the PFCP maps at the daemon's default sizes, the tables of
//! `mecgw_bench::scale` installed beside them), and an SMF in this process drives it over
//! loopback UDP with `mecgw_pfcp::encode`/`decode`. Every session is what an SMF sets up for a
//! local breakout: an uplink PDR with CHOOSE F-TEID and an SDF filter for the edge prefix
//! (192.0.2.0/24) → FAR FORW to SGi-LAN/N6-LAN; a catch-all uplink PDR on the same F-TEID →
//! FAR FORW to Core (passed on unchanged); a downlink PDR by UE address → FAR FORW to Access
//! with Outer Header Creation towards a gNB. Each session has a UE address of its own.
//!
//! Three parts, each with a baseline measured in the same run:
//! 1. Establishment rate: requests pipelined (a window of outstanding requests, matched by
//!    sequence number, encoded before the clock starts), filling 0 → `sessions/10` (at most
//!    10,000) and on to `sessions`; every run but the last deletes them all again (the
//!    deletion rate is shown too). Median over the runs. The proof: every response has
//!    Cause 1, the endpoint counted every request and its session gauge is right, and the
//!    first and last session of the phase are in force in the fast path.
//! 2. Closed-loop latency at both levels, one request at a time, p50 and p99 of: Heartbeat
//!    (the baseline), Session Modification (adds, then removes, an SDF PDR), Session
//!    Establishment, and establishment → fast path: a downlink packet to the new UE is
//!    test-run in a loop from the moment the request is sent until it is encapsulated (its
//!    entry is written after the uplink tunnel's, so this bounds both), and at the response
//!    the new session's uplink G-PDU (whose TEID only the response tells) is judged once.
//!    So that the uplink on the new TEID can be watched from the send as well, a third
//!    establishment per sample gives its F-TEID explicitly (a TEID in mecgw's range, which
//!    mecgw accepts as it does CHOOSE): its uplink G-PDU is test-run in a loop from the send
//!    until the fast path breaks it out (`pdr_local`), p50 and p99 of that time.
//!    The sessions these samples create are deleted afterwards.
//! 3. Kernel ns/pkt through BPF_PROG_TEST_RUN with `sessions` PFCP sessions installed by the
//!    endpoint, against the same cases through tables-file sessions (programs loaded without
//!    PFCP maps, as `fastpath_bench` measures them; and on the PFCP-loaded programs), with
//!    the empty program as baseline. Paths that leave the frame unchanged are measured in
//!    one batch call; paths that rewrite it through the restore wrapper (see
//!    `fastpath_bench`). The proof: the reason counter grew by exactly the repetitions, and
//!    one judged run named the expected session and PDR.
//!
//! Figures are printed, never judged: the goals are printed beside them.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, builder::RangedU64ValueParser};
use mecgw::{
    datapath::{
        BenchTarget, Direction, FastPath, FastPathOptions, Reason, compile::compile,
        pfcp_maps::PfcpOptions, tables::IpPrefix,
    },
    pfcp::{
        OnPeerLost, PfcpConfig, PfcpMetrics,
        server::PfcpEndpoint,
        sessions::{Datapath, Identities, StoreOptions},
    },
};
use mecgw_bench::{
    median,
    scale::{UPLINK_TEID_BASE, tables, ue},
    test_run::{batch, ns, reason_count},
};
use mecgw_pfcp::{
    MAX_MESSAGE_BYTES, decode, encode,
    ie::{
        ApplyAction, Cause, CreateFar, CreatePdr, FSeid, FTeid, ForwardingParameters, Interface,
        NodeId, OuterHeaderCreation, OuterHeaderRemoval, Pdi, SdfFilter, UeIpAddress,
    },
    message::{
        AssociationSetupRequest, Header, Heartbeat, Message, SessionEstablishmentRequest,
        SessionModificationRequest, message_type,
    },
};
use mecgw_testbed::packet::*;

#[derive(Parser)]
#[command(
    about = "mecgw PFCP benchmark: establishment rate, closed-loop latency against heartbeats, and fast-path ns per packet of PFCP sessions against tables-file sessions"
)]
struct Args {
    /// Runs of each rate and fast-path measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Repetitions per BPF_PROG_TEST_RUN call (fast-path part).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Sessions at the end of the fill (the first phase fills a tenth, at most 10,000).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(20..))]
    sessions: u32,
    /// Samples of each closed-loop latency, at each level.
    #[arg(long, default_value_t = 2_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    samples: usize,
    /// Establishment (and deletion) requests outstanding at once.
    #[arg(long, default_value_t = 128, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    window: usize,
}

/// PFCP's TEIDs and session ids start here (the daemon's default); the tables' are below.
const TEID_MIN: u32 = 0x8000_0000;
const SMF: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SMF_RECOVERY: u32 = 3_900_000_000;
const GNB: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 7);
/// The edge services' prefix: the SDF filter breaks it out (the tables' LOCAL rule is for the
/// same prefix, so both paths break out the same packet).
const EDGE_FILTER: &str = "permit out ip from 192.0.2.0/24 to assigned";
const EDGE_DST: &str = "192.0.2.10";
/// Matched by no SDF filter: the catch-all PDR passes it on to the core.
const CORE_DST: &str = "203.0.113.10";
/// The filter of the PDR the modification samples add and remove.
const MODIFY_FILTER: &str = "permit out udp from 198.51.100.0/24 to assigned";
/// How long the SMF waits for a response before it sends the request again (T1), and how
/// many times it does (N1): the endpoint's own defaults.
const T1: Duration = Duration::from_secs(1);
const N1: usize = 3;
/// How long a closed-loop request waits for its response.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(2);

/// The UE address of PFCP session `i` (10.128.0.1 onwards; the tables' UEs are 10.0.0.1
/// onwards).
fn pfcp_ue(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000 | (i + 1))
}

// ---------------------------------------------------------------------------------------
// What the SMF sends.

fn choose() -> FTeid {
    // One CHOOSE ID: both uplink PDRs share the F-TEID mecgw allocates.
    FTeid::Choose {
        ipv4: true,
        ipv6: false,
        choose_id: Some(1),
    }
}

fn uplink_pdr(
    pdr_id: u16,
    precedence: u32,
    ue: Ipv4Addr,
    filter: Option<&str>,
    far_id: u32,
) -> CreatePdr {
    let local = filter.is_some();
    CreatePdr {
        pdr_id,
        precedence,
        pdi: Pdi {
            source_interface: Interface::Access,
            local_f_teid: Some(choose()),
            network_instance: None,
            ue_ip_address: vec![UeIpAddress {
                ipv4: Some(ue),
                ..UeIpAddress::default()
            }],
            sdf_filters: filter
                .map(|f| SdfFilter {
                    flow_description: Some(f.to_string()),
                    ..SdfFilter::default()
                })
                .into_iter()
                .collect(),
            qfis: Vec::new(),
        },
        // Broken out locally: the GTP-U/UDP/IPv4 header goes; passed to the core: it stays.
        outer_header_removal: local.then_some(OuterHeaderRemoval {
            description: 0,
            extension_header_deletion: None,
        }),
        far_id: Some(far_id),
        urr_ids: Vec::new(),
        qer_ids: Vec::new(),
    }
}

fn forward(far_id: u32, to: Interface, ohc: Option<OuterHeaderCreation>) -> CreateFar {
    CreateFar {
        far_id,
        apply_action: ApplyAction(ApplyAction::FORW),
        forwarding_parameters: Some(ForwardingParameters {
            destination_interface: Some(to),
            network_instance: None,
            outer_header_creation: ohc,
        }),
        bar_id: None,
    }
}

/// Session `i`: local breakout of the edge prefix, the rest to the core, downlink to the gNB.
fn establishment(i: u32) -> Message {
    let ue = pfcp_ue(i);
    Message::SessionEstablishmentRequest(SessionEstablishmentRequest {
        node_id: NodeId::Ipv4(SMF),
        cp_f_seid: FSeid {
            seid: u64::from(i) + 1,
            ipv4: Some(SMF),
            ipv6: None,
        },
        create_pdr: vec![
            uplink_pdr(1, 100, ue, Some(EDGE_FILTER), 1),
            uplink_pdr(2, 200, ue, None, 2),
            CreatePdr {
                pdr_id: 3,
                precedence: 200,
                pdi: Pdi {
                    source_interface: Interface::SgiLan,
                    local_f_teid: None,
                    network_instance: None,
                    ue_ip_address: vec![UeIpAddress {
                        ipv4: Some(ue),
                        is_destination: true,
                        ..UeIpAddress::default()
                    }],
                    sdf_filters: Vec::new(),
                    qfis: Vec::new(),
                },
                outer_header_removal: None,
                far_id: Some(3),
                urr_ids: Vec::new(),
                qer_ids: Vec::new(),
            },
        ],
        create_far: vec![
            forward(1, Interface::SgiLan, None),
            forward(2, Interface::Core, None),
            forward(
                3,
                Interface::Access,
                Some(OuterHeaderCreation {
                    description: OuterHeaderCreation::GTPU_UDP_IPV4,
                    teid: Some(0x0100_0000 + i),
                    ipv4: Some(GNB),
                    ipv6: None,
                    port: None,
                }),
            ),
        ],
        create_urr: Vec::new(),
        create_qer: Vec::new(),
        pdn_type: Some(1),
        user_id: None,
    })
}

/// Session `i` with the F-TEID of its uplink PDRs given by the SMF (`teid` on `n3`) instead
/// of CHOOSE: the TEID is known before the response, so the fast path can be watched for it
/// from the send.
fn establishment_with_teid(i: u32, teid: u32, n3: Option<Ipv4Addr>) -> Message {
    let mut m = establishment(i);
    if let Message::SessionEstablishmentRequest(r) = &mut m {
        for p in &mut r.create_pdr {
            if p.pdi.local_f_teid.is_some() {
                p.pdi.local_f_teid = Some(FTeid::Assigned {
                    teid,
                    ipv4: n3,
                    ipv6: None,
                });
            }
        }
    }
    m
}

/// The TEID the SMF gives latency session `index` (establishment with an explicit F-TEID):
/// in mecgw's range, far above what CHOOSE hands out in a run.
fn explicit_teid(index: u32) -> u32 {
    TEID_MIN + 0x4000_0000 + index
}

/// Adds PDR 4 (another SDF filter → FAR 1) to session `i`, or removes it again.
fn modification(i: u32, add: bool) -> Message {
    let mut m = SessionModificationRequest::default();
    if add {
        m.create_pdr = vec![uplink_pdr(4, 150, pfcp_ue(i), Some(MODIFY_FILTER), 1)];
    } else {
        m.remove_pdr = vec![4];
    }
    Message::SessionModificationRequest(m)
}

// ---------------------------------------------------------------------------------------
// Frames.

/// A G-PDU of the UE `src` on `teid` to `dst`, as the gNB sends it (152 bytes: a multiple of
/// 8, as the restore wrapper needs).
fn gpdu(teid: u32, src: Ipv4Addr, dst: &str) -> Vec<u8> {
    let inner = ipv4(
        src.octets(),
        v4(dst),
        17,
        64,
        0,
        &udp(40000, 443, &[0x5a; 66]),
    );
    n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, teid, None, &[ul_container(9)], &inner),
    )
}

/// A packet from the edge services to the UE `dst` (112 bytes).
fn to_ue(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(MAC_A, MAC_B, 0x0800);
    f.extend_from_slice(&ipv4(
        v4(EDGE_DST),
        dst.octets(),
        17,
        64,
        0,
        &udp(443, 40000, &[0x5a; 70]),
    ));
    f
}

// ---------------------------------------------------------------------------------------
// The SMF.

/// An SMF on a loopback UDP socket with its own sequence numbers.
struct Smf {
    sock: UdpSocket,
    upf: SocketAddr,
    next_sequence: u32,
    buf: Vec<u8>,
    /// Datagrams that were not a response awaited (requests from the UPF, late responses).
    stray: u64,
}

impl Smf {
    fn new(upf: SocketAddr) -> anyhow::Result<Smf> {
        let sock = UdpSocket::bind((SMF, 0)).context("binding the SMF's socket")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .context("SMF socket timeout")?;
        Ok(Smf {
            sock,
            upf,
            next_sequence: 1,
            buf: vec![0; MAX_MESSAGE_BYTES + 1],
            stray: 0,
        })
    }

    /// `message` with the next sequence number: (sequence, bytes).
    fn encode(&mut self, seid: Option<u64>, message: &Message) -> (u32, Vec<u8>) {
        let sequence = self.next_sequence;
        // 24 bits; never reused within a run (the endpoint caches responses by sequence).
        self.next_sequence = (self.next_sequence + 1) & 0x00ff_ffff;
        let header = Header {
            message_type: message.message_type(),
            seid,
            sequence,
            priority: None,
        };
        (sequence, encode(&header, message))
    }

    fn send(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.sock
            .send_to(bytes, self.upf)
            .context("sending to the endpoint")?;
        Ok(())
    }

    /// The next response from the UPF, if one comes within the socket's timeout (blocking)
    /// or at once (non-blocking). Requests from the UPF and other datagrams are counted as
    /// stray.
    fn try_recv(&mut self) -> anyhow::Result<Option<(Header, Message)>> {
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let decoded = (from == self.upf)
                    .then(|| self.buf.get(..n).map(decode))
                    .flatten();
                match decoded {
                    Some(Ok((h, m))) if !message_type::is_request(h.message_type) => {
                        Ok(Some((h, m)))
                    }
                    _ => {
                        self.stray += 1;
                        Ok(None)
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receiving from the endpoint"),
        }
    }

    /// Sends one request and waits for its response: (time from send to response, response).
    fn request(
        &mut self,
        seid: Option<u64>,
        message: &Message,
    ) -> anyhow::Result<Option<(Duration, Message)>> {
        let (sequence, bytes) = self.encode(seid, message);
        let start = Instant::now();
        self.send(&bytes)?;
        loop {
            if let Some((h, m)) = self.try_recv()? {
                if h.sequence == sequence {
                    return Ok(Some((start.elapsed(), m)));
                }
                self.stray += 1;
            }
            if start.elapsed() > RESPONSE_DEADLINE {
                return Ok(None);
            }
        }
    }

    /// Sends `requests` with at most `window` outstanding; the responses in request order.
    /// Requests the timed pass got no response to are sent again afterwards, as an SMF
    /// would after T1 (N1 times at most), outside the time measured.
    fn pipeline(
        &mut self,
        requests: &[(Option<u64>, Message)],
        window: usize,
    ) -> anyhow::Result<Pipelined> {
        // Encoded before the clock starts: the figure is the endpoint's, not our encoder's.
        let encoded: Vec<(u32, Vec<u8>)> = requests
            .iter()
            .map(|(seid, m)| self.encode(*seid, m))
            .collect();
        let mut replies: Vec<Option<Message>> = vec![None; requests.len()];
        let all: Vec<usize> = (0..encoded.len()).collect();
        let drops = socket_drops(self.upf.port());
        let start = Instant::now();
        let last = self.exchange(&encoded, &all, window, &mut replies)?;
        let elapsed = last.duration_since(start);
        let drops = socket_drops(self.upf.port())
            .zip(drops)
            .map(|(after, before)| after - before);
        let missing = |replies: &[Option<Message>]| -> Vec<usize> {
            (0..replies.len())
                .filter(|&i| replies[i].is_none())
                .collect()
        };
        let retried = missing(&replies);
        let lost = retried.len();
        let mut retransmitted = 0;
        for _ in 0..N1 {
            let todo = missing(&replies);
            if todo.is_empty() {
                break;
            }
            retransmitted += todo.len();
            self.exchange(&encoded, &todo, window, &mut replies)?;
        }
        Ok(Pipelined {
            elapsed,
            lost,
            drops,
            retransmitted,
            unanswered: missing(&replies).len(),
            retried,
            replies,
        })
    }

    /// Sends the requests `todo` (indexes into `encoded`) with at most `window` outstanding,
    /// and puts their responses into `replies`, until every one is answered or none came for
    /// T1. Returns when the last response came.
    fn exchange(
        &mut self,
        encoded: &[(u32, Vec<u8>)],
        todo: &[usize],
        window: usize,
        replies: &mut [Option<Message>],
    ) -> anyhow::Result<Instant> {
        let mut pending: HashMap<u32, usize> = HashMap::with_capacity(window);
        let (mut next, mut done) = (0usize, 0usize);
        let mut last = Instant::now();
        while done < todo.len() {
            while next < todo.len() && pending.len() < window {
                let (sequence, bytes) = &encoded[todo[next]];
                self.send(bytes)?;
                pending.insert(*sequence, todo[next]);
                next += 1;
            }
            match self.try_recv()? {
                Some((h, m)) => match pending.remove(&h.sequence) {
                    Some(i) => {
                        replies[i] = Some(m);
                        done += 1;
                        last = Instant::now();
                    }
                    None => self.stray += 1,
                },
                None if last.elapsed() > T1 => break,
                None => {}
            }
        }
        Ok(last)
    }

    fn associate(&mut self) -> anyhow::Result<()> {
        let setup = Message::AssociationSetupRequest(AssociationSetupRequest {
            node_id: NodeId::Ipv4(SMF),
            recovery_time_stamp: SMF_RECOVERY,
            up_function_features: None,
            cp_function_features: None,
        });
        match self.request(None, &setup)? {
            Some((_, Message::AssociationSetupResponse(r))) if r.cause == Cause::ACCEPTED => Ok(()),
            other => bail!("Association Setup not accepted: {other:?}"),
        }
    }
}

/// A pipelined run: how long the timed pass took (from the first send to the last response),
/// what it lost, and the responses after retransmissions.
struct Pipelined {
    elapsed: Duration,
    /// Requests without a response in the timed pass.
    lost: usize,
    /// Datagrams the kernel dropped during the timed pass because the endpoint's socket
    /// receive buffer was full, if `/proc/net/udp` says.
    drops: Option<u64>,
    retransmitted: usize,
    /// Requests without a response even after the retransmissions.
    unanswered: usize,
    /// The requests the timed pass got no response to.
    retried: Vec<usize>,
    replies: Vec<Option<Message>>,
}

impl Pipelined {
    /// Responses with Cause 1 in the timed pass, per second.
    fn rate(&self) -> f64 {
        let accepted = |m: &Option<Message>| m.as_ref().and_then(cause_of) == Some(Cause::ACCEPTED);
        let all = self.replies.iter().filter(|m| accepted(m)).count();
        let later = self
            .retried
            .iter()
            .filter(|&&i| accepted(&self.replies[i]))
            .count();
        (all - later) as f64 / self.elapsed.as_secs_f64()
    }

    /// What was lost and recovered, for a proof column; empty when nothing was.
    fn losses(&self) -> String {
        if self.lost == 0 {
            return String::new();
        }
        format!(
            "; LOST {} in the timed pass (dropped at the endpoint's full socket receive buffer: {}), retransmitted after it (untimed): {} requests, {} still unanswered",
            self.lost,
            self.drops.map_or("unknown".into(), |d| format!("+{d}")),
            self.retransmitted,
            self.unanswered
        )
    }
}

/// The datagrams the kernel dropped for the IPv4 UDP socket on `port` because its receive
/// buffer was full (the `drops` column of `/proc/net/udp`).
fn socket_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        (p == port).then(|| fields.last()?.parse().ok()).flatten()
    })
}

/// The Cause of a session response.
fn cause_of(m: &Message) -> Option<Cause> {
    match m {
        Message::SessionEstablishmentResponse(r) => Some(r.cause),
        Message::SessionModificationResponse(r) => Some(r.cause),
        Message::SessionDeletionResponse(r) => Some(r.cause),
        _ => None,
    }
}

/// An established session: its UP SEID and the TEID mecgw chose.
#[derive(Clone, Copy, Debug)]
struct Established {
    up_seid: u64,
    teid: u32,
}

fn established(m: &Message) -> Option<Established> {
    let Message::SessionEstablishmentResponse(r) = m else {
        return None;
    };
    if r.cause != Cause::ACCEPTED {
        return None;
    }
    let teid = r.created_pdr.iter().find_map(|c| match c.local_f_teid {
        Some(FTeid::Assigned { teid, .. }) if c.pdr_id == 1 => Some(teid),
        _ => None,
    })?;
    Some(Established {
        up_seid: r.up_f_seid.as_ref()?.seid,
        teid,
    })
}

/// Responses with Cause 1, and the others by Cause name (or what came instead).
#[derive(Default)]
struct Causes {
    accepted: usize,
    other: BTreeMap<String, usize>,
}

impl Causes {
    fn count(&mut self, m: Option<&Message>) {
        match m.map(|m| (m, cause_of(m))) {
            Some((_, Some(c))) if c == Cause::ACCEPTED => self.accepted += 1,
            Some((_, Some(c))) => *self.other.entry(c.name().to_string()).or_default() += 1,
            Some((m, None)) => {
                *self
                    .other
                    .entry(format!("type {}", m.message_type()))
                    .or_default() += 1
            }
            None => *self.other.entry("no response".into()).or_default() += 1,
        }
    }

    /// `accepted/total Cause 1`, and what the others were.
    fn show(&self) -> String {
        let total = self.accepted + self.other.values().sum::<usize>();
        let mut s = format!("{}/{total} Cause 1", self.accepted);
        for (what, n) in &self.other {
            s += &format!(", {n} {what}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// The endpoint and what it counts.

/// The requests of `name` the endpoint has received so far.
fn counted(metrics: &PfcpMetrics, name: &'static str) -> u64 {
    let messages = match metrics.messages.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    messages.get(&(name, "in")).copied().unwrap_or(0)
}

fn gauge(metrics: &PfcpMetrics) -> u64 {
    metrics.sessions.load(std::sync::atomic::Ordering::Relaxed)
}

/// The endpoint as the daemon starts it with a default `[pfcp]` (map sizes included), on
/// 127.0.0.1 for one SMF on 127.0.0.1; no heartbeats from mecgw within the run.
fn pfcp_config() -> anyhow::Result<PfcpConfig> {
    let peer = IpPrefix::new(IpAddr::V4(SMF), 32).context("127.0.0.1/32 is a prefix")?;
    Ok(PfcpConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        node_id: "127.0.0.1".into(),
        peers: vec![peer],
        heartbeat_interval_secs: 3600,
        response_timeout_ms: 1000,
        retries: 3,
        on_peer_lost: OnPeerLost::Keep,
        lost_session_timeout_secs: 600,
        threshold_check_secs: 2,
        max_sessions: PfcpOptions::DEFAULT.sessions,
        max_pdrs: PfcpOptions::DEFAULT.pdrs,
        teid_min: TEID_MIN,
    })
}

/// The bench's view of the running endpoint: the SMF, the fast path, and the sessions.
struct Bed {
    smf: Smf,
    fp: Arc<FastPath>,
    metrics: Arc<PfcpMetrics>,
    /// Session `i` of the fill, once established.
    sessions: Vec<Option<Established>>,
    /// mecgw's N3 address (the address of the F-TEIDs the SMF gives).
    n3: Option<Ipv4Addr>,
}

impl Bed {
    /// Establishes sessions `from..to` pipelined; the rate and its proof, as a table row.
    fn fill(&mut self, a: &Args, from: u32, to: u32) -> anyhow::Result<(f64, String)> {
        let requests: Vec<(Option<u64>, Message)> =
            (from..to).map(|i| (Some(0), establishment(i))).collect();
        let before = counted(&self.metrics, "session_establishment_request");
        let run = self.smf.pipeline(&requests, a.window)?;
        let mut causes = Causes::default();
        for (i, reply) in (from..to).zip(&run.replies) {
            causes.count(reply.as_ref());
            self.sessions[i as usize] = reply.as_ref().and_then(established);
        }
        let rate = run.rate();
        let got = counted(&self.metrics, "session_establishment_request") - before;
        let mut proof = causes.show();
        proof += &format!(
            "; endpoint counted {got}/{} requests; gauge {} (expected {to})",
            requests.len(),
            gauge(&self.metrics)
        );
        proof += &run.losses();
        proof += &format!("; fast path: {}", self.in_force(&[from, to - 1])?);
        Ok((rate, proof))
    }

    /// Whether sessions `which` are in force in the fast path: uplink to the edge broken out
    /// by PDR 1, uplink elsewhere passed by PDR 2, downlink encapsulated by PDR 3.
    fn in_force(&self, which: &[u32]) -> anyhow::Result<String> {
        let mut bad = Vec::new();
        for &i in which {
            let Some(s) = self.sessions[i as usize] else {
                bad.push(format!("session {i} not established"));
                continue;
            };
            let ue = pfcp_ue(i);
            for (direction, frame, reason, pdr) in [
                (
                    Direction::Uplink,
                    gpdu(s.teid, ue, EDGE_DST),
                    Reason::PdrLocal,
                    1,
                ),
                (
                    Direction::Uplink,
                    gpdu(s.teid, ue, CORE_DST),
                    Reason::PdrForward,
                    2,
                ),
                (Direction::Downlink, to_ue(ue), Reason::Encapsulated, 3),
            ] {
                let j = self.fp.judge(direction, &frame)?;
                if j.reason != reason || j.pdr != Some(pdr) {
                    bad.push(format!(
                        "session {i}: {:?} PDR {:?}, expected {:?} PDR {pdr}",
                        j.reason, j.pdr, reason
                    ));
                }
            }
        }
        Ok(if bad.is_empty() {
            format!("sessions {which:?} in force (3 paths each)")
        } else {
            format!("MISMATCH: {}", bad.join("; "))
        })
    }

    /// Deletes `seids` pipelined: the rate and its proof.
    fn delete(&mut self, a: &Args, seids: &[u64]) -> anyhow::Result<(f64, String)> {
        let requests: Vec<(Option<u64>, Message)> = seids
            .iter()
            .map(|s| (Some(*s), Message::SessionDeletionRequest))
            .collect();
        let run = self.smf.pipeline(&requests, a.window)?;
        let mut causes = Causes::default();
        for r in &run.replies {
            causes.count(r.as_ref());
        }
        let rate = run.rate();
        Ok((
            rate,
            format!(
                "{}; gauge {} after{}",
                causes.show(),
                gauge(&self.metrics),
                run.losses()
            ),
        ))
    }

    /// Deletes every session of the fill.
    fn delete_all(&mut self, a: &Args) -> anyhow::Result<(f64, String)> {
        let seids: Vec<u64> = self.sessions.iter().flatten().map(|s| s.up_seid).collect();
        let out = self.delete(a, &seids)?;
        self.sessions.iter_mut().for_each(|s| *s = None);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Latency.

/// Durations in µs, sorted.
struct Sample(Vec<f64>);

impl Sample {
    fn new(mut v: Vec<f64>) -> Sample {
        v.sort_by(f64::total_cmp);
        Sample(v)
    }

    /// The nearest-rank percentile `q` (0-1); NaN if empty.
    fn at(&self, q: f64) -> f64 {
        let n = self.0.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.0[rank - 1]
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// How soon one kind of probed establishment was in force in the fast path: its packet,
/// test-run from the moment the request was sent, against its response.
#[derive(Default)]
struct InForce {
    /// µs from the send until the probed packet was first judged as the new session says.
    first: Vec<f64>,
    /// µs from the send to the response.
    response: Vec<f64>,
    /// In force for a test run that started before the response was read.
    before: usize,
    /// Not before, but for the first test run after the response was read: written before
    /// the response (the test run that missed it raced the write).
    at: usize,
    later: usize,
    never: usize,
    causes: Causes,
}

impl InForce {
    /// Sends `bytes` (request `sequence`) and test-runs `in_force` from the send on until it
    /// says yes and the response has come, or the deadline passes; each test run's µs go to
    /// `poll`. Counts what it saw; returns the response.
    fn race(
        &mut self,
        bed: &mut Bed,
        (sequence, bytes): (u32, Vec<u8>),
        poll: &mut Vec<f64>,
        mut in_force: impl FnMut(&Bed) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Option<Message>> {
        bed.smf.sock.set_nonblocking(true).context("SMF socket")?;
        let start = Instant::now();
        bed.smf.send(&bytes)?;
        let (mut seen, mut response) = (None, None);
        // Test runs started after the response was read, before the packet was in force.
        let mut runs_after = 0;
        while seen.is_none() || response.is_none() {
            if seen.is_none() {
                let t = Instant::now();
                let yes = in_force(bed)?;
                poll.push(us(t.elapsed()));
                if yes {
                    seen = Some((start.elapsed(), runs_after));
                } else {
                    if response.is_some() {
                        runs_after += 1;
                    }
                    // On two CPUs a busy poll can hold the one the endpoint wants.
                    std::thread::yield_now();
                }
            }
            if response.is_none()
                && let Some((h, m)) = bed.smf.try_recv()?
            {
                if h.sequence == sequence {
                    response = Some((start.elapsed(), m));
                } else {
                    bed.smf.stray += 1;
                }
            }
            if start.elapsed() > RESPONSE_DEADLINE {
                break;
            }
        }
        bed.smf.sock.set_nonblocking(false).context("SMF socket")?;
        self.causes.count(response.as_ref().map(|(_, m)| m));
        match (seen, &response) {
            (None, _) => self.never += 1,
            (Some((f, _)), None) => self.first.push(us(f)),
            (Some((f, after)), Some((r, _))) => {
                self.first.push(us(f));
                if f <= *r {
                    self.before += 1;
                } else if after == 0 {
                    self.at += 1;
                } else {
                    self.later += 1;
                }
            }
        }
        Ok(response.map(|(r, m)| {
            self.response.push(us(r));
            m
        }))
    }
}

/// What the fast-path probes of establishments saw.
#[derive(Default)]
struct Probes {
    /// A downlink packet to the new UE (CHOOSE F-TEID establishments).
    downlink: InForce,
    /// Then the uplink G-PDU on the TEID the response gave: judged by the first test run
    /// after the response, later, never.
    uplink_at: usize,
    uplink_later: usize,
    uplink_never: usize,
    /// The uplink G-PDU on an F-TEID the SMF gave (so it can be test-run from the send).
    teid: InForce,
    /// µs one test run of the polling loop takes.
    poll: Vec<f64>,
}

impl Probes {
    /// Establishes session `index`, test-running a downlink packet to its UE from the send
    /// on until it is encapsulated and the response has come; then judges the uplink G-PDU
    /// (whose TEID only the response tells). Returns the new session's UP SEID.
    fn probe(&mut self, bed: &mut Bed, index: u32) -> anyhow::Result<Option<u64>> {
        let ue = pfcp_ue(index);
        let down = to_ue(ue);
        let request = bed.smf.encode(Some(0), &establishment(index));
        let response = self.downlink.race(bed, request, &mut self.poll, |bed| {
            Ok(bed.fp.judge(Direction::Downlink, &down)?.reason == Reason::Encapsulated)
        })?;
        let Some(s) = response.as_ref().and_then(established) else {
            return Ok(None);
        };
        let up = gpdu(s.teid, ue, EDGE_DST);
        let start = Instant::now();
        let mut runs = 0;
        loop {
            if bed.fp.judge(Direction::Uplink, &up)?.reason == Reason::PdrLocal {
                if runs == 0 {
                    self.uplink_at += 1;
                } else {
                    self.uplink_later += 1;
                }
                break;
            }
            runs += 1;
            if start.elapsed() > RESPONSE_DEADLINE {
                self.uplink_never += 1;
                break;
            }
        }
        Ok(Some(s.up_seid))
    }

    /// Establishes session `index` with an explicit F-TEID, test-running its uplink G-PDU to
    /// the edge from the send on until the fast path breaks it out and the response has
    /// come. Returns the new session's UP SEID.
    fn probe_teid(&mut self, bed: &mut Bed, index: u32) -> anyhow::Result<Option<u64>> {
        let teid = explicit_teid(index);
        let up = gpdu(teid, pfcp_ue(index), EDGE_DST);
        let request = bed
            .smf
            .encode(Some(0), &establishment_with_teid(index, teid, bed.n3));
        let response = self.teid.race(bed, request, &mut self.poll, |bed| {
            Ok(bed.fp.judge(Direction::Uplink, &up)?.reason == Reason::PdrLocal)
        })?;
        let Some(Message::SessionEstablishmentResponse(r)) = &response else {
            return Ok(None);
        };
        Ok((r.cause == Cause::ACCEPTED)
            .then(|| r.up_f_seid.as_ref().map(|f| f.seid))
            .flatten())
    }
}

/// The requests the endpoint counted so far, of the kinds the latency part sends.
fn latency_counts(metrics: &PfcpMetrics) -> [u64; 3] {
    [
        "heartbeat_request",
        "session_modification_request",
        "session_establishment_request",
    ]
    .map(|n| counted(metrics, n))
}

/// Closed-loop latency at `level` installed sessions, as a report to print. The kinds of
/// request take turns, so that the baseline sees the same machine as the rest. New sessions
/// take indexes from `first_new` up; they are deleted at the end.
fn latency(a: &Args, bed: &mut Bed, level: u32, first_new: u32) -> anyhow::Result<String> {
    let (mut hb, mut modify, mut est) = (Vec::new(), Vec::new(), Vec::new());
    let (mut mod_causes, mut est_causes) = (Causes::default(), Causes::default());
    let mut probes = Probes::default();
    let mut hb_missing = 0usize;
    let mut created = Vec::new();
    let heartbeat = Message::HeartbeatRequest(Heartbeat {
        recovery_time_stamp: SMF_RECOVERY,
    });
    let before = latency_counts(&bed.metrics);
    for i in 0..a.samples {
        // (a) the baseline.
        match bed.smf.request(None, &heartbeat)? {
            Some((d, Message::HeartbeatResponse(_))) => hb.push(us(d)),
            _ => hb_missing += 1,
        }
        // (b) a modification that changes the session's tunnel entry: PDR 4 in, then out.
        let target = (i / 2) as u32 % level;
        if let Some(s) = bed.sessions[target as usize] {
            let r = bed
                .smf
                .request(Some(s.up_seid), &modification(target, i % 2 == 0))?;
            mod_causes.count(r.as_ref().map(|(_, m)| m));
            if let Some((d, _)) = r {
                modify.push(us(d));
            }
        }
        // (c) an establishment.
        let index = first_new + 3 * i as u32;
        let r = bed.smf.request(Some(0), &establishment(index))?;
        est_causes.count(r.as_ref().map(|(_, m)| m));
        if let Some((d, m)) = &r {
            est.push(us(*d));
            created.extend(established(m).map(|s| s.up_seid));
        }
        // (d) an establishment, watched in the fast path.
        created.extend(probes.probe(bed, index + 1)?);
        // (e) an establishment with its F-TEID given, its uplink watched from the send.
        created.extend(probes.probe_teid(bed, index + 2)?);
    }
    let after = latency_counts(&bed.metrics);
    let counted = |k: usize| after[k] - before[k];
    let mut out = String::new();
    let hb = Sample::new(hb);
    let (b50, b99) = (hb.at(0.5), hb.at(0.99));
    let _ = writeln!(
        out,
        "closed-loop latency at {level} installed sessions: one request at a time, {} samples each (taking turns), µs from send to response",
        a.samples
    );
    let _ = writeln!(
        out,
        "  {:<44} {:>9} {:>9} {:>9} {:>9}  proof",
        "request", "p50", "p99", "x hb p50", "x hb p99"
    );
    let mut row = |name: &str, s: &Sample, proof: String| {
        let (p50, p99) = (s.at(0.5), s.at(0.99));
        let _ = writeln!(
            out,
            "  {name:<44} {p50:>9.1} {p99:>9.1} {:>9.2} {:>9.2}  {proof}",
            p50 / b50,
            p99 / b99
        );
    };
    row(
        "Heartbeat (baseline)",
        &hb,
        format!(
            "{}/{} answered; endpoint counted {} in",
            hb.0.len(),
            a.samples,
            counted(0)
        ),
    );
    let modify = Sample::new(modify);
    row(
        "Session Modification (add / remove SDF PDR)",
        &modify,
        format!("{}; endpoint counted {} in", mod_causes.show(), counted(1)),
    );
    let est = Sample::new(est);
    row(
        "Session Establishment",
        &est,
        format!(
            "{}; endpoint counted {} in (with the probes below)",
            est_causes.show(),
            counted(2)
        ),
    );
    let poll = Sample::new(std::mem::take(&mut probes.poll));
    let down = Sample::new(std::mem::take(&mut probes.downlink.first));
    row(
        "Establishment -> downlink in the fast path",
        &down,
        format!(
            "{}; polled by test runs every {:.1} µs (p50) from the send",
            probes.downlink.causes.show(),
            poll.at(0.5),
        ),
    );
    let response = Sample::new(std::mem::take(&mut probes.downlink.response));
    row(
        "  the same requests' responses",
        &response,
        "(while the polling ran beside them)".into(),
    );
    let teid_uplink = Sample::new(std::mem::take(&mut probes.teid.first));
    row(
        "Establishment (F-TEID given) -> uplink on it",
        &teid_uplink,
        format!(
            "{}; its G-PDU to the edge test-run from the send until pdr_local",
            probes.teid.causes.show()
        ),
    );
    let teid_response = Sample::new(std::mem::take(&mut probes.teid.response));
    row(
        "  the same requests' responses",
        &teid_response,
        "(while the polling ran beside them)".into(),
    );
    let p = &probes;
    let _ = writeln!(
        out,
        "  downlink in force: before the response was read in {}/{n}, at it (missed only by the test run racing the write, found by the first run after) in {}/{n}, later in {}, never in {}",
        p.downlink.before,
        p.downlink.at,
        p.downlink.later,
        p.downlink.never,
        n = a.samples
    );
    let _ = writeln!(
        out,
        "  uplink in force: its G-PDU (TEID known only from the response) judged pdr_local by the first test run after the response in {}/{}, later in {}, never in {}",
        p.uplink_at, a.samples, p.uplink_later, p.uplink_never
    );
    if p.downlink.before + p.downlink.at == a.samples && p.uplink_at == a.samples {
        let _ = writeln!(
            out,
            "  => the fast path is in force at the response: request -> fast path is at most request -> response"
        );
    }
    let _ = writeln!(
        out,
        "  uplink on the new TEID in force: before the response was read in {}/{n}, at it (found by the first run after) in {}/{n}, later in {}, never in {}",
        p.teid.before,
        p.teid.at,
        p.teid.later,
        p.teid.never,
        n = a.samples
    );
    if hb_missing > 0 {
        let _ = writeln!(out, "  {hb_missing} heartbeats went unanswered");
    }
    let _ = writeln!(
        out,
        "  goal p99 <= 2000 µs: modification {:.1}, establishment {:.1} (one request at a time, nothing else running); establishment -> downlink in force {:.1}, -> uplink on the new TEID {:.1} (with the polling's own CPU use beside the endpoint)",
        modify.at(0.99),
        est.at(0.99),
        down.at(0.99),
        teid_uplink.at(0.99)
    );
    let (rate, proof) = bed.delete(a, &created)?;
    let _ = writeln!(
        out,
        "  the {} sessions these samples created, deleted: {rate:.0}/s ({proof})",
        created.len()
    );
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The fast path.

/// One case on one fast path, measured a round at a time so that the variants of a case
/// take turns (a burst of load then lands on all of them, not on one).
struct Row<'a> {
    label: String,
    fp: &'a FastPath,
    direction: Direction,
    frame: &'a [u8],
    reason: Reason,
    /// `None`: the program leaves the frame unchanged (one batch call); `Some(shift)`: it
    /// rewrites it (the restore wrapper, net of the wrapper with the empty program).
    shift: Option<i32>,
    /// What the reason counter grew by during this row's own calls (rows of one fast path
    /// may share a reason).
    delta: u64,
    proof: String,
    samples: Vec<f64>,
}

impl<'a> Row<'a> {
    fn new(
        label: String,
        fp: &'a FastPath,
        direction: Direction,
        frame: &'a [u8],
        reason: Reason,
    ) -> anyhow::Result<Row<'a>> {
        let judged = fp.judge(direction, frame)?;
        let mut proof = format!("{} ", reason.name());
        if judged.reason != reason {
            proof += &format!("MISMATCH: judged {} ", judged.reason.name());
        }
        if let Some(pdr) = judged.pdr {
            proof += &format!("(session {:#x}, PDR {pdr}) ", judged.session.unwrap_or(0));
        } else if let Some(rule) = judged.rule {
            proof += &format!("(rule {rule}) ");
        }
        let once = fp.test_run(direction, frame, 1)?;
        let shift =
            (once.data_out != frame).then(|| frame.len() as i32 - once.data_out.len() as i32);
        Ok(Row {
            label,
            fp,
            direction,
            frame,
            reason,
            shift,
            delta: 0,
            proof,
            samples: Vec::new(),
        })
    }

    fn method(&self) -> &'static str {
        if self.shift.is_some() {
            "restored"
        } else {
            "batch"
        }
    }

    /// One round: one call of `repeat` repetitions (two with the wrapper).
    fn round(&mut self, repeat: u32, empty: f64) -> anyhow::Result<()> {
        let before = reason_count(self.fp, self.reason)?;
        let figure = match self.shift {
            None => ns(self
                .fp
                .test_run(self.direction, self.frame, repeat)?
                .duration),
            Some(shift) => {
                let base = ns(self
                    .fp
                    .bench_restored(BenchTarget::Empty, self.frame, 0, repeat)?
                    .duration);
                let wrapped = ns(self
                    .fp
                    .bench_restored(
                        BenchTarget::Program(self.direction),
                        self.frame,
                        shift,
                        repeat,
                    )?
                    .duration);
                (wrapped - base + empty).max(0.0)
            }
        };
        self.samples.push(figure);
        self.delta += reason_count(self.fp, self.reason)? - before;
        Ok(())
    }

    /// The median, and the proof: the reason counter grew by exactly the repetitions.
    fn result(self, runs: u64) -> (f64, String) {
        let delta = self.delta;
        let mut proof = self.proof;
        proof += &if delta == runs {
            "ok".to_string()
        } else {
            format!("MISMATCH: {delta} of {runs}")
        };
        (median(self.samples), proof)
    }
}

fn fast_path(
    a: &Args,
    pfcp_fp: &FastPath,
    tables_fp: &FastPath,
    pfcp_last: Established,
) -> anyhow::Result<()> {
    let n = a.sessions;
    let last = n - 1;
    let pfcp_ue_last = pfcp_ue(last);
    let tables_teid = UPLINK_TEID_BASE + last;
    let probe = gpdu(pfcp_last.teid, pfcp_ue_last, EDGE_DST);
    let empty_batch = batch(a.runs, a.repeat, |r| {
        Ok(pfcp_fp.test_run_empty(&probe, r)?.duration)
    })?;
    println!(
        "fast path: kernel ns per packet (BPF_PROG_TEST_RUN), median of {} rounds of {} repetitions; the three variants of a case take turns each round",
        a.runs, a.repeat
    );
    println!(
        "  {n} PFCP sessions established through the endpoint, against {n} tables-file sessions with 10 rules; the last session's packets"
    );
    println!(
        "  programs: \"tables only\" loaded without PFCP maps (as fastpath_bench); \"PFCP maps\" loaded with them at the daemon's default sizes, holding both"
    );
    println!();
    println!(
        "  {:<24} {:<36} {:>9} {:>9} {:>8}  proof (reason counter delta = repetitions)",
        "case", "programs / sessions", "method", "ns/pkt", "x empty"
    );
    println!(
        "  {:<24} {:<36} {:>9} {:>9.1} {:>8}",
        "empty XDP program", "-", "batch", empty_batch, "1.00"
    );
    let cases = [
        (
            "uplink local breakout",
            Direction::Uplink,
            gpdu(tables_teid, ue(last), EDGE_DST),
            Reason::RuleLocal,
            gpdu(pfcp_last.teid, pfcp_ue_last, EDGE_DST),
            Reason::PdrLocal,
        ),
        (
            "uplink pass to core",
            Direction::Uplink,
            gpdu(tables_teid, ue(last), CORE_DST),
            Reason::RulePassthrough,
            gpdu(pfcp_last.teid, pfcp_ue_last, CORE_DST),
            Reason::PdrForward,
        ),
        (
            "downlink encapsulation",
            Direction::Downlink,
            to_ue(ue(last)),
            Reason::Encapsulated,
            to_ue(pfcp_ue_last),
            Reason::Encapsulated,
        ),
    ];
    let mut ratios = Vec::new();
    let runs = a.runs as u64 * u64::from(a.repeat);
    for (name, direction, tables_frame, tables_reason, pfcp_frame, pfcp_reason) in cases {
        let mut rows = vec![
            Row::new(
                format!("tables only / {n} tables"),
                tables_fp,
                direction,
                &tables_frame,
                tables_reason,
            )?,
            Row::new(
                format!("PFCP maps / {n} tables"),
                pfcp_fp,
                direction,
                &tables_frame,
                tables_reason,
            )?,
            Row::new(
                format!("PFCP maps / {n} PFCP (endpoint)"),
                pfcp_fp,
                direction,
                &pfcp_frame,
                pfcp_reason,
            )?,
        ];
        // The variants take turns, round after round.
        for _ in 0..a.runs {
            for row in &mut rows {
                row.round(a.repeat, empty_batch)?;
            }
        }
        let mut figures = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let (label, method) = (row.label.clone(), row.method());
            let (figure, proof) = row.result(runs);
            println!(
                "  {:<24} {label:<36} {method:>9} {figure:>9.1} {:>8.2}  {proof}",
                if i == 0 { name } else { "" },
                figure / empty_batch
            );
            figures.push(figure);
        }
        ratios.push((name, figures[2] / figures[0], figures[1] / figures[0]));
    }
    println!();
    println!(
        "  PFCP / tables (PFCP sessions on the PFCP-loaded programs over tables sessions on the tables-only programs; goal <= 1.10x):"
    );
    for (name, r, loaded) in ratios {
        println!(
            "    {name:<24} {r:>5.2}x   (tables sessions on the PFCP-loaded programs: {loaded:.2}x)"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let n = a.sessions;
    let first = (n / 10).clamp(1, 10_000);
    let config = pfcp_config()?;
    // The fill, and at most three latency sessions per sample on top of it at a time.
    let need = u64::from(n) + 3 * a.samples as u64;
    if need > u64::from(config.max_sessions) {
        bail!(
            "--sessions {n} plus 3 x --samples {} is {need} sessions, more than the {} the endpoint holds: lower one of them",
            a.samples,
            config.max_sessions
        );
    }
    let tables_src = tables(n, 10);
    let n3_v4 = tables_src.n3.ipv4;
    let compiled = compile(tables_src).map_err(|p| anyhow::anyhow!("{p}"))?;
    let tables_fp = FastPath::load().context("loading the XDP programs (are we root?)")?;
    tables_fp
        .install(&compiled)
        .with_context(|| format!("installing {n} tables sessions"))?;
    let pfcp_fp = Arc::new(
        FastPath::load_with(FastPathOptions {
            flow_accounting: false,
            max_flows: 0,
            // What the daemon loads for a default `[pfcp]` (`daemon::pfcp_map_sizes` of the
            // default max_sessions and max_pdrs is `PfcpOptions::DEFAULT`).
            pfcp: Some(PfcpOptions {
                teid_min: config.teid_min,
                ..PfcpOptions::DEFAULT
            }),
            // The proofs read each frame's decision (`judge`); the tables-only fast path
            // it is compared with (`FastPath::load`) records them too.
            record_decisions: true,
            ..FastPathOptions::default()
        })
        .context("loading the XDP programs with the PFCP maps")?,
    );
    pfcp_fp
        .install(&compiled)
        .with_context(|| format!("installing {n} tables sessions beside PFCP"))?;
    let metrics = Arc::new(PfcpMetrics::default());
    let endpoint = PfcpEndpoint::start(
        config.clone(),
        Arc::clone(&pfcp_fp) as Arc<dyn Datapath>,
        StoreOptions {
            teid_min: config.teid_min,
            max_sessions: config.max_sessions,
            max_pdrs: config.max_pdrs,
            n3_v4,
            n3_v6: None,
        },
        Identities::default(),
        Arc::clone(&metrics),
    )?;
    let mut smf = Smf::new(endpoint.local_addr())?;
    smf.associate()?;
    let mut bed = Bed {
        smf,
        fp: Arc::clone(&pfcp_fp),
        metrics,
        sessions: vec![None; n as usize],
        n3: n3_v4,
    };

    println!(
        "PFCP endpoint on {} (one current-thread task), SMF on {SMF} in this process; {} CPUs",
        endpoint.local_addr(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "sessions: uplink PDR (CHOOSE F-TEID, SDF {EDGE_FILTER:?}) -> FAR FORW SGi-LAN; catch-all uplink PDR -> FAR FORW Core; downlink PDR by UE -> FAR FORW Access + GTP-U to {GNB}"
    );
    if let Ok(rmem) = std::fs::read_to_string("/proc/sys/net/core/rmem_default") {
        println!(
            "net.core.rmem_default = {} bytes: the endpoint socket's receive buffer unless it sets its own",
            rmem.trim()
        );
    }
    println!();
    println!(
        "establishment rate: pipelined, window {}, requests encoded before the clock starts; sessions/s from the first send to the last response",
        a.window
    );
    println!("  {:<4} {:<20} {:>12}  proof", "run", "phase", "sessions/s");
    let (mut rate_a, mut rate_b, mut rate_del) = (Vec::new(), Vec::new(), Vec::new());
    // Measured while the last run is at `first` sessions; printed after the rates.
    let mut at_first = String::new();
    for run in 0..a.runs {
        let last_run = run + 1 == a.runs;
        let (r, proof) = bed.fill(&a, 0, first)?;
        println!(
            "  {:<4} {:<20} {r:>12.0}  {proof}",
            run + 1,
            format!("0 -> {first}")
        );
        rate_a.push(r);
        if last_run {
            at_first = latency(&a, &mut bed, first, n)?;
        }
        let (r, proof) = bed.fill(&a, first, n)?;
        println!(
            "  {:<4} {:<20} {r:>12.0}  {proof}",
            run + 1,
            format!("{first} -> {n}")
        );
        rate_b.push(r);
        if !last_run {
            let (r, proof) = bed.delete_all(&a)?;
            println!(
                "  {:<4} {:<20} {r:>12.0}  {proof}",
                run + 1,
                format!("delete {n}")
            );
            rate_del.push(r);
        }
    }
    let ma = median(rate_a);
    let mb = median(rate_b);
    println!();
    println!(
        "establishment rate, median of {} runs (goal >= 20000/s): 0 -> {first}: {ma:.0}/s; {first} -> {n}: {mb:.0}/s; deletion (not a goal): {}",
        a.runs,
        if rate_del.is_empty() {
            "not measured with one run".to_string()
        } else {
            format!("{:.0}/s", median(rate_del))
        }
    );
    println!();
    println!("{at_first}");
    println!(
        "{}",
        latency(&a, &mut bed, n, n + 3 * a.samples as u32 + 3)?
    );
    let last = bed.sessions[n as usize - 1]
        .with_context(|| format!("session {} of the fill was not established", n - 1))?;
    fast_path(&a, &pfcp_fp, &tables_fp, last)?;
    if bed.smf.stray > 0 {
        println!();
        println!(
            "note: {} datagrams from the endpoint were not a response awaited (late, or requests)",
            bed.smf.stray
        );
    }
    endpoint.stop();
    Ok(())
}
