//! What can be wrong with a tables description, and where: the language of the compiler's
//! answer (`datapath::compile`) and of the overlay's checks, which both speak it, so that
//! neither imports the other.

use std::fmt;

/// Most problems listed in one error; the rest are counted. A file with 20,000 problems is
/// better answered by its first hundred than by a wall of text.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// Where in the tables a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The tables as a whole (or the interface sections).
    Global,
    /// `sessions[i]`.
    Session(usize),
    /// `rules[i]`.
    Rule(usize),
}

/// One thing wrong with the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

/// Everything wrong with a set of tables (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    /// One problem a line, each prefixed with where it is (`sessions[3]: …`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, p) in self.0.iter().take(MAX_REPORTED_PROBLEMS).enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            match p.place {
                Place::Global => write!(f, "{}", p.message)?,
                Place::Session(i) => write!(f, "sessions[{i}]: {}", p.message)?,
                Place::Rule(i) => write!(f, "rules[{i}]: {}", p.message)?,
            }
        }
        if self.0.len() > MAX_REPORTED_PROBLEMS {
            write!(
                f,
                "\n… and {} more problem(s), not listed",
                self.0.len() - MAX_REPORTED_PROBLEMS
            )?;
        }
        Ok(())
    }
}
