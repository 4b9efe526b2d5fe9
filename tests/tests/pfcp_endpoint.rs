//! The PFCP (N4) endpoint driven over loopback UDP exactly as an SMF drives it: requests
//! encoded with `mecgw_pfcp::encode`, responses decoded and checked field by field (Cause,
//! Offending IE, SEIDs, TEIDs, volumes), and what the endpoint wrote into the fast path read
//! back from a fake [`Datapath`] that records every entry and lets the test set the PDR
//! counters a real fast path would count.
//!
//! Needs no privileges: the endpoint binds 127.0.0.1:0, the SMF 127.0.0.1 and the stranger
//! 127.0.0.2. Nothing here asserts on durations: events are waited for with generous deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, VecDeque},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mecgw::{
    datapath::{DatapathError, tables::IpPrefix},
    pfcp::{
        OnPeerLost, PfcpConfig, PfcpMetrics,
        rules::UeKey,
        server::PfcpEndpoint,
        sessions::{Datapath, Identities, StoreOptions},
    },
};
use mecgw_ebpf::{Counter, PfcpDownlink, PfcpTunnel, TUNNEL_FROM_ACCESS, pdr_action};
use mecgw_pfcp::{
    decode, encode,
    ie::{
        ApplyAction, BitRate, Cause, CreateFar, CreatePdr, FSeid, FTeid, ForwardingParameters,
        GateStatus, Interface, MeasurementMethod, NodeId, OuterHeaderCreation, OuterHeaderRemoval,
        Pdi, Qer, ReportType, ReportingTriggers, UeIpAddress, Urr, UsageReport, UsageReportTrigger,
        ie_type,
    },
    message::{
        AssociationSetupRequest, Header, Heartbeat, Message, SessionEstablishmentRequest,
        SessionModificationRequest, SessionReportResponse, message_type,
    },
};

const TEID_MIN: u32 = 0x4000_0000;
const N3: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GNB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 9);
const DOWNLINK_TEID: u32 = 0x0000_2001;
const SMF_RECOVERY: u32 = 3_900_000_000;
/// How long any awaited event may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The fake fast path.

/// The fast path as the store sees it: what it holds, and counters the test sets.
#[derive(Default)]
struct FakeDatapath {
    tunnels: Mutex<HashMap<u32, PfcpTunnel>>,
    downlinks: Mutex<HashMap<UeKey, PfcpDownlink>>,
    pdr_counters: Mutex<HashMap<u32, Counter>>,
    /// Every put and remove of an entry.
    updates: AtomicUsize,
    grace_periods: AtomicUsize,
}

impl FakeDatapath {
    fn tunnels(&self) -> HashMap<u32, PfcpTunnel> {
        self.tunnels.lock().unwrap().clone()
    }
    fn downlinks(&self) -> HashMap<UeKey, PfcpDownlink> {
        self.downlinks.lock().unwrap().clone()
    }
    /// Traffic: what PDR counter `slot` holds now.
    fn set_counter(&self, slot: u32, packets: u64, bytes: u64) {
        self.pdr_counters
            .lock()
            .unwrap()
            .insert(slot, Counter { packets, bytes });
    }
    fn updates(&self) -> usize {
        self.updates.load(Ordering::SeqCst)
    }
    fn grace_periods(&self) -> usize {
        self.grace_periods.load(Ordering::SeqCst)
    }
}

impl Datapath for FakeDatapath {
    fn put_tunnel(&self, teid: u32, t: &PfcpTunnel) -> Result<(), DatapathError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        self.tunnels.lock().unwrap().insert(teid, *t);
        Ok(())
    }
    fn remove_tunnel(&self, teid: u32) -> Result<(), DatapathError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        self.tunnels.lock().unwrap().remove(&teid);
        Ok(())
    }
    fn put_downlink(&self, ue: UeKey, d: &PfcpDownlink) -> Result<(), DatapathError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        self.downlinks.lock().unwrap().insert(ue, *d);
        Ok(())
    }
    fn remove_downlink(&self, ue: UeKey) -> Result<(), DatapathError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        self.downlinks.lock().unwrap().remove(&ue);
        Ok(())
    }
    fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError> {
        Ok(self
            .pdr_counters
            .lock()
            .unwrap()
            .get(&slot)
            .copied()
            .unwrap_or_default())
    }
    fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError> {
        self.pdr_counters.lock().unwrap().remove(&slot);
        Ok(())
    }
    fn zero_session_counter(&self, _slot: u32) -> Result<(), DatapathError> {
        Ok(())
    }
    fn grace_period(&self) {
        self.grace_periods.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// The endpoint under test.

struct Upf {
    endpoint: Option<PfcpEndpoint>,
    addr: SocketAddr,
    dp: Arc<FakeDatapath>,
    metrics: Arc<PfcpMetrics>,
}

impl Upf {
    /// An endpoint on 127.0.0.1:0 answering 127.0.0.1 only, with short timers (T1 100 ms,
    /// N1 2) and heartbeats rare enough not to matter unless `tune` says otherwise.
    fn start(tune: impl FnOnce(&mut PfcpConfig)) -> Upf {
        let mut config = PfcpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            node_id: "127.0.0.1".into(),
            peers: vec!["127.0.0.1/32".parse::<IpPrefix>().unwrap()],
            heartbeat_interval_secs: 3600,
            response_timeout_ms: 100,
            retries: 2,
            on_peer_lost: OnPeerLost::Keep,
            lost_session_timeout_secs: 600,
            threshold_check_secs: 1,
            max_sessions: 64,
            max_pdrs: 256,
            teid_min: TEID_MIN,
        };
        tune(&mut config);
        let dp = Arc::new(FakeDatapath::default());
        let metrics = Arc::new(PfcpMetrics::default());
        let endpoint = PfcpEndpoint::start(
            config.clone(),
            Arc::clone(&dp) as Arc<dyn Datapath>,
            StoreOptions {
                teid_min: config.teid_min,
                max_sessions: config.max_sessions,
                max_pdrs: config.max_pdrs,
                n3_v4: Some(N3),
                n3_v6: None,
            },
            Identities::default(),
            Arc::clone(&metrics),
        )
        .unwrap();
        Upf {
            addr: endpoint.local_addr(),
            endpoint: Some(endpoint),
            dp,
            metrics,
        }
    }

    fn metrics(&self) -> String {
        mecgw::openmetrics::encode_collector(Arc::clone(&self.metrics))
    }

    /// Whether the rendered metrics hold `line` exactly.
    fn has_metric(&self, line: &str) -> bool {
        self.metrics().lines().any(|l| l == line)
    }
}

impl Drop for Upf {
    fn drop(&mut self) {
        if let Some(e) = self.endpoint.take() {
            e.stop();
        }
    }
}

