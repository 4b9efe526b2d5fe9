//! The kernel's FIB, asked with `bpf_fib_lookup`: the next hop of a re-tunnelled packet
//! (`pfcp`), and of decapsulated (uplink LOCAL) and encapsulated (downlink) frames when a
//! side's next hop is `fib`.
//!
//! This module owns the per-CPU scratch the lookup's parameters live in (the programs' stacks
//! cannot spare its 64 bytes), the calls into the helper, and the next-hop cache in front of
//! them. It never decides what a verdict is: callers map its [`Answer`] to theirs (a
//! re-tunnel drops a packet without a neighbour, a FIB next hop passes it to the kernel).
//!
//! **The next-hop cache** ([`FIB_CACHE`]) keeps, per CPU, the answers the FIB forwarded with,
//! in a direct-mapped table indexed by a hash of the destination: the route's egress
//! interface, MACs and MTU. An entry serves while the FIB serial ([`FIB_SERIAL`]) is the one
//! it was asked under and for at most [`MAX_AGE_NS`]; userspace moves the serial whenever the
//! kernel reports a change of a neighbour, route, address or link (rtnetlink), so a changed
//! neighbour MAC reaches the very next lookups, and the age bounds what a missed or late
//! report can cost, also when no process watches any more (the pinned programs outlive their
//! daemon). Only forwarded answers are kept: a missing neighbour or route is asked every time.
//! A miss that is forwarded learns the route's MTU with a second lookup, of a packet too
//! long for any route (answered with the MTU), so that a hit refuses an oversize packet as
//! the helper would. Per CPU, an entry is only ever written and read by one program run at a time.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup,
    },
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use mecgw_ebpf::{FIB_CACHE_SLOTS, NextHop, Reason, Verdict};

use super::{
    counters::Outcome,
    parse::{view, write_at},
};

/// One CPU's lookup: the helper's parameters and answer, and what a FIB next hop keeps
/// between its lookup and the frame's rewrite.
#[repr(C)]
pub struct Scratch {
    pub params: bpf_fib_lookup,
    /// The frame's destination and source MAC as received: a frame passed to the kernel for
    /// neighbour resolution keeps them, so that the kernel takes it as addressed to itself.
    pub received: [u8; 12],
    /// What the last lookup answered (an [`Answer`]).
    pub answer: u32,
}

#[map(name = "FIB_SCRATCH")]
static FIB_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The next-hop cache (module docs): [`FIB_CACHE_SLOTS`] entries per CPU.
#[map(name = "FIB_CACHE")]
static FIB_CACHE: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(FIB_CACHE_SLOTS, 0);
/// One `u32` userspace moves on every change the kernel reports; 0: keep nothing.
#[map(name = "FIB_SERIAL")]
static FIB_SERIAL: Array<u32> = Array::with_max_entries(1, 0);

/// 1: answer from the next-hop cache. Set at load time (read-only, so the verifier removes
/// the cache when it is 0).
#[unsafe(no_mangle)]
static FIB_CACHE_ON: u32 = 0;

/// The longest an answer serves, whatever the serial says: 1 s.
pub const MAX_AGE_NS: u64 = 1_000_000_000;
/// A route whose MTU is at least this (the probe's length) never refuses a packet.
const ANY_LENGTH: u16 = u16::MAX;

#[inline(always)]
fn cache_on() -> bool {
    // SAFETY: a plain read of a static; volatile so that the compiler keeps the load (it
    // would otherwise fold the 0 it sees at build time) and the verifier resolves it.
    unsafe { core::ptr::read_volatile(&FIB_CACHE_ON) != 0 }
}

/// What the FIB says about a destination.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Answer {
    /// Routed, with a resolved neighbour: `params.dmac`, `smac`, `ifindex` hold the next hop.
    Forward = 0,
    /// Routed (out of `params.ifindex`), but the neighbour is not resolved.
    NoNeighbour = 1,
    /// Longer than the route's MTU.
    Oversize = 2,
    /// No route, a route that does not forward (blackhole, unreachable, local), or
    /// forwarding is off on the interface asked from.
    NoRoute = 3,
}

