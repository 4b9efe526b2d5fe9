//! Per-flow counters: packets and inner bytes per (session, UE-side 5-tuple) and direction,
//! and the rule of the last uplink decision, in one slot per flow and harvest window.
//!
//! The programs count into the window [`FLOW_GEN`] names (an epoch, read once per packet);
//! its parity picks one of two slot maps. A flow's first packet in a window takes the next
//! free slot of that half (an atomic add on [`FLOW_ALLOC`]), writes its key and first counts
//! there, and records `epoch << 32 | slot` in [`FLOW_INDEX`]; later packets find the slot
//! through the index and add to it atomically, from any CPU. An index entry of an older
//! window is stale and is replaced in place, so nothing ever has to delete index entries:
//! the LRU drops the ones no flow uses any more.
//!
//! Userspace harvests by moving `FLOW_GEN` to the next epoch, waiting for an RCU grace period
//! (after which no program still counts into the old half), then reading the old half's
//! taken slots straight from memory (the slot maps are `BPF_F_MMAPABLE`) and setting its
//! allocator back to zero. Nothing here is ever written by userspace while a program may
//! write it, so no packet is counted twice or lost by the harvest itself. A full half
//! refuses new flows and counts their packets ([`FLOW_STATS`]); an index entry the LRU drops
//! while its flow is live only makes the flow take a second slot, which the harvest merges.
//!
//! The index entry also caches the uplink's classification of the flow ([`cached`]): the
//! matching rule's index, tagged with the tables install it was made under and the packet
//! inputs a rule can match that the key lacks. A swap of the tables changes the install's
//! serial, so every cached classification is stale from the first packet after it, without
//! a flush; a stale one is classified afresh and replaced. The cache lives as long as the
//! entry: the LRU dropping it costs only a classification.
//!
//! All of it is behind [`enabled`], a read-only global fixed at load time: when it is 0 the
//! verifier removes the flow code from the programs, so it costs nothing.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_MMAPABLE},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use mecgw_ebpf::{Counter, FlowGenStats, FlowIndexEntry, FlowKey, FlowSlot, MAX_FLOWS, NONE};

/// 1: count flows. Set by userspace at load time (`EbpfLoader::set_global`); lives in
/// `.rodata`, which the kernel freezes, so the verifier knows the value and prunes the
/// branch it makes dead.
#[unsafe(no_mangle)]
static FLOW_ACCOUNTING: u32 = 0;

/// 1: the uplink keeps each flow's classification in the flow's [`FLOW_INDEX`] entry and
/// classifies only a flow's first packet under each tables install. Set at load time.
#[unsafe(no_mangle)]
static VERDICT_CACHE: u32 = 0;

#[map(name = "FLOW_GEN")]
static FLOW_GEN: Array<u32> = Array::with_max_entries(1, 0);
/// Sized by userspace at load: twice the slots of a half, so that the entries of the
/// window being counted and of the one before it fit.
#[map(name = "FLOW_INDEX")]
static FLOW_INDEX: LruHashMap<FlowKey, FlowIndexEntry> =
    LruHashMap::with_max_entries(2 * MAX_FLOWS, 0);
#[map(name = "FLOW_SLOTS_0")]
static FLOW_SLOTS_0: Array<FlowSlot> = Array::with_max_entries(MAX_FLOWS, BPF_F_MMAPABLE);
#[map(name = "FLOW_SLOTS_1")]
static FLOW_SLOTS_1: Array<FlowSlot> = Array::with_max_entries(MAX_FLOWS, BPF_F_MMAPABLE);
#[map(name = "FLOW_ALLOC")]
static FLOW_ALLOC: Array<u64> = Array::with_max_entries(2, 0);
#[map(name = "FLOW_STATS")]
static FLOW_STATS: PerCpuArray<FlowGenStats> = PerCpuArray::with_max_entries(2, 0);

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

/// Whether the uplink caches each flow's classification in its index entry (set at load
/// time beside [`FLOW_ACCOUNTING`]; only with flow accounting on).
#[inline(always)]
pub fn cache_enabled() -> bool {
    // SAFETY: as in `enabled`.
    unsafe { core::ptr::read_volatile(&VERDICT_CACHE) != 0 }
}

