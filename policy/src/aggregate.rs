//! Windowed aggregation with contribution bounds and a state cap.
//!
//! This module owns the state of one release's open windows: groups keyed by transformed
//! values, per-group accumulators, and per-(privacy unit, group) row counts that enforce the
//! contribution bounds (at most `max_groups` groups and `max_rows` rows per group for one unit
//! per window; rows beyond them are dropped and counted, first come first kept). It never adds
//! noise or decides what is released: `release` does.
//!
//! Memory is bounded by `max_state`, a cap on (unit, group) pairs held by one window. When a
//! row would create a pair beyond it, the window is marked saturated, the row is dropped and
//! counted, and at close the window's release is suppressed as a whole (fail closed: a cap
//! that drops rows depending on other people's data would break the sensitivity analysis).

use std::collections::HashMap;

use serde_json::Value;

use crate::model::{Bounds, Contribution, Metric};
use crate::record::{Raw, Record};

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Aggregated.
    Added,
    /// Dropped: the unit already gave `max_rows` rows to this group this window.
    OverMaxRows,
    /// Dropped: the unit already contributed to `max_groups` groups this window.
    OverMaxGroups,
    /// Dropped: the window's state cap is reached (the window will be suppressed).
    StateCap,
}

/// How each metric reads a row into accumulator slots.
#[derive(Debug, Clone)]
pub struct Layout {
    metrics: Vec<Metric>,
    /// First slot of each metric.
    offsets: Vec<usize>,
    slots: usize,
}

impl Layout {
    /// The layout of a release's metrics.
    pub fn new(metrics: &[Metric]) -> Self {
        let mut offsets = Vec::new();
        let mut slots = 0;
        for m in metrics {
            offsets.push(slots);
            slots += match m {
                Metric::Count => 0,
                Metric::Sum { .. } => 1,
                Metric::Mean { .. } => 2,
                Metric::Histogram { bins, .. } | Metric::Quantiles { bins, .. } => bins.len() - 1,
            };
        }
        Self {
            metrics: metrics.to_vec(),
            offsets,
            slots,
        }
    }

    /// The metrics, in order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Slot range of metric `i`.
    pub fn slots_of(&self, i: usize) -> std::ops::Range<usize> {
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.slots);
        self.offsets[i]..end
    }

    /// Adds one row's contribution to `acc` (length `slots`).
    fn add<R: Record + ?Sized>(&self, acc: &mut [i64], record: &R) {
        for (m, &off) in self.metrics.iter().zip(&self.offsets) {
            match m {
                Metric::Count => {}
                Metric::Sum { field, bounds } => {
                    if let Some(v) = clamped_raw(record.get(field), bounds) {
                        acc[off] = acc[off].saturating_add(v);
                    }
                }
                Metric::Mean { field, bounds } => {
                    if let Some(v) = clamped_raw(record.get(field), bounds) {
                        acc[off] = acc[off].saturating_add(v);
                        acc[off + 1] += 1;
                    }
                }
                Metric::Histogram { field, bins } | Metric::Quantiles { field, bins, .. } => {
                    if let Some(x) = record.get(field).and_then(Raw::as_f64) {
                        acc[off + bin_of(bins, x)] += 1;
                    }
                }
            }
        }
    }
}

/// A numeric value in the bounds' fixed point, clamped to them.
pub fn clamped(v: Option<&Value>, b: &Bounds) -> Option<i64> {
    clamped_raw(v.map(Raw::of), b)
}

/// [`clamped`] of a borrowed field value.
pub fn clamped_raw(v: Option<Raw<'_>>, b: &Bounds) -> Option<i64> {
    let v = v?;
    let scaled = match v.as_i64() {
        Some(i) => i.saturating_mul(b.scale()),
        None => {
            let f = v.as_f64()? * b.scale() as f64;
            if f.is_nan() {
                return None;
            }
            f.round() as i64 // saturating cast
        }
    };
    Some(scaled.clamp(b.lo, b.hi))
}

/// Index of the bin holding `x`: edges e0 < … < en make n bins [e_i, e_{i+1}); values below
/// e0 go to the first bin, values from en up to the last.
pub fn bin_of(edges: &[f64], x: f64) -> usize {
    let n = edges.len() - 1;
    edges[1..n].partition_point(|e| *e <= x)
}

