//! The privacy budget ledger: ε and δ per privacy unit per period, persisted across restarts.
//!
//! This module owns accounting. Every release of a window is charged before its output is
//! written; a charge that would exceed the period's budget is refused, and the refusal is
//! recorded too. The ledger is an append-only file of JSON lines, each fsynced before the
//! charge is granted, so a crash can lose at most an entry whose release was never written.
//! A torn last line (a crash mid-write) is cut off on open; a damaged line elsewhere stops the
//! ledger from opening (fail closed: we would not know what was spent).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::units::{Delta, Epsilon};

/// File name of the ledger inside the state directory.
pub const LEDGER_FILE: &str = "budget-ledger.jsonl";

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Reading or writing the ledger failed.
    #[error("budget ledger {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line in the middle of the ledger is damaged.
    #[error(
        "budget ledger {path}: line {line} is damaged; refusing to guess what was spent (restore the file from backup)"
    )]
    Corrupt { path: PathBuf, line: usize },
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Index of the budget period (Unix seconds / period length).
    pub period: i64,
    /// Period length in seconds when the entry was written (informational: replay re-derives
    /// the period from `window` with the current period length).
    pub period_len: u64,
    /// Release name.
    pub release: String,
    /// Window start, Unix seconds.
    pub window: i64,
    /// ε in units of 1e-9.
    pub epsilon: u64,
    /// δ in units of 1e-18.
    pub delta: u64,
    /// `spent` or `refused`.
    pub outcome: String,
    /// Hash of the policy that asked.
    pub policy: String,
}

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Granted and recorded; the release may be written.
    Granted,
    /// Refused and recorded; nothing may be released. Carries what was already spent.
    Refused { spent: (Epsilon, Delta) },
}

/// The ledger: spent ε and δ per period, optionally persisted.
pub struct Ledger {
    budget: (Epsilon, Delta),
    period_len: u64,
    spent: BTreeMap<i64, (u64, u64)>,
    file: Option<(PathBuf, File)>,
    refusals: u64,
}

impl Ledger {
    /// A ledger that lives in memory only (tests, and `apply` without `--state`).
    pub fn in_memory(epsilon: Epsilon, delta: Delta, period_len: u64) -> Self {
        Self {
            budget: (epsilon, delta),
            period_len,
            spent: BTreeMap::new(),
            file: None,
            refusals: 0,
        }
    }

