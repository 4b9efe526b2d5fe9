//! Per-flow counters: what the fast path counted per flow since the last harvest.
//!
//! A flow is one session's traffic with one peer, keyed by the inner 5-tuple seen from the UE
//! ([`FlowKey`]), so the uplink and the downlink of a connection land in one [`FlowSample`].
//! Bytes are inner IP bytes (the IP total length of the UE's packet, without Ethernet, outer
//! IP/UDP, GTP-U or padding), in both directions.
//!
//! This module owns the flow semantics on both datapaths and the lossless harvest of the
//! kernel's maps:
//! - [`FlowTable`]: the reference (and userspace datapath) accumulation of [`FlowHit`]s that
//!   [`super::model`] reports;
//! - `FlowMaps` and [`FastPath::harvest_flows`]: the XDP side. The programs count each
//!   window's flows into slots of one of two memory-mappable arrays (one per window parity,
//!   found through an LRU index: `ebpf/src/programs/flows.rs`); a harvest moves `FLOW_GEN`
//!   to the next window, waits an RCU grace period (after which no program counts into the
//!   old one), then reads the old window's slots straight from memory ([`flow_slots`]) and
//!   frees them. No packet is lost or counted twice by the harvest; what can be lost are the
//!   packets of new flows a full window refuses ([`FlowLosses`]).
//!
//! It never parses packets (the programs and the model do).

use std::{
    cmp::Reverse,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::maps::{Array, Map, MapData, MapError, MapType, PerCpuArray, PerCpuHashMap, PerCpuValues};
use mecgw_ebpf::{
    Counter, FLOW_FAMILY_V4, FLOW_FAMILY_V6, FlowGenStats, FlowSlot, FlowValue, MAX_FLOWS, NONE,
    names,
};

use super::{
    DatapathError, Direction, FastPath, flow_batch, flow_slots::SlotView, writer::wait_for_readers,
};

/// A flow: a session and the inner 5-tuple seen from the UE (uplink source, downlink
/// destination). Ports are 0 for packets without them (not TCP/UDP/SCTP, or IPv4 fragments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Session id.
    pub session: u32,
    /// The UE's address (for an IPv6 session, the full address inside its prefix).
    pub ue: IpAddr,
    /// The address the UE talks to.
    pub peer: IpAddr,
    /// IP protocol (IPv6: the first Next Header).
    pub protocol: u8,
    pub ue_port: u16,
    pub peer_port: u16,
}

/// What a flow did in one harvest window (the time between two harvests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSample {
    pub key: FlowKey,
    /// Packets and inner IP bytes from the UE.
    pub uplink: Counter,
    /// Packets and inner IP bytes to the UE.
    pub downlink: Counter,
    /// The rule of the flow's last uplink decision in the window; `None` when no rule matched
    /// it or the flow had no uplink packet.
    pub rule: Option<u32>,
}

/// Flow accounting the datapath could not keep, since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLosses {
    /// Packets of new flows a full window refused (it held `max_flows` flows already):
    /// those flows are missing from the window's records. Flows counted before the window
    /// filled up are never dropped.
    pub refused_packets: u64,
    /// Packets not counted because a map refused a lookup it should not have.
    pub failed_packets: u64,
    /// Flows read with a key of no known family (written by no program of this build):
    /// their counts are lost.
    pub unreadable_flows: u64,
}

/// One packet's contribution to its flow, as [`super::model`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHit {
    pub key: FlowKey,
    pub direction: Direction,
    /// Inner IP bytes.
    pub bytes: u64,
    /// Uplink: the rule that decided (`None`: no rule matched). Ignored downlink.
    pub rule: Option<u32>,
}

/// The userspace accumulation of flow counters, with the semantics of the kernel's maps: at
/// most `max_flows` flows per window ([`MAX_FLOWS`] unless set); beyond that, packets of new
/// flows are refused and counted in [`FlowLosses::refused_packets`].
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowSample>,
    max_flows: usize,
    losses: FlowLosses,
}

impl Default for FlowTable {
    fn default() -> Self {
        FlowTable {
            flows: HashMap::new(),
            max_flows: MAX_FLOWS as usize,
            losses: FlowLosses::default(),
        }
    }
}

impl FlowTable {
    /// Flows per window from now on (0: [`MAX_FLOWS`], as `FastPathOptions::max_flows`).
    pub fn set_max_flows(&mut self, max_flows: u32) {
        self.max_flows = match max_flows {
            0 => MAX_FLOWS,
            n => n,
        } as usize;
    }

