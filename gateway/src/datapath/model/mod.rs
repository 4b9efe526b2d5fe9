//! The reference model of the fast path: packet bytes + tables → verdict, reason, rule,
//! session and output bytes, with exactly the semantics of the XDP programs.
//!
//! It is written for clarity, not speed (rules are tried one by one in precedence order,
//! where the kernel walks compiled candidate lists), and it never touches the kernel or aya,
//! so it can be tested anywhere and later serve as a userspace datapath. The differential
//! test runs random tables and packets through both and demands identical results.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mecgw_ebpf::{
    ENCAP_OVERHEAD_V4, ENCAP_OVERHEAD_V6, EXT_PDU_SESSION_CONTAINER, GTP_TYPE_GPDU, GTPU_PORT,
    IPV6_FRAGMENT, MAX_EXT_HEADERS, MAX_IPV6_EXT_HEADERS, Reason, Verdict, is_ipv6_ext,
};

pub mod pfcp;

use super::{
    Direction,
    compile::CompiledTables,
    flow_counters::{FlowHit, FlowKey},
    tables::{Disposition, NextHop, RuleAction, RuleState, Session, Tables, TrafficRule},
};

/// What the fast path does with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Id of the rule that decided, if one did.
    pub rule: Option<u32>,
    /// Id of the session the frame belongs to, if known.
    pub session: Option<u32>,
    /// Id of the PFCP PDR that decided, if one did.
    pub pdr: Option<u32>,
    /// The frame as the program leaves it (unchanged unless redirected).
    pub packet: Vec<u8>,
    /// What the frame adds to its flow's counters when flow accounting is on: every G-PDU of
    /// a session whose source is the UE, and every well-formed packet to a UE, whatever the
    /// verdict (see [`super::flow_counters`]).
    pub flow: Option<FlowHit>,
}

impl Outcome {
    /// The frame left as it is, with this verdict and reason (no rule or PDR decided).
    pub(crate) fn unchanged(
        frame: &[u8],
        verdict: Verdict,
        reason: Reason,
        session: Option<u32>,
    ) -> Outcome {
        Outcome {
            verdict,
            reason,
            rule: None,
            session,
            pdr: None,
            packet: frame.to_vec(),
            flow: None,
        }
    }
}

/// The model, built once per set of tables.
pub struct Model {
    tables: Tables,
    by_teid: HashMap<u32, usize>,
    by_ue_v4: HashMap<Ipv4Addr, usize>,
    by_ue_v6: HashMap<(u8, u128), usize>,
    ue_v6_lens: Vec<u8>,
    /// Indices of active rules in precedence order.
    rules: Vec<usize>,
    /// PFCP sessions' entries, if any are in force ([`Model::with_pfcp`]).
    pfcp: Option<pfcp::PfcpEntries>,
    /// The kernel's FIB, as far as the frames asked of it need ([`Model::with_fib`]).
    fib: pfcp::Fib,
}

/// Where a frame goes at layer 2, as decided before it is rewritten.
#[derive(Clone, Copy, Debug)]
enum Hop {
    /// To `dst` from `src`, redirected.
    Redirect { dst: [u8; 6], src: [u8; 6] },
    /// A FIB next hop without a resolved neighbour: passed to the kernel with the frame's MACs
    /// as received (destination, source), as it would leave otherwise.
    Unresolved { received: [u8; 12] },
}

impl Hop {
    fn verdict(self) -> Verdict {
        match self {
            Hop::Redirect { .. } => Verdict::Redirect,
            Hop::Unresolved { .. } => Verdict::Pass,
        }
    }

    /// The reason: `done` when redirected.
    fn reason(self, done: Reason) -> Reason {
        match self {
            Hop::Redirect { .. } => done,
            Hop::Unresolved { .. } => Reason::NextHopUnresolved,
        }
    }

    /// Destination and source MAC of the frame.
    fn macs(self) -> ([u8; 6], [u8; 6]) {
        match self {
            Hop::Redirect { dst, src } => (dst, src),
            Hop::Unresolved { received } => {
                let (mut d, mut s) = ([0; 6], [0; 6]);
                d.copy_from_slice(&received[..6]);
                s.copy_from_slice(&received[6..]);
                (d, s)
            }
        }
    }
}

