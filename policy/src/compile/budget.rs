//! The `budget:` section, and whether the releases fit it (P011).
//!
//! Each budget value is read on its own, so that one unreadable value (say ε) does not hide
//! the checks that need only another one (a release window against the period, P019).

use std::collections::BTreeMap;

use crate::diag::{Code, Pos};
use crate::model::{Budget, Release};
use crate::units::{Delta, Duration, Epsilon};
use crate::yaml::Node;

use super::Ctx;

/// The budget values that could be read.
#[derive(Default)]
pub(super) struct BudgetParts {
    pub(super) period: Option<Duration>,
    epsilon: Option<Epsilon>,
    delta: Option<Delta>,
    pos: Pos,
}

impl BudgetParts {
    /// The budget, if every value could be read.
    pub(super) fn complete(&self) -> Option<Budget> {
        Some(Budget {
            period: self.period?,
            epsilon: self.epsilon?,
            delta: self.delta?,
            pos: self.pos,
        })
    }
}

impl Ctx {
    pub(super) fn budget(&mut self, node: &Node) -> BudgetParts {
        let Some(e) = self.fixed(node, "budget", &["period", "epsilon", "delta"]) else {
            return BudgetParts::default();
        };
        let period = self
            .required(&e, "period", "the accounting period, e.g. 1d")
            .and_then(|n| self.duration(n, "budget.period"));
        let epsilon = self
            .required(&e, "epsilon", "total ε per privacy unit per period")
            .and_then(|n| self.epsilon(n, "budget.epsilon"));
        let delta = match e.get("delta") {
            Some(n) => self.delta(n, "budget.delta"),
            None => Some(Delta(0)),
        };
        BudgetParts {
            period,
            epsilon,
            delta,
            pos: node.pos,
        }
    }

    /// P011: every release alone, and all of them together, within the budget per period.
    pub(super) fn check_budget(&mut self, b: &Budget, releases: &BTreeMap<String, Release>) {
        let mut total_eps: u128 = 0;
        let mut total_delta: u128 = 0;
        // Report in file order so the first release that overflows is named.
        let mut ordered: Vec<(&String, &Release)> = releases.iter().collect();
        ordered.sort_by_key(|(_, r)| r.pos);
        for (name, r) in ordered {
            if !b.period.0.is_multiple_of(r.window.0) {
                continue; // reported as P019
            }
            let per_period = u128::from(b.period.0 / r.window.0);
            let eps = per_period * u128::from(r.epsilon.0);
            let delta = per_period * u128::from(r.delta.0);
            total_eps += eps;
            total_delta += delta;
            let allowed = u128::from(b.epsilon.0) / u128::from(r.epsilon.0);
            if eps > u128::from(b.epsilon.0) || delta > u128::from(b.delta.0) {
                let alone = if eps > u128::from(b.epsilon.0) {
                    format!(
                        "ε {} × {per_period} windows per {} = {} > budget ε {}",
                        r.epsilon,
                        b.period,
                        Epsilon(u64::try_from(eps).unwrap_or(u64::MAX)),
                        b.epsilon
                    )
                } else {
                    format!(
                        "δ {} × {per_period} windows per {} exceeds budget δ {}",
                        r.delta, b.period, b.delta
                    )
                };
                self.err(
                    r.epsilon_pos,
                    Code::BudgetExceeded,
                    format!("release `{name}` cannot fit the budget on its own: {alone}"),
                    format!(
                        "the budget allows {allowed} windows of this release per period: lower its ε/δ, lengthen its window, or raise the budget"
                    ),
                );
            } else if total_eps > u128::from(b.epsilon.0) || total_delta > u128::from(b.delta.0) {
                self.err(
                    r.epsilon_pos,
                    Code::BudgetExceeded,
                    format!(
                        "with release `{name}` the releases together spend ε {} / δ {} per {}, over the budget ε {} / δ {}",
                        Epsilon(u64::try_from(total_eps).unwrap_or(u64::MAX)),
                        Delta(u64::try_from(total_delta).unwrap_or(u64::MAX)),
                        b.period,
                        b.epsilon,
                        b.delta
                    ),
                    "lower ε/δ of some releases, lengthen their windows, or raise the budget",
                );
            }
        }
    }
}
