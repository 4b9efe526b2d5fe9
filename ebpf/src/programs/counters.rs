//! Per-CPU counters. Per-CPU maps need no atomics (which the BPF target lacks for u64 adds)
//! and never bounce cache lines between cores.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use mecgw_ebpf::{Counter, Decision, MAX_RULES, MAX_SESSIONS, NONE, Reason, Verdict};

#[map(name = "VERDICTS")]
static VERDICTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);
#[map(name = "REASONS")]
static REASONS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
#[map(name = "RULE_COUNTERS")]
static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULES, 0);
#[map(name = "SESSION_COUNTERS")]
static SESSION_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SESSIONS * 2, 0);
#[map(name = "LAST_DECISION")]
static LAST_DECISION: PerCpuArray<Decision> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the kernel's map lookup and points at this CPU's
        // slot, which no other program invocation touches concurrently.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Counts one frame of `len` bytes against `verdict`.
#[inline(always)]
pub fn count_verdict(verdict: Verdict, len: u64) {
    add(&VERDICTS, verdict as u32, len);
}

/// Everything a program decided about one frame, for the counters.
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// Rule id and counter slot, or [`NONE`].
    pub rule_id: u32,
    pub rule_slot: u32,
    /// Session id and counter slot, or [`NONE`].
    pub session_id: u32,
    pub session_slot: u32,
}

impl Outcome {
    #[inline(always)]
    pub const fn new(verdict: Verdict, reason: Reason) -> Self {
        Outcome {
            verdict,
            reason,
            rule_id: NONE,
            rule_slot: NONE,
            session_id: NONE,
            session_slot: NONE,
        }
    }
}

/// Counts `outcome` for a frame of `len` bytes (as received) in direction `dir`, records it
/// as this CPU's last decision, and returns the XDP action.
#[inline(always)]
pub fn record(outcome: &Outcome, len: u64, dir: u32) -> u32 {
    count_verdict(outcome.verdict, len);
    add(&REASONS, outcome.reason as u32, len);
    if outcome.rule_slot != NONE {
        add(&RULE_COUNTERS, outcome.rule_slot, len);
    }
    if outcome.session_slot != NONE {
        add(&SESSION_COUNTERS, outcome.session_slot * 2 + dir, len);
    }
    if let Some(d) = LAST_DECISION.get_ptr_mut(0) {
        // SAFETY: this CPU's slot from the map lookup; nothing else runs on this CPU meanwhile.
        unsafe {
            *d = Decision {
                valid: 1,
                verdict: outcome.verdict as u32,
                reason: outcome.reason as u32,
                rule: outcome.rule_id,
                session: outcome.session_id,
            };
        }
    }
    outcome.verdict.xdp_action()
}