/// Polls `done` until it holds; panics with `what` after [`DEADLINE`].
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The SMF.

/// A datagram the SMF received, decoded.
struct Received {
    header: Header,
    message: Message,
    bytes: Vec<u8>,
}

/// An SMF: a UDP socket on `ip`, its own sequence numbers and Recovery Time Stamp.
struct Smf {
    sock: UdpSocket,
    upf: SocketAddr,
    ip: Ipv4Addr,
    next_sequence: u32,
    recovery: u32,
    /// Requests from the UPF that arrived while the SMF waited for a response.
    requests: VecDeque<Received>,
}

impl Smf {
    fn new(ip: Ipv4Addr, upf: SocketAddr) -> Smf {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Smf {
            sock,
            upf,
            ip,
            next_sequence: 1,
            recovery: SMF_RECOVERY,
            requests: VecDeque::new(),
        }
    }

    fn node_id(&self) -> NodeId {
        NodeId::Ipv4(self.ip)
    }

    /// `message` as bytes with the next sequence number: (sequence, bytes).
    fn encode(&mut self, seid: Option<u64>, message: &Message) -> (u32, Vec<u8>) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let header = Header {
            message_type: message.message_type(),
            seid,
            sequence,
            priority: None,
        };
        (sequence, encode(&header, message))
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.upf).unwrap();
    }

    /// The next datagram from the UPF, if one comes within `within`.
    fn recv_raw(&self, within: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + within;
        let mut buf = vec![0u8; 65_536];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, self.upf, "a datagram from someone else");
                    return Some(buf[..n].to_vec());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= end {
                        return None;
                    }
                }
                Err(e) => panic!("receiving: {e}"),
            }
        }
    }

    fn recv(&self, within: Duration) -> Option<Received> {
        self.recv_raw(within).map(|bytes| {
            let (header, message) = decode(&bytes).expect("the UPF sent a valid message");
            Received {
                header,
                message,
                bytes,
            }
        })
    }

    /// The response to the request with `sequence`; requests from the UPF that come first
    /// are kept for [`Smf::request_from_upf`].
    fn response(&mut self, sequence: u32) -> Received {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let r = self
                .recv(left)
                .unwrap_or_else(|| panic!("no response to request {sequence}"));
            if message_type::is_request(r.header.message_type) {
                self.requests.push_back(r);
                continue;
            }
            assert_eq!(r.header.sequence, sequence, "a response to another request");
            return r;
        }
    }

    /// Sends `message` and returns its response.
    fn request(&mut self, seid: Option<u64>, message: Message) -> Received {
        let (sequence, bytes) = self.encode(seid, &message);
        self.send_raw(&bytes);
        let r = self.response(sequence);
        assert_eq!(
            r.header.message_type,
            message.message_type() + 1,
            "the response type follows the request's"
        );
        r
    }

    /// The next request the UPF sends.
    fn request_from_upf(&mut self) -> Received {
        if let Some(r) = self.requests.pop_front() {
            return r;
        }
        let r = self.recv(DEADLINE).expect("a request from the UPF");
        assert!(
            message_type::is_request(r.header.message_type),
            "expected a request from the UPF, got type {}",
            r.header.message_type
        );
        r
    }

    /// Answers a request of the UPF's with `message`.
    fn answer(&self, request: &Header, seid: Option<u64>, message: &Message) {
        let header = Header {
            message_type: message.message_type(),
            seid,
            sequence: request.sequence,
            priority: None,
        };
        self.send_raw(&encode(&header, message));
    }

    /// Association Setup: the UPF's Recovery Time Stamp.
    fn associate(&mut self) -> u32 {
        let r = self.request(
            None,
            Message::AssociationSetupRequest(AssociationSetupRequest {
                node_id: self.node_id(),
                recovery_time_stamp: self.recovery,
                up_function_features: None,
                cp_function_features: None,
            }),
        );
        let Message::AssociationSetupResponse(a) = r.message else {
            panic!("not an Association Setup Response: {:?}", r.message);
        };
        assert_eq!(a.cause, Cause::ACCEPTED);
        a.recovery_time_stamp
    }

    /// Establishes `req`; panics unless accepted. Returns (UP SEID, the session's TEID).
    fn establish(&mut self, req: SessionEstablishmentRequest) -> (u64, u32) {
        let cp = req.cp_f_seid.seid;
        let r = self.request(Some(0), Message::SessionEstablishmentRequest(req));
        assert_eq!(r.header.seid, Some(cp));
        let Message::SessionEstablishmentResponse(e) = r.message else {
            panic!("not a Session Establishment Response: {:?}", r.message);
        };
        assert_eq!(
            e.cause,
            Cause::ACCEPTED,
            "offending IE {:?}",
            e.offending_ie
        );
        let teid = match e.created_pdr.first().and_then(|c| c.local_f_teid.clone()) {
            Some(FTeid::Assigned { teid, .. }) => teid,
            other => panic!("no TEID in the Created PDR: {other:?}"),
        };
        (e.up_f_seid.expect("an UP F-SEID").seid, teid)
    }

    /// Sends `message` and waits for the UPF to have handled it, without a response: a
    /// heartbeat after it is answered, and the UPF handles datagrams in order.
    fn send_unanswered(&mut self, bytes: &[u8]) {
        self.send_raw(bytes);
        self.heartbeat_round_trip();
    }

    /// A Heartbeat Request with our Recovery Time Stamp, answered.
    fn heartbeat_round_trip(&mut self) -> Heartbeat {
        let r = self.request(
            None,
            Message::HeartbeatRequest(Heartbeat {
                recovery_time_stamp: self.recovery,
            }),
        );
        let Message::HeartbeatResponse(hb) = r.message else {
            panic!("not a Heartbeat Response: {:?}", r.message);
        };
        hb
    }
}

// ---------------------------------------------------------------------------------------
// What SMFs ask for.

