//! The minimal XDP program, run in the kernel through BPF_PROG_TEST_RUN.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mecgw::datapath::FastPath;
use mecgw_ebpf::Verdict;

const XDP_PASS: u32 = 2;

/// An Ethernet/IPv4/UDP frame from 198.18.0.1:1000 to 198.18.0.2:2000 with a 4-byte payload.
fn udp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ]);
    f.extend_from_slice(&[0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, b'p', b'i', b'n', b'g']);
    f
}

#[test]
fn pass_program_returns_xdp_pass_and_leaves_the_frame_untouched() {
    let mut fast_path = FastPath::load().expect("load the XDP programs (are we root?)");
    let frame = udp_frame();

    let outcome = fast_path.test_run_pass(&frame).unwrap();

    assert_eq!(outcome.action, XDP_PASS);
    assert_eq!(
        outcome.data_out, frame,
        "the pass program must not change a byte"
    );
}

#[test]
fn pass_program_counts_packets_and_bytes_per_verdict() {
    let mut fast_path = FastPath::load().unwrap();
    let frame = udp_frame();
    for _ in 0..3 {
        fast_path.test_run_pass(&frame).unwrap();
    }

    let counters = fast_path.verdict_counters().unwrap();

    for (verdict, counter) in counters {
        if verdict == Verdict::Pass {
            assert_eq!(counter.packets, 3);
            assert_eq!(counter.bytes, 3 * frame.len() as u64);
        } else {
            assert_eq!(counter.packets, 0, "{verdict:?} counted a packet");
        }
    }
}
