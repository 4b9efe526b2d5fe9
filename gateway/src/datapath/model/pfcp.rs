//! The reference model of the PFCP programs (`mecgw_uplink_pfcp`, `mecgw_retunnel`,
//! `mecgw_downlink_pfcp`/`_v6`): what the same map entries decide, written plainly.
//!
//! It reads the entries the kernel reads ([`PfcpTunnel`], [`PfcpDownlink`]) and interprets
//! them from their documented meaning. The kernel's FIB, which a re-tunnel consults, is a
//! table the caller gives ([`Fib`]).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mecgw_ebpf::{
    DOWNLINK_GNB_V6, MAX_TUNNEL_PDRS, PDR_FAMILY_V4, PDR_FAMILY_V6, PDR_MATCH_PROTO, PDR_MATCH_QFI,
    PDR_MATCH_REMOTE, PDR_MATCH_REMOTE_PORTS, PDR_MATCH_UE_PORTS, PdrMatch, PfcpDownlink,
    PfcpTunnel, Reason, TARGET_V6, TUNNEL_CHECK_UE, TUNNEL_FROM_ACCESS, TUNNEL_HAS_UE_V4,
    TUNNEL_HAS_UE_V6, TunnelTarget, Verdict, pdr_action,
};

use super::{Gpdu, Outcome};

/// What the kernel's FIB says about a re-tunnel target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Routed out of `ifindex`, with these MACs, over a path of this MTU.
    Forward {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
        mtu: u32,
    },
    /// Routed out of `ifindex` over a path of this MTU, but no neighbour entry yet. The
    /// kernel's FIB lookup checks the MTU before the neighbour, so an oversized packet is
    /// `Oversize` here too.
    NoNeighbour { ifindex: u32, mtu: u32 },
}

/// Destinations the FIB knows; any other is unroutable (as is every destination when
/// forwarding is off on the interface asked from).
pub type Fib = HashMap<IpAddr, Route>;

/// What the FIB answers for a packet of some length to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Forward {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    NoNeighbour {
        ifindex: u32,
    },
    Oversize,
    NoRoute,
}

/// The FIB's answer for a packet of `len` bytes to `dst` (`bpf_fib_lookup`: the MTU first).
pub(super) fn lookup(fib: &Fib, dst: IpAddr, len: usize) -> Answer {
    match fib.get(&dst) {
        None => Answer::NoRoute,
        Some(Route::Forward { mtu, .. } | Route::NoNeighbour { mtu, .. })
            if len > *mtu as usize =>
        {
            Answer::Oversize
        }
        Some(Route::Forward {
            ifindex,
            smac,
            dmac,
            ..
        }) => Answer::Forward {
            ifindex: *ifindex,
            smac: *smac,
            dmac: *dmac,
        },
        Some(Route::NoNeighbour { ifindex, .. }) => Answer::NoNeighbour { ifindex: *ifindex },
    }
}

/// The PFCP entries in force, as the kernel holds them.
#[derive(Clone, Debug, Default)]
pub struct PfcpEntries {
    /// The first TEID of the PFCP range.
    pub teid_min: u32,
    pub tunnels: HashMap<u32, PfcpTunnel>,
    pub ue_v4: HashMap<[u8; 4], PfcpDownlink>,
    /// (prefix, length, entry); the longest prefix that contains the address wins.
    pub ue_v6: Vec<([u8; 16], u32, PfcpDownlink)>,
    pub fib: Fib,
}

/// The bytes of native-order words (the entries' address form).
fn bytes(words: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    out
}

fn word_bytes(w: u32) -> [u8; 4] {
    w.to_ne_bytes()
}

/// Whether `addr` lies in the prefix given as native-order words and mask.
fn in_prefix(addr: IpAddr, prefix: &[u32; 4], mask: &[u32; 4]) -> bool {
    let (p, m) = (bytes(prefix), bytes(mask));
    match addr {
        IpAddr::V4(a) => a
            .octets()
            .iter()
            .zip(&p[..4])
            .zip(&m[..4])
            .all(|((a, p), m)| a & m == *p),
        IpAddr::V6(a) => a
            .octets()
            .iter()
            .zip(&p)
            .zip(&m)
            .all(|((a, p), m)| a & m == *p),
    }
}

