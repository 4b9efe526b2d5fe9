//! Benchmark-only programs; they are never attached.
//!
//! `mecgw_empty` returns XDP_PASS and does nothing else: the baseline every figure is a ratio
//! to. `mecgw_bench_restore` makes `repeat > 1` measure a program that rewrites the frame:
//! BPF_PROG_TEST_RUN reruns on the buffer the previous repetition left, so before every
//! repetition after the first it moves the frame start back by the program's known shift and
//! copies the original bytes back, then tail-calls the program under test. The benchmark
//! subtracts the same wrapper tail-calling `mecgw_empty`.
//!
//! The end-to-end benchmark's traffic generator and sink (`cargo xtask bench e2e`):
//! `mecgw_bench_tx` is run with BPF_PROG_TEST_RUN in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`), where XDP_TX really transmits the frame on the interface the
//! run names: the pktgen of XDP. The kernel recycles the frame's pages without copying the
//! original bytes back, and the frames it sends are rewritten downstream (the gateway
//! decapsulates them in place), so it restores the frame from `BENCH_FRAME` first, like the
//! restore wrapper. `mecgw_bench_sink` counts every frame that reaches its interface in
//! `BENCH_SINK` and drops it.
//!
//! `mecgw_bench_floor` is the uplink's LOCAL work with every table lookup and counter taken
//! out: the G-PDU parser, then the uplink's own decapsulation (TTL check, strip the outer
//! headers, write the next hop's Ethernet header, decrement the TTL, redirect) under a fixed,
//! all-zero config.
//! No program that steers this frame can do much less; the fast-path benchmark measures it
//! behind the restore wrapper as the floor its lookups and counters add to. It counts each
//! frame it redirects in `BENCH_SINK`, the proof that every repetition took that path.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use mecgw_ebpf::{BENCH_FRAME_MAX, BenchFrame, Config, Counter, Reason, Verdict};

use super::{
    parse::{self, frame_len, linear_len, write_at},
    uplink,
};

#[map(name = "BENCH_FRAME")]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_TARGET")]
static BENCH_TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map(name = "BENCH_SINK")]
static BENCH_SINK: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);

#[xdp(frags)]
pub fn mecgw_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp(frags)]
pub fn mecgw_bench_restore(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_none() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: a tail call with the program's own context; on failure control returns here.
    unsafe { BENCH_TARGET.tail_call(&ctx, 0) };
    xdp_action::XDP_DROP
}

#[xdp(frags)]
pub fn mecgw_bench_tx(ctx: XdpContext) -> u32 {
    match restore(&ctx) {
        Some(()) => xdp_action::XDP_TX,
        // A frame we cannot restore is not sent: the sink's count shows the shortfall.
        None => xdp_action::XDP_ABORTED,
    }
}

#[xdp(frags)]
pub fn mecgw_bench_sink(ctx: XdpContext) -> u32 {
    count_sink(frame_len(&ctx) as u64);
    xdp_action::XDP_DROP
}

/// The floor's config: no FIB next hop, no tags, interface 0 (a test run never sends).
// SAFETY: `Config` is plain integers and byte arrays, for which all-zero is a valid value.
const FLOOR: Config = unsafe { core::mem::zeroed() };

#[xdp(frags)]
pub fn mecgw_bench_floor(ctx: XdpContext) -> u32 {
    let whole = frame_len(&ctx);
    let Ok(pdu) = parse::gpdu(&ctx, whole) else {
        return xdp_action::XDP_ABORTED;
    };
    let out = uplink::decapsulate(&ctx, &FLOOR, &pdu, Reason::RuleLocal);
    if out.verdict != Verdict::Redirect {
        return xdp_action::XDP_ABORTED;
    }
    count_sink(whole as u64);
    xdp_action::XDP_REDIRECT
}

#[inline(always)]
fn count_sink(len: u64) {
    if let Some(c) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot from the kernel's map lookup; no other program invocation
        // touches it concurrently.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[inline(always)]
fn restore(ctx: &XdpContext) -> Option<()> {
    let frame = BENCH_FRAME.get(0)?;
    // The target changes the frame's length by its shift, so a length that differs from the
    // original means a previous repetition ran (no per-CPU flag: a test run may migrate).
    if linear_len(ctx) != frame.len as usize && frame.head_shift != 0 {
        // SAFETY: the program's own context; the shift undoes the one the target made.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -frame.head_shift) } != 0 {
            return None;
        }
    }
    // Benchmark frames are single-buffer: all of one is in the linear part.
    if linear_len(ctx) != frame.len as usize {
        return None;
    }
    for i in 0..BENCH_FRAME_MAX / 8 {
        let at = i * 8;
        if at >= frame.len as usize {
            break;
        }
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&frame.bytes[at..at + 8]);
        write_at(ctx, at, chunk)?;
    }
    Some(())
}
