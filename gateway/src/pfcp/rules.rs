//! One PFCP session's rules (PDRs, FARs, QERs, URRs) as the SMF set them, how a modification
//! changes them, and how they compile into the fast path's entries.
//!
//! Pure code: no state beyond the rules, no kernel access. Every way the rules can be wrong
//! or ask for something mecgw does not do is a [`Reject`] with its Cause and Offending IE;
//! nothing is ignored silently.
//!
//! How PDRs become fast-path entries:
//! - a PDR whose PDI has a local F-TEID (Source Interface Access, or Core for a tunnel from a
//!   remote PSA) is a match in that TEID's [`PfcpTunnel`]: its SDF filters (or none) times its
//!   QFIs, in precedence order; its FAR says LOCAL (to SGi-LAN/N6-LAN, with Outer Header
//!   Removal), FORWARD (to Core, unchanged), RETUNNEL (Outer Header Creation GTP-U to a PSA,
//!   or to the gNB for a tunnel from the core side) or DROP;
//! - a PDR on Source Interface SGi-LAN/N6-LAN with the UE's address, or on Core with the UE's
//!   address and no local F-TEID (an SMF that makes mecgw the PSA says so), is the UE's
//!   [`PfcpDownlink`]: encapsulate as its FAR's Outer Header Creation says (Destination
//!   Access), with the QFI of its QER, or drop.
//!
//! [`Side::of`] says which of these a PDR is; everything that asks where a PDR's packets come
//! from asks it.
//!
//! A FAR that buffers (BUFF, with or without NOCP) buffers zero packets: XDP cannot hold a
//! packet, so its PDRs' packets are dropped and counted (`pdr_drop`): TS 29.244 leaves how
//! much to buffer to the UP function (a BAR, §5.2.4, only suggests a count). With NOCP the
//! SMF is told of the first one (a Downlink Data Report, sent by the server from the PDR's
//! counter).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mecgw_ebpf::{
    DOWNLINK_GNB_V6, MAX_TUNNEL_PDRS, MAX_TUNNEL_TARGETS, PDR_FAMILY_V4, PDR_FAMILY_V6,
    PDR_MATCH_PROTO, PDR_MATCH_QFI, PDR_MATCH_REMOTE, PDR_MATCH_REMOTE_PORTS, PDR_MATCH_UE_PORTS,
    PdrMatch, PfcpDownlink, PfcpTunnel, PortRange, TARGET_V6, TUNNEL_CHECK_UE, TUNNEL_FROM_ACCESS,
    TUNNEL_HAS_UE_V4, TUNNEL_HAS_UE_V6, TunnelTarget, pdr_action,
};
use mecgw_pfcp::{
    ie::{
        ApplyAction, Cause, CreateFar, CreatePdr, ForwardingParameters, Interface,
        OuterHeaderCreation, Pdi, Qer, Urr, ie_type,
    },
    message::SessionModificationRequest,
};

use super::sdf;
use crate::datapath::{entries::words, tables::mask_v6};

/// Why a request was not applied: the Cause, the IE to blame and, for the log, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub cause: Cause,
    pub offending_ie: Option<u16>,
    pub why: String,
}

impl Reject {
    pub fn new(cause: Cause, ie: u16, why: impl Into<String>) -> Reject {
        Reject {
            cause,
            offending_ie: Some(ie),
            why: why.into(),
        }
    }

    /// Rule creation/modification failure (73) blaming `ie`.
    pub fn rule(ie: u16, why: impl Into<String>) -> Reject {
        Reject::new(Cause::RULE_CREATION_MODIFICATION_FAILURE, ie, why)
    }

    /// Service not supported (76) blaming `ie`.
    pub fn unsupported(ie: u16, why: impl Into<String>) -> Reject {
        Reject::new(Cause::SERVICE_NOT_SUPPORTED, ie, why)
    }
}

/// Where a PDR's packets come from, as mecgw receives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// G-PDUs from the gNB on a local F-TEID: the uplink.
    Access,
    /// G-PDUs from the core side (a PSA's N9 downlink) on a local F-TEID.
    CoreTunnel,
    /// IP packets to the UE's address from the network side: Source Interface SGi-LAN/N6-LAN,
    /// or Core with the UE IP Address and no local F-TEID (mecgw as the local PSA, as
    /// free5GC's UL CL and Open5GS describe N6).
    Network,
}

impl Side {
    /// The side of a PDR with PDI `pdi`; `None` for a Source Interface mecgw receives nothing
    /// from (CP-function, 5G VN internal). Core with neither a local F-TEID nor a UE address
    /// is [`Side::CoreTunnel`], so that its refusal asks for the F-TEID.
    pub fn of(pdi: &Pdi) -> Option<Side> {
        match pdi.source_interface {
            Interface::Access => Some(Side::Access),
            Interface::Core
                if pdi.local_f_teid.is_none()
                    && pdi
                        .ue_ip_address
                        .iter()
                        .any(|u| u.ipv4.is_some() || u.ipv6.is_some()) =>
            {
                Some(Side::Network)
            }
            Interface::Core => Some(Side::CoreTunnel),
            Interface::SgiLan => Some(Side::Network),
            _ => None,
        }
    }

    /// Whether a PDR's packets are uplink (its usage is uplink volume).
    pub fn is_uplink(pdi: &Pdi) -> bool {
        Side::of(pdi) == Some(Side::Access)
    }
}

/// A PDR and the TEID its local F-TEID resolved to (the store allocates CHOOSE TEIDs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdr {
    pub def: CreatePdr,
    pub local_teid: Option<u32>,
}

/// A session's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub pdrs: BTreeMap<u16, Pdr>,
    pub fars: BTreeMap<u32, CreateFar>,
    pub qers: BTreeMap<u32, Qer>,
    pub urrs: BTreeMap<u32, Urr>,
}

/// Most PDRs, FARs, QERs and URRs (each) one session holds.
pub const MAX_RULES_PER_SESSION: usize = 64;

fn insert_new<K: Ord + Copy + std::fmt::Debug, V>(
    map: &mut BTreeMap<K, V>,
    id: K,
    value: V,
    ie: u16,
    what: &str,
) -> Result<(), Reject> {
    if map.contains_key(&id) {
        return Err(Reject::rule(ie, format!("{what} {id:?} exists already")));
    }
    if map.len() >= MAX_RULES_PER_SESSION {
        return Err(Reject::new(
            Cause::NO_RESOURCES_AVAILABLE,
            ie,
            format!("a session holds at most {MAX_RULES_PER_SESSION} {what}s"),
        ));
    }
    map.insert(id, value);
    Ok(())
}

fn remove_existing<K: Ord + std::fmt::Debug, V>(
    map: &mut BTreeMap<K, V>,
    id: &K,
    ie: u16,
    what: &str,
) -> Result<V, Reject> {
    map.remove(id)
        .ok_or_else(|| Reject::rule(ie, format!("there is no {what} {id:?}")))
}

impl Rules {
    /// The rules of a Session Establishment Request's Create IEs.
    pub fn create(
        pdrs: &[CreatePdr],
        fars: &[CreateFar],
        qers: &[Qer],
        urrs: &[Urr],
    ) -> Result<Rules, Reject> {
        let mut r = Rules::default();
        r.add(pdrs, fars, qers, urrs)?;
        r.check_references()?;
        Ok(r)
    }

