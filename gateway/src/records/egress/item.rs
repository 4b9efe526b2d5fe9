//! What crosses into egress: the items the policy engine emits, and the batches they travel in.
//!
//! Owns the contract between the policy engine and egress. Egress never sees a raw record: its
//! input type, [`EgressItem`], can only be built from an object that names a release or a
//! *transformed* record kind, the destination the policy routed it to and the policy hash.
//!
//! # The item contract (one JSON object per item, as the policy engine's `Output` serialises)
//! - `"release": "<name>"` marks one released cell of a release (a windowed aggregate); the
//!   engine also writes `"kind": "release"`. It may carry `"epsilon": <number ≥ 0>`, the ε
//!   the release spent; when it does not (the engine charges ε once per release window, not per
//!   cell), egress accounts the release's ε once per distinct (release, window) from the policy
//!   ([`super::jurisdiction::EgressPermissions::release_epsilon`]).
//! - otherwise `"kind": "<name>"` marks a transformed record of that record kind (`epsilon`,
//!   when present, must be 0: a record spends no budget).
//! - `"destination": "<name>"` is where the policy routed it; `"policy"` (or `"policy_hash"`)
//!   the hash of the policy that produced it. `"window"` is carried unchanged when present.
//! - every other field (`region`, `group`, `metrics`, `record`, …) is payload, carried
//!   unchanged; egress never reads it.

use std::collections::BTreeSet;
use std::fmt;

use mecgw_policy::engine::Output;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest destination, release or kind name accepted.
pub const MAX_NAME_LEN: usize = 64;
/// Longest policy hash accepted.
pub const MAX_POLICY_HASH_LEN: usize = 128;
/// Longest JSON line accepted as one item.
pub const MAX_ITEM_BYTES: usize = 1 << 20;

/// Whether an item is a release or a transformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A windowed aggregate released under the policy.
    Release,
    /// A record transformed field by field under the policy.
    Record,
}

/// What the jurisdiction check is about: a release name or a transformed record kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OutputName {
    /// Release or record.
    pub kind: OutputKind,
    /// The release name, or the record kind name.
    pub name: String,
}

impl fmt::Display for OutputName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            OutputKind::Release => write!(f, "release {}", self.name),
            OutputKind::Record => write!(f, "kind {}", self.name),
        }
    }
}

/// Why an object is not an egress item.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ItemError {
    /// The item is not a JSON object.
    #[error("an egress item must be a JSON object")]
    NotAnObject,
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// Neither `release` nor `kind` is present.
    #[error("an egress item needs \"release\" (a release) or \"kind\" (a transformed record)")]
    NoOutputName,
    /// A required field is missing.
    #[error("missing field {0:?}")]
    Missing(&'static str),
    /// The line is longer than [`MAX_ITEM_BYTES`].
    #[error("item of {0} bytes is longer than the {MAX_ITEM_BYTES} bytes accepted")]
    TooLarge(usize),
    /// A field has the wrong type or an invalid value.
    #[error("field {field:?}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// One item the policy engine emitted for a destination: a release or a transformed record.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressItem {
    output: OutputName,
    destination: String,
    policy_hash: String,
    epsilon: Option<f64>,
    /// The `window` member as compact JSON.
    window: Option<String>,
    /// The whole object as compact JSON with sorted keys, as a `serde_json::Value` writes it.
    json: String,
}

impl EgressItem {
    /// Parses one JSON line as written by the policy engine.
    pub fn from_json_line(line: &str) -> Result<Self, ItemError> {
        if line.len() > MAX_ITEM_BYTES {
            return Err(ItemError::TooLarge(line.len()));
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| ItemError::NotJson(e.to_string()))?;
        Self::from_json(value)
    }

