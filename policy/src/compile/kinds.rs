//! The `kinds:` section: record kinds, their declared fields and types, the privacy unit and
//! time fields, and (through `transforms`) what happens to each field.

use std::collections::BTreeMap;

use crate::diag::Code;
use crate::model::{FieldType, KeySpec, RecordKind};
use crate::yaml::Node;

use super::read::suggest;
use super::{Ctx, Declared};

impl Ctx {
    pub(super) fn kinds(&mut self, node: &Node, keys: &Declared<KeySpec>) -> Declared<RecordKind> {
        let mut kinds = Declared::default();
        for (name, pos, node) in self.named(node, "kinds") {
            if name == "release" {
                self.err(
                    pos,
                    Code::ReservedName,
                    "`release` is reserved as a kind name",
                    "rename the kind",
                );
            }
            let kind = self.kind(node, &name, keys);
            kinds.add(name, kind);
        }
        kinds
    }

    fn kind(&mut self, node: &Node, name: &str, keys: &Declared<KeySpec>) -> Option<RecordKind> {
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
        let fields_node = self.required(&e, "fields", "the fields of this kind and their types");
        let fields = fields_node
            .map(|n| self.fields(n, &what))
            .unwrap_or_default();
        // Without a `fields` section (already reported) references cannot be checked.
        let checked = fields_node.is_some().then_some(&fields);
        let privacy_unit = self
            .required(
                &e,
                "privacy_unit",
                "the field that identifies the person, e.g. imsi",
            )
            .and_then(|n| self.field_ref(n, "privacy_unit", &what, checked, None));
        let time = self
            .required(
                &e,
                "time",
                "the timestamp field that places a record in windows",
            )
            .and_then(|n| self.field_ref(n, "time", &what, checked, Some(FieldType::Timestamp)));
        let mut transforms = BTreeMap::new();
        let mut transform_pos = BTreeMap::new();
        if let Some(n) = e.get("transforms") {
            let field_names: Vec<&str> = fields.keys().map(String::as_str).collect();
            for (field, pos, tnode) in self.named(n, &format!("transforms of {what}")) {
                let ty = fields.get(&field).copied();
                if ty.is_none() && checked.is_some() {
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

    /// The declared fields of a kind and their types.
    fn fields(&mut self, node: &Node, what: &str) -> BTreeMap<String, FieldType> {
        let mut fields = BTreeMap::new();
        for (field, pos, tnode) in self.named(node, &format!("fields of {what}")) {
            if field == "kind" {
                self.err(
                    pos,
                    Code::ReservedName,
                    "the field name `kind` is reserved (it names a record's kind in input and output)",
                    "rename the field",
                );
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
        fields
    }

    /// A reference to one of the kind's fields in `role` (`privacy_unit`, `time`), of type
    /// `want` if given. `fields` is `None` when the kind's fields could not be read.
    fn field_ref(
        &mut self,
        n: &Node,
        role: &str,
        what: &str,
        fields: Option<&BTreeMap<String, FieldType>>,
        want: Option<FieldType>,
    ) -> Option<String> {
        let f = self.string(n, role)?;
        let Some(fields) = fields else {
            return Some(f);
        };
        match fields.get(&f) {
            None => {
                let names: Vec<&str> = fields.keys().map(String::as_str).collect();
                self.err(
                    n.pos,
                    Code::UnknownField,
                    format!("{role} `{f}` is not a field of {what}"),
                    if names.is_empty() {
                        "declare it under fields".to_owned()
                    } else {
                        format!(
                            "{}declare it under fields, or use one of: {}",
                            suggest(&f, &names),
                            names.join(", ")
                        )
                    },
                );
                None
            }
            Some(t) if want.is_some_and(|w| w != *t) => {
                self.err(
                    n.pos,
                    Code::TransformTypeMismatch,
                    format!("{role} `{f}` is {}, it must be a timestamp", t.name()),
                    "point it at a timestamp field",
                );
                None
            }
            Some(_) => Some(f),
        }
    }
}