const OUTER_TTL: u8 = 64;
const GTP_LEN: usize = 16;

/// The most of a frame BPF_PROG_TEST_RUN puts in the linear part: one page less
/// XDP_PACKET_HEADROOM (256) and the skb_shared_info tail (320 on x86_64). The rest of a
/// longer frame goes into page-sized fragments (at most MAX_SKB_FRAGS, 17 by default).
pub const TEST_RUN_LINEAR: usize = 4096 - 256 - 320;

/// The linear part of a frame of `len` bytes in BPF_PROG_TEST_RUN.
pub fn test_run_linear(len: usize) -> usize {
    len.min(TEST_RUN_LINEAR)
}

impl Model {
    /// A model of the fast path loaded with `tables`.
    pub fn new(tables: &CompiledTables) -> Model {
        let mut by_ue_v6 = HashMap::new();
        for (i, s) in tables.sessions.iter().enumerate() {
            if let Some(p) = s.ue_ipv6
                && let IpAddr::V6(a) = p.addr()
            {
                by_ue_v6.insert((p.len(), u128::from(a)), i);
            }
        }
        let mut ue_v6_lens: Vec<u8> = by_ue_v6.keys().map(|k| k.0).collect();
        ue_v6_lens.sort_unstable_by(|a, b| b.cmp(a));
        ue_v6_lens.dedup();
        // Precedence worked out here again, not taken from the compiled lists: the model is
        // the independent statement of what the kernel must do.
        let mut rules: Vec<usize> = (0..tables.rules.len())
            .filter(|&i| tables.rules[i].state == RuleState::Active)
            .collect();
        rules.sort_by_key(|&i| (tables.rules[i].priority, tables.rules[i].id));
        Model {
            by_teid: tables
                .sessions
                .iter()
                .enumerate()
                .map(|(i, s)| (s.uplink_teid.0, i))
                .collect(),
            by_ue_v4: tables
                .sessions
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.ue_ipv4.map(|a| (a, i)))
                .collect(),
            by_ue_v6,
            ue_v6_lens,
            rules,
            tables: Tables::clone(tables),
            pfcp: None,
            fib: pfcp::Fib::new(),
        }
    }

    /// The model with the kernel's FIB as `fib` says: what a side whose next hop is `fib`
    /// asks for every frame (and re-tunnels too).
    pub fn with_fib(mut self, fib: pfcp::Fib) -> Model {
        self.fib.extend(fib);
        self
    }

    /// The next hop of a frame that leaves the side configured with `hop`, `ifindex` and our
    /// `mac`, as a packet of `len` bytes to `dst`; `frame` as received. `Err`: dropped as it is,
    /// for this reason (the FIB has no route there, one out of another interface, or one
    /// whose MTU the packet exceeds).
    fn next_hop(
        &self,
        frame: &[u8],
        side: (NextHop, u32, [u8; 6]),
        dst: IpAddr,
        len: usize,
    ) -> Result<Hop, Reason> {
        let (hop, ifindex, mac) = side;
        if let NextHop::Mac(m) = hop {
            return Ok(Hop::Redirect { dst: m.0, src: mac });
        }
        match pfcp::lookup(&self.fib, dst, len) {
            pfcp::Answer::Oversize => Err(Reason::Oversize),
            pfcp::Answer::NoRoute => Err(Reason::NoRoute),
            pfcp::Answer::Forward { ifindex: out, .. }
            | pfcp::Answer::NoNeighbour { ifindex: out }
                if out != ifindex =>
            {
                Err(Reason::NoRoute)
            }
            pfcp::Answer::Forward { smac, dmac, .. } => Ok(Hop::Redirect {
                dst: dmac,
                src: smac,
            }),
            pfcp::Answer::NoNeighbour { .. } => {
                let mut received = [0; 12];
                received.copy_from_slice(&frame[..12]);
                Ok(Hop::Unresolved { received })
            }
        }
    }

    /// [`Model::next_hop`] of an encapsulated frame: to `gnb`, `len` bytes long, out of N3.
    fn n3_next_hop(&self, frame: &[u8], gnb: IpAddr, len: usize) -> Result<Hop, Reason> {
        let n3 = &self.tables.n3;
        self.next_hop(frame, (n3.next_hop, n3.ifindex, n3.mac.0), gnb, len)
    }

    /// The uplink program (`mecgw_uplink`) on one frame from N3, all of it in one buffer.
    pub fn uplink(&self, frame: &[u8]) -> Outcome {
        self.uplink_split(frame, frame.len())
    }

    /// [`Model::uplink`] on a frame whose first `linear` bytes are its linear part (a
    /// multi-buffer frame when that is less than all of it; [`test_run_linear`] gives what
    /// BPF_PROG_TEST_RUN makes of a frame). Headers are read from the linear part only: a
    /// multi-buffer frame whose headers are not all there is passed, `headers_not_linear`.
    pub fn uplink_split(&self, frame: &[u8], linear: usize) -> Outcome {
        let t = &self.tables;
        let keep = |verdict, reason, session: Option<&Session>| {
            Outcome::unchanged(frame, verdict, reason, session.map(|s| s.id))
        };
        let fr = Frame {
            f: frame,
            linear: linear.min(frame.len()),
        };
        let pdu = match parse_gpdu(&fr) {
            Ok(p) => p,
            Err(r) if r.passes_unjudged() => {
                return keep(Verdict::Pass, r, None);
            }
            Err(r) => return keep(by(t.defaults.malformed), r, None),
        };
        if let Some(p) = &self.pfcp
            && pdu.teid >= p.teid_min
        {
            return self.uplink_pfcp(p, frame, &pdu);
        }
        let Some(session) = self.by_teid.get(&pdu.teid).map(|&i| &t.sessions[i]) else {
            return keep(by(t.defaults.unknown_teid), Reason::UnknownTeid, None);
        };
        let ue = match pdu.inner.src {
            IpAddr::V4(a) => session.ue_ipv4 == Some(a),
            src @ IpAddr::V6(_) => session.ue_ipv6.is_some_and(|p| p.contains(src)),
        };
        if !ue {
            return keep(
                by(t.defaults.spoofed_source),
                Reason::SpoofedSource,
                Some(session),
            );
        }
        let mut flow = uplink_flow(session.id, &pdu);
        let Some(rule) = self
            .rules
            .iter()
            .map(|&i| &t.rules[i])
            .find(|r| rule_matches(r, &pdu))
        else {
            let mut out = keep(Verdict::Pass, Reason::NoRule, Some(session));
            out.flow = Some(flow);
            return out;
        };
        let mut out = match rule.action {
            RuleAction::Drop => keep(Verdict::Drop, Reason::RuleDrop, Some(session)),
            RuleAction::Passthrough => keep(Verdict::Pass, Reason::RulePassthrough, Some(session)),
            RuleAction::Local if pdu.inner.ttl <= 1 => {
                keep(Verdict::Pass, Reason::TtlExpired, Some(session))
            }
            RuleAction::Local => {
                self.decapsulated(frame, &pdu, Some(session.id), Reason::RuleLocal)
            }
        };
        out.rule = Some(rule.id);
        flow.rule = Some(rule.id);
        out.flow = Some(flow);
        out
    }

    /// The inner packet of `pdu` with a new Ethernet header and its TTL or hop limit
    /// decremented, redirected to the local services (reason `reason`). With the next hop
    /// from the FIB and no neighbour resolved, the inner packet as received behind the
    /// frame's own MACs, passed to the kernel; without a route there, the frame dropped.
    fn decapsulated(
        &self,
        frame: &[u8],
        pdu: &Gpdu,
        session: Option<u32>,
        reason: Reason,
    ) -> Outcome {
        let t = &self.tables;
        let local = (t.local.next_hop, t.local.ifindex, t.local.mac.0);
        let hop = match self.next_hop(frame, local, pdu.inner.dst, pdu.inner_len) {
            Ok(hop) => hop,
            Err(r) => return Outcome::unchanged(frame, Verdict::Drop, r, session),
        };
        let inner = &frame[pdu.inner_off..pdu.inner_off + pdu.inner_len];
        let (dst, src) = hop.macs();
        let mut packet = ethernet(dst, src, pdu.inner.src.is_ipv6());
        let at = packet.len();
        packet.extend_from_slice(inner);
        if let Hop::Redirect { .. } = hop {
            decrement_ttl(&mut packet[at..], pdu.inner.src.is_ipv6());
            push_tags(&mut packet, &t.local.vlan);
        }
        Outcome {
            verdict: hop.verdict(),
            reason: hop.reason(reason),
            rule: None,
            session,
            pdr: None,
            packet,
            flow: None,
        }
    }

    /// The downlink program (`mecgw_downlink`) on one frame from the local-services side.
    pub fn downlink(&self, frame: &[u8]) -> Outcome {
        self.downlink_split(frame, frame.len())
    }

    /// [`Model::downlink`] on a frame whose first `linear` bytes are its linear part (see
    /// [`Model::uplink_split`]). The verdict never depends on it (the downlink reads at most
    /// 82 bytes of headers); a flow's ports do, when IPv6 extension headers reach past it.
    pub fn downlink_split(&self, frame: &[u8], linear: usize) -> Outcome {
        let linear = linear.min(frame.len());
        let t = &self.tables;
        let keep = |verdict, reason, session: Option<&Session>| {
            Outcome::unchanged(frame, verdict, reason, session.map(|s| s.id))
        };
        let not_for_ue = keep(Verdict::Pass, Reason::NotForUe, None);
        let Some((l3, ethertype)) = parse_ethernet(frame) else {
            return not_for_ue;
        };
        let (session, total, v6, ttl) = match ethertype {
            0x0800 => {
                let Some(h) = frame.get(l3..l3 + 20) else {
                    return not_for_ue;
                };
                if h[0] >> 4 != 4 {
                    return not_for_ue;
                }
                let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
                if let Some(d) = self.pfcp.as_ref().and_then(|p| p.downlink(dst.into())) {
                    let ihl = usize::from(h[0] & 0x0f) * 4;
                    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                    if ihl < 20 || total < ihl || l3 + total > frame.len() {
                        let mut out = keep(Verdict::Drop, Reason::MalformedInner, None);
                        out.session = Some(d.session);
                        out.pdr = Some(d.pdr_id);
                        return out;
                    }
                    return self.downlink_pfcp(d, frame, l3, total, linear, false, h[8]);
                }
                let Some(s) = self.by_ue_v4.get(&dst).map(|&i| &t.sessions[i]) else {
                    return not_for_ue;
                };
                let ihl = usize::from(h[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                if ihl < 20 || total < ihl || l3 + total > frame.len() {
                    return keep(Verdict::Drop, Reason::MalformedInner, Some(s));
                }
                (s, total, false, h[8])
            }
            0x86dd => {
                let Some(h) = frame.get(l3..l3 + 40) else {
                    return not_for_ue;
                };
                if h[0] >> 4 != 6 {
                    return not_for_ue;
                }
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                let dst = Ipv6Addr::from(dst);
                if let Some(d) = self.pfcp.as_ref().and_then(|p| p.downlink(dst.into())) {
                    let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
                    if l3 + total > frame.len() {
                        let mut out = keep(Verdict::Drop, Reason::MalformedInner, None);
                        out.session = Some(d.session);
                        out.pdr = Some(d.pdr_id);
                        return out;
                    }
                    return self.downlink_pfcp(d, frame, l3, total, linear, true, h[7]);
                }
                let Some(s) = self.session_by_ue_v6(dst) else {
                    return not_for_ue;
                };
                let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
                if l3 + total > frame.len() {
                    return keep(Verdict::Drop, Reason::MalformedInner, Some(s));
                }
                (s, total, true, h[7])
            }
            _ => return not_for_ue,
        };
        let flow = Some(downlink_flow(
            session.id,
            &frame[l3..l3 + total],
            linear - l3,
            v6,
        ));
        let keep = |verdict, reason| Outcome {
            flow,
            ..keep(verdict, reason, Some(session))
        };
        if ttl <= 1 {
            return keep(Verdict::Pass, Reason::TtlExpired);
        }
        let gnb_v6 = session.gnb.is_ipv6();
        let overhead = if gnb_v6 {
            ENCAP_OVERHEAD_V6
        } else {
            ENCAP_OVERHEAD_V4
        } as usize;
        if total + overhead > t.n3.mtu as usize {
            return keep(Verdict::Drop, Reason::Oversize);
        }
        let hop = match self.n3_next_hop(frame, session.gnb, total + overhead) {
            Ok(hop) => hop,
            Err(reason) => return keep(Verdict::Drop, reason),
        };
        let mut inner = frame[l3..l3 + total].to_vec();
        decrement_ttl(&mut inner, v6);
        Outcome {
            verdict: hop.verdict(),
            reason: hop.reason(Reason::Encapsulated),
            rule: None,
            session: Some(session.id),
            pdr: None,
            packet: encapsulate(
                t,
                hop.macs(),
                session.downlink_teid.0,
                session.qfi.get(),
                session.gnb,
                &inner,
            ),
            flow,
        }
    }

    fn session_by_ue_v6(&self, dst: Ipv6Addr) -> Option<&Session> {
        let a = u128::from(dst);
        self.ue_v6_lens.iter().find_map(|&len| {
            let masked = a & super::tables::mask_v6(len);
            self.by_ue_v6
                .get(&(len, masked))
                .map(|&i| &self.tables.sessions[i])
        })
    }
}

/// The flow of a G-PDU from the UE of `session` (no rule yet).
fn uplink_flow(session: u32, pdu: &Gpdu) -> FlowHit {
    FlowHit {
        key: FlowKey {
            session,
            ue: pdu.inner.src,
            peer: pdu.inner.dst,
            protocol: pdu.inner.proto,
            ue_port: pdu.inner.ports.map_or(0, |p| p.0),
            peer_port: pdu.inner.ports.map_or(0, |p| p.1),
        },
        direction: Direction::Uplink,
        bytes: pdu.inner_len as u64,
        rule: None,
    }
}

/// The flow of a packet to a UE: `ip` is its IP packet (header checked, `total` bytes long).
fn downlink_flow(session: u32, ip: &[u8], linear: usize, v6: bool) -> FlowHit {
    // Headers are read from the linear part only (its first `linear` bytes of `ip`).
    let headers = &ip[..linear.min(ip.len())];
    let (ue, peer, protocol, l4) = if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&ip[8..24]);
        d.copy_from_slice(&ip[24..40]);
        // The upper layer behind the extension headers; the first Next Header, without
        // ports, if they run past the packet.
        let (protocol, l4) = match ipv6_upper(headers, ip.len()) {
            Some((proto, l4, fragment)) => (proto, (!fragment).then_some(l4)),
            None => (ip[6], None),
        };
        (IpAddr::from(d), IpAddr::from(s), protocol, l4)
    } else {
        let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        (dst.into(), src.into(), ip[9], (!fragment).then_some(ihl))
    };
    // Downlink the peer is the source: its port comes first.
    let (peer_port, ue_port) = l4
        .and_then(|l4| ports(headers, protocol, l4))
        .unwrap_or((0, 0));
    FlowHit {
        key: FlowKey {
            session,
            ue,
            peer,
            protocol,
            ue_port,
            peer_port,
        },
        direction: Direction::Downlink,
        bytes: ip.len() as u64,
        rule: None,
    }
}

