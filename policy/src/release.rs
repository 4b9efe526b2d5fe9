//! Releases: turning a closed window's groups into differentially private cells.
//!
//! This module owns the privacy mechanism of a release: how its ε and δ are split, the noise
//! of each metric, noisy partition selection, and the cohort floor. It never decides whether
//! the budget allows a release (`budget` does) and never writes anything.
//!
//! The mechanism, per window, with contribution bounds G = `max_groups`, R = `max_rows`:
//! * ε is split into `shares` equal parts: one for partition selection, one per count, sum,
//!   histogram or quantile metric, two per mean (sum and count).
//! * Partition selection: the number of distinct privacy units in a group gets discrete
//!   Laplace noise of scale G/ε_share (L1 sensitivity G). A group is released only if its
//!   true unit count is at least k **and** its noisy count is at least τ = k + m with
//!   m = ⌈b·ln(G/δ_sel)⌉ + 1. A group that one person's presence creates or removes sits at
//!   k−1 ↔ k units, so it appears with probability at most p^m ≤ δ_sel/G (p = e^(−1/b)); over
//!   the G groups one person can touch, the selection is (ε_share, δ_sel)-DP. δ_sel = δ with
//!   Laplace metrics, δ/2 with Gaussian ones.
//! * Laplace metrics: discrete Laplace with scale L1/ε_share, L1 = G·R·(per-row magnitude).
//! * Gaussian metrics: discrete Gaussian with σ² = L2²/(2ρ), L2² = G·R²·(magnitude)², where ρ
//!   solves ε_share = ρ + 2√(ρ·ln(1/δ_share)) (ρ-zCDP ⇒ (ε, δ)-DP, Bun-Steinke 2016) and
//!   δ_share = (δ/2)/(shares−1); σ² is rounded up to an integer, which only adds noise.
//!
//! By basic composition a window's release costs exactly the release's (ε, δ).

use serde_json::{Map, Value};

use crate::aggregate::{GroupAcc, Layout};
use crate::model::{Metric, NoiseKind, Release};
use crate::noise::{
    DiscreteGaussian, DiscreteLaplace, MAX_GAUSSIAN_SIGMA2, NoiseError, Randomness,
};
use crate::units::EPSILON_SCALE;

/// A noise sampler for one noisy quantity.
#[derive(Debug, Clone, Copy)]
pub enum Sampler {
    /// Discrete Laplace.
    Laplace(DiscreteLaplace),
    /// Discrete Gaussian.
    Gaussian(DiscreteGaussian),
}

impl Sampler {
    fn sample(&self, rng: &mut dyn Randomness) -> Result<i64, NoiseError> {
        match self {
            Sampler::Laplace(l) => l.sample(rng),
            Sampler::Gaussian(g) => g.sample(rng),
        }
    }

    /// Scale b (Laplace) or σ (Gaussian).
    pub fn scale(&self) -> f64 {
        match self {
            Sampler::Laplace(l) => l.scale(),
            Sampler::Gaussian(g) => (g.sigma2() as f64).sqrt(),
        }
    }

    /// Smallest x with P(|noise| ≤ x) ≥ 95% (exact for Laplace; 1.96σ for the Gaussian).
    pub fn error95(&self) -> f64 {
        match self {
            Sampler::Laplace(l) => {
                let p = (-1.0 / l.scale()).exp();
                // P(|Z| > x) = 2 p^(x+1) / (1 + p)
                let mut x = 0.0f64;
                while 2.0 * p.powf(x + 1.0) / (1.0 + p) > 0.05 && x < 1e15 {
                    x = (x * 2.0).max(1.0);
                }
                let (mut lo, mut hi) = ((x / 2.0).floor(), x);
                while hi - lo > 1.0 {
                    let mid = ((lo + hi) / 2.0).floor();
                    if 2.0 * p.powf(mid + 1.0) / (1.0 + p) > 0.05 {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                hi
            }
            Sampler::Gaussian(g) => 1.96 * (g.sigma2() as f64).sqrt(),
        }
    }

    /// `laplace` or `gaussian`.
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Laplace(_) => "laplace",
            Sampler::Gaussian(_) => "gaussian",
        }
    }
}

/// Why a release's mechanism could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MechanismError {
    /// A noise parameter is outside what the exact samplers support.
    #[error("release `{release}`: {what}: {source}")]
    Noise {
        release: String,
        what: String,
        source: NoiseError,
    },
}