/// The low bits of [`FlowIndexEntry::verdict`]: the index of the rule that matched, or
/// [`NO_RULE`].
const RULE_BITS: u64 = 0x7f_ffff;
/// A cached classification without a matching rule (passthrough, `no_rule`).
pub const NO_RULE: u32 = RULE_BITS as u32;
const _: () = assert!(mecgw_ebpf::MAX_RULES < NO_RULE);

/// What a cached classification is valid for: the tables install `serial` and the packet's
/// QFI and whether it had ports, which rules may match on and the flow key does not hold.
/// (The session's TEID is its own and its UE is the key's, so neither can change under one
/// serial.) Never 0 for a serial that is not 0.
#[inline(always)]
pub fn verdict_tag(serial: u32, qfi: u32, has_ports: u32) -> u64 {
    (u64::from(serial) << 32) | (u64::from(qfi & 0xff) << 24) | (u64::from(has_ports & 1) << 23)
}

/// What to keep in a flow's index entry for the rule at `index` (or [`NO_RULE`]) matched
/// under `tag`; 0 (nothing) with the cache off.
#[inline(always)]
pub fn to_keep(tag: u64, index: u32) -> u64 {
    if cache_enabled() {
        tag | u64::from(index)
    } else {
        0
    }
}

/// A flow's index entry, if it has one (of any window): looked up once per packet, before
/// the uplink classifies it and for counting it after.
#[inline(always)]
pub fn find(key: &FlowKey) -> Option<*mut FlowIndexEntry> {
    FLOW_INDEX.get_ptr_mut(key)
}

/// The rule index (or [`NO_RULE`]) cached in `entry` for `tag`, if that is what it holds.
#[inline(always)]
pub fn cached(entry: Option<*mut FlowIndexEntry>, tag: u64) -> Option<u32> {
    if !cache_enabled() {
        return None;
    }
    let entry = entry?;
    // SAFETY: an entry the kernel found, valid for the program run; one 8-byte volatile read,
    // so the tag and the rule always come from the same store.
    let v = unsafe { core::ptr::read_volatile(&raw const (*entry).verdict) };
    (v & !RULE_BITS == tag).then_some((v & RULE_BITS) as u32)
}

/// Counts one packet against `key` in the window in use.
#[inline(always)]
pub fn count(key: &FlowKey, hit: &FlowHit) {
    count_found(find(key), key, hit, 0);
}

/// [`count`] for a flow whose index entry was looked up already (`index`, from [`find`]),
/// also caching `verdict` (from [`to_keep`]) in it unless it is 0.
#[inline(always)]
pub fn count_found(index: Option<*mut FlowIndexEntry>, key: &FlowKey, hit: &FlowHit, verdict: u64) {
    let Some(gen_ptr) = FLOW_GEN.get_ptr(0) else {
        return;
    };
    // SAFETY: the pointer comes from the map lookup and is valid for the program run; the
    // volatile read takes userspace's single 4-byte store as it is.
    let epoch = unsafe { core::ptr::read_volatile(gen_ptr) };
    // Two call sites, one per map: the verifier wants a map known at each helper call.
    if epoch & 1 == 0 {
        count_in(&FLOW_SLOTS_0, epoch, key, hit, index, verdict);
    } else {
        count_in(&FLOW_SLOTS_1, epoch, key, hit, index, verdict);
    }
}

#[inline(always)]
fn count_in(
    slots: &Array<FlowSlot>,
    epoch: u32,
    key: &FlowKey,
    hit: &FlowHit,
    index: Option<*mut FlowIndexEntry>,
    verdict: u64,
) {
    if let Some(entry) = index {
        // SAFETY: an entry the kernel found, valid for the program run; each word is read
        // and written with one 8-byte volatile access, so each is whole.
        let at = unsafe {
            if verdict != 0 {
                core::ptr::write_volatile(&raw mut (*entry).verdict, verdict);
            }
            core::ptr::read_volatile(&raw const (*entry).at)
        };
        if (at >> 32) as u32 == epoch {
            match slots.get_ptr_mut(at as u32) {
                // SAFETY: a slot of this window, taken and written by the program that
                // published its index entry; counted into with atomic adds only.
                Some(slot) => unsafe { add(slot, hit) },
                None => stat(epoch, |s| s.failed += 1),
            }
            return;
        }
    }
    let Some(slot) = take(slots, epoch, key, hit) else {
        return;
    };
    let at = (u64::from(epoch) << 32) | u64::from(slot);
    match index {
        // A stale entry (an older window): point it at the new slot with one 8-byte store.
        // SAFETY: the entry found above, still valid for this program run.
        Some(entry) => unsafe { core::ptr::write_volatile(&raw mut (*entry).at, at) },
        // A new flow. If another CPU inserted the key meanwhile, this replaces its entry and
        // the flow has two slots in the window: the harvest merges them. If the insert
        // fails, the next packet takes another slot: the same.
        None => {
            let entry = FlowIndexEntry { at, verdict };
            let _ = FLOW_INDEX.insert(key, entry, u64::from(BPF_ANY));
        }
    }
}

