//! The `tests:` section: the compliance team's test cases for `mecgw policy test` (their
//! keys, seed, tolerance, input records and expected outputs).

use std::collections::BTreeMap;

use crate::diag::Code;
use crate::model::{KeySpec, TestCase};
use crate::yaml::{Node, Value};

use super::read::Entries;
use super::{Ctx, Declared};

impl Ctx {
    pub(super) fn test_cases(
        &mut self,
        node: Option<&Node>,
        keys: &Declared<KeySpec>,
    ) -> Vec<TestCase> {
        let Some(n) = node else {
            return Vec::new();
        };
        match &n.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|item| self.test_case(item, keys))
                .collect(),
            _ if n.is_null() => Vec::new(),
            _ => {
                self.err(
                    n.pos,
                    Code::WrongType,
                    format!("tests must be a list, found {}", n.shape()),
                    "write tests as a list of `- name: ...` cases",
                );
                Vec::new()
            }
        }
    }

    fn test_case(&mut self, node: &Node, keys: &Declared<KeySpec>) -> Option<TestCase> {
        let e = self.fixed(
            node,
            "a test case",
            &["name", "keys", "seed", "tolerance", "input", "expect"],
        )?;
        let name = self
            .required(&e, "name", "what the case shows")
            .and_then(|n| self.string(n, "name"));
        let test_keys = match e.get("keys") {
            Some(n) => self.test_keys(n, keys),
            None => BTreeMap::new(),
        };
        let seed = e.get("seed").and_then(|n| self.uint(n, "seed"));
        let tolerance = e.get("tolerance").and_then(|n| self.number(n, "tolerance"));
        let input = self.records(&e, "input");
        let expect = self.records(&e, "expect");
        Some(TestCase {
            name: name?,
            keys: test_keys,
            seed,
            tolerance,
            input: input?,
            expect: expect?,
            pos: node.pos,
        })
    }

    /// Test key material (hex, at least 32 bytes) for declared keys.
    fn test_keys(&mut self, n: &Node, keys: &Declared<KeySpec>) -> BTreeMap<String, String> {
        let mut test_keys = BTreeMap::new();
        for (k, pos, v) in self.named(n, "test keys") {
            if !keys.declares(&k) {
                self.err(
                    pos,
                    Code::UnknownReference,
                    format!("test key `{k}` is not declared under keys"),
                    "name a key declared under `keys:`",
                );
                continue;
            }
            let Some(hex) = self.string(v, "a test key") else {
                continue;
            };
            if crate::hex::decode(&hex).is_none_or(|b| b.len() < crate::keys::MIN_KEY_BYTES) {
                self.err(
                    v.pos,
                    Code::InvalidTestCase,
                    "a test key must be at least 64 hex digits (32 bytes)",
                    "write e.g. 64 hex digits; never put a production key in a policy file",
                );
                continue;
            }
            test_keys.insert(k, hex);
        }
        test_keys
    }

    /// The records under `key` (`input` or `expect`): a list of mappings, as JSON.
    fn records(&mut self, e: &Entries<'_>, key: &str) -> Option<Vec<serde_json::Value>> {
        let n = self.required(e, key, "a list of JSON objects")?;
        match &n.value {
            Value::Seq(items) => {
                let mut out = Vec::new();
                for it in items {
                    if !matches!(it.value, Value::Map(_)) {
                        self.err(
                            it.pos,
                            Code::InvalidTestCase,
                            format!("each {key} entry must be a mapping"),
                            "write each record as `- {field: value, ...}`",
                        );
                        return None;
                    }
                    out.push(it.to_json());
                }
                Some(out)
            }
            _ if n.is_null() => Some(Vec::new()),
            _ => {
                self.err(
                    n.pos,
                    Code::InvalidTestCase,
                    format!("{key} must be a list"),
                    "write a list of records",
                );
                None
            }
        }
    }
}