/// A session as an SMF sets up a local breakout: uplink PDR 1 (Access, CHOOSE, remove
/// GTP-U/UDP/IPv4) → FAR 1 FORW to SGi-LAN; downlink PDR 2 (SGi-LAN, the UE) → FAR 2 FORW
/// to Access, GTP-U/UDP/IPv4 to the gNB; URR 1 measures the volume of both.
fn breakout(cp_seid: u64, smf: Ipv4Addr, urr: Urr) -> SessionEstablishmentRequest {
    SessionEstablishmentRequest {
        node_id: NodeId::Ipv4(smf),
        cp_f_seid: FSeid {
            seid: cp_seid,
            ipv4: Some(smf),
            ipv6: None,
        },
        create_pdr: vec![
            CreatePdr {
                pdr_id: 1,
                precedence: 200,
                pdi: Pdi {
                    source_interface: Interface::Access,
                    local_f_teid: Some(FTeid::Choose {
                        ipv4: true,
                        ipv6: false,
                        choose_id: None,
                    }),
                    network_instance: None,
                    ue_ip_address: vec![UeIpAddress {
                        ipv4: Some(UE),
                        ..UeIpAddress::default()
                    }],
                    sdf_filters: Vec::new(),
                    qfis: Vec::new(),
                },
                outer_header_removal: Some(OuterHeaderRemoval {
                    description: 0,
                    extension_header_deletion: None,
                }),
                far_id: Some(1),
                urr_ids: vec![urr.urr_id],
                qer_ids: Vec::new(),
            },
            CreatePdr {
                pdr_id: 2,
                precedence: 200,
                pdi: Pdi {
                    source_interface: Interface::SgiLan,
                    local_f_teid: None,
                    network_instance: None,
                    ue_ip_address: vec![UeIpAddress {
                        ipv4: Some(UE),
                        is_destination: true,
                        ..UeIpAddress::default()
                    }],
                    sdf_filters: Vec::new(),
                    qfis: Vec::new(),
                },
                outer_header_removal: None,
                far_id: Some(2),
                urr_ids: vec![urr.urr_id],
                qer_ids: Vec::new(),
            },
        ],
        create_far: vec![
            CreateFar {
                far_id: 1,
                apply_action: ApplyAction(ApplyAction::FORW),
                forwarding_parameters: Some(ForwardingParameters {
                    destination_interface: Some(Interface::SgiLan),
                    network_instance: None,
                    outer_header_creation: None,
                }),
                bar_id: None,
            },
            CreateFar {
                far_id: 2,
                apply_action: ApplyAction(ApplyAction::FORW),
                forwarding_parameters: Some(ForwardingParameters {
                    destination_interface: Some(Interface::Access),
                    network_instance: None,
                    outer_header_creation: Some(OuterHeaderCreation {
                        description: OuterHeaderCreation::GTPU_UDP_IPV4,
                        teid: Some(DOWNLINK_TEID),
                        ipv4: Some(GNB),
                        ipv6: None,
                        port: None,
                    }),
                }),
                bar_id: None,
            },
        ],
        create_urr: vec![urr],
        create_qer: Vec::new(),
        pdn_type: Some(1),
        user_id: None,
    }
}

/// URR 1: volume, reported only when asked (or at termination).
fn volume_urr() -> Urr {
    Urr {
        urr_id: 1,
        measurement_method: Some(MeasurementMethod {
            volume: true,
            ..MeasurementMethod::default()
        }),
        reporting_triggers: Some(ReportingTriggers(0)),
        measurement_period: None,
        volume_threshold: None,
        time_threshold: None,
    }
}

/// URR 1: volume, reported every `secs` seconds.
fn periodic_urr(secs: u32) -> Urr {
    Urr {
        reporting_triggers: Some(ReportingTriggers(ReportingTriggers::PERIODIC)),
        measurement_period: Some(secs),
        ..volume_urr()
    }
}

/// The counter slots of the session's uplink PDR (in `teid`'s tunnel) and downlink PDR.
fn slots(dp: &FakeDatapath, teid: u32) -> (u32, u32) {
    let up = dp.tunnels()[&teid].pdrs[0].counter;
    let down = dp.downlinks()[&UeKey::V4(UE.octets())].pdr_counter;
    assert_ne!(up, down, "each PDR counts in a slot of its own");
    (up, down)
}

/// (uplink octets, uplink packets, downlink octets, downlink packets) of a usage report,
/// after checking the totals add up.
fn volumes(r: &UsageReport) -> (u64, u64, u64, u64) {
    let v = r.volume.expect("a Volume Measurement");
    let (ul, up, dl, dp) = (
        v.uplink_octets.unwrap(),
        v.uplink_packets.unwrap(),
        v.downlink_octets.unwrap(),
        v.downlink_packets.unwrap(),
    );
    assert_eq!(v.total_octets, Some(ul + dl));
    assert_eq!(v.total_packets, Some(up + dp));
    (ul, up, dl, dp)
}

fn deletion(smf: &mut Smf, up_seid: u64) -> Received {
    smf.request(Some(up_seid), Message::SessionDeletionRequest)
}

fn query_urr(smf: &mut Smf, up_seid: u64, urr: u32) -> Received {
    smf.request(
        Some(up_seid),
        Message::SessionModificationRequest(SessionModificationRequest {
            query_urr: vec![urr],
            ..SessionModificationRequest::default()
        }),
    )
}

