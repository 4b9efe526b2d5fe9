//! The engine: records in, transformed records and releases out, tagged for their destination.
//!
//! This module owns routing: which transformed records and which releases go to which
//! destination (anything not named by a destination stays on site), window bookkeeping
//! (tumbling windows per release, closed when a record arrives a full window past their end,
//! and all closed at the end of input), charging the budget before anything is written, and
//! counting every record that could not be used. It never logs record values; its counters
//! name reasons and fields only.

use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, RandomState};
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::aggregate::{Layout, RowOutcome, WindowState};
use crate::budget::{Charge, Ledger, LedgerError};
use crate::keys::{EpochKeys, KeyError, KeyRing};
use crate::model::{DEFAULT_MAX_STATE, Policy, Release};
use crate::noise::Randomness;
use crate::record::{FieldTable, LineRecord, Raw, Record};
use crate::release::{Mechanism, MechanismError};
use crate::transform::{KindPlan, RecordError};
use crate::units::format_rfc3339;

/// Longest input line accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Bad-record samples kept for the report (line number and reason).
pub const MAX_BAD_SAMPLES: usize = 20;

/// Why the engine could not start or continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The budget ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A release's mechanism is out of range.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// A test case lacks a key.
    #[error(
        "key `{0}` has no test key material in this test case; add it under the case's `keys:`"
    )]
    MissingTestKey(String),
}

/// Where pseudonymisation keys come from.
pub enum KeySource<'a> {
    /// The key files the policy names, relative to this directory.
    Files(&'a Path),
    /// Test material (hex) by key name.
    Test(&'a BTreeMap<String, String>),
}

/// Counters of one release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Rows aggregated.
    pub rows_added: u64,
    /// Rows dropped over max_rows.
    pub rows_over_max_rows: u64,
    /// Rows dropped over max_groups.
    pub rows_over_max_groups: u64,
    /// Rows dropped at the state cap.
    pub rows_state_cap: u64,
    /// Rows for a window already closed.
    pub rows_late: u64,
    /// Windows closed.
    pub windows_closed: u64,
    /// Windows whose cells were released.
    pub windows_released: u64,
    /// Windows refused by the budget.
    pub windows_refused: u64,
    /// Windows suppressed because the state cap was hit.
    pub windows_suppressed: u64,
    /// Windows that failed while drawing noise (budget spent, nothing released).
    pub windows_failed: u64,
    /// Cells released (per destination once).
    pub cells: u64,
    /// Groups withheld by the cohort floor.
    pub groups_below_k: u64,
    /// Groups withheld by partition selection.
    pub groups_below_threshold: u64,
}

/// What the engine did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Input records seen.
    pub records_in: u64,
    /// Records transformed.
    pub records_ok: u64,
    /// Bad records by reason.
    pub bad: BTreeMap<&'static str, u64>,
    /// The first bad records: (line, reason). Reasons never carry values.
    pub bad_samples: Vec<(u64, String)>,
    /// Transformed records written (once per destination).
    pub records_out: u64,
    /// Transformed records no destination may receive (they stay on site).
    pub records_on_site: u64,
    /// Per release.
    pub releases: BTreeMap<String, ReleaseStats>,
}

impl Stats {
    /// Total bad records.
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }

    /// The counters of every release added together.
    pub fn release_totals(&self) -> ReleaseStats {
        let mut total = ReleaseStats::default();
        for r in self.releases.values() {
            total += r;
        }
        total
    }
}

/// Adds another run's counters (an engine replaced by a reload, say). Both sides are
/// destructured, so a counter added to the struct cannot be left out: it would not compile.
impl std::ops::AddAssign<&ReleaseStats> for ReleaseStats {
    fn add_assign(&mut self, rhs: &ReleaseStats) {
        let ReleaseStats {
            rows_added,
            rows_over_max_rows,
            rows_over_max_groups,
            rows_state_cap,
            rows_late,
            windows_closed,
            windows_released,
            windows_refused,
            windows_suppressed,
            windows_failed,
            cells,
            groups_below_k,
            groups_below_threshold,
        } = self;
        for (into, add) in [
            (rows_added, rhs.rows_added),
            (rows_over_max_rows, rhs.rows_over_max_rows),
            (rows_over_max_groups, rhs.rows_over_max_groups),
            (rows_state_cap, rhs.rows_state_cap),
            (rows_late, rhs.rows_late),
            (windows_closed, rhs.windows_closed),
            (windows_released, rhs.windows_released),
            (windows_refused, rhs.windows_refused),
            (windows_suppressed, rhs.windows_suppressed),
            (windows_failed, rhs.windows_failed),
            (cells, rhs.cells),
            (groups_below_k, rhs.groups_below_k),
            (groups_below_threshold, rhs.groups_below_threshold),
        ] {
            *into = into.saturating_add(add);
        }
    }
}