/// Source and destination port of the L4 header at `l4`, for TCP, UDP and SCTP when the
/// packet holds their first 4 bytes.
fn ports(ip: &[u8], protocol: u8, l4: usize) -> Option<(u16, u16)> {
    if !matches!(protocol, 6 | 17 | 132) {
        return None;
    }
    let p = ip.get(l4..l4 + 4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

fn by(d: Disposition) -> Verdict {
    match d {
        Disposition::Pass => Verdict::Pass,
        Disposition::Drop => Verdict::Drop,
    }
}

/// What the classifier reads from an inner packet.
struct Inner {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// Source and destination port.
    ports: Option<(u16, u16)>,
    ttl: u8,
}

struct Gpdu {
    teid: u32,
    qfi: Option<u8>,
    inner_off: usize,
    inner_len: usize,
    inner: Inner,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The L3 offset and EtherType behind up to two VLAN tags (802.1Q or 802.1ad each); with a
/// third, the EtherType is that tag's TPID, which nothing takes for IP.
pub(crate) fn parse_ethernet(f: &[u8]) -> Option<(usize, u16)> {
    parse_ethernet_tags(f, mecgw_ebpf::MAX_VLAN_TAGS)
}

fn parse_ethernet_tags(f: &[u8], max: usize) -> Option<(usize, u16)> {
    let vlan = |t: u16| t == 0x8100 || t == 0x88a8;
    let mut l3 = 14;
    let mut t = be16(f, 12)?;
    for _ in 0..max {
        if !vlan(t) {
            break;
        }
        t = be16(f, l3 + 2)?;
        l3 += 4;
    }
    Some((l3, t))
}

/// The upper layer of the IPv6 packet `p` (its first `len` bytes are the packet) behind at
/// most [`MAX_IPV6_EXT_HEADERS`] extension headers: (protocol, offset, fragment: a fragment
/// header with an offset or more-fragments). `None` if an extension header runs past `len`.
pub(crate) fn ipv6_upper(p: &[u8], len: usize) -> Option<(u8, usize, bool)> {
    let (mut proto, mut l4, mut fragment) = (p[6], 40, false);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_ext(proto) {
            break;
        }
        let h = p.get(l4..l4 + 8)?;
        let hlen = if proto == IPV6_FRAGMENT {
            fragment |= u16::from_be_bytes([h[2], h[3]]) & 0xfff9 != 0;
            8
        } else {
            (usize::from(h[1]) + 1) * 8
        };
        if l4 + hlen > len {
            return None;
        }
        proto = h[0];
        l4 += hlen;
    }
    Some((proto, l4, fragment))
}

/// A frame as the programs see it: `f` whole, of which only the first `linear` bytes (the
/// linear part: all of a single-buffer frame) are where headers are read from.
struct Frame<'a> {
    f: &'a [u8],
    linear: usize,
}

/// The largest packet offset the programs read at (`parse::MAX_OFFSET`).
const MAX_OFFSET: usize = 0x3fff;

impl Frame<'_> {
    /// The `n` bytes at `at`, if they lie in the linear part (as the programs' `view`).
    fn view(&self, at: usize, n: usize) -> Option<&[u8]> {
        if at > MAX_OFFSET || at + n > self.linear {
            return None;
        }
        self.f.get(at..at + n)
    }

    /// The linear part, for the parsers that take a slice.
    fn lin(&self) -> &[u8] {
        &self.f[..self.linear]
    }

    /// The reason for a header read that failed: `r`, or `HeadersNotLinear` in a
    /// multi-buffer frame.
    fn miss(&self, r: Reason) -> Reason {
        if self.f.len() > self.linear {
            Reason::HeadersNotLinear
        } else {
            r
        }
    }
}

