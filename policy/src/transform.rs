//! Field transforms: one input record of a kind → the record that may leave the site.
//!
//! This module owns the allow-list. Only fields the policy names in `transforms` reach the
//! output; everything else, declared or not, is dropped. A record whose declared fields have
//! the wrong type is rejected with a reason that names the field but never carries its value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::keys::{KeyError, KeyRing};
use crate::model::{BucketWidth, FieldType, RecordKind, Transform};
use crate::record::{Raw, Record};
use crate::units::{self, UnixSeconds};

/// The marker a redacted field carries.
pub const REDACTED: &str = "[REDACTED]";

/// Why a record was rejected. Reasons name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The line is not JSON.
    #[error("not valid JSON")]
    InvalidJson,
    /// The JSON is not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// The line exceeds the size limit.
    #[error("longer than the {0}-byte record limit")]
    TooLong(usize),
    /// No `kind` and the policy has several kinds, or an unknown kind.
    #[error("unknown or missing record kind")]
    UnknownKind,
    /// A required field is absent.
    #[error("field `{0}` is missing")]
    Missing(String),
    /// A field's value does not match its declared type.
    #[error("field `{field}` is not a valid {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    /// A timestamp field outside the accepted time range.
    #[error(
        "field `{0}` is outside the accepted time range, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z"
    )]
    TimeOutOfRange(String),
    /// No key for the record's epoch.
    #[error("no pseudonymisation key: {0}")]
    Key(String),
}

impl RecordError {
    /// A stable short label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            RecordError::InvalidJson => "invalid_json",
            RecordError::NotAnObject => "not_an_object",
            RecordError::TooLong(_) => "too_long",
            RecordError::UnknownKind => "unknown_kind",
            RecordError::Missing(_) => "missing_field",
            RecordError::WrongType { .. } => "wrong_type",
            RecordError::TimeOutOfRange(_) => "time_out_of_range",
            RecordError::Key(_) => "key_unavailable",
        }
    }
}

impl From<KeyError> for RecordError {
    fn from(e: KeyError) -> Self {
        RecordError::Key(e.to_string())
    }
}

/// Reads a timestamp field value: an RFC 3339 string or integer Unix seconds, within the
/// accepted range ([`units::MIN_TIMESTAMP`]..=[`units::MAX_TIMESTAMP`]).
pub fn timestamp_of(v: Raw<'_>) -> Result<UnixSeconds, units::UnitError> {
    match v {
        Raw::Str(s) => units::parse_rfc3339(s),
        n => n
            .as_i64()
            .ok_or(units::UnitError::NotATimestamp)
            .and_then(units::check_timestamp),
    }
}

/// The bad-record reason for timestamp field `field` that [`timestamp_of`] refused.
fn timestamp_error(field: &str, e: &units::UnitError) -> RecordError {
    match e {
        units::UnitError::TimestampOutOfRange => RecordError::TimeOutOfRange(field.to_owned()),
        _ => RecordError::WrongType {
            field: field.to_owned(),
            expected: "timestamp",
        },
    }
}

