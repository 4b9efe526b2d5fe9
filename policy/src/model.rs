//! The typed policy document: what a policy file means once it has been checked.
//!
//! This module owns the vocabulary of the policy language (record kinds, field types,
//! transforms, releases, metrics, budget, destinations, test cases). Values here have already
//! passed every check in `compile`; the rest of the engine trusts them. The JSON Schema in
//! `docs/policy.schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;

use crate::diag::Pos;
use crate::units::{Delta, Duration, Epsilon};

/// Default cap on window state per release: (privacy unit, group) pairs held at once.
pub const DEFAULT_MAX_STATE: u64 = 10_000_000;

/// A privacy policy: which regulated records may leave the site, and in which form.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mecgw privacy policy")]
pub struct Policy {
    /// Version of the policy language. Must be 1.
    pub version: u32,
    /// Human-readable name of the policy.
    #[serde(default)]
    pub name: Option<String>,
    /// What the policy is for, who approved it.
    #[serde(default)]
    pub description: Option<String>,
    /// The privacy budget shared by all releases.
    pub budget: Budget,
    /// Pseudonymisation keys, by name.
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
    /// Record kinds the gateway may see, by name.
    pub kinds: BTreeMap<String, RecordKind>,
    /// Windowed aggregate releases, by name.
    #[serde(default)]
    pub releases: BTreeMap<String, Release>,
    /// Where data may go. Anything not named here stays on site.
    #[serde(default)]
    pub destinations: BTreeMap<String, Destination>,
    /// Test cases run by `mecgw policy test`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// ε and δ per privacy unit per period, shared by every release.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Accounting period, e.g. `1d`.
    #[schemars(with = "DurationDoc")]
    pub period: Duration,
    /// Total ε per privacy unit per period (> 0).
    #[schemars(with = "f64")]
    pub epsilon: Epsilon,
    /// Total δ per privacy unit per period, in [0, 1). Default 0.
    #[serde(default)]
    #[schemars(with = "f64")]
    pub delta: Delta,
    #[schemars(skip)]
    pub pos: Pos,
}

/// A pseudonymisation key.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A key file (epoch keys are derived from it with HKDF-SHA-256) or a directory holding one
    /// file per epoch named `<epoch>.key`. Relative paths are relative to the policy file.
    pub path: String,
    /// Key epoch length, e.g. `1d`: pseudonyms are stable within an epoch only.
    #[schemars(with = "DurationDoc")]
    pub rotation: Duration,
    #[schemars(skip)]
    pub pos: Pos,
}

/// A kind of record and what happens to each of its fields.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordKind {
    /// What the records are.
    #[serde(default)]
    pub description: Option<String>,
    /// The field that identifies the person (e.g. `imsi` or `ue_ip`).
    pub privacy_unit: String,
    /// The timestamp field that places a record in windows and key epochs.
    pub time: String,
    /// Window that transformed records are tagged with (default: the budget period).
    #[serde(default)]
    #[schemars(with = "Option<DurationDoc>")]
    pub window: Option<Duration>,
    /// Declared fields and their types.
    pub fields: BTreeMap<String, FieldType>,
    /// What happens to each field. A field not listed here is dropped.
    #[serde(default)]
    pub transforms: BTreeMap<String, Transform>,
    #[schemars(skip)]
    pub pos: Pos,
    #[schemars(skip)]
    pub transform_pos: BTreeMap<String, Pos>,
}

/// The type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON integer (64-bit).
    Integer,
    /// A JSON number.
    Decimal,
    /// true or false.
    Boolean,
    /// An IPv4 address as a string.
    Ipv4,
    /// An IPv6 address as a string.
    Ipv6,
    /// An IPv4 or IPv6 address as a string.
    Ip,
    /// RFC 3339 string or integer Unix seconds.
    Timestamp,
    /// `{"lat": .., "lon": ..}` in degrees.
    Geo,
}

