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
//! - `FlowMaps` and [`FastPath::harvest_flows`]: the XDP side. The programs count into one
//!   of two generations of a per-CPU LRU hash; a harvest flips `FLOW_GEN`, waits an RCU
//!   grace period (after which no program counts into the old generation), then reads and
//!   deletes every entry of the old generation. No packet is lost or counted twice by the
//!   harvest; what can be lost is an entry the LRU evicts when a generation overflows
//!   ([`FlowLosses`]).
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
    Counter, FLOW_FAMILY_V4, FLOW_FAMILY_V6, FlowGenStats, FlowValue, MAX_FLOWS, NONE, names,
};

use super::{DatapathError, Direction, FastPath, flow_batch, writer::wait_for_readers};

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
    /// it or the flow had no uplink packet. If CPUs disagree (the rules changed during the
    /// window), the rule of the CPU that carried most of the flow's uplink packets.
    pub rule: Option<u32>,
}

/// Flow records the datapath could not keep, since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLosses {
    /// Flows dropped from a full flow map with whatever they had counted (kernel: LRU
    /// evictions, measured as entries created minus entries harvested; userspace datapath:
    /// packets of new flows refused by a full table).
    pub evicted_flows: u64,
    /// Packets not counted because the map refused an update (kernel: insert and lookup both
    /// failed, e.g. another BPF program on the same CPU held the bucket).
    pub failed_packets: u64,
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

/// The userspace accumulation of flow counters, with the semantics of the kernel's map: at
/// most [`MAX_FLOWS`] flows per window (beyond that, packets of new flows are refused and
/// counted in [`FlowLosses::evicted_flows`]; the kernel evicts old ones instead).
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowSample>,
    losses: FlowLosses,
}