/// Adds another run's counters: every count, bad records per reason, each release's
/// counters, and bad-record samples up to [`MAX_BAD_SAMPLES`] in all.
impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, rhs: &Stats) {
        let Stats {
            records_in,
            records_ok,
            bad,
            bad_samples,
            records_out,
            records_on_site,
            releases,
        } = rhs;
        self.records_in = self.records_in.saturating_add(*records_in);
        self.records_ok = self.records_ok.saturating_add(*records_ok);
        for (reason, n) in bad {
            let into = self.bad.entry(reason).or_default();
            *into = into.saturating_add(*n);
        }
        let room = MAX_BAD_SAMPLES.saturating_sub(self.bad_samples.len());
        self.bad_samples
            .extend(bad_samples.iter().take(room).cloned());
        self.records_out = self.records_out.saturating_add(*records_out);
        self.records_on_site = self.records_on_site.saturating_add(*records_on_site);
        for (name, r) in releases {
            *self.releases.entry(name.clone()).or_default() += r;
        }
    }
}

struct ReleaseRun {
    name: String,
    release: Release,
    layout: Layout,
    mechanism: Mechanism,
    destinations: Vec<(String, String)>,
    windows: BTreeMap<i64, WindowState>,
    /// Windows starting before this are closed.
    closed_before: i64,
    max_state: u64,
}

/// The policy engine for one run.
pub struct Engine {
    hash: String,
    kinds: BTreeMap<String, KindPlan>,
    kind_window: BTreeMap<String, i64>,
    kind_destinations: BTreeMap<String, Vec<(String, String)>>,
    tag_cache: BTreeMap<String, TagCache>,
    kind_names: BTreeMap<String, Arc<str>>,
    /// The members a line reader keeps: every declared field, and `kind`.
    table: FieldTable,
    runs: Vec<ReleaseRun>,
    keys: KeyRing,
    ledger: Ledger,
    rng: Box<dyn Randomness>,
    unit_hasher: RandomState,
    /// What happened so far.
    pub stats: Stats,
}

/// The window an output object belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowTag {
    /// Window start, RFC 3339.
    pub start: String,
    /// Window end (exclusive), RFC 3339.
    pub end: String,
}

impl WindowTag {
    fn new(start: i64, len: i64) -> Self {
        Self {
            start: format_rfc3339(start),
            end: format_rfc3339(start.saturating_add(len)),
        }
    }
}

/// The window tag and serialised output prefixes of one kind's current window.
struct TagCache {
    start: i64,
    tag: WindowTag,
    /// Per destination (in `kind_destinations` order): the JSON text of the object up to and
    /// including `"record":`.
    prefixes: Vec<String>,
}

/// One output object, borrowed from the engine; it serialises to the JSON line `apply`
/// writes. Every object carries its kind, window, destination (and its region) and the
/// policy hash.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Output<'a> {
    /// A transformed record.
    Record {
        /// The record kind.
        kind: &'a str,
        /// The kind's window the record falls in.
        window: &'a WindowTag,
        /// Destination name.
        destination: &'a str,
        /// Destination region.
        region: &'a str,
        /// Policy hash.
        policy: &'a str,
        /// Allow-listed fields after their transforms.
        record: &'a crate::transform::Fields,
        /// The serialised tags: the object's JSON text up to and including `"record":`.
        #[serde(skip)]
        prefix: &'a str,
    },
    /// One released cell of a window.
    Release {
        /// Always `release`.
        kind: &'static str,
        /// Release name.
        release: &'a str,
        /// The release window.
        window: &'a WindowTag,
        /// Destination name.
        destination: &'a str,
        /// Destination region.
        region: &'a str,
        /// Policy hash.
        policy: &'a str,
        /// Group-by values.
        group: &'a Map<String, Value>,
        /// Noisy metrics.
        metrics: &'a Map<String, Value>,
    },
}

impl Output<'_> {
    /// Writes the object as one line of JSON (without the newline). Equal to serialising it
    /// with serde, but the tags of a record are written from their cached text.
    pub fn write_json(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            Output::Record { prefix, record, .. } => {
                w.write_all(prefix.as_bytes())?;
                serde_json::to_writer(&mut *w, record)?;
                w.write_all(b"}")
            }
            Output::Release { .. } => Ok(serde_json::to_writer(w, self)?),
        }
    }

    /// Writes the object as one line of JSON with every object's keys in sorted order: byte
    /// for byte `self.to_value().to_string()` (what a `serde_json::Value` writes), without
    /// building the value for a record.
    pub fn write_sorted_json(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            Output::Record {
                kind,
                window,
                destination,
                region,
                policy,
                record,
                ..
            } => {
                /// `Output::Record`'s members in sorted order.
                #[derive(serde::Serialize)]
                struct Sorted<'s> {
                    destination: &'s str,
                    kind: &'s str,
                    policy: &'s str,
                    record: SortedFields<'s>,
                    region: &'s str,
                    window: SortedWindow<'s>,
                }
                #[derive(serde::Serialize)]
                struct SortedWindow<'s> {
                    end: &'s str,
                    start: &'s str,
                }
                Ok(serde_json::to_writer(
                    w,
                    &Sorted {
                        destination,
                        kind,
                        policy,
                        record: SortedFields(record),
                        region,
                        window: SortedWindow {
                            end: &window.end,
                            start: &window.start,
                        },
                    },
                )?)
            }
            Output::Release { .. } => Ok(serde_json::to_writer(w, &self.to_value())?),
        }
    }

    /// As a JSON value (tests and `policy test` compare values).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Transformed fields as a JSON object with sorted keys; of a repeated name the last value