/// Takes the next free slot of the half `slots`, writes `key` and the packet's counts there,
/// and returns its index; `None` (counted) when the half is full.
#[inline(always)]
fn take(slots: &Array<FlowSlot>, epoch: u32, key: &FlowKey, hit: &FlowHit) -> Option<u32> {
    let Some(next) = FLOW_ALLOC.get_ptr_mut(epoch & 1) else {
        stat(epoch, |s| s.failed += 1);
        return None;
    };
    // A full half is seen with a plain read first: the packets of flows it refuses (a flood
    // of new flows, when the site is busiest) then never write the line every CPU takes
    // slots from.
    // SAFETY: as below; an 8-byte volatile read of an aligned u64 is whole.
    let seen = unsafe { core::ptr::read_volatile(next) };
    if u32::try_from(seen).map_or(true, |n| slots.get_ptr(n).is_none()) {
        stat(epoch, |s| s.refused += 1);
        return None;
    }
    // SAFETY: an element of an array map, 8-byte aligned (map values are), valid for the
    // program run; every CPU takes slots from it, so only with atomic operations.
    // Userspace writes it only while no program uses this half.
    let n = unsafe { fetch_add(next, 1) };
    // A full half refuses (the lookup fails past max_entries; the counter keeps growing
    // until the harvest resets it, which a u64 cannot outgrow).
    let taken = u32::try_from(n)
        .ok()
        .and_then(|n| slots.get_ptr_mut(n).map(|p| (n, p)));
    let Some((n, slot)) = taken else {
        stat(epoch, |s| s.refused += 1);
        return None;
    };
    let (uplink, downlink, rule) = if hit.uplink {
        (one(hit.bytes), Counter::default(), hit.rule)
    } else {
        (Counter::default(), one(hit.bytes), NONE)
    };
    // SAFETY: slot `n` was handed out once, to this program run, and nothing can find it
    // before the index entry is published after this write.
    unsafe {
        *slot = FlowSlot {
            key: *key,
            epoch,
            uplink,
            downlink,
            rule,
            pad: 0,
        };
    }
    Some(n)
}

/// Adds `v` to `*p` atomically and returns the old value: the BPF atomic add with
/// `BPF_FETCH` (Linux 5.12+; the fast path needs 5.18 for `bpf_xdp_get_buff_len` already).
/// Written out because LLVM emits it only for CPU v3 and the programs are built for the
/// generic instruction set, where it would pick the add that returns nothing.
///
/// # Safety
/// `p` must be valid for reads and writes and 8-byte aligned for the program run.
#[inline(always)]
unsafe fn fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: the caller's pointer; the instruction reads and writes only `*p` and `v`.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
            options(nostack),
        );
    }
    v
}

#[inline(always)]
fn one(bytes: u64) -> Counter {
    Counter { packets: 1, bytes }
}

/// Adds one packet to a slot any CPU may be counting into.
///
/// # Safety
/// `slot` must point into a slot map's value, valid for the program run.
#[inline(always)]
unsafe fn add(slot: *mut FlowSlot, hit: &FlowHit) {
    // SAFETY: the caller's pointer; the counters are 8-byte aligned u64s (map values are
    // 8-byte aligned and `FlowSlot`'s layout is asserted), as the atomic adds need.
    unsafe {
        let c = if hit.uplink {
            core::ptr::write_volatile(&raw mut (*slot).rule, hit.rule);
            &raw mut (*slot).uplink
        } else {
            &raw mut (*slot).downlink
        };
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*c).packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*c).bytes, hit.bytes);
    }
}

#[inline(always)]
fn stat(epoch: u32, f: impl FnOnce(&mut FlowGenStats)) {
    if let Some(s) = FLOW_STATS.get_ptr_mut(epoch & 1) {
        // SAFETY: this CPU's slot from the map lookup; nothing else runs on this CPU meanwhile.
        unsafe { f(&mut *s) };
    }
}
