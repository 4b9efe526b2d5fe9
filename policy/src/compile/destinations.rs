//! The `destinations:` section: where transformed records and releases may go, and in which
//! region. Every kind and release named must be declared (P015).

use std::collections::BTreeMap;

use crate::diag::Code;
use crate::model::{Destination, RecordKind, Release};
use crate::yaml::Node;

use super::read::one_of;
use super::{Ctx, Declared};

impl Ctx {
    pub(super) fn destinations(
        &mut self,
        node: Option<&Node>,
        kinds: &Declared<RecordKind>,
        releases: &Declared<Release>,
    ) -> BTreeMap<String, Destination> {
        let mut destinations = BTreeMap::new();
        if let Some(n) = node {
            for (name, _, node) in self.named(n, "destinations") {
                if let Some(d) = self.destination(node, &name, kinds, releases) {
                    destinations.insert(name, d);
                }
            }
        }
        destinations
    }

    fn destination(
        &mut self,
        node: &Node,
        name: &str,
        kinds: &Declared<RecordKind>,
        releases: &Declared<Release>,
    ) -> Option<Destination> {
        let e = self.fixed(
            node,
            &format!("destination `{name}`"),
            &["region", "releases", "kinds"],
        )?;
        let region = self
            .required(&e, "region", "the jurisdiction or region, e.g. EU-DE")
            .and_then(|n| self.string(n, "region"));
        let releases = match e.get("releases") {
            Some(n) => self.references(n, name, "release", "releases", &releases.names()),
            None => Vec::new(),
        };
        let kinds = match e.get("kinds") {
            Some(n) => self.references(n, name, "kind", "kinds", &kinds.names()),
            None => Vec::new(),
        };
        Some(Destination {
            region: region?,
            releases,
            kinds,
        })
    }

    /// The names listed under `section` of destination `name`; each must be among `declared`.
    fn references(
        &mut self,
        n: &Node,
        name: &str,
        what: &str,
        section: &str,
        declared: &[&str],
    ) -> Vec<String> {
        let list = self.name_list(n, section);
        for (r, pos) in &list {
            if !declared.contains(&r.as_str()) {
                self.err(
                    *pos,
                    Code::UnknownReference,
                    format!("destination `{name}` names {what} `{r}`, which is not declared"),
                    one_of(r, declared, section),
                );
            }
        }
        list.into_iter().map(|(r, _)| r).collect()
    }
}
