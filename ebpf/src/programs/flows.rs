//! Per-flow counters: packets and inner bytes per (session, UE-side 5-tuple) and direction,
//! and the rule of the last uplink decision, in a per-CPU LRU hash.
//!
//! Two generations, like the tables: the programs count into the one [`FLOW_GEN`] names,
//! read once per packet. Userspace harvests by flipping `FLOW_GEN`, waiting for an RCU grace
//! period (after which no program still counts into the old generation), then reading and
//! deleting everything in the old one. Nothing here is ever written by userspace while a
//! program may write it, so no packet is counted twice or lost by the harvest itself.
//!
//! All of it is behind [`enabled`], a read-only global fixed at load time: when it is 0 the
//! verifier removes the flow code from the programs, so it costs nothing.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, LruPerCpuHashMap, PerCpuArray},
};
use mecgw_ebpf::{Counter, FlowGenStats, FlowKey, FlowValue, MAX_FLOWS, NONE};

/// 1: count flows. Set by userspace at load time (`EbpfLoader::set_global`); lives in
/// `.rodata`, which the kernel freezes, so the verifier knows the value and prunes the
/// branch it makes dead.
#[unsafe(no_mangle)]
static FLOW_ACCOUNTING: u32 = 0;

#[map(name = "FLOW_GEN")]
static FLOW_GEN: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "FLOWS_0")]
static FLOWS_0: LruPerCpuHashMap<FlowKey, FlowValue> =
    LruPerCpuHashMap::with_max_entries(MAX_FLOWS, 0);
#[map(name = "FLOWS_1")]
static FLOWS_1: LruPerCpuHashMap<FlowKey, FlowValue> =
    LruPerCpuHashMap::with_max_entries(MAX_FLOWS, 0);
#[map(name = "FLOW_STATS")]
static FLOW_STATS: PerCpuArray<FlowGenStats> = PerCpuArray::with_max_entries(2, 0);
/// Where a new flow's first value is built: keeps it off the stack, which the downlink
/// program nearly fills.
#[map(name = "FLOW_SCRATCH")]
static FLOW_SCRATCH: PerCpuArray<FlowValue> = PerCpuArray::with_max_entries(1, 0);

/// Whether flow accounting was switched on at load time.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a plain read of a static; volatile so that the compiler keeps the load (it
    // would otherwise fold the 0 it sees at build time) and the verifier resolves it.
    unsafe { core::ptr::read_volatile(&FLOW_ACCOUNTING) != 0 }
}

/// What one packet adds to its flow.
pub struct FlowHit {
    /// True for uplink (counts `uplink` and sets the rule), false for downlink.
    pub uplink: bool,
    /// Inner IP bytes.
    pub bytes: u64,
    /// Uplink: the rule id that decided, or [`NONE`]. Ignored downlink.
    pub rule: u32,
}

#[inline(always)]
fn add(v: &mut FlowValue, hit: &FlowHit) {
    let c = if hit.uplink {
        v.rule = hit.rule;
        &mut v.uplink
    } else {
        &mut v.downlink
    };
    c.packets += 1;
    c.bytes += hit.bytes;
}

/// Counts one packet against `key` in the flow generation in use.
#[inline(always)]
pub fn count(key: &FlowKey, hit: &FlowHit) {
    let Some(gen_ptr) = FLOW_GEN.get_ptr(0) else {
        return;
    };
    // SAFETY: the pointer comes from the map lookup and is valid for the program run; the
    // volatile read takes userspace's single 4-byte store as it is.
    let generation = unsafe { core::ptr::read_volatile(gen_ptr) } & 1;
    // Two call sites, one per map: the verifier wants a map known at each helper call.
    if generation == 0 {
        count_in(&FLOWS_0, generation, key, hit);
    } else {
        count_in(&FLOWS_1, generation, key, hit);
    }
}

#[inline(always)]
fn count_in(
    map: &LruPerCpuHashMap<FlowKey, FlowValue>,
    generation: u32,
    key: &FlowKey,
    hit: &FlowHit,
) {
    if let Some(v) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of an entry found by the kernel; only this program run on
        // this CPU writes it, and userspace deletes entries only from the generation no
        // program uses any more.
        unsafe { add(&mut *v, hit) };
        return;
    }
    let Some(scratch) = FLOW_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot from the map lookup; only this program run uses it.
    let value = unsafe { &mut *scratch };
    *value = FlowValue {
        uplink: Counter::default(),
        downlink: Counter::default(),
        rule: NONE,
        pad: 0,
    };
    add(value, hit);
    // A new entry: the kernel sets this CPU's value and zeroes the other CPUs'. NOEXIST so
    // that an entry another CPU created meanwhile is not overwritten but added to.
    // By reference: the kernel reads the value where it is, in the scratch map (`*value`
    // would copy it onto the stack).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let created = map.insert(key, &*value, u64::from(BPF_NOEXIST)).is_ok();
    let counted = created
        || match map.get_ptr_mut(key) {
            Some(v) => {
                // SAFETY: as above.
                unsafe { add(&mut *v, hit) };
                true
            }
            None => false,
        };
    if let Some(s) = FLOW_STATS.get_ptr_mut(generation) {
        // SAFETY: this CPU's slot from the map lookup; nothing else runs on this CPU meanwhile.
        unsafe {
            if created {
                (*s).created += 1;
            }
            if !counted {
                (*s).failed += 1;
            }
        }
    }
}