    /// Adds one packet.
    pub fn record(&mut self, hit: &FlowHit) {
        let full = self.flows.len() >= self.max_flows;
        let sample = match self.flows.get_mut(&hit.key) {
            Some(s) => s,
            None if full => {
                self.losses.refused_packets += 1;
                return;
            }
            None => self.flows.entry(hit.key).or_insert(FlowSample {
                key: hit.key,
                uplink: Counter::default(),
                downlink: Counter::default(),
                rule: None,
            }),
        };
        let one = Counter {
            packets: 1,
            bytes: hit.bytes,
        };
        match hit.direction {
            Direction::Uplink => {
                sample.uplink = sample.uplink.plus(one);
                sample.rule = hit.rule;
            }
            Direction::Downlink => sample.downlink = sample.downlink.plus(one),
        }
    }

    /// Everything counted since the last harvest, in no particular order; the table starts
    /// empty again.
    pub fn harvest(&mut self) -> Vec<FlowSample> {
        self.flows.drain().map(|(_, s)| s).collect()
    }

    /// What could not be kept since the table was created.
    pub fn losses(&self) -> FlowLosses {
        self.losses
    }
}

/// The kernel key with its typed form.
fn key_from_raw(k: &mecgw_ebpf::FlowKey) -> Option<FlowKey> {
    let addr = |b: &[u8; 16]| match k.family {
        FLOW_FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        FLOW_FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    };
    Some(FlowKey {
        session: k.session,
        ue: addr(&k.ue)?,
        peer: addr(&k.peer)?,
        protocol: k.protocol,
        ue_port: k.ue_port,
        peer_port: k.peer_port,
    })
}

/// Adds up the CPUs' values of one flow.
fn sample_from_cpus<'a>(
    key: FlowKey,
    per_cpu: impl IntoIterator<Item = &'a FlowValue>,
) -> FlowSample {
    let mut s = FlowSample {
        key,
        uplink: Counter::default(),
        downlink: Counter::default(),
        rule: None,
    };
    // The rule of the CPU with most uplink packets (then the lowest rule id): deterministic,
    // and the only choice when CPUs disagree, as the programs keep no timestamps.
    let mut best: Option<(u64, Reverse<u32>)> = None;
    for v in per_cpu {
        s.uplink = s.uplink.plus(v.uplink);
        s.downlink = s.downlink.plus(v.downlink);
        if v.uplink.packets > 0 {
            let rank = (v.uplink.packets, Reverse(v.rule));
            if best.is_none_or(|b| rank > b) {
                best = Some(rank);
                s.rule = (v.rule != NONE).then_some(v.rule);
            }
        }
    }
    s
}

/// A flow's slots one after another: the later one's rule when it saw uplink packets.
fn then(earlier: FlowSample, later: &FlowSample) -> FlowSample {
    FlowSample {
        key: earlier.key,
        uplink: earlier.uplink.plus(later.uplink),
        downlink: earlier.downlink.plus(later.downlink),
        rule: if later.uplink.packets > 0 {
            later.rule
        } else {
            earlier.rule
        },
    }
}

/// One harvest's samples, built as the slots are read, one per flow in the order the flows
/// first appeared in the window.
///
/// A flow usually has one slot. Two CPUs seeing its first packet at once, or the index
/// dropping a live flow's entry, give it more, which must be merged. Merging through a hash
/// map of a million keys costs hundreds of nanoseconds per slot in cache and TLB misses, so
/// instead each slot gets a tag, 39 bits of its key's hash ([`KeyHash`]) above 25 bits of
/// its index; the tags are sorted (≈ 20 ms for a million), and only slots whose tags share
/// the hash bits have their keys compared.
struct Window {
    samples: Vec<FlowSample>,
    tags: Vec<u64>,
    hasher: KeyHash,
    /// Slots whose key has no known family, or of another window: lost, and counted.
    unreadable: u64,
}

/// A hash of a kernel flow key: its 44 bytes as words, folded by multiplications with a
/// per-process random seed, a few nanoseconds a key. Keys come from traffic: without the
/// seed a sender cannot aim flows at one hash, and a run of equal hashes longer than
/// [`SHORT_RUN`] is merged through a map, so even then the merge stays linear.
struct KeyHash {
    seed: u64,
}

impl KeyHash {
    fn new() -> KeyHash {
        KeyHash {
            seed: rand::random::<u64>() | 1,
        }
    }