/// One noisy quantity of a metric, with what it costs to explain.
#[derive(Debug, Clone)]
pub struct NoisyQuantity {
    /// What it is (`count`, `sum_bytes`, `mean_rtt.count`, …).
    pub label: String,
    /// Sensitivity used (L1 for Laplace, L2 for Gaussian), in metric units.
    pub sensitivity: f64,
    /// The sampler.
    pub sampler: Sampler,
    /// Divisor to metric units (10^places for sums and means, else 1).
    pub unit_scale: f64,
}

/// The privacy mechanism of one release.
#[derive(Debug, Clone)]
pub struct Mechanism {
    /// Number of equal ε parts.
    pub shares: u32,
    /// Partition-selection noise on distinct-unit counts.
    pub selection: DiscreteLaplace,
    /// τ: the noisy unit count a group must reach.
    pub threshold: u64,
    /// δ spent on partition selection.
    pub selection_delta: f64,
    /// Probability that a group with exactly k units is released.
    pub release_probability_at_k: f64,
    /// Noise per metric (a mean has two quantities).
    pub quantities: Vec<Vec<NoisyQuantity>>,
    /// The cohort floor.
    pub k: u32,
}

fn sq(x: u128) -> Option<u128> {
    x.checked_mul(x)
}

impl Mechanism {
    /// Builds and checks the mechanism of `release`.
    pub fn new(name: &str, release: &Release) -> Result<Self, MechanismError> {
        let g = u128::from(release.contribution.max_groups);
        let r = u128::from(release.contribution.max_rows);
        let shares: u32 = 1 + release.metrics.iter().map(Metric::shares).sum::<u32>();
        let en = u128::from(release.epsilon.0);
        let scale = u128::from(EPSILON_SCALE) * u128::from(shares);
        let err = |what: &str, source| MechanismError::Noise {
            release: name.to_owned(),
            what: what.to_owned(),
            source,
        };
        let selection =
            DiscreteLaplace::new(g * scale, en).map_err(|e| err("partition selection", e))?;
        let delta = release.delta.as_f64();
        let selection_delta = match release.noise {
            NoiseKind::Laplace => delta,
            NoiseKind::Gaussian => delta / 2.0,
        };
        let b = selection.scale();
        let m = (b * (g as f64 / selection_delta).ln()).ceil().max(0.0) + 1.0;
        // `m as u64` saturates for absurd scales; so does the threshold (nothing is released).
        let threshold = u64::from(release.k).saturating_add(m as u64);
        let p = (-1.0 / b).exp();
        let release_probability_at_k = p.powf(m) / (1.0 + p);

        let eps_share = release.epsilon.as_f64() / f64::from(shares);
        let gaussian_shares = shares.saturating_sub(1).max(1);
        let delta_share = (delta / 2.0) / f64::from(gaussian_shares);
        let make = |label: String,
                    per_row: u128,
                    unit_scale: f64|
         -> Result<NoisyQuantity, MechanismError> {
            match release.noise {
                NoiseKind::Laplace => {
                    let l1 = g * r * per_row.max(1);
                    let s = DiscreteLaplace::new(l1 * scale, en).map_err(|e| err(&label, e))?;
                    Ok(NoisyQuantity {
                        label,
                        sensitivity: l1 as f64 / unit_scale,
                        sampler: Sampler::Laplace(s),
                        unit_scale,
                    })
                }
                NoiseKind::Gaussian => {
                    let l2sq = sq(r * per_row.max(1))
                        .and_then(|v| v.checked_mul(g))
                        .ok_or_else(|| err(&label, NoiseError::Overflow))?;
                    let ln = (1.0 / delta_share).ln();
                    let rho = ((ln + eps_share).sqrt() - ln.sqrt()).powi(2) * (1.0 - 1e-9);
                    let sigma2 = (l2sq as f64 / (2.0 * rho)).ceil();
                    if !sigma2.is_finite() || sigma2 > MAX_GAUSSIAN_SIGMA2 as f64 {
                        return Err(err(
                            &label,
                            NoiseError::Parameter(
                                "discrete Gaussian variance above 2^100: lower the bounds or contribution, or use laplace",
                            ),
                        ));
                    }
                    let s = DiscreteGaussian::new((sigma2 as u128).max(1))
                        .map_err(|e| err(&label, e))?;
                    Ok(NoisyQuantity {
                        label,
                        sensitivity: (l2sq as f64).sqrt() / unit_scale,
                        sampler: Sampler::Gaussian(s),
                        unit_scale,
                    })
                }
            }
        };
        let mut quantities = Vec::new();
        for metric in &release.metrics {
            let q = match metric {
                Metric::Count => vec![make("count".into(), 1, 1.0)?],
                Metric::Sum { field, bounds } => {
                    vec![make(
                        format!("sum_{field}"),
                        u128::from(bounds.magnitude()),
                        bounds.scale() as f64,
                    )?]
                }
                Metric::Mean { field, bounds } => vec![
                    make(
                        format!("mean_{field}.sum"),
                        u128::from(bounds.magnitude()),
                        bounds.scale() as f64,
                    )?,
                    make(format!("mean_{field}.count"), 1, 1.0)?,
                ],
                Metric::Histogram { field, .. } => {
                    vec![make(format!("histogram_{field}"), 1, 1.0)?]
                }
                Metric::Quantiles { field, .. } => {
                    vec![make(format!("quantiles_{field}"), 1, 1.0)?]
                }
            };
            quantities.push(q);
        }
        Ok(Self {
            shares,
            selection,
            threshold,
            selection_delta,
            release_probability_at_k,
            quantities,
            k: release.k,
        })
    }

