//! Field transforms under `kinds.<kind>.transforms`: which transform, its arguments, and
//! whether it applies to the field's type (P014).

use crate::diag::{Code, Pos};
use crate::model::{BucketWidth, FieldType, KeySpec, MicroDegrees, Transform};
use crate::units;
use crate::yaml::{Node, Value};

use super::read::suggest;
use super::{Ctx, Declared};

const NAMES: &[&str] = &[
    "keep",
    "redact",
    "pseudonymise",
    "truncate",
    "coarsen",
    "bucket",
];

impl Ctx {
    /// The transform of `field` (of type `ty`, if the field is declared).
    pub(super) fn transform(
        &mut self,
        node: &Node,
        field: &str,
        ty: Option<FieldType>,
        keys: &Declared<KeySpec>,
    ) -> Option<Transform> {
        let (name, arg, name_pos) = match &node.value {
            Value::Scalar { text, .. } => (text.as_str(), None, node.pos),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                (k.as_scalar().unwrap_or_default(), Some(v), k.pos)
            }
            _ => {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("the transform of `{field}` must be one transform"),
                    "write `keep`, `redact`, or one of `pseudonymise: {key: NAME}`, `truncate: {ipv4: 24, ipv6: 48}`, `coarsen: {grid: 0.01}`, `bucket: {width: 15m}`",
                );
                return None;
            }
        };
        let arg = arg.filter(|a| !a.is_null());
        let t = match name {
            "keep" | "redact" => {
                if let Some(a) = arg {
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
            "pseudonymise" => self.pseudonymise(arg, field, name_pos, keys)?,
            "truncate" => self.truncate(arg)?,
            "coarsen" => self.coarsen(arg, name_pos)?,
            "bucket" => self.bucket(arg, name_pos, ty)?,
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
        match ty {
            Some(ty) => self.applies(t, field, ty, name_pos),
            None => Some(t),
        }
    }

    fn pseudonymise(
        &mut self,
        arg: Option<&Node>,
        field: &str,
        name_pos: Pos,
        keys: &Declared<KeySpec>,
    ) -> Option<Transform> {
        let key = arg.and_then(|a| {
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
                None
            }
            Some((k, pos)) if !keys.declares(&k) => {
                self.err(
                    pos,
                    Code::PseudonymiseWithoutKey,
                    format!("pseudonymise of `{field}` uses key `{k}`, which is not declared"),
                    format!(
                        "{}declare it under `keys:` with a path and rotation",
                        suggest(&k, &keys.names())
                    ),
                );
                None
            }
            // A declared key that could not be read has been reported where it is declared.
            Some((k, _)) => Some(Transform::Pseudonymise { key: k }),
        }
    }

    fn truncate(&mut self, arg: Option<&Node>) -> Option<Transform> {
        let (mut v4, mut v6) = (None, None);
        if let Some(a) = arg {
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
        Some(Transform::Truncate { ipv4: v4, ipv6: v6 })
    }

    fn coarsen(&mut self, arg: Option<&Node>, name_pos: Pos) -> Option<Transform> {
        let grid = arg.and_then(|a| {
            let e = self.fixed(a, "coarsen", &["grid"])?;
            let g = self.required(&e, "grid", "the grid cell size in degrees, e.g. 0.01")?;
            let s = self.scalar(g, "grid")?;
            match units::parse_fixed(s, 6)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
            {
                Some(v) if v > 0 && v <= 360_000_000 => Some(MicroDegrees(v)),
                _ => {
                    self.err(
                        g.pos,
                        Code::InvalidValue,
                        format!("grid `{s}` is not a cell size in degrees"),
                        "use a positive number of degrees with at most 6 decimal places, e.g. 0.01",
                    );
                    None
                }
            }
        });
        if arg.is_none() {
            self.err(
                name_pos,
                Code::MissingKey,
                "coarsen needs a grid",
                "write `coarsen: {grid: 0.01}`",
            );
        }
        Some(Transform::Coarsen { grid: grid? })
    }

    fn bucket(
        &mut self,
        arg: Option<&Node>,
        name_pos: Pos,
        ty: Option<FieldType>,
    ) -> Option<Transform> {
        let Some(a) = arg else {
            self.err(
                name_pos,
                Code::MissingKey,
                "bucket needs a width",
                "write `bucket: {width: 15m}` for a timestamp or `bucket: {width: 100}` for a number",
            );
            return None;
        };
        let e = self.fixed(a, "bucket", &["width"])?;
        let w = self.required(&e, "width", "15m for a timestamp, a number for a number")?;
        let s = self.scalar(w, "width")?;
        if ty == Some(FieldType::Timestamp) {
            let width = BucketWidth::Duration(self.duration(w, "width")?);
            return Some(Transform::Bucket { width });
        }
        let places = s.split_once('.').map_or(0, |(_, f)| f.len());
        match units::parse_fixed(s, places as u32)
            .ok()
            .and_then(|v| i64::try_from(v).ok())
        {
            Some(units) if units > 0 && places <= 9 => Some(Transform::Bucket {
                width: BucketWidth::Number {
                    units,
                    places: places as u32,
                },
            }),
            _ => {
                self.err(
                    w.pos,
                    Code::InvalidValue,
                    format!("bucket width `{s}` is not a positive number"),
                    "use a positive number such as 100 or 0.5 (a duration like 15m for timestamps)",
                );
                None
            }
        }
    }

    /// P014: `t` if it applies to a field of type `ty`.
    fn applies(&mut self, t: Transform, field: &str, ty: FieldType, pos: Pos) -> Option<Transform> {
        let (ok, help) = match &t {
            Transform::Keep | Transform::Redact => (true, ""),
            Transform::Pseudonymise { .. } => (
                matches!(ty, FieldType::String | FieldType::Integer) || ty.is_address(),
                "pseudonymise applies to string, integer and address fields",
            ),
            Transform::Truncate { .. } => (
                ty.is_address(),
                "truncate applies to ipv4, ipv6 and ip fields",
            ),
            Transform::Coarsen { .. } => (ty == FieldType::Geo, "coarsen applies to geo fields"),
            Transform::Bucket { .. } => (
                ty == FieldType::Timestamp || ty.is_numeric(),
                "bucket applies to timestamp, integer and decimal fields",
            ),
        };
        if ok {
            return Some(t);
        }
        self.err(
            pos,
            Code::TransformTypeMismatch,
            format!(
                "`{}` cannot apply to `{field}`, a {} field",
                t.name(),
                ty.name()
            ),
            help,
        );
        None
    }
}
