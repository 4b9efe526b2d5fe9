//! Hot update of the kernel tables without ever writing an entry a program may be reading.
//!
//! Two generations of every table exist in the kernel; `ACTIVE_GEN` says which one programs
//! read. An update (1) brings the *inactive* generation to the new contents, writing only the
//! entries that differ from what it held, (2) flips `ACTIVE_GEN` with one 4-byte store, and
//! (3) waits for an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`, which is
//! `synchronize_rcu()` in the kernel). XDP programs run inside RCU read-side sections and read
//! `ACTIVE_GEN` once per packet, so after (3) no program still reads the old generation,
//! and the next update may rewrite it. A packet is therefore judged entirely by the old or
//! entirely by the new tables.

use std::{collections::HashMap, hash::Hash, time::Duration};

use aya::{
    Pod,
    maps::{
        Array, HashMap as BpfHashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues,
        lpm_trie::Key,
    },
};
use mecgw_ebpf::{Candidates, Config, Counter, RuleEntry, SessionEntry, names};

use super::{
    DatapathError,
    compile::CompiledTables,
    entries::{GenerationEntries, Slots},
};

/// One generation's maps.
pub(super) struct Generation {
    sessions: BpfHashMap<MapData, u32, SessionEntry>,
    ue_v4: BpfHashMap<MapData, [u8; 4], SessionEntry>,
    ue_v6: LpmTrie<MapData, [u8; 16], SessionEntry>,
    rules: Array<MapData, RuleEntry>,
    dst_v4: LpmTrie<MapData, [u8; 4], Candidates>,
    dst_v6: LpmTrie<MapData, [u8; 16], Candidates>,
    /// What the kernel holds, as far as we know; `None` after a failed write.
    mirror: Option<GenerationEntries>,
}

/// Owns every map userspace writes, and the counters it reads.
pub(super) struct TableWriter {
    generations: [Generation; 2],
    active: u32,
    active_map: Array<MapData, u32>,
    config: Array<MapData, Config>,
    pub(super) rule_counters: PerCpuArray<MapData, Counter>,
    pub(super) session_counters: PerCpuArray<MapData, Counter>,
    pub(super) rule_slots: Slots,
    pub(super) session_slots: Slots,
    /// With PFCP: the first TEID of its range (written into every generation's config).
    pfcp_teid_min: Option<u32>,
    /// The last install's [`Config::tables_serial`] (0 before the first).
    serial: u32,
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<T, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?;
    T::try_from(map).map_err(map_err(name))
}

impl TableWriter {
    pub(super) fn new(
        ebpf: &mut aya::Ebpf,
        pfcp_teid_min: Option<u32>,
    ) -> Result<TableWriter, DatapathError> {
        let mut generation = |g: usize| -> Result<Generation, DatapathError> {
            Ok(Generation {
                sessions: take(ebpf, names::MAP_SESSIONS[g])?,
                ue_v4: take(ebpf, names::MAP_UE_V4[g])?,
                ue_v6: take(ebpf, names::MAP_UE_V6[g])?,
                rules: take(ebpf, names::MAP_RULES[g])?,
                dst_v4: take(ebpf, names::MAP_DST_V4[g])?,
                dst_v6: take(ebpf, names::MAP_DST_V6[g])?,
                mirror: Some(GenerationEntries::default()),
            })
        };
        let generations = [generation(0)?, generation(1)?];
        Ok(TableWriter {
            generations,
            active: 0,
            active_map: take(ebpf, names::MAP_ACTIVE)?,
            config: take(ebpf, names::MAP_CONFIG)?,
            rule_counters: take(ebpf, names::MAP_RULE_COUNTERS)?,
            session_counters: take(ebpf, names::MAP_SESSION_COUNTERS)?,
            rule_slots: Slots::default(),
            session_slots: Slots::default(),
            pfcp_teid_min,
            serial: 0,
        })
    }

    /// Makes `tables` the tables every packet from now on is judged by.
    pub(super) fn install(&mut self, tables: &CompiledTables) -> Result<(), DatapathError> {
        let rule_ids: Vec<u32> = tables.rules.iter().map(|r| r.id).collect();
        let session_ids: Vec<u32> = tables.sessions.iter().map(|s| s.id).collect();
        let reused_rules = self.rule_slots.assign(&rule_ids);
        let reused_sessions = self.session_slots.assign(&session_ids);
        let mut compiled = GenerationEntries::build(tables, &self.rule_slots, &self.session_slots);
        if let Some(min) = self.pfcp_teid_min {
            compiled.config.flags |= mecgw_ebpf::CONFIG_PFCP;
            compiled.config.pfcp_teid_min = min;
        }
        // A new serial for every install, even of the same tables: the programs' cached
        // classifications carry the serial they were made under, and 0 marks none.
        let serial = self.serial.wrapping_add(1).max(1);
        compiled.config.tables_serial = serial;
        for slot in reused_rules {
            self.rule_counters
                .set(slot, zeroes()?, 0)
                .map_err(map_err(names::MAP_RULE_COUNTERS))?;
        }
        for slot in reused_sessions {
            for dir in 0..2 {
                self.session_counters
                    .set(slot * 2 + dir, zeroes()?, 0)
                    .map_err(map_err(names::MAP_SESSION_COUNTERS))?;
            }
        }
        let next = 1 - self.active;
        let generation = &mut self.generations[next as usize];
        let old = generation.mirror.take();
        generation.write(next as usize, old.as_ref(), &compiled)?;
        self.config
            .set(next, compiled.config, 0)
            .map_err(map_err(names::MAP_CONFIG))?;
        generation.mirror = Some(compiled);
        self.active_map
            .set(0, next, 0)
            .map_err(map_err(names::MAP_ACTIVE))?;
        self.active = next;
        self.serial = serial;
        wait_for_readers();
        Ok(())
    }
}