    fn hash(&self, k: &mecgw_ebpf::FlowKey) -> u64 {
        const M: u64 = 0x9E37_79B9_7F4A_7C15;
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let words = [
            u64::from(k.session) | (u64::from(k.ue_port) << 32) | (u64::from(k.peer_port) << 48),
            word(&k.ue[..8]),
            word(&k.ue[8..]),
            word(&k.peer[..8]),
            word(&k.peer[8..]),
            u64::from(k.protocol) | (u64::from(k.family) << 8),
        ];
        let mut h = self.seed;
        for w in words {
            let m = u128::from(h ^ w) * u128::from(M ^ self.seed);
            h = (m as u64) ^ ((m >> 64) as u64);
        }
        h
    }
}

/// Runs of equal hash bits up to this long are merged by comparing keys pairwise.
const SHORT_RUN: usize = 16;

/// Bits of a tag that hold the sample's index: room for both halves at the largest
/// `max_flows` (2 × 2^24).
const TAG_INDEX_BITS: u32 = 25;
const TAG_INDEX: u64 = (1 << TAG_INDEX_BITS) - 1;

impl Window {
    fn new() -> Window {
        Window {
            samples: Vec::new(),
            tags: Vec::new(),
            hasher: KeyHash::new(),
            unreadable: 0,
        }
    }

    /// Where the window stands, to [`Window::rewind`] to.
    fn mark(&self) -> (usize, u64) {
        (self.samples.len(), self.unreadable)
    }

    /// Forgets what was read since `mark` (a half that was not freed, to be read again).
    fn rewind(&mut self, (samples, unreadable): (usize, u64)) {
        self.samples.truncate(samples);
        // Tags are pushed with their samples, in order: one per sample.
        self.tags.truncate(samples);
        self.unreadable = unreadable;
    }

    /// Reads the first `taken` slots of `view` that window `epoch` took.
    fn read(&mut self, view: &SlotView, taken: u64, epoch: u32) {
        let n = usize::try_from(taken)
            .unwrap_or(usize::MAX)
            .min(view.entries());
        self.samples.reserve(n);
        self.tags.reserve(n);
        for i in 0..n {
            match view.get(i) {
                Some(slot) if slot.epoch == epoch => self.slot(&slot),
                _ => self.unreadable += 1,
            }
        }
    }

    fn slot(&mut self, slot: &FlowSlot) {
        let Some(key) = key_from_raw(&slot.key) else {
            self.unreadable += 1;
            return;
        };
        let index = self.samples.len() as u64;
        if index > TAG_INDEX {
            // Past any window this build can configure: not counted, never mis-merged.
            self.unreadable += 1;
            return;
        }
        let hash = self.hasher.hash(&slot.key);
        self.tags.push((hash & !TAG_INDEX) | index);
        self.samples.push(FlowSample {
            key,
            uplink: slot.uplink,
            downlink: slot.downlink,
            rule: (slot.rule != NONE).then_some(slot.rule),
        });
    }

    /// The samples, each flow's slots merged into its first, in slot order.
    fn finish(mut self) -> (Vec<FlowSample>, u64) {
        self.tags.sort_unstable();
        let mut merged_away = vec![];
        let mut run = 0;
        while run < self.tags.len() {
            let hash = self.tags[run] & !TAG_INDEX;
            let mut end = run + 1;
            while end < self.tags.len() && self.tags[end] & !TAG_INDEX == hash {
                end += 1;
            }
            // Within a run, ascending index = slot order: merge each into its key's first.
            let mut firsts: HashMap<FlowKey, usize> = HashMap::new();
            for j in run + 1..end {
                let later = (self.tags[j] & TAG_INDEX) as usize;
                let key = self.samples[later].key;
                let first = if end - run <= SHORT_RUN {
                    self.tags[run..j]
                        .iter()
                        .map(|t| (t & TAG_INDEX) as usize)
                        .find(|&i| self.samples[i].key == key)
                } else {
                    if firsts.is_empty() {
                        let i = (self.tags[run] & TAG_INDEX) as usize;
                        firsts.insert(self.samples[i].key, i);
                    }
                    let first = *firsts.entry(key).or_insert(later);
                    (first != later).then_some(first)
                };
                if let Some(first) = first {
                    self.samples[first] = then(self.samples[first], &self.samples[later]);
                    merged_away.push(later);
                }
            }
            run = end;
        }
        if !merged_away.is_empty() {
            merged_away.sort_unstable();
            let mut i = 0;
            let mut next = merged_away.iter().peekable();
            self.samples.retain(|_| {
                let keep = next.next_if_eq(&&i).is_none();
                i += 1;
                keep
            });
        }
        (self.samples, self.unreadable)
    }
}