impl PfcpEntries {
    /// The downlink entry of UE address `dst`, if a PFCP session has it.
    pub(super) fn downlink(&self, dst: IpAddr) -> Option<&PfcpDownlink> {
        match dst {
            IpAddr::V4(a) => self.ue_v4.get(&a.octets()),
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.ue_v6
                    .iter()
                    .filter(|(p, len, _)| {
                        let mask = crate::datapath::tables::mask_v6(*len as u8);
                        a & mask == u128::from_be_bytes(*p)
                    })
                    .max_by_key(|(_, len, _)| *len)
                    .map(|(_, _, d)| d)
            }
        }
    }
}

impl super::Model {
    /// The model with PFCP sessions' entries in force; their FIB (which re-tunnels consult)
    /// is added to the model's ([`super::Model::with_fib`]).
    pub fn with_pfcp(mut self, mut entries: PfcpEntries) -> super::Model {
        self.fib.extend(std::mem::take(&mut entries.fib));
        self.pfcp = Some(entries);
        self
    }

    /// `mecgw_uplink_pfcp` (and `mecgw_retunnel`) on a parsed G-PDU of the PFCP range.
    pub(super) fn uplink_pfcp(&self, p: &PfcpEntries, frame: &[u8], pdu: &Gpdu) -> Outcome {
        let t = &self.tables;
        let keep = |verdict, reason, session: Option<u32>| {
            Outcome::unchanged(frame, verdict, reason, session)
        };
        let Some(tunnel) = p.tunnels.get(&pdu.teid) else {
            return keep(
                super::by(t.defaults.unknown_teid),
                Reason::UnknownTeid,
                None,
            );
        };
        let session = Some(tunnel.session);
        let from_access = tunnel.flags & TUNNEL_FROM_ACCESS != 0;
        if tunnel.flags & TUNNEL_CHECK_UE != 0 {
            let ue = match pdu.inner.src {
                IpAddr::V4(a) => {
                    tunnel.flags & TUNNEL_HAS_UE_V4 != 0 && a.octets() == word_bytes(tunnel.ue_v4)
                }
                src @ IpAddr::V6(_) => {
                    tunnel.flags & TUNNEL_HAS_UE_V6 != 0
                        && in_prefix(src, &tunnel.ue_v6, &tunnel.ue_v6_mask)
                }
            };
            if !ue {
                return keep(
                    super::by(t.defaults.spoofed_source),
                    Reason::SpoofedSource,
                    session,
                );
            }
        }
        let flow = from_access.then(|| super::uplink_flow(tunnel.session, pdu));
        let count = (tunnel.pdr_count as usize).min(MAX_TUNNEL_PDRS);
        let Some(m) = tunnel.pdrs[..count]
            .iter()
            .find(|m| matches(m, pdu, from_access))
        else {
            let mut out = keep(Verdict::Drop, Reason::NoPdr, session);
            out.flow = flow;
            return out;
        };
        let mut out = match m.action {
            pdr_action::DROP => keep(Verdict::Drop, Reason::PdrDrop, session),
            pdr_action::LOCAL if pdu.inner.ttl <= 1 => {
                keep(Verdict::Pass, Reason::TtlExpired, session)
            }
            pdr_action::LOCAL => self.decapsulated(frame, pdu, session, Reason::PdrLocal),
            pdr_action::RETUNNEL => match tunnel.targets.get(m.target as usize) {
                Some(target) => self.retunnelled(frame, target, session),
                None => keep(Verdict::Drop, Reason::Internal, session),
            },
            _ => keep(Verdict::Pass, Reason::PdrForward, session),
        };
        out.pdr = Some(m.pdr_id);
        out.flow = flow;
        out
    }