    /// Checks an emitted object against the contract in the module docs.
    pub fn from_json(value: Value) -> Result<Self, ItemError> {
        let Value::Object(object) = value else {
            return Err(ItemError::NotAnObject);
        };
        let output = if let Some(v) = object.get("release") {
            OutputName {
                kind: OutputKind::Release,
                name: name_field("release", v)?,
            }
        } else if let Some(v) = object.get("kind") {
            OutputName {
                kind: OutputKind::Record,
                name: name_field("kind", v)?,
            }
        } else {
            return Err(ItemError::NoOutputName);
        };
        let destination = name_field(
            "destination",
            object
                .get("destination")
                .ok_or(ItemError::Missing("destination"))?,
        )?;
        let policy_hash = match object.get("policy").or_else(|| object.get("policy_hash")) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_POLICY_HASH_LEN => s.clone(),
            Some(_) => {
                return Err(ItemError::Invalid {
                    field: "policy",
                    problem: format!("must be a string of 1 to {MAX_POLICY_HASH_LEN} characters"),
                });
            }
            None => return Err(ItemError::Missing("policy")),
        };
        let epsilon = match object.get("epsilon") {
            None => None,
            Some(v) => {
                let eps = v
                    .as_f64()
                    .filter(|e| e.is_finite() && *e >= 0.0)
                    .ok_or_else(|| ItemError::Invalid {
                        field: "epsilon",
                        problem: "must be a finite number ≥ 0".into(),
                    })?;
                if output.kind == OutputKind::Record && eps != 0.0 {
                    return Err(ItemError::Invalid {
                        field: "epsilon",
                        problem: "a transformed record spends no budget; epsilon must be 0".into(),
                    });
                }
                Some(eps)
            }
        };
        Ok(Self {
            output,
            destination,
            policy_hash,
            epsilon,
            window: object.get("window").map(Value::to_string),
            json: Value::Object(object).to_string(),
        })
    }

    /// An output of the policy engine, as [`EgressItem::from_json`] of its value would make
    /// it (same checks, same bytes), without building the value for a transformed record.
    pub fn from_output(o: &Output<'_>) -> Result<Self, ItemError> {
        let Output::Record {
            kind,
            window,
            destination,
            policy,
            ..
        } = o
        else {
            // Releases are few (cells of closed windows): the general path is fine.
            return Self::from_json(o.to_value());
        };
        let output = OutputName {
            kind: OutputKind::Record,
            name: name_str("kind", kind)?,
        };
        let destination = name_str("destination", destination)?;
        if policy.is_empty() || policy.len() > MAX_POLICY_HASH_LEN {
            return Err(ItemError::Invalid {
                field: "policy",
                problem: format!("must be a string of 1 to {MAX_POLICY_HASH_LEN} characters"),
            });
        }
        let mut json = Vec::with_capacity(256);
        o.write_sorted_json(&mut json)
            .map_err(|e| ItemError::NotJson(e.to_string()))?;
        let json = String::from_utf8(json).map_err(|e| ItemError::NotJson(e.to_string()))?;
        let window = serde_json::to_string(&serde_json::json!({
            "end": window.end, "start": window.start
        }))
        .map_err(|e| ItemError::NotJson(e.to_string()))?;
        Ok(Self {
            output,
            destination,
            policy_hash: (*policy).to_string(),
            epsilon: None,
            window: Some(window),
            json,
        })
    }

    /// The release or record kind this item is.
    pub fn output(&self) -> &OutputName {
        &self.output
    }

    /// The destination the policy routed this item to.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// Hash of the policy that produced the item.
    pub fn policy_hash(&self) -> &str {
        &self.policy_hash
    }

    /// ε this item says it spent, if it says so (0 or nothing for transformed records).
    pub fn epsilon(&self) -> Option<f64> {
        self.epsilon
    }

    /// The `window` tag as compact JSON, if any.
    pub fn window(&self) -> Option<&str> {
        self.window.as_deref()
    }

    /// The whole object as emitted, as it will be sent: compact JSON with sorted keys.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// Checks a destination/release/kind name: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9_-]`.
///
/// Names end up in stream names, subjects and file names, so the set is deliberately small.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn name_field(field: &'static str, v: &Value) -> Result<String, ItemError> {
    match v {
        Value::String(s) => name_str(field, s),
        _ => Err(invalid_name(field)),
    }
}

fn name_str(field: &'static str, s: &str) -> Result<String, ItemError> {
    if valid_name(s) {
        Ok(s.to_string())
    } else {
        Err(invalid_name(field))
    }
}

fn invalid_name(field: &'static str) -> ItemError {
    ItemError::Invalid {
        field,
        problem: format!("must be a string of 1 to {MAX_NAME_LEN} of [A-Za-z0-9_-]"),
    }
}

/// Identity of a spooled batch: destination, spool instance and sequence number.
///
/// The instance is random per spool database, so a wiped spool never reuses an id that a
/// sink's duplicate detection still remembers. Sequence numbers only grow, per destination.
/// Text form: `<destination>-<instance as 16 hex>-<seq as 20 digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// Destination name.
    pub destination: String,
    /// Random id of the spool database that assigned the sequence number.
    pub instance: u64,
    /// Per-destination sequence number, from 1.
    pub seq: u64,
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{:016x}-{:020}",
            self.destination, self.instance, self.seq
        )
    }
}