/// The kernel's flow maps, owned by the harvester.
pub(super) struct FlowMaps {
    /// The two halves, one per window parity.
    slots: [SlotView; 2],
    /// The window the programs count into.
    epoch: u32,
    /// A window moved away from whose slots are still unread (a harvest failed after the
    /// move): read first by the next harvest, before its half is used again.
    unread: Option<u32>,
    gen_map: Array<MapData, u32>,
    alloc: Array<MapData, u64>,
    stats: PerCpuArray<MapData, FlowGenStats>,
    losses: FlowLosses,
    /// What a previous instance's programs counted and nobody harvested
    /// ([`FastPath::adopt_flows`]): returned with the next harvest.
    carried: HashMap<FlowKey, FlowSample>,
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn view(map: Map, name: &'static str) -> Result<SlotView, DatapathError> {
    let data = match map {
        Map::Array(d) => d,
        _ => return Err(map_err(name)(MapError::InvalidMapType { map_type: 0 })),
    };
    SlotView::new(data).map_err(DatapathError::Io)
}

impl FlowMaps {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<FlowMaps, DatapathError> {
        let half = |ebpf: &mut aya::Ebpf, name: &'static str| {
            let map = ebpf
                .take_map(name)
                .ok_or(DatapathError::Missing { what: "map", name })?;
            view(map, name)
        };
        let gen_map: Array<MapData, u32> = super::take_map(ebpf, names::MAP_FLOW_GEN)?;
        Ok(FlowMaps {
            slots: [
                half(ebpf, names::MAP_FLOW_SLOTS[0])?,
                half(ebpf, names::MAP_FLOW_SLOTS[1])?,
            ],
            epoch: gen_map.get(&0, 0).map_err(map_err(names::MAP_FLOW_GEN))?,
            unread: None,
            gen_map,
            alloc: super::take_map(ebpf, names::MAP_FLOW_ALLOC)?,
            stats: super::take_map(ebpf, names::MAP_FLOW_STATS)?,
            losses: FlowLosses::default(),
            carried: HashMap::new(),
        })
    }

    /// Reads window `epoch`'s half (no program counts into it any more) into `window`,
    /// then frees the half for the window two on and takes its loss counts.
    ///
    /// What it leaves in `window` has been freed in the kernel and must be delivered; if it
    /// fails before the half is freed, it leaves nothing (the half is read again later).
    fn drain(&mut self, epoch: u32, window: &mut Window) -> Result<(), DatapathError> {
        let half = epoch & 1;
        let stats_err = map_err(names::MAP_FLOW_STATS);
        let stats = self.stats.get(&half, 0).map_err(&stats_err)?;
        read_and_free(&mut self.alloc, &self.slots, epoch, window)?;
        self.losses.refused_packets += stats.iter().map(|s| s.refused).sum::<u64>();
        self.losses.failed_packets += stats.iter().map(|s| s.failed).sum::<u64>();
        let cpus = stats.iter().count();
        let zero = PerCpuValues::try_from(vec![FlowGenStats::default(); cpus])
            .map_err(DatapathError::Io)
            .and_then(|zero| self.stats.set(half, zero, 0).map_err(&stats_err));
        if let Err(e) = zero {
            // The slots are read and freed; only the loss counts stay, and the next
            // harvest of this half counts them once more.
            tracing::warn!(error = %e, "a flow window's loss counts could not be reset");
        }
        Ok(())
    }

    /// Moves the programs to the next window, waits until none counts into the old one,
    /// then reads its slots from memory and frees them.
    ///
    /// If a step fails, what was read and freed comes with the next harvest, and a window
    /// not yet freed is read by it before it moves on (its half is not used again until
    /// then), so nothing is lost.
    fn harvest(&mut self) -> Result<Vec<FlowSample>, DatapathError> {
        let mut window = Window::new();
        let result = self.harvest_into(&mut window);
        let (mut samples, unreadable) = window.finish();
        self.losses.unreadable_flows += unreadable;
        if let Err(e) = result {
            for s in samples {
                self.carry(s);
            }
            return Err(e);
        }
        if !self.carried.is_empty() {
            let mut carried = std::mem::take(&mut self.carried);
            for s in &mut samples {
                if let Some(earlier) = carried.remove(&s.key) {
                    *s = then(earlier, s);
                }
            }
            samples.extend(carried.into_values());
        }
        Ok(samples)
    }

    fn harvest_into(&mut self, window: &mut Window) -> Result<(), DatapathError> {
        if let Some(unread) = self.unread {
            self.drain(unread, window)?;
            self.unread = None;
        }
        let old = self.epoch;
        let next = old.wrapping_add(1);
        self.gen_map
            .set(0, next, 0)
            .map_err(map_err(names::MAP_FLOW_GEN))?;
        self.epoch = next;
        self.unread = Some(old);
        wait_for_readers();
        self.drain(old, window)?;
        self.unread = None;
        Ok(())
    }

