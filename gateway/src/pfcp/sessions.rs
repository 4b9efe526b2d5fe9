//! The PFCP sessions mecgw holds for its SMFs: their rules, what they took (SEIDs, TEIDs,
//! counter slots) and what they put into the fast path, kept in step.
//!
//! One owner (the endpoint's task) changes the store; a change is validated whole (rules,
//! references, F-TEIDs, UE addresses, capacity) before anything is written, and written to
//! the fast path before the store records it, so the response the endpoint then sends is
//! true: what it accepts is in force, what it refuses changed nothing. Entries removed from
//! the fast path are read for their final usage only after an RCU grace period
//! ([`Store::finish`]), so no packet in flight is missed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, RwLock},
    time::Instant,
};

use mecgw_ebpf::{Counter, PfcpDownlink, PfcpTunnel};
use mecgw_pfcp::{
    ie::{
        Cause, CreatedPdr, FSeid, FTeid, NodeId, ReportingTriggers, Urr, UsageReport,
        UsageReportTrigger, UserId, VolumeMeasurement, ie_type,
    },
    message::{SessionEstablishmentRequest, SessionModificationRequest},
};

use super::rules::{Compiled, Ctx, Reject, Rules, Side, UeKey, compile};
use crate::{
    datapath::{DatapathError, FastPath, pfcp_maps::SlotPool},
    records::harvest::SessionIdentity,
};

/// What the store needs from the fast path (the XDP maps; a fake in unit tests).
pub trait Datapath: Send + Sync {
    fn put_tunnel(&self, teid: u32, t: &PfcpTunnel) -> Result<(), DatapathError>;
    fn remove_tunnel(&self, teid: u32) -> Result<(), DatapathError>;
    fn put_downlink(&self, ue: UeKey, d: &PfcpDownlink) -> Result<(), DatapathError>;
    fn remove_downlink(&self, ue: UeKey) -> Result<(), DatapathError>;
    fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError>;
    fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError>;
    fn zero_session_counter(&self, slot: u32) -> Result<(), DatapathError>;
    /// Blocks until every packet that started before the call has been judged and counted.
    fn grace_period(&self);
}

impl Datapath for FastPath {
    fn put_tunnel(&self, teid: u32, t: &PfcpTunnel) -> Result<(), DatapathError> {
        self.put_pfcp_tunnel(teid, t)
    }
    fn remove_tunnel(&self, teid: u32) -> Result<(), DatapathError> {
        self.remove_pfcp_tunnel(teid)
    }
    fn put_downlink(&self, ue: UeKey, d: &PfcpDownlink) -> Result<(), DatapathError> {
        match ue {
            UeKey::V4(a) => self.put_pfcp_downlink_v4(a, d),
            UeKey::V6(p, len) => self.put_pfcp_downlink_v6(p, len, d),
        }
    }
    fn remove_downlink(&self, ue: UeKey) -> Result<(), DatapathError> {
        match ue {
            UeKey::V4(a) => self.remove_pfcp_downlink_v4(a),
            UeKey::V6(p, len) => self.remove_pfcp_downlink_v6(p, len),
        }
    }
    fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError> {
        FastPath::pdr_counter(self, slot)
    }
    fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError> {
        FastPath::zero_pdr_counter(self, slot)
    }
    fn zero_session_counter(&self, slot: u32) -> Result<(), DatapathError> {
        self.zero_pfcp_session_counter(slot)
    }
    fn grace_period(&self) {
        FastPath::grace_period(self);
    }
}

/// The store's fixed facts.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// TEIDs (and operator-visible session ids) from here up are PFCP's.
    pub teid_min: u32,
    pub max_sessions: u32,
    pub max_pdrs: u32,
    /// Our N3 addresses: the F-TEID addresses we hand out, and the source of what we send.
    pub n3_v4: Option<Ipv4Addr>,
    pub n3_v6: Option<Ipv6Addr>,
}

/// Seconds between 1900 (NTP's era 0) and 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Now as NTP seconds (what PFCP time stamps carry).
pub fn ntp_now() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (unix + NTP_UNIX_OFFSET) as u32
}

/// Volumes measured for one URR: octets and packets each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volumes {
    pub uplink: Counter,
    pub downlink: Counter,
}

impl Volumes {
    fn plus(self, o: Volumes) -> Volumes {
        Volumes {
            uplink: self.uplink.plus(o.uplink),
            downlink: self.downlink.plus(o.downlink),
        }
    }
}

/// A URR and what it measured since its last report.
#[derive(Clone, Debug)]
pub struct UrrState {
    pub def: Urr,
    pub seqn: u32,
    /// NTP seconds when the current measurement began.
    pub start: u32,
    /// Each linked PDR's counter at the last report.
    base: BTreeMap<u16, Counter>,
    /// Measured by PDRs removed since the last report (and by reports the SMF never took).
    carried: Volumes,
    /// When the last report was sent (periodic reports count from here).
    pub reported_at: Instant,
}

/// A PFCP session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Operator-visible id (from the PFCP range).
    pub id: u32,
    pub up_seid: u64,
    pub cp: FSeid,
    /// The SMF's address (its association).
    pub peer: IpAddr,
    pub user: Option<UserId>,
    pub rules: Rules,
    pub counter_slot: u32,
    pub pdr_slots: BTreeMap<u16, u32>,
    /// CHOOSE ID → TEID.
    pub choose: BTreeMap<u8, u32>,
    pub installed: Compiled,
    pub urrs: BTreeMap<u32, UrrState>,
    /// The PDRs whose FAR buffers and asks to notify the CP function (BUFF|NOCP), by PDR
    /// ID: the buffering period each is in.
    pub buffering: BTreeMap<u16, Buffering>,
}

/// A PDR's buffering period (its FAR BUFF|NOCP since it began).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffering {
    /// The PDR's packet count when the period began: one more means a packet arrived.
    base: u64,
    /// Whether the SMF was sent (or is being sent) its Downlink Data Report.
    reported: bool,
}

/// Reports due for one session (see [`Store::due_reports`]).
#[derive(Clone, Debug)]
pub struct Due {
    pub up_seid: u64,
    pub cp: FSeid,
    pub peer: IpAddr,
    pub usage: Vec<UsageReport>,
    /// PDRs whose first packet of a buffering period arrived: a Downlink Data Report.
    pub downlink_data: Vec<u16>,
}

impl Session {
    /// The TEIDs the session's PDRs use.
    fn teids(&self) -> HashSet<u32> {
        self.rules
            .pdrs
            .values()
            .filter_map(|p| p.local_teid)
            .collect()
    }
}

