//! `mecgw_empty`: returns XDP_PASS and does nothing else. The benchmark's baseline, measured
//! in the same run as the real programs, so figures are reported as ratios to it.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn mecgw_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
