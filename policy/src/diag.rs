//! Diagnostics: what `mecgw policy check` reports.
//!
//! This module owns the stable error codes of the policy language and the shape of one
//! diagnostic (position, code, message, what to change). Codes are part of the public contract:
//! a code is never reused for a different meaning; new checks get new codes.

use std::fmt;

/// A position in a policy file. Both line and column count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1 (counted in characters).
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Stable error codes of the policy checker. `docs/policy.md` lists every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Code {
    /// P001: the file is not valid YAML.
    Syntax,
    /// P002: a key the policy language does not know.
    UnknownKey,
    /// P003: a required key is missing.
    MissingKey,
    /// P004: a value of the wrong shape (mapping, list, scalar).
    WrongType,
    /// P005: a value that cannot be read (number, duration, name).
    InvalidValue,
    /// P006: ε must be > 0.
    EpsilonNotPositive,
    /// P007: δ must be in [0, 1).
    DeltaOutOfRange,
    /// P008: the cohort floor k must be at least 2.
    KTooSmall,
    /// P009: a sum, mean, histogram or quantile needs clamping bounds or bins.
    MissingBounds,
    /// P010: pseudonymise needs a declared key.
    PseudonymiseWithoutKey,
    /// P011: a release that cannot fit the budget.
    BudgetExceeded,
    /// P012: a group-by names a field the record kind does not declare.
    UnknownGroupByField,
    /// P013: a field reference (transform, privacy unit, time, metric) that is not declared.
    UnknownField,
    /// P014: a transform that does not apply to the field's type.
    TransformTypeMismatch,
    /// P015: a reference to an undeclared kind, release or key.
    UnknownReference,
    /// P016: the same key twice in one mapping.
    DuplicateKey,
    /// P017: a group-by on a field the policy drops or redacts.
    GroupByDroppedField,
    /// P018: contribution bounds must be at least 1.
    InvalidContribution,
    /// P019: the budget period must be a whole number of windows.
    WindowPeriodMismatch,
    /// P020: the discrete Gaussian needs δ > 0.
    GaussianNeedsDelta,
    /// P021: bins must increase strictly; quantiles must lie in (0, 1).
    InvalidBins,
    /// P022: the name `kind` is reserved.
    ReservedName,
    /// P023: the file exceeds a size, depth or count limit.
    LimitExceeded,
    /// P024: unsupported `version`.
    UnsupportedVersion,
    /// P025: a metric over a field that is not numeric.
    MetricFieldNotNumeric,
    /// P026: a test case that cannot be read.
    InvalidTestCase,
    /// P027: a release whose noise parameters are outside what the exact samplers support.
    NoiseOutOfRange,
}

impl Code {
    /// Every code, in order; used by docs and tests.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::UnknownKey,
        Code::MissingKey,
        Code::WrongType,
        Code::InvalidValue,
        Code::EpsilonNotPositive,
        Code::DeltaOutOfRange,
        Code::KTooSmall,
        Code::MissingBounds,
        Code::PseudonymiseWithoutKey,
        Code::BudgetExceeded,
        Code::UnknownGroupByField,
        Code::UnknownField,
        Code::TransformTypeMismatch,
        Code::UnknownReference,
        Code::DuplicateKey,
        Code::GroupByDroppedField,
        Code::InvalidContribution,
        Code::WindowPeriodMismatch,
        Code::GaussianNeedsDelta,
        Code::InvalidBins,
        Code::ReservedName,
        Code::LimitExceeded,
        Code::UnsupportedVersion,
        Code::MetricFieldNotNumeric,
        Code::InvalidTestCase,
        Code::NoiseOutOfRange,
    ];

    /// The stable code, e.g. `P001`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "P001",
            Code::UnknownKey => "P002",
            Code::MissingKey => "P003",
            Code::WrongType => "P004",
            Code::InvalidValue => "P005",
            Code::EpsilonNotPositive => "P006",
            Code::DeltaOutOfRange => "P007",
            Code::KTooSmall => "P008",
            Code::MissingBounds => "P009",
            Code::PseudonymiseWithoutKey => "P010",
            Code::BudgetExceeded => "P011",
            Code::UnknownGroupByField => "P012",
            Code::UnknownField => "P013",
            Code::TransformTypeMismatch => "P014",
            Code::UnknownReference => "P015",
            Code::DuplicateKey => "P016",
            Code::GroupByDroppedField => "P017",
            Code::InvalidContribution => "P018",
            Code::WindowPeriodMismatch => "P019",
            Code::GaussianNeedsDelta => "P020",
            Code::InvalidBins => "P021",
            Code::ReservedName => "P022",
            Code::LimitExceeded => "P023",
            Code::UnsupportedVersion => "P024",
            Code::MetricFieldNotNumeric => "P025",
            Code::InvalidTestCase => "P026",
            Code::NoiseOutOfRange => "P027",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is.
    pub pos: Pos,
    /// Stable code.
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// What to change.
    pub help: String,
}

impl Diagnostic {
    /// A diagnostic at `pos`.
    pub fn new(pos: Pos, code: Code, message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            pos,
            code,
            message: message.into(),
            help: help.into(),
        }
    }

    /// Formats the diagnostic as `FILE:LINE:COL: error[CODE]: message\n  help: ...`.
    pub fn render(&self, file: &str) -> String {
        format!(
            "{file}:{}: error[{}]: {}\n  help: {}",
            self.pos, self.code, self.message, self.help
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: error[{}]: {} (help: {})",
            self.pos, self.code, self.message, self.help
        )
    }
}

/// Every diagnostic found while compiling a policy, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy has {} error(s); first: {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
pub struct Diagnostics(pub Vec<Diagnostic>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_dense() {
        let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        for (i, c) in codes.iter().enumerate() {
            assert_eq!(*c, format!("P{:03}", i + 1));
        }
    }

    #[test]
    fn render_has_file_line_col_code_and_help() {
        let d = Diagnostic::new(
            Pos { line: 3, col: 5 },
            Code::KTooSmall,
            "k is 1",
            "set k to 2 or more",
        );
        assert_eq!(
            d.render("p.yaml"),
            "p.yaml:3:5: error[P008]: k is 1\n  help: set k to 2 or more"
        );
    }
}