/// `bytes` (a session message) without its top-level IE of type `ie`, lengths fixed.
fn strip_ie(bytes: &[u8], ie: u16) -> Vec<u8> {
    let mut out = bytes[..16].to_vec();
    let mut rest = &bytes[16..];
    let mut found = false;
    while rest.len() >= 4 {
        let t = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if t == ie {
            found = true;
        } else {
            out.extend_from_slice(&rest[..4 + len]);
        }
        rest = &rest[4 + len..];
    }
    assert!(found, "IE {ie} is not in the message");
    let len = u16::try_from(out.len() - 4).unwrap();
    out[2..4].copy_from_slice(&len.to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn a_session_lives_and_dies_as_the_smf_says() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);

    // Association Setup: accepted, FTUP advertised, our Recovery Time Stamp.
    let r = smf.request(
        None,
        Message::AssociationSetupRequest(AssociationSetupRequest {
            node_id: smf.node_id(),
            recovery_time_stamp: SMF_RECOVERY,
            up_function_features: None,
            cp_function_features: None,
        }),
    );
    assert_eq!(r.header.seid, None);
    let Message::AssociationSetupResponse(a) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(a.cause, Cause::ACCEPTED);
    assert_eq!(a.node_id, NodeId::Ipv4(Ipv4Addr::LOCALHOST));
    let features = a.up_function_features.expect("UP Function Features");
    assert_eq!(features.0[0] & 0x10, 0x10, "FTUP: mecgw allocates F-TEIDs");
    let recovery = a.recovery_time_stamp;
    // NTP seconds of a start after 2020 (3_786_825_600) and before 2036's wrap.
    assert!(recovery > 3_786_825_600, "Recovery Time Stamp {recovery}");
    assert!(upf.has_metric("mecgw_pfcp_associations 1"));
    // A heartbeat names the same start.
    assert_eq!(smf.heartbeat_round_trip().recovery_time_stamp, recovery);

    // Session Establishment: the response goes to the CP SEID; the TEID is mecgw's.
    let cp_seid = 0x0000_c0de_0000_0001;
    let r = smf.request(
        Some(0),
        Message::SessionEstablishmentRequest(breakout(cp_seid, smf.ip, volume_urr())),
    );
    assert_eq!(r.header.seid, Some(cp_seid));
    let Message::SessionEstablishmentResponse(e) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(
        e.cause,
        Cause::ACCEPTED,
        "offending IE {:?}",
        e.offending_ie
    );
    assert_eq!(e.offending_ie, None);
    let up = e.up_f_seid.expect("UP F-SEID");
    assert_ne!(up.seid, 0);
    assert_eq!(up.ipv4, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(e.created_pdr.len(), 1, "one PDR asked for an F-TEID");
    assert_eq!(e.created_pdr[0].pdr_id, 1);
    let Some(FTeid::Assigned { teid, ipv4, ipv6 }) = e.created_pdr[0].local_f_teid.clone() else {
        panic!("{:?}", e.created_pdr)
    };
    assert!(teid >= TEID_MIN, "TEID {teid:#x} below teid_min");
    assert_eq!((ipv4, ipv6), (Some(N3), None));
    assert_eq!(upf.metrics.sessions.load(Ordering::SeqCst), 1);
    assert!(upf.has_metric("mecgw_pfcp_sessions 1"));

    // The fast path: the uplink tunnel breaks out locally, the UE's downlink encapsulates
    // towards the gNB.
    let tunnels = upf.dp.tunnels();
    assert_eq!(tunnels.keys().collect::<Vec<_>>(), vec![&teid]);
    let t = tunnels[&teid];
    assert_eq!(t.flags & TUNNEL_FROM_ACCESS, TUNNEL_FROM_ACCESS);
    assert_eq!(t.ue_v4, u32::from_ne_bytes(UE.octets()));
    assert_eq!(t.pdr_count, 1);
    assert_eq!(t.pdrs[0].pdr_id, 1);
    assert_eq!(t.pdrs[0].action, pdr_action::LOCAL);
    let downlinks = upf.dp.downlinks();
    assert_eq!(downlinks.len(), 1);
    let d = downlinks[&UeKey::V4(UE.octets())];
    assert_eq!(d.action, pdr_action::ENCAPSULATE);
    assert_eq!(d.pdr_id, 2);
    assert_eq!(d.downlink_teid, DOWNLINK_TEID);
    assert_eq!(d.gnb[..4], GNB.octets());
    assert_eq!(
        d.session, t.session,
        "both directions count for one session"
    );
    assert!(d.session >= TEID_MIN, "session ids are PFCP's range");

    // Traffic, then a Query URR: the report says exactly what was counted.
    let (up_slot, down_slot) = slots(&upf.dp, teid);
    upf.dp.set_counter(up_slot, 10, 1_500);
    upf.dp.set_counter(down_slot, 20, 30_000);
    let r = query_urr(&mut smf, up.seid, 1);
    assert_eq!(r.header.seid, Some(cp_seid));
    let Message::SessionModificationResponse(m) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(m.cause, Cause::ACCEPTED);
    assert_eq!(m.usage_report.len(), 1);
    let report = &m.usage_report[0];
    assert_eq!(report.urr_id, 1);
    assert_eq!(report.ur_seqn, 0);
    assert_eq!(
        report.trigger,
        UsageReportTrigger(UsageReportTrigger::IMMEDIATE)
    );
    assert_eq!(volumes(report), (1_500, 10, 30_000, 20));

    // More traffic, then Session Deletion: the termination report counts what came since
    // the query, and the session leaves the fast path.
    upf.dp.set_counter(up_slot, 15, 2_000);
    upf.dp.set_counter(down_slot, 30, 45_000);
    let graces_before = upf.dp.grace_periods();
    let r = deletion(&mut smf, up.seid);
    assert_eq!(r.header.seid, Some(cp_seid));
    let Message::SessionDeletionResponse(del) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(del.cause, Cause::ACCEPTED);
    assert_eq!(del.usage_report.len(), 1);
    let report = &del.usage_report[0];
    assert_eq!(report.urr_id, 1);
    assert_eq!(report.ur_seqn, 1);
    assert_eq!(
        report.trigger,
        UsageReportTrigger(UsageReportTrigger::TERMINATION)
    );
    assert_eq!(volumes(report), (500, 5, 15_000, 10));
    assert!(upf.dp.tunnels().is_empty());
    assert!(upf.dp.downlinks().is_empty());
    assert!(
        upf.dp.grace_periods() > graces_before,
        "the final usage is read after a grace period"
    );
    assert_eq!(upf.metrics.sessions.load(Ordering::SeqCst), 0);
    assert!(upf.has_metric("mecgw_pfcp_sessions 0"));
    assert!(upf.has_metric("mecgw_pfcp_usage_reports_total{trigger=\"deletion_response\"} 1"));
    assert!(upf.has_metric("mecgw_pfcp_usage_reports_total{trigger=\"modification_response\"} 1"));

    // The SEID is gone: a second deletion is refused.
    let r = deletion(&mut smf, up.seid);
    let Message::SessionDeletionResponse(del) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(del.cause, Cause::SESSION_CONTEXT_NOT_FOUND);
}

#[test]
fn a_retransmitted_request_is_answered_again_and_applied_once() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();

    let cp_seid = 0x77;
    let (sequence, bytes) = smf.encode(
        Some(0),
        &Message::SessionEstablishmentRequest(breakout(cp_seid, smf.ip, volume_urr())),
    );
    smf.send_raw(&bytes);
    let first = smf.response(sequence);
    smf.send_raw(&bytes);
    let second = smf.response(sequence);
    assert_eq!(
        first.bytes, second.bytes,
        "the same response, byte for byte"
    );
    let Message::SessionEstablishmentResponse(e) = first.message else {
        panic!("{:?}", first.message)
    };
    assert_eq!(e.cause, Cause::ACCEPTED);
    assert_eq!(upf.metrics.sessions.load(Ordering::SeqCst), 1);
    assert!(upf.has_metric("mecgw_pfcp_sessions 1"));
    assert!(upf.has_metric("mecgw_pfcp_retransmissions_total 1"));
    assert_eq!(upf.dp.tunnels().len(), 1, "applied once: one tunnel");
    assert_eq!(upf.dp.downlinks().len(), 1);
    assert!(upf.has_metric(
        "mecgw_pfcp_messages_total{message=\"session_establishment_request\",direction=\"in\"} 2"
    ));

    // A deletion retransmitted after its answer: the same answer, its report not redone.
    let up_seid = e.up_f_seid.unwrap().seid;
    let (sequence, bytes) = smf.encode(Some(up_seid), &Message::SessionDeletionRequest);
    smf.send_raw(&bytes);
    let first = smf.response(sequence);
    smf.send_raw(&bytes);
    let second = smf.response(sequence);
    assert_eq!(first.bytes, second.bytes);
    let Message::SessionDeletionResponse(d) = second.message else {
        panic!("{:?}", second.message)
    };
    assert_eq!(d.cause, Cause::ACCEPTED, "not SESSION_CONTEXT_NOT_FOUND");
    assert!(upf.has_metric("mecgw_pfcp_retransmissions_total 2"));
}