/// Hasher for keys built from unit ids. Unit ids are already the output of a keyed SipHash
/// (random per process), so a multiply-mix is enough and cannot be steered by an attacker.
#[derive(Default, Clone, Copy)]
pub struct UnitIdHasher(u64);

impl std::hash::Hasher for UnitIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type UnitMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<UnitIdHasher>>;

/// One group's accumulators.
#[derive(Debug, Clone)]
pub struct GroupAcc {
    /// Group-by values (transformed).
    pub key: Vec<Value>,
    /// Distinct privacy units that contributed.
    pub units: u64,
    /// Rows aggregated.
    pub rows: u64,
    /// Metric slots (see [`Layout`]).
    pub slots: Vec<i64>,
}

/// Counters of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// Rows aggregated.
    pub added: u64,
    /// Rows over `max_rows`.
    pub over_max_rows: u64,
    /// Rows over `max_groups`.
    pub over_max_groups: u64,
    /// Rows dropped at the state cap.
    pub state_cap: u64,
}

/// State of one open window of one release.
pub struct WindowState {
    /// Window start, Unix seconds.
    pub start: i64,
    /// Group ids by the JSON text of the group key (see [`group_text`]).
    group_ids: HashMap<Vec<u8>, u32>,
    groups: Vec<GroupAcc>,
    pairs: UnitMap<(u64, u32), u32>,
    unit_groups: UnitMap<u64, u32>,
    /// True once the state cap was hit; the window will be suppressed.
    pub saturated: bool,
    scratch: Vec<u8>,
    /// What happened to its rows.
    pub counters: WindowCounters,
}

impl WindowState {
    /// An empty window.
    pub fn new(start: i64) -> Self {
        Self {
            start,
            group_ids: HashMap::new(),
            groups: Vec::new(),
            pairs: UnitMap::default(),
            unit_groups: UnitMap::default(),
            saturated: false,
            scratch: Vec::new(),
            counters: WindowCounters::default(),
        }
    }

    /// (unit, group) pairs held.
    pub fn pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Adds one row of privacy unit `unit` (an in-memory hash, never output) to the group
    /// whose transformed key is `key`.
    pub fn add<R: Record + ?Sized>(
        &mut self,
        layout: &Layout,
        bounds: Contribution,
        max_state: u64,
        unit: u64,
        key: &[&Value],
        record: &R,
    ) -> RowOutcome {
        let outcome = self.admit(layout, bounds, max_state, unit, key);
        match outcome {
            Ok(g) => {
                let acc = &mut self.groups[g as usize];
                acc.rows += 1;
                layout.add(&mut acc.slots, record);
                self.counters.added += 1;
                RowOutcome::Added
            }
            Err(o) => {
                match o {
                    RowOutcome::OverMaxRows => self.counters.over_max_rows += 1,
                    RowOutcome::OverMaxGroups => self.counters.over_max_groups += 1,
                    _ => self.counters.state_cap += 1,
                }
                o
            }
        }
    }

    fn admit(
        &mut self,
        layout: &Layout,
        bounds: Contribution,
        max_state: u64,
        unit: u64,
        key: &[&Value],
    ) -> Result<u32, RowOutcome> {
        if self.saturated {
            return Err(RowOutcome::StateCap);
        }
        let mut text = std::mem::take(&mut self.scratch);
        group_text(key, &mut text);
        let existing = self.group_ids.get(text.as_slice()).copied();
        self.scratch = text;
        if let Some(g) = existing
            && let Some(rows) = self.pairs.get_mut(&(unit, g))
        {
            if *rows >= bounds.max_rows {
                return Err(RowOutcome::OverMaxRows);
            }
            *rows += 1;
            return Ok(g);
        }
        // A new (unit, group) pair.
        let ug = self.unit_groups.get(&unit).copied().unwrap_or(0);
        if ug >= bounds.max_groups {
            return Err(RowOutcome::OverMaxGroups);
        }
        if self.pairs.len() as u64 >= max_state {
            self.saturated = true;
            // Free the memory now: the window will not be released.
            self.pairs = UnitMap::default();
            self.unit_groups = UnitMap::default();
            self.groups = Vec::new();
            self.group_ids = HashMap::new();
            return Err(RowOutcome::StateCap);
        }
        let g = match existing {
            Some(g) => g,
            None => {
                let g = u32::try_from(self.groups.len()).map_err(|_| RowOutcome::StateCap)?;
                self.groups.push(GroupAcc {
                    key: key.iter().map(|v| (*v).clone()).collect(),
                    units: 0,
                    rows: 0,
                    slots: vec![0; layout.slots],
                });
                self.group_ids.insert(self.scratch.clone(), g);
                g
            }
        };
        self.pairs.insert((unit, g), 1);
        self.unit_groups.insert(unit, ug + 1);
        self.groups[g as usize].units += 1;
        Ok(g)
    }