    /// Takes over what a previous instance pinned in `instance`: its last window's slots
    /// (and one before it, if that one's harvest did not finish), or an older build's
    /// per-CPU flow maps. Whatever is read is freed in the previous instance's maps at once,
    /// so that nothing could ever be read from them twice.
    fn adopt(&mut self, instance: &Path) -> Result<AdoptedFlows, DatapathError> {
        let mut adopted = AdoptedFlows::default();
        let mut window = Window::new();
        let mut drained = Ok(());
        if instance.join(names::MAP_FLOW_SLOTS[0]).exists() {
            match PinnedWindows::open(instance) {
                Ok(mut pinned) => drained = pinned.drain(&mut window, &mut self.losses),
                Err(e) => {
                    tracing::warn!(instance = %instance.display(), error = %e, "a previous instance's flow counters cannot be read; they are lost");
                    adopted.unreadable_maps += 1;
                }
            }
        }
        // What was read has been freed in the previous instance's maps: kept even if a
        // later step failed.
        let (samples, unreadable) = window.finish();
        adopted.unreadable_flows += unreadable;
        adopted.flows += samples.len() as u64;
        for s in samples {
            self.carry(s);
        }
        drained?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        for name in names::MAP_FLOWS_LEGACY {
            let path = instance.join(name);
            if !path.exists() {
                continue;
            }
            let map = match open_legacy_flows(&path) {
                Ok(map) => map,
                Err(e) => {
                    // Another build's layout: what it counted cannot be read.
                    tracing::warn!(map = %path.display(), error = %e, "a previous instance's flow counters cannot be read; they are lost");
                    adopted.unreadable_maps += 1;
                    continue;
                }
            };
            let mut read = Vec::new();
            let drained =
                map.drain_into(cpus, |key, values| read.push(sample_from_cpus(key, values)));
            adopted.flows += drained.read;
            adopted.unreadable_flows += drained.unreadable;
            for s in read {
                self.carry(s);
            }
            if let Some(e) = drained.failed {
                return Err(DatapathError::Map {
                    name,
                    source: MapError::SyscallError(aya::sys::SyscallError {
                        call: "bpf_map_lookup_and_delete_batch",
                        io_error: e,
                    }),
                });
            }
        }
        Ok(adopted)
    }

    fn carry(&mut self, s: FlowSample) {
        let merged = match self.carried.remove(&s.key) {
            Some(earlier) => then(earlier, &s),
            None => s,
        };
        self.carried.insert(merged.key, merged);
    }
}

/// Reads the slots window `epoch` took from its half of `slots` into `window`, then frees
/// the half (its slot counter in `alloc` back to zero). If freeing fails, `window` forgets
/// what it read: the half is read again later.
fn read_and_free(
    alloc: &mut Array<MapData, u64>,
    slots: &[SlotView; 2],
    epoch: u32,
    window: &mut Window,
) -> Result<(), DatapathError> {
    let half = epoch & 1;
    let err = map_err(names::MAP_FLOW_ALLOC);
    let taken = alloc.get(&half, 0).map_err(&err)?;
    let mark = window.mark();
    window.read(&slots[half as usize], taken, epoch);
    if let Err(e) = alloc.set(half, 0, 0) {
        window.rewind(mark);
        return Err(err(e));
    }
    Ok(())
}

/// A previous instance's pinned flow windows.
struct PinnedWindows {
    slots: [SlotView; 2],
    epoch: u32,
    alloc: Array<MapData, u64>,
    stats: Option<PerCpuArray<MapData, FlowGenStats>>,
}

impl PinnedWindows {
    fn open(instance: &Path) -> Result<PinnedWindows, Box<dyn std::error::Error + Send + Sync>> {
        let pinned = |name: &str| MapData::from_pin(instance.join(name));
        let gen_map: Array<MapData, u32> =
            Array::try_from(Map::Array(pinned(names::MAP_FLOW_GEN)?))?;
        let half = |name: &str| -> Result<SlotView, Box<dyn std::error::Error + Send + Sync>> {
            Ok(SlotView::new(pinned(name)?)?)
        };
        Ok(PinnedWindows {
            slots: [
                half(names::MAP_FLOW_SLOTS[0])?,
                half(names::MAP_FLOW_SLOTS[1])?,
            ],
            epoch: gen_map.get(&0, 0)?,
            alloc: Array::try_from(Map::Array(pinned(names::MAP_FLOW_ALLOC)?))?,
            stats: pinned(names::MAP_FLOW_STATS)
                .ok()
                .and_then(|d| PerCpuArray::try_from(Map::PerCpuArray(d)).ok()),
        })
    }