/// Where a lookup is for: a packet of IP protocol `proto`, `tot_len` bytes long, to `dst`
/// (IPv4 in word 0, or IPv6; native-order words of the address bytes), as if it arrived on
/// `ifindex`.
pub struct Query<'a> {
    pub v6: bool,
    pub dst: &'a [u32; 4],
    pub proto: u8,
    pub tot_len: u16,
    pub ifindex: u32,
}

/// Asks the FIB for the route of `q`, or the next-hop cache when it holds the answer.
/// `None` only if the per-CPU scratch is missing (never).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, q: &Query<'_>) -> Option<(&'static mut Scratch, Answer)> {
    let s = FIB_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of the scratch map, which no other program run on this CPU
    // uses meanwhile; a plain C struct of integers and unions of integers, so every write
    // below leaves it valid.
    let s = unsafe { &mut *s };
    if !cache_on() {
        let answer = ask(ctx, s, q, q.tot_len);
        s.answer = answer as u32;
        return Some((s, answer));
    }
    // The serial is read before the FIB is asked: an answer kept under it is never older
    // than the change that moves it.
    let serial = FIB_SERIAL
        .get_ptr(0)
        // SAFETY: the map's one element, valid for the program run; userspace replaces it
        // with one 4-byte store.
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) });
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let kept = FIB_CACHE.get_ptr_mut(slot_of(q));
    if let Some(e) = kept {
        // SAFETY: this CPU's entry; only program runs on this CPU touch it, one at a time.
        let e = unsafe { &*e };
        if serial != 0
            && e.serial == serial
            && now.wrapping_sub(e.asked_ns) < MAX_AGE_NS
            && e.dst == *q.dst
            && e.family_proto == family_proto(q)
            && e.ifindex_in == q.ifindex
        {
            let answer = if u32::from(q.tot_len) > e.mtu {
                Answer::Oversize
            } else {
                s.params.ifindex = e.ifindex_out;
                s.params.dmac = e.dmac;
                s.params.smac = e.smac;
                Answer::Forward
            };
            s.answer = answer as u32;
            return Some((s, answer));
        }
    }
    // A miss: the packet's own lookup. Only a forwarded answer is kept, and only then is the
    // route's MTU asked for (a packet too long for any route is answered with it), so a
    // packet to an unresolved neighbour or without a route costs one lookup, as uncached.
    let answer = ask(ctx, s, q, q.tot_len);
    s.answer = answer as u32;
    if answer == Answer::Forward
        && serial != 0
        && let Some(e) = kept
    {
        // The probe rewrites the parameters: keep what the callers read of the answer.
        let (ifindex_out, dmac, smac) = (s.params.ifindex, s.params.dmac, s.params.smac);
        let mtu = match ask(ctx, s, q, ANY_LENGTH) {
            // SAFETY: the helper wrote the MTU into the union's output member.
            Answer::Oversize => u32::from(unsafe { s.params.__bindgen_anon_1.mtu_result }),
            Answer::Forward | Answer::NoNeighbour => u32::MAX,
            // The route went away in between: keep nothing.
            Answer::NoRoute => 0,
        };
        s.params.ifindex = ifindex_out;
        s.params.dmac = dmac;
        s.params.smac = smac;
        if mtu != 0 {
            // SAFETY: as above; written whole, by this program run only.
            unsafe {
                *e = NextHop {
                    dst: *q.dst,
                    family_proto: family_proto(q),
                    ifindex_in: q.ifindex,
                    ifindex_out,
                    mtu,
                    serial,
                    pad: 0,
                    asked_ns: now,
                    dmac,
                    smac,
                    pad2: [0; 4],
                };
            }
        }
    }
    Some((s, answer))
}

/// The family and protocol of `q`, as a cache entry holds them.
#[inline(always)]
fn family_proto(q: &Query<'_>) -> u32 {
    (u32::from(q.v6) << 8) | u32::from(q.proto)
}