/// Ethernet / outer IP / UDP 2152 / GTP-U / inner IP, read exactly where and as wide as
/// `parse::gpdu` reads (which decides where a multi-buffer frame's linear part is too
/// short), with every length compared with the whole frame.
fn parse_gpdu(fr: &Frame<'_>) -> Result<Gpdu, Reason> {
    let f = fr.f;
    let (l3, ethertype) = parse_ethernet(fr.lin()).ok_or(fr.miss(Reason::NotGtp))?;
    let (udp_off, ip_payload_len) = match ethertype {
        0x0800 => {
            let h = fr.view(l3, 20).ok_or(fr.miss(Reason::NotGtp))?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < 20 || h[9] != 17 {
                return Err(Reason::NotGtp);
            }
            if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(Reason::OuterFragment);
            }
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let payload = (total >= ihl && l3 + total <= f.len()).then(|| total - ihl);
            (l3 + ihl, payload)
        }
        0x86dd => {
            let h = fr.view(l3, 40).ok_or(fr.miss(Reason::NotGtp))?;
            if h[0] >> 4 != 6 {
                return Err(Reason::NotGtp);
            }
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let whole = l3 + 40 + payload <= f.len();
            let len = if whole { 40 + payload } else { f.len() - l3 };
            let (proto, l4, fragment) =
                ipv6_upper(&fr.lin()[l3..], len).ok_or(fr.miss(Reason::NotGtp))?;
            if proto != 17 {
                return Err(Reason::NotGtp);
            }
            if fragment {
                return Err(Reason::OuterFragment);
            }
            (l3 + l4, whole.then(|| 40 + payload - l4))
        }
        _ => return Err(Reason::NotGtp),
    };
    let udp = fr.view(udp_off, 8).ok_or(fr.miss(Reason::NotGtp))?;
    if u16::from_be_bytes([udp[2], udp[3]]) != GTPU_PORT {
        return Err(Reason::NotGtp);
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if Some(udp_len) != ip_payload_len || udp_len < 16 {
        return Err(Reason::MalformedGtp);
    }
    let udp_end = udp_off + udp_len;
    let g = fr
        .view(udp_off + 8, 8)
        .ok_or(fr.miss(Reason::MalformedGtp))?;
    let flags = g[0];
    if flags >> 5 != 1 || flags & 0x10 == 0 {
        return Err(Reason::MalformedGtp);
    }
    if udp_off + 16 + usize::from(u16::from_be_bytes([g[2], g[3]])) != udp_end {
        return Err(Reason::MalformedGtp);
    }
    if g[1] != GTP_TYPE_GPDU {
        return Err(Reason::GtpSignalling);
    }
    let teid = u32::from_be_bytes([g[4], g[5], g[6], g[7]]);
    let mut pos = udp_off + 16;
    let mut next = 0u8;
    if flags & 0x07 != 0 {
        if pos + 4 > udp_end {
            return Err(Reason::MalformedGtp);
        }
        let opt = fr.view(pos, 4).ok_or(fr.miss(Reason::MalformedGtp))?;
        if flags & 0x04 != 0 {
            next = opt[3];
        }
        pos += 4;
    }
    let mut qfi = None;
    for _ in 0..MAX_EXT_HEADERS {
        if next == 0 {
            break;
        }
        // An extension header is at least 4 bytes: read before its length is checked.
        let head = fr.view(pos, 4).ok_or(fr.miss(Reason::MalformedGtp))?;
        let hlen = usize::from(head[0]) * 4;
        if hlen == 0 || pos + hlen > udp_end {
            return Err(Reason::MalformedGtp);
        }
        if next == EXT_PDU_SESSION_CONTAINER {
            qfi = Some(head[2] & 0x3f);
        }
        next = fr
            .view(pos + hlen - 4, 4)
            .ok_or(fr.miss(Reason::MalformedGtp))?[3];
        pos += hlen;
    }
    if next != 0 {
        return Err(Reason::ExtChainTooLong);
    }
    if pos >= udp_end {
        return Err(Reason::MalformedInner);
    }
    let inner = parse_inner(fr, pos, udp_end - pos)?;
    Ok(Gpdu {
        teid,
        qfi,
        inner_off: pos,
        inner_len: udp_end - pos,
        inner,
    })
}

