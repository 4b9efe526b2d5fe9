//! The minimal program: count every frame and hand it to the kernel unchanged.
//!
//! It proves the whole chain (build, load, attach, BPF_PROG_TEST_RUN) and is what the gateway
//! attaches to interfaces that need no classification.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use mecgw_ebpf::Verdict;

use super::{counters::count_verdict, parse::frame_len};

#[xdp(frags)]
pub fn mecgw_pass(ctx: XdpContext) -> u32 {
    let len = frame_len(&ctx) as u64;
    count_verdict(Verdict::Pass, len);
    xdp_action::XDP_PASS
}
