//! Counters that outlive the daemon: what a previous instance's programs counted, carried
//! into this instance's counters at a restart or an upgrade.
//!
//! Each instance counts into its own per-CPU maps, in counter slots it assigns itself, so a
//! previous instance's counters are carried by what they count (verdict, reason, rule id,
//! session id and direction; [`CarriedKey`]), never by slot. The adopting instance reads the
//! previous one's counters once its programs no longer run (after the link swap and an RCU
//! grace period, so the values are final), adds them into its `CARRIED` map and zeroes what it
//! read in the previous maps, so adopting twice adds nothing. No program writes `CARRIED`, so
//! userspace never races the programs' per-CPU increments. Every counter this instance
//! reports is its own count plus what was carried; the next instance adopts both, so counts
//! survive any chain of restarts, kill -9 included.
//!
//! Rules and sessions are matched by id against the tables this instance installed: a count
//! for an id it does not have is dropped (counted in [`AdoptedCounters::dropped`]), and
//! removing an id from the tables later drops its carried count, as its slot's count is
//! zeroed when the slot is reused: an id that comes back starts from zero. PFCP sessions are
//! not carried: they end with the daemon (the SMF re-establishes them, docs/pfcp.md).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
};

use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapType, PerCpuArray};
use mecgw_ebpf::{Candidates, CarriedKey, Counter, RuleEntry, SessionEntry, carried, names};

use super::{
    DatapathError, FastPath, Reason, Verdict,
    writer::{wait_for_readers, zeroes},
};

/// What [`FastPath::adopt_counters`] carried over from a previous instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdoptedCounters {
    /// Packets the previous instance (and those it had carried over) counted, over all
    /// verdicts.
    pub packets: u64,
    /// Rules whose counters were carried over.
    pub rules: u64,
    /// Session directions whose counters were carried over.
    pub sessions: u64,
    /// Rule and session counters dropped: their ids are not in this instance's tables.
    pub dropped: u64,
}

/// The carried-over counters of this instance: its `CARRIED` map and a mirror of it, from
/// which the counter getters read (no system call per read).
pub(super) struct Carried {
    map: BpfHashMap<MapData, CarriedKey, Counter>,
    values: HashMap<CarriedKey, Counter>,
}

fn key(kind: u32, id: u32) -> CarriedKey {
    CarriedKey { kind, id }
}

/// The carried kind of a session counter in `direction` (the counter's index within the
/// session's two).
fn session_kind(direction: u32) -> u32 {
    if direction == mecgw_ebpf::DIR_UPLINK {
        carried::SESSION_UPLINK
    } else {
        carried::SESSION_DOWNLINK
    }
}

impl Carried {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<Carried, DatapathError> {
        let map = ebpf
            .take_map(names::MAP_CARRIED)
            .ok_or(DatapathError::Missing {
                what: "map",
                name: names::MAP_CARRIED,
            })?;
        let map = BpfHashMap::try_from(map).map_err(|source| DatapathError::Map {
            name: names::MAP_CARRIED,
            source,
        })?;
        Ok(Carried {
            map,
            values: HashMap::new(),
        })
    }

    pub(super) fn verdict(&self, v: Verdict) -> Counter {
        self.get(key(carried::VERDICT, v as u32))
    }

    pub(super) fn reason(&self, r: Reason) -> Counter {
        self.get(key(carried::REASON, r as u32))
    }

    pub(super) fn rule(&self, id: u32) -> Counter {
        self.get(key(carried::RULE, id))
    }

    pub(super) fn session(&self, id: u32, direction: u32) -> Counter {
        self.get(key(session_kind(direction), id))
    }

    fn get(&self, k: CarriedKey) -> Counter {
        self.values.get(&k).copied().unwrap_or_default()
    }

    fn add(&mut self, k: CarriedKey, c: Counter) -> Result<(), DatapathError> {
        let sum = self.get(k).plus(c);
        self.map
            .insert(k, sum, 0)
            .map_err(|source| DatapathError::Map {
                name: names::MAP_CARRIED,
                source,
            })?;
        self.values.insert(k, sum);
        Ok(())
    }

    /// Drops the carried counts of rules and sessions that are no longer in the tables.
    pub(super) fn retain(
        &mut self,
        rules: &HashSet<u32>,
        sessions: &HashSet<u32>,
    ) -> Result<(), DatapathError> {
        let gone: Vec<CarriedKey> = self
            .values
            .keys()
            .filter(|k| match k.kind {
                carried::RULE => !rules.contains(&k.id),
                carried::SESSION_UPLINK | carried::SESSION_DOWNLINK => !sessions.contains(&k.id),
                _ => false,
            })
            .copied()
            .collect();
        for k in gone {
            self.map.remove(&k).map_err(|source| DatapathError::Map {
                name: names::MAP_CARRIED,
                source,
            })?;
            self.values.remove(&k);
        }
        Ok(())
    }
}