    /// Opens (or creates) the ledger in `dir` and replays it.
    pub fn open(
        dir: &Path,
        epsilon: Epsilon,
        delta: Delta,
        period_len: u64,
    ) -> Result<Self, LedgerError> {
        let path = dir.join(LEDGER_FILE);
        let io = |error| LedgerError::Io {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut ledger = Self::in_memory(epsilon, delta, period_len);
        let mut good_len: u64 = 0;
        let mut lines = Vec::new();
        {
            let mut reader = BufReader::new(&file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                lines.push((
                    buf.ends_with(b"\n"),
                    serde_json::from_slice::<Entry>(&buf).ok(),
                    n,
                ));
            }
        }
        let count = lines.len();
        for (i, (complete, entry, n)) in lines.into_iter().enumerate() {
            match entry {
                Some(e) if complete => {
                    good_len += n as u64;
                    if e.outcome == "spent" {
                        // Re-derive the period from the window, so that a policy whose period
                        // changed still counts what earlier runs spent on the same windows.
                        let period = ledger.period_of(e.window);
                        let s = ledger.spent.entry(period).or_default();
                        s.0 = s.0.saturating_add(e.epsilon);
                        s.1 = s.1.saturating_add(e.delta);
                    } else if e.outcome == "refused" {
                        ledger.refusals += 1;
                    }
                }
                // Only the last line may be torn (the write that a crash interrupted).
                _ if i + 1 == count => {
                    file.set_len(good_len).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                _ => return Err(LedgerError::Corrupt { path, line: i + 1 }),
            }
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        // Make the file's existence durable too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        ledger.file = Some((path, file));
        Ok(ledger)
    }

    /// The budget of each period (ε, δ).
    pub fn budget(&self) -> (Epsilon, Delta) {
        self.budget
    }

    /// The period a window starting at `window_start` is charged to.
    pub fn period_of(&self, window_start: i64) -> i64 {
        window_start.div_euclid(i64::try_from(self.period_len).unwrap_or(i64::MAX).max(1))
    }

    /// What has been spent in `period`.
    pub fn spent(&self, period: i64) -> (Epsilon, Delta) {
        let (e, d) = self.spent.get(&period).copied().unwrap_or_default();
        (Epsilon(e), Delta(d))
    }

    /// Refusals recorded so far (including those replayed from the file).
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// Charges one release of one window. Granted only if the period's spend stays within the
    /// budget; either way the outcome is appended and fsynced before returning.
    pub fn charge(
        &mut self,
        release: &str,
        window_start: i64,
        epsilon: Epsilon,
        delta: Delta,
        policy: &str,
    ) -> Result<Charge, LedgerError> {
        let period = self.period_of(window_start);
        let (se, sd) = self.spent.get(&period).copied().unwrap_or_default();
        let fits = se
            .checked_add(epsilon.0)
            .is_some_and(|v| v <= self.budget.0.0)
            && sd
                .checked_add(delta.0)
                .is_some_and(|v| v <= self.budget.1.0);
        let entry = Entry {
            period,
            period_len: self.period_len,
            release: release.to_owned(),
            window: window_start,
            epsilon: epsilon.0,
            delta: delta.0,
            outcome: if fits { "spent" } else { "refused" }.to_owned(),
            policy: policy.to_owned(),
        };
        if let Some((path, file)) = &mut self.file {
            let io = |error| LedgerError::Io {
                path: path.clone(),
                error,
            };
            let mut line = serde_json::to_vec(&entry).map_err(|e| io(std::io::Error::other(e)))?;
            line.push(b'\n');
            file.write_all(&line).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        if fits {
            self.spent.insert(period, (se + epsilon.0, sd + delta.0));
            Ok(Charge::Granted)
        } else {
            self.refusals += 1;
            Ok(Charge::Refused {
                spent: (Epsilon(se), Delta(sd)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmpdir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("mecgw-ledger-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn refuses_when_spent_and_records_the_refusal() {
        let dir = tmpdir("refuse");
        let mut l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400).unwrap();
        assert_eq!(
            l.charge("r", 0, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Granted
        );
        assert_eq!(
            l.charge("r", 3600, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Refused {
                spent: (Epsilon(600), Delta(5))
            }
        );
        // Another period has its own budget.
        assert_eq!(
            l.charge("r", 86_400, Epsilon(600), Delta(5), "h").unwrap(),
            Charge::Granted
        );
        drop(l);
        let text = std::fs::read_to_string(dir.join(LEDGER_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains("\"outcome\":\"refused\"")
        );
        let l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400).unwrap();
        assert_eq!(l.spent(0), (Epsilon(600), Delta(5)));
        assert_eq!(l.refusals(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_period_still_counts_earlier_spending() {
        let dir = tmpdir("period");
        let mut l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 3600).unwrap();
        l.charge("r", 0, Epsilon(600), Delta(0), "h").unwrap();
        l.charge("r", 3600, Epsilon(600), Delta(0), "h").unwrap();
        drop(l);
        // A policy with a daily period sees both hourly charges in its first day.
        let mut l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400).unwrap();
        assert_eq!(l.spent(0).0, Epsilon(1_200));
        assert!(matches!(
            l.charge("r", 7200, Epsilon(1), Delta(0), "h").unwrap(),
            Charge::Refused { .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_damaged_middle_line_refuses_to_open() {
        let dir = tmpdir("torn");
        let mut l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400).unwrap();
        l.charge("r", 0, Epsilon(100), Delta(0), "h").unwrap();
        drop(l);
        let path = dir.join(LEDGER_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"period\":0,\"rel").unwrap();
        drop(f);
        let l = Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400).unwrap();
        assert_eq!(l.spent(0).0, Epsilon(100));
        drop(l);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{good}")).unwrap();
        assert!(matches!(
            Ledger::open(&dir, Epsilon(1_000), Delta(10), 86_400),
            Err(LedgerError::Corrupt { line: 1, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever sequence of charges and restarts, the spend in any period never exceeds the
        /// budget, and what was granted equals what the reopened ledger reports.
        #[test]
        fn ledger_never_exceeds_budget_across_restarts(
            ops in proptest::collection::vec((0i64..3, 1u64..400, 0u64..4, any::<bool>()), 1..40),
        ) {
            let dir = tmpdir("prop");
            let budget = (Epsilon(1_000), Delta(6));
            let mut l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
            let mut granted = BTreeMap::<i64, (u64, u64)>::new();
            for (period, eps, delta, restart) in ops {
                if restart {
                    drop(l);
                    l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
                }
                if l.charge("r", period * 100 + 5, Epsilon(eps), Delta(delta), "h").unwrap() == Charge::Granted {
                    let g = granted.entry(period).or_default();
                    g.0 += eps;
                    g.1 += delta;
                }
                for p in 0..3 {
                    let (e, d) = l.spent(p);
                    prop_assert!(e <= budget.0 && d <= budget.1);
                }
            }
            drop(l);
            let l = Ledger::open(&dir, budget.0, budget.1, 100).unwrap();
            for (p, (e, d)) in granted {
                prop_assert_eq!(l.spent(p), (Epsilon(e), Delta(d)));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
