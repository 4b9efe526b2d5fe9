//! Compiling a policy file: positioned YAML tree → typed [`Policy`], reporting every error.
//!
//! This module owns every check of `mecgw policy check`. It never stops at the first problem:
//! each section is read as far as it can be, and the cross-references (fields, keys, kinds,
//! releases, budget) are checked on whatever could be read. It never touches key files or
//! records.

use std::collections::BTreeMap;

use crate::diag::{Code, Diagnostic, Diagnostics, Pos};
use crate::model::{
    Bounds, BucketWidth, Budget, Contribution, Destination, FieldType, KeySpec, Metric,
    MicroDegrees, NoiseKind, Policy, RecordKind, Release, TestCase, Transform,
};
use crate::units::{self, Delta, Duration, Epsilon};
use crate::yaml::{self, Node, Value};

/// Most entries in any one named section (kinds, fields, releases, …).
pub const MAX_ENTRIES: usize = 10_000;

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

#[derive(Default)]
struct Ctx {
    diags: Vec<Diagnostic>,
}

/// The known entries of a mapping, by key.
struct Entries<'n> {
    pos: Pos,
    what: String,
    items: Vec<(&'n str, &'n Node, Pos)>,
}

impl<'n> Entries<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.items
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| *v)
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 2 => format!("did you mean `{c}`? "),
        _ => String::new(),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Ctx {
    fn err(&mut self, pos: Pos, code: Code, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, code, msg, help));
    }

    /// A mapping with a fixed set of keys. Unknown keys are reported (P002) and skipped.
    fn fixed<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Entries<'n>> {
        let Value::Map(entries) = &node.value else {
            if node.is_null() {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} is empty"),
                    format!(
                        "write {what} as a mapping with keys: {}",
                        allowed.join(", ")
                    ),
                );
            } else {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a mapping, found {}", node.shape()),
                    format!(
                        "write {what} as a mapping with keys: {}",
                        allowed.join(", ")
                    ),
                );
            }
            return None;
        };
        let mut items = Vec::new();
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default();
            if allowed.contains(&key) {
                items.push((key, v, k.pos));
            } else {
                self.err(
                    k.pos,
                    Code::UnknownKey,
                    format!("unknown key `{key}` in {what}"),
                    format!(
                        "{}the keys allowed here are: {}",
                        suggest(key, allowed),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Entries {
            pos: node.pos,
            what: what.to_owned(),
            items,
        })
    }

    /// A mapping from user-chosen names to values.
    fn named<'n>(&mut self, node: &'n Node, what: &str) -> Vec<(String, Pos, &'n Node)> {
        let Value::Map(entries) = &node.value else {
            if !node.is_null() {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a mapping of names, found {}", node.shape()),
                    format!("write {what} as `name: ...` entries"),
                );
            }
            return Vec::new();
        };
        if entries.len() > MAX_ENTRIES {
            self.err(
                node.pos,
                Code::LimitExceeded,
                format!(
                    "{what} has {} entries; the limit is {MAX_ENTRIES}",
                    entries.len()
                ),
                "split the policy",
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.as_scalar().unwrap_or_default();
            if !is_name(name) {
                self.err(
                    k.pos,
                    Code::InvalidValue,
                    format!("`{name}` is not a valid name in {what}"),
                    "use 1 to 64 letters, digits, `_` or `-`",
                );
                continue;
            }
            out.push((name.to_owned(), k.pos, v));
        }
        out
    }

    fn required<'n>(&mut self, e: &Entries<'n>, key: &str, help: &str) -> Option<&'n Node> {
        let v = e.get(key);
        if v.is_none() {
            self.err(
                e.pos,
                Code::MissingKey,
                format!("{} has no `{key}`", e.what),
                format!("add `{key}:` ({help})"),
            );
        }
        v
    }

    fn scalar<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node.as_scalar() {
            Some(s) if !node.is_null() => Some(s),
            _ => {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!(
                        "{what} must be a single value, found {}",
                        if node.is_null() {
                            "nothing"
                        } else {
                            node.shape()
                        }
                    ),
                    format!("write {what} as one value"),
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        self.scalar(node, what).map(str::to_owned)
    }

    fn uint(&mut self, node: &Node, what: &str) -> Option<u64> {
        let s = self.scalar(node, what)?;
        match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what} must be a whole number, found `{s}`"),
                    format!("write {what} as a whole number such as 10"),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let s = self.scalar(node, what)?;
        match Duration::parse(s) {
            Ok(d) if d.0 > 0 => Some(d),
            Ok(_) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what} is zero"),
                    format!("give {what} a positive length such as 1h"),
                );
                None
            }
            Err(e) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what}: {e}"),
                    "write a duration such as 30s, 15m, 1h, 1d or 1w",
                );
                None
            }
        }
    }

    fn epsilon(&mut self, node: &Node, what: &str) -> Option<Epsilon> {
        let s = self.scalar(node, what)?;
        match units::parse_epsilon(s) {
            Ok(e) if e.0 > 0 => Some(e),
            Ok(_) | Err(units::UnitError::Negative(_)) => {
                self.err(
                    node.pos,
                    Code::EpsilonNotPositive,
                    format!("{what} is `{s}`; ε must be greater than 0"),
                    "set a positive ε such as 0.5 (real releases use about 0.45 to 2.6 per person-day)",
                );
                None
            }
            Err(e) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what}: {e}"),
                    "write ε as a decimal such as 0.5 (at most 9 decimal places)",
                );
                None
            }
        }
    }

    fn delta(&mut self, node: &Node, what: &str) -> Option<Delta> {
        let s = self.scalar(node, what)?;
        match units::parse_delta(s) {
            Ok(d) if d.0 < units::DELTA_SCALE => Some(d),
            Ok(_) | Err(units::UnitError::Negative(_) | units::UnitError::TooLarge(_)) => {
                self.err(
                    node.pos,
                    Code::DeltaOutOfRange,
                    format!("{what} is `{s}`; δ must be at least 0 and less than 1"),
                    "set δ to a small probability such as 1e-6",
                );
                None
            }
            Err(e) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what}: {e}"),
                    "write δ as a decimal such as 1e-6 (finest 1e-18)",
                );
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        let s = self.scalar(node, what)?;
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what} must be a number, found `{s}`"),
                    format!("write {what} as a number such as 10 or 0.5"),
                );
                None
            }
        }
    }

    fn name_list(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        let Value::Seq(items) = &node.value else {
            if !node.is_null() {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a list, found {}", node.shape()),
                    format!("write {what} as a list: [a, b]"),
                );
            }
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|n| self.string(n, what).map(|s| (s, n.pos)))
            .collect()
    }

    // ---------------------------------------------------------------- sections

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
        let version = match self.required(&top, "version", "the policy language version, 1") {
            Some(n) => match self.uint(n, "version") {
                Some(1) => Some(1),
                Some(v) => {
                    self.err(
                        n.pos,
                        Code::UnsupportedVersion,
                        format!("policy language version {v} is not supported"),
                        "set `version: 1`",
                    );
                    None
                }
                None => None,
            },
            None => None,
        };
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
            .and_then(|n| self.budget(n));

        let mut keys = BTreeMap::new();
        if let Some(n) = top.get("keys") {
            for (name, _, node) in self.named(n, "keys") {
                if let Some(k) = self.key(node, &name) {
                    keys.insert(name, k);
                }
            }
        }
        let mut kinds = BTreeMap::new();
        let mut failed_kinds: Vec<String> = Vec::new();
        if let Some(n) = self.required(&top, "kinds", "the record kinds this policy covers") {
            for (name, pos, node) in self.named(n, "kinds") {
                if name == "release" {
                    self.err(
                        pos,
                        Code::ReservedName,
                        "`release` is reserved as a kind name",
                        "rename the kind",
                    );
                }
                match self.kind(node, &name, &keys) {
                    Some(k) => {
                        kinds.insert(name, k);
                    }
                    None => failed_kinds.push(name),
                }
            }
        }
        let mut releases = BTreeMap::new();
        let mut failed_releases: Vec<String> = Vec::new();
        if let Some(n) = top.get("releases") {
            for (name, _, node) in self.named(n, "releases") {
                match self.release(node, &name, &kinds, &failed_kinds, budget.as_ref()) {
                    Some(r) => {
                        releases.insert(name, r);
                    }
                    None => failed_releases.push(name),
                }
            }
        }
        if let Some(b) = &budget {
            self.check_budget(b, &releases);
        }
        for (name, r) in &releases {
            if let Err(e) = crate::release::Mechanism::new(name, r) {
                self.err(
                    r.epsilon_pos,
                    Code::NoiseOutOfRange,
                    e.to_string(),
                    "raise ε, narrow the bounds or lower the contribution bounds; see `mecgw policy explain`",
                );
            }
        }
        let mut destinations = BTreeMap::new();
        if let Some(n) = top.get("destinations") {
            for (name, _, node) in self.named(n, "destinations") {
                if let Some(d) = self.destination(
                    node,
                    &name,
                    &kinds,
                    &failed_kinds,
                    &releases,
                    &failed_releases,
                ) {
                    destinations.insert(name, d);
                }
            }
        }
        let mut tests = Vec::new();
        if let Some(n) = top.get("tests") {
            match &n.value {
                Value::Seq(items) => {
                    for item in items {
                        if let Some(t) = self.test_case(item, &keys) {
                            tests.push(t);
                        }
                    }
                }
                _ if n.is_null() => {}
                _ => self.err(
                    n.pos,
                    Code::WrongType,
                    format!("tests must be a list, found {}", n.shape()),
                    "write tests as a list of `- name: ...` cases",
                ),
            }
        }
        Some(Policy {
            version: version?,
            name,
            description,
            budget: budget?,
            keys,
            kinds,
            releases,
            destinations,
            tests,
        })
    }

    fn budget(&mut self, node: &Node) -> Option<Budget> {
        let e = self.fixed(node, "budget", &["period", "epsilon", "delta"])?;
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
        Some(Budget {
            period: period?,
            epsilon: epsilon?,
            delta: delta?,
            pos: node.pos,
        })
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

    fn kind(
        &mut self,
        node: &Node,
        name: &str,
        keys: &BTreeMap<String, KeySpec>,
    ) -> Option<RecordKind> {
        let what = format!("kind `{name}`");
        let e = self.fixed(
            node,
            &what,
            &[
                "description",
                "privacy_unit",
                "time",
                "window",
                "fields",
                "transforms",
            ],
        )?;
        let description = e
            .get("description")
            .and_then(|n| self.string(n, "description"));
        let window = e.get("window").and_then(|n| self.duration(n, "window"));
        let mut fields = BTreeMap::new();
        let fields_node = self.required(&e, "fields", "the fields of this kind and their types");
        if let Some(n) = fields_node {
            for (field, pos, tnode) in self.named(n, &format!("fields of {what}")) {
                if field == "kind" {
                    self.err(pos, Code::ReservedName, "the field name `kind` is reserved (it names a record's kind in input and output)", "rename the field");
                    continue;
                }
                let Some(t) = self.scalar(tnode, "a field type") else {
                    continue;
                };
                match FieldType::ALL.iter().find(|ft| ft.name() == t) {
                    Some(ft) => {
                        fields.insert(field, *ft);
                    }
                    None => {
                        let names: Vec<&str> = FieldType::ALL.iter().map(|f| f.name()).collect();
                        self.err(
                            tnode.pos,
                            Code::InvalidValue,
                            format!("unknown field type `{t}`"),
                            format!("{}use one of: {}", suggest(t, &names), names.join(", ")),
                        );
                    }
                }
            }
        }
        let field_names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let check_field =
            |cx: &mut Ctx, n: &Node, role: &str, want: Option<FieldType>| -> Option<String> {
                let f = cx.string(n, role)?;
                match fields.get(&f) {
                    None if fields_node.is_some() => {
                        cx.err(
                            n.pos,
                            Code::UnknownField,
                            format!("{role} `{f}` is not a field of {what}"),
                            format!(
                                "{}declare it under fields, or use one of: {}",
                                suggest(&f, &field_names),
                                field_names.join(", ")
                            ),
                        );
                        None
                    }
                    Some(t) if want.is_some_and(|w| w != *t) => {
                        cx.err(
                            n.pos,
                            Code::TransformTypeMismatch,
                            format!("{role} `{f}` is {}, it must be a timestamp", t.name()),
                            "point it at a timestamp field",
                        );
                        None
                    }
                    _ => Some(f),
                }
            };
        let privacy_unit = self
            .required(
                &e,
                "privacy_unit",
                "the field that identifies the person, e.g. imsi",
            )
            .and_then(|n| check_field(self, n, "privacy_unit", None));
        let time = self
            .required(
                &e,
                "time",
                "the timestamp field that places a record in windows",
            )
            .and_then(|n| check_field(self, n, "time", Some(FieldType::Timestamp)));

        let mut transforms = BTreeMap::new();
        let mut transform_pos = BTreeMap::new();
        if let Some(n) = e.get("transforms") {
            for (field, pos, tnode) in self.named(n, &format!("transforms of {what}")) {
                let ty = fields.get(&field).copied();
                if ty.is_none() && fields_node.is_some() {
                    self.err(
                        pos,
                        Code::UnknownField,
                        format!("transform for `{field}`, which is not a field of {what}"),
                        format!(
                            "{}declare it under fields first",
                            suggest(&field, &field_names)
                        ),
                    );
                }
                if let Some(t) = self.transform(tnode, &field, ty, keys) {
                    transforms.insert(field.clone(), t);
                    transform_pos.insert(field, pos);
                }
            }
        }
        Some(RecordKind {
            description,
            privacy_unit: privacy_unit?,
            time: time?,
            window,
            fields,
            transforms,
            pos: node.pos,
            transform_pos,
        })
    }

    fn transform(
        &mut self,
        node: &Node,
        field: &str,
        ty: Option<FieldType>,
        keys: &BTreeMap<String, KeySpec>,
    ) -> Option<Transform> {
        const NAMES: &[&str] = &[
            "keep",
            "redact",
            "pseudonymise",
            "truncate",
            "coarsen",
            "bucket",
        ];
        let (name, arg, name_pos) = match &node.value {
            Value::Scalar { text, .. } => (text.as_str(), None, node.pos),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                (k.as_scalar().unwrap_or_default(), Some(v), k.pos)
            }
            _ => {
                self.err(node.pos, Code::WrongType, format!("the transform of `{field}` must be one transform"), "write `keep`, `redact`, or one of `pseudonymise: {key: NAME}`, `truncate: {ipv4: 24, ipv6: 48}`, `coarsen: {grid: 0.01}`, `bucket: {width: 15m}`");
                return None;
            }
        };
        let t = match name {
            "keep" | "redact" => {
                if let Some(a) = arg.filter(|a| !a.is_null()) {
                    self.err(
                        a.pos,
                        Code::InvalidValue,
                        format!("`{name}` takes no arguments"),
                        format!("write just `{name}`"),
                    );
                }
                if name == "keep" {
                    Transform::Keep
                } else {
                    Transform::Redact
                }
            }
            "pseudonymise" => {
                let key = arg.filter(|a| !a.is_null()).and_then(|a| {
                    let e = self.fixed(a, "pseudonymise", &["key"])?;
                    e.get("key")
                        .and_then(|k| self.string(k, "key").map(|s| (s, k.pos)))
                });
                match key {
                    None => {
                        self.err(
                            name_pos,
                            Code::PseudonymiseWithoutKey,
                            format!("pseudonymise of `{field}` names no key"),
                            "write `pseudonymise: {key: NAME}` with a key declared under `keys`",
                        );
                        return None;
                    }
                    Some((k, pos)) if !keys.contains_key(&k) => {
                        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                        self.err(
                            pos,
                            Code::PseudonymiseWithoutKey,
                            format!(
                                "pseudonymise of `{field}` uses key `{k}`, which is not declared"
                            ),
                            format!(
                                "{}declare it under `keys:` with a path and rotation",
                                suggest(&k, &names)
                            ),
                        );
                        return None;
                    }
                    Some((k, _)) => Transform::Pseudonymise { key: k },
                }
            }
            "truncate" => {
                let (mut v4, mut v6) = (None, None);
                if let Some(a) = arg.filter(|a| !a.is_null()) {
                    let e = self.fixed(a, "truncate", &["ipv4", "ipv6"])?;
                    for (key, max, slot) in [("ipv4", 32u64, &mut v4), ("ipv6", 128, &mut v6)] {
                        if let Some(n) = e.get(key) {
                            match self.uint(n, key) {
                                Some(p) if p <= max => *slot = u8::try_from(p).ok(),
                                Some(p) => self.err(
                                    n.pos,
                                    Code::InvalidValue,
                                    format!("{key} prefix /{p} is longer than {max} bits"),
                                    format!("use a prefix between 0 and {max}"),
                                ),
                                None => {}
                            }
                        }
                    }
                }
                Transform::Truncate { ipv4: v4, ipv6: v6 }
            }
            "coarsen" => {
                let a = arg.filter(|a| !a.is_null());
                let grid = a.and_then(|a| {
                    let e = self.fixed(a, "coarsen", &["grid"])?;
                    let g = self.required(&e, "grid", "the grid cell size in degrees, e.g. 0.01")?;
                    let s = self.scalar(g, "grid")?;
                    match units::parse_fixed(s, 6).ok().and_then(|v| u32::try_from(v).ok()) {
                        Some(v) if v > 0 && v <= 360_000_000 => Some(MicroDegrees(v)),
                        _ => {
                            self.err(g.pos, Code::InvalidValue, format!("grid `{s}` is not a cell size in degrees"), "use a positive number of degrees with at most 6 decimal places, e.g. 0.01");
                            None
                        }
                    }
                });
                if a.is_none() {
                    self.err(
                        name_pos,
                        Code::MissingKey,
                        "coarsen needs a grid",
                        "write `coarsen: {grid: 0.01}`",
                    );
                }
                Transform::Coarsen { grid: grid? }
            }
            "bucket" => {
                let a = arg.filter(|a| !a.is_null());
                if a.is_none() {
                    self.err(name_pos, Code::MissingKey, "bucket needs a width", "write `bucket: {width: 15m}` for a timestamp or `bucket: {width: 100}` for a number");
                }
                let e = self.fixed(a?, "bucket", &["width"])?;
                let w = self.required(&e, "width", "15m for a timestamp, a number for a number")?;
                let s = self.scalar(w, "width")?;
                let width = if ty == Some(FieldType::Timestamp) {
                    BucketWidth::Duration(self.duration(w, "width")?)
                } else {
                    let places = s.split_once('.').map_or(0, |(_, f)| f.len());
                    match units::parse_fixed(s, places as u32)
                        .ok()
                        .and_then(|v| i64::try_from(v).ok())
                    {
                        Some(units) if units > 0 && places <= 9 => BucketWidth::Number {
                            units,
                            places: places as u32,
                        },
                        _ => {
                            self.err(w.pos, Code::InvalidValue, format!("bucket width `{s}` is not a positive number"), "use a positive number such as 100 or 0.5 (a duration like 15m for timestamps)");
                            return None;
                        }
                    }
                };
                Transform::Bucket { width }
            }
            other => {
                self.err(
                    name_pos,
                    Code::InvalidValue,
                    format!("unknown transform `{other}` for `{field}`"),
                    format!("{}use one of: {}", suggest(other, NAMES), NAMES.join(", ")),
                );
                return None;
            }
        };
        if let Some(ty) = ty {
            let ok = match &t {
                Transform::Keep | Transform::Redact => true,
                Transform::Pseudonymise { .. } => {
                    matches!(ty, FieldType::String | FieldType::Integer) || ty.is_address()
                }
                Transform::Truncate { .. } => ty.is_address(),
                Transform::Coarsen { .. } => ty == FieldType::Geo,
                Transform::Bucket { .. } => ty == FieldType::Timestamp || ty.is_numeric(),
            };
            if !ok {
                let help = match &t {
                    Transform::Pseudonymise { .. } => {
                        "pseudonymise applies to string, integer and address fields"
                    }
                    Transform::Truncate { .. } => "truncate applies to ipv4, ipv6 and ip fields",
                    Transform::Coarsen { .. } => "coarsen applies to geo fields",
                    _ => "bucket applies to timestamp, integer and decimal fields",
                };
                self.err(
                    name_pos,
                    Code::TransformTypeMismatch,
                    format!(
                        "`{}` cannot apply to `{field}`, a {} field",
                        t.name(),
                        ty.name()
                    ),
                    help,
                );
                return None;
            }
        }
        Some(t)
    }

    fn release(
        &mut self,
        node: &Node,
        name: &str,
        kinds: &BTreeMap<String, RecordKind>,
        failed_kinds: &[String],
        budget: Option<&Budget>,
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
        let kind_node = self.required(&e, "kind", "the record kind aggregated");
        let kind = kind_node.and_then(|n| self.string(n, "kind"));
        let rk = match (&kind, kind_node) {
            (Some(k), Some(n)) => match kinds.get(k) {
                Some(rk) => Some(rk),
                None => {
                    if !failed_kinds.contains(k) {
                        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
                        self.err(
                            n.pos,
                            Code::UnknownReference,
                            format!("{what} aggregates kind `{k}`, which is not declared"),
                            format!("{}use one of: {}", suggest(k, &names), names.join(", ")),
                        );
                    }
                    None
                }
            },
            _ => None,
        };
        let window = self
            .required(&e, "window", "the tumbling window, e.g. 1h")
            .and_then(|n| self.duration(n, "window"));
        if let (Some(w), Some(b), Some(n)) = (window, budget, e.get("window"))
            && b.period.0 % w.0 != 0
        {
            self.err(
                n.pos,
                Code::WindowPeriodMismatch,
                format!(
                    "the budget period {} is not a whole number of {w} windows",
                    b.period
                ),
                format!("use a window that divides {}, e.g. 1h or 15m", b.period),
            );
        }
        let mut group_by = Vec::new();
        if let Some(n) = e.get("group_by") {
            for (f, pos) in self.name_list(n, "group_by") {
                if let Some(rk) = rk {
                    match (rk.fields.get(&f), rk.transforms.get(&f)) {
                        (None, _) => {
                            let names: Vec<&str> = rk.fields.keys().map(String::as_str).collect();
                            self.err(
                                pos,
                                Code::UnknownGroupByField,
                                format!(
                                    "group_by field `{f}` is not a field of kind `{}`",
                                    kind.as_deref().unwrap_or_default()
                                ),
                                format!("{}use one of: {}", suggest(&f, &names), names.join(", ")),
                            );
                        }
                        (Some(_), None | Some(Transform::Redact)) => {
                            self.err(pos, Code::GroupByDroppedField, format!("group_by field `{f}` is dropped or redacted by the kind's transforms"), format!("give `{f}` a transform that keeps information (keep, truncate, coarsen, bucket, pseudonymise) or group by another field"));
                        }
                        _ => {}
                    }
                }
                group_by.push(f);
            }
        }
        let contribution = self
            .required(
                &e,
                "contribution",
                "max_groups and max_rows per privacy unit per window",
            )
            .and_then(|n| {
                let c = self.fixed(n, "contribution", &["max_groups", "max_rows"])?;
                let get = |cx: &mut Ctx, key: &str| -> Option<u32> {
                    let n = cx.required(&c, key, "a whole number ≥ 1")?;
                    let v = cx.uint(n, key)?;
                    match u32::try_from(v) {
                        Ok(v) if (1..=1_000_000).contains(&v) => Some(v),
                        _ => {
                            cx.err(
                                n.pos,
                                Code::InvalidContribution,
                                format!("{key} is {v}; it must be between 1 and 1000000"),
                                format!("bound what one privacy unit adds: set {key} to 1 or more"),
                            );
                            None
                        }
                    }
                };
                let max_groups = get(self, "max_groups");
                let max_rows = get(self, "max_rows");
                Some(Contribution {
                    max_groups: max_groups?,
                    max_rows: max_rows?,
                })
            });
        let k = self
            .required(&e, "k", "the cohort floor, at least 2 (operators use 20)")
            .and_then(|n| {
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
            });
        let eps_node = self.required(&e, "epsilon", "ε spent per window, e.g. 0.1");
        let epsilon = eps_node.and_then(|n| self.epsilon(n, "epsilon"));
        let delta_node = e.get("delta");
        let delta = match delta_node {
            Some(n) => self.delta(n, "delta"),
            None => Some(Delta(0)),
        };
        if delta == Some(Delta(0)) {
            self.err(
                delta_node.map_or(e.pos, |n| n.pos),
                Code::DeltaOutOfRange,
                format!("{what} has δ = 0, but noisy partition selection needs δ > 0"),
                "set `delta:` to a small probability such as 1e-7",
            );
        }
        let noise = match e.get("noise") {
            None => Some(NoiseKind::Laplace),
            Some(n) => match self.scalar(n, "noise") {
                Some("laplace") => Some(NoiseKind::Laplace),
                Some("gaussian") => Some(NoiseKind::Gaussian),
                Some(other) => {
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
                None => None,
            },
        };
        let mut metrics = Vec::new();
        let mut metrics_ok = true;
        if let Some(n) = self.required(&e, "metrics", "what to compute per group, e.g. [count]") {
            match &n.value {
                Value::Seq(items) if !items.is_empty() => {
                    for m in items {
                        match self.metric(m, rk, kind.as_deref().unwrap_or_default()) {
                            Some(m) => metrics.push(m),
                            None => metrics_ok = false,
                        }
                    }
                }
                _ => {
                    self.err(
                        n.pos,
                        Code::WrongType,
                        "metrics must be a non-empty list",
                        "write e.g. `metrics: [count]`",
                    );
                    metrics_ok = false;
                }
            }
        }
        let max_state = match e.get("max_state") {
            Some(n) => match self.uint(n, "max_state") {
                Some(v) if v >= 1 => Some(Some(v)),
                Some(_) => {
                    self.err(
                        n.pos,
                        Code::InvalidValue,
                        "max_state is 0",
                        "set a cap of at least 1 (default 10000000)",
                    );
                    None
                }
                None => None,
            },
            None => Some(None),
        };
        rk?;
        if !metrics_ok {
            return None;
        }
        Some(Release {
            kind: kind?,
            window: window?,
            group_by,
            contribution: contribution?,
            k: k?,
            epsilon: epsilon?,
            delta: delta?,
            noise: noise?,
            metrics,
            max_state: max_state?,
            pos: node.pos,
            epsilon_pos: eps_node.map_or(node.pos, |n| n.pos),
        })
        .filter(|r| {
            if r.noise == NoiseKind::Gaussian && r.delta.0 == 0 {
                self.err(
                    node.pos,
                    Code::GaussianNeedsDelta,
                    format!("{what} uses the discrete Gaussian with δ = 0"),
                    "set δ > 0 or use `noise: laplace`",
                );
                return false;
            }
            true
        })
    }

    fn metric(&mut self, node: &Node, rk: Option<&RecordKind>, kind: &str) -> Option<Metric> {
        const NAMES: &[&str] = &["count", "sum", "mean", "histogram", "quantiles"];
        let (name, arg, name_pos) = match &node.value {
            Value::Scalar { text, .. } => (text.as_str(), None, node.pos),
            Value::Map(entries) if entries.len() == 1 => (
                entries[0].0.as_scalar().unwrap_or_default(),
                Some(&entries[0].1),
                entries[0].0.pos,
            ),
            _ => {
                self.err(node.pos, Code::WrongType, "a metric must be `count` or one of sum, mean, histogram, quantiles with its settings", "write e.g. `- sum: {field: bytes, bounds: [0, 1000000]}`");
                return None;
            }
        };
        if name == "count" {
            return Some(Metric::Count);
        }
        if !NAMES.contains(&name) {
            self.err(
                name_pos,
                Code::InvalidValue,
                format!("unknown metric `{name}`"),
                format!("{}use one of: {}", suggest(name, NAMES), NAMES.join(", ")),
            );
            return None;
        }
        let arg = match arg.filter(|a| !a.is_null()) {
            Some(a) => a,
            None => {
                let code = if matches!(name, "sum" | "mean") {
                    Code::MissingBounds
                } else {
                    Code::MissingKey
                };
                self.err(
                    name_pos,
                    code,
                    format!(
                        "`{name}` needs a field and its {}",
                        if matches!(name, "sum" | "mean") {
                            "clamping bounds"
                        } else {
                            "bins"
                        }
                    ),
                    format!(
                        "write `{name}: {{field: NAME, {}}}`",
                        if matches!(name, "sum" | "mean") {
                            "bounds: [LOW, HIGH]"
                        } else {
                            "bins: [..]"
                        }
                    ),
                );
                return None;
            }
        };
        let allowed: &[&str] = match name {
            "sum" | "mean" => &["field", "bounds"],
            "histogram" => &["field", "bins"],
            _ => &["field", "bins", "q"],
        };
        let e = self.fixed(arg, &format!("metric `{name}`"), allowed)?;
        let field = self
            .required(&e, "field", "the numeric field aggregated")
            .and_then(|n| {
                let f = self.string(n, "field")?;
                if let Some(rk) = rk {
                    match rk.fields.get(&f) {
                        None => {
                            let names: Vec<&str> = rk.fields.keys().map(String::as_str).collect();
                            self.err(
                                n.pos,
                                Code::UnknownField,
                                format!("metric field `{f}` is not a field of kind `{kind}`"),
                                format!("{}use one of: {}", suggest(&f, &names), names.join(", ")),
                            );
                            return None;
                        }
                        Some(t) if !t.is_numeric() => {
                            self.err(
                                n.pos,
                                Code::MetricFieldNotNumeric,
                                format!("metric field `{f}` is {}, not a number", t.name()),
                                "aggregate an integer or decimal field",
                            );
                            return None;
                        }
                        _ => {}
                    }
                }
                Some(f)
            });
        match name {
            "sum" | "mean" => {
                let Some(b) = e.get("bounds") else {
                    self.err(name_pos, Code::MissingBounds, format!("`{name}` has no clamping bounds"), "add `bounds: [LOW, HIGH]`; every contribution is clamped to them, which is what bounds the noise".to_string());
                    return None;
                };
                let bounds = self.bounds(b)?;
                let field = field?;
                Some(if name == "sum" {
                    Metric::Sum { field, bounds }
                } else {
                    Metric::Mean { field, bounds }
                })
            }
            _ => {
                let bins = self
                    .required(&e, "bins", "strictly increasing bin edges")
                    .and_then(|n| self.bins(n));
                let q = if name == "quantiles" {
                    self.required(&e, "q", "quantiles in (0, 1), e.g. [0.5, 0.9]")
                        .and_then(|n| {
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
                        })
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
        }
    }

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

    fn check_budget(&mut self, b: &Budget, releases: &BTreeMap<String, Release>) {
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
                self.err(r.epsilon_pos, Code::BudgetExceeded, format!("release `{name}` cannot fit the budget on its own: {alone}"), format!("the budget allows {allowed} windows of this release per period: lower its ε/δ, lengthen its window, or raise the budget"));
            } else if total_eps > u128::from(b.epsilon.0) || total_delta > u128::from(b.delta.0) {
                self.err(r.epsilon_pos, Code::BudgetExceeded, format!("with release `{name}` the releases together spend ε {} / δ {} per {}, over the budget ε {} / δ {}", Epsilon(u64::try_from(total_eps).unwrap_or(u64::MAX)), Delta(u64::try_from(total_delta).unwrap_or(u64::MAX)), b.period, b.epsilon, b.delta), "lower ε/δ of some releases, lengthen their windows, or raise the budget");
            }
        }
    }

    fn destination(
        &mut self,
        node: &Node,
        name: &str,
        kinds: &BTreeMap<String, RecordKind>,
        failed_kinds: &[String],
        releases: &BTreeMap<String, Release>,
        failed_releases: &[String],
    ) -> Option<Destination> {
        let e = self.fixed(
            node,
            &format!("destination `{name}`"),
            &["region", "releases", "kinds"],
        )?;
        let region = self
            .required(&e, "region", "the jurisdiction or region, e.g. EU-DE")
            .and_then(|n| self.string(n, "region"));
        let mut rel = Vec::new();
        if let Some(n) = e.get("releases") {
            for (r, pos) in self.name_list(n, "releases") {
                if !releases.contains_key(&r) && !failed_releases.contains(&r) {
                    let names: Vec<&str> = releases.keys().map(String::as_str).collect();
                    self.err(
                        pos,
                        Code::UnknownReference,
                        format!("destination `{name}` names release `{r}`, which is not declared"),
                        format!("{}use one of: {}", suggest(&r, &names), names.join(", ")),
                    );
                }
                rel.push(r);
            }
        }
        let mut kk = Vec::new();
        if let Some(n) = e.get("kinds") {
            for (k, pos) in self.name_list(n, "kinds") {
                if !kinds.contains_key(&k) && !failed_kinds.contains(&k) {
                    let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
                    self.err(
                        pos,
                        Code::UnknownReference,
                        format!("destination `{name}` names kind `{k}`, which is not declared"),
                        format!("{}use one of: {}", suggest(&k, &names), names.join(", ")),
                    );
                }
                kk.push(k);
            }
        }
        Some(Destination {
            region: region?,
            releases: rel,
            kinds: kk,
        })
    }

    fn test_case(&mut self, node: &Node, keys: &BTreeMap<String, KeySpec>) -> Option<TestCase> {
        let e = self.fixed(
            node,
            "a test case",
            &["name", "keys", "seed", "tolerance", "input", "expect"],
        )?;
        let name = self
            .required(&e, "name", "what the case shows")
            .and_then(|n| self.string(n, "name"));
        let mut test_keys = BTreeMap::new();
        if let Some(n) = e.get("keys") {
            for (k, pos, v) in self.named(n, "test keys") {
                if !keys.contains_key(&k) {
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
                if hex.len() < 64
                    || hex.len() % 2 != 0
                    || !hex.bytes().all(|c| c.is_ascii_hexdigit())
                {
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
        }
        let seed = e.get("seed").and_then(|n| self.uint(n, "seed"));
        let tolerance = e.get("tolerance").and_then(|n| self.number(n, "tolerance"));
        let records = |cx: &mut Ctx, key: &str| -> Option<Vec<serde_json::Value>> {
            let n = cx.required(&e, key, "a list of JSON objects")?;
            match &n.value {
                Value::Seq(items) => {
                    let mut out = Vec::new();
                    for it in items {
                        if !matches!(it.value, Value::Map(_)) {
                            cx.err(
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
                    cx.err(
                        n.pos,
                        Code::InvalidTestCase,
                        format!("{key} must be a list"),
                        "write a list of records",
                    );
                    None
                }
            }
        };
        let input = records(self, "input");
        let expect = records(self, "expect");
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