/// The inner IP packet at `off`, `len` bytes long (`parse::inner_ip`).
fn parse_inner(fr: &Frame<'_>, off: usize, len: usize) -> Result<Inner, Reason> {
    // The programs read 20 bytes first, whatever the version.
    let first = fr.view(off, 20).ok_or(fr.miss(Reason::MalformedInner))?;
    let (src, dst, proto, ttl, l4, fragment) = match first[0] >> 4 {
        4 => {
            let p = first;
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            if len < 20 || ihl < 20 || ihl > len || total != len {
                return Err(Reason::MalformedInner);
            }
            let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
            let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
            (src, dst, p[9], p[8], ihl, fragment)
        }
        6 => {
            let p = fr.view(off, 40).ok_or(fr.miss(Reason::MalformedInner))?;
            if len < 40 || 40 + usize::from(u16::from_be_bytes([p[4], p[5]])) != len {
                return Err(Reason::MalformedInner);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            d.copy_from_slice(&p[24..40]);
            let (proto, l4, fragment) =
                ipv6_upper(&fr.lin()[off..], len).ok_or(fr.miss(Reason::MalformedInner))?;
            (IpAddr::from(s), IpAddr::from(d), proto, p[7], l4, fragment)
        }
        _ => return Err(Reason::MalformedInner),
    };
    let ports = if fragment || !matches!(proto, 6 | 17 | 132) || l4 + 4 > len {
        None
    } else {
        // Inside the packet: only a multi-buffer frame's linear part can end before it.
        let p = fr
            .view(off + l4, 4)
            .ok_or(fr.miss(Reason::MalformedInner))?;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    };
    Ok(Inner {
        src,
        dst,
        proto,
        ports,
        ttl,
    })
}

fn rule_matches(r: &TrafficRule, pdu: &Gpdu) -> bool {
    let ip = &pdu.inner;
    (r.dst.is_empty() || r.dst.iter().any(|p| p.contains(ip.dst)))
        && r.teid.is_none_or(|t| t.0 == pdu.teid)
        && r.qfi.is_none_or(|q| Some(q.get()) == pdu.qfi)
        && (r.protocols.is_empty() || r.protocols.iter().any(|p| p.0 == ip.proto))
        && (r.dst_ports.is_empty()
            || ip
                .ports
                .map(|p| p.1)
                .is_some_and(|d| r.dst_ports.iter().any(|p| p.lo <= d && d <= p.hi)))
        && (r.src.is_empty() || r.src.iter().any(|p| p.contains(ip.src)))
}

fn ethernet(dst: [u8; 6], src: [u8; 6], v6: bool) -> Vec<u8> {
    let mut e = Vec::with_capacity(1600);
    e.extend_from_slice(&dst);
    e.extend_from_slice(&src);
    e.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    e
}

/// One's-complement sum of big-endian 16-bit words (an odd last byte is padded with zero).
fn sum16(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum = fold32(sum + u32::from(word));
    }
    sum
}

