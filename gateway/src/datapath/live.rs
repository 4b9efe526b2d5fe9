//! Benchmark support: frames sent at kernel speed, and counted where they arrive.
//!
//! [`LiveSender`] runs `mecgw_bench_tx` with BPF_PROG_TEST_RUN in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+): each repetition starts from a page holding the
//! frame, the program's XDP_TX really transmits it on the interface the run names, and
//! `repeat` and `batch_size` say how many and how many per flush. It is the pktgen of XDP, and
//! it costs the sending CPU far less than any socket, so the system under test, not the
//! sender, sets the rate (aya's `TestRunAttrs::xdp_live_frames`).
//!
//! The sink (`mecgw_bench_sink`, attached with [`super::FastPath::attach_bench_sink`]) counts
//! what arrives and drops it; [`super::FastPath::bench_sink_counter`] reads the count.
//!
//! Nothing here is used by `mecgw run`.

use std::time::Duration;

use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use mecgw_ebpf::{BENCH_FRAME_MAX, BenchFrame, names};

use super::{DatapathError, FastPath};

/// The kernel's largest `batch_size` in live-frames mode (`TEST_XDP_MAX_BATCH`).
pub const MAX_BATCH: u32 = 256;

/// `struct xdp_md`, the XDP context a test run may pass in (six `u32`s in native byte order:
/// offsets into the frame, not pointers). `ingress_ifindex` picks the interface an XDP_TX
/// leaves by.
fn xdp_md(data_end: u32, ingress_ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    // data = 0, data_end, data_meta = 0, ingress_ifindex, rx_queue_index = 0, egress = 0.
    ctx[4..8].copy_from_slice(&data_end.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx
}

/// Sends one prebuilt frame out of one interface, as many times as asked, at kernel speed.
///
/// Borrowed from a [`FastPath`] whose `BENCH_FRAME` now holds the frame. Use it from a thread
/// in the network namespace of the interface: the kernel resolves the interface index there.
pub struct LiveSender<'a> {
    prog: &'a Xdp,
    frame: Vec<u8>,
    ifindex: u32,
}

impl FastPath {
    /// Prepares to send `frame` out of the interface with index `ifindex` (in the calling
    /// thread's network namespace at the time of [`LiveSender::send`]). `frame` must be a
    /// multiple of 8 bytes, at most [`BENCH_FRAME_MAX`].
    pub fn live_sender(&self, frame: &[u8], ifindex: u32) -> Result<LiveSender<'_>, DatapathError> {
        if !frame.len().is_multiple_of(8) || frame.len() > BENCH_FRAME_MAX || frame.is_empty() {
            return Err(DatapathError::BadArgument(format!(
                "a generated frame must be a non-empty multiple of 8 bytes, at most \
                 {BENCH_FRAME_MAX}; got {}",
                frame.len()
            )));
        }
        let mut bytes = [0u8; BENCH_FRAME_MAX];
        bytes[..frame.len()].copy_from_slice(frame);
        let value = BenchFrame {
            len: frame.len() as u32,
            head_shift: 0,
            bytes,
        };
        self.bench
            .lock()
            .map_err(|_| DatapathError::Poisoned("a benchmark run"))?
            .frame
            .set(0, value, 0)
            .map_err(|source| DatapathError::Map {
                name: names::MAP_BENCH_FRAME,
                source,
            })?;
        Ok(LiveSender {
            prog: self.xdp_program(names::PROG_BENCH_TX)?,
            frame: frame.to_vec(),
            ifindex,
        })
    }
}

impl LiveSender<'_> {
    /// Transmits the frame `repeat` times, flushing every `batch_size` (1 to [`MAX_BATCH`])
    /// frames, and returns the kernel's average time per frame. Frames the interface cannot
    /// take are lost there (the sink's count shows it). A signal ends the run early
    /// (`EINTR`), as for any test run.
    pub fn send(&self, repeat: u32, batch_size: u32) -> Result<Duration, DatapathError> {
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(DatapathError::BadArgument(format!(
                "batch size {batch_size}: expected 1 to {MAX_BATCH}"
            )));
        }
        let ctx = xdp_md(self.frame.len() as u32, self.ifindex);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&self.frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(batch_size);
        let result = self
            .prog
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                action: format!("live-frames run of {}", names::PROG_BENCH_TX),
                source,
            })?;
        Ok(result.duration)
    }
}
