//! Per-CPU counters. Per-CPU maps need no atomics (which the BPF target lacks for u64 adds)
//! and never bounce cache lines between cores.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use mecgw_ebpf::{
    CarriedKey, Counter, Decision, MAX_CARRIED, MAX_PDR_COUNTERS, MAX_PFCP_SESSIONS, MAX_RULES,
    MAX_SESSIONS, NONE, Reason, Verdict,
};

#[map(name = "VERDICTS")]
static VERDICTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);
#[map(name = "REASONS")]
static REASONS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);
#[map(name = "RULE_COUNTERS")]
static RULE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULES, 0);
#[map(name = "SESSION_COUNTERS")]
static SESSION_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries((MAX_SESSIONS + MAX_PFCP_SESSIONS) * 2, 0);
/// Per PFCP PDR: packets and inner IP bytes (what usage reports measure). Sized at load.
#[map(name = "PDR_COUNTERS")]
static PDR_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_PDR_COUNTERS, 0);
/// What earlier instances counted (a restart carries their counters over): written by
/// userspace only, read by the next instance; no program touches it. Entries are allocated
/// as they are written.
#[map(name = "CARRIED")]
static CARRIED: HashMap<CarriedKey, Counter> =
    HashMap::with_max_entries(MAX_CARRIED, super::maps::NO_PREALLOC);
#[map(name = "LAST_DECISION")]
static LAST_DECISION: PerCpuArray<Decision> = PerCpuArray::with_max_entries(1, 0);

/// 1: record each frame's whole decision in [`LAST_DECISION`] (for `FastPath::judge`: tests,
/// `mecgw replay`). Set by userspace at load time in `.rodata`, which the kernel freezes, so
/// with 0 (the daemon) the verifier removes the store from every path.
#[unsafe(no_mangle)]
static RECORD_DECISIONS: u32 = 0;

#[inline(always)]
fn decisions_recorded() -> bool {
    // SAFETY: a plain read of a static; volatile so that the compiler keeps the load (it
    // would otherwise fold the 0 it sees at build time) and the verifier resolves it.
    unsafe { core::ptr::read_volatile(&RECORD_DECISIONS) != 0 }
}

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

/// The PFCP PDR that decided a frame: its id, counter slot and the inner IP bytes it counts.
/// Kept out of [`Outcome`] so that the tables path carries nothing it never uses (its
/// verification is near the kernel's limit).
pub struct PdrHit {
    pub id: u32,
    pub slot: u32,
    pub bytes: u64,
}

impl PdrHit {
    /// No PDR decided.
    pub const NONE: PdrHit = PdrHit {
        id: NONE,
        slot: NONE,
        bytes: 0,
    };
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
    record_pdr(outcome, &PdrHit::NONE, len, dir)
}

/// Counts `bytes` of a packet a PFCP PDR matched against the PDR's counter slot `slot`.
#[inline(always)]
pub fn count_pdr(slot: u32, bytes: u64) {
    add(&PDR_COUNTERS, slot, bytes);
}

/// [`record`] for a frame a PFCP PDR decided: also counts its inner bytes against the PDR.
#[inline(always)]
pub fn record_pdr(outcome: &Outcome, pdr: &PdrHit, len: u64, dir: u32) -> u32 {
    count_verdict(outcome.verdict, len);
    add(&REASONS, outcome.reason as u32, len);
    if outcome.rule_slot != NONE {
        add(&RULE_COUNTERS, outcome.rule_slot, len);
    }
    if outcome.session_slot != NONE {
        add(&SESSION_COUNTERS, outcome.session_slot * 2 + dir, len);
    }
    if pdr.slot != NONE {
        add(&PDR_COUNTERS, pdr.slot, pdr.bytes);
    }
    if decisions_recorded()
        && let Some(d) = LAST_DECISION.get_ptr_mut(0)
    {
        // SAFETY: this CPU's slot from the map lookup; nothing else runs on this CPU meanwhile.
        unsafe {
            *d = Decision {
                valid: 1,
                verdict: outcome.verdict as u32,
                reason: outcome.reason as u32,
                rule: outcome.rule_id,
                session: outcome.session_id,
                pdr: pdr.id,
            };
        }
    }
    outcome.verdict.xdp_action()
}
