//! The `releases:` section: for each windowed aggregate its kind, window (P019 against the
//! budget period), group key (P012, P017), contribution bounds (P018), cohort floor (P008),
//! privacy parameters (P006, P007, P020), metrics (P009, P021, P025) and state cap; and whether
//! the exact samplers support its noise (P027).

use std::collections::BTreeMap;

use crate::diag::Code;
use crate::model::{Bounds, Contribution, Metric, NoiseKind, RecordKind, Release, Transform};
use crate::units::{self, Delta, Duration};
use crate::yaml::{Node, Value};

use super::read::{Entries, one_of, suggest};
use super::{Ctx, Declared};

const METRICS: &[&str] = &["count", "sum", "mean", "histogram", "quantiles"];

impl Ctx {
    pub(super) fn releases(
        &mut self,
        node: Option<&Node>,
        kinds: &Declared<RecordKind>,
        period: Option<Duration>,
    ) -> Declared<Release> {
        let mut releases = Declared::default();
        if let Some(n) = node {
            for (name, _, node) in self.named(n, "releases") {
                let release = self.release(node, &name, kinds, period);
                releases.add(name, release);
            }
        }
        releases
    }

    /// P027: every release's noise within what the exact samplers support.
    pub(super) fn check_mechanisms(&mut self, releases: &BTreeMap<String, Release>) {
        for (name, r) in releases {
            if let Err(e) = crate::release::Mechanism::new(name, r) {
                self.err(
                    r.epsilon_pos,
                    Code::NoiseOutOfRange,
                    e.to_string(),
                    "raise ε, narrow the bounds or lower the contribution bounds; see `mecgw policy explain`",
                );
            }
        }
    }

    fn release(
        &mut self,
        node: &Node,
        name: &str,
        kinds: &Declared<RecordKind>,
        period: Option<Duration>,
    ) -> Option<Release> {
        let what = format!("release `{name}`");
        let e = self.fixed(
            node,
            &what,
            &[
                "kind",
                "window",
                "group_by",
                "contribution",
                "k",
                "epsilon",
                "delta",
                "noise",
                "metrics",
                "max_state",
            ],
        )?;
        let kind = self
            .required(&e, "kind", "the record kind aggregated")
            .and_then(|n| self.kind_ref(n, &what, kinds));
        let rk = kind.as_ref().and_then(|k| kinds.get(k));
        let window = self.release_window(&e, period);
        let group_by = match e.get("group_by") {
            Some(n) => self.group_by(n, rk, kind.as_deref().unwrap_or_default()),
            None => Vec::new(),
        };
        let contribution = self
            .required(
                &e,
                "contribution",
                "max_groups and max_rows per privacy unit per window",
            )
            .and_then(|n| self.contribution(n));
        let k = self
            .required(&e, "k", "the cohort floor, at least 2 (operators use 20)")
            .and_then(|n| self.cohort_floor(n));
        let eps_node = self.required(&e, "epsilon", "ε spent per window, e.g. 0.1");
        let epsilon = eps_node.and_then(|n| self.epsilon(n, "epsilon"));
        let delta = self.release_delta(&e, &what);
        let noise = match e.get("noise") {
            None => Some(NoiseKind::Laplace),
            Some(n) => self.noise(n),
        };
        // A missing `metrics` is reported; the release is still read on, so that the budget
        // and noise checks below see it.
        let metrics = match self.required(&e, "metrics", "what to compute per group, e.g. [count]")
        {
            Some(n) => self.metrics(n, rk, kind.as_deref().unwrap_or_default()),
            None => Some(Vec::new()),
        };
        let max_state = match e.get("max_state") {
            Some(n) => self.max_state(n).map(Some),
            None => Some(None),
        };
        // A release of a kind that is undeclared or did not compile is not checked further.
        rk?;
        let release = Release {
            kind: kind?,
            window: window?,
            group_by,
            contribution: contribution?,
            k: k?,
            epsilon: epsilon?,
            delta: delta?,
            noise: noise?,
            metrics: metrics?,
            max_state: max_state?,
            pos: node.pos,
            epsilon_pos: eps_node.map_or(node.pos, |n| n.pos),
        };
        if release.noise == NoiseKind::Gaussian && release.delta.0 == 0 {
            self.err(
                node.pos,
                Code::GaussianNeedsDelta,
                format!("{what} uses the discrete Gaussian with δ = 0"),
                "set δ > 0 or use `noise: laplace`",
            );
            return None;
        }
        Some(release)
    }

