//! The `keys:` section: pseudonymisation key declarations (a path and a rotation). Key files
//! are never read here.

use crate::model::KeySpec;
use crate::yaml::Node;

use super::{Ctx, Declared};

impl Ctx {
    pub(super) fn keys(&mut self, node: Option<&Node>) -> Declared<KeySpec> {
        let mut keys = Declared::default();
        if let Some(n) = node {
            for (name, _, node) in self.named(n, "keys") {
                let key = self.key(node, &name);
                keys.add(name, key);
            }
        }
        keys
    }

    fn key(&mut self, node: &Node, name: &str) -> Option<KeySpec> {
        let e = self.fixed(node, &format!("key `{name}`"), &["path", "rotation"])?;
        let path = self
            .required(&e, "path", "a key file or directory")
            .and_then(|n| self.string(n, "path"));
        let rotation = self
            .required(&e, "rotation", "the key epoch length, e.g. 1d")
            .and_then(|n| self.duration(n, "rotation"));
        Some(KeySpec {
            path: path?,
            rotation: rotation?,
            pos: node.pos,
        })
    }
}
