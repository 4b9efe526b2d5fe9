//! Input records as the engine reads them: a borrowed view of the declared fields only.
//!
//! This module owns reading one JSON line into a [`LineRecord`] without building a
//! `serde_json::Value` tree: the members the policy declares (in any kind, plus `kind`) are
//! kept, borrowing their text from the line where it has no escapes; every other member is
//! parsed and validated exactly as `serde_json` would, then forgotten (the policy is an
//! allow-list, so it could never be output). Acceptance is the same as parsing into a `Value`:
//! the same deserializer checks every byte, numbers are read (so an out-of-range number is
//! invalid JSON whichever member holds it) and nesting is limited alike; a line this reader
//! refuses is handed to the `Value` parser to classify the error, so reasons never change.
//!
//! [`Record`] is the one interface the transforms and the aggregation read fields through;
//! it is implemented for a parsed line and for a `serde_json` map (records given in memory).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// One field value, borrowed; the same information a `serde_json::Value` holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number.
    F64(f64),
    /// A string.
    Str(&'a str),
    /// An object or an array.
    Other(&'a Value),
}

impl<'a> Raw<'a> {
    /// A view of a JSON value.
    pub fn of(v: &'a Value) -> Self {
        match v {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Raw::U64(u),
                (None, Some(i)) => Raw::I64(i),
                _ => Raw::F64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Raw::Str(s),
            other => Raw::Other(other),
        }
    }

    /// True for `null`.
    pub fn is_null(self) -> bool {
        matches!(self, Raw::Null)
    }

    /// The string, if it is one.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Raw::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if it is one that fits an `i64` (as `Value::as_i64`).
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Raw::U64(u) => i64::try_from(u).ok(),
            Raw::I64(i) => Some(i),
            _ => None,
        }
    }

    /// The number as a float, if it is one (as `Value::as_f64`).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Raw::U64(u) => Some(u as f64),
            Raw::I64(i) => Some(i as f64),
            Raw::F64(f) => Some(f),
            _ => None,
        }
    }

    /// True for any number.
    pub fn is_number(self) -> bool {
        matches!(self, Raw::U64(_) | Raw::I64(_) | Raw::F64(_))
    }

    /// The object, if it is one.
    pub fn as_object(self) -> Option<&'a Map<String, Value>> {
        match self {
            Raw::Other(v) => v.as_object(),
            _ => None,
        }
    }

    /// An owned JSON value equal to the one parsed.
    pub fn to_value(self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::U64(u) => Value::from(u),
            Raw::I64(i) => Value::from(i),
            Raw::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Raw::Str(s) => Value::String(s.to_owned()),
            Raw::Other(v) => v.clone(),
        }
    }
}

/// What the transforms and the aggregation read a record through.
pub trait Record {
    /// The member `name`, if present (`null` included).
    fn get(&self, name: &str) -> Option<Raw<'_>>;
}

impl Record for Map<String, Value> {
    fn get(&self, name: &str) -> Option<Raw<'_>> {
        Map::get(self, name).map(Raw::of)
    }
}

/// A stored member of a parsed line.
#[derive(Debug)]
enum Slot<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Other(Value),
}

impl Slot<'_> {
    fn view(&self) -> Raw<'_> {
        match self {
            Slot::Null => Raw::Null,
            Slot::Bool(b) => Raw::Bool(*b),
            Slot::U64(u) => Raw::U64(*u),
            Slot::I64(i) => Raw::I64(*i),
            Slot::F64(f) => Raw::F64(*f),
            Slot::Str(s) => Raw::Str(s),
            Slot::Other(v) => Raw::Other(v),
        }
    }
}

/// The names a line reader keeps: every field any kind declares, and `kind`.
#[derive(Debug, Clone)]
pub struct FieldTable {
    names: Arc<[Box<str>]>,
}

impl FieldTable {
    /// A table of `names` (duplicates removed).
    pub fn new<'n>(names: impl IntoIterator<Item = &'n str>) -> Self {
        let mut v: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        v.sort();
        v.dedup();
        Self { names: v.into() }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| **n == *name)
    }
}

/// One input line's declared members, borrowed from the line where possible.
pub struct LineRecord<'a> {
    table: FieldTable,
    slots: Vec<Option<Slot<'a>>>,
}

impl Record for LineRecord<'_> {
    fn get(&self, name: &str) -> Option<Raw<'_>> {
        let i = self.table.index(name)?;
        self.slots.get(i)?.as_ref().map(Slot::view)
    }
}