#[test]
fn refused_session_requests_say_why_and_change_nothing() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);

    // Before any association: 72, to the CP SEID.
    let r = smf.request(
        Some(0),
        Message::SessionEstablishmentRequest(breakout(0x51, smf.ip, volume_urr())),
    );
    assert_eq!(r.header.seid, Some(0x51));
    let Message::SessionEstablishmentResponse(e) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(e.cause, Cause::NO_ESTABLISHED_PFCP_ASSOCIATION);
    assert_eq!(e.cause.0, 72);
    assert_eq!(e.up_f_seid, None);

    smf.associate();

    // Unknown SEIDs: 65, with SEID 0 in the header.
    let r = query_urr(&mut smf, 0xdead_beef, 1);
    assert_eq!(r.header.seid, Some(0));
    let Message::SessionModificationResponse(m) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!((m.cause.0, m.offending_ie), (65, None));
    let r = deletion(&mut smf, 0xdead_beef);
    assert_eq!(r.header.seid, Some(0));
    let Message::SessionDeletionResponse(d) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!((d.cause.0, d.offending_ie), (65, None));

    let refusal = |smf: &mut Smf, req: SessionEstablishmentRequest| {
        let r = smf.request(Some(0), Message::SessionEstablishmentRequest(req));
        let Message::SessionEstablishmentResponse(e) = r.message else {
            panic!("{:?}", r.message)
        };
        assert_eq!(e.up_f_seid, None, "a refusal hands out no SEID");
        assert!(e.created_pdr.is_empty());
        (r.header.seid, e.cause.0, e.offending_ie)
    };

    // No Create PDR: the codec says which mandatory IE is missing.
    let mut req = breakout(0x52, smf.ip, volume_urr());
    req.create_pdr.clear();
    assert_eq!(
        refusal(&mut smf, req),
        (Some(0), 66, Some(ie_type::CREATE_PDR))
    );

    // The CP F-SEID stripped from the bytes.
    let (sequence, bytes) = smf.encode(
        Some(0),
        &Message::SessionEstablishmentRequest(breakout(0x53, smf.ip, volume_urr())),
    );
    smf.send_raw(&strip_ie(&bytes, ie_type::F_SEID));
    let r = smf.response(sequence);
    let Message::SessionEstablishmentResponse(e) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!((e.cause.0, e.offending_ie), (66, Some(ie_type::F_SEID)));

    // Duplicating is not supported: 76, Apply Action to blame (buffering is: it buffers
    // zero packets).
    let mut req = breakout(0x54, smf.ip, volume_urr());
    req.create_far[1].apply_action = ApplyAction(ApplyAction::FORW | ApplyAction::DUPL);
    assert_eq!(
        refusal(&mut smf, req),
        (Some(0x54), 76, Some(ie_type::APPLY_ACTION))
    );

    // An explicit TEID of the tables' range: 71, the F-TEID to blame.
    let mut req = breakout(0x55, smf.ip, volume_urr());
    req.create_pdr[0].pdi.local_f_teid = Some(FTeid::Assigned {
        teid: TEID_MIN - 1,
        ipv4: Some(N3),
        ipv6: None,
    });
    assert_eq!(
        refusal(&mut smf, req),
        (Some(0x55), 71, Some(ie_type::F_TEID))
    );

    // Nothing of any of them reached the fast path, and no session was counted.
    assert_eq!(upf.dp.updates(), 0, "a refused request writes nothing");
    assert!(upf.dp.tunnels().is_empty());
    assert_eq!(upf.metrics.sessions.load(Ordering::SeqCst), 0);
    for line in [
        "mecgw_pfcp_rejected_total{cause=\"no_established_pfcp_association\"} 1",
        "mecgw_pfcp_rejected_total{cause=\"session_context_not_found\"} 2",
        "mecgw_pfcp_rejected_total{cause=\"mandatory_ie_missing\"} 2",
        "mecgw_pfcp_rejected_total{cause=\"service_not_supported\"} 1",
        "mecgw_pfcp_rejected_total{cause=\"invalid_f_teid_allocation_option\"} 1",
    ] {
        assert!(upf.has_metric(line), "{line} in\n{}", upf.metrics());
    }

    // What was refused holds nothing: the same session, done right, is accepted and is
    // the only thing written (its tunnel and its downlink).
    let (_, teid) = smf.establish(breakout(0x56, smf.ip, volume_urr()));
    assert_eq!(upf.dp.tunnels().keys().collect::<Vec<_>>(), vec![&teid]);
    assert_eq!(upf.dp.updates(), 2);
}

#[test]
fn datagrams_that_get_no_answer_are_counted() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();

    // Version 2: a Version Not Supported Response echoing the sequence number.
    let (sequence, mut bytes) = smf.encode(
        None,
        &Message::HeartbeatRequest(Heartbeat {
            recovery_time_stamp: SMF_RECOVERY,
        }),
    );
    bytes[0] = (bytes[0] & 0x1f) | (2 << 5);
    smf.send_raw(&bytes);
    let r = smf.response(sequence);
    assert_eq!(
        r.header.message_type,
        message_type::VERSION_NOT_SUPPORTED_RESPONSE
    );
    assert_eq!(r.header.message_type, 11);
    assert_eq!(r.header.sequence, sequence);
    assert_eq!(r.message, Message::VersionNotSupportedResponse);

    // From 127.0.0.2, not a peer: nothing, however valid the request.
    let mut stranger = Smf::new(Ipv4Addr::new(127, 0, 0, 2), upf.addr);
    let (_, bytes) = stranger.encode(
        None,
        &Message::AssociationSetupRequest(AssociationSetupRequest {
            node_id: stranger.node_id(),
            recovery_time_stamp: SMF_RECOVERY,
            up_function_features: None,
            cp_function_features: None,
        }),
    );
    stranger.send_raw(&bytes);
    wait_for("the stranger's datagram to be counted", || {
        upf.has_metric("mecgw_pfcp_ignored_total{reason=\"not_a_peer\"} 1")
    });
    // The UPF handles datagrams in order: once the SMF's next request is answered, an
    // answer to the stranger would have been sent.
    smf.heartbeat_round_trip();
    assert!(
        stranger.recv_raw(Duration::ZERO).is_none(),
        "a stranger is not answered"
    );
    assert!(
        upf.has_metric("mecgw_pfcp_associations 1"),
        "the stranger was not associated"
    );

    // Three octets: too short for a header.
    smf.send_unanswered(&[0x20, 0x01, 0x00]);
    assert!(upf.has_metric("mecgw_pfcp_ignored_total{reason=\"too_short\"} 1"));

    // A Session Report Request is the UPF's to send: ignored, every time it comes.
    let (_, bytes) = smf.encode(
        Some(0),
        &Message::SessionReportRequest(mecgw_pfcp::message::SessionReportRequest {
            report_type: ReportType(ReportType::USAGE),
            downlink_data_report: None,
            usage_report: Vec::new(),
        }),
    );
    smf.send_unanswered(&bytes);
    smf.send_unanswered(&bytes);
    assert!(
        upf.has_metric("mecgw_pfcp_ignored_total{reason=\"unexpected_request\"} 2"),
        "{}",
        upf.metrics()
    );
    assert!(upf.has_metric("mecgw_pfcp_retransmissions_total 0"));

    // Nothing answered any of them: every datagram the SMF got was a heartbeat response.
    assert!(smf.recv_raw(Duration::ZERO).is_none());
    assert!(smf.requests.is_empty());
}

