//! `mecgw policy test`: running the test cases a compliance team writes into a policy.
//!
//! This module owns matching actual outputs against expected ones. Each case runs a fresh
//! engine with the case's test keys, an in-memory budget and a seeded noise source (the only
//! place a seeded source is used outside unit tests). Expected objects are partial: every key
//! they name must match, numbers within the case's tolerance; other keys are ignored. Outputs
//! are compared in order, and their number must match.

use serde_json::Value;

use crate::budget::Ledger;
use crate::engine::{Engine, EngineError, KeySource};
use crate::model::{Policy, TestCase};

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Where the case starts in the policy file.
    pub pos: crate::diag::Pos,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

/// Runs every test case of `policy`.
pub fn run_all(policy: &Policy, src: &str) -> Vec<CaseResult> {
    policy
        .tests
        .iter()
        .map(|case| CaseResult {
            name: case.name.clone(),
            pos: case.pos,
            failures: match run_case(policy, src, case) {
                Ok(f) => f,
                Err(e) => vec![format!("the case could not run: {e}")],
            },
        })
        .collect()
}

/// Runs one case; returns its failures.
pub fn run_case(policy: &Policy, src: &str, case: &TestCase) -> Result<Vec<String>, EngineError> {
    use rand::SeedableRng as _;
    let ledger = Ledger::in_memory(
        policy.budget.epsilon,
        policy.budget.delta,
        policy.budget.period.0,
    );
    let rng = rand::rngs::StdRng::seed_from_u64(case.seed.unwrap_or(0));
    let mut engine = Engine::new(
        policy,
        src,
        KeySource::Test(&case.keys),
        ledger,
        Box::new(rng),
    )?;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    {
        let mut emit = |o: &crate::engine::Output<'_>| {
            out.push(o.to_value());
            Ok(())
        };
        for (i, rec) in case.input.iter().enumerate() {
            if let Err(e) = engine.process_value(i as u64 + 1, rec.clone(), &mut emit) {
                failures.push(format!("input {}: {e}", i + 1));
            }
        }
        if let Err(e) = engine.finish(&mut emit) {
            failures.push(format!("closing windows: {e}"));
        }
    }
    for (line, reason) in &engine.stats.bad_samples {
        failures.push(format!("input {line} was rejected: {reason}"));
    }
    let tol = case.tolerance.unwrap_or(0.0);
    for (i, want) in case.expect.iter().enumerate() {
        match out.get(i) {
            None => failures.push(format!("expected output {} is missing: {want}", i + 1)),
            Some(got) => {
                if let Some(why) = mismatch(want, got, tol, "") {
                    failures.push(format!("output {}: {why}", i + 1));
                }
            }
        }
    }
    for (i, extra) in out.iter().enumerate().skip(case.expect.len()) {
        failures.push(format!("unexpected output {}: {extra}", i + 1));
    }
    Ok(failures)
}

/// Where `want` (partial) differs from `got`, if anywhere.
pub fn mismatch(want: &Value, got: &Value, tol: f64, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    None => return Some(format!("{p} is absent (expected {wv})")),
                    Some(gv) => {
                        if let Some(m) = mismatch(wv, gv, tol, &p) {
                            return Some(m);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return Some(format!(
                    "{path} has {} items, expected {}",
                    g.len(),
                    w.len()
                ));
            }
            w.iter()
                .zip(g)
                .enumerate()
                .find_map(|(i, (a, b))| mismatch(a, b, tol, &format!("{path}[{i}]")))
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            ((a - b).abs() > tol).then(|| format!("{path} is {b}, expected {a} (tolerance {tol})"))
        }
        _ => (want != got).then(|| format!("{path} is {got}, expected {want}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_matching_with_tolerance() {
        let got = json!({"a": 1, "b": {"c": 10.5, "d": [1, 2]}, "e": "x"});
        assert_eq!(mismatch(&json!({"b": {"c": 10}}), &got, 1.0, ""), None);
        assert!(
            mismatch(&json!({"b": {"c": 10}}), &got, 0.1, "")
                .unwrap()
                .contains(".b.c")
        );
        assert!(mismatch(&json!({"e": "y"}), &got, 0.0, "").is_some());
        assert!(
            mismatch(&json!({"f": 1}), &got, 0.0, "")
                .unwrap()
                .contains("absent")
        );
        assert!(mismatch(&json!({"b": {"d": [1]}}), &got, 0.0, "").is_some());
    }
}