impl fmt::Debug for LineRecord<'_> {
    // Values are personal data: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineRecord").finish_non_exhaustive()
    }
}

impl<'a> LineRecord<'a> {
    /// Reads one line holding a JSON object. `None` if the line is not a JSON object (the
    /// caller classifies why with the `Value` parser).
    pub fn parse(table: &FieldTable, line: &'a str) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_str(line);
        let slots = LineSeed { table }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(Self {
            table: table.clone(),
            slots,
        })
    }
}

struct LineSeed<'t> {
    table: &'t FieldTable,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = Vec<Option<Slot<'de>>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = Vec<Option<Slot<'de>>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<Slot<'de>>> = (0..self.table.names.len()).map(|_| None).collect();
        while let Some(key) = m.next_key_seed(KeySeed { table: self.table })? {
            match key {
                // A repeated member replaces the earlier one, as in a `Value` map.
                Some(i) => slots[i] = Some(m.next_value_seed(SlotSeed)?),
                None => m.next_value_seed(Discard)?,
            }
        }
        Ok(slots)
    }
}

struct KeySeed<'t> {
    table: &'t FieldTable,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.table.index(v))
    }
}

struct SlotSeed;

impl<'de> DeserializeSeed<'de> for SlotSeed {
    type Value = Slot<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed {
    type Value = Slot<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Slot::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Slot::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        // serde_json reports non-negative integers as u64; keep the `Value` distinction.
        Ok(u64::try_from(v).map_or(Slot::I64(v), Slot::U64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Slot::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Owned(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(de::value::MapAccessDeserializer::new(m)).map(Slot::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(de::value::SeqAccessDeserializer::new(s)).map(Slot::Other)
    }
}

/// Parses a value as `Value` would (numbers read, nesting counted) and keeps nothing.
struct Discard;

impl<'de> DeserializeSeed<'de> for Discard {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Discard {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while m.next_key_seed(Discard)?.is_some() {
            m.next_value_seed(Discard)?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element_seed(Discard)?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> FieldTable {
        FieldTable::new(["kind", "a", "b", "g"])
    }

    /// What the `Value` parser would give for member `name` of `line`.
    fn by_value(line: &str, name: &str) -> Option<Option<Value>> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(v.as_object()?.get(name).cloned())
    }

    fn by_line(line: &str, name: &str) -> Option<Option<Value>> {
        let r = LineRecord::parse(&table(), line)?;
        Some(r.get(name).map(Raw::to_value))
    }

    #[test]
    fn declared_members_read_as_values_do_and_others_are_dropped() {
        let line = r#"{"a":"x\"y","b":-3,"g":{"lat":1.5,"lon":[2]},"zz":{"deep":[1,2,{"q":null}]},"kind":null,"a":"last"}"#;
        for name in ["a", "b", "g", "kind"] {
            assert_eq!(by_line(line, name), by_value(line, name), "{name}");
        }
        assert_eq!(by_line(line, "a"), Some(Some(Value::from("last"))));
        assert_eq!(
            by_line(line, "zz"),
            Some(None),
            "undeclared members are not kept"
        );
    }

    #[test]
    fn refuses_exactly_what_the_value_parser_refuses() {
        for line in [
            r#"{"zz":1e400}"#,
            r#"{"zz":"\x"}"#,
            r#"{"a":1} x"#,
            r#"[1,2]"#,
            r#""a""#,
            r#"{"zz":[1,}"#,
            r#"{"a":01}"#,
        ] {
            assert!(LineRecord::parse(&table(), line).is_none(), "{line}");
        }
        let deep = format!(r#"{{"zz":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(LineRecord::parse(&table(), &deep).is_none());
    }

    proptest! {
        /// Any object of scalars and small nestings reads the same through both parsers.
        #[test]
        fn agrees_with_the_value_parser(
            members in proptest::collection::vec(("[abgkz]{1,2}", prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                "[ -~\u{e9}\u{1F600}\\\\\"]{0,12}".prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
                proptest::collection::vec(any::<i32>(), 0..3).prop_map(Value::from),
            ]), 0..8)
        ) {
            let mut line = String::from("{");
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(&serde_json::to_string(k).unwrap());
                line.push(':');
                line.push_str(&serde_json::to_string(v).unwrap());
            }
            line.push('}');
            for name in ["a", "b", "g", "kind", "k"] {
                let want = by_value(&line, name);
                let got = by_line(&line, name);
                if name == "k" {
                    prop_assert_eq!(got, Some(None));
                } else {
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