impl std::str::FromStr for BatchId {
    type Err = ItemError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ItemError::Invalid {
            field: "batch_id",
            problem: format!("{s:?} is not <destination>-<16 hex>-<20 digits>"),
        };
        let mut parts = s.rsplitn(3, '-');
        let seq = parts.next().ok_or_else(bad)?;
        let instance = parts.next().ok_or_else(bad)?;
        let destination = parts.next().ok_or_else(bad)?;
        if seq.len() != 20 || instance.len() != 16 || !valid_name(destination) {
            return Err(bad());
        }
        Ok(Self {
            destination: destination.to_string(),
            instance: u64::from_str_radix(instance, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// What egress knows about a batch without reading its payload: what the jurisdiction check,
/// the audit log and the metrics need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchHeader {
    /// The batch id.
    pub id: String,
    /// Destination name.
    pub destination: String,
    /// Region of the destination when the batch was spooled.
    pub region: String,
    /// Hash of the policy that produced every item.
    pub policy_hash: String,
    /// The distinct releases and record kinds in the batch.
    pub outputs: BTreeSet<OutputName>,
    /// Number of release items.
    pub releases: u64,
    /// Number of transformed-record items.
    pub records: u64,
    /// Total ε spent by the releases.
    pub epsilon: f64,
    /// Size of the payload in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of the payload, set by the spool; checked before every send and carried
    /// into the audit log. Absent in batches spooled by a version without digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl BatchHeader {
    /// Number of items in the batch.
    pub fn items(&self) -> u64 {
        self.releases + self.records
    }
}

/// The payload a sink receives for one batch, up to its items: one compact JSON object, no
/// newline inside.
#[derive(Serialize)]
struct WireBatchHead<'a> {
    batch_id: String,
    destination: &'a str,
    region: &'a str,
    policy_hash: &'a str,
}

/// Encodes a batch as its sinks receive it:
/// `{"batch_id":…,"destination":…,"region":…,"policy_hash":…,"items":[…]}`.
pub fn encode_batch(
    id: &BatchId,
    region: &str,
    policy_hash: &str,
    items: &[EgressItem],
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(&WireBatchHead {
        batch_id: id.to_string(),
        destination: &id.destination,
        region,
        policy_hash,
    })?;
    // A struct serialises as `{…}`: reopen it for the items, each already compact JSON.
    out.pop();
    out.reserve(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 12);
    out.extend_from_slice(b",\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.json.as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn release_and_record_items_parse() {
        let r = EgressItem::from_json(json!({
            "release": "flows_per_cell", "destination": "eu-analytics", "policy_hash": "sha256:ab",
            "epsilon": 0.5, "window": {"start": 0, "end": 60}, "count": 12
        }))
        .unwrap();
        assert_eq!(r.output().kind, OutputKind::Release);
        assert_eq!(r.output().name, "flows_per_cell");
        assert_eq!(r.epsilon(), Some(0.5));
        let k = EgressItem::from_json_line(
            r#"{"kind":"flow","destination":"eu-analytics","policy_hash":"h","ue":"10.0.0.0/24"}"#,
        )
        .unwrap();
        assert_eq!(k.output().kind, OutputKind::Record);
        assert_eq!(k.epsilon(), None);
        // The policy engine's own output shape: `kind: release`, `policy`, no epsilon.
        let cell = EgressItem::from_json(json!({
            "kind": "release", "release": "traffic_per_cell",
            "window": {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T11:00:00Z"},
            "destination": "national_statistics", "region": "EU-DE", "policy": "sha256:ab",
            "group": {"cell": "c1"}, "metrics": {"count": 17}
        }))
        .unwrap();
        assert_eq!(cell.output().kind, OutputKind::Release);
        assert_eq!(cell.output().name, "traffic_per_cell");
        assert_eq!(cell.policy_hash(), "sha256:ab");
        assert_eq!(cell.epsilon(), None);
    }

    #[test]
    fn contract_violations_are_specific_errors() {
        assert_eq!(
            EgressItem::from_json(json!([1])),
            Err(ItemError::NotAnObject)
        );
        assert_eq!(
            EgressItem::from_json(json!({"destination": "d", "policy_hash": "h"})),
            Err(ItemError::NoOutputName)
        );
        assert_eq!(
            EgressItem::from_json(json!({"release": "r", "destination": "d"})),
            Err(ItemError::Missing("policy"))
        );
        assert!(matches!(
            EgressItem::from_json(
                json!({"kind": "k", "destination": "d", "policy_hash": "h", "epsilon": 1})
            ),
            Err(ItemError::Invalid {
                field: "epsilon",
                ..
            })
        ));
        assert!(matches!(
            EgressItem::from_json(json!({"kind": "a.b", "destination": "d", "policy_hash": "h"})),
            Err(ItemError::Invalid { field: "kind", .. })
        ));
        assert_eq!(
            EgressItem::from_json(json!({"kind": "k", "policy_hash": "h"})),
            Err(ItemError::Missing("destination"))
        );
        let huge = format!(r#"{{"kind":"k","pad":"{}"}}"#, "x".repeat(MAX_ITEM_BYTES));
        assert!(matches!(
            EgressItem::from_json_line(&huge),
            Err(ItemError::TooLarge(_))
        ));
    }

    #[test]
    fn an_engine_record_becomes_the_item_its_value_would() {
        use mecgw_policy::{engine::WindowTag, transform::Fields};
        use std::sync::Arc;
        let window = WindowTag {
            start: "2026-11-26T10:00:00Z".into(),
            end: "2026-11-26T11:00:00Z".into(),
        };
        let fields = Fields(vec![
            (Arc::from("time"), json!(1_764_151_200)),
            (Arc::from("device_id"), json!("p:\"x\"\u{e9}")),
            (Arc::from("location"), json!({"lon": 11.01, "lat": 48.0})),
            (Arc::from("rtt_ms"), json!(0.1)),
        ]);
        let o = Output::Record {
            kind: "app_event",
            window: &window,
            destination: "analytics",
            region: "EU-DE",
            policy: "sha256:ab",
            record: &fields,
            prefix: "",
        };
        let fast = EgressItem::from_output(&o).unwrap();
        assert_eq!(fast, EgressItem::from_json(o.to_value()).unwrap());
        let bad = Output::Record {
            kind: "app_event",
            window: &window,
            destination: "no/such",
            region: "EU-DE",
            policy: "sha256:ab",
            record: &fields,
            prefix: "",
        };
        assert!(matches!(
            EgressItem::from_output(&bad),
            Err(ItemError::Invalid {
                field: "destination",
                ..
            })
        ));
    }

    #[test]
    fn encoded_batch_is_the_serde_serialisation_of_the_wire_batch() {
        #[derive(Serialize)]
        struct WireBatch<'a> {
            batch_id: String,
            destination: &'a str,
            region: &'a str,
            policy_hash: &'a str,
            items: Vec<&'a Value>,
        }
        let values = [
            json!({"kind": "k", "destination": "d", "policy_hash": "h", "z": [1, 2.5, null]}),
            json!({"release": "r", "destination": "d", "policy": "h", "window": {"start": 0}}),
        ];
        let items: Vec<EgressItem> = values
            .iter()
            .map(|v| EgressItem::from_json(v.clone()).unwrap())
            .collect();
        let id = BatchId {
            destination: "d".into(),
            instance: 7,
            seq: 3,
        };
        let want = serde_json::to_vec(&WireBatch {
            batch_id: id.to_string(),
            destination: "d",
            region: "EU \"x\"",
            policy_hash: "h",
            items: values.iter().collect(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(encode_batch(&id, "EU \"x\"", "h", &items).unwrap()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        assert_eq!(items[1].window(), Some(r#"{"start":0}"#));
    }

    #[test]
    fn batch_id_round_trips_even_with_dashes_in_the_destination() {
        let id = BatchId {
            destination: "eu-central-1".into(),
            instance: 0xdead_beef,
            seq: 42,
        };
        let text = id.to_string();
        assert_eq!(text, "eu-central-1-00000000deadbeef-00000000000000000042");
        assert_eq!(text.parse::<BatchId>().unwrap(), id);
        assert!("nonsense".parse::<BatchId>().is_err());
        assert!("d-xyz-1".parse::<BatchId>().is_err());
    }

    #[test]
    fn encoded_batch_is_one_line_and_carries_the_items_unchanged() {
        let item = EgressItem::from_json(
            json!({"kind": "k", "destination": "d", "policy_hash": "h", "note": "a\nb"}),
        )
        .unwrap();
        let id = BatchId {
            destination: "d".into(),
            instance: 1,
            seq: 1,
        };
        let bytes = encode_batch(&id, "EU", "h", &[item]).unwrap();
        assert!(!bytes.contains(&b'\n'));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["batch_id"], id.to_string());
        assert_eq!(v["items"][0]["note"], "a\nb");
    }
}
