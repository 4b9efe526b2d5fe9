//! Compiling a policy file: positioned YAML tree → typed [`Policy`], reporting every error.
//!
//! This module owns every check of `mecgw policy check`. It never stops at the first problem:
//! each section is read as far as it can be, and the cross-references (fields, keys, kinds,
//! releases, budget) are checked on whatever could be read. A name that is declared but could
//! not be read is remembered as such, so references to it are not reported a second time as
//! undeclared. It never touches key files or records.
//!
//! [`compile`] is the one entry point. The sections are read by submodules, by what they
//! compile: `read` (the shapes and quantities every section is made of), `budget` (the budget
//! and whether the releases fit it), `keys`, `kinds` (record kinds and their fields),
//! `transforms`, `releases` (windows, contribution bounds, privacy parameters, metrics),
//! `destinations` and `cases` (test cases).

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Code, Diagnostic, Diagnostics, Pos};
use crate::model::Policy;
use crate::yaml::{self, Node};

mod budget;
mod cases;
mod destinations;
mod keys;
mod kinds;
mod read;
mod releases;
mod transforms;

pub use read::MAX_ENTRIES;

/// Compiles policy text. On failure, every diagnostic found, sorted by position.
pub fn compile(src: &str) -> Result<Policy, Diagnostics> {
    let root = yaml::parse(src).map_err(|d| Diagnostics(vec![d]))?;
    let mut cx = Ctx::default();
    let policy = cx.policy(&root);
    if cx.diags.is_empty()
        && let Some(p) = policy
    {
        return Ok(p);
    }
    let mut diags = cx.diags;
    diags.sort_by_key(|a| (a.pos, a.code));
    diags.dedup();
    if diags.is_empty() {
        // Unreachable in practice: a section that could not be read always reports why.
        diags.push(Diagnostic::new(
            root.pos,
            Code::InvalidValue,
            "the policy could not be read",
            "check the structure against docs/policy.md",
        ));
    }
    Err(Diagnostics(diags))
}

/// The diagnostics found so far; every section reader reports into it.
#[derive(Default)]
struct Ctx {
    diags: Vec<Diagnostic>,
}

/// The entries of one named section: those that compiled, and the names of those that did
/// not (already reported), so that a reference to them is not reported again as undeclared.
struct Declared<T> {
    ok: BTreeMap<String, T>,
    failed: BTreeSet<String>,
}

impl<T> Default for Declared<T> {
    fn default() -> Self {
        Self {
            ok: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }
}

impl<T> Declared<T> {
    /// Records the outcome of compiling the entry `name`.
    fn add(&mut self, name: String, compiled: Option<T>) {
        match compiled {
            Some(t) => {
                self.ok.insert(name, t);
            }
            None => {
                self.failed.insert(name);
            }
        }
    }

    /// The entry, if it compiled.
    fn get(&self, name: &str) -> Option<&T> {
        self.ok.get(name)
    }

    /// True if the section declares `name`, whether or not it compiled.
    fn declares(&self, name: &str) -> bool {
        self.ok.contains_key(name) || self.failed.contains(name)
    }

    /// Every declared name, in order.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .ok
            .keys()
            .chain(&self.failed)
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }
}