    /// Reads the window the previous programs counted into last and the one before it
    /// (unread only if that harvest did not finish), oldest first, freeing each half. What
    /// it leaves in `window` has been freed (as [`FlowMaps::drain`]).
    fn drain(&mut self, window: &mut Window, losses: &mut FlowLosses) -> Result<(), DatapathError> {
        for epoch in [self.epoch.wrapping_sub(1), self.epoch] {
            let half = epoch & 1;
            read_and_free(&mut self.alloc, &self.slots, epoch, window)?;
            if let Some(stats) = &mut self.stats {
                let stats_err = map_err(names::MAP_FLOW_STATS);
                let counts = stats.get(&half, 0).map_err(&stats_err)?;
                let cpus = counts.iter().count();
                losses.refused_packets += counts.iter().map(|s| s.refused).sum::<u64>();
                losses.failed_packets += counts.iter().map(|s| s.failed).sum::<u64>();
                let zero = PerCpuValues::try_from(vec![FlowGenStats::default(); cpus])
                    .map_err(DatapathError::Io)?;
                stats.set(half, zero, 0).map_err(&stats_err)?;
            }
        }
        Ok(())
    }
}

type LegacyFlows = PerCpuHashMap<MapData, mecgw_ebpf::FlowKey, FlowValue>;

/// A flow map of an older build (per-CPU LRU hash, [`names::MAP_FLOWS_LEGACY`]) of the
/// layout this build knows (checked by aya against the kernel's sizes), with a descriptor
/// of its own for the batch calls aya does not make ([`flow_batch`]).
struct LegacyFlowMap {
    _typed: LegacyFlows,
    fd: OwnedFd,
}

impl LegacyFlowMap {
    fn new(map: Map) -> Result<LegacyFlowMap, MapError> {
        let data = match &map {
            Map::PerCpuLruHashMap(d) | Map::PerCpuHashMap(d) => d,
            _ => return Err(MapError::InvalidMapType { map_type: 0 }),
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error,
            })
        })?;
        Ok(LegacyFlowMap {
            _typed: LegacyFlows::try_from(map)?,
            fd,
        })
    }

    /// Reads and deletes every entry, handing each flow's per-CPU values to `into`. Returns
    /// the entries handed over and those deleted with a key of no known family (lost), also
    /// after an error (what was read before it has been handed over).
    fn drain_into(&self, cpus: usize, mut into: impl FnMut(FlowKey, &[FlowValue])) -> Drained {
        let mut d = Drained::default();
        let result = flow_batch::drain(self.fd.as_fd(), cpus, |raw, values| {
            // Only the programs write keys, always of a known family.
            match key_from_raw(raw) {
                Some(key) => {
                    into(key, values);
                    d.read += 1;
                }
                None => d.unreadable += 1,
            }
        });
        d.failed = result.err();
        d
    }
}

/// What [`LegacyFlowMap::drain_into`] did.
#[derive(Default)]
struct Drained {
    read: u64,
    unreadable: u64,
    failed: Option<std::io::Error>,
}

/// Opens an older build's pinned flow map, checking that it is a per-CPU hash with the key
/// and value layout this build knows (aya checks the sizes against the kernel's).
fn open_legacy_flows(
    path: &Path,
) -> Result<LegacyFlowMap, Box<dyn std::error::Error + Send + Sync>> {
    let data = MapData::from_pin(path)?;
    let map = match data.info()?.map_type()? {
        MapType::LruPerCpuHash => Map::PerCpuLruHashMap(data),
        MapType::PerCpuHash => Map::PerCpuHashMap(data),
        other => return Err(format!("a {other:?} map, not per-CPU flow counters").into()),
    };
    Ok(LegacyFlowMap::new(map)?)
}

/// What [`FastPath::adopt_flows`] took over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdoptedFlows {
    /// Flows (per generation map) read; they come with the next harvest.
    pub flows: u64,
    /// Entries with a key this build cannot read (lost).
    pub unreadable_flows: u64,
    /// Maps of another layout (their flows are lost).
    pub unreadable_maps: u64,
}