/// counts, as in a `serde_json::Map`.
struct SortedFields<'a>(&'a crate::transform::Fields);

impl serde::Serialize for SortedFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut fields: Vec<&(Arc<str>, Value)> = self.0.0.iter().collect();
        // Stable: of equal names, the later one stays later.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = s.serialize_map(Some(fields.len()))?;
        for (i, (n, v)) in fields.iter().map(|f| (&f.0, &f.1)).enumerate() {
            if fields.get(i + 1).is_some_and(|next| next.0 == *n) {
                continue;
            }
            m.serialize_entry(&**n, v)?;
        }
        m.end()
    }
}

/// `sha256:<hex>` of the policy text: the tag that says which policy produced an output.
pub fn policy_hash(src: &str) -> String {
    format!("sha256:{}", crate::hex::sha256(src.as_bytes()))
}

impl Engine {
    /// An engine for `policy` (compiled from `src`), with keys from `keys`, the budget
    /// `ledger` and noise from `rng` (the OS CSPRNG in production).
    pub fn new(
        policy: &Policy,
        src: &str,
        keys: KeySource<'_>,
        ledger: Ledger,
        rng: Box<dyn Randomness>,
    ) -> Result<Self, EngineError> {
        let mut ring = KeyRing::default();
        for (name, spec) in &policy.keys {
            let used = policy.kinds.values().any(|k| {
                k.transforms.values().any(
                    |t| matches!(t, crate::model::Transform::Pseudonymise { key } if key == name),
                )
            });
            if !used {
                continue;
            }
            let k = match keys {
                KeySource::Files(base) => EpochKeys::load(name, spec, base)?,
                KeySource::Test(map) => {
                    let hex = map
                        .get(name)
                        .ok_or_else(|| EngineError::MissingTestKey(name.clone()))?;
                    EpochKeys::from_test_hex(name, hex, spec.rotation.0)?
                }
            };
            ring.insert(k);
        }
        let dests_of =
            |pred: &dyn Fn(&crate::model::Destination) -> bool| -> Vec<(String, String)> {
                policy
                    .destinations
                    .iter()
                    .filter(|(_, d)| pred(d))
                    .map(|(n, d)| (n.clone(), d.region.clone()))
                    .collect()
            };
        let mut kinds = BTreeMap::new();
        let mut kind_window = BTreeMap::new();
        let mut kind_destinations = BTreeMap::new();
        for (name, kind) in &policy.kinds {
            kinds.insert(name.clone(), KindPlan::new(name, kind));
            let w = kind.window.unwrap_or(policy.budget.period).0;
            kind_window.insert(name.clone(), i64::try_from(w).unwrap_or(i64::MAX));
            kind_destinations.insert(name.clone(), dests_of(&|d| d.kinds.contains(name)));
        }
        let mut runs = Vec::new();
        let mut stats = Stats::default();
        for (name, release) in &policy.releases {
            let destinations = dests_of(&|d| d.releases.contains(name));
            let mechanism = Mechanism::new(name, release)?;
            stats.releases.insert(name.clone(), ReleaseStats::default());
            if destinations.is_empty() {
                continue; // stays on site: nothing is computed, nothing is spent
            }
            runs.push(ReleaseRun {
                name: name.clone(),
                release: release.clone(),
                layout: Layout::new(&release.metrics),
                mechanism,
                destinations,
                windows: BTreeMap::new(),
                closed_before: i64::MIN,
                max_state: release.max_state.unwrap_or(DEFAULT_MAX_STATE),
            });
        }
        Ok(Self {
            hash: policy_hash(src),
            kinds,
            kind_window,
            kind_destinations,
            tag_cache: BTreeMap::new(),
            kind_names: policy
                .kinds
                .keys()
                .map(|k| (k.clone(), Arc::from(k.as_str())))
                .collect(),
            table: FieldTable::new(
                policy
                    .kinds
                    .values()
                    .flat_map(|k| k.fields.keys().map(String::as_str))
                    .chain(["kind"]),
            ),
            runs,
            keys: ring,
            ledger,
            rng,
            unit_hasher: RandomState::new(),
            stats,
        })
    }