    /// The frame with its tunnel header rewritten towards `target`, redirected as the FIB says.
    fn retunnelled(&self, frame: &[u8], target: &TunnelTarget, session: Option<u32>) -> Outcome {
        let t = &self.tables;
        let keep = |verdict, reason| Outcome::unchanged(frame, verdict, reason, session);
        let Some((l3, ethertype)) = super::parse_ethernet(frame) else {
            return keep(Verdict::Drop, Reason::Internal);
        };
        let v6 = ethertype == 0x86dd;
        if v6 != (target.flags & TARGET_V6 != 0) {
            return keep(Verdict::Drop, Reason::NoRoute);
        }
        let addr = bytes(&target.addr);
        let dst: IpAddr = if v6 {
            Ipv6Addr::from(addr).into()
        } else {
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()
        };
        // The outer packet's length, as the FIB compares it with the route's MTU.
        let outer_len = if v6 {
            usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])) + 40
        } else {
            usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]))
        };
        let (smac, dmac) = match lookup(&self.fib, dst, outer_len) {
            Answer::Forward { smac, dmac, .. } => (smac, dmac),
            Answer::Oversize => return keep(Verdict::Drop, Reason::Oversize),
            Answer::NoNeighbour { .. } => return keep(Verdict::Drop, Reason::NoNeighbour),
            Answer::NoRoute => return keep(Verdict::Drop, Reason::NoRoute),
        };
        let mut out = frame.to_vec();
        out[..6].copy_from_slice(&dmac);
        out[6..12].copy_from_slice(&smac);
        if v6 {
            let src = t.n3.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets();
            out[l3 + 7] = 64;
            out[l3 + 8..l3 + 24].copy_from_slice(&src);
            out[l3 + 24..l3 + 40].copy_from_slice(&addr);
            // Behind the extension headers, as the uplink found it.
            let udp = match super::ipv6_upper(&out[l3..], outer_len) {
                Some((_, l4, _)) => l3 + l4,
                None => return keep(Verdict::Drop, Reason::Internal),
            };
            out[udp + 12..udp + 16].copy_from_slice(&target.teid.to_be_bytes());
            // The UDP checksum over pseudo-header, UDP header and payload, from scratch
            // (a zero one, from a sender that computes none, stays zero). The kernel updates
            // it incrementally: the two agree for every packet whose checksum was right.
            let udp_len = usize::from(u16::from_be_bytes([out[udp + 4], out[udp + 5]]));
            let unchecked = out[udp + 6..udp + 8] == [0, 0];
            out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&out[l3 + 8..l3 + 40]);
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let sum = super::fold32(super::sum16(&pseudo) + super::sum16(&out[udp..udp + udp_len]));
            let check = match !(sum as u16) {
                _ if unchecked => 0,
                0 => 0xffff,
                c => c,
            };
            out[udp + 6..udp + 8].copy_from_slice(&check.to_be_bytes());
        } else {
            let src = t.n3.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED).octets();
            let ihl = usize::from(out[l3] & 0x0f) * 4;
            out[l3 + 8] = 64;
            out[l3 + 12..l3 + 16].copy_from_slice(&src);
            out[l3 + 16..l3 + 20].copy_from_slice(&addr[..4]);
            // The header checksum from scratch (header options included).
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let check = !(super::fold32(super::sum16(&out[l3..l3 + ihl])) as u16);
            out[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
            let udp = l3 + ihl;
            out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
            out[udp + 12..udp + 16].copy_from_slice(&target.teid.to_be_bytes());
        }
        Outcome {
            verdict: Verdict::Redirect,
            reason: Reason::PdrRetunnel,
            rule: None,
            session,
            pdr: None,
            packet: out,
            flow: None,
        }
    }

    /// `mecgw_downlink_pfcp`/`_v6` on a packet to the UE of `d`: `ip` is its whole, checked
    /// IP packet at `l3` of `frame`, whose first `linear` bytes are its linear part.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn downlink_pfcp(
        &self,
        d: &PfcpDownlink,
        frame: &[u8],
        l3: usize,
        total: usize,
        linear: usize,
        v6: bool,
        ttl: u8,
    ) -> Outcome {
        let t = &self.tables;
        let flow = Some(super::downlink_flow(
            d.session,
            &frame[l3..l3 + total],
            linear - l3,
            v6,
        ));
        let keep = |verdict, reason| Outcome {
            verdict,
            reason,
            rule: None,
            session: Some(d.session),
            pdr: Some(d.pdr_id),
            packet: frame.to_vec(),
            flow,
        };
        if d.action != pdr_action::ENCAPSULATE {
            return keep(Verdict::Drop, Reason::PdrDrop);
        }
        if ttl <= 1 {
            return keep(Verdict::Pass, Reason::TtlExpired);
        }
        let gnb: IpAddr = if d.flags & DOWNLINK_GNB_V6 != 0 {
            Ipv6Addr::from(d.gnb).into()
        } else {
            Ipv4Addr::new(d.gnb[0], d.gnb[1], d.gnb[2], d.gnb[3]).into()
        };
        let overhead = if gnb.is_ipv6() {
            mecgw_ebpf::ENCAP_OVERHEAD_V6
        } else {
            mecgw_ebpf::ENCAP_OVERHEAD_V4
        } as usize;
        if total + overhead > t.n3.mtu as usize {
            return keep(Verdict::Drop, Reason::Oversize);
        }
        let hop = match self.n3_next_hop(frame, gnb, total + overhead) {
            Ok(hop) => hop,
            Err(reason) => return keep(Verdict::Drop, reason),
        };
        let mut inner = frame[l3..l3 + total].to_vec();
        super::decrement_ttl(&mut inner, v6);
        let qfi = (d.qfi & 0x3f) as u8;
        Outcome {
            verdict: hop.verdict(),
            reason: hop.reason(Reason::Encapsulated),
            rule: None,
            session: Some(d.session),
            pdr: Some(d.pdr_id),
            packet: super::encapsulate(t, hop.macs(), d.downlink_teid, qfi, gnb, &inner),
            flow,
        }
    }
}