#[test]
fn an_smf_that_stops_answering_heartbeats_is_lost_and_its_sessions_released() {
    let upf = Upf::start(|c| {
        c.heartbeat_interval_secs = 1;
        c.on_peer_lost = OnPeerLost::Release;
    });
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    let recovery = smf.associate();
    let (up_seid, teid) = smf.establish(breakout(0x90, smf.ip, volume_urr()));
    assert_eq!(upf.dp.tunnels().len(), 1);

    // The UPF's heartbeat: a node message with its Recovery Time Stamp. Answered.
    let hb = smf.request_from_upf();
    assert_eq!(hb.header.message_type, message_type::HEARTBEAT_REQUEST);
    assert_eq!(hb.header.seid, None);
    assert_eq!(
        hb.message,
        Message::HeartbeatRequest(Heartbeat {
            recovery_time_stamp: recovery
        })
    );
    smf.answer(
        &hb.header,
        None,
        &Message::HeartbeatResponse(Heartbeat {
            recovery_time_stamp: SMF_RECOVERY,
        }),
    );

    // The next one goes unanswered: sent 1 + N1 times, the same bytes each time.
    let first = smf.request_from_upf();
    assert_eq!(first.header.message_type, message_type::HEARTBEAT_REQUEST);
    assert_ne!(first.header.sequence, hb.header.sequence);
    for _ in 0..2 {
        let again = smf.request_from_upf();
        assert_eq!(
            again.bytes, first.bytes,
            "a retransmission, not a new request"
        );
    }
    wait_for("the SMF to be declared lost", || {
        upf.has_metric("mecgw_pfcp_peers_lost_total 1")
    });
    wait_for("its session to leave the fast path", || {
        upf.dp.tunnels().is_empty() && upf.dp.downlinks().is_empty()
    });
    assert!(!upf.dp.tunnels().contains_key(&teid));
    wait_for("the sessions gauge to drop", || {
        upf.has_metric("mecgw_pfcp_sessions 0")
    });
    assert!(upf.has_metric("mecgw_pfcp_associations 0"));
    wait_for(
        "a grace period for the released session's final usage",
        || upf.dp.grace_periods() >= 1,
    );

    // Released means gone: the SMF must set the association up again.
    let r = query_urr(&mut smf, up_seid, 1);
    let Message::SessionModificationResponse(m) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(m.cause, Cause::SESSION_CONTEXT_NOT_FOUND);
    let r = smf.request(
        Some(0),
        Message::SessionEstablishmentRequest(breakout(0x91, smf.ip, volume_urr())),
    );
    let Message::SessionEstablishmentResponse(e) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(e.cause, Cause::NO_ESTABLISHED_PFCP_ASSOCIATION);
    // Exactly one loss: the retransmissions were of one heartbeat.
    assert!(upf.has_metric("mecgw_pfcp_peers_lost_total 1"));
}

#[test]
fn an_smf_with_a_new_recovery_time_stamp_has_its_sessions_released() {
    let upf = Upf::start(|c| c.heartbeat_interval_secs = 1);
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    let recovery = smf.associate();
    smf.establish(breakout(0xa0, smf.ip, volume_urr()));
    assert_eq!(upf.dp.tunnels().len(), 1);

    // The SMF sends a heartbeat as a restarted SMF would: its sessions are gone.
    smf.recovery = SMF_RECOVERY + 1;
    let hb = smf.heartbeat_round_trip();
    assert_eq!(hb.recovery_time_stamp, recovery, "the UPF did not restart");
    wait_for("the restarted SMF's session to leave the fast path", || {
        upf.dp.tunnels().is_empty() && upf.dp.downlinks().is_empty()
    });
    assert!(upf.has_metric("mecgw_pfcp_associations 0"));
    assert!(upf.has_metric("mecgw_pfcp_peers_lost_total 0"));

    // Again, the restart seen in the SMF's answer to the UPF's heartbeat.
    smf.associate();
    smf.establish(breakout(0xa1, smf.ip, volume_urr()));
    assert_eq!(upf.dp.tunnels().len(), 1);
    smf.requests.clear();
    let hb = smf.request_from_upf();
    assert_eq!(hb.header.message_type, message_type::HEARTBEAT_REQUEST);
    smf.answer(
        &hb.header,
        None,
        &Message::HeartbeatResponse(Heartbeat {
            recovery_time_stamp: SMF_RECOVERY + 2,
        }),
    );
    wait_for("the session to leave the fast path", || {
        upf.dp.tunnels().is_empty() && upf.dp.downlinks().is_empty()
    });
    wait_for("the sessions gauge to drop", || {
        upf.has_metric("mecgw_pfcp_sessions 0")
    });
    assert!(upf.has_metric("mecgw_pfcp_associations 0"));
}

#[test]
fn a_heartbeat_of_a_replaced_association_does_not_lose_the_new_one() {
    let upf = Upf::start(|c| {
        c.heartbeat_interval_secs = 1;
        c.on_peer_lost = OnPeerLost::Release;
    });
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();
    let old = smf.request_from_upf();
    assert_eq!(old.header.message_type, message_type::HEARTBEAT_REQUEST);

    // The SMF restarts before answering: a new association, and a session on it.
    smf.recovery = SMF_RECOVERY + 1;
    smf.associate();
    let (_, teid) = smf.establish(breakout(0xc0, smf.ip, volume_urr()));

    // The old heartbeat is not answered (a restarted SMF knows nothing of it); the new
    // association's heartbeats are. The old one's retries end before the new one's first
    // heartbeat is due (T1 × (N1 + 1) < the heartbeat interval), and the UPF handles
    // retries before heartbeats.
    let new = loop {
        let r = smf.request_from_upf();
        assert_eq!(r.header.message_type, message_type::HEARTBEAT_REQUEST);
        if r.header.sequence != old.header.sequence {
            break r;
        }
    };
    smf.answer(
        &new.header,
        None,
        &Message::HeartbeatResponse(Heartbeat {
            recovery_time_stamp: smf.recovery,
        }),
    );
    smf.heartbeat_round_trip();
    assert!(
        upf.has_metric("mecgw_pfcp_peers_lost_total 0"),
        "{}",
        upf.metrics()
    );
    assert!(upf.has_metric("mecgw_pfcp_associations 1"));
    assert!(
        upf.dp.tunnels().contains_key(&teid),
        "the new session stays"
    );
}