impl FastPath {
    /// Everything the programs counted per flow since the last harvest (or the load), one
    /// sample per flow in the order the flows first appeared; every packet counted is in
    /// exactly one harvest.
    ///
    /// Empty when the fast path was loaded without flow accounting. Takes one RCU grace
    /// period (`membarrier`, milliseconds) plus a read of the window's slots from memory
    /// and a few map system calls; calls are serialised.
    pub fn harvest_flows(&self) -> Result<Vec<FlowSample>, DatapathError> {
        self.lock_flows()?.harvest()
    }

    /// Takes over what a previous instance's programs counted per flow and nobody harvested:
    /// its flow maps, pinned in `instance` ([`FastPath::load_pinned`]), are read and emptied,
    /// and their flows come with the next [`FastPath::harvest_flows`], merged with this
    /// instance's. Call once no program counts into them any more (every interface runs this
    /// fast path's programs and an RCU grace period has passed). An older build's per-CPU
    /// flow maps are read too; maps of a layout this build does not know cannot be: counted
    /// in [`AdoptedFlows`], logged.
    pub fn adopt_flows(&self, instance: &Path) -> Result<AdoptedFlows, DatapathError> {
        self.lock_flows()?.adopt(instance)
    }

    /// Flow records lost since the load (counted at each harvest).
    pub fn flow_losses(&self) -> Result<FlowLosses, DatapathError> {
        Ok(self.lock_flows()?.losses)
    }

    /// Whether the programs were loaded with flow accounting.
    pub fn flow_accounting(&self) -> bool {
        self.options.flow_accounting
    }

    fn lock_flows(&self) -> Result<std::sync::MutexGuard<'_, FlowMaps>, DatapathError> {
        self.flows
            .lock()
            .map_err(|_| DatapathError::Poisoned("a flow harvest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            session: 1,
            ue: "10.0.0.1".parse().unwrap(),
            peer: "192.0.2.1".parse().unwrap(),
            protocol: 17,
            ue_port: port,
            peer_port: 53,
        }
    }

    fn hit(port: u16, direction: Direction, bytes: u64, rule: Option<u32>) -> FlowHit {
        FlowHit {
            key: key(port),
            direction,
            bytes,
            rule,
        }
    }

    #[test]
    fn both_directions_land_in_one_sample_and_the_last_uplink_rule_wins() {
        let mut t = FlowTable::default();
        t.record(&hit(1, Direction::Uplink, 100, Some(7)));
        t.record(&hit(1, Direction::Downlink, 60, None));
        t.record(&hit(1, Direction::Uplink, 40, None));
        t.record(&hit(2, Direction::Downlink, 10, None));
        let mut got = t.harvest();
        got.sort_unstable_by_key(|s| s.key);
        assert_eq!(
            got,
            vec![
                FlowSample {
                    key: key(1),
                    uplink: Counter {
                        packets: 2,
                        bytes: 140
                    },
                    downlink: Counter {
                        packets: 1,
                        bytes: 60
                    },
                    rule: None,
                },
                FlowSample {
                    key: key(2),
                    uplink: Counter::default(),
                    downlink: Counter {
                        packets: 1,
                        bytes: 10
                    },
                    rule: None,
                },
            ]
        );
        assert!(t.harvest().is_empty(), "a harvest empties the table");
    }

    #[test]
    fn a_table_holds_the_flows_it_is_given() {
        let mut t = FlowTable::default();
        t.set_max_flows(2);
        for port in 1..=3 {
            t.record(&hit(port, Direction::Uplink, 1, None));
        }
        assert_eq!(t.harvest().len(), 2);
        assert_eq!(t.losses().refused_packets, 1);
    }

    #[test]
    fn a_full_table_refuses_new_flows_and_counts_them() {
        let mut t = FlowTable::default();
        for i in 0..MAX_FLOWS {
            let mut h = hit(0, Direction::Uplink, 1, None);
            h.key.session = i;
            t.record(&h);
        }
        t.record(&hit(9, Direction::Uplink, 1, None));
        t.record(&hit(9, Direction::Uplink, 1, None));
        let mut known = hit(0, Direction::Uplink, 1, None);
        known.key.session = 5;
        t.record(&known);
        assert_eq!(t.losses().refused_packets, 2);
        let got = t.harvest();
        assert_eq!(got.len(), MAX_FLOWS as usize);
        let five = got.iter().find(|s| s.key.session == 5).unwrap();
        assert_eq!(five.uplink.packets, 2);
    }