/// Whether `pdu` matches `m`: the remote end is the inner destination of a tunnel from the
/// access side and the inner source of one from the core side.
fn matches(m: &PdrMatch, pdu: &Gpdu, from_access: bool) -> bool {
    let ip = &pdu.inner;
    let f = m.flags;
    let v6 = ip.src.is_ipv6();
    if (f & PDR_FAMILY_V4 != 0 && v6) || (f & PDR_FAMILY_V6 != 0 && !v6) {
        return false;
    }
    // A G-PDU without a PDU Session Container matches no QFI.
    if f & PDR_MATCH_QFI != 0 && pdu.qfi.map(u32::from) != Some(m.qfi) {
        return false;
    }
    if f & PDR_MATCH_PROTO != 0 && u32::from(ip.proto) != m.protocol {
        return false;
    }
    let (remote, remote_port, ue_port) = match (from_access, ip.ports) {
        (true, ports) => (ip.dst, ports.map(|p| p.1), ports.map(|p| p.0)),
        (false, ports) => (ip.src, ports.map(|p| p.0), ports.map(|p| p.1)),
    };
    if f & PDR_MATCH_REMOTE != 0 && !in_prefix(remote, &m.remote, &m.remote_mask) {
        return false;
    }
    if f & PDR_MATCH_REMOTE_PORTS != 0
        && !remote_port.is_some_and(|p| m.remote_ports.lo <= p && p <= m.remote_ports.hi)
    {
        return false;
    }
    if f & PDR_MATCH_UE_PORTS != 0
        && !ue_port.is_some_and(|p| m.ue_ports.lo <= p && p <= m.ue_ports.hi)
    {
        return false;
    }
    // With a port match, a packet without ports fails even the other port check.
    if f & (PDR_MATCH_REMOTE_PORTS | PDR_MATCH_UE_PORTS) != 0 && ip.ports.is_none() {
        return false;
    }
    true
}
