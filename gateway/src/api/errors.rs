//! The one place where what went wrong becomes a gRPC status.
//!
//! Handlers and the backend return typed errors ([`BackendError`], [`ReplaceError`]); this
//! module picks the code and, where a caller can act on it, attaches google.rpc error
//! details: `BadRequest` field violations for INVALID_ARGUMENT (one per problem, named by the
//! request field), `RetryInfo` for RESOURCE_EXHAUSTED and UNAVAILABLE answers that say when
//! to try again.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

use crate::datapath::Problems;

/// Why the backend could not do what a call needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The part that would answer is not running (no policy engine, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// A bounded resource is full (the egress spool, the disk); the work is kept and the
    /// caller should retry after `retry_after`.
    #[error("{message}")]
    Exhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Something failed inside mecgw (a kernel map, an I/O error): not the caller's fault.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a change of the tables was not installed. The tables in force stay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplaceError {
    /// The tables changed since the change was derived (e.g. a SIGHUP reload): derive again.
    #[error("the tables changed while this change was being made")]
    Conflict,
    /// The new tables are inconsistent (each problem names the entry).
    #[error("{0}")]
    Invalid(Problems),
    /// Storing or installing failed.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<BackendError> for Status {
    fn from(e: BackendError) -> Status {
        match e {
            BackendError::Unavailable(m) => Status::unavailable(m),
            BackendError::Exhausted {
                message,
                retry_after,
            } => with_retry(Code::ResourceExhausted, message, retry_after),
            BackendError::Internal(source) => Status::internal(source.to_string()),
        }
    }
}

/// A status with a RetryInfo detail, if `after` is known.
pub fn with_retry(code: Code, message: impl Into<String>, after: Option<Duration>) -> Status {
    match after {
        Some(delay) => {
            Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
        }
        None => Status::new(code, message),
    }
}

/// INVALID_ARGUMENT for problems written as `field: description` (the convention of every
/// request check here): the message joins them, and each becomes a BadRequest field
/// violation. A problem without a `field: ` prefix is filed under `request`.
pub fn invalid_argument<S: AsRef<str>>(problems: &[S]) -> Status {
    let violations: Vec<FieldViolation> = problems
        .iter()
        .map(|p| {
            let p = p.as_ref();
            match p.split_once(": ") {
                Some((field, why)) if is_field_path(field) => FieldViolation::new(field, why),
                _ => FieldViolation::new("request", p),
            }
        })
        .collect();
    let message = problems
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("; ");
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

/// `session.ue_ipv4`, `rule.dst[2]`, `records_json[3].kind`: a request field path.
fn is_field_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | ',' | ' '))
        && !s.contains("  ")
}

/// The status for a table change that was not installed; `field` is the request field that
/// carried the change (problems are filed under it).
pub fn replace_status(e: ReplaceError, field: &str) -> Status {
    match e {
        ReplaceError::Conflict => Status::aborted(
            "the tables kept changing under this call (reloads); read them again and retry",
        ),
        ReplaceError::Invalid(problems) => {
            let listed: Vec<String> = problems
                .0
                .iter()
                .map(|p| format!("{field}: {}", p.message))
                .collect();
            invalid_argument(&listed)
        }
        ReplaceError::Internal(source) => {
            Status::internal(format!("the change was not installed: {source}"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_problem_becomes_a_field_violation() {
        let s = invalid_argument(&[
            "session.qfi: 70 is out of range: a QFI is 0-63",
            "session.gnb: \"x\" is not an IP address",
            "give at least one of ue_ipv4 or ue_ipv6",
        ]);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("session.qfi: 70 is out of range"));
        let details = s.get_error_details();
        let bad = details.bad_request().unwrap();
        let fields: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["session.qfi", "session.gnb", "request"]);
        assert_eq!(
            bad.field_violations[0].description,
            "70 is out of range: a QFI is 0-63"
        );
    }

    #[test]
    fn exhaustion_says_when_to_retry() {
        let s: Status = BackendError::Exhausted {
            message: "the egress spool is full".into(),
            retry_after: Some(Duration::from_millis(200)),
        }
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let retry = s.get_error_details().retry_info().cloned().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(200)));
        let s: Status = BackendError::Unavailable("the policy engine is not running".into()).into();
        assert_eq!(s.code(), Code::Unavailable);
    }
}