    /// Releases the groups of one closed window: partition selection, cohort floor, noise.
    /// Selection noise is drawn for every group, released or not.
    pub fn release(
        &self,
        layout: &Layout,
        group_by: &[String],
        groups: Vec<GroupAcc>,
        rng: &mut dyn Randomness,
    ) -> Result<ReleasedWindow, NoiseError> {
        let mut out = ReleasedWindow::default();
        for acc in groups {
            let z = self.selection.sample(rng)?;
            let noisy_units = i128::from(acc.units) + i128::from(z);
            if acc.units < u64::from(self.k) {
                out.below_k += 1;
                continue;
            }
            if noisy_units < i128::from(self.threshold) {
                out.below_threshold += 1;
                continue;
            }
            let mut metrics = Map::new();
            metrics.insert("units".into(), Value::from(noisy_units.max(0) as i64));
            for (i, (metric, qs)) in layout.metrics().iter().zip(&self.quantities).enumerate() {
                let slots = &acc.slots[layout.slots_of(i)];
                let (name, value) = match metric {
                    Metric::Count => {
                        let n = i128::from(acc.rows) + i128::from(qs[0].sampler.sample(rng)?);
                        ("count".to_owned(), Value::from(n.max(0) as i64))
                    }
                    Metric::Sum { field, bounds } => {
                        let s = i128::from(slots[0]) + i128::from(qs[0].sampler.sample(rng)?);
                        (format!("sum_{field}"), fixed_value(s, bounds.places))
                    }
                    Metric::Mean { field, bounds } => {
                        let s = i128::from(slots[0]) + i128::from(qs[0].sampler.sample(rng)?);
                        let n =
                            (i128::from(slots[1]) + i128::from(qs[1].sampler.sample(rng)?)).max(1);
                        let scale = bounds.scale() as f64;
                        let mean =
                            (s as f64 / n as f64).clamp(bounds.lo as f64, bounds.hi as f64) / scale;
                        let rounded = (mean * scale).round() / scale;
                        (
                            format!("mean_{field}"),
                            serde_json::Number::from_f64(rounded)
                                .map_or(Value::Null, Value::Number),
                        )
                    }
                    Metric::Histogram { field, .. } => {
                        let mut h = Vec::with_capacity(slots.len());
                        for &c in slots {
                            h.push(Value::from(
                                (i128::from(c) + i128::from(qs[0].sampler.sample(rng)?)).max(0)
                                    as i64,
                            ));
                        }
                        (format!("histogram_{field}"), Value::Array(h))
                    }
                    Metric::Quantiles { field, bins, q } => {
                        let mut h = Vec::with_capacity(slots.len());
                        for &c in slots {
                            h.push(
                                (i128::from(c) + i128::from(qs[0].sampler.sample(rng)?)).max(0)
                                    as f64,
                            );
                        }
                        let mut obj = Map::new();
                        for &qq in q {
                            let v =
                                (quantile_from_histogram(bins, &h, qq) * 1000.0).round() / 1000.0;
                            obj.insert(
                                format!("{qq}"),
                                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                            );
                        }
                        (format!("quantiles_{field}"), Value::Object(obj))
                    }
                };
                metrics.insert(name, value);
            }
            let group: Map<String, Value> = group_by.iter().cloned().zip(acc.key).collect();
            out.cells.push(Cell { group, metrics });
        }
        Ok(out)
    }
}