    /// The policy hash outputs are tagged with.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    fn bad(&mut self, line: u64, e: &RecordError) {
        *self.stats.bad.entry(e.label()).or_default() += 1;
        if self.stats.bad_samples.len() < MAX_BAD_SAMPLES {
            self.stats.bad_samples.push((line, e.to_string()));
        }
    }

    /// Processes one input line (JSON). Bad lines are counted, never fatal.
    pub fn process_line(
        &mut self,
        line_no: u64,
        line: &str,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        self.process_line_as(line_no, None, line, emit)
    }

    /// Processes one input line (JSON) of record kind `kind`: a record without a `kind`
    /// member is of that kind, one with another kind is bad. What the daemon does with a
    /// Publish batch, whose kind is named once for all its records: the record's bytes go
    /// straight to the line reader, with no `Value` built for them.
    pub fn process_line_of_kind(
        &mut self,
        line_no: u64,
        kind: &str,
        line: &str,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        self.process_line_as(line_no, Some(kind), line, emit)
    }

    fn process_line_as(
        &mut self,
        line_no: u64,
        kind: Option<&str>,
        line: &str,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        self.stats.records_in += 1;
        if line.len() > MAX_RECORD_BYTES {
            self.bad(line_no, &RecordError::TooLong(MAX_RECORD_BYTES));
            return Ok(());
        }
        if let Some(record) = LineRecord::parse(&self.table, line) {
            return self.process_record(line_no, kind, &record, emit);
        }
        // Not an object the line reader accepts: the `Value` parser says why (and processes
        // it, should the two ever disagree about a valid object).
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(record)) => self.process_record(line_no, kind, &record, emit),
            Ok(_) => {
                self.bad(line_no, &RecordError::NotAnObject);
                Ok(())
            }
            Err(_) => {
                self.bad(line_no, &RecordError::InvalidJson);
                Ok(())
            }
        }
    }

    /// Processes one input record.
    pub fn process_value(
        &mut self,
        line_no: u64,
        record: Value,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        self.stats.records_in += 1;
        self.process_value_counted(line_no, record, emit)
    }

    fn process_value_counted(
        &mut self,
        line_no: u64,
        record: Value,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        let Value::Object(record) = record else {
            self.bad(line_no, &RecordError::NotAnObject);
            return Ok(());
        };
        self.process_record(line_no, None, &record, emit)
    }

    /// `kind`: the kind of a record without a `kind` member (and the only kind it may name);
    /// `None`: the policy's only kind.
    fn process_record<R: Record + ?Sized>(
        &mut self,
        line_no: u64,
        kind: Option<&str>,
        record: &R,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        let named = match (record.get("kind"), kind) {
            (Some(Raw::Str(k)), Some(given)) if k != given => None,
            (Some(Raw::Str(k)), _) | (None, Some(k)) => Some(k),
            _ => None,
        };
        let kind_name: Arc<str> = match (named, record.get("kind")) {
            (Some(k), _) => match self.kind_names.get(k) {
                Some(a) => Arc::clone(a),
                None => {
                    self.bad(line_no, &RecordError::UnknownKind);
                    return Ok(());
                }
            },
            (None, None) if kind.is_none() && self.kind_names.len() == 1 => {
                match self.kind_names.values().next() {
                    Some(a) => Arc::clone(a),
                    None => return Ok(()),
                }
            }
            _ => {
                self.bad(line_no, &RecordError::UnknownKind);
                return Ok(());
            }
        };
        let Some(plan) = self.kinds.get(&*kind_name) else {
            self.bad(line_no, &RecordError::UnknownKind);
            return Ok(());
        };
        let t = match plan.apply(record, &mut self.keys) {
            Ok(t) => t,
            Err(e) => {
                self.bad(line_no, &e);
                return Ok(());
            }
        };
        self.stats.records_ok += 1;
        let dests = self
            .kind_destinations
            .get(&*kind_name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if dests.is_empty() {
            self.stats.records_on_site += 1;
        } else {
            let wlen = self
                .kind_window
                .get(&*kind_name)
                .copied()
                .unwrap_or(86_400)
                .max(1);
            let start = t.time.div_euclid(wlen) * wlen;
            let fresh = !matches!(self.tag_cache.get(&*kind_name), Some(c) if c.start == start);
            if fresh {
                let tag = WindowTag::new(start, wlen);
                // The tags before the record are the same for every record of this kind,
                // window and destination: serialise them once.
                let prefixes = dests
                    .iter()
                    .map(|(d, region)| {
                        #[derive(serde::Serialize)]
                        struct Head<'h> {
                            kind: &'h str,
                            window: &'h WindowTag,
                            destination: &'h str,
                            region: &'h str,
                            policy: &'h str,
                        }
                        let head = serde_json::to_string(&Head {
                            kind: &kind_name,
                            window: &tag,
                            destination: d,
                            region,
                            policy: &self.hash,
                        })
                        .unwrap_or_default();
                        // `{…}` → `{…,"record":`
                        format!("{},\"record\":", &head[..head.len() - 1])
                    })
                    .collect();
                self.tag_cache.insert(
                    kind_name.to_string(),
                    TagCache {
                        start,
                        tag,
                        prefixes,
                    },
                );
            }
            if let Some(cache) = self.tag_cache.get(&*kind_name) {
                for ((d, region), prefix) in dests.iter().zip(&cache.prefixes) {
                    emit(&Output::Record {
                        kind: &kind_name,
                        window: &cache.tag,
                        destination: d,
                        region,
                        policy: &self.hash,
                        record: &t.fields,
                        prefix,
                    })
                    .map_err(EngineFailure::Output)?;
                    self.stats.records_out += 1;
                }
            }
        }
        let unit_id = self.unit_hasher.hash_one(&t.unit);
        for i in 0..self.runs.len() {
            let run = &mut self.runs[i];
            if *run.release.kind != *kind_name {
                continue;
            }
            let wlen = i64::try_from(run.release.window.0)
                .unwrap_or(i64::MAX)
                .max(1);
            let start = t.time.div_euclid(wlen) * wlen;
            let Some(stats) = self.stats.releases.get_mut(run.name.as_str()) else {
                continue;
            };
            if start < run.closed_before {
                stats.rows_late += 1;
                continue;
            }
            let key: Vec<&Value> = run
                .release
                .group_by
                .iter()
                .map(|f| t.fields.get(f).unwrap_or(&Value::Null))
                .collect();
            let w = run
                .windows
                .entry(start)
                .or_insert_with(|| WindowState::new(start));
            match w.add(
                &run.layout,
                run.release.contribution,
                run.max_state,
                unit_id,
                &key,
                record,
            ) {
                RowOutcome::Added => stats.rows_added += 1,
                RowOutcome::OverMaxRows => stats.rows_over_max_rows += 1,
                RowOutcome::OverMaxGroups => stats.rows_over_max_groups += 1,
                RowOutcome::StateCap => stats.rows_state_cap += 1,
            }
            // Close windows that ended at least one window length before this record.
            let horizon = start.saturating_sub(wlen);
            if run
                .windows
                .first_key_value()
                .is_none_or(|(s, _)| *s >= horizon)
            {
                continue;
            }
            let due: Vec<i64> = run.windows.range(..horizon).map(|(s, _)| *s).collect();
            for s in due {
                self.close(i, s, emit)?;
            }
        }
        Ok(())
    }

    fn close(
        &mut self,
        run_idx: usize,
        start: i64,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        let run = &mut self.runs[run_idx];
        let Some(w) = run.windows.remove(&start) else {
            return Ok(());
        };
        let wlen = i64::try_from(run.release.window.0).unwrap_or(i64::MAX);
        run.closed_before = run.closed_before.max(start.saturating_add(wlen));
        let stats = self.stats.releases.entry(run.name.clone()).or_default();
        stats.windows_closed += 1;
        if w.saturated {
            stats.windows_suppressed += 1;
            return Ok(());
        }
        let groups = w.into_groups();
        match self
            .ledger
            .charge(
                &run.name,
                start,
                run.release.epsilon,
                run.release.delta,
                &self.hash,
            )
            .map_err(EngineFailure::Ledger)?
        {
            Charge::Granted => {}
            Charge::Refused { .. } => {
                stats.windows_refused += 1;
                return Ok(());
            }
        }
        let released =
            match run
                .mechanism
                .release(&run.layout, &run.release.group_by, groups, &mut *self.rng)
            {
                Ok(r) => r,
                Err(_) => {
                    stats.windows_failed += 1;
                    return Ok(());
                }
            };
        stats.windows_released += 1;
        stats.groups_below_k += released.below_k;
        stats.groups_below_threshold += released.below_threshold;
        let tag = WindowTag::new(start, wlen);
        for cell in released.cells {
            for (d, region) in &run.destinations {
                emit(&Output::Release {
                    kind: "release",
                    release: &run.name,
                    window: &tag,
                    destination: d,
                    region,
                    policy: &self.hash,
                    group: &cell.group,
                    metrics: &cell.metrics,
                })
                .map_err(EngineFailure::Output)?;
                stats.cells += 1;
            }
        }
        Ok(())
    }

    /// End of input: closes every open window, oldest first.
    pub fn finish(
        &mut self,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        let mut due: Vec<(i64, usize)> = Vec::new();
        for (i, run) in self.runs.iter().enumerate() {
            due.extend(run.windows.keys().map(|s| (*s, i)));
        }
        due.sort();
        for (s, i) in due {
            self.close(i, s, emit)?;
        }
        Ok(())
    }

    /// Closes, oldest first, every open window that ended at least `grace` seconds before
    /// `now` (Unix seconds): what a running daemon calls on a timer, since its input has no
    /// end. Rows for a closed window arriving later are counted as late, never added.
    pub fn close_ended(
        &mut self,
        now: i64,
        grace: i64,
        emit: &mut dyn FnMut(&Output<'_>) -> std::io::Result<()>,
    ) -> Result<(), EngineFailure> {
        let mut due: Vec<(i64, usize)> = Vec::new();
        for (i, run) in self.runs.iter().enumerate() {
            let wlen = i64::try_from(run.release.window.0).unwrap_or(i64::MAX);
            due.extend(
                run.windows
                    .keys()
                    .filter(|s| s.saturating_add(wlen).saturating_add(grace) <= now)
                    .map(|s| (*s, i)),
            );
        }
        due.sort();
        for (s, i) in due {
            self.close(i, s, emit)?;
        }
        Ok(())
    }

    /// Windows open now, across all releases.
    pub fn open_windows(&self) -> usize {
        self.runs.iter().map(|r| r.windows.len()).sum()
    }

    /// The budget left (ε, δ) in the period that contains `now` (Unix seconds).
    pub fn budget_left(&self, now: i64) -> (f64, f64) {
        let (budget_e, budget_d) = self.ledger.budget();
        let (spent_e, spent_d) = self.ledger.spent(self.ledger.period_of(now));
        (
            (budget_e.as_f64() - spent_e.as_f64()).max(0.0),
            (budget_d.as_f64() - spent_d.as_f64()).max(0.0),
        )
    }

    /// Budget charges the ledger refused so far (including earlier runs').
    pub fn budget_refusals(&self) -> u64 {
        self.ledger.refusals()
    }

    /// Transforms one record without routing or aggregating it (for `policy explain`).
    pub fn preview(&mut self, record: &Value) -> Result<(String, Map<String, Value>), RecordError> {
        let Value::Object(record) = record else {
            return Err(RecordError::NotAnObject);
        };
        let kind_name = match record.get("kind") {
            Some(Value::String(k)) if self.kinds.contains_key(k) => k.clone(),
            None if self.kinds.len() == 1 => self.kinds.keys().next().cloned().unwrap_or_default(),
            _ => return Err(RecordError::UnknownKind),
        };
        let plan = self.kinds.get(&kind_name).ok_or(RecordError::UnknownKind)?;
        let t = plan.apply(record, &mut self.keys)?;
        Ok((kind_name, t.fields.to_map()))
    }

    /// (unit, group) pairs currently held across all open windows.
    pub fn state_pairs(&self) -> usize {
        self.runs
            .iter()
            .flat_map(|r| r.windows.values())
            .map(WindowState::pairs)
            .sum()
    }
}