impl Ctx {
    fn err(&mut self, pos: Pos, code: Code, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, code, msg, help));
    }

    fn policy(&mut self, root: &Node) -> Option<Policy> {
        let top = self.fixed(
            root,
            "the policy",
            &[
                "version",
                "name",
                "description",
                "budget",
                "keys",
                "kinds",
                "releases",
                "destinations",
                "tests",
            ],
        )?;
        let version = self
            .required(&top, "version", "the policy language version, 1")
            .and_then(|n| self.version(n));
        let name = top.get("name").and_then(|n| self.string(n, "name"));
        let description = top
            .get("description")
            .and_then(|n| self.string(n, "description"));
        let budget = self
            .required(
                &top,
                "budget",
                "period, epsilon and delta shared by all releases",
            )
            .map(|n| self.budget(n))
            .unwrap_or_default();
        let keys = self.keys(top.get("keys"));
        let kinds = match self.required(&top, "kinds", "the record kinds this policy covers") {
            Some(n) => self.kinds(n, &keys),
            None => Declared::default(),
        };
        let releases = self.releases(top.get("releases"), &kinds, budget.period);
        if let Some(b) = budget.complete() {
            self.check_budget(&b, &releases.ok);
        }
        self.check_mechanisms(&releases.ok);
        let destinations = self.destinations(top.get("destinations"), &kinds, &releases);
        let tests = self.test_cases(top.get("tests"), &keys);
        Some(Policy {
            version: version?,
            name,
            description,
            budget: budget.complete()?,
            keys: keys.ok,
            kinds: kinds.ok,
            releases: releases.ok,
            destinations,
            tests,
        })
    }

    fn version(&mut self, n: &Node) -> Option<u32> {
        match self.uint(n, "version")? {
            1 => Some(1),
            v => {
                self.err(
                    n.pos,
                    Code::UnsupportedVersion,
                    format!("policy language version {v} is not supported"),
                    "set `version: 1`",
                );
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::units::Epsilon;

    pub(crate) const GOOD: &str = r#"
version: 1
budget: {period: 1d, epsilon: 2.4, delta: 1e-5}
keys:
  subscriber: {path: keys/subscriber.key, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields: {imsi: string, ue_ip: ip, start: timestamp, bytes: integer, cell: string}
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      ue_ip: {truncate: {ipv4: 24, ipv6: 48}}
      start: {bucket: {width: 15m}}
      cell: keep
releases:
  per_cell:
    kind: flow
    window: 1h
    group_by: [cell]
    contribution: {max_groups: 1, max_rows: 4}
    k: 20
    epsilon: 0.1
    delta: 1e-7
    metrics: [count, {sum: {field: bytes, bounds: [0, 1000000]}}]
destinations:
  stats: {region: EU-DE, releases: [per_cell]}
"#;

    fn codes(src: &str) -> Vec<(String, &'static str)> {
        compile(src)
            .unwrap_err()
            .0
            .iter()
            .map(|d| (d.pos.to_string(), d.code.as_str()))
            .collect()
    }

    #[test]
    fn good_policy_compiles() {
        let p = compile(GOOD).unwrap();
        assert_eq!(p.kinds["flow"].transforms.len(), 4);
        assert_eq!(p.releases["per_cell"].epsilon, Epsilon(100_000_000));
        assert_eq!(p.releases["per_cell"].metrics.len(), 2);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let src = GOOD
            .replace("k: 20", "k: 1")
            .replace("epsilon: 0.1", "epsilon: 0")
            .replace("group_by: [cell]", "group_by: [cel]")
            .replace("bounds: [0, 1000000]", "field2: x")
            .replace("delta: 1e-5}", "delta: 1e-5, colour: red}");
        let c = codes(&src);
        let only: Vec<&str> = c.iter().map(|(_, c)| *c).collect();
        for want in ["P002", "P008", "P006", "P012"] {
            assert!(only.contains(&want), "{want} missing from {c:?}");
        }
        assert!(c.contains(&("3:49".to_owned(), "P002")), "{c:?}");
    }

    proptest::proptest! {
        /// Arbitrary text never panics the compiler.
        #[test]
        fn random_text_never_panics(src in "\\PC{0,400}") {
            let _ = compile(&src);
        }

        /// Random byte-level mutations of a valid policy never panic the compiler, and every
        /// failure carries at least one positioned diagnostic.
        #[test]
        fn mutated_policies_never_panic(edits in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..8)) {
            let mut bytes = GOOD.as_bytes().to_vec();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            if let Ok(src) = std::str::from_utf8(&bytes)
                && let Err(d) = compile(src) {
                    proptest::prop_assert!(!d.0.is_empty());
                    proptest::prop_assert!(d.0.iter().all(|d| d.pos.line >= 1 && d.pos.col >= 1));
                }
        }
    }

    #[test]
    fn budget_overflow_is_reported_at_the_release() {
        let src = GOOD.replace("epsilon: 0.1", "epsilon: 0.2");
        let c = codes(&src);
        assert_eq!(c, vec![("23:14".to_owned(), "P011")]);
    }
}