fn fixed_value(v: i128, places: u32) -> Value {
    if places == 0 {
        return Value::from(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
    }
    let f = v as f64 / 10f64.powi(places as i32);
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The q-quantile of a histogram over `edges`, interpolating linearly inside the bin.
pub fn quantile_from_histogram(edges: &[f64], counts: &[f64], q: f64) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return edges[0];
    }
    let target = q * total;
    let mut cum = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        if cum + c >= target && c > 0.0 {
            let frac = (target - cum) / c;
            return edges[i] + frac * (edges[i + 1] - edges[i]);
        }
        cum += c;
    }
    edges[edges.len() - 1]
}

/// One released group.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Group-by field → transformed value.
    pub group: Map<String, Value>,
    /// Metric name → noisy value.
    pub metrics: Map<String, Value>,
}

/// The outcome of releasing one window.
#[derive(Debug, Clone, Default)]
pub struct ReleasedWindow {
    /// Released cells, in group-key order.
    pub cells: Vec<Cell>,
    /// Groups withheld by the cohort floor.
    pub below_k: u64,
    /// Groups withheld by noisy partition selection.
    pub below_threshold: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::WindowState;
    use crate::model::Contribution;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn release() -> Release {
        let p = crate::compile(crate::compile::tests::GOOD).unwrap();
        p.releases["per_cell"].clone()
    }

    #[test]
    fn mechanism_parameters() {
        let r = release();
        let m = Mechanism::new("per_cell", &r).unwrap();
        // selection + count + sum: ε 0.1 / 3 each; G = 1, R = 4.
        assert_eq!(m.shares, 3);
        assert!((m.selection.scale() - 30.0).abs() < 1e-9);
        assert!((m.quantities[0][0].sampler.scale() - 120.0).abs() < 1e-9);
        // τ = k + ⌈30·ln(1/1e-7)⌉ + 1 = 20 + 484 + 1
        assert_eq!(m.threshold, 20 + 484 + 1);
        assert!(m.release_probability_at_k <= 1e-7);
        let mut g = r.clone();
        g.noise = NoiseKind::Gaussian;
        let m = Mechanism::new("per_cell", &g).unwrap();
        assert_eq!(m.quantities[1][0].sampler.name(), "gaussian");
    }

    #[test]
    fn quantiles_interpolate() {
        let e = [0.0, 10.0, 20.0];
        assert_eq!(quantile_from_histogram(&e, &[5.0, 5.0], 0.5), 10.0);
        assert_eq!(quantile_from_histogram(&e, &[0.0, 4.0], 0.5), 15.0);
        assert_eq!(quantile_from_histogram(&e, &[0.0, 0.0], 0.5), 0.0);
    }

    /// Over many trials with groups just below, at and above k, no group below k is ever
    /// released, and well-populated groups are.
    #[test]
    fn no_group_below_k_is_released_over_many_trials() {
        let mut r = release();
        r.k = 3;
        r.epsilon = crate::units::Epsilon(50_000_000_000); // large ε: the threshold sits near k
        r.delta = crate::units::Delta(100_000_000_000_000_000); // 0.1
        r.metrics = vec![Metric::Count];
        let m = Mechanism::new("t", &r).unwrap();
        assert_eq!(m.threshold, 5);
        let layout = Layout::new(&r.metrics);
        let mut rng = StdRng::seed_from_u64(42);
        let mut big_released = 0;
        for trial in 0..2_000u64 {
            let mut w = WindowState::new(0);
            // Group "g<n>" has n distinct units, n = 1..=6.
            for n in 1u64..=6 {
                for u in 0..n {
                    w.add(
                        &layout,
                        Contribution {
                            max_groups: 1,
                            max_rows: 4,
                        },
                        u64::MAX,
                        trial * 100 + n * 10 + u,
                        &[&Value::from(n)],
                        &Map::new(),
                    );
                }
            }
            let out = m
                .release(&layout, &["n".into()], w.into_groups(), &mut rng)
                .unwrap();
            for c in &out.cells {
                let n = c.group["n"].as_u64().unwrap();
                assert!(n >= 3, "group of {n} units released");
                if n == 6 {
                    big_released += 1;
                }
            }
            assert!(out.below_k == 2);
        }
        assert!(big_released > 1_900, "{big_released}");
    }
}