/// A failure that stops a run (bad records never do).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineFailure {
    /// Writing output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// The ledger failed; nothing further may be released.
    #[error(transparent)]
    Ledger(LedgerError),
}

/// Hides a map's values in debug output (unit ids are derived from personal data).
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.hash)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_engine_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Engine>();
    }

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn engine(src: &str) -> Engine {
        let p = crate::compile(src).unwrap();
        let ledger = Ledger::in_memory(p.budget.epsilon, p.budget.delta, p.budget.period.0);
        engine_with(src, ledger)
    }

    fn engine_with(src: &str, ledger: Ledger) -> Engine {
        let p = crate::compile(src).unwrap();
        let keys = BTreeMap::from([("subscriber".to_owned(), KEY.to_owned())]);
        Engine::new(
            &p,
            src,
            KeySource::Test(&keys),
            ledger,
            Box::new(StdRng::seed_from_u64(1)),
        )
        .unwrap()
    }

    #[test]
    fn records_are_tagged_and_releases_close_at_end() {
        let src = crate::compile::tests::GOOD
            .replace("k: 20", "k: 2")
            .replace(
                "stats: {region: EU-DE, releases: [per_cell]}",
                "stats: {region: EU-DE, releases: [per_cell], kinds: [flow]}",
            );
        let mut e = engine(&src);
        let mut out = Vec::new();
        let mut emit = |o: &Output<'_>| {
            out.push(o.to_value());
            Ok(())
        };
        for i in 0..3000 {
            let line = format!(
                r#"{{"imsi":"00101{i:010}","start":{},"cell":"c{}","bytes":100,"ue_ip":"10.0.0.1"}}"#,
                1_795_690_000 + i,
                i % 2
            );
            e.process_line(i as u64 + 1, &line, &mut emit).unwrap();
        }
        e.process_line(3001, "not json", &mut emit).unwrap();
        e.process_line(3002, r#"{"imsi": 5, "start": 0}"#, &mut emit)
            .unwrap();
        e.finish(&mut emit).unwrap();
        assert_eq!(e.stats.records_in, 3002);
        assert_eq!(e.stats.bad_total(), 2);
        assert_eq!(e.stats.bad["invalid_json"], 1);
        assert_eq!(e.stats.bad["wrong_type"], 1);
        let records: Vec<&Value> = out.iter().filter(|v| v["kind"] == "flow").collect();
        assert_eq!(records.len(), 3000);
        assert_eq!(records[0]["destination"], "stats");
        assert!(
            records[0]["policy"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let cells: Vec<&Value> = out.iter().filter(|v| v["kind"] == "release").collect();
        // 3000 s span one window boundary at most: 2 cells per window.
        assert!(!cells.is_empty());
        for c in &cells {
            assert_eq!(c["release"], "per_cell");
            assert!(c["metrics"]["count"].as_i64().unwrap() > 0);
            assert!(c["window"]["start"].as_str().unwrap().ends_with(":00:00Z"));
        }
    }

    #[test]
    fn windows_close_on_the_clock_once_their_grace_has_passed() {
        let src = crate::compile::tests::GOOD.replace("k: 20", "k: 2");
        let mut e = engine(&src);
        let cells = std::cell::RefCell::new(Vec::new());
        let mut emit = |o: &Output<'_>| {
            cells.borrow_mut().push(o.to_value());
            Ok(())
        };
        let hour = 1_795_687_200; // 2026-11-26T10:00:00Z, a window start
        for i in 0..1000 {
            let line = format!(
                r#"{{"imsi":"00101{i:010}","start":{},"cell":"c","bytes":10}}"#,
                hour + i
            );
            e.process_line(i as u64 + 1, &line, &mut emit).unwrap();
        }
        let (eps_before, _) = e.budget_left(hour);
        assert_eq!(e.open_windows(), 1);
        e.close_ended(hour + 3600 + 29, 30, &mut emit).unwrap();
        assert_eq!(e.open_windows(), 1, "closed before its grace passed");
        assert!(cells.borrow().is_empty());
        e.close_ended(hour + 3600 + 30, 30, &mut emit).unwrap();
        assert_eq!(e.open_windows(), 0);
        assert_eq!(cells.borrow().len(), 1);
        assert_eq!(cells.borrow()[0]["release"], "per_cell");
        assert_eq!(cells.borrow()[0]["window"]["start"], "2026-11-26T10:00:00Z");
        let (eps_after, _) = e.budget_left(hour);
        assert!(
            (eps_before - eps_after - 0.1).abs() < 1e-9,
            "{eps_before} {eps_after}"
        );
        // A row for the closed window is late: counted, not added, nothing released.
        let late = format!(r#"{{"imsi":"001019","start":{},"cell":"c"}}"#, hour + 5);
        e.process_line(999, &late, &mut emit).unwrap();
        e.finish(&mut emit).unwrap();
        assert_eq!(e.stats.releases["per_cell"].rows_late, 1);
        assert_eq!(cells.borrow().len(), 1);
    }

    #[test]
    fn write_sorted_json_is_byte_for_byte_the_value_serialisation() {
        let src = crate::compile::tests::GOOD
            .replace("k: 20", "k: 2")
            .replace(
                "stats: {region: EU-DE, releases: [per_cell]}",
                "stats: {region: EU-DE, releases: [per_cell], kinds: [flow]}\n  other: {region: \"US \\\"x\\\"\", kinds: [flow]}",
            );
        let mut e = engine(&src);
        let mut records = 0;
        let mut emit = |o: &Output<'_>| {
            let mut sorted = Vec::new();
            o.write_sorted_json(&mut sorted).unwrap();
            assert_eq!(String::from_utf8(sorted).unwrap(), o.to_value().to_string());
            // Releases go through the value itself: the records are the case to check.
            if matches!(o, Output::Record { .. }) {
                records += 1;
            }
            Ok(())
        };
        for i in 0..50 {
            let line = format!(
                r#"{{"imsi":"{i}","start":{},"cell":"c\"{}","ue_ip":"::ffff:10.0.0.{i}"}}"#,
                i * 60,
                i % 2
            );
            e.process_line(1, &line, &mut emit).unwrap();
        }
        e.finish(&mut emit).unwrap();
        assert_eq!(records, 100);
    }

    #[test]
    fn sorted_fields_keep_the_last_of_a_repeated_name() {
        let f = crate::transform::Fields(vec![
            (Arc::from("b"), Value::from(1)),
            (Arc::from("a"), Value::from(2)),
            (Arc::from("b"), Value::from(3)),
        ]);
        assert_eq!(
            serde_json::to_string(&SortedFields(&f)).unwrap(),
            serde_json::to_string(&f.to_map()).unwrap()
        );
    }

    #[test]
    fn write_json_is_byte_for_byte_the_serde_serialisation() {
        let src = crate::compile::tests::GOOD.replace(
            "stats: {region: EU-DE, releases: [per_cell]}",
            "stats: {region: EU-DE, releases: [per_cell], kinds: [flow]}\n  other: {region: \"US \\\"x\\\"\", kinds: [flow]}",
        );
        let mut e = engine(&src);
        let mut n = 0;
        let mut emit = |o: &Output<'_>| {
            let mut fast = Vec::new();
            o.write_json(&mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(o).unwrap()
            );
            n += 1;
            Ok(())
        };
        for i in 0..50 {
            let line = format!(
                r#"{{"imsi":"{i}","start":{},"cell":"c\"{i}","ue_ip":"::ffff:10.0.0.{i}"}}"#,
                i * 600
            );
            e.process_line(1, &line, &mut emit).unwrap();
        }
        e.finish(&mut emit).unwrap();
        assert_eq!(n, 100);
    }

    #[test]
    fn stats_add_up_every_counter() {
        let r = ReleaseStats {
            rows_added: 1,
            rows_over_max_rows: 2,
            rows_over_max_groups: 3,
            rows_state_cap: 4,
            rows_late: 5,
            windows_closed: 6,
            windows_released: 7,
            windows_refused: 8,
            windows_suppressed: 9,
            windows_failed: 10,
            cells: 11,
            groups_below_k: 12,
            groups_below_threshold: 13,
        };
        let doubled = ReleaseStats {
            rows_added: 2,
            rows_over_max_rows: 4,
            rows_over_max_groups: 6,
            rows_state_cap: 8,
            rows_late: 10,
            windows_closed: 12,
            windows_released: 14,
            windows_refused: 16,
            windows_suppressed: 18,
            windows_failed: 20,
            cells: 22,
            groups_below_k: 24,
            groups_below_threshold: 26,
        };
        let mut a = Stats {
            records_in: 1,
            records_ok: 2,
            bad: BTreeMap::from([("invalid_json", 3)]),
            bad_samples: vec![(1, "not valid JSON".into())],
            records_out: 4,
            records_on_site: 5,
            releases: BTreeMap::from([("r".to_owned(), r.clone())]),
        };
        let mut b = a.clone();
        b.bad.insert("wrong_type", 1);
        b.releases.insert("s".to_owned(), r.clone());
        a += &b;
        assert_eq!(
            (a.records_in, a.records_ok, a.records_out, a.records_on_site),
            (2, 4, 8, 10)
        );
        assert_eq!(
            a.bad,
            BTreeMap::from([("invalid_json", 6), ("wrong_type", 1)])
        );
        assert_eq!(a.bad_samples.len(), 2);
        assert_eq!(a.releases["r"], doubled);
        assert_eq!(a.releases["s"], r);
        let mut tripled = doubled.clone();
        tripled += &r;
        assert_eq!(a.release_totals(), tripled);
        // Samples stop at the cap.
        let many = Stats {
            bad_samples: vec![(1, String::new()); MAX_BAD_SAMPLES],
            ..Stats::default()
        };
        a += &many;
        assert_eq!(a.bad_samples.len(), MAX_BAD_SAMPLES);
    }

    #[test]
    fn budget_refusal_is_counted() {
        let src = crate::compile::tests::GOOD.replace("k: 20", "k: 2");
        let p = crate::compile(&src).unwrap();
        let mut ledger = Ledger::in_memory(p.budget.epsilon, p.budget.delta, p.budget.period.0);
        // Another run already spent ε 0.6 of this day.
        let day = 1_795_651_200;
        assert_eq!(
            ledger
                .charge(
                    "per_cell",
                    day,
                    crate::units::Epsilon(600_000_000),
                    crate::units::Delta(0),
                    "h"
                )
                .unwrap(),
            Charge::Granted
        );
        let mut e = engine_with(&src, ledger);
        let mut n = 0;
        let mut emit = |_o: &Output<'_>| {
            n += 1;
            Ok(())
        };
        // 24 hourly windows of ε 0.1 in a day whose budget (2.4) has 1.8 left: 18 fit.
        for h in 0..24i64 {
            for u in 0..600 {
                let line = format!(
                    r#"{{"imsi":"{u}","start":{},"cell":"c","bytes":1}}"#,
                    1_795_651_200 + h * 3600
                );
                e.process_line(1, &line, &mut emit).unwrap();
            }
        }
        e.finish(&mut emit).unwrap();
        let s = &e.stats.releases["per_cell"];
        assert_eq!(s.windows_closed, 24);
        assert_eq!(s.windows_refused, 6);
        assert_eq!(s.windows_released, 18);
    }
}