    /// The aggregated kind: a declared one (a declared kind that did not compile counts, and
    /// is not reported again).
    fn kind_ref(&mut self, n: &Node, what: &str, kinds: &Declared<RecordKind>) -> Option<String> {
        let k = self.string(n, "kind")?;
        if !kinds.declares(&k) {
            self.err(
                n.pos,
                Code::UnknownReference,
                format!("{what} aggregates kind `{k}`, which is not declared"),
                one_of(&k, &kinds.names(), "kinds"),
            );
        }
        Some(k)
    }

    /// The tumbling window, which must divide the budget period (P019).
    fn release_window(&mut self, e: &Entries<'_>, period: Option<Duration>) -> Option<Duration> {
        let n = self.required(e, "window", "the tumbling window, e.g. 1h")?;
        let w = self.duration(n, "window")?;
        if let Some(p) = period
            && !p.0.is_multiple_of(w.0)
        {
            self.err(
                n.pos,
                Code::WindowPeriodMismatch,
                format!("the budget period {p} is not a whole number of {w} windows"),
                format!("use a window that divides {p}, e.g. 1h or 15m"),
            );
        }
        Some(w)
    }

    /// The group key: declared fields (P012) that the kind does not drop or redact (P017).
    fn group_by(&mut self, n: &Node, rk: Option<&RecordKind>, kind: &str) -> Vec<String> {
        let mut group_by = Vec::new();
        for (f, pos) in self.name_list(n, "group_by") {
            if let Some(rk) = rk {
                match (rk.fields.get(&f), rk.transforms.get(&f)) {
                    (None, _) => {
                        let names: Vec<&str> = rk.fields.keys().map(String::as_str).collect();
                        self.err(
                            pos,
                            Code::UnknownGroupByField,
                            format!("group_by field `{f}` is not a field of kind `{kind}`"),
                            one_of(&f, &names, &format!("kinds.{kind}.fields")),
                        );
                    }
                    (Some(_), None | Some(Transform::Redact)) => {
                        self.err(
                            pos,
                            Code::GroupByDroppedField,
                            format!(
                                "group_by field `{f}` is dropped or redacted by the kind's transforms"
                            ),
                            format!(
                                "give `{f}` a transform that keeps information (keep, truncate, coarsen, bucket, pseudonymise) or group by another field"
                            ),
                        );
                    }
                    _ => {}
                }
            }
            group_by.push(f);
        }
        group_by
    }

    /// Contribution bounds, each in 1..=1,000,000 (P018).
    fn contribution(&mut self, n: &Node) -> Option<Contribution> {
        let c = self.fixed(n, "contribution", &["max_groups", "max_rows"])?;
        let mut bound = |key: &str| -> Option<u32> {
            let n = self.required(&c, key, "a whole number ≥ 1")?;
            let v = self.uint(n, key)?;
            match u32::try_from(v) {
                Ok(v) if (1..=1_000_000).contains(&v) => Some(v),
                _ => {
                    self.err(
                        n.pos,
                        Code::InvalidContribution,
                        format!("{key} is {v}; it must be between 1 and 1000000"),
                        format!("bound what one privacy unit adds: set {key} to 1 or more"),
                    );
                    None
                }
            }
        };
        let max_groups = bound("max_groups");
        let max_rows = bound("max_rows");
        Some(Contribution {
            max_groups: max_groups?,
            max_rows: max_rows?,
        })
    }

    /// The cohort floor k ≥ 2 (P008).
    fn cohort_floor(&mut self, n: &Node) -> Option<u32> {
        let v = self.uint(n, "k")?;
        if v < 2 || v > u64::from(u32::MAX) {
            self.err(
                n.pos,
                Code::KTooSmall,
                format!("k is {v}; a group of fewer than 2 people identifies them"),
                "set k to at least 2 (mobility products use 20)",
            );
            return None;
        }
        u32::try_from(v).ok()
    }

    /// δ per window, which partition selection needs to be positive (P007).
    fn release_delta(&mut self, e: &Entries<'_>, what: &str) -> Option<Delta> {
        let node = e.get("delta");
        let delta = match node {
            Some(n) => self.delta(n, "delta"),
            None => Some(Delta(0)),
        };
        if delta == Some(Delta(0)) {
            self.err(
                node.map_or(e.pos, |n| n.pos),
                Code::DeltaOutOfRange,
                format!("{what} has δ = 0, but noisy partition selection needs δ > 0"),
                "set `delta:` to a small probability such as 1e-7",
            );
        }
        delta
    }

    fn noise(&mut self, n: &Node) -> Option<NoiseKind> {
        match self.scalar(n, "noise")? {
            "laplace" => Some(NoiseKind::Laplace),
            "gaussian" => Some(NoiseKind::Gaussian),
            other => {
                self.err(
                    n.pos,
                    Code::InvalidValue,
                    format!("unknown noise `{other}`"),
                    format!(
                        "{}use `laplace` or `gaussian`",
                        suggest(other, &["laplace", "gaussian"])
                    ),
                );
                None
            }
        }
    }