    fn raw_slot(port: u16, epoch: u32, up: u64, down: u64, rule: u32) -> FlowSlot {
        let mut key = mecgw_ebpf::FlowKey {
            session: 1,
            ue_port: port,
            peer_port: 53,
            protocol: 17,
            family: FLOW_FAMILY_V4,
            ..Default::default()
        };
        key.ue[..4].copy_from_slice(&[10, 0, 0, 1]);
        key.peer[..4].copy_from_slice(&[192, 0, 2, 1]);
        FlowSlot {
            key,
            epoch,
            uplink: tens(up),
            downlink: tens(down),
            rule,
            pad: 0,
        }
    }

    /// `n` packets of 10 bytes.
    fn tens(n: u64) -> Counter {
        Counter {
            packets: n,
            bytes: n * 10,
        }
    }

    #[test]
    fn a_flows_slots_are_merged_in_order_and_the_later_uplink_gives_the_rule() {
        let mut w = Window::new();
        w.slot(&raw_slot(1, 7, 2, 0, 3));
        w.slot(&raw_slot(2, 7, 0, 1, NONE));
        // The same flow again (two CPUs took a slot for its first packet, or the index
        // dropped its entry): summed, and its rule is the later slot's.
        w.slot(&raw_slot(1, 7, 1, 4, 8));
        // Downlink only: the earlier rule stays.
        w.slot(&raw_slot(1, 7, 0, 1, NONE));
        let mut unknown = raw_slot(3, 7, 1, 0, NONE);
        unknown.key.family = 9;
        w.slot(&unknown);
        let (samples, unreadable) = w.finish();
        assert_eq!(unreadable, 1);
        assert_eq!(samples.len(), 2);
        let s = samples[0];
        assert_eq!(s.key, key(1));
        assert_eq!((s.uplink, s.downlink, s.rule), (tens(3), tens(5), Some(8)));
        assert_eq!(samples[1].key, key(2));
        assert_eq!(samples[1].rule, None);
    }

    #[test]
    fn a_rewound_window_forgets_what_it_read_since_the_mark() {
        let mut w = Window::new();
        w.slot(&raw_slot(1, 1, 1, 0, NONE));
        let mark = w.mark();
        w.slot(&raw_slot(1, 1, 1, 0, NONE));
        w.slot(&raw_slot(2, 1, 1, 0, NONE));
        let mut unknown = raw_slot(3, 1, 1, 0, NONE);
        unknown.key.family = 9;
        w.slot(&unknown);
        w.rewind(mark);
        let (samples, unreadable) = w.finish();
        assert_eq!(unreadable, 0);
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].key, samples[0].uplink.packets), (key(1), 1));
    }

    #[test]
    fn slots_whose_hashes_collide_are_merged_only_by_equal_keys_in_short_and_long_runs() {
        for flows in [3u16, 40] {
            let mut w = Window::new();
            // Every flow twice (first and second round), plus one more slot of flow 0.
            for round in 0..2u64 {
                for port in 0..flows {
                    w.slot(&raw_slot(
                        port,
                        1,
                        1 + round,
                        0,
                        u32::from(port) + 100 * round as u32,
                    ));
                }
            }
            w.slot(&raw_slot(0, 1, 0, 5, NONE));
            // One hash for all: the merge must tell the keys apart by comparing them.
            for (i, t) in w.tags.iter_mut().enumerate() {
                *t = (0xABCD << TAG_INDEX_BITS) | i as u64;
            }
            let (samples, _) = w.finish();
            assert_eq!(samples.len(), usize::from(flows), "{flows} flows");
            for (port, s) in samples.iter().enumerate() {
                assert_eq!(s.key, key(port as u16), "first-appearance order");
                assert_eq!(s.uplink.packets, 3, "{s:?}");
                assert_eq!(s.rule, Some(port as u32 + 100), "the later slot's rule");
            }
            assert_eq!(samples[0].downlink.packets, 5);
        }
    }

    #[test]
    fn cpus_are_summed_and_the_busiest_cpu_gives_the_rule() {
        let v = |up: u64, down: u64, rule: u32| FlowValue {
            uplink: tens(up),
            downlink: tens(down),
            rule,
            pad: 0,
        };
        let cpus = [v(1, 0, 3), v(5, 2, 4), v(0, 7, NONE), v(5, 0, 2)];
        let s = sample_from_cpus(key(1), &cpus);
        assert_eq!(
            s.uplink,
            Counter {
                packets: 11,
                bytes: 110
            }
        );
        assert_eq!(
            s.downlink,
            Counter {
                packets: 9,
                bytes: 90
            }
        );
        assert_eq!(
            s.rule,
            Some(2),
            "5 packets each on rules 4 and 2: the lower id"
        );
        assert_eq!(
            sample_from_cpus(key(1), &[v(0, 3, NONE), v(2, 0, NONE)]).rule,
            None
        );
    }
}
