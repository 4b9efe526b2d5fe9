//! The PFCP sessions' entries in the kernel: tunnels by local TEID, downlinks by UE address,
//! and the PDR counters usage reports are made from.
//!
//! Unlike the tables, these are one generation written entry by entry: an SMF changes one
//! session at a time, many times a second, and rewriting and flipping whole tables per message
//! (with an RCU grace period each) would cap establishments at a few dozen per second at
//! 100,000 sessions. A hash or LPM map update replaces an element for readers atomically (the
//! old element is freed after an RCU grace period, since the maps are not preallocated), so a
//! packet sees a tunnel wholly before or wholly after a change, and a change is in force for
//! every packet that starts after the update call returns.
//!
//! Counter slots are the one thing a grace period still guards: a slot given up by a deleted
//! PDR or session is reused only after [`SlotPool::reclaim`] has waited for one, so a packet
//! still in flight never counts into its successor.

use aya::maps::{
    HashMap as BpfHashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key,
};
use mecgw_ebpf::{Counter, MAX_SESSIONS, PfcpDownlink, PfcpTunnel, names};

use super::{DatapathError, writer::wait_for_readers};

/// PFCP in the loaded programs: how many sessions, tunnels, UEs and PDRs they hold (the map
/// sizes chosen at load) and the TEIDs that belong to PFCP sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfcpOptions {
    pub sessions: u32,
    pub tunnels: u32,
    pub ues: u32,
    pub pdrs: u32,
    /// TEIDs from here up are PFCP sessions' (allocated by mecgw); those below, the tables'.
    pub teid_min: u32,
}

impl PfcpOptions {
    /// What the product promises: 100,000 sessions with several PDRs each, with headroom,
    /// and the upper half of the TEID space.
    pub const DEFAULT: PfcpOptions = PfcpOptions {
        sessions: mecgw_ebpf::MAX_PFCP_SESSIONS,
        tunnels: mecgw_ebpf::MAX_PFCP_TUNNELS,
        ues: mecgw_ebpf::MAX_PFCP_UES,
        pdrs: mecgw_ebpf::MAX_PDR_COUNTERS,
        teid_min: 0x8000_0000,
    };
}

/// Counter slots handed out one at a time; a slot given back waits for a grace period
/// before it is handed out again.
#[derive(Debug)]
pub struct SlotPool {
    capacity: u32,
    next: u32,
    free: Vec<u32>,
    retired: Vec<u32>,
}