#[test]
fn a_response_from_another_peer_does_not_settle_a_request() {
    let upf = Upf::start(|c| {
        c.peers = vec!["127.0.0.0/24".parse::<IpPrefix>().unwrap()];
        c.heartbeat_interval_secs = 1;
    });
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    let other = Smf::new(Ipv4Addr::new(127, 0, 0, 2), upf.addr);
    smf.associate();
    let hb = smf.request_from_upf();
    assert_eq!(hb.header.message_type, message_type::HEARTBEAT_REQUEST);

    // Another SMF (a peer, not the addressee) answers the heartbeat's sequence number.
    other.answer(
        &hb.header,
        None,
        &Message::HeartbeatResponse(Heartbeat {
            recovery_time_stamp: SMF_RECOVERY,
        }),
    );
    // The request still waits for its addressee: retried, then the SMF is lost.
    for _ in 0..2 {
        assert_eq!(smf.request_from_upf().bytes, hb.bytes);
    }
    wait_for("the silent SMF to be declared lost", || {
        upf.has_metric("mecgw_pfcp_peers_lost_total 1")
    });
    assert!(upf.has_metric("mecgw_pfcp_ignored_total{reason=\"unexpected_response\"} 1"));
}

#[test]
fn periodic_usage_reports_are_retried_and_what_is_not_taken_is_carried() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();
    let cp_seid = 0xb0;
    let (up_seid, teid) = smf.establish(breakout(cp_seid, smf.ip, periodic_urr(1)));
    let (up_slot, down_slot) = slots(&upf.dp, teid);
    upf.dp.set_counter(up_slot, 3, 300);
    upf.dp.set_counter(down_slot, 4, 4_000);

    let report_of = |r: &Received| -> UsageReport {
        assert_eq!(r.header.message_type, message_type::SESSION_REPORT_REQUEST);
        assert_eq!(r.header.seid, Some(cp_seid), "to the SMF's SEID");
        let Message::SessionReportRequest(req) = &r.message else {
            panic!("{:?}", r.message)
        };
        assert_eq!(req.report_type, ReportType(ReportType::USAGE));
        assert_eq!(req.usage_report.len(), 1);
        let u = req.usage_report[0].clone();
        assert_eq!(u.urr_id, 1);
        assert_eq!(u.trigger, UsageReportTrigger(UsageReportTrigger::PERIODIC));
        u
    };
    let accept = |smf: &Smf, r: &Received| {
        smf.answer(
            &r.header,
            Some(up_seid),
            &Message::SessionReportResponse(SessionReportResponse {
                cause: Cause::ACCEPTED,
                offending_ie: None,
            }),
        );
    };

    // The first report: what was counted; accepted.
    let first = smf.request_from_upf();
    let u = report_of(&first);
    assert_eq!(u.ur_seqn, 0);
    assert_eq!(volumes(&u), (300, 3, 4_000, 4));
    accept(&smf, &first);

    // The second goes unanswered: the same request 1 + N1 times.
    let second = smf.request_from_upf();
    assert_ne!(second.header.sequence, first.header.sequence);
    let u = report_of(&second);
    assert_eq!(u.ur_seqn, 1);
    assert_eq!(volumes(&u), (0, 0, 0, 0), "nothing new since the first");
    // Traffic after the unanswered report.
    upf.dp.set_counter(up_slot, 5, 500);
    upf.dp.set_counter(down_slot, 4, 4_000);
    for _ in 0..2 {
        let again = smf.request_from_upf();
        assert_eq!(
            again.bytes, second.bytes,
            "a retransmission of the same report"
        );
    }

    // The third: what the unanswered one said (nothing) plus what came after it.
    let third = smf.request_from_upf();
    assert_ne!(third.header.sequence, second.header.sequence);
    let u = report_of(&third);
    assert_eq!(u.ur_seqn, 2);
    assert_eq!(volumes(&u), (200, 2, 0, 0));
    // Unanswered too: its volumes must reach the fourth.
    upf.dp.set_counter(down_slot, 6, 4_600);
    for _ in 0..2 {
        assert_eq!(smf.request_from_upf().bytes, third.bytes);
    }
    let fourth = smf.request_from_upf();
    let u = report_of(&fourth);
    assert_eq!(u.ur_seqn, 3);
    assert_eq!(
        volumes(&u),
        (200, 2, 600, 2),
        "the third's volumes carried into the fourth, with what came since"
    );
    accept(&smf, &fourth);
    assert!(
        upf.has_metric("mecgw_pfcp_usage_reports_total{trigger=\"periodic\"} 4"),
        "{}",
        upf.metrics()
    );
}

/// A session re-tunnelling its uplink to a PSA: the PSA gets a GTP-U Echo Request from mecgw
/// at once (so the kernel resolves its neighbour entry before the first G-PDU), and a QER
/// with an MBR is accepted and counted as not enforced.
#[test]
fn a_new_retunnel_target_is_probed_and_unenforced_rates_are_counted() {
    let psa_ip = Ipv4Addr::new(127, 0, 0, 3);
    let psa = UdpSocket::bind((psa_ip, 2152)).expect("the PSA's GTP-U port on 127.0.0.3");
    psa.set_read_timeout(Some(DEADLINE)).unwrap();
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();

    let mut req = breakout(0x0000_c0de_0000_0003, smf.ip, volume_urr());
    req.create_far[0].forwarding_parameters = Some(ForwardingParameters {
        destination_interface: Some(Interface::Core),
        network_instance: None,
        outer_header_creation: Some(OuterHeaderCreation {
            description: OuterHeaderCreation::GTPU_UDP_IPV4,
            teid: Some(0x99),
            ipv4: Some(psa_ip),
            ipv6: None,
            port: None,
        }),
    });
    req.create_pdr[0].qer_ids = vec![1];
    req.create_qer = vec![Qer {
        qer_id: 1,
        gate_status: Some(GateStatus {
            uplink_open: true,
            downlink_open: true,
        }),
        mbr: Some(BitRate {
            uplink_kbps: 100_000,
            downlink_kbps: 200_000,
        }),
        gbr: None,
        qfi: Some(9),
    }];
    let r = smf.request(Some(0), Message::SessionEstablishmentRequest(req));
    let Message::SessionEstablishmentResponse(e) = r.message else {
        panic!("{:?}", r.message)
    };
    assert_eq!(
        e.cause,
        Cause::ACCEPTED,
        "offending IE {:?}",
        e.offending_ie
    );
    let teid = match e.created_pdr[0].local_f_teid {
        Some(FTeid::Assigned { teid, .. }) => teid,
        ref other => panic!("{other:?}"),
    };
    assert_eq!(upf.dp.tunnels()[&teid].pdrs[0].action, pdr_action::RETUNNEL);

    // The probe: a GTP-U Echo Request (version 1, PT, S; type 1; TEID 0), TS 29.281 §7.2.1.
    let mut buf = [0u8; 64];
    let (n, from) = psa.recv_from(&mut buf).expect("an Echo Request at the PSA");
    assert_eq!(&buf[..4], &[0x32, 0x01, 0x00, 0x04], "{:02x?}", &buf[..n]);
    assert_eq!(&buf[4..8], &[0, 0, 0, 0]);
    assert_eq!(n, 12);
    assert!(from.ip().is_loopback());
    assert!(
        upf.has_metric("mecgw_pfcp_neighbour_probes_total 1"),
        "{}",
        upf.metrics()
    );
    assert!(
        upf.has_metric("mecgw_pfcp_unenforced_total 1"),
        "{}",
        upf.metrics()
    );
}

