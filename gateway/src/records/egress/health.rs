//! Egress health: whether egress can accept and move batches now, for the daemon's readiness
//! probe, and the throttle that keeps a lasting failure from flooding the log.
//!
//! Owns [`Health`] (what [`super::Egress::health`] answers) and [`Throttle`]. It never decides
//! anything about batches: the spool, the audit log and the forwarders report their state
//! here and carry on retrying.

use std::fmt;
use std::time::{Duration, Instant};

/// How often a lasting failure is logged again (the first occurrence always is).
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// What kind of storage failure a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The file system (or quota) is full.
    NoSpace,
    /// Another I/O failure.
    Io,
}

impl ProblemKind {
    /// `no_space` or `io`, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoSpace => "no_space",
            Self::Io => "io",
        }
    }
}

/// One thing that keeps egress from working now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `spool` or `audit`.
    pub component: &'static str,
    /// What kind of failure.
    pub kind: ProblemKind,
    /// The failure, with the file it concerns.
    pub message: String,
}

/// Whether egress can accept and forward batches now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// What is wrong; empty when egress works.
    pub problems: Vec<Problem>,
}

impl Health {
    /// True when nothing keeps egress from accepting and forwarding batches: the daemon's
    /// `/readyz` answers 200 only then.
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }

    /// True when the spool's or the audit log's file system is full.
    pub fn no_space(&self) -> bool {
        self.problems.iter().any(|p| p.kind == ProblemKind::NoSpace)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return f.write_str("egress ok");
        }
        for (n, p) in self.problems.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "egress {}: {}", p.component, p.message)?;
        }
        Ok(())
    }
}

/// Logs a lasting failure once, then at most every [`REPEAT_LOG_EVERY`], counting what it held
/// back; [`Throttle::recovered`] says whether the failure had been reported, so the recovery is
/// logged once too.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// One more occurrence: `Some(n)` if it should be logged now, `n` being how many were held
    /// back since the last one logged.
    pub fn occurrence(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < REPEAT_LOG_EVERY => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// The failure is over: true if it had been reported (log the recovery then).
    pub fn recovered(&mut self) -> bool {
        self.held_back = 0;
        self.last.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_lasting_failure_is_logged_once_a_minute_with_what_was_held_back() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.occurrence(t0), Some(0));
        // A retry every 200 ms for a minute: nothing logged.
        for i in 1..300 {
            assert_eq!(t.occurrence(t0 + Duration::from_millis(200 * i)), None);
        }
        assert_eq!(t.occurrence(t0 + REPEAT_LOG_EVERY), Some(299));
        assert!(t.recovered());
        assert!(!t.recovered());
        assert_eq!(t.occurrence(t0 + REPEAT_LOG_EVERY), Some(0));
    }

    #[test]
    fn health_names_each_problem() {
        let h = Health {
            problems: vec![Problem {
                component: "spool",
                kind: ProblemKind::NoSpace,
                message: "no space left on device".into(),
            }],
        };
        assert!(!h.is_ready() && h.no_space());
        assert_eq!(h.to_string(), "egress spool: no space left on device");
        assert!(Health::default().is_ready());
    }
}
