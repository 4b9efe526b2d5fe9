//! The kernel's FIB, asked with `bpf_fib_lookup`: the next hop of a re-tunnelled packet
//! (`pfcp`), and of decapsulated (uplink LOCAL) and encapsulated (downlink) frames when a
//! side's next hop is `fib`.
//!
//! This module owns the per-CPU scratch the lookup's parameters live in (the programs' stacks
//! cannot spare its 64 bytes) and the one call into the helper. It never decides what a
//! verdict is: callers map its [`Answer`] to theirs (a re-tunnel drops a packet without a
//! neighbour, a FIB next hop passes it to the kernel).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use mecgw_ebpf::{Reason, Verdict};

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

/// Asks the FIB for the route of `q`. `None` only if the per-CPU scratch is missing (never).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, q: &Query<'_>) -> Option<(&'static mut Scratch, Answer)> {
    let s = FIB_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of the scratch map, which no other program run on this CPU
    // uses meanwhile; a plain C struct of integers and unions of integers, so every write
    // below leaves it valid.
    let s = unsafe { &mut *s };
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
    fib.__bindgen_anon_1.tot_len = q.tot_len;
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
    let answer = if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        Answer::Forward
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Answer::NoNeighbour
    } else if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        Answer::Oversize
    } else {
        Answer::NoRoute
    };
    s.answer = answer as u32;
    Some((s, answer))
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