/// An SMF that establishes again under a CP F-SEID it already used (it lost the session,
/// e.g. restarted without mecgw noticing) gets the new session; the old one, stale, is
/// deleted, so its UE address does not block the new one.
#[test]
fn an_establishment_reusing_a_cp_f_seid_replaces_the_stale_session() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();
    let cp_seid = 0x0000_c0de_0000_0009;
    let teid_of = |r: Received| {
        let Message::SessionEstablishmentResponse(e) = r.message else {
            panic!("{:?}", r.message)
        };
        assert_eq!(
            e.cause,
            Cause::ACCEPTED,
            "offending IE {:?}",
            e.offending_ie
        );
        match e.created_pdr[0].local_f_teid {
            Some(FTeid::Assigned { teid, .. }) => teid,
            ref other => panic!("{other:?}"),
        }
    };
    let first = teid_of(smf.request(
        Some(0),
        Message::SessionEstablishmentRequest(breakout(cp_seid, smf.ip, volume_urr())),
    ));
    let second = teid_of(smf.request(
        Some(0),
        Message::SessionEstablishmentRequest(breakout(cp_seid, smf.ip, volume_urr())),
    ));
    assert_ne!(first, second);
    let tunnels = upf.dp.tunnels();
    assert!(tunnels.contains_key(&second), "the new session is in force");
    assert!(!tunnels.contains_key(&first), "the stale one is gone");
    assert_eq!(upf.dp.downlinks().len(), 1, "one downlink for the UE");
    assert!(upf.has_metric("mecgw_pfcp_sessions 1"), "{}", upf.metrics());
    assert!(
        upf.has_metric("mecgw_pfcp_stale_sessions_replaced_total 1"),
        "{}",
        upf.metrics()
    );
}

/// An SMF that assigns the F-TEIDs itself (in mecgw's range: mecgw advertises FTUP, but an
/// explicit TEID it does not use is accepted) gives every uplink PDR of a session the same
/// one, as it would with CHOOSE and one CHOOSE ID. The session is accepted with both PDRs on
/// that TEID in the fast path; another session asking for the same TEID is refused with 71.
#[test]
fn an_smf_assigned_f_teid_shared_by_a_sessions_uplink_pdrs_is_accepted() {
    let upf = Upf::start(|_| {});
    let mut smf = Smf::new(Ipv4Addr::LOCALHOST, upf.addr);
    smf.associate();
    let teid = TEID_MIN + 0x1234;
    let with_teid = |cp_seid: u64| {
        let mut req = breakout(cp_seid, Ipv4Addr::LOCALHOST, volume_urr());
        let assigned = FTeid::Assigned {
            teid,
            ipv4: Some(N3),
            ipv6: None,
        };
        req.create_pdr[0].pdi.local_f_teid = Some(assigned.clone());
        // A catch-all on the same F-TEID, after the breakout PDR: passed on to the core.
        let mut catch_all = req.create_pdr[0].clone();
        catch_all.pdr_id = 3;
        catch_all.precedence = 300;
        catch_all.outer_header_removal = None;
        catch_all.far_id = Some(3);
        req.create_pdr.push(catch_all);
        req.create_pdr[0].pdi.sdf_filters = vec![mecgw_pfcp::ie::SdfFilter {
            flow_description: Some("permit out ip from 192.0.2.0/24 to assigned".into()),
            ..mecgw_pfcp::ie::SdfFilter::default()
        }];
        req.create_far.push(CreateFar {
            far_id: 3,
            apply_action: ApplyAction(ApplyAction::FORW),
            forwarding_parameters: Some(ForwardingParameters {
                destination_interface: Some(Interface::Core),
                network_instance: None,
                outer_header_creation: None,
            }),
            bar_id: None,
        });
        Message::SessionEstablishmentRequest(req)
    };
    let cause = |r: &Received| match &r.message {
        Message::SessionEstablishmentResponse(e) => (e.cause, e.offending_ie),
        other => panic!("{other:?}"),
    };

    let r = smf.request(Some(0), with_teid(0x0000_c0de_0000_0101));
    assert_eq!(cause(&r), (Cause::ACCEPTED, None), "{:?}", r.message);
    let tunnels = upf.dp.tunnels();
    let t = tunnels
        .get(&teid)
        .expect("the SMF's TEID is in the fast path");
    assert_eq!(t.pdr_count, 2, "both uplink PDRs on it: {t:?}");
    assert_eq!(
        (t.pdrs[0].action, t.pdrs[1].action),
        (pdr_action::LOCAL, pdr_action::FORWARD)
    );
    assert!(upf.has_metric("mecgw_pfcp_sessions 1"));

    let mut other = with_teid(0x0000_c0de_0000_0102);
    if let Message::SessionEstablishmentRequest(req) = &mut other {
        // Another UE, the same TEID.
        for p in &mut req.create_pdr {
            p.pdi.ue_ip_address[0].ipv4 = Some(Ipv4Addr::new(10, 45, 0, 10));
        }
    }
    let r = smf.request(Some(0), other);
    assert_eq!(
        cause(&r),
        (
            Cause::INVALID_F_TEID_ALLOCATION_OPTION,
            Some(ie_type::F_TEID)
        )
    );
    assert!(upf.has_metric("mecgw_pfcp_sessions 1"));
}