    fn add(
        &mut self,
        pdrs: &[CreatePdr],
        fars: &[CreateFar],
        qers: &[Qer],
        urrs: &[Urr],
    ) -> Result<(), Reject> {
        for f in fars {
            insert_new(
                &mut self.fars,
                f.far_id,
                f.clone(),
                ie_type::CREATE_FAR,
                "FAR",
            )?;
        }
        for q in qers {
            if q.gate_status.is_none() {
                return Err(Reject::new(
                    Cause::MANDATORY_IE_MISSING,
                    ie_type::GATE_STATUS,
                    format!("QER {} has no Gate Status", q.qer_id),
                ));
            }
            insert_new(
                &mut self.qers,
                q.qer_id,
                q.clone(),
                ie_type::CREATE_QER,
                "QER",
            )?;
        }
        for u in urrs {
            if u.measurement_method.is_none() || u.reporting_triggers.is_none() {
                return Err(Reject::new(
                    Cause::MANDATORY_IE_MISSING,
                    if u.measurement_method.is_none() {
                        ie_type::MEASUREMENT_METHOD
                    } else {
                        ie_type::REPORTING_TRIGGERS
                    },
                    format!("URR {} lacks a mandatory IE", u.urr_id),
                ));
            }
            insert_new(
                &mut self.urrs,
                u.urr_id,
                u.clone(),
                ie_type::CREATE_URR,
                "URR",
            )?;
        }
        for p in pdrs {
            let pdr = Pdr {
                def: p.clone(),
                local_teid: None,
            };
            insert_new(&mut self.pdrs, p.pdr_id, pdr, ie_type::CREATE_PDR, "PDR")?;
        }
        Ok(())
    }

    /// Applies a Session Modification Request's Remove, Create and Update IEs, in that order.
    /// Returns the IDs of the URRs it removed (their final reports go in the response).
    pub fn modify(&mut self, req: &SessionModificationRequest) -> Result<Vec<Urr>, Reject> {
        for id in &req.remove_pdr {
            remove_existing(&mut self.pdrs, id, ie_type::REMOVE_PDR, "PDR")?;
        }
        for id in &req.remove_far {
            remove_existing(&mut self.fars, id, ie_type::REMOVE_FAR, "FAR")?;
        }
        for id in &req.remove_qer {
            remove_existing(&mut self.qers, id, ie_type::REMOVE_QER, "QER")?;
        }
        let mut removed_urrs = Vec::new();
        for id in &req.remove_urr {
            removed_urrs.push(remove_existing(
                &mut self.urrs,
                id,
                ie_type::REMOVE_URR,
                "URR",
            )?);
        }
        self.add(
            &req.create_pdr,
            &req.create_far,
            &req.create_qer,
            &req.create_urr,
        )?;
        // A removed QER or URR leaves the PDRs that named it (unless the same request
        // created it again): the codec cannot tell an Update PDR with an empty QER or URR
        // list from one without, so removing the rule is how an SMF takes it off its PDRs.
        // A PDR left without QERs has its gates open and no QFI of its own (0).
        for p in self.pdrs.values_mut() {
            p.def
                .qer_ids
                .retain(|q| !req.remove_qer.contains(q) || self.qers.contains_key(q));
            p.def
                .urr_ids
                .retain(|u| !req.remove_urr.contains(u) || self.urrs.contains_key(u));
        }
        for u in &req.update_far {
            let far = self.fars.get_mut(&u.far_id).ok_or_else(|| {
                Reject::rule(ie_type::UPDATE_FAR, format!("there is no FAR {}", u.far_id))
            })?;
            if let Some(a) = u.apply_action {
                far.apply_action = a;
            }
            if let Some(up) = &u.update_forwarding_parameters {
                let fp = far
                    .forwarding_parameters
                    .get_or_insert_with(ForwardingParameters::default);
                if up.destination_interface.is_some() {
                    fp.destination_interface = up.destination_interface;
                }
                if up.network_instance.is_some() {
                    fp.network_instance.clone_from(&up.network_instance);
                }
                if up.outer_header_creation.is_some() {
                    fp.outer_header_creation = up.outer_header_creation;
                }
            }
            if u.bar_id.is_some() {
                far.bar_id = u.bar_id;
            }
        }
        for u in &req.update_qer {
            let q = self.qers.get_mut(&u.qer_id).ok_or_else(|| {
                Reject::rule(ie_type::UPDATE_QER, format!("there is no QER {}", u.qer_id))
            })?;
            q.gate_status = u.gate_status.or(q.gate_status);
            q.mbr = u.mbr.or(q.mbr);
            q.gbr = u.gbr.or(q.gbr);
            q.qfi = u.qfi.or(q.qfi);
        }
        for u in &req.update_urr {
            let r = self.urrs.get_mut(&u.urr_id).ok_or_else(|| {
                Reject::rule(ie_type::UPDATE_URR, format!("there is no URR {}", u.urr_id))
            })?;
            r.measurement_method = u.measurement_method.or(r.measurement_method);
            r.reporting_triggers = u.reporting_triggers.or(r.reporting_triggers);
            r.measurement_period = u.measurement_period.or(r.measurement_period);
            r.volume_threshold = u.volume_threshold.or(r.volume_threshold);
            r.time_threshold = u.time_threshold.or(r.time_threshold);
        }
        for u in &req.update_pdr {
            let p = self.pdrs.get_mut(&u.pdr_id).ok_or_else(|| {
                Reject::rule(ie_type::UPDATE_PDR, format!("there is no PDR {}", u.pdr_id))
            })?;
            if let Some(ohr) = u.outer_header_removal {
                p.def.outer_header_removal = Some(ohr);
            }
            if let Some(prec) = u.precedence {
                p.def.precedence = prec;
            }
            if let Some(pdi) = &u.pdi {
                p.def.pdi = pdi.clone();
                // A new PDI may bring a new F-TEID: resolved again by the store.
                p.local_teid = None;
            }
            if let Some(far) = u.far_id {
                p.def.far_id = Some(far);
            }
            // The codec cannot tell an absent list from an empty one: a non-empty list
            // replaces the PDR's (removing every URR or QER of a PDR is done by removing
            // the URR or QER).
            if !u.urr_ids.is_empty() {
                p.def.urr_ids.clone_from(&u.urr_ids);
            }
            if !u.qer_ids.is_empty() {
                p.def.qer_ids.clone_from(&u.qer_ids);
            }
        }
        self.check_references()?;
        Ok(removed_urrs)
    }

