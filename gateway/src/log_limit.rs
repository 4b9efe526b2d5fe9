//! Limits on log lines that someone outside can cause (a datagram per line): each source
//! writes at most a few lines a minute, counts what it held back in
//! `mecgw_log_lines_suppressed_total`, and says how many it held back when its next minute
//! starts. Without this, 100,000 GTP-U Error Indications wrote 8.6 MB of log in a second.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tracing::warn;

/// Log lines held back by every [`LogBudget`] since start.
pub static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

const WINDOW: Duration = Duration::from_secs(60);

/// At most `per_minute` lines a minute from one source.
#[derive(Debug)]
pub struct LogBudget {
    what: &'static str,
    per_minute: u32,
    window: Option<Instant>,
    used: u32,
    held_back: u64,
}

impl LogBudget {
    /// A budget for the lines of `what` (named in the line that reports what was held back).
    pub const fn new(what: &'static str, per_minute: u32) -> LogBudget {
        LogBudget {
            what,
            per_minute,
            window: None,
            used: 0,
            held_back: 0,
        }
    }

    /// Whether one more line may be written now.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        match self.window {
            Some(w) if now.duration_since(w) < WINDOW => {}
            _ => {
                if self.held_back > 0 {
                    warn!(
                        source = self.what,
                        held_back = self.held_back,
                        "more log lines in the last minute than written (mecgw_log_lines_suppressed_total)"
                    );
                }
                self.window = Some(now);
                self.used = 0;
                self.held_back = 0;
            }
        }
        if self.used < self.per_minute {
            self.used += 1;
            true
        } else {
            self.held_back += 1;
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_writes_its_budget_then_counts_the_rest_until_the_next_minute() {
        let mut b = LogBudget::new("test", 3);
        let t0 = Instant::now();
        let before = SUPPRESSED.load(Ordering::Relaxed);
        let allowed = (0..1000)
            .filter(|i| b.allow_at(t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(allowed, 3);
        assert_eq!(b.held_back, 997);
        // Other tests may hold lines back at the same time: at least ours are counted.
        assert!(SUPPRESSED.load(Ordering::Relaxed) - before >= 997);
        assert!(b.allow_at(t0 + WINDOW));
        assert_eq!(b.held_back, 0);
    }
}