/// A deletion waiting for its grace period, so that its final usage is exact.
pub struct PendingDelete {
    pub session: Session,
}

/// Counter slots and TEIDs waiting for one grace period before reuse.
#[derive(Debug, Default)]
pub struct Retired {
    session_slots: Vec<u32>,
    pdr_slots: Vec<u32>,
    teids: Vec<u32>,
}

/// What a session's flow records say about it.
pub type Identities = Arc<RwLock<HashMap<u32, SessionIdentity>>>;

/// The sessions, and everything they have taken.
pub struct Store {
    dp: Arc<dyn Datapath>,
    opts: StoreOptions,
    sessions: HashMap<u64, Session>,
    /// (SMF address, CP SEID) → UP SEID.
    by_cp: HashMap<(IpAddr, u64), u64>,
    ue_owner: HashMap<UeKey, u64>,
    teids: HashSet<u32>,
    next_teid: u32,
    retired_teids: Vec<u32>,
    free_teids: Vec<u32>,
    session_slots: SlotPool,
    pdr_slots: SlotPool,
    next_seid: u64,
    identities: Identities,
}

fn system(e: DatapathError) -> Reject {
    Reject {
        cause: Cause::SYSTEM_FAILURE,
        offending_ie: None,
        why: format!("the fast path refused an update: {e}"),
    }
}

fn no_resources(ie: u16, what: &str) -> Reject {
    Reject::new(
        Cause::NO_RESOURCES_AVAILABLE,
        ie,
        format!("no {what} left: the fast path is full"),
    )
}