impl FlowTable {
    /// Adds one packet.
    pub fn record(&mut self, hit: &FlowHit) {
        let full = self.flows.len() >= MAX_FLOWS as usize;
        let sample = match self.flows.get_mut(&hit.key) {
            Some(s) => s,
            None if full => {
                self.losses.evicted_flows += 1;
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

    /// Everything counted since the last harvest, sorted by key; the table starts empty again.
    pub fn harvest(&mut self) -> Vec<FlowSample> {
        let mut out: Vec<FlowSample> = self.flows.drain().map(|(_, s)| s).collect();
        out.sort_unstable_by_key(|s| s.key);
        out
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

/// A sample as the values of one CPU, to be summed again with others (only its rule's
/// weight changes: it counts as all its uplink packets on one CPU).
fn as_value(s: &FlowSample) -> FlowValue {
    FlowValue {
        uplink: s.uplink,
        downlink: s.downlink,
        rule: s.rule.unwrap_or(NONE),
        pad: 0,
    }
}

type RawFlows = PerCpuHashMap<MapData, mecgw_ebpf::FlowKey, FlowValue>;

/// A flow map of this build's layout (checked by aya against the kernel's sizes), with a
/// descriptor of its own for the batch calls aya does not make ([`flow_batch`]).
struct FlowMap {
    _typed: RawFlows,
    fd: OwnedFd,
}

impl FlowMap {
    fn new(map: Map) -> Result<FlowMap, MapError> {
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
        Ok(FlowMap {
            _typed: RawFlows::try_from(map)?,
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

/// What [`FlowMap::drain_into`] did.
#[derive(Default)]
struct Drained {
    read: u64,
    unreadable: u64,
    failed: Option<std::io::Error>,
}

/// The kernel's flow maps, owned by the harvester.
pub(super) struct FlowMaps {
    generations: [FlowMap; 2],
    /// Entries of each generation read by a harvest that then failed: they were returned
    /// later (from `carried`), so the eviction count must not take them for lost.
    read_early: [u64; 2],
    /// The generation the programs count into.
    active: u32,
    active_map: Array<MapData, u32>,
    stats: PerCpuArray<MapData, FlowGenStats>,
    losses: FlowLosses,
    /// What a previous instance's programs counted and nobody harvested
    /// ([`FastPath::adopt_flows`]), per CPU: returned with the next harvest.
    carried: HashMap<FlowKey, Vec<FlowValue>>,
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl FlowMaps {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<FlowMaps, DatapathError> {
        let generation = |ebpf: &mut aya::Ebpf, name: &'static str| {
            let map = ebpf
                .take_map(name)
                .ok_or(DatapathError::Missing { what: "map", name })?;
            FlowMap::new(map).map_err(map_err(name))
        };
        Ok(FlowMaps {
            generations: [
                generation(ebpf, names::MAP_FLOWS[0])?,
                generation(ebpf, names::MAP_FLOWS[1])?,
            ],
            read_early: [0; 2],
            active: 0,
            active_map: super::take_map(ebpf, names::MAP_FLOW_GEN)?,
            stats: super::take_map(ebpf, names::MAP_FLOW_STATS)?,
            losses: FlowLosses::default(),
            carried: HashMap::new(),
        })
    }

    /// Flips the generation, waits until no program counts into the old one, then reads and
    /// empties it, thousands of entries per system call.
    ///
    /// If a read fails, what was read is kept and returned by the next harvest, and the
    /// rest stays in the old generation, which a later harvest (two flips on) empties: so
    /// nothing is lost.
    fn harvest(&mut self) -> Result<Vec<FlowSample>, DatapathError> {
        let old = self.active;
        let next = 1 - old;
        self.active_map
            .set(0, next, 0)
            .map_err(map_err(names::MAP_FLOW_GEN))?;
        self.active = next;
        wait_for_readers();
        let name = names::MAP_FLOWS[old as usize];
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        // A generation holds each key once: one sample per entry, summed over its CPUs as
        // it is read, with no map per flow. Only what was carried over (adopted, or read by
        // a harvest that failed) may share a key with an entry, and is merged below.
        let mut samples: Vec<FlowSample> = Vec::new();
        // An unreadable key's counts are lost: it counts with the evictions (created - read).
        let Drained { read, failed, .. } = self.generations[old as usize]
            .drain_into(cpus, |key, values| {
                samples.push(sample_from_cpus(key, values))
            });
        if let Some(e) = failed {
            self.read_early[old as usize] += read;
            // Kept as one CPU's values, as adopted ones are, for the next harvest.
            for s in &samples {
                self.carried.entry(s.key).or_default().push(as_value(s));
            }
            return Err(DatapathError::Map {
                name,
                source: MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_and_delete_batch",
                    io_error: e,
                }),
            });
        }
        let read = read + std::mem::take(&mut self.read_early[old as usize]);
        if !self.carried.is_empty() {
            let mut carried = std::mem::take(&mut self.carried);
            for s in &mut samples {
                if let Some(mut values) = carried.remove(&s.key) {
                    values.push(as_value(s));
                    *s = sample_from_cpus(s.key, &values);
                }
            }
            samples.extend(
                carried
                    .iter()
                    .map(|(key, values)| sample_from_cpus(*key, values)),
            );
        }
        let stats_err = map_err(names::MAP_FLOW_STATS);
        let stats = self.stats.get(&old, 0).map_err(&stats_err)?;
        let created: u64 = stats.iter().map(|s| s.created).sum();
        let failed: u64 = stats.iter().map(|s| s.failed).sum();
        let zero = PerCpuValues::try_from(vec![FlowGenStats::default(); cpus])
            .map_err(DatapathError::Io)?;
        self.stats.set(old, zero, 0).map_err(&stats_err)?;
        self.losses.evicted_flows += created.saturating_sub(read);
        self.losses.failed_packets += failed;
        samples.sort_unstable_by_key(|s| s.key);
        Ok(samples)
    }

    /// Reads and empties the flow maps a previous instance pinned in `instance`.
    fn adopt(&mut self, instance: &Path) -> Result<AdoptedFlows, DatapathError> {
        let mut adopted = AdoptedFlows::default();
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        for name in names::MAP_FLOWS {
            let path = instance.join(name);
            if !path.exists() {
                continue;
            }
            let map = match open_pinned_flows(&path) {
                Ok(map) => map,
                Err(e) => {
                    // Another build's layout: what it counted cannot be read.
                    tracing::warn!(map = %path.display(), error = %e, "a previous instance's flow counters cannot be read; they are lost");
                    adopted.unreadable_maps += 1;
                    continue;
                }
            };
            // Emptied as it is read, so that nothing could ever be read from it twice.
            let carried = &mut self.carried;
            let drained = map.drain_into(cpus, |key, values| {
                carried.entry(key).or_default().extend_from_slice(values)
            });
            adopted.flows += drained.read;
            adopted.unreadable_flows += drained.unreadable;
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
}

/// Opens a pinned flow map, checking that it is a per-CPU hash with this build's key and
/// value layout (aya checks the sizes against the kernel's).
fn open_pinned_flows(path: &Path) -> Result<FlowMap, Box<dyn std::error::Error + Send + Sync>> {
    let data = MapData::from_pin(path)?;
    let map = match data.info()?.map_type()? {
        MapType::LruPerCpuHash => Map::PerCpuLruHashMap(data),
        MapType::PerCpuHash => Map::PerCpuHashMap(data),
        other => return Err(format!("a {other:?} map, not per-CPU flow counters").into()),
    };
    Ok(FlowMap::new(map)?)
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
    /// Everything the programs counted per flow since the last harvest (or the load), sorted
    /// by key; every packet counted is in exactly one harvest.
    ///
    /// Empty when the fast path was loaded without flow accounting. Takes one RCU grace
    /// period (`membarrier`, milliseconds) plus one map system call per 4,096 flows; calls
    /// are serialised.
    pub fn harvest_flows(&self) -> Result<Vec<FlowSample>, DatapathError> {
        self.lock_flows()?.harvest()
    }

    /// Takes over what a previous instance's programs counted per flow and nobody harvested:
    /// its flow maps, pinned in `instance` ([`FastPath::load_pinned`]), are read and emptied,
    /// and their flows come with the next [`FastPath::harvest_flows`], merged with this
    /// instance's. Call once no program counts into them any more (every interface runs this
    /// fast path's programs and an RCU grace period has passed). A previous build whose flow
    /// maps have another layout cannot be read: counted in [`AdoptedFlows`], logged.
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
        let got = t.harvest();
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
        assert_eq!(t.losses().evicted_flows, 2);
        let got = t.harvest();
        assert_eq!(got.len(), MAX_FLOWS as usize);
        assert_eq!(got[5].uplink.packets, 2);
    }

    #[test]
    fn cpus_are_summed_and_the_busiest_cpu_gives_the_rule() {
        let v = |up: u64, down: u64, rule: u32| FlowValue {
            uplink: Counter {
                packets: up,
                bytes: up * 10,
            },
            downlink: Counter {
                packets: down,
                bytes: down * 10,
            },
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