/// The cache entry for `q`: a multiplicative hash of the destination and where it is asked
/// from. Colliding destinations only take each other's place.
#[inline(always)]
fn slot_of(q: &Query<'_>) -> u32 {
    let d = q.dst;
    let mixed = d[0] ^ d[1].rotate_left(8) ^ d[2].rotate_left(16) ^ d[3].rotate_left(24);
    let h = (mixed ^ q.ifindex ^ (family_proto(q) << 20)).wrapping_mul(0x9e37_79b1);
    h >> (32 - FIB_CACHE_SLOTS.trailing_zeros())
}

/// One call into the helper for `q` as a packet of `tot_len` bytes, the parameters in `s`.
#[inline(always)]
fn ask(ctx: &XdpContext, s: &mut Scratch, q: &Query<'_>, tot_len: u16) -> Answer {
    let fib = &mut s.params;
    // SAFETY: all-zero bytes are a valid `bpf_fib_lookup` (integers and unions of integers).
    *fib = unsafe { core::mem::zeroed() };
    if q.v6 {
        fib.family = 10; // AF_INET6
        fib.__bindgen_anon_4.ipv6_dst = *q.dst;
    } else {
        fib.family = 2; // AF_INET
        fib.__bindgen_anon_4.ipv4_dst = q.dst[0];
    }
    fib.l4_protocol = q.proto;
    fib.__bindgen_anon_1.tot_len = tot_len;
    fib.ifindex = q.ifindex;
    // SAFETY: the helper reads and writes `fib`, which lives for the call, of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            fib as *mut bpf_fib_lookup,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    // The kernel checks the MTU before the neighbour: an oversized packet is that first.
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        Answer::Forward
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Answer::NoNeighbour
    } else if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        Answer::Oversize
    } else {
        Answer::NoRoute
    }
}

/// The first half of a FIB next hop, before the frame is rewritten: looks up `q` (the packet
/// as it will leave `q.ifindex`), and keeps the frame's MACs as received. Returns the outcome
/// when the frame is decided here (and left as it is): dropped, `oversize` over the route's
/// MTU, `no_route` without a route or with one out of another interface. `None`: go on, and
/// finish with [`write_macs`].
#[inline(always)]
pub fn next_hop(ctx: &XdpContext, q: &Query<'_>) -> Option<Outcome> {
    let Some((s, answer)) = lookup(ctx, q) else {
        return Some(Outcome::new(Verdict::Drop, Reason::Internal));
    };
    match answer {
        Answer::Oversize => return Some(Outcome::new(Verdict::Drop, Reason::Oversize)),
        Answer::NoRoute => return Some(Outcome::new(Verdict::Drop, Reason::NoRoute)),
        Answer::Forward | Answer::NoNeighbour => {}
    }
    if s.params.ifindex != q.ifindex {
        return Some(Outcome::new(Verdict::Drop, Reason::NoRoute));
    }
    let Some(received) = view::<12>(ctx, 0) else {
        return Some(Outcome::new(Verdict::Drop, Reason::Internal));
    };
    s.received = *received;
    None
}

/// The second half of a FIB next hop, once the frame is rewritten: writes the next hop's
/// destination and source MAC as the lookup found them, or, without a resolved neighbour,
/// the frame's MACs as received. `Some(true)`: the neighbour is resolved (redirect);
/// `Some(false)`: it is not (pass to the kernel); `None`: the write failed.
#[inline(always)]
pub fn write_macs(ctx: &XdpContext) -> Option<bool> {
    let s = FIB_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, filled by `next_hop` earlier in this program run.
    let s = unsafe { &*s };
    if s.answer == Answer::NoNeighbour as u32 {
        write_at(ctx, 0, s.received)?;
        return Some(false);
    }
    let mut eth = [0u8; 12];
    eth[..6].copy_from_slice(&s.params.dmac);
    eth[6..].copy_from_slice(&s.params.smac);
    write_at(ctx, 0, eth)?;
    Some(true)
}