    fn max_state(&mut self, n: &Node) -> Option<u64> {
        match self.uint(n, "max_state")? {
            0 => {
                self.err(
                    n.pos,
                    Code::InvalidValue,
                    "max_state is 0",
                    "set a cap of at least 1 (default 10000000)",
                );
                None
            }
            v => Some(v),
        }
    }

    /// The metrics: a non-empty list, every one readable.
    fn metrics(&mut self, n: &Node, rk: Option<&RecordKind>, kind: &str) -> Option<Vec<Metric>> {
        match &n.value {
            Value::Seq(items) if !items.is_empty() => {
                let mut metrics = Vec::new();
                let mut ok = true;
                for m in items {
                    match self.metric(m, rk, kind) {
                        Some(m) => metrics.push(m),
                        None => ok = false,
                    }
                }
                ok.then_some(metrics)
            }
            _ => {
                self.err(
                    n.pos,
                    Code::WrongType,
                    "metrics must be a non-empty list",
                    "write e.g. `metrics: [count]`",
                );
                None
            }
        }
    }

    fn metric(&mut self, node: &Node, rk: Option<&RecordKind>, kind: &str) -> Option<Metric> {
        let (name, arg, name_pos) = match &node.value {
            Value::Scalar { text, .. } => (text.as_str(), None, node.pos),
            Value::Map(entries) if entries.len() == 1 => (
                entries[0].0.as_scalar().unwrap_or_default(),
                Some(&entries[0].1),
                entries[0].0.pos,
            ),
            _ => {
                self.err(
                    node.pos,
                    Code::WrongType,
                    "a metric must be `count` or one of sum, mean, histogram, quantiles with its settings",
                    "write e.g. `- sum: {field: bytes, bounds: [0, 1000000]}`",
                );
                return None;
            }
        };
        if name == "count" {
            return Some(Metric::Count);
        }
        if !METRICS.contains(&name) {
            self.err(
                name_pos,
                Code::InvalidValue,
                format!("unknown metric `{name}`"),
                format!(
                    "{}use one of: {}",
                    suggest(name, METRICS),
                    METRICS.join(", ")
                ),
            );
            return None;
        }
        let clamped = matches!(name, "sum" | "mean");
        let Some(arg) = arg.filter(|a| !a.is_null()) else {
            let (code, needs, shape) = if clamped {
                (
                    Code::MissingBounds,
                    "clamping bounds",
                    "bounds: [LOW, HIGH]",
                )
            } else {
                (Code::MissingKey, "bins", "bins: [..]")
            };
            self.err(
                name_pos,
                code,
                format!("`{name}` needs a field and its {needs}"),
                format!("write `{name}: {{field: NAME, {shape}}}`"),
            );
            return None;
        };
        let allowed: &[&str] = match name {
            "sum" | "mean" => &["field", "bounds"],
            "histogram" => &["field", "bins"],
            _ => &["field", "bins", "q"],
        };
        let e = self.fixed(arg, &format!("metric `{name}`"), allowed)?;
        let field = self
            .required(&e, "field", "the numeric field aggregated")
            .and_then(|n| self.metric_field(n, rk, kind));
        if clamped {
            let Some(b) = e.get("bounds") else {
                self.err(
                    name_pos,
                    Code::MissingBounds,
                    format!("`{name}` has no clamping bounds"),
                    "add `bounds: [LOW, HIGH]`; every contribution is clamped to them, which is what bounds the noise",
                );
                return None;
            };
            let bounds = self.bounds(b)?;
            let field = field?;
            return Some(if name == "sum" {
                Metric::Sum { field, bounds }
            } else {
                Metric::Mean { field, bounds }
            });
        }
        let bins = self
            .required(&e, "bins", "strictly increasing bin edges")
            .and_then(|n| self.bins(n));
        let q = if name == "quantiles" {
            self.required(&e, "q", "quantiles in (0, 1), e.g. [0.5, 0.9]")
                .and_then(|n| self.quantiles(n))
        } else {
            Some(Vec::new())
        };
        let field = field?;
        let bins = bins?;
        if name == "histogram" {
            Some(Metric::Histogram { field, bins })
        } else {
            Some(Metric::Quantiles { field, bins, q: q? })
        }
    }