impl SlotPool {
    /// Slots `0..capacity`.
    pub fn new(capacity: u32) -> SlotPool {
        SlotPool {
            capacity,
            next: 0,
            free: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// A slot, or `None` when all are in use or waiting for a grace period (call
    /// [`SlotPool::reclaim`] and try again).
    pub fn take(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        (self.next < self.capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Gives `slot` back; it is reused only after the next [`SlotPool::reclaim`].
    pub fn give_back(&mut self, slot: u32) {
        self.retired.push(slot);
    }

    /// Slots given back and not yet reusable.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Makes the retired slots reusable. The caller must have waited for an RCU grace
    /// period since they were given back (see [`PfcpMaps::grace_period`]).
    pub fn reclaim(&mut self) -> Vec<u32> {
        let reclaimed = self.retired.clone();
        self.free.append(&mut self.retired);
        reclaimed
    }

    /// Takes the slots given back so far, for a grace period starting now; hand them to
    /// [`SlotPool::free`] once it has passed. Slots given back meanwhile wait for the next one.
    pub fn drain_retired(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.retired)
    }

    /// Makes `slots` reusable at once. The caller guarantees nothing counts into them any
    /// more: an RCU grace period has passed since the last entry naming them was removed.
    pub fn free(&mut self, slots: impl IntoIterator<Item = u32>) {
        self.free.extend(slots);
    }

    /// Slots in use (or waiting for a grace period).
    pub fn in_use(&self) -> u32 {
        self.next - self.free.len() as u32 - self.retired.len() as u32
    }
}

/// The PFCP maps of a loaded fast path.
pub(super) struct PfcpMaps {
    tunnels: BpfHashMap<MapData, u32, PfcpTunnel>,
    ue_v4: BpfHashMap<MapData, [u8; 4], PfcpDownlink>,
    ue_v6: LpmTrie<MapData, [u8; 16], PfcpDownlink>,
    pdr_counters: PerCpuArray<MapData, Counter>,
    capacity: Option<PfcpOptions>,
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl PfcpMaps {
    pub(super) fn new(
        ebpf: &mut aya::Ebpf,
        capacity: Option<PfcpOptions>,
    ) -> Result<PfcpMaps, DatapathError> {
        Ok(PfcpMaps {
            tunnels: super::take_map(ebpf, names::MAP_PFCP_TUNNELS)?,
            ue_v4: super::take_map(ebpf, names::MAP_PFCP_UE_V4)?,
            ue_v6: super::take_map(ebpf, names::MAP_PFCP_UE_V6)?,
            pdr_counters: super::take_map(ebpf, names::MAP_PDR_COUNTERS)?,
            capacity,
        })
    }

    fn enabled(&self) -> Result<PfcpOptions, DatapathError> {
        self.capacity.ok_or(DatapathError::BadArgument(
            "the programs were loaded without PFCP maps (FastPathOptions::pfcp)".into(),
        ))
    }
}

/// The index in the session counters of PFCP session counter slot `slot`.
pub const fn session_counter_slot(slot: u32) -> u32 {
    MAX_SESSIONS + slot
}

impl super::FastPath {
    fn pfcp(&self) -> Result<std::sync::MutexGuard<'_, PfcpMaps>, DatapathError> {
        self.pfcp
            .lock()
            .map_err(|_| DatapathError::Poisoned("a PFCP map update"))
    }

    /// What the loaded programs hold for PFCP, if they were loaded with PFCP maps.
    pub fn pfcp_options(&self) -> Option<PfcpOptions> {
        self.options.pfcp
    }

    /// Puts tunnel `teid` in force (replacing what it held).
    pub fn put_pfcp_tunnel(&self, teid: u32, tunnel: &PfcpTunnel) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        m.enabled()?;
        m.tunnels
            .insert(teid, tunnel, 0)
            .map_err(map_err(names::MAP_PFCP_TUNNELS))
    }

    /// Removes tunnel `teid`; removing one that is not there is not an error.
    pub fn remove_pfcp_tunnel(&self, teid: u32) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        match m.tunnels.remove(&teid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_PFCP_TUNNELS)(e)),
        }
    }

    /// Puts the downlink of UE address `ue` in force.
    pub fn put_pfcp_downlink_v4(
        &self,
        ue: [u8; 4],
        downlink: &PfcpDownlink,
    ) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        m.enabled()?;
        m.ue_v4
            .insert(ue, downlink, 0)
            .map_err(map_err(names::MAP_PFCP_UE_V4))
    }

    /// Removes the downlink of UE address `ue`; one that is not there is not an error.
    pub fn remove_pfcp_downlink_v4(&self, ue: [u8; 4]) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        match m.ue_v4.remove(&ue) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_PFCP_UE_V4)(e)),
        }
    }

    /// Puts the downlink of UE prefix `prefix`/`len` in force.
    pub fn put_pfcp_downlink_v6(
        &self,
        prefix: [u8; 16],
        len: u32,
        downlink: &PfcpDownlink,
    ) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        m.enabled()?;
        m.ue_v6
            .insert(&Key::new(len, prefix), downlink, 0)
            .map_err(map_err(names::MAP_PFCP_UE_V6))
    }

    /// Removes the downlink of UE prefix `prefix`/`len`; one that is not there is not an
    /// error.
    pub fn remove_pfcp_downlink_v6(&self, prefix: [u8; 16], len: u32) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        match m.ue_v6.remove(&Key::new(len, prefix)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(names::MAP_PFCP_UE_V6)(e)),
        }
    }

    /// The packets and inner IP bytes PDR counter `slot` holds (all CPUs).
    pub fn pdr_counter(&self, slot: u32) -> Result<Counter, DatapathError> {
        let m = self.pfcp()?;
        super::sum(&m.pdr_counters, slot, names::MAP_PDR_COUNTERS)
    }

    /// Zeroes PDR counter `slot` (a slot about to be handed to a new PDR).
    pub fn zero_pdr_counter(&self, slot: u32) -> Result<(), DatapathError> {
        let mut m = self.pfcp()?;
        let n = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        let zeroes =
            PerCpuValues::try_from(vec![Counter::default(); n]).map_err(DatapathError::Io)?;
        m.pdr_counters
            .set(slot, zeroes, 0)
            .map_err(map_err(names::MAP_PDR_COUNTERS))
    }

    /// The counter of PFCP session counter slot `slot` in direction `dir` (all CPUs).
    pub fn pfcp_session_counter(
        &self,
        slot: u32,
        direction: super::Direction,
    ) -> Result<Counter, DatapathError> {
        let w = self.lock_writer()?;
        super::sum(
            &w.session_counters,
            session_counter_slot(slot) * 2 + direction.index(),
            names::MAP_SESSION_COUNTERS,
        )
    }

    /// Zeroes both directions of PFCP session counter slot `slot`.
    pub fn zero_pfcp_session_counter(&self, slot: u32) -> Result<(), DatapathError> {
        let mut w = self.lock_writer()?;
        let n = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        for dir in 0..2 {
            let zeroes =
                PerCpuValues::try_from(vec![Counter::default(); n]).map_err(DatapathError::Io)?;
            w.session_counters
                .set(session_counter_slot(slot) * 2 + dir, zeroes, 0)
                .map_err(map_err(names::MAP_SESSION_COUNTERS))?;
        }
        Ok(())
    }

    /// Waits until every program run that started before the call has finished: after it,
    /// nothing counts into a slot given up before the call, and every packet judged by an
    /// entry removed before the call has been counted.
    pub fn grace_period(&self) {
        wait_for_readers();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_slot_given_back_is_reused_only_after_reclaim() {
        let mut p = SlotPool::new(3);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        p.give_back(a);
        let c = p.take().unwrap();
        assert_ne!(c, a, "reused before a grace period");
        assert_eq!(p.take(), None, "full: 3 slots, one retired");
        assert_eq!(p.retired(), 1);
        assert_eq!(p.reclaim(), vec![a]);
        assert_eq!(p.take(), Some(a));
        assert_eq!(p.in_use(), 3);
        p.give_back(b);
        p.give_back(c);
        assert_eq!(p.in_use(), 1);
    }
}