impl FieldType {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Ipv4 => "ipv4",
            FieldType::Ipv6 => "ipv6",
            FieldType::Ip => "ip",
            FieldType::Timestamp => "timestamp",
            FieldType::Geo => "geo",
        }
    }

    /// All types, for error messages.
    pub const ALL: &'static [FieldType] = &[
        FieldType::String,
        FieldType::Integer,
        FieldType::Decimal,
        FieldType::Boolean,
        FieldType::Ipv4,
        FieldType::Ipv6,
        FieldType::Ip,
        FieldType::Timestamp,
        FieldType::Geo,
    ];

    /// True for integer and decimal.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Integer | FieldType::Decimal)
    }

    /// True for the address types.
    pub fn is_address(self) -> bool {
        matches!(self, FieldType::Ipv4 | FieldType::Ipv6 | FieldType::Ip)
    }
}

/// What happens to a field on its way out.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Copy the value unchanged.
    Keep,
    /// Replace the value with the string `[REDACTED]`.
    Redact,
    /// Replace the value with `e<epoch>:<HMAC-SHA-256 of it under the epoch key, hex>`.
    Pseudonymise {
        /// Name of a key declared under `keys`.
        key: String,
    },
    /// Keep only the network prefix of an address (`a.b.c.0/24`).
    Truncate {
        /// Prefix length kept for IPv4 (and IPv4-mapped IPv6). Default 24.
        #[serde(default)]
        ipv4: Option<u8>,
        /// Prefix length kept for IPv6. Default 48.
        #[serde(default)]
        ipv6: Option<u8>,
    },
    /// Snap a geo point to the south-west corner of a grid cell.
    Coarsen {
        /// Grid cell size in degrees (at most 6 decimal places), e.g. 0.01.
        #[schemars(with = "f64")]
        grid: MicroDegrees,
    },
    /// Floor a timestamp or number to a bucket.
    Bucket {
        /// A duration (`15m`) for timestamps, a positive number for numbers.
        #[schemars(with = "BucketWidthDoc")]
        width: BucketWidth,
    },
}

impl Transform {
    /// Short name, as written in the policy.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Keep => "keep",
            Transform::Redact => "redact",
            Transform::Pseudonymise { .. } => "pseudonymise",
            Transform::Truncate { .. } => "truncate",
            Transform::Coarsen { .. } => "coarsen",
            Transform::Bucket { .. } => "bucket",
        }
    }
}

/// Degrees × 10⁶.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroDegrees(pub u32);

/// Width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BucketWidth {
    /// For timestamps.
    Duration(Duration),
    /// For numbers: `units` × 10^-`places`.
    Number { units: i64, places: u32 },
}

/// How a duration is written (`30s`, `15m`, `1h`, `1d`, `1w`).
#[derive(JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code)]
struct DurationDoc(#[schemars(regex(pattern = r"^[0-9]+[smhdw]$"))] String);

/// A bucket width: a duration for timestamps, a number for numbers.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum BucketWidthDoc {
    Duration(DurationDoc),
    Number(f64),
}

/// A windowed aggregate over one record kind.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The record kind aggregated.
    pub kind: String,
    /// Tumbling window length, e.g. `1h`. The budget period must be a multiple of it.
    #[schemars(with = "DurationDoc")]
    pub window: Duration,
    /// Fields (after their transforms) that form the group key.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How much one privacy unit may add per window.
    pub contribution: Contribution,
    /// Cohort floor: no group with fewer distinct privacy units is released (≥ 2).
    pub k: u32,
    /// ε spent per window (> 0).
    #[schemars(with = "f64")]
    pub epsilon: Epsilon,
    /// δ spent per window, in [0, 1). Needed (> 0) for partition selection.
    #[serde(default)]
    #[schemars(with = "f64")]
    pub delta: Delta,
    /// Noise distribution on integer metrics.
    #[serde(default)]
    pub noise: NoiseKind,
    /// What is computed per group.
    pub metrics: Vec<Metric>,
    /// Cap on (privacy unit, group) pairs held for one window. Default 10,000,000.
    #[serde(default)]
    pub max_state: Option<u64>,
    #[schemars(skip)]
    pub pos: Pos,
    #[schemars(skip)]
    pub epsilon_pos: Pos,
}