    /// A metric's field: declared (P013) and numeric (P025).
    fn metric_field(&mut self, n: &Node, rk: Option<&RecordKind>, kind: &str) -> Option<String> {
        let f = self.string(n, "field")?;
        let Some(rk) = rk else {
            return Some(f);
        };
        match rk.fields.get(&f) {
            None => {
                let names: Vec<&str> = rk.fields.keys().map(String::as_str).collect();
                self.err(
                    n.pos,
                    Code::UnknownField,
                    format!("metric field `{f}` is not a field of kind `{kind}`"),
                    one_of(&f, &names, &format!("kinds.{kind}.fields")),
                );
                None
            }
            Some(t) if !t.is_numeric() => {
                self.err(
                    n.pos,
                    Code::MetricFieldNotNumeric,
                    format!("metric field `{f}` is {}, not a number", t.name()),
                    "aggregate an integer or decimal field",
                );
                None
            }
            Some(_) => Some(f),
        }
    }

    /// Quantiles: a non-empty list of numbers in (0, 1) (P021).
    fn quantiles(&mut self, n: &Node) -> Option<Vec<f64>> {
        let Value::Seq(items) = &n.value else {
            self.err(
                n.pos,
                Code::WrongType,
                "q must be a list",
                "write e.g. `q: [0.5, 0.9]`",
            );
            return None;
        };
        let mut out = Vec::new();
        for it in items {
            let v = self.number(it, "a quantile")?;
            if !(v > 0.0 && v < 1.0) {
                self.err(
                    it.pos,
                    Code::InvalidBins,
                    format!("quantile {v} is not in (0, 1)"),
                    "use values strictly between 0 and 1, e.g. 0.5",
                );
                return None;
            }
            out.push(v);
        }
        if out.is_empty() {
            self.err(
                n.pos,
                Code::InvalidBins,
                "q is empty",
                "list at least one quantile",
            );
            return None;
        }
        Some(out)
    }

    /// Clamping bounds `[LOW, HIGH]`: plain decimals with at most 6 places, in fixed point.
    fn bounds(&mut self, node: &Node) -> Option<Bounds> {
        let items = match &node.value {
            Value::Seq(items) if items.len() == 2 => items,
            _ => {
                self.err(
                    node.pos,
                    Code::MissingBounds,
                    "bounds must be a list of two numbers",
                    "write `bounds: [LOW, HIGH]`",
                );
                return None;
            }
        };
        let texts: Vec<&str> = items
            .iter()
            .filter_map(|n| self.scalar(n, "a bound"))
            .collect();
        if texts.len() != 2 {
            return None;
        }
        let places = texts
            .iter()
            .map(|t| {
                t.split_once('.').map_or(0, |(_, f)| {
                    f.trim_end_matches(|c: char| !c.is_ascii_digit()).len()
                })
            })
            .max()
            .unwrap_or(0);
        if places > 6 || texts.iter().any(|t| t.contains(['e', 'E'])) {
            self.err(
                node.pos,
                Code::InvalidValue,
                "bounds have more than 6 decimal places or use exponents",
                "write plain decimals with at most 6 decimal places",
            );
            return None;
        }
        let mut vals = [0i64; 2];
        for (i, (t, n)) in texts.iter().zip(items).enumerate() {
            let (neg, abs) = match t.strip_prefix('-') {
                Some(a) => (true, a),
                None => (false, *t),
            };
            match units::parse_fixed(abs, places as u32)
                .ok()
                .and_then(|v| i64::try_from(v).ok())
                .filter(|v| *v <= 1i64 << 52)
            {
                Some(v) => vals[i] = if neg { -v } else { v },
                None => {
                    self.err(
                        n.pos,
                        Code::InvalidValue,
                        format!("bound `{t}` is not a number in range"),
                        "use a decimal number with magnitude below 2^52",
                    );
                    return None;
                }
            }
        }
        if vals[0] > vals[1] {
            self.err(
                node.pos,
                Code::InvalidValue,
                format!("bounds [{}, {}] are reversed", texts[0], texts[1]),
                "write the lower bound first",
            );
            return None;
        }
        Some(Bounds {
            lo: vals[0],
            hi: vals[1],
            places: places as u32,
        })
    }

    /// Bin edges: 2 to 1000, strictly increasing (P021).
    fn bins(&mut self, node: &Node) -> Option<Vec<f64>> {
        let Value::Seq(items) = &node.value else {
            self.err(
                node.pos,
                Code::WrongType,
                "bins must be a list of numbers",
                "write e.g. `bins: [0, 10, 50, 100]`",
            );
            return None;
        };
        let mut out = Vec::new();
        for it in items {
            out.push(self.number(it, "a bin edge")?);
        }
        if out.len() < 2 || out.len() > 1000 || out.windows(2).any(|w| w[0] >= w[1]) {
            self.err(
                node.pos,
                Code::InvalidBins,
                "bins must be 2 to 1000 strictly increasing edges",
                "sort the edges and remove duplicates",
            );
            return None;
        }
        Some(out)
    }
}
