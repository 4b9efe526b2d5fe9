//! Per-CPU counters. Per-CPU maps need no atomics (which the BPF target lacks for u64 adds)
//! and never bounce cache lines between cores.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use mecgw_ebpf::{Counter, Verdict};

#[map(name = "VERDICTS")]
static VERDICTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);

/// Counts one frame of `len` bytes against `verdict`.
#[inline(always)]
pub fn count_verdict(verdict: Verdict, len: u64) {
    if let Some(c) = VERDICTS.get_ptr_mut(verdict as u32) {
        // SAFETY: the pointer comes from the kernel's map lookup and points at this CPU's
        // slot, which no other program invocation touches concurrently.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