/// Opens map `name` pinned in `dir`, if it is there, checking its type; the typed wrappers
/// built from it check key and value sizes against this build's.
fn open(dir: &Path, name: &'static str, kind: MapType) -> Result<Option<Map>, DatapathError> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| DatapathError::Map { name, source };
    let data = MapData::from_pin(&path).map_err(err)?;
    let found = data.info().and_then(|i| i.map_type()).map_err(err)?;
    if found != kind {
        return Err(DatapathError::Unexpected(format!(
            "the previous instance's {name} is a {found:?} map, not a {kind:?} one: another build's layout"
        )));
    }
    Ok(Some(match kind {
        MapType::Array => Map::Array(data),
        MapType::Hash => Map::HashMap(data),
        MapType::LpmTrie => Map::LpmTrie(data),
        MapType::PerCpuArray => Map::PerCpuArray(data),
        _ => Map::Unsupported(data),
    }))
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    name: &'static str,
    map: Map,
) -> Result<T, DatapathError> {
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn required<T: TryFrom<Map, Error = aya::maps::MapError>>(
    dir: &Path,
    name: &'static str,
    kind: MapType,
) -> Result<T, DatapathError> {
    let map = open(dir, name, kind)?.ok_or_else(|| {
        DatapathError::Unexpected(format!(
            "the previous instance pinned counters but not {name}"
        ))
    })?;
    typed(name, map)
}

/// A previous instance's counter maps.
struct PerCpu {
    name: &'static str,
    map: PerCpuArray<MapData, Counter>,
}

impl PerCpu {
    fn open(dir: &Path, name: &'static str) -> Result<PerCpu, DatapathError> {
        Ok(PerCpu {
            name,
            map: required(dir, name, MapType::PerCpuArray)?,
        })
    }

    /// The sum over CPUs at `index` (zero beyond the map's end).
    fn take(&mut self, index: u32) -> Result<Counter, DatapathError> {
        if index >= self.map.len() {
            return Ok(Counter::default());
        }
        let c = super::sum(&self.map, index, self.name)?;
        if c != Counter::default() {
            self.map
                .set(index, zeroes()?, 0)
                .map_err(|source| DatapathError::Map {
                    name: self.name,
                    source,
                })?;
        }
        Ok(c)
    }
}

/// Everything a previous instance counted, by what it counted.
fn read_previous(dir: &Path) -> Result<Option<BTreeMap<CarriedKey, Counter>>, DatapathError> {
    // A build from before counters were carried pinned only its flow maps and program arrays.
    let Some(old_carried) = open(dir, names::MAP_CARRIED, MapType::Hash)? else {
        return Ok(None);
    };
    let mut old_carried: BpfHashMap<MapData, CarriedKey, Counter> =
        typed(names::MAP_CARRIED, old_carried)?;
    let active: Array<MapData, u32> = required(dir, names::MAP_ACTIVE, MapType::Array)?;
    let g = active.get(&0, 0).map_err(|source| DatapathError::Map {
        name: names::MAP_ACTIVE,
        source,
    })? as usize
        & 1;
    let mut verdicts = PerCpu::open(dir, names::MAP_VERDICTS)?;
    let mut reasons = PerCpu::open(dir, names::MAP_REASONS)?;
    let mut rule_counters = PerCpu::open(dir, names::MAP_RULE_COUNTERS)?;
    let mut session_counters = PerCpu::open(dir, names::MAP_SESSION_COUNTERS)?;

    let mut out = BTreeMap::new();
    let mut old_keys = Vec::new();
    for k in old_carried.keys() {
        let k = k.map_err(|source| DatapathError::Map {
            name: names::MAP_CARRIED,
            source,
        })?;
        let c = old_carried
            .get(&k, 0)
            .map_err(|source| DatapathError::Map {
                name: names::MAP_CARRIED,
                source,
            })?;
        out.insert(k, c);
        old_keys.push(k);
    }
    let mut add = |k: CarriedKey, c: Counter| {
        let e: &mut Counter = out.entry(k).or_default();
        *e = e.plus(c);
    };
    for v in Verdict::ALL {
        add(key(carried::VERDICT, v as u32), verdicts.take(v as u32)?);
    }
    for r in Reason::ALL {
        add(key(carried::REASON, r as u32), reasons.take(r as u32)?);
    }
    // The sessions of the generation in force: id → counter slot.
    let sessions: BpfHashMap<MapData, u32, SessionEntry> =
        required(dir, names::MAP_SESSIONS[g], MapType::Hash)?;
    let mut slots = BTreeMap::new();
    for entry in sessions.iter() {
        let (_, e) = entry.map_err(|source| DatapathError::Map {
            name: names::MAP_SESSIONS[g],
            source,
        })?;
        slots.insert(e.id, e.counter);
    }
    for (&id, &slot) in &slots {
        for direction in [mecgw_ebpf::DIR_UPLINK, mecgw_ebpf::DIR_DOWNLINK] {
            let c = session_counters.take(slot * 2 + direction)?;
            add(key(session_kind(direction), id), c);
        }
    }
    // The rules of the generation in force are those its destination tries name (the rule
    // array keeps stale entries past its end).
    let mut indices = HashSet::new();
    let v4: LpmTrie<MapData, [u8; 4], Candidates> =
        required(dir, names::MAP_DST_V4[g], MapType::LpmTrie)?;
    for entry in v4.iter() {
        let (_, c) = entry.map_err(|source| DatapathError::Map {
            name: names::MAP_DST_V4[g],
            source,
        })?;
        indices.extend(c.rules.iter().take(c.count as usize).copied());
    }
    let v6: LpmTrie<MapData, [u8; 16], Candidates> =
        required(dir, names::MAP_DST_V6[g], MapType::LpmTrie)?;
    for entry in v6.iter() {
        let (_, c) = entry.map_err(|source| DatapathError::Map {
            name: names::MAP_DST_V6[g],
            source,
        })?;
        indices.extend(c.rules.iter().take(c.count as usize).copied());
    }
    let rules: Array<MapData, RuleEntry> = required(dir, names::MAP_RULES[g], MapType::Array)?;
    let mut rule_slots = BTreeMap::new();
    for i in indices {
        let e = rules.get(&i, 0).map_err(|source| DatapathError::Map {
            name: names::MAP_RULES[g],
            source,
        })?;
        rule_slots.insert(e.id, e.counter);
    }
    for (&id, &slot) in &rule_slots {
        add(key(carried::RULE, id), rule_counters.take(slot)?);
    }
    // Read: adopting again must add nothing.
    for k in &old_keys {
        old_carried.remove(k).map_err(|source| DatapathError::Map {
            name: names::MAP_CARRIED,
            source,
        })?;
    }
    Ok(Some(out))
}

impl FastPath {
    /// Carries over the counters of a previous instance whose maps are pinned in `instance`
    /// ([`FastPath::load_pinned`]): its verdict and reason counters, and those of the rules and
    /// sessions this instance's installed tables also have (by id). From then on every counter
    /// this fast path reports includes them. Call once no program counts into the previous
    /// maps any more (every interface runs this fast path's programs), after
    /// [`FastPath::install`]. The previous counters are zeroed as they are read, so a second
    /// call adds nothing. `Ok(None)`: the previous build pinned no counters.
    ///
    /// Takes one RCU grace period and about two map system calls per rule and session.
    pub fn adopt_counters(
        &self,
        instance: &Path,
    ) -> Result<Option<AdoptedCounters>, DatapathError> {
        wait_for_readers();
        let Some(previous) = read_previous(instance)? else {
            return Ok(None);
        };
        let writer = self.lock_writer()?;
        let mut carried = self.lock_carried()?;
        let mut adopted = AdoptedCounters::default();
        for (k, c) in previous {
            if c == Counter::default() {
                continue;
            }
            let known = match k.kind {
                carried::VERDICT => {
                    adopted.packets += c.packets;
                    true
                }
                carried::REASON => true,
                carried::RULE => writer.rule_slots.get(k.id).is_some(),
                carried::SESSION_UPLINK | carried::SESSION_DOWNLINK => {
                    writer.session_slots.get(k.id).is_some()
                }
                _ => false,
            };
            if !known {
                adopted.dropped += 1;
                continue;
            }
            match k.kind {
                carried::RULE => adopted.rules += 1,
                carried::SESSION_UPLINK | carried::SESSION_DOWNLINK => adopted.sessions += 1,
                _ => {}
            }
            carried.add(k, c)?;
        }
        Ok(Some(adopted))
    }

    pub(super) fn lock_carried(&self) -> Result<std::sync::MutexGuard<'_, Carried>, DatapathError> {
        self.carried
            .lock()
            .map_err(|_| DatapathError::Poisoned("carrying counters over"))
    }
}