/// Contribution bounds per privacy unit per window.
#[derive(Debug, Clone, Copy, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    /// Most groups one privacy unit adds to (L0 bound, ≥ 1).
    pub max_groups: u32,
    /// Most rows one privacy unit adds to one group (L∞ bound, ≥ 1).
    pub max_rows: u32,
}

/// Noise distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// Discrete Laplace (pure ε-DP per metric).
    #[default]
    Laplace,
    /// Discrete Gaussian (zero-concentrated DP, converted to (ε, δ)).
    Gaussian,
}

/// A metric computed per group.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    /// Number of rows.
    Count,
    /// Sum of a numeric field, each value clamped to `bounds`.
    Sum {
        /// Numeric field.
        field: String,
        /// [lower, upper] clamping bounds (required).
        #[schemars(with = "[f64; 2]")]
        bounds: Bounds,
    },
    /// Mean of a numeric field, each value clamped to `bounds`.
    Mean {
        /// Numeric field.
        field: String,
        /// [lower, upper] clamping bounds (required).
        #[schemars(with = "[f64; 2]")]
        bounds: Bounds,
    },
    /// Counts per bin of a numeric field.
    Histogram {
        /// Numeric field.
        field: String,
        /// Strictly increasing bin edges; values below the first or above the last fall in
        /// the first or last bin.
        bins: Vec<f64>,
    },
    /// Quantiles read from a noisy histogram over the declared bins.
    Quantiles {
        /// Numeric field.
        field: String,
        /// Strictly increasing bin edges.
        bins: Vec<f64>,
        /// Quantiles, each in (0, 1).
        q: Vec<f64>,
    },
}

impl Metric {
    /// Short name, as written in the policy.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Count => "count",
            Metric::Sum { .. } => "sum",
            Metric::Mean { .. } => "mean",
            Metric::Histogram { .. } => "histogram",
            Metric::Quantiles { .. } => "quantiles",
        }
    }

    /// The field it reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Metric::Count => None,
            Metric::Sum { field, .. }
            | Metric::Mean { field, .. }
            | Metric::Histogram { field, .. }
            | Metric::Quantiles { field, .. } => Some(field),
        }
    }

    /// How many noisy quantities of the release's ε it consumes (a mean is a sum and a count).
    pub fn shares(&self) -> u32 {
        match self {
            Metric::Mean { .. } => 2,
            _ => 1,
        }
    }
}

/// Clamping bounds in fixed point: `lo` and `hi` are in units of 10^-`places`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Lower bound, scaled.
    pub lo: i64,
    /// Upper bound, scaled.
    pub hi: i64,
    /// Decimal places of the fixed-point representation.
    pub places: u32,
}

impl Bounds {
    /// 10^places.
    pub fn scale(&self) -> i64 {
        10i64.pow(self.places)
    }

    /// The largest magnitude one clamped value can have (scaled).
    pub fn magnitude(&self) -> u64 {
        self.lo.unsigned_abs().max(self.hi.unsigned_abs())
    }
}

/// A destination outside the site.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Jurisdiction or region, e.g. `EU-DE`.
    pub region: String,
    /// Releases it may receive.
    #[serde(default)]
    pub releases: Vec<String>,
    /// Record kinds whose transformed records it may receive.
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// A test case for `mecgw policy test`.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows.
    pub name: String,
    /// Test key material per key name, hex (≥ 64 digits). Used instead of the key files.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Seed for the noise of releases (tests only; production noise comes from the OS).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Largest absolute difference accepted between an expected and an actual number.
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// Input records, as `apply` reads them.
    pub input: Vec<serde_json::Value>,
    /// Expected output objects, in order; each expected key must match (others are ignored).
    pub expect: Vec<serde_json::Value>,
    #[schemars(skip)]
    pub pos: Pos,
}