impl Store {
    pub fn new(dp: Arc<dyn Datapath>, opts: StoreOptions, identities: Identities) -> Store {
        // SEIDs start at a random point: a restarted mecgw does not reuse its old ones soon.
        let next_seid = u64::from(rand::random::<u32>()) << 16 | 1;
        Store {
            dp,
            session_slots: SlotPool::new(opts.max_sessions),
            pdr_slots: SlotPool::new(opts.max_pdrs),
            next_teid: opts.teid_min.max(1),
            opts,
            sessions: HashMap::new(),
            by_cp: HashMap::new(),
            ue_owner: HashMap::new(),
            teids: HashSet::new(),
            retired_teids: Vec::new(),
            free_teids: Vec::new(),
            next_seid,
            identities,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, up_seid: u64) -> Option<&Session> {
        self.sessions.get(&up_seid)
    }

    /// The session the SMF at `peer` knows by `cp_seid`.
    pub fn by_cp_seid(&self, peer: IpAddr, cp_seid: u64) -> Option<u64> {
        self.by_cp.get(&(peer, cp_seid)).copied()
    }

    /// Every address a session re-tunnels to.
    pub fn retunnel_targets(&self) -> HashSet<IpAddr> {
        self.sessions
            .values()
            .flat_map(|s| s.installed.retunnel_targets())
            .collect()
    }

    /// The sessions of the SMF at `peer`.
    pub fn of_peer(&self, peer: IpAddr) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.peer == peer)
            .map(|s| s.up_seid)
            .collect()
    }

    /// What was given back so far (counter slots, TEIDs), for a grace period starting now:
    /// pass it to [`Store::end_grace`] once the period has passed.
    pub fn begin_grace(&mut self) -> Retired {
        Retired {
            session_slots: self.session_slots.drain_retired(),
            pdr_slots: self.pdr_slots.drain_retired(),
            teids: std::mem::take(&mut self.retired_teids),
        }
    }

    /// Whether anything waits for a grace period before it can be reused.
    pub fn has_retired(&self) -> bool {
        self.session_slots.retired() > 0
            || self.pdr_slots.retired() > 0
            || !self.retired_teids.is_empty()
    }

    /// After the grace period `retired` was taken for: reusable.
    pub fn end_grace(&mut self, retired: Retired) {
        self.session_slots.free(retired.session_slots);
        self.pdr_slots.free(retired.pdr_slots);
        for t in &retired.teids {
            self.teids.remove(t);
        }
        self.free_teids.extend(retired.teids);
    }

    fn take_teid(&mut self) -> Option<u32> {
        if let Some(t) = self.free_teids.pop() {
            self.teids.insert(t);
            return Some(t);
        }
        while self.next_teid < u32::MAX {
            let t = self.next_teid;
            self.next_teid += 1;
            if !self.teids.contains(&t) {
                self.teids.insert(t);
                return Some(t);
            }
        }
        None
    }

    /// Resolves the local F-TEIDs of `rules`' PDRs that have none yet: CHOOSE allocates (one
    /// per CHOOSE ID within the session), an explicit TEID must be of our range and free.
    /// Returns the Created PDRs to report and the TEIDs newly taken (to give back on failure).
    fn resolve_teids(
        &mut self,
        rules: &mut Rules,
        choose: &mut BTreeMap<u8, u32>,
        own: &HashSet<u32>,
    ) -> Result<(Vec<CreatedPdr>, Vec<u32>), Reject> {
        let mut created = Vec::new();
        let mut taken = Vec::new();
        let (v4, v6) = (self.opts.n3_v4, self.opts.n3_v6);
        let result: Result<(), Reject> = (|| {
            for p in rules.pdrs.values_mut() {
                if p.local_teid.is_some() {
                    continue;
                }
                let Some(fteid) = &p.def.pdi.local_f_teid else {
                    continue;
                };
                match fteid {
                    FTeid::Choose {
                        ipv4,
                        ipv6,
                        choose_id,
                    } => {
                        if (*ipv4 && v4.is_none()) || (*ipv6 && v6.is_none()) || !(*ipv4 || *ipv6) {
                            return Err(Reject::rule(
                                ie_type::F_TEID,
                                format!(
                                    "PDR {}: the F-TEID asks for an address family N3 does not have",
                                    p.def.pdr_id
                                ),
                            ));
                        }
                        let teid = match choose_id.and_then(|c| choose.get(&c)) {
                            Some(&t) => t,
                            None => {
                                let t = self
                                    .take_teid()
                                    .ok_or_else(|| no_resources(ie_type::F_TEID, "TEIDs"))?;
                                taken.push(t);
                                if let Some(c) = choose_id {
                                    choose.insert(*c, t);
                                }
                                t
                            }
                        };
                        p.local_teid = Some(teid);
                        created.push(CreatedPdr {
                            pdr_id: p.def.pdr_id,
                            local_f_teid: Some(FTeid::Assigned {
                                teid,
                                ipv4: if *ipv4 { v4 } else { None },
                                ipv6: if *ipv6 { v6 } else { None },
                            }),
                        });
                    }
                    FTeid::Assigned { teid, .. } => {
                        let teid = *teid;
                        if teid < self.opts.teid_min {
                            return Err(Reject::new(
                                Cause::INVALID_F_TEID_ALLOCATION_OPTION,
                                ie_type::F_TEID,
                                format!(
                                    "PDR {}: TEID {teid:#x} is below mecgw's range ({:#x} and \
                                     up): let mecgw choose it (CH = 1; mecgw advertises FTUP)",
                                    p.def.pdr_id, self.opts.teid_min
                                ),
                            ));
                        }
                        // The session's own TEIDs, including one an earlier PDR of this
                        // very request took: an SMF that assigns F-TEIDs gives the same one
                        // to every uplink PDR of the session.
                        if !own.contains(&teid) && !taken.contains(&teid) {
                            if self.teids.contains(&teid) {
                                return Err(Reject::new(
                                    Cause::INVALID_F_TEID_ALLOCATION_OPTION,
                                    ie_type::F_TEID,
                                    format!("PDR {}: TEID {teid:#x} is in use", p.def.pdr_id),
                                ));
                            }
                            self.teids.insert(teid);
                            taken.push(teid);
                        }
                        p.local_teid = Some(teid);
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((created, taken)),
            Err(e) => {
                for t in taken {
                    self.teids.remove(&t);
                }
                Err(e)
            }
        }
    }

    /// The UE keys of `compiled` that another session owns, as a reject.
    fn check_ues(&self, compiled: &Compiled, me: Option<u64>) -> Result<(), Reject> {
        for key in compiled.downlinks.keys() {
            if let Some(&owner) = self.ue_owner.get(key)
                && Some(owner) != me
            {
                return Err(Reject::rule(
                    ie_type::UE_IP_ADDRESS,
                    format!("UE address {key:?} belongs to another session"),
                ));
            }
        }
        Ok(())
    }

    /// Writes `next` over `prev` in the fast path (new and changed entries, then removals);
    /// on a refusal, puts `prev` back as far as it can and reports the refusal.
    fn write(&self, prev: &Compiled, next: &Compiled) -> Result<(), Reject> {
        let apply = |from: &Compiled, to: &Compiled| -> Result<(), DatapathError> {
            for (teid, t) in &to.tunnels {
                if from.tunnels.get(teid) != Some(t) {
                    self.dp.put_tunnel(*teid, t)?;
                }
            }
            for (ue, d) in &to.downlinks {
                if from.downlinks.get(ue) != Some(d) {
                    self.dp.put_downlink(*ue, d)?;
                }
            }
            for teid in from.tunnels.keys().filter(|t| !to.tunnels.contains_key(t)) {
                self.dp.remove_tunnel(*teid)?;
            }
            for ue in from
                .downlinks
                .keys()
                .filter(|u| !to.downlinks.contains_key(u))
            {
                self.dp.remove_downlink(*ue)?;
            }
            Ok(())
        };
        apply(prev, next).map_err(|e| {
            if let Err(undo) = apply(next, prev) {
                tracing::error!(error = %undo, "PFCP: could not restore a session's fast-path entries after a failed update");
            }
            system(e)
        })
    }

    fn give_back_slots(&mut self, session_slot: Option<u32>, pdr_slots: &[u32]) {
        if let Some(s) = session_slot {
            self.session_slots.give_back(s);
        }
        for &s in pdr_slots {
            self.pdr_slots.give_back(s);
        }
    }

    /// Session Establishment: the new session's UP SEID and Created PDRs, or why not.
    pub fn establish(
        &mut self,
        peer: IpAddr,
        req: &SessionEstablishmentRequest,
    ) -> Result<(u64, Vec<CreatedPdr>), Reject> {
        if self.sessions.len() >= self.opts.max_sessions as usize {
            return Err(no_resources(ie_type::CREATE_PDR, "sessions"));
        }
        let mut rules = Rules::create(
            &req.create_pdr,
            &req.create_far,
            &req.create_qer,
            &req.create_urr,
        )?;
        let mut choose = BTreeMap::new();
        let (created, taken) = self.resolve_teids(&mut rules, &mut choose, &HashSet::new())?;
        let undo_teids = |store: &mut Store| {
            for t in &taken {
                store.teids.remove(t);
            }
        };
        let Some(counter_slot) = self.session_slots.take() else {
            undo_teids(self);
            return Err(no_resources(ie_type::CREATE_PDR, "session counters"));
        };
        let mut pdr_slots = BTreeMap::new();
        for id in rules.pdrs.keys() {
            match self.pdr_slots.take() {
                Some(s) => {
                    pdr_slots.insert(*id, s);
                }
                None => {
                    let slots: Vec<u32> = pdr_slots.values().copied().collect();
                    self.give_back_slots(Some(counter_slot), &slots);
                    undo_teids(self);
                    return Err(no_resources(ie_type::CREATE_PDR, "PDR counters"));
                }
            }
        }
        let id = self.opts.teid_min.wrapping_add(counter_slot);
        let up_seid = self.next_seid;
        self.next_seid = self.next_seid.wrapping_add(1).max(1);
        let result = (|| {
            let compiled = compile(
                &rules,
                &Ctx {
                    session: id,
                    counter: crate::datapath::pfcp_maps::session_counter_slot(counter_slot),
                    pdr_slots: &pdr_slots,
                    n3_v4: self.opts.n3_v4,
                    n3_v6: self.opts.n3_v6,
                },
            )?;
            self.check_ues(&compiled, None)?;
            self.dp.zero_session_counter(counter_slot).map_err(system)?;
            for &s in pdr_slots.values() {
                self.dp.zero_pdr_counter(s).map_err(system)?;
            }
            self.write(&Compiled::default(), &compiled)?;
            Ok(compiled)
        })();
        let compiled = match result {
            Ok(c) => c,
            Err(e) => {
                let slots: Vec<u32> = pdr_slots.values().copied().collect();
                self.give_back_slots(Some(counter_slot), &slots);
                undo_teids(self);
                return Err(e);
            }
        };
        for key in compiled.downlinks.keys() {
            self.ue_owner.insert(*key, up_seid);
        }
        // Every counter was zeroed before the rules went in: each buffering period starts at 0.
        let buffering = buffering(&rules, &pdr_slots, &BTreeMap::new(), |_| 0);
        let now = ntp_now();
        let urrs = rules
            .urrs
            .values()
            .map(|u| (u.urr_id, new_urr(u, now)))
            .collect();
        let session = Session {
            id,
            up_seid,
            cp: req.cp_f_seid.clone(),
            peer,
            user: req.user_id.clone(),
            rules,
            counter_slot,
            pdr_slots,
            choose,
            installed: compiled,
            urrs,
            buffering,
        };
        self.publish_identity(&session);
        self.by_cp.insert((peer, session.cp.seid), up_seid);
        self.sessions.insert(up_seid, session);
        Ok((up_seid, created))
    }

    fn publish_identity(&self, s: &Session) {
        let teid = s
            .rules
            .pdrs
            .values()
            .filter(|p| Side::is_uplink(&p.def.pdi))
            .find_map(|p| p.local_teid)
            .unwrap_or(0);
        let qfi = s.rules.qers.values().find_map(|q| q.qfi).unwrap_or(0);
        let identity = SessionIdentity {
            imsi: s.user.as_ref().and_then(|u| u.imsi.clone()),
            msisdn: s.user.as_ref().and_then(|u| u.msisdn.clone()),
            imei: s.user.as_ref().and_then(|u| u.imei.clone()),
            teid,
            qfi,
        };
        match self.identities.write() {
            Ok(mut m) => m.insert(s.id, identity),
            Err(p) => p.into_inner().insert(s.id, identity),
        };
    }

    fn forget_identity(&self, id: u32) {
        match self.identities.write() {
            Ok(mut m) => m.remove(&id),
            Err(p) => p.into_inner().remove(&id),
        };
    }

    /// Session Modification: the Created PDRs and the usage reports the response carries
    /// (removed URRs' final ones, queried ones), or why nothing changed.
    pub fn modify(
        &mut self,
        up_seid: u64,
        req: &SessionModificationRequest,
    ) -> Result<(Vec<CreatedPdr>, Vec<UsageReport>), Reject> {
        let Some(current) = self.sessions.get(&up_seid).cloned() else {
            return Err(Reject {
                cause: Cause::SESSION_CONTEXT_NOT_FOUND,
                offending_ie: None,
                why: format!("no session with SEID {up_seid:#x}"),
            });
        };
        if let Some(q) = req.query_urr.iter().find(|q| !current.urrs.contains_key(q)) {
            return Err(Reject::rule(
                ie_type::QUERY_URR,
                format!("there is no URR {q} to query"),
            ));
        }
        let mut next = current.clone();
        let removed_urrs = next.rules.modify(req)?;
        let own = current.teids();
        let mut choose = next.choose.clone();
        let (created, taken) = self.resolve_teids(&mut next.rules, &mut choose, &own)?;
        next.choose = choose;
        // Counter slots: new PDRs take one; removed PDRs give theirs back (after their
        // counts are carried into their URRs).
        let removed_pdrs: Vec<(u16, u32)> = current
            .pdr_slots
            .iter()
            .filter(|(id, _)| !next.rules.pdrs.contains_key(id))
            .map(|(&id, &s)| (id, s))
            .collect();
        let mut new_slots = Vec::new();
        for id in next.rules.pdrs.keys() {
            if next.pdr_slots.contains_key(id) {
                continue;
            }
            match self.pdr_slots.take() {
                Some(s) => {
                    next.pdr_slots.insert(*id, s);
                    new_slots.push(s);
                }
                None => {
                    self.give_back_slots(None, &new_slots);
                    for t in &taken {
                        self.teids.remove(t);
                    }
                    return Err(no_resources(ie_type::CREATE_PDR, "PDR counters"));
                }
            }
        }
        for (id, _) in &removed_pdrs {
            next.pdr_slots.remove(id);
        }
        let result = (|| {
            let compiled = compile(
                &next.rules,
                &Ctx {
                    session: next.id,
                    counter: crate::datapath::pfcp_maps::session_counter_slot(next.counter_slot),
                    pdr_slots: &next.pdr_slots,
                    n3_v4: self.opts.n3_v4,
                    n3_v6: self.opts.n3_v6,
                },
            )?;
            self.check_ues(&compiled, Some(up_seid))?;
            for &s in &new_slots {
                self.dp.zero_pdr_counter(s).map_err(system)?;
            }
            self.write(&current.installed, &compiled)?;
            Ok(compiled)
        })();
        let compiled = match result {
            Ok(c) => c,
            Err(e) => {
                self.give_back_slots(None, &new_slots);
                for t in &taken {
                    self.teids.remove(t);
                }
                return Err(e);
            }
        };
        // In force: now record it.
        let now = ntp_now();
        if let Some(cp) = &req.cp_f_seid {
            next.cp = cp.clone();
        }
        if let Some(user) = &req.user_id {
            next.user = Some(user.clone());
        }
        // Removed PDRs: their counts so far go to the URRs that remain.
        for (id, slot) in &removed_pdrs {
            let Some(old) = current.rules.pdrs.get(id) else {
                continue;
            };
            let uplink = Side::is_uplink(&old.def.pdi);
            let count = self.dp.pdr_counter(*slot).unwrap_or_default();
            for urr in &old.def.urr_ids {
                if let Some(state) = next.urrs.get_mut(urr) {
                    let since = delta(count, state.base.get(id).copied().unwrap_or_default());
                    if uplink {
                        state.carried.uplink = state.carried.uplink.plus(since);
                    } else {
                        state.carried.downlink = state.carried.downlink.plus(since);
                    }
                    state.base.remove(id);
                }
            }
            self.pdr_slots.give_back(*slot);
        }
        let mut reports = Vec::new();
        for u in &removed_urrs {
            if let Some(mut state) = next.urrs.remove(&u.urr_id) {
                // The URR is gone from `next.rules`; its PDRs' links are read from the
                // rules before the change. PDRs removed with it have no slot in `next`: their
                // counts are in what the URR carries already (above), and must not be
                // counted twice.
                let measured = measure(&current.rules, &next.pdr_slots, &state, self.dp.as_ref());
                reports.push(make_report(
                    &mut state,
                    measured,
                    UsageReportTrigger::TERMINATION,
                    now,
                ));
            }
        }
        for u in next.rules.urrs.values() {
            next.urrs
                .entry(u.urr_id)
                .and_modify(|s| s.def = u.clone())
                .or_insert_with(|| new_urr(u, now));
        }
        for q in &req.query_urr {
            let measured = next
                .urrs
                .get(q)
                .map(|s| measure(&next.rules, &next.pdr_slots, s, self.dp.as_ref()));
            if let (Some(measured), Some(state)) = (measured, next.urrs.get_mut(q)) {
                reports.push(make_report(
                    state,
                    measured,
                    UsageReportTrigger::IMMEDIATE,
                    now,
                ));
            }
        }
        for key in current.installed.downlinks.keys() {
            if !compiled.downlinks.contains_key(key) {
                self.ue_owner.remove(key);
            }
        }
        for key in compiled.downlinks.keys() {
            self.ue_owner.insert(*key, up_seid);
        }
        // A PDR that goes on buffering stays in its period (reported once); one that starts
        // counts from its counter now (zero for a new PDR), read after the rules went in so
        // that no packet forwarded before is taken for a buffered one.
        next.buffering = buffering(&next.rules, &next.pdr_slots, &current.buffering, |slot| {
            if new_slots.contains(&slot) {
                0
            } else {
                self.dp.pdr_counter(slot).unwrap_or_default().packets
            }
        });
        let still = next.teids();
        // Still taken (no one else may claim them) until a grace period has passed.
        self.retired_teids.extend(own.difference(&still));
        next.installed = compiled;
        self.publish_identity(&next);
        self.sessions.insert(up_seid, next);
        Ok((created, reports))
    }

    /// Session Deletion, first half: the session leaves the fast path now; its final usage is
    /// read by [`Store::finish`] after a grace period.
    pub fn delete(&mut self, up_seid: u64) -> Result<PendingDelete, Reject> {
        let Some(session) = self.sessions.remove(&up_seid) else {
            return Err(Reject {
                cause: Cause::SESSION_CONTEXT_NOT_FOUND,
                offending_ie: None,
                why: format!("no session with SEID {up_seid:#x}"),
            });
        };
        if let Err(e) = self.write(&session.installed, &Compiled::default()) {
            // Keep the session as it was: the SMF may try again.
            self.sessions.insert(up_seid, session);
            return Err(e);
        }
        for key in session.installed.downlinks.keys() {
            self.ue_owner.remove(key);
        }
        if self.by_cp.get(&(session.peer, session.cp.seid)) == Some(&up_seid) {
            self.by_cp.remove(&(session.peer, session.cp.seid));
        }
        self.forget_identity(session.id);
        Ok(PendingDelete { session })
    }

    /// Session Deletion, second half, after a grace period: every URR's final report; the
    /// session's TEIDs and counter slots become reusable after the next one.
    pub fn finish(&mut self, pending: PendingDelete) -> Vec<UsageReport> {
        let PendingDelete { session } = pending;
        let now = ntp_now();
        let mut reports = Vec::new();
        for state in session.urrs.values() {
            let mut state = state.clone();
            let measured = measure(&session.rules, &session.pdr_slots, &state, self.dp.as_ref());
            reports.push(make_report(
                &mut state,
                measured,
                UsageReportTrigger::TERMINATION,
                now,
            ));
        }
        // The session's entries left the fast path before the grace period that ran before
        // this call: nothing counts into its slots or arrives on its TEIDs any more.
        self.session_slots.free([session.counter_slot]);
        self.pdr_slots.free(session.pdr_slots.values().copied());
        for t in session.teids() {
            self.teids.remove(&t);
            self.free_teids.push(t);
        }
        reports
    }

    /// The reports due now, per session: usage reports (periodic reports whose period has
    /// passed; volume thresholds reached, when `check_thresholds`) and, when
    /// `check_thresholds`, the buffering PDRs that counted their period's first packet (a
    /// Downlink Data Report, once per period). Counters are read only for URRs that may
    /// report and PDRs not reported yet.
    pub fn due_reports(&mut self, check_thresholds: bool) -> Vec<Due> {
        let now = ntp_now();
        let instant = Instant::now();
        let dp = Arc::clone(&self.dp);
        let mut out = Vec::new();
        for s in self.sessions.values_mut() {
            let mut reports = Vec::new();
            for state in s.urrs.values_mut() {
                let triggers = state.def.reporting_triggers.unwrap_or_default().0;
                let periodic = triggers & ReportingTriggers::PERIODIC != 0
                    && state.def.measurement_period.is_some_and(|p| {
                        p > 0 && instant.duration_since(state.reported_at).as_secs() >= u64::from(p)
                    });
                let watches = check_thresholds
                    && triggers & ReportingTriggers::VOLUME_THRESHOLD != 0
                    && state.def.volume_threshold.is_some();
                if !(periodic || watches) {
                    continue;
                }
                let measured = measure(&s.rules, &s.pdr_slots, state, dp.as_ref());
                let v = measured.volumes;
                let threshold = watches
                    && state.def.volume_threshold.is_some_and(|t| {
                        let total = v.uplink.bytes + v.downlink.bytes;
                        t.total.is_some_and(|x| total >= x)
                            || t.uplink.is_some_and(|x| v.uplink.bytes >= x)
                            || t.downlink.is_some_and(|x| v.downlink.bytes >= x)
                    });
                if !(periodic || threshold) {
                    continue;
                }
                let trigger = if threshold {
                    UsageReportTrigger::VOLUME_THRESHOLD
                } else {
                    UsageReportTrigger::PERIODIC
                };
                reports.push(make_report(state, measured, trigger, now));
            }
            let mut downlink_data = Vec::new();
            if check_thresholds {
                for (id, b) in s.buffering.iter_mut().filter(|(_, b)| !b.reported) {
                    let Some(&slot) = s.pdr_slots.get(id) else {
                        continue;
                    };
                    let packets = dp.pdr_counter(slot).unwrap_or_default().packets;
                    if packets > b.base {
                        b.reported = true;
                        downlink_data.push(*id);
                    }
                }
            }
            if !reports.is_empty() || !downlink_data.is_empty() {
                out.push(Due {
                    up_seid: s.up_seid,
                    cp: s.cp.clone(),
                    peer: s.peer,
                    usage: reports,
                    downlink_data,
                });
            }
        }
        out
    }

    /// A report the SMF never took: its volumes go into the URR's next one, and the PDRs of
    /// its Downlink Data Report (still buffering) are reported again at the next check.
    pub fn carry_back(&mut self, up_seid: u64, reports: &[UsageReport], downlink_data: &[u16]) {
        let Some(s) = self.sessions.get_mut(&up_seid) else {
            return;
        };
        for id in downlink_data {
            if let Some(b) = s.buffering.get_mut(id) {
                b.reported = false;
            }
        }
        for r in reports {
            if let (Some(state), Some(v)) = (s.urrs.get_mut(&r.urr_id), r.volume) {
                state.carried = state.carried.plus(Volumes {
                    uplink: Counter {
                        packets: v.uplink_packets.unwrap_or(0),
                        bytes: v.uplink_octets.unwrap_or(0),
                    },
                    downlink: Counter {
                        packets: v.downlink_packets.unwrap_or(0),
                        bytes: v.downlink_octets.unwrap_or(0),
                    },
                });
            }
        }
    }

    /// Every session's identity summary, for the status views: (id, UP SEID, peer, IMSI).
    pub fn summaries(&self) -> Vec<(u32, u64, IpAddr, Option<String>)> {
        let mut v: Vec<_> = self
            .sessions
            .values()
            .map(|s| {
                (
                    s.id,
                    s.up_seid,
                    s.peer,
                    s.user.as_ref().and_then(|u| u.imsi.clone()),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// The buffering periods of `rules`' PDRs that buffer and notify: those in `prev` go on, the
/// others begin at the packet count `count_now` gives for their counter slot.
fn buffering(
    rules: &Rules,
    slots: &BTreeMap<u16, u32>,
    prev: &BTreeMap<u16, Buffering>,
    mut count_now: impl FnMut(u32) -> u64,
) -> BTreeMap<u16, Buffering> {
    let mut out = BTreeMap::new();
    for p in rules.pdrs.values() {
        let id = p.def.pdr_id;
        if !rules.buffers_notifying(&p.def) {
            continue;
        }
        let Some(&slot) = slots.get(&id) else {
            continue;
        };
        let b = prev.get(&id).copied().unwrap_or_else(|| Buffering {
            base: count_now(slot),
            reported: false,
        });
        out.insert(id, b);
    }
    out
}

fn new_urr(u: &Urr, now: u32) -> UrrState {
    UrrState {
        def: u.clone(),
        seqn: 0,
        start: now,
        base: BTreeMap::new(),
        carried: Volumes::default(),
        reported_at: Instant::now(),
    }
}

fn delta(now: Counter, base: Counter) -> Counter {
    Counter {
        packets: now.packets.saturating_sub(base.packets),
        bytes: now.bytes.saturating_sub(base.bytes),
    }
}

/// What a URR measured since its last report, and its PDRs' counters now (the next base).
pub struct Measured {
    pub volumes: Volumes,
    counts: BTreeMap<u16, Counter>,
}

/// What `state` measured since its last report: the counters past their base of its PDRs
/// in `rules` that have a slot in `slots`, plus what it carries (among which the counts of
/// its PDRs removed since).
fn measure(
    rules: &Rules,
    slots: &BTreeMap<u16, u32>,
    state: &UrrState,
    dp: &dyn Datapath,
) -> Measured {
    let mut counts = BTreeMap::new();
    let mut v = state.carried;
    for p in rules.pdrs.values() {
        if !p.def.urr_ids.contains(&state.def.urr_id) {
            continue;
        }
        let id = p.def.pdr_id;
        let Some(&slot) = slots.get(&id) else {
            continue;
        };
        let count = dp.pdr_counter(slot).unwrap_or_default();
        let since = delta(count, state.base.get(&id).copied().unwrap_or_default());
        counts.insert(id, count);
        if Side::is_uplink(&p.def.pdi) {
            v.uplink = v.uplink.plus(since);
        } else {
            v.downlink = v.downlink.plus(since);
        }
    }
    Measured { volumes: v, counts }
}

/// A usage report of what `state` measured; the measurement starts again from here.
fn make_report(state: &mut UrrState, measured: Measured, trigger: u32, now: u32) -> UsageReport {
    let volumes = measured.volumes;
    let report = UsageReport {
        urr_id: state.def.urr_id,
        ur_seqn: state.seqn,
        trigger: UsageReportTrigger(trigger),
        start_time: Some(state.start),
        end_time: Some(now),
        volume: Some(VolumeMeasurement {
            total_octets: Some(volumes.uplink.bytes + volumes.downlink.bytes),
            uplink_octets: Some(volumes.uplink.bytes),
            downlink_octets: Some(volumes.downlink.bytes),
            total_packets: Some(volumes.uplink.packets + volumes.downlink.packets),
            uplink_packets: Some(volumes.uplink.packets),
            downlink_packets: Some(volumes.downlink.packets),
        }),
        duration: Some(now.saturating_sub(state.start)),
    };
    state.seqn = state.seqn.wrapping_add(1);
    state.start = now;
    state.carried = Volumes::default();
    state.reported_at = Instant::now();
    state.base = measured.counts;
    report
}

/// Whether `node` names `peer` (an IPv4/IPv6 Node ID must be the sender's address; an FQDN
/// cannot be checked here).
pub fn node_is(node: &NodeId, peer: IpAddr) -> bool {
    match node {
        NodeId::Ipv4(a) => IpAddr::V4(*a) == peer,
        NodeId::Ipv6(a) => IpAddr::V6(*a) == peer,
        NodeId::Fqdn(_) => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use mecgw_pfcp::ie::{
        ApplyAction, CreateFar, CreatePdr, ForwardingParameters, Interface, MeasurementMethod,
        OuterHeaderCreation, OuterHeaderRemoval, Pdi, UeIpAddress, UpdateFar, UpdatePdr,
    };

    use super::*;

    const TEID_MIN: u32 = 0x8000_0000;
    const N3: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const SMF: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));

    /// The fast path's maps and counters, as plain maps.
    #[derive(Default)]
    struct Fake {
        tunnels: Mutex<HashMap<u32, PfcpTunnel>>,
        downlinks: Mutex<HashMap<UeKey, PfcpDownlink>>,
        counters: Mutex<HashMap<u32, Counter>>,
        updates: Mutex<usize>,
    }

    impl Fake {
        fn set(&self, slot: u32, packets: u64, bytes: u64) {
            self.counters
                .lock()
                .unwrap()
                .insert(slot, Counter { packets, bytes });
        }
        fn updates(&self) -> usize {
            *self.updates.lock().unwrap()
        }
    }

    impl Datapath for Fake {
        fn put_tunnel(&self, teid: u32, t: &PfcpTunnel) -> Result<(), DatapathError> {
            *self.updates.lock().unwrap() += 1;
            self.tunnels.lock().unwrap().insert(teid, *t);
            Ok(())
        }
        fn remove_tunnel(&self, teid: u32) -> Result<(), DatapathError> {
            *self.updates.lock().unwrap() += 1;
            self.tunnels.lock().unwrap().remove(&teid);
            Ok(())
        }
        fn put_downlink(&self, ue: UeKey, d: &PfcpDownlink) -> Result<(), DatapathError> {
            *self.updates.lock().unwrap() += 1;
            self.downlinks.lock().unwrap().insert(ue, *d);
            Ok(())
        }
        fn remove_downlink(&self, ue: UeKey) -> Result<(), DatapathError> {
            *self.updates.lock().unwrap() += 1;
            self.downlinks.lock().unwrap().remove(&ue);
            Ok(())
        }
        fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError> {
            Ok(self
                .counters
                .lock()
                .unwrap()
                .get(&slot)
                .copied()
                .unwrap_or_default())
        }
        fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError> {
            self.counters.lock().unwrap().remove(&slot);
            Ok(())
        }
        fn zero_session_counter(&self, _slot: u32) -> Result<(), DatapathError> {
            Ok(())
        }
        fn grace_period(&self) {}
    }

    fn store() -> (Store, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let store = Store::new(
            Arc::clone(&fake) as Arc<dyn Datapath>,
            StoreOptions {
                teid_min: TEID_MIN,
                max_sessions: 16,
                max_pdrs: 64,
                n3_v4: Some(N3),
                n3_v6: None,
            },
            Identities::default(),
        );
        (store, fake)
    }

    /// A PDR from the access side with `fteid`, breaking out locally (FAR 1).
    fn uplink(id: u16, fteid: FTeid, ue: Ipv4Addr) -> CreatePdr {
        CreatePdr {
            pdr_id: id,
            precedence: 10,
            pdi: Pdi {
                source_interface: Interface::Access,
                local_f_teid: Some(fteid),
                network_instance: None,
                ue_ip_address: vec![UeIpAddress {
                    ipv4: Some(ue),
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
            urr_ids: vec![1],
            qer_ids: Vec::new(),
        }
    }

    /// The UE's downlink PDR (FAR 2).
    fn downlink(id: u16, ue: Ipv4Addr) -> CreatePdr {
        CreatePdr {
            pdr_id: id,
            precedence: 10,
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
            far_id: Some(2),
            urr_ids: vec![1],
            qer_ids: Vec::new(),
        }
    }

    fn choose() -> FTeid {
        FTeid::Choose {
            ipv4: true,
            ipv6: false,
            choose_id: None,
        }
    }

    fn explicit(teid: u32) -> FTeid {
        FTeid::Assigned {
            teid,
            ipv4: Some(N3),
            ipv6: None,
        }
    }

    fn urr(id: u32) -> Urr {
        Urr {
            urr_id: id,
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

    fn request(cp_seid: u64, pdrs: Vec<CreatePdr>) -> SessionEstablishmentRequest {
        SessionEstablishmentRequest {
            node_id: NodeId::Ipv4(Ipv4Addr::new(192, 0, 2, 100)),
            cp_f_seid: FSeid {
                seid: cp_seid,
                ipv4: Some(Ipv4Addr::new(192, 0, 2, 100)),
                ipv6: None,
            },
            create_pdr: pdrs,
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
                            teid: Some(0x2001),
                            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
                            ipv6: None,
                            port: None,
                        }),
                    }),
                    bar_id: None,
                },
            ],
            create_urr: vec![urr(1)],
            create_qer: Vec::new(),
            pdn_type: None,
            user_id: None,
        }
    }

    fn ue(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 45, 0, n)
    }

    fn teid_of(created: &[CreatedPdr]) -> u32 {
        match created.first().and_then(|c| c.local_f_teid.clone()) {
            Some(FTeid::Assigned { teid, .. }) => teid,
            other => panic!("{other:?}"),
        }
    }

    fn cause(r: Result<(u64, Vec<CreatedPdr>), Reject>) -> (Cause, Option<u16>) {
        let e = r.unwrap_err();
        (e.cause, e.offending_ie)
    }

    /// The PDR IDs of the Downlink Data Reports due now (usage reports are not due: the URR
    /// has no trigger).
    fn downlink_data_due(store: &mut Store) -> Vec<u16> {
        store
            .due_reports(true)
            .into_iter()
            .flat_map(|d| {
                assert!(d.usage.is_empty(), "{d:?}");
                d.downlink_data
            })
            .collect()
    }

    fn far_action(store: &mut Store, up_seid: u64, action: u16) {
        let req = SessionModificationRequest {
            update_far: vec![UpdateFar {
                far_id: 2,
                apply_action: Some(ApplyAction(action)),
                update_forwarding_parameters: None,
                bar_id: None,
            }],
            ..SessionModificationRequest::default()
        };
        store.modify(up_seid, &req).unwrap();
    }

    #[test]
    fn a_buffering_pdrs_first_packet_is_reported_once_per_buffering_period() {
        let (mut store, fake) = store();
        let notify = ApplyAction::BUFF | ApplyAction::NOCP;
        let mut req = request(1, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]);
        req.create_far[1].apply_action = ApplyAction(notify);
        let (up_seid, _) = store.establish(SMF, &req).unwrap();
        let slot = store.get(up_seid).unwrap().pdr_slots[&2];
        let uplink_slot = store.get(up_seid).unwrap().pdr_slots[&1];
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        // Uplink packets are not downlink data.
        fake.set(uplink_slot, 3, 300);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        // The first buffered (dropped) packet: reported, only where thresholds are checked.
        fake.set(slot, 1, 100);
        assert!(store.due_reports(false).is_empty());
        assert_eq!(downlink_data_due(&mut store), vec![2]);
        // More packets in the same period: nothing more.
        fake.set(slot, 2, 200);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        // A report the SMF did not take is sent again.
        store.carry_back(up_seid, &[], &[2]);
        assert_eq!(downlink_data_due(&mut store), vec![2]);
        // A modification that leaves the FAR buffering keeps the period.
        far_action(&mut store, up_seid, notify);
        fake.set(slot, 3, 300);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        // Forwarding ends the period; packets forwarded are not reported.
        far_action(&mut store, up_seid, ApplyAction::FORW);
        fake.set(slot, 9, 900);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        store.carry_back(up_seid, &[], &[2]);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        // Buffering again: a new period from the count at its start.
        far_action(&mut store, up_seid, notify);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
        fake.set(slot, 10, 1000);
        assert_eq!(downlink_data_due(&mut store), vec![2]);
        // BUFF without NOCP buffers (drops) without telling.
        far_action(&mut store, up_seid, ApplyAction::BUFF);
        far_action(&mut store, up_seid, ApplyAction::BUFF);
        fake.set(slot, 11, 1100);
        assert_eq!(downlink_data_due(&mut store), Vec::<u16>::new());
    }

    #[test]
    fn a_ue_address_another_session_holds_is_refused() {
        let (mut store, fake) = store();
        let (first, _) = store
            .establish(
                SMF,
                &request(1, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
            )
            .unwrap();
        let updates = fake.updates();
        let r = store.establish(
            SMF,
            &request(2, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
        );
        assert_eq!(
            cause(r),
            (
                Cause::RULE_CREATION_MODIFICATION_FAILURE,
                Some(ie_type::UE_IP_ADDRESS)
            )
        );
        assert_eq!(fake.updates(), updates, "the refused session wrote nothing");
        assert_eq!(store.len(), 1);
        let d = fake.downlinks.lock().unwrap()[&UeKey::V4(ue(1).octets())];
        assert_eq!(d.session, store.get(first).unwrap().id, "still the first's");
        // Once the first is gone, the address is free.
        let pending = store.delete(first).unwrap();
        store.finish(pending);
        store
            .establish(
                SMF,
                &request(3, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
            )
            .unwrap();
    }

    #[test]
    fn teids_and_counter_slots_are_reused_only_after_a_grace_period() {
        let (mut store, fake) = store();
        let (a, created) = store
            .establish(
                SMF,
                &request(1, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
            )
            .unwrap();
        let old_teid = teid_of(&created);
        assert!(old_teid >= TEID_MIN);
        let old_slot = store.get(a).unwrap().pdr_slots[&1];

        // The uplink PDR goes, with its TEID and counter slot.
        store
            .modify(
                a,
                &SessionModificationRequest {
                    remove_pdr: vec![1],
                    ..SessionModificationRequest::default()
                },
            )
            .unwrap();
        assert!(fake.tunnels.lock().unwrap().is_empty());
        assert!(store.has_retired());

        // Until a grace period has passed, neither is handed out again, and the TEID
        // cannot be claimed.
        let (b, created) = store
            .establish(SMF, &request(2, vec![uplink(1, choose(), ue(2))]))
            .unwrap();
        assert_ne!(teid_of(&created), old_teid);
        assert_ne!(store.get(b).unwrap().pdr_slots[&1], old_slot);
        let claim = |store: &mut Store, cp| {
            store.establish(
                SMF,
                &request(cp, vec![uplink(1, explicit(old_teid), ue(3))]),
            )
        };
        assert_eq!(
            cause(claim(&mut store, 3)),
            (
                Cause::INVALID_F_TEID_ALLOCATION_OPTION,
                Some(ie_type::F_TEID)
            )
        );
        let retired = store.begin_grace();
        assert_eq!(
            cause(claim(&mut store, 4)),
            (
                Cause::INVALID_F_TEID_ALLOCATION_OPTION,
                Some(ie_type::F_TEID)
            ),
            "a grace period begun is not one passed"
        );
        store.end_grace(retired);
        assert!(!store.has_retired());

        // After it, both are free: the TEID can be claimed, and the slot is handed out.
        let (c, _) = claim(&mut store, 5).unwrap();
        assert!(fake.tunnels.lock().unwrap().contains_key(&old_teid));
        assert_eq!(store.get(c).unwrap().pdr_slots[&1], old_slot);
    }

    #[test]
    fn an_explicit_teid_below_the_range_is_refused() {
        let (mut store, fake) = store();
        let r = store.establish(
            SMF,
            &request(1, vec![uplink(1, explicit(TEID_MIN - 1), ue(1))]),
        );
        assert_eq!(
            cause(r),
            (
                Cause::INVALID_F_TEID_ALLOCATION_OPTION,
                Some(ie_type::F_TEID)
            )
        );
        assert_eq!(fake.updates(), 0);
    }

    #[test]
    fn a_pdr_removed_with_its_urr_is_reported_once() {
        let (mut store, fake) = store();
        let (a, _) = store
            .establish(
                SMF,
                &request(1, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
            )
            .unwrap();
        let s = store.get(a).unwrap();
        let (up, down) = (s.pdr_slots[&1], s.pdr_slots[&2]);
        fake.set(up, 10, 1_000);
        fake.set(down, 20, 2_000);

        // PDR 1 and URR 1 go; PDR 2 moves to a new URR 2.
        let (_, reports) = store
            .modify(
                a,
                &SessionModificationRequest {
                    remove_pdr: vec![1],
                    remove_urr: vec![1],
                    create_urr: vec![urr(2)],
                    update_pdr: vec![UpdatePdr {
                        pdr_id: 2,
                        outer_header_removal: None,
                        precedence: None,
                        pdi: None,
                        far_id: None,
                        urr_ids: vec![2],
                        qer_ids: Vec::new(),
                    }],
                    ..SessionModificationRequest::default()
                },
            )
            .unwrap();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(
            (r.urr_id, r.trigger),
            (1, UsageReportTrigger(UsageReportTrigger::TERMINATION))
        );
        let v = r.volume.unwrap();
        assert_eq!(
            (v.uplink_packets, v.uplink_octets),
            (Some(10), Some(1_000)),
            "the removed PDR counted once"
        );
        assert_eq!(
            (v.downlink_packets, v.downlink_octets),
            (Some(20), Some(2_000))
        );
        assert_eq!(v.total_octets, Some(3_000));

        // URR 2 measures PDR 2 from now on.
        fake.set(down, 25, 2_500);
        let (_, reports) = store
            .modify(
                a,
                &SessionModificationRequest {
                    query_urr: vec![2],
                    ..SessionModificationRequest::default()
                },
            )
            .unwrap();
        let v = reports[0].volume.unwrap();
        assert_eq!(
            (v.uplink_octets, v.downlink_packets, v.downlink_octets),
            (Some(0), Some(25), Some(2_500))
        );
    }

    #[test]
    fn a_removed_pdr_counts_into_its_urr_once() {
        let (mut store, fake) = store();
        let (a, _) = store
            .establish(
                SMF,
                &request(1, vec![uplink(1, choose(), ue(1)), downlink(2, ue(1))]),
            )
            .unwrap();
        let up = store.get(a).unwrap().pdr_slots[&1];
        fake.set(up, 10, 1_000);
        let (_, reports) = store
            .modify(
                a,
                &SessionModificationRequest {
                    remove_pdr: vec![1],
                    query_urr: vec![1],
                    ..SessionModificationRequest::default()
                },
            )
            .unwrap();
        let v = reports[0].volume.unwrap();
        assert_eq!((v.uplink_packets, v.uplink_octets), (Some(10), Some(1_000)));
        // And not again at the end.
        let pending = store.delete(a).unwrap();
        let reports = store.finish(pending);
        let v = reports[0].volume.unwrap();
        assert_eq!((v.uplink_packets, v.uplink_octets), (Some(0), Some(0)));
    }
}