    /// Every PDR's FAR, URRs and QERs exist.
    fn check_references(&self) -> Result<(), Reject> {
        for (id, p) in &self.pdrs {
            match p.def.far_id {
                None => {
                    return Err(Reject::new(
                        Cause::CONDITIONAL_IE_MISSING,
                        ie_type::FAR_ID,
                        format!("PDR {id} has no FAR ID"),
                    ));
                }
                Some(far) if !self.fars.contains_key(&far) => {
                    return Err(Reject::rule(
                        ie_type::CREATE_PDR,
                        format!("PDR {id} names FAR {far}, which does not exist"),
                    ));
                }
                Some(_) => {}
            }
            if let Some(u) = p.def.urr_ids.iter().find(|u| !self.urrs.contains_key(u)) {
                return Err(Reject::rule(
                    ie_type::CREATE_PDR,
                    format!("PDR {id} names URR {u}, which does not exist"),
                ));
            }
            if let Some(q) = p.def.qer_ids.iter().find(|q| !self.qers.contains_key(q)) {
                return Err(Reject::rule(
                    ie_type::CREATE_PDR,
                    format!("PDR {id} names QER {q}, which does not exist"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `pdr`'s packets are buffered (dropped: a buffer of zero packets) with the CP
    /// function to be notified of the first (BUFF and NOCP, not DROP), and come from the
    /// network or core side: the PDRs a Downlink Data Report may name.
    pub fn buffers_notifying(&self, pdr: &CreatePdr) -> bool {
        let Some(far) = pdr.far_id.and_then(|f| self.fars.get(&f)) else {
            return false;
        };
        let a = far.apply_action;
        a.has(ApplyAction::BUFF)
            && a.has(ApplyAction::NOCP)
            && !a.has(ApplyAction::DROP)
            && !Side::is_uplink(&pdr.pdi)
    }

    /// The PDRs in precedence order (lowest value first, then PDR ID).
    pub fn by_precedence(&self) -> Vec<&Pdr> {
        let mut pdrs: Vec<&Pdr> = self.pdrs.values().collect();
        pdrs.sort_by_key(|p| (p.def.precedence, p.def.pdr_id));
        pdrs
    }

    /// The UE's addresses the PDRs name.
    pub fn ue_addresses(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for p in self.pdrs.values() {
            for ue in &p.def.pdi.ue_ip_address {
                out.extend(ue.ipv4.map(IpAddr::from));
                out.extend(ue.ipv6.map(IpAddr::from));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A UE address key of the downlink maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UeKey {
    V4([u8; 4]),
    /// Prefix bytes and length.
    V6([u8; 16], u32),
}

/// What a session puts into the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub tunnels: BTreeMap<u32, PfcpTunnel>,
    pub downlinks: BTreeMap<UeKey, PfcpDownlink>,
}

impl Compiled {
    /// The addresses this session's PDRs re-tunnel G-PDUs to (a PSA, another UPF): the
    /// neighbours the fast path needs resolved.
    pub fn retunnel_targets(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.tunnels.values().flat_map(|t| {
            t.pdrs
                .iter()
                .take(t.pdr_count as usize)
                .filter(|m| m.action == pdr_action::RETUNNEL)
                .filter_map(|m| t.targets.get(m.target as usize))
                .map(target_addr)
        })
    }
}

/// The address of a [`TunnelTarget`] (the inverse of [`target`]).
fn target_addr(t: &TunnelTarget) -> IpAddr {
    if t.flags & TARGET_V6 != 0 {
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(t.addr) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        IpAddr::V4(Ipv4Addr::from(t.addr[0].to_ne_bytes()))
    }
}

/// What compiling needs besides the rules.
pub struct Ctx<'a> {
    /// The session's operator-visible id and session counter index.
    pub session: u32,
    pub counter: u32,
    /// Each PDR's counter slot.
    pub pdr_slots: &'a BTreeMap<u16, u32>,
    /// Our N3 addresses (the source of encapsulated and re-tunnelled packets).
    pub n3_v4: Option<Ipv4Addr>,
    pub n3_v6: Option<Ipv6Addr>,
}

/// What a PDR's FAR (and QERs) make of its packets.
enum Action {
    Drop,
    Local,
    Forward,
    Retunnel(TunnelTarget),
    Encapsulate { teid: u32, gnb: IpAddr },
}

fn gtpu_target(ohc: &OuterHeaderCreation) -> Result<(u32, IpAddr), Reject> {
    let teid = ohc.teid.ok_or_else(|| {
        Reject::new(
            Cause::MANDATORY_IE_INCORRECT,
            ie_type::OUTER_HEADER_CREATION,
            "Outer Header Creation GTP-U without a TEID",
        )
    })?;
    if ohc.description & OuterHeaderCreation::GTPU_UDP_IPV4 != 0
        && let Some(a) = ohc.ipv4
    {
        return Ok((teid, a.into()));
    }
    if ohc.description & OuterHeaderCreation::GTPU_UDP_IPV6 != 0
        && let Some(a) = ohc.ipv6
    {
        return Ok((teid, a.into()));
    }
    Err(Reject::unsupported(
        ie_type::OUTER_HEADER_CREATION,
        "only Outer Header Creation GTP-U/UDP/IPv4 or IPv6 (with its address) is supported",
    ))
}

fn target(teid: u32, addr: IpAddr) -> TunnelTarget {
    match addr {
        IpAddr::V4(a) => TunnelTarget {
            teid,
            flags: 0,
            addr: [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        },
        IpAddr::V6(a) => TunnelTarget {
            teid,
            flags: TARGET_V6,
            addr: words(a.octets()),
        },
    }
}

/// Whether `pdr`'s QERs close the gate of its direction.
fn gate_closed(rules: &Rules, pdr: &CreatePdr, uplink: bool) -> bool {
    pdr.qer_ids
        .iter()
        .filter_map(|id| rules.qers.get(id))
        .any(|q| {
            q.gate_status.is_some_and(|g| {
                !(if uplink {
                    g.uplink_open
                } else {
                    g.downlink_open
                })
            })
        })
}

/// The QFI of `pdr`'s first QER that has one (0 without).
fn qer_qfi(rules: &Rules, pdr: &CreatePdr) -> u8 {
    pdr.qer_ids
        .iter()
        .filter_map(|id| rules.qers.get(id))
        .find_map(|q| q.qfi)
        .unwrap_or(0)
}

fn action(rules: &Rules, pdr: &CreatePdr, side: Side) -> Result<Action, Reject> {
    let id = pdr.pdr_id;
    // Invariant: `check_references` made sure the FAR exists.
    let far = pdr
        .far_id
        .and_then(|f| rules.fars.get(&f))
        .ok_or_else(|| Reject::rule(ie_type::CREATE_PDR, format!("PDR {id} has no FAR")))?;
    let a = far.apply_action;
    let uplink = side == Side::Access;
    if a.has(ApplyAction::DROP) {
        return Ok(Action::Drop);
    }
    if a.has(ApplyAction::DUPL) {
        return Err(Reject::unsupported(
            ie_type::APPLY_ACTION,
            format!(
                "FAR {}: duplicating is not supported (mecgw does not advertise DUPL)",
                far.far_id
            ),
        ));
    }
    if a.has(ApplyAction::BUFF) {
        // A buffer of zero packets: the fast path cannot hold one, so it drops and counts
        // them (TS 29.244 lets a UP function drop what it cannot buffer). NOCP is served
        // from the PDR's counter (`buffers_notifying`).
        return Ok(Action::Drop);
    }
    if a.has(ApplyAction::NOCP) {
        return Err(Reject::unsupported(
            ie_type::APPLY_ACTION,
            format!(
                "FAR {}: notifying the CP function of packets that are not buffered (NOCP \
                 without BUFF) is not supported",
                far.far_id
            ),
        ));
    }
    if !a.has(ApplyAction::FORW) {
        return Err(Reject::new(
            Cause::MANDATORY_IE_INCORRECT,
            ie_type::APPLY_ACTION,
            format!("FAR {} neither forwards nor drops", far.far_id),
        ));
    }
    if gate_closed(rules, pdr, uplink) {
        return Ok(Action::Drop);
    }
    let fp = far.forwarding_parameters.as_ref().ok_or_else(|| {
        Reject::new(
            Cause::CONDITIONAL_IE_MISSING,
            ie_type::FORWARDING_PARAMETERS,
            format!("FAR {} forwards without Forwarding Parameters", far.far_id),
        )
    })?;
    let dest = fp.destination_interface.ok_or_else(|| {
        Reject::new(
            Cause::MANDATORY_IE_MISSING,
            ie_type::DESTINATION_INTERFACE,
            format!("FAR {} has no Destination Interface", far.far_id),
        )
    })?;
    let removes = pdr.outer_header_removal.is_some();
    match (side, dest, fp.outer_header_creation) {
        (Side::Access | Side::CoreTunnel, Interface::SgiLan, None) if removes => Ok(Action::Local),
        (Side::Access | Side::CoreTunnel, Interface::SgiLan, _) => Err(Reject::rule(
            ie_type::OUTER_HEADER_REMOVAL,
            format!(
                "PDR {id} sends to SGi-LAN/N6-LAN: it needs Outer Header Removal (and no \
                 Outer Header Creation) for mecgw to decapsulate"
            ),
        )),
        (Side::Access, Interface::Core, None) if !removes => Ok(Action::Forward),
        (Side::Access, Interface::Core, None) => Err(Reject::unsupported(
            ie_type::OUTER_HEADER_REMOVAL,
            format!(
                "PDR {id}: decapsulated traffic towards the core (mecgw as the anchor) is not \
                 supported; forward it unchanged or re-tunnel it to the PSA"
            ),
        )),
        (Side::Access, Interface::Core, Some(ohc))
        | (Side::CoreTunnel, Interface::Access, Some(ohc)) => {
            if !removes {
                return Err(Reject::rule(
                    ie_type::OUTER_HEADER_REMOVAL,
                    format!(
                        "PDR {id}: Outer Header Creation without Outer Header Removal would \
                         nest tunnels; remove the outer header first"
                    ),
                ));
            }
            let (teid, addr) = gtpu_target(&ohc)?;
            Ok(Action::Retunnel(target(teid, addr)))
        }
        (Side::Network, Interface::Access, Some(ohc)) => {
            let (teid, gnb) = gtpu_target(&ohc)?;
            Ok(Action::Encapsulate { teid, gnb })
        }
        (Side::Network, Interface::Access, None) => Err(Reject::new(
            Cause::CONDITIONAL_IE_MISSING,
            ie_type::OUTER_HEADER_CREATION,
            format!("PDR {id}: towards the access side the FAR needs Outer Header Creation"),
        )),
        (_, d, _) => Err(Reject::unsupported(
            ie_type::DESTINATION_INTERFACE,
            format!("PDR {id}: from the {side:?} side to {d:?} is not a path mecgw forwards"),
        )),
    }
}

fn family_flag(v6: Option<bool>) -> u32 {
    match v6 {
        Some(false) => PDR_FAMILY_V4,
        Some(true) => PDR_FAMILY_V6,
        None => 0,
    }
}

/// The matches of `pdr` (its SDF filters times its QFIs), with action `code` and `target`.
fn matches(
    pdr: &CreatePdr,
    ue: &[IpAddr],
    slot: u32,
    code: u32,
    target: u32,
) -> Result<Vec<PdrMatch>, Reject> {
    let mut flows: Vec<Option<sdf::FlowMatch>> = Vec::new();
    for f in &pdr.pdi.sdf_filters {
        if f.tos_traffic_class.is_some()
            || f.security_parameter_index.is_some()
            || f.flow_label.is_some()
        {
            return Err(Reject::unsupported(
                ie_type::SDF_FILTER,
                format!(
                    "PDR {}: SDF filters on ToS, SPI or flow label are not supported",
                    pdr.pdr_id
                ),
            ));
        }
        let Some(text) = &f.flow_description else {
            continue;
        };
        let parsed = sdf::parse(text, ue).map_err(|why| {
            Reject::new(
                Cause::MANDATORY_IE_INCORRECT,
                ie_type::SDF_FILTER,
                format!("PDR {}: flow description {text:?}: {why}", pdr.pdr_id),
            )
        })?;
        flows.extend(parsed.into_iter().map(Some));
    }
    if flows.is_empty() {
        flows.push(None);
    }
    let qfis: Vec<Option<u8>> = if pdr.pdi.qfis.is_empty() {
        vec![None]
    } else {
        pdr.pdi.qfis.iter().copied().map(Some).collect()
    };
    let mut out = Vec::new();
    for flow in &flows {
        for &qfi in &qfis {
            let mut m = PdrMatch {
                pdr_id: u32::from(pdr.pdr_id),
                counter: slot,
                action: code,
                target,
                ..PdrMatch::default()
            };
            if let Some(q) = qfi {
                m.flags |= PDR_MATCH_QFI;
                m.qfi = u32::from(q);
            }
            if let Some(f) = flow {
                m.flags |= family_flag(f.v6);
                if let Some(p) = f.protocol {
                    m.flags |= PDR_MATCH_PROTO;
                    m.protocol = u32::from(p);
                }
                if let Some(r) = f.remote {
                    m.flags |= PDR_MATCH_REMOTE;
                    match r.addr() {
                        IpAddr::V4(a) => {
                            m.remote[0] = u32::from_ne_bytes(a.octets());
                            m.remote_mask[0] = u32::from_ne_bytes(
                                crate::datapath::tables::mask_v4(r.len()).to_be_bytes(),
                            );
                        }
                        IpAddr::V6(a) => {
                            m.remote = words(a.octets());
                            m.remote_mask = words(mask_v6(r.len()).to_be_bytes());
                        }
                    }
                }
                if let Some((lo, hi)) = f.remote_ports {
                    m.flags |= PDR_MATCH_REMOTE_PORTS;
                    m.remote_ports = PortRange { lo, hi };
                }
                if let Some((lo, hi)) = f.ue_ports {
                    m.flags |= PDR_MATCH_UE_PORTS;
                    m.ue_ports = PortRange { lo, hi };
                }
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Compiles `rules` into the fast path's entries.
pub fn compile(rules: &Rules, ctx: &Ctx<'_>) -> Result<Compiled, Reject> {
    let mut out = Compiled::default();
    let ue_all = rules.ue_addresses();
    for pdr in rules.by_precedence() {
        let def = &pdr.def;
        let id = def.pdr_id;
        let slot = ctx.pdr_slots.get(&id).copied().ok_or_else(|| {
            Reject::new(
                Cause::SYSTEM_FAILURE,
                ie_type::CREATE_PDR,
                format!("PDR {id} has no counter slot"),
            )
        })?;
        match Side::of(&def.pdi) {
            Some(side @ (Side::Access | Side::CoreTunnel)) => {
                let from_access = side == Side::Access;
                let teid = pdr.local_teid.ok_or_else(|| {
                    Reject::new(
                        Cause::CONDITIONAL_IE_MISSING,
                        ie_type::F_TEID,
                        format!(
                            "PDR {id}: from the {} side mecgw receives GTP-U only: the PDI needs \
                             a local F-TEID",
                            if from_access { "access" } else { "core" }
                        ),
                    )
                })?;
                let act = action(rules, def, side)?;
                let tunnel = out.tunnels.entry(teid).or_insert_with(|| PfcpTunnel {
                    session: ctx.session,
                    counter: ctx.counter,
                    flags: if from_access { TUNNEL_FROM_ACCESS } else { 0 },
                    ..PfcpTunnel::default()
                });
                if (tunnel.flags & TUNNEL_FROM_ACCESS != 0) != from_access {
                    return Err(Reject::rule(
                        ie_type::F_TEID,
                        format!("PDR {id}: one F-TEID is used from both the access and core sides"),
                    ));
                }
                if from_access {
                    for ue in &def.pdi.ue_ip_address {
                        add_ue(tunnel, ue.ipv4, ue.ipv6, ue.ipv6_prefix_length, id)?;
                    }
                }
                let (code, target) = match act {
                    Action::Drop => (pdr_action::DROP, 0),
                    Action::Local => (pdr_action::LOCAL, 0),
                    Action::Forward => (pdr_action::FORWARD, 0),
                    Action::Retunnel(t) => {
                        let index = match tunnel.targets[..]
                            .iter()
                            .take(targets_used(tunnel))
                            .position(|x| *x == t)
                        {
                            Some(i) => i,
                            None => {
                                let used = targets_used(tunnel);
                                if used >= MAX_TUNNEL_TARGETS {
                                    return Err(Reject::new(
                                        Cause::NO_RESOURCES_AVAILABLE,
                                        ie_type::OUTER_HEADER_CREATION,
                                        format!(
                                            "PDR {id}: a tunnel forwards to at most \
                                             {MAX_TUNNEL_TARGETS} peers"
                                        ),
                                    ));
                                }
                                tunnel.targets[used] = t;
                                used
                            }
                        };
                        (pdr_action::RETUNNEL, index as u32)
                    }
                    Action::Encapsulate { .. } => {
                        return Err(Reject::unsupported(
                            ie_type::DESTINATION_INTERFACE,
                            format!("PDR {id}: hairpin to the access side is not supported"),
                        ));
                    }
                };
                for m in matches(def, &ue_all, slot, code, target)? {
                    let n = tunnel.pdr_count as usize;
                    if n >= MAX_TUNNEL_PDRS {
                        return Err(Reject::new(
                            Cause::NO_RESOURCES_AVAILABLE,
                            ie_type::SDF_FILTER,
                            format!(
                                "F-TEID {teid:#x}: its PDRs' SDF filters and QFIs add up to more \
                                 than the {MAX_TUNNEL_PDRS} matches one tunnel holds"
                            ),
                        ));
                    }
                    tunnel.pdrs[n] = m;
                    tunnel.pdr_count += 1;
                }
            }
            Some(Side::Network) => {
                if !def.pdi.sdf_filters.is_empty() {
                    return Err(Reject::unsupported(
                        ie_type::SDF_FILTER,
                        format!(
                            "PDR {id}: SDF filters on packets from the local services are not \
                             supported; one PDR per UE address carries its downlink"
                        ),
                    ));
                }
                let act = action(rules, def, Side::Network)?;
                let (code, teid, gnb) = match act {
                    Action::Drop => (pdr_action::DROP, 0, None),
                    Action::Encapsulate { teid, gnb } => {
                        match gnb {
                            IpAddr::V4(_) if ctx.n3_v4.is_none() => {
                                return Err(Reject::rule(
                                    ie_type::OUTER_HEADER_CREATION,
                                    format!(
                                        "PDR {id}: gNB {gnb} is IPv4 but N3 has no IPv4 address"
                                    ),
                                ));
                            }
                            IpAddr::V6(_) if ctx.n3_v6.is_none() => {
                                return Err(Reject::rule(
                                    ie_type::OUTER_HEADER_CREATION,
                                    format!(
                                        "PDR {id}: gNB {gnb} is IPv6 but N3 has no IPv6 address"
                                    ),
                                ));
                            }
                            _ => {}
                        }
                        (pdr_action::ENCAPSULATE, teid, Some(gnb))
                    }
                    _ => {
                        return Err(Reject::unsupported(
                            ie_type::DESTINATION_INTERFACE,
                            format!(
                                "PDR {id}: from the network side mecgw sends to the access side only"
                            ),
                        ));
                    }
                };
                let mut entry = PfcpDownlink {
                    session: ctx.session,
                    counter: ctx.counter,
                    pdr_id: u32::from(id),
                    pdr_counter: slot,
                    action: code,
                    downlink_teid: teid,
                    qfi: u32::from(qer_qfi(rules, def) & 0x3f),
                    ..PfcpDownlink::default()
                };
                match gnb {
                    Some(IpAddr::V4(a)) => entry.gnb[..4].copy_from_slice(&a.octets()),
                    Some(IpAddr::V6(a)) => {
                        entry.flags |= DOWNLINK_GNB_V6;
                        entry.gnb = a.octets();
                    }
                    None => {}
                }
                let mut any = false;
                for ue in &def.pdi.ue_ip_address {
                    if let Some(a) = ue.ipv4 {
                        any = true;
                        // Precedence order: the first PDR for an address keeps it.
                        out.downlinks.entry(UeKey::V4(a.octets())).or_insert(entry);
                    }
                    if let Some(a) = ue.ipv6 {
                        any = true;
                        let len = u32::from(ue.ipv6_prefix_length.unwrap_or(64));
                        let prefix = (u128::from(a) & mask_v6(len as u8)).to_be_bytes();
                        out.downlinks.entry(UeKey::V6(prefix, len)).or_insert(entry);
                    }
                }
                if !any {
                    return Err(Reject::new(
                        Cause::CONDITIONAL_IE_MISSING,
                        ie_type::UE_IP_ADDRESS,
                        format!(
                            "PDR {id}: from the network side (SGi-LAN/N6-LAN) the PDI needs the \
                             UE IP Address"
                        ),
                    ));
                }
            }
            None => {
                return Err(Reject::unsupported(
                    ie_type::SOURCE_INTERFACE,
                    format!(
                        "PDR {id}: Source Interface {:?} is not one mecgw receives from",
                        def.pdi.source_interface
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn targets_used(t: &PfcpTunnel) -> usize {
    t.targets
        .iter()
        .take_while(|x| **x != TunnelTarget::default())
        .count()
}

/// Records the UE's address(es) on an access-side tunnel (for its source check); PDRs of
/// one tunnel must agree on them.
fn add_ue(
    t: &mut PfcpTunnel,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    v6_len: Option<u8>,
    pdr: u16,
) -> Result<(), Reject> {
    let clash = || {
        Reject::rule(
            ie_type::UE_IP_ADDRESS,
            format!("PDR {pdr}: the PDRs of one F-TEID name different UE addresses"),
        )
    };
    if let Some(a) = v4 {
        let w = u32::from_ne_bytes(a.octets());
        if t.flags & TUNNEL_HAS_UE_V4 != 0 && t.ue_v4 != w {
            return Err(clash());
        }
        t.flags |= TUNNEL_HAS_UE_V4 | TUNNEL_CHECK_UE;
        t.ue_v4 = w;
    }
    if let Some(a) = v6 {
        let len = v6_len.unwrap_or(64);
        let prefix = words((u128::from(a) & mask_v6(len)).to_be_bytes());
        let mask = words(mask_v6(len).to_be_bytes());
        if t.flags & TUNNEL_HAS_UE_V6 != 0 && (t.ue_v6 != prefix || t.ue_v6_mask != mask) {
            return Err(clash());
        }
        t.flags |= TUNNEL_HAS_UE_V6 | TUNNEL_CHECK_UE;
        t.ue_v6 = prefix;
        t.ue_v6_mask = mask;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use mecgw_pfcp::ie::{
        GateStatus, OuterHeaderRemoval, Pdi, SdfFilter, UeIpAddress, Urr, ie_type,
    };

    use super::*;

    const N3: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const UE: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 7);
    const TEID: u32 = 0x8000_0001;

    /// A PDR on `source` with FAR `far`: from Access or Core with the local TEID, from
    /// SGi-LAN with the UE's address.
    fn pdr(id: u16, precedence: u32, source: Interface, far: u32, ohr: bool) -> CreatePdr {
        let access_or_core = source != Interface::SgiLan;
        CreatePdr {
            pdr_id: id,
            precedence,
            pdi: Pdi {
                source_interface: source,
                local_f_teid: access_or_core.then_some(mecgw_pfcp::ie::FTeid::Assigned {
                    teid: TEID,
                    ipv4: Some(N3),
                    ipv6: None,
                }),
                network_instance: None,
                ue_ip_address: vec![UeIpAddress {
                    ipv4: Some(UE),
                    is_destination: !access_or_core,
                    ..UeIpAddress::default()
                }],
                sdf_filters: Vec::new(),
                qfis: Vec::new(),
            },
            outer_header_removal: ohr.then_some(OuterHeaderRemoval {
                description: 0,
                extension_header_deletion: None,
            }),
            far_id: Some(far),
            urr_ids: Vec::new(),
            qer_ids: Vec::new(),
        }
    }

    fn far(id: u32, action: u16, dest: Interface, ohc: Option<(u32, Ipv4Addr)>) -> CreateFar {
        CreateFar {
            far_id: id,
            apply_action: ApplyAction(action),
            forwarding_parameters: Some(ForwardingParameters {
                destination_interface: Some(dest),
                network_instance: None,
                outer_header_creation: ohc.map(|(teid, a)| OuterHeaderCreation {
                    description: OuterHeaderCreation::GTPU_UDP_IPV4,
                    teid: Some(teid),
                    ipv4: Some(a),
                    ipv6: None,
                    port: None,
                }),
            }),
            bar_id: None,
        }
    }

    /// `pdrs` and `fars` compiled as the store would: access/core PDRs on [`TEID`], PDR n in
    /// counter slot 100 + n.
    fn build(
        pdrs: Vec<CreatePdr>,
        fars: Vec<CreateFar>,
        qers: Vec<Qer>,
    ) -> Result<Compiled, Reject> {
        let mut rules = Rules::create(&pdrs, &fars, &qers, &[])?;
        for p in rules.pdrs.values_mut() {
            if p.def.pdi.local_f_teid.is_some() {
                p.local_teid = Some(TEID);
            }
        }
        let slots: BTreeMap<u16, u32> = rules
            .pdrs
            .keys()
            .map(|&id| (id, 100 + u32::from(id)))
            .collect();
        compile(
            &rules,
            &Ctx {
                session: 0x8000_0007,
                counter: 7,
                pdr_slots: &slots,
                n3_v4: Some(N3),
                n3_v6: None,
            },
        )
    }

    fn tunnel(c: &Compiled) -> PfcpTunnel {
        assert_eq!(c.tunnels.len(), 1, "{c:?}");
        c.tunnels[&TEID]
    }

    fn refusal(r: Result<Compiled, Reject>) -> (u8, Option<u16>) {
        let e = r.unwrap_err();
        (e.cause.0, e.offending_ie)
    }

    #[test]
    fn each_path_compiles_to_its_action() {
        let forw = ApplyAction::FORW;
        let psa = Ipv4Addr::new(198, 51, 100, 9);
        let gnb = Ipv4Addr::new(198, 18, 0, 1);

        // Access → SGi-LAN, outer header removed: local breakout.
        let t = tunnel(
            &build(
                vec![pdr(1, 10, Interface::Access, 1, true)],
                vec![far(1, forw, Interface::SgiLan, None)],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(
            (t.pdrs[0].action, t.pdrs[0].counter),
            (pdr_action::LOCAL, 101)
        );
        assert_eq!(t.flags & TUNNEL_FROM_ACCESS, TUNNEL_FROM_ACCESS);
        assert_eq!(t.flags & TUNNEL_CHECK_UE, TUNNEL_CHECK_UE);
        assert_eq!((t.session, t.counter), (0x8000_0007, 7));

        // Access → Core, unchanged: forward.
        let t = tunnel(
            &build(
                vec![pdr(1, 10, Interface::Access, 1, false)],
                vec![far(1, forw, Interface::Core, None)],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(t.pdrs[0].action, pdr_action::FORWARD);

        // Access → Core with Outer Header Creation GTP-U (and removal): re-tunnel to the PSA.
        let t = tunnel(
            &build(
                vec![pdr(1, 10, Interface::Access, 1, true)],
                vec![far(1, forw, Interface::Core, Some((0x99, psa)))],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(
            (t.pdrs[0].action, t.pdrs[0].target),
            (pdr_action::RETUNNEL, 0)
        );
        assert_eq!(t.targets[0], target(0x99, psa.into()));
        let c = build(
            vec![pdr(1, 10, Interface::Access, 1, true)],
            vec![far(1, forw, Interface::Core, Some((0x99, psa)))],
            vec![],
        )
        .unwrap();
        assert_eq!(
            c.retunnel_targets().collect::<Vec<_>>(),
            vec![IpAddr::V4(psa)]
        );
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        assert_eq!(target_addr(&target(0x99, v6)), v6);

        // Core → Access likewise (a tunnel from the PSA towards the gNB).
        let t = tunnel(
            &build(
                vec![pdr(1, 10, Interface::Core, 1, true)],
                vec![far(1, forw, Interface::Access, Some((0x77, gnb)))],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(t.pdrs[0].action, pdr_action::RETUNNEL);
        assert_eq!(t.flags & TUNNEL_FROM_ACCESS, 0);

        // SGi-LAN → Access with Outer Header Creation: the UE's downlink.
        let c = build(
            vec![pdr(2, 10, Interface::SgiLan, 2, false)],
            vec![far(2, forw, Interface::Access, Some((0x2001, gnb)))],
            vec![],
        )
        .unwrap();
        assert!(c.tunnels.is_empty());
        assert_eq!(c.retunnel_targets().count(), 0);
        let d = c.downlinks[&UeKey::V4(UE.octets())];
        assert_eq!(
            (d.action, d.downlink_teid, d.pdr_id, d.pdr_counter),
            (pdr_action::ENCAPSULATE, 0x2001, 2, 102)
        );
        assert_eq!(d.gnb[..4], gnb.octets());

        // A DROP FAR, and a FORW FAR behind a closed gate, drop.
        for (action, gate) in [(ApplyAction::DROP, true), (forw, false)] {
            let qer = Qer {
                qer_id: 1,
                gate_status: Some(GateStatus {
                    uplink_open: gate,
                    downlink_open: true,
                }),
                mbr: None,
                gbr: None,
                qfi: None,
            };
            let mut p = pdr(1, 10, Interface::Access, 1, true);
            p.qer_ids = vec![1];
            let t = tunnel(
                &build(
                    vec![p],
                    vec![far(1, action, Interface::SgiLan, None)],
                    vec![qer],
                )
                .unwrap(),
            );
            assert_eq!(t.pdrs[0].action, pdr_action::DROP);
        }
    }

    #[test]
    fn what_cannot_be_done_is_refused_with_its_cause_and_ie() {
        let forw = ApplyAction::FORW;
        let gnb = Ipv4Addr::new(198, 18, 0, 1);
        // To SGi-LAN without removing the outer header: 73, Outer Header Removal.
        assert_eq!(
            refusal(build(
                vec![pdr(1, 10, Interface::Access, 1, false)],
                vec![far(1, forw, Interface::SgiLan, None)],
                vec![],
            )),
            (73, Some(ie_type::OUTER_HEADER_REMOVAL))
        );
        // Decapsulated towards the core: 76.
        assert_eq!(
            refusal(build(
                vec![pdr(1, 10, Interface::Access, 1, true)],
                vec![far(1, forw, Interface::Core, None)],
                vec![],
            )),
            (76, Some(ie_type::OUTER_HEADER_REMOVAL))
        );
        // Duplicating, alone or with forwarding: 76, Apply Action.
        for action in [ApplyAction::DUPL, ApplyAction::DUPL | forw] {
            assert_eq!(
                refusal(build(
                    vec![pdr(2, 10, Interface::SgiLan, 2, false)],
                    vec![far(2, action, Interface::Access, Some((1, gnb)))],
                    vec![],
                )),
                (76, Some(ie_type::APPLY_ACTION))
            );
        }
        // Notifying the CP function of packets that are forwarded, not buffered: 76.
        assert_eq!(
            refusal(build(
                vec![pdr(2, 10, Interface::SgiLan, 2, false)],
                vec![far(
                    2,
                    ApplyAction::NOCP | forw,
                    Interface::Access,
                    Some((1, gnb))
                )],
                vec![],
            )),
            (76, Some(ie_type::APPLY_ACTION))
        );
        // Neither forwarding nor dropping: 69, Apply Action.
        assert_eq!(
            refusal(build(
                vec![pdr(1, 10, Interface::Access, 1, true)],
                vec![far(1, ApplyAction::IPMA, Interface::SgiLan, None)],
                vec![],
            )),
            (69, Some(ie_type::APPLY_ACTION))
        );
        // To the access side without Outer Header Creation: 67.
        assert_eq!(
            refusal(build(
                vec![pdr(2, 10, Interface::SgiLan, 2, false)],
                vec![far(2, forw, Interface::Access, None)],
                vec![],
            )),
            (67, Some(ie_type::OUTER_HEADER_CREATION))
        );
        // A downlink PDR naming no UE: 67, UE IP Address.
        let mut p = pdr(2, 10, Interface::SgiLan, 2, false);
        p.pdi.ue_ip_address.clear();
        assert_eq!(
            refusal(build(
                vec![p],
                vec![far(2, forw, Interface::Access, Some((1, gnb)))],
                vec![],
            )),
            (67, Some(ie_type::UE_IP_ADDRESS))
        );
        // A PDR naming a FAR that does not exist: 73, Create PDR.
        assert_eq!(
            refusal(build(
                vec![pdr(1, 10, Interface::Access, 9, true)],
                vec![far(1, forw, Interface::SgiLan, None)],
                vec![],
            )),
            (73, Some(ie_type::CREATE_PDR))
        );
    }

    /// The downlink PDR an SMF that makes mecgw the PSA sends: Source Interface Core with the
    /// UE's address and no local F-TEID.
    fn core_downlink(id: u16, far: u32) -> CreatePdr {
        let mut p = pdr(id, 10, Interface::SgiLan, far, false);
        p.pdi.source_interface = Interface::Core;
        p
    }

    #[test]
    fn buffering_fars_drop_into_the_pdrs_counter_and_dupl_stays_refused() {
        let gnb = Ipv4Addr::new(198, 18, 0, 1);
        // BUFF, BUFF|NOCP (Open5GS's downlink FAR before the gNB's tunnel is known: no Outer
        // Header Creation yet), on the downlink: a buffer of zero packets, dropped and
        // counted by the PDR.
        for action in [ApplyAction::BUFF, ApplyAction::BUFF | ApplyAction::NOCP] {
            for p in [pdr(2, 10, Interface::SgiLan, 2, false), core_downlink(2, 2)] {
                let c = build(
                    vec![p.clone()],
                    vec![far(2, action, Interface::Access, None)],
                    vec![],
                )
                .unwrap();
                let d = c.downlinks[&UeKey::V4(UE.octets())];
                assert_eq!(
                    (d.action, d.pdr_id, d.pdr_counter),
                    (pdr_action::DROP, 2, 102),
                    "{action:?}"
                );
                let rules =
                    Rules::create(&[p], &[far(2, action, Interface::Access, None)], &[], &[])
                        .unwrap();
                assert_eq!(
                    rules.buffers_notifying(&rules.pdrs[&2].def),
                    action & ApplyAction::NOCP != 0
                );
            }
            // An uplink PDR behind a buffering FAR drops too; its packets are not downlink
            // data to report.
            let t = tunnel(
                &build(
                    vec![pdr(1, 10, Interface::Access, 1, true)],
                    vec![far(1, action, Interface::SgiLan, None)],
                    vec![],
                )
                .unwrap(),
            );
            assert_eq!(
                (t.pdrs[0].action, t.pdrs[0].counter),
                (pdr_action::DROP, 101)
            );
        }
        let rules = Rules::create(
            &[pdr(1, 10, Interface::Access, 1, true)],
            &[far(
                1,
                ApplyAction::BUFF | ApplyAction::NOCP,
                Interface::SgiLan,
                None,
            )],
            &[],
            &[],
        )
        .unwrap();
        assert!(!rules.buffers_notifying(&rules.pdrs[&1].def));
        // DROP wins over BUFF (and notifies nothing).
        let rules = Rules::create(
            &[core_downlink(2, 2)],
            &[far(
                2,
                ApplyAction::DROP | ApplyAction::BUFF | ApplyAction::NOCP,
                Interface::Access,
                None,
            )],
            &[],
            &[],
        )
        .unwrap();
        assert!(!rules.buffers_notifying(&rules.pdrs[&2].def));
        // DUPL with buffering is still refused.
        assert_eq!(
            refusal(build(
                vec![core_downlink(2, 2)],
                vec![far(
                    2,
                    ApplyAction::BUFF | ApplyAction::DUPL,
                    Interface::Access,
                    Some((1, gnb))
                )],
                vec![],
            )),
            (76, Some(ie_type::APPLY_ACTION))
        );
    }

    #[test]
    fn core_with_the_ue_address_and_no_f_teid_is_the_network_side() {
        let forw = ApplyAction::FORW;
        let gnb = Ipv4Addr::new(198, 18, 0, 1);
        let p = core_downlink(2, 2);
        assert_eq!(Side::of(&p.pdi), Some(Side::Network));
        assert!(!Side::is_uplink(&p.pdi));
        // Encapsulated to the gNB exactly as from SGi-LAN/N6-LAN.
        let c = build(
            vec![p],
            vec![far(2, forw, Interface::Access, Some((0x2001, gnb)))],
            vec![],
        )
        .unwrap();
        assert!(c.tunnels.is_empty());
        let d = c.downlinks[&UeKey::V4(UE.octets())];
        assert_eq!(
            (d.action, d.downlink_teid, d.pdr_id, d.pdr_counter),
            (pdr_action::ENCAPSULATE, 0x2001, 2, 102)
        );
        assert_eq!(d.gnb[..4], gnb.octets());
        let sgi = build(
            vec![pdr(2, 10, Interface::SgiLan, 2, false)],
            vec![far(2, forw, Interface::Access, Some((0x2001, gnb)))],
            vec![],
        )
        .unwrap();
        assert_eq!(c, sgi);

        // Core with a local F-TEID stays the PSA's N9 downlink, re-tunnelled.
        let p = pdr(1, 10, Interface::Core, 1, true);
        assert_eq!(Side::of(&p.pdi), Some(Side::CoreTunnel));
        let t = tunnel(
            &build(
                vec![p],
                vec![far(1, forw, Interface::Access, Some((0x77, gnb)))],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(t.pdrs[0].action, pdr_action::RETUNNEL);
        // Core with neither: 67, the F-TEID it needs.
        let mut p = core_downlink(2, 2);
        p.pdi.ue_ip_address.clear();
        assert_eq!(Side::of(&p.pdi), Some(Side::CoreTunnel));
        assert_eq!(
            refusal(build(
                vec![p],
                vec![far(2, forw, Interface::Access, Some((1, gnb)))],
                vec![],
            )),
            (67, Some(ie_type::F_TEID))
        );
        // SDF filters on it are refused as from SGi-LAN/N6-LAN: 76.
        let mut p = core_downlink(2, 2);
        p.pdi.sdf_filters = filters(1);
        assert_eq!(
            refusal(build(
                vec![p],
                vec![far(2, forw, Interface::Access, Some((1, gnb)))],
                vec![],
            )),
            (76, Some(ie_type::SDF_FILTER))
        );
    }

    #[test]
    fn matches_go_in_precedence_order_then_pdr_id() {
        let mut p1 = pdr(1, 300, Interface::Access, 1, true);
        let mut p2 = pdr(2, 100, Interface::Access, 2, false);
        let mut p3 = pdr(3, 300, Interface::Access, 1, true);
        for (p, port) in [(&mut p1, 80), (&mut p2, 443), (&mut p3, 8080)] {
            p.pdi.sdf_filters = vec![SdfFilter {
                flow_description: Some(format!("permit out 6 from any {port} to assigned")),
                ..SdfFilter::default()
            }];
        }
        let t = tunnel(
            &build(
                vec![p3, p1, p2],
                vec![
                    far(1, ApplyAction::FORW, Interface::SgiLan, None),
                    far(2, ApplyAction::FORW, Interface::Core, None),
                ],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(t.pdr_count, 3);
        let order: Vec<(u32, u32, u16)> = t.pdrs[..3]
            .iter()
            .map(|m| (m.pdr_id, m.action, m.remote_ports.lo))
            .collect();
        assert_eq!(
            order,
            vec![
                (2, pdr_action::FORWARD, 443),
                (1, pdr_action::LOCAL, 80),
                (3, pdr_action::LOCAL, 8080),
            ]
        );
        assert!(t.pdrs[..3].iter().all(|m| m.flags & PDR_MATCH_PROTO != 0));
    }

    fn filters(n: usize) -> Vec<SdfFilter> {
        (0..n)
            .map(|i| SdfFilter {
                flow_description: Some(format!("permit out ip from 198.18.{i}.0/24 to assigned")),
                ..SdfFilter::default()
            })
            .collect()
    }

    #[test]
    fn each_sdf_filter_is_matched_with_each_qfi() {
        let mut p = pdr(1, 10, Interface::Access, 1, true);
        p.pdi.sdf_filters = filters(2);
        p.pdi.qfis = vec![5, 9];
        let t = tunnel(
            &build(
                vec![p],
                vec![far(1, ApplyAction::FORW, Interface::SgiLan, None)],
                vec![],
            )
            .unwrap(),
        );
        assert_eq!(t.pdr_count, 4);
        let got: Vec<(u32, u32)> = t.pdrs[..4]
            .iter()
            .map(|m| {
                assert_eq!(m.flags & PDR_MATCH_QFI, PDR_MATCH_QFI);
                assert_eq!(m.flags & PDR_MATCH_REMOTE, PDR_MATCH_REMOTE);
                assert_eq!(m.flags & PDR_FAMILY_V4, PDR_FAMILY_V4);
                (m.remote[0].to_ne_bytes()[2].into(), m.qfi)
            })
            .collect();
        assert_eq!(got, vec![(0, 5), (0, 9), (1, 5), (1, 9)]);
        assert!(t.pdrs[4..].iter().all(|m| *m == PdrMatch::default()));
    }

    #[test]
    fn more_matches_than_a_tunnel_holds_is_no_resources() {
        // 3 filters × 3 QFIs = 9 matches; a tunnel holds MAX_TUNNEL_PDRS (8).
        assert_eq!(MAX_TUNNEL_PDRS, 8);
        let mut p = pdr(1, 10, Interface::Access, 1, true);
        p.pdi.sdf_filters = filters(3);
        p.pdi.qfis = vec![1, 2, 3];
        let fars = vec![far(1, ApplyAction::FORW, Interface::SgiLan, None)];
        assert_eq!(
            refusal(build(vec![p.clone()], fars.clone(), vec![])),
            (75, Some(ie_type::SDF_FILTER))
        );
        // Exactly full is fine: 4 filters × 2 QFIs.
        p.pdi.sdf_filters = filters(4);
        p.pdi.qfis = vec![1, 2];
        assert_eq!(tunnel(&build(vec![p], fars, vec![]).unwrap()).pdr_count, 8);
    }

    #[test]
    fn a_urr_without_its_mandatory_ies_is_refused() {
        let urr = Urr {
            urr_id: 1,
            measurement_method: None,
            reporting_triggers: None,
            measurement_period: None,
            volume_threshold: None,
            time_threshold: None,
        };
        let e = Rules::create(&[], &[], &[], &[urr]).unwrap_err();
        assert_eq!(
            (e.cause, e.offending_ie),
            (
                Cause::MANDATORY_IE_MISSING,
                Some(ie_type::MEASUREMENT_METHOD)
            )
        );
    }
}