fn fold32(mut s: u32) -> u32 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// TTL/hop limit minus one; the IPv4 header checksum updated as RFC 1624 eqn. 3 says (the
/// kernel does the same, so a wrong checksum on input stays exactly as wrong).
fn decrement_ttl(ip: &mut [u8], v6: bool) {
    if v6 {
        ip[7] = ip[7].wrapping_sub(1);
        return;
    }
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    let new = old.wrapping_sub(0x0100);
    let check = u16::from_be_bytes([ip[10], ip[11]]);
    let sum = fold32(u32::from(!check) + u32::from(!old) + u32::from(new));
    ip[8..10].copy_from_slice(&new.to_be_bytes());
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// `inner` in a GTP-U G-PDU with TEID `teid` and a downlink PDU Session Container with
/// `qfi`, from our N3 address to `gnb`, in a frame to `macs.0` from `macs.1`.
fn encapsulate(
    t: &Tables,
    macs: ([u8; 6], [u8; 6]),
    teid: u32,
    qfi: u8,
    gnb: IpAddr,
    inner: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + GTP_LEN + inner.len()) as u16;
    let mut gtp = vec![0x34, GTP_TYPE_GPDU];
    gtp.extend_from_slice(&((GTP_LEN - 8 + inner.len()) as u16).to_be_bytes());
    gtp.extend_from_slice(&teid.to_be_bytes());
    gtp.extend_from_slice(&[0, 0, 0, EXT_PDU_SESSION_CONTAINER, 1, 0x00, qfi, 0]);
    let port = GTPU_PORT.to_be_bytes();
    let mut udp = vec![port[0], port[1], port[0], port[1]];
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    let mut out = ethernet(macs.0, macs.1, gnb.is_ipv6());
    match gnb {
        IpAddr::V4(gnb) => {
            let src = t.n3.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(udp_len + 20).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, OUTER_TTL, 17, 0, 0]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&gnb.octets());
            let check = !(sum16(&ip) as u16);
            ip[10..12].copy_from_slice(&check.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&udp);
        }
        IpAddr::V6(gnb) => {
            let src = t.n3.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED);
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&udp_len.to_be_bytes());
            ip.extend_from_slice(&[17, OUTER_TTL]);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&gnb.octets());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[8..40]);
            pseudo.extend_from_slice(&[0, 0]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let sum = fold32(sum16(&pseudo) + sum16(&udp) + sum16(&gtp) + sum16(inner));
            let mut check = !(sum as u16);
            if check == 0 {
                check = 0xffff;
            }
            udp[6..8].copy_from_slice(&check.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&udp);
        }
    }
    out.extend_from_slice(&gtp);
    out.extend_from_slice(inner);
    push_tags(&mut out, &t.n3.vlan);
    out
}

/// Inserts the tags of VLAN ids `ids` (outermost first) after the MAC addresses of `frame`.
fn push_tags(frame: &mut Vec<u8>, ids: &[u16]) {
    let n = ids.len().min(mecgw_ebpf::MAX_VLAN_TAGS);
    let tags = mecgw_ebpf::vlan_tags(ids);
    frame.splice(12..12, tags[..4 * n].iter().copied());
}
