//! What `mecgw ctl` can fail with, and the exit code each failure gives a script.
//!
//! Owns the mapping from a local problem, a transport error or a gRPC status to one of the
//! documented exit codes ([`EXIT_CODES`]). The codes are a contract with scripts: add new
//! ones at the end, never renumber.

use std::{error::Error as StdError, fmt::Write as _};

/// The exit codes, as `mecgw ctl --help` and the man pages show them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage or local error: bad flags, an unreadable or invalid certificate, key or CA file
     (the file is named), output that cannot be written
  2  cannot connect: nothing listens, TLS handshake failed (e.g. the server does not trust
     the client certificate, or the server's certificate is not signed by --ca), timeout
  3  the server refused the caller: PERMISSION_DENIED or UNAUTHENTICATED (e.g. the client
     certificate names no configured app, or an app without the operator role)
  4  the server answered with any other gRPC error (NOT_FOUND, INVALID_ARGUMENT, ...)";

/// Exit code: usage or local error.
pub const EXIT_LOCAL: u8 = 1;
/// Exit code: cannot connect (including TLS failures and timeouts).
pub const EXIT_CONNECT: u8 = 2;
/// Exit code: the server refused the caller.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: any other gRPC error from the server.
pub const EXIT_SERVER: u8 = 4;

/// Why a `mecgw ctl` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// A problem on this side: options, files, output. Exit code 1.
    #[error("{0}")]
    Local(String),
    /// No usable connection to the server (refused, unreachable, TLS, timeout). Exit code 2.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The server refused the caller (PERMISSION_DENIED, UNAUTHENTICATED). Exit code 3.
    #[error("{addr} refused {rpc}: {code}: {message}")]
    Refused {
        /// The address dialled.
        addr: String,
        /// The RPC that was refused.
        rpc: &'static str,
        /// The gRPC code's name.
        code: String,
        /// The server's message.
        message: String,
    },
    /// Any other gRPC error the server answered with. Exit code 4.
    #[error("{rpc} failed: {code}: {message}")]
    Server {
        /// The RPC that failed.
        rpc: &'static str,
        /// The gRPC code's name.
        code: String,
        /// The server's message.
        message: String,
    },
}

impl CtlError {
    /// The documented exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Local(_) => EXIT_LOCAL,
            CtlError::Connect { .. } => EXIT_CONNECT,
            CtlError::Refused { .. } => EXIT_REFUSED,
            CtlError::Server { .. } => EXIT_SERVER,
        }
    }

    /// A failure to connect to `addr`, with `error`'s causes.
    pub fn connect(addr: &str, error: &(dyn StdError + 'static)) -> CtlError {
        CtlError::Connect {
            addr: addr.to_string(),
            reason: causes(error),
        }
    }

    /// Classifies the status `rpc` to `addr` ended with.
    ///
    /// A status that carries a source error was made on this side from a transport failure
    /// (connection refused or reset, TLS alert, timeout): the server never answered, so it
    /// is a connection failure whatever its code. A status without one is the server's own
    /// answer.
    pub fn from_status(addr: &str, rpc: &'static str, status: &tonic::Status) -> CtlError {
        if let Some(source) = std::error::Error::source(status) {
            let detail = causes(source);
            let mut reason = if detail.starts_with(status.message()) {
                detail
            } else {
                format!("{}: {detail}", status.message())
            };
            // TLS 1.3 finishes the client's side of the handshake before the server checks
            // the client certificate: a refused certificate shows up as the connection
            // closing under the first call, with nothing in it that says why.
            let timed_out = matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || reason.contains("timed out");
            if !timed_out {
                reason.push_str(
                    " (if the server closed the connection: is --cert signed by the CA the \
                     server trusts for clients?)",
                );
            }
            return CtlError::Connect {
                addr: addr.to_string(),
                reason,
            };
        }
        let code = format!("{:?}", status.code());
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => CtlError::Refused {
                addr: addr.to_string(),
                rpc,
                code: screaming(&code),
                message,
            },
            _ => CtlError::Server {
                rpc,
                code: screaming(&code),
                message,
            },
        }
    }
}

/// `error` and its sources, joined with ": ", repeated messages left out.
fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            let _ = write!(out, "{text}");
        }
        next = e.source();
    }
    out
}

/// `PermissionDenied` → `PERMISSION_DENIED`: gRPC code names as the protocol spells them.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_answers_are_classified_by_code() {
        let denied = tonic::Status::permission_denied("app \"video\" has role \"app\"");
        let e = CtlError::from_status("https://x:1", "GetStatus", &denied);
        assert_eq!(e.exit_code(), EXIT_REFUSED);
        assert_eq!(
            e.to_string(),
            "https://x:1 refused GetStatus: PERMISSION_DENIED: app \"video\" has role \"app\""
        );
        let unauth = tonic::Status::unauthenticated("no");
        assert_eq!(
            CtlError::from_status("a", "X", &unauth).exit_code(),
            EXIT_REFUSED
        );
        let missing = tonic::Status::not_found("traffic rule 7 does not exist");
        let e = CtlError::from_status("a", "GetTrafficRule", &missing);
        assert_eq!(e.exit_code(), EXIT_SERVER);
        assert_eq!(
            e.to_string(),
            "GetTrafficRule failed: NOT_FOUND: traffic rule 7 does not exist"
        );
        // The server's own UNAVAILABLE (e.g. a backend not ready) is an answer, not a failure
        // to connect.
        let busy = tonic::Status::unavailable("not ready");
        assert_eq!(
            CtlError::from_status("a", "X", &busy).exit_code(),
            EXIT_SERVER
        );
    }

    #[test]
    fn statuses_made_from_transport_errors_are_connection_failures() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let status = tonic::Status::from_error(Box::new(io));
        let e = CtlError::from_status("https://x:1", "GetStatus", &status);
        assert_eq!(e.exit_code(), EXIT_CONNECT);
        assert!(e.to_string().contains("reset by peer"), "{e}");
    }

    #[test]
    fn code_names_are_spelled_as_in_grpc() {
        assert_eq!(screaming("NotFound"), "NOT_FOUND");
        assert_eq!(screaming("Internal"), "INTERNAL");
        assert_eq!(screaming("FailedPrecondition"), "FAILED_PRECONDITION");
    }
}