    /// Closes the window: its groups, in key order (so output is deterministic).
    pub fn into_groups(self) -> Vec<GroupAcc> {
        // Byte order of UTF-8 text is its `str` order.
        let mut ids: Vec<(Vec<u8>, u32)> = self.group_ids.into_iter().collect();
        ids.sort();
        let mut groups: Vec<Option<GroupAcc>> = self.groups.into_iter().map(Some).collect();
        ids.into_iter()
            .filter_map(|(_, g)| groups.get_mut(g as usize).and_then(Option::take))
            .collect()
    }
}

/// The group key as text: each value's JSON text (as `Display` writes it), each followed
/// by U+001F (which JSON text never holds unescaped).
fn group_text(key: &[&Value], s: &mut Vec<u8>) {
    s.clear();
    for v in key {
        // Writing to a Vec cannot fail; a value serialises (its map keys are strings).
        let _ = serde_json::to_writer(&mut *s, v);
        s.push(0x1f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    fn layout() -> Layout {
        Layout::new(&[
            Metric::Count,
            Metric::Sum {
                field: "b".into(),
                bounds: Bounds {
                    lo: 0,
                    hi: 100,
                    places: 0,
                },
            },
        ])
    }

    #[test]
    fn clamps_and_bins() {
        let b = Bounds {
            lo: -50,
            hi: 250,
            places: 1,
        };
        assert_eq!(clamped(Some(&Value::from(3)), &b), Some(30));
        assert_eq!(clamped(Some(&Value::from(99)), &b), Some(250));
        assert_eq!(clamped(Some(&Value::from(-1.26)), &b), Some(-13));
        assert_eq!(clamped(Some(&Value::from("x")), &b), None);
        let edges = [0.0, 10.0, 20.0, 50.0];
        assert_eq!(bin_of(&edges, -5.0), 0);
        assert_eq!(bin_of(&edges, 10.0), 1);
        assert_eq!(bin_of(&edges, 49.9), 2);
        assert_eq!(bin_of(&edges, 500.0), 2);
    }

    #[test]
    fn state_cap_saturates_and_frees() {
        let l = layout();
        let mut w = WindowState::new(0);
        let c = Contribution {
            max_groups: 1,
            max_rows: 1,
        };
        let rec = Map::new();
        for u in 0..10 {
            let o = w.add(&l, c, 5, u, &[&Value::from(u % 3)], &rec);
            assert_eq!(o == RowOutcome::Added, u < 5, "{u}");
        }
        assert!(w.saturated);
        assert_eq!(w.pairs(), 0);
        assert_eq!(w.counters.state_cap, 5);
    }

    proptest! {
        /// Whatever rows arrive, no unit reaches more than max_groups groups or more than
        /// max_rows rows in a group, and each group's sum obeys the clamped bound per row.
        #[test]
        fn contribution_bounds_hold(
            rows in proptest::collection::vec((0u64..6, 0u32..5, -50i64..500), 0..300),
            max_groups in 1u32..4, max_rows in 1u32..4,
        ) {
            let l = layout();
            let c = Contribution { max_groups, max_rows };
            let mut w = WindowState::new(0);
            let mut per_unit_group = HashMap::<(u64, u32), u32>::new();
            for (unit, group, b) in rows {
                let mut rec = Map::new();
                rec.insert("b".into(), Value::from(b));
                if w.add(&l, c, u64::MAX, unit, &[&Value::from(group)], &rec) == RowOutcome::Added {
                    *per_unit_group.entry((unit, group)).or_default() += 1;
                }
            }
            let mut groups_of = HashMap::<u64, u32>::new();
            for (&(u, _), &rows) in &per_unit_group {
                prop_assert!(rows <= max_rows);
                *groups_of.entry(u).or_default() += 1;
            }
            for (_, g) in groups_of {
                prop_assert!(g <= max_groups);
            }
            for g in w.into_groups() {
                prop_assert!(g.rows <= g.units * u64::from(max_rows));
                prop_assert!(g.slots[0] >= 0 && g.slots[0] as u64 <= g.rows * 100);
            }
        }
    }
}