pub(super) fn zeroes() -> Result<PerCpuValues<Counter>, DatapathError> {
    let n = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
    PerCpuValues::try_from(vec![Counter::default(); n]).map_err(DatapathError::Io)
}

/// Waits until every XDP program run that started before the call has finished.
pub(super) fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers; it only blocks until an RCU grace period passed.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        // nohz_full kernels refuse the command; programs run for microseconds, so a pause
        // far longer than any run is the fallback.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Brings a hash-like map from `old` to `new` contents; `old == None` means unknown, so every
/// key found in the kernel is deleted first.
fn sync<K, V, M>(
    name: &'static str,
    old: Option<&HashMap<K, V>>,
    new: &HashMap<K, V>,
    map: &mut M,
    keys: impl Fn(&M) -> Vec<K>,
    insert: impl Fn(&mut M, &K, &V) -> Result<(), MapError>,
    remove: impl Fn(&mut M, &K) -> Result<(), MapError>,
) -> Result<(), DatapathError>
where
    K: Eq + Hash + Clone,
    V: PartialEq,
{
    let err = map_err(name);
    match old {
        Some(old) => {
            for k in old.keys().filter(|k| !new.contains_key(k)) {
                remove(map, k).map_err(&err)?;
            }
            for (k, v) in new {
                if old.get(k) != Some(v) {
                    insert(map, k, v).map_err(&err)?;
                }
            }
        }
        None => {
            for k in keys(map) {
                remove(map, &k).map_err(&err)?;
            }
            for (k, v) in new {
                insert(map, k, v).map_err(&err)?;
            }
        }
    }
    Ok(())
}

fn hash_keys<K: Pod, V: Pod>(m: &BpfHashMap<MapData, K, V>) -> Vec<K> {
    m.keys().filter_map(Result::ok).collect()
}

fn lpm_keys<K: Pod, V: Pod>(m: &LpmTrie<MapData, K, V>) -> Vec<(K, u32)> {
    m.keys()
        .filter_map(Result::ok)
        .map(|k| (k.data(), k.prefix_len()))
        .collect()
}

impl Generation {
    fn write(
        &mut self,
        g: usize,
        old: Option<&GenerationEntries>,
        new: &GenerationEntries,
    ) -> Result<(), DatapathError> {
        sync(
            names::MAP_SESSIONS[g],
            old.map(|o| &o.sessions),
            &new.sessions,
            &mut self.sessions,
            hash_keys,
            |m, k, v| m.insert(k, v, 0),
            |m, k| m.remove(k),
        )?;
        sync(
            names::MAP_UE_V4[g],
            old.map(|o| &o.ue_v4),
            &new.ue_v4,
            &mut self.ue_v4,
            hash_keys,
            |m, k, v| m.insert(k, v, 0),
            |m, k| m.remove(k),
        )?;
        sync(
            names::MAP_UE_V6[g],
            old.map(|o| &o.ue_v6),
            &new.ue_v6,
            &mut self.ue_v6,
            lpm_keys,
            |m, k, v| m.insert(&Key::new(k.1, k.0), v, 0),
            |m, k| m.remove(&Key::new(k.1, k.0)),
        )?;
        sync(
            names::MAP_DST_V4[g],
            old.map(|o| &o.dst_v4),
            &new.dst_v4,
            &mut self.dst_v4,
            lpm_keys,
            |m, k, v| m.insert(&Key::new(k.1, k.0), v, 0),
            |m, k| m.remove(&Key::new(k.1, k.0)),
        )?;
        sync(
            names::MAP_DST_V6[g],
            old.map(|o| &o.dst_v6),
            &new.dst_v6,
            &mut self.dst_v6,
            lpm_keys,
            |m, k, v| m.insert(&Key::new(k.1, k.0), v, 0),
            |m, k| m.remove(&Key::new(k.1, k.0)),
        )?;
        for (i, rule) in new.rules.iter().enumerate() {
            if old.and_then(|o| o.rules.get(i)) != Some(rule) {
                self.rules
                    .set(i as u32, rule, 0)
                    .map_err(map_err(names::MAP_RULES[g]))?;
            }
        }
        Ok(())
    }
}