/// Reads an address, accepting CIDR notation (the prefix is kept as an upper bound).
pub fn address_of(v: Raw<'_>) -> Option<(IpAddr, Option<u8>)> {
    let s = v.as_str()?;
    match s.split_once('/') {
        Some((a, p)) => Some((a.parse().ok()?, Some(p.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// Where an IPv6 address carries an IPv4 address, which tells how far it may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedded {
    /// The IPv4 address is the last 32 bits, after a fixed 96-bit prefix: IPv4-mapped
    /// (`::ffff:0:0/96`, RFC 4291 §2.5.5.2), IPv4-compatible (`::/96`, RFC 4291 §2.5.5.1),
    /// IPv4-translated (`::ffff:0:0:0/96`, RFC 2765 §2.1) and the NAT64 well-known prefix
    /// (`64:ff9b::/96`, RFC 6052 §2.1). Kept to `96 + P4` bits: exactly the IPv4 truncation.
    Suffix,
    /// 6to4 (`2002::/16`, RFC 3056 §2): bits 16-47 are the site's IPv4 address. Kept to at
    /// most `16 + P4` bits.
    SixToFour,
    /// Teredo (`2001::/32`, RFC 4380 §4): bits 32-63 are the Teredo server's IPv4 address and
    /// bits 96-127 the client's (every bit inverted), after its port. A prefix cannot keep
    /// any of the client's bits without the server's and the port: kept to at most
    /// `32 + P4` bits, the server's address truncated like any IPv4 address, none of the
    /// client's.
    Teredo,
    /// The NAT64 local-use prefix (`64:ff9b:1::/48`, RFC 8215): the IPv4 address follows a
    /// network-specific prefix of /48 to /96 (RFC 6052 §2.2) that only the operator knows,
    /// so no bit after the /48 is kept.
    LocalNat64,
}

/// The IPv4 address an IPv6 address embeds, if any (by its prefix).
pub fn embedded_ipv4(a: Ipv6Addr) -> Option<Embedded> {
    let bits = u128::from(a);
    let within = |prefix: u128, len: u32| bits >> (128 - len) == prefix >> (128 - len);
    if within(0, 96)
        || within(0xffff << 32, 96)
        || within(0xffff << 48, 96)
        || within(0x64_ff9b << 96, 96)
    {
        Some(Embedded::Suffix)
    } else if within(0x2002 << 112, 16) {
        Some(Embedded::SixToFour)
    } else if within(0x2001 << 112, 32) {
        Some(Embedded::Teredo)
    } else if within((0x64_ff9b << 96) | (1 << 80), 48) {
        Some(Embedded::LocalNat64)
    } else {
        None
    }
}

/// Truncates an address to a prefix: IPv4 to `ipv4` bits, IPv6 to `ipv6` bits, except that
/// an IPv6 address embedding an IPv4 address ([`Embedded`]) keeps no more of it than the
/// IPv4 prefix allows, so that a v4 subscriber seen through a v6 socket, a NAT64 or a
/// transition tunnel is generalised like a native v4 one. Returns the network and its length.
pub fn truncate_ip(ip: IpAddr, ipv4: u8, ipv6: u8) -> (IpAddr, u8) {
    let (p4, p6) = (ipv4.min(32), ipv6.min(128));
    let p = match ip {
        IpAddr::V4(_) => p4,
        IpAddr::V6(a) => match embedded_ipv4(a) {
            None => p6,
            Some(Embedded::Suffix) => 96 + p4,
            Some(Embedded::SixToFour) => p6.min(16 + p4),
            Some(Embedded::Teredo) => p6.min(32 + p4),
            Some(Embedded::LocalNat64) => p6.min(48),
        },
    };
    (mask(ip, p), p)
}

/// `ip` with every bit from `p` on cleared.
fn mask(ip: IpAddr, p: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(p.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(p.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// What `truncate` writes for `ip` given with prefix length `given` (CIDR input): the
/// truncation, or the input's own network if it is already shorter. Idempotent: generalising
/// the output again gives the same network and length.
pub fn generalise(ip: IpAddr, given: Option<u8>, ipv4: u8, ipv6: u8) -> (IpAddr, u8) {
    let (net, p) = truncate_ip(ip, ipv4, ipv6);
    match given {
        Some(g) if g < p => (mask(net, g), g),
        _ => (net, p),
    }
}

/// `address/prefix` text, as `format!("{net}/{p}")` writes it (IPv4 without the formatting
/// machinery: it is on every record's path).
fn network_text(net: IpAddr, p: u8) -> String {
    fn push_decimal(s: &mut String, n: u8) {
        if n >= 100 {
            s.push(char::from(b'0' + n / 100));
        }
        if n >= 10 {
            s.push(char::from(b'0' + n / 10 % 10));
        }
        s.push(char::from(b'0' + n % 10));
    }
    match net {
        IpAddr::V4(a) => {
            let mut s = String::with_capacity(18);
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_decimal(&mut s, o);
            }
            s.push('/');
            push_decimal(&mut s, p);
            s
        }
        IpAddr::V6(_) => format!("{net}/{p}"),
    }
}

fn geo_of(v: Raw<'_>) -> Option<(f64, f64)> {
    let o = v.as_object()?;
    let lat = o.get("lat")?.as_f64()?;
    let lon = o.get("lon")?.as_f64()?;
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

fn type_ok(ty: FieldType, v: Raw<'_>) -> bool {
    match ty {
        FieldType::String => v.as_str().is_some(),
        FieldType::Integer => v.as_i64().is_some(),
        FieldType::Decimal => v.is_number(),
        FieldType::Boolean => matches!(v, Raw::Bool(_)),
        FieldType::Ipv4 => matches!(address_of(v), Some((IpAddr::V4(_), _))),
        FieldType::Ipv6 => matches!(address_of(v), Some((IpAddr::V6(_), _))),
        FieldType::Ip => address_of(v).is_some(),
        FieldType::Timestamp => timestamp_of(v).is_ok(),
        FieldType::Geo => geo_of(v).is_some(),
    }
}

/// The bytes a pseudonym is computed over: the canonical text of the value.
fn canonical(ty: FieldType, v: Raw<'_>) -> Option<String> {
    match ty {
        FieldType::String => v.as_str().map(str::to_owned),
        FieldType::Integer => v.as_i64().map(|i| i.to_string()),
        _ if ty.is_address() => address_of(v).map(|(ip, _)| match ip {
            // A mapped v4 address is the same subscriber as the bare v4 one.
            IpAddr::V6(a) => a
                .to_ipv4_mapped()
                .map_or_else(|| a.to_string(), |v4| v4.to_string()),
            IpAddr::V4(a) => a.to_string(),
        }),
        _ => None,
    }
}

fn floor_to(v: i64, w: i64) -> i64 {
    v.div_euclid(w) * w
}

/// Transformed fields in declaration order. Names are shared with the plan (no copy per
/// record); serialises as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(Arc<str>, Value)>);

impl Fields {
    /// The value of a field, if it is present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    /// True if the field is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Field names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| &**n)
    }

    /// As a JSON map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = Value;
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or(&Value::Null)
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            m.serialize_entry(&**n, v)?;
        }
        m.end()
    }
}

/// The transform plan of one record kind.
pub struct KindPlan {
    /// Name of the kind.
    pub name: String,
    /// Declared fields, in name order.
    fields: Vec<(Arc<str>, FieldType, Option<Transform>)>,
    /// Name of the timestamp field.
    pub time: String,
    /// Name of the privacy-unit field.
    pub privacy_unit: String,
    unit_type: FieldType,
    /// (field index, bucket start, formatted) of the last timestamp bucket.
    last_bucket: std::cell::Cell<Option<(usize, i64, String)>>,
}

/// A record after validation: its time, its privacy unit (canonical text, never output) and
/// its transformed fields.
pub struct Transformed<'r> {
    /// The record's time.
    pub time: UnixSeconds,
    /// Canonical privacy unit; stays in memory, never written anywhere.
    pub unit: std::borrow::Cow<'r, str>,
    /// Fields that may leave the site, after their transforms.
    pub fields: Fields,
}

impl std::fmt::Debug for Transformed<'_> {
    // The privacy unit is never printed, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformed")
            .field("time", &self.time)
            .field("unit", &"<hidden>")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KindPlan {
    /// The plan for `kind` (already checked by the compiler).
    pub fn new(name: &str, kind: &RecordKind) -> Self {
        let fields = kind
            .fields
            .iter()
            .map(|(f, t)| (Arc::from(f.as_str()), *t, kind.transforms.get(f).cloned()))
            .collect();
        Self {
            name: name.to_owned(),
            fields,
            time: kind.time.clone(),
            privacy_unit: kind.privacy_unit.clone(),
            unit_type: kind
                .fields
                .get(&kind.privacy_unit)
                .copied()
                .unwrap_or(FieldType::String),
            last_bucket: std::cell::Cell::new(None),
        }
    }

    /// Validates and transforms one record.
    pub fn apply<'r, R: Record + ?Sized>(
        &self,
        record: &'r R,
        keys: &mut KeyRing,
    ) -> Result<Transformed<'r>, RecordError> {
        let time = record
            .get(&self.time)
            .filter(|v| !v.is_null())
            .ok_or_else(|| RecordError::Missing(self.time.clone()))?;
        let time = timestamp_of(time).map_err(|e| timestamp_error(&self.time, &e))?;
        let unit_value = record
            .get(&self.privacy_unit)
            .filter(|v| !v.is_null())
            .ok_or_else(|| RecordError::Missing(self.privacy_unit.clone()))?;
        let unit = match (self.unit_type, unit_value) {
            (FieldType::String, Raw::Str(s)) => std::borrow::Cow::Borrowed(s),
            _ => std::borrow::Cow::Owned(
                canonical(self.unit_type, unit_value)
                    .or_else(|| {
                        type_ok(self.unit_type, unit_value)
                            .then(|| unit_value.to_value().to_string())
                    })
                    .ok_or_else(|| RecordError::WrongType {
                        field: self.privacy_unit.clone(),
                        expected: self.unit_type.name(),
                    })?,
            ),
        };
        let mut out = Vec::with_capacity(self.fields.len());
        for (i, (name, ty, transform)) in self.fields.iter().enumerate() {
            let Some(v) = record.get(name).filter(|v| !v.is_null()) else {
                continue;
            };
            if *ty == FieldType::Timestamp {
                timestamp_of(v).map_err(|e| timestamp_error(name, &e))?;
            } else if !type_ok(*ty, v) {
                return Err(RecordError::WrongType {
                    field: name.to_string(),
                    expected: ty.name(),
                });
            }
            let Some(transform) = transform else {
                continue; // not in the allow-list: dropped
            };
            let value = match transform {
                Transform::Keep => v.to_value(),
                Transform::Redact => Value::String(REDACTED.to_owned()),
                Transform::Pseudonymise { key } => {
                    let k = keys
                        .get_mut(key)
                        .ok_or_else(|| RecordError::Key(format!("key `{key}` is not loaded")))?;
                    // Strings are their own canonical form: no copy on the hot path.
                    let p = match (ty, v.as_str()) {
                        (FieldType::String, Some(text)) => k.pseudonym(text.as_bytes(), time)?,
                        _ => {
                            let text = canonical(*ty, v).ok_or_else(|| RecordError::WrongType {
                                field: name.to_string(),
                                expected: ty.name(),
                            })?;
                            k.pseudonym(text.as_bytes(), time)?
                        }
                    };
                    Value::String(p)
                }
                Transform::Truncate { ipv4, ipv6 } => {
                    let (ip, given) = address_of(v).ok_or_else(|| RecordError::WrongType {
                        field: name.to_string(),
                        expected: ty.name(),
                    })?;
                    let (net, p) = generalise(ip, given, ipv4.unwrap_or(24), ipv6.unwrap_or(48));
                    Value::String(network_text(net, p))
                }
                Transform::Coarsen { grid } => {
                    let (lat, lon) = geo_of(v).ok_or_else(|| RecordError::WrongType {
                        field: name.to_string(),
                        expected: "geo",
                    })?;
                    let g = i64::from(grid.0);
                    let snap = |d: f64| floor_to((d * 1e6).round() as i64, g) as f64 / 1e6;
                    serde_json::json!({"lat": snap(lat), "lon": snap(lon)})
                }
                Transform::Bucket { width } => match (width, ty) {
                    (BucketWidth::Duration(d), FieldType::Timestamp) => {
                        let t = timestamp_of(v).map_err(|e| timestamp_error(name, &e))?;
                        let w = i64::try_from(d.0).unwrap_or(i64::MAX);
                        let b = floor_to(t, w);
                        // Records arrive roughly in time order: remember the last bucket's text.
                        let text = match self.last_bucket.take() {
                            Some((f, start, text)) if f == i && start == b => text,
                            _ => units::format_rfc3339(b),
                        };
                        self.last_bucket.set(Some((i, b, text.clone())));
                        Value::String(text)
                    }
                    (BucketWidth::Number { units, places: 0 }, _) if v.as_i64().is_some() => {
                        Value::from(floor_to(v.as_i64().unwrap_or_default(), *units))
                    }
                    (BucketWidth::Number { units, places }, _) => {
                        let scale = 10f64.powi(*places as i32);
                        let x = v.as_f64().unwrap_or_default();
                        let b = floor_to((x * scale).floor() as i64, *units) as f64 / scale;
                        serde_json::Number::from_f64(b).map_or(Value::Null, Value::Number)
                    }
                    _ => Value::Null,
                },
            };
            out.push((Arc::clone(name), value));
        }
        Ok(Transformed {
            time,
            unit,
            fields: Fields(out),
        })
    }

    /// The declared type of a field.
    pub fn field_type(&self, field: &str) -> Option<FieldType> {
        self.fields
            .iter()
            .find(|(f, _, _)| &**f == field)
            .map(|(_, t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::EpochKeys;
    use proptest::prelude::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn plan() -> (KindPlan, KeyRing) {
        let p = crate::compile(crate::compile::tests::GOOD).unwrap();
        let mut ring = KeyRing::default();
        ring.insert(EpochKeys::from_test_hex("subscriber", KEY, 86_400).unwrap());
        (KindPlan::new("flow", &p.kinds["flow"]), ring)
    }

    #[test]
    fn transforms_each_field_and_drops_the_rest() {
        let (plan, mut ring) = plan();
        let rec = serde_json::json!({
            "imsi": "001010123456789", "ue_ip": "10.1.2.3", "start": "2026-11-26T11:20:47Z",
            "bytes": 1234, "cell": "c1", "imei": "353490061234560"
        });
        let t = plan.apply(rec.as_object().unwrap(), &mut ring).unwrap();
        assert_eq!(t.fields["ue_ip"], "10.1.2.0/24");
        assert_eq!(t.fields["start"], "2026-11-26T11:15:00Z");
        assert_eq!(t.fields["cell"], "c1");
        assert!(t.fields["imsi"].as_str().unwrap().starts_with("e20783:"));
        assert!(!t.fields.contains_key("bytes"), "declared but not allowed");
        assert!(!t.fields.contains_key("imei"), "undeclared");
    }

    #[test]
    fn wrong_types_name_the_field_not_the_value() {
        let (plan, mut ring) = plan();
        let rec =
            serde_json::json!({"imsi": "001010123456789", "start": 0, "ue_ip": "not-an-ip-001010"});
        let e = plan.apply(rec.as_object().unwrap(), &mut ring).unwrap_err();
        assert_eq!(e.to_string(), "field `ue_ip` is not a valid ip");
        let rec = serde_json::json!({"start": 0});
        assert_eq!(
            plan.apply(rec.as_object().unwrap(), &mut ring).unwrap_err(),
            RecordError::Missing("imsi".into())
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_truncates_like_ipv4() {
        let v4: IpAddr = "192.0.2.77".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap();
        let (a, pa) = truncate_ip(v4, 24, 48);
        let (b, pb) = truncate_ip(mapped, 24, 48);
        assert_eq!((a.to_string(), pa), ("192.0.2.0".into(), 24));
        assert_eq!((b.to_string(), pb), ("::ffff:192.0.2.0".into(), 120));
        let (c, pc) = truncate_ip("2001:db8:1234:5678::1".parse().unwrap(), 24, 48);
        assert_eq!((c.to_string(), pc), ("2001:db8:1234::".into(), 48));
    }

    /// Each IPv6 form that embeds an IPv4 address keeps no more of it than the IPv4 prefix.
    #[test]
    fn embedded_ipv4_is_truncated_with_the_ipv4_prefix() {
        let cases = [
            // 6to4 of 192.0.2.4 (RFC 3056): /48 would keep the whole IPv4 address.
            ("2002:c000:204:1::1", 24, 48, "2002:c000:200::/40"),
            ("2002:c000:204:1::1", 24, 32, "2002:c000::/32"),
            ("2002:c000:204:1::1", 32, 128, "2002:c000:204::/48"),
            // Teredo (RFC 4380 §4 example): server 65.54.227.120, client 192.0.2.45:40000.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                24,
                48,
                "2001:0:4136::/48",
            ),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                16,
                64,
                "2001:0:4136::/48",
            ),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                24,
                128,
                "2001:0:4136:e300::/56",
            ),
            // NAT64 well-known prefix (RFC 6052) and IPv4-compatible, -translated, -mapped.
            ("64:ff9b::192.0.2.33", 24, 48, "64:ff9b::c000:200/120"),
            ("::192.0.2.33", 24, 48, "::c000:200/120"),
            ("::ffff:0:192.0.2.33", 24, 48, "::ffff:0:c000:200/120"),
            ("::ffff:192.0.2.33", 24, 48, "::ffff:192.0.2.0/120"),
            // NAT64 local-use prefix (RFC 8215): nothing past the /48.
            ("64:ff9b:1:c000:2:2100::", 24, 64, "64:ff9b:1::/48"),
            ("64:ff9b:1:c000:2:2100::", 24, 40, "64:ff9b::/40"),
            // Native addresses near those prefixes are not embedded forms.
            ("2001:db8::1", 8, 48, "2001:db8::/48"),
            ("2003::1", 8, 48, "2003::/48"),
            ("64:ff9b:2::1", 8, 48, "64:ff9b:2::/48"),
        ];
        for (input, v4, v6, want) in cases {
            let (net, p) = truncate_ip(input.parse().unwrap(), v4, v6);
            assert_eq!(format!("{net}/{p}"), want, "{input} with /{v4} /{v6}");
        }
    }

    /// Builds an IPv6 address of embedded form `form` carrying `v4`, with `rest` in every bit
    /// that is neither the form's fixed prefix nor the (first) IPv4 address.
    fn embedding(form: u8, v4: u32, rest: u128) -> Ipv6Addr {
        let v4 = u128::from(v4);
        Ipv6Addr::from(match form {
            0 => (0xffff << 32) | v4,
            1 => v4,
            2 => (0xffff << 48) | v4,
            3 => (0x64_ff9b << 96) | v4,
            4 => (0x2002 << 112) | (v4 << 80) | (rest & ((1 << 80) - 1)),
            // Teredo: the server's address; `rest` fills flags, port and the client's address.
            5 => (0x2001 << 112) | (v4 << 64) | (rest & ((1 << 64) - 1)),
            // 64:ff9b:1::/48: the IPv4 address is somewhere after the /48.
            _ => (0x64_ff9b << 96) | (1 << 80) | (v4 << 48) | (rest & ((1 << 48) - 1)),
        })
    }

    proptest! {
        #[test]
        fn network_text_is_the_display_text(bits in any::<u32>(), p in any::<u8>()) {
            let net = IpAddr::V4(Ipv4Addr::from(bits));
            prop_assert_eq!(network_text(net, p), format!("{net}/{p}"));
        }

        /// The output depends on an embedded IPv4 address only through its first P4 bits
        /// (and on a Teredo client not at all): two addresses of one form whose IPv4
        /// addresses agree there, whatever their other bits, truncate alike.
        #[test]
        fn embedded_ipv4_keeps_no_more_than_its_prefix(
            form in 0u8..7, a in any::<u32>(), below in any::<u32>(),
            rest_a in any::<u128>(), rest_b in any::<u128>(), v4 in 0u8..=32, v6 in 0u8..=128,
        ) {
            let b = a ^ (below & u32::MAX.checked_shr(u32::from(v4)).unwrap_or(0));
            let x = truncate_ip(IpAddr::V6(embedding(form, a, rest_a)), v4, v6);
            let y = truncate_ip(IpAddr::V6(embedding(form, b, rest_b)), v4, v6);
            prop_assert_eq!(x, y);
        }

        #[test]
        fn truncation_is_idempotent(bits in any::<u128>(), v4 in 0u8..=32, v6 in 0u8..=128, mapped in any::<bool>(), is_v4 in any::<bool>(), form in 0u8..10) {
            let ip = if is_v4 {
                IpAddr::V4(Ipv4Addr::from(bits as u32))
            } else if mapped {
                IpAddr::V6(Ipv4Addr::from(bits as u32).to_ipv6_mapped())
            } else if form < 7 {
                IpAddr::V6(embedding(form, bits as u32, bits >> 32))
            } else {
                IpAddr::V6(Ipv6Addr::from(bits))
            };
            let (once, p) = generalise(ip, None, v4, v6);
            prop_assert_eq!(generalise(once, Some(p), v4, v6), (once, p));
            if mapped && !is_v4 {
                // Exactly the IPv4 truncation, embedded.
                let (n4, _) = truncate_ip(IpAddr::V4(Ipv4Addr::from(bits as u32)), v4, v6);
                let IpAddr::V4(n4) = n4 else { unreachable!() };
                prop_assert_eq!(once, IpAddr::V6(n4.to_ipv6_mapped()));
            }
        }

        #[test]
        fn string_level_truncation_is_idempotent(bits in any::<u32>()) {
            let (plan, mut ring) = plan();
            let rec = serde_json::json!({"imsi": "1", "start": 0, "ue_ip": Ipv4Addr::from(bits).to_string()});
            let once = plan.apply(rec.as_object().unwrap(), &mut ring).unwrap().fields["ue_ip"].clone();
            let rec2 = serde_json::json!({"imsi": "1", "start": 0, "ue_ip": once});
            let twice = plan.apply(rec2.as_object().unwrap(), &mut ring).unwrap().fields["ue_ip"].clone();
            prop_assert_eq!(once, twice);
        }

        /// Whatever extra fields a record carries, the output holds only allow-listed ones.
        #[test]
        fn allow_list_fails_closed(extra in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{0,20}", 0..12)) {
            let (plan, mut ring) = plan();
            let mut rec = serde_json::json!({"imsi": "001010123456789", "start": 0}).as_object().unwrap().clone();
            for (k, v) in &extra {
                if !["imsi", "start", "ue_ip", "bytes", "cell"].contains(&k.as_str()) {
                    rec.insert(k.clone(), Value::String(v.clone()));
                }
            }
            let out = plan.apply(&rec, &mut ring).unwrap();
            for k in out.fields.keys() {
                prop_assert!(["imsi", "ue_ip", "start", "cell"].contains(&k), "{k} leaked");
            }
            for (k, v) in &extra {
                if v.len() >= 4 && !["imsi", "start", "ue_ip", "bytes", "cell"].contains(&k.as_str()) {
                    let s = serde_json::to_string(&out.fields).unwrap();
                    prop_assert!(!s.contains(v.as_str()), "value of {k} leaked");
                }
            }
        }
    }
}
