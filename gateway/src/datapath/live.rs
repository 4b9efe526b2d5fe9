//! Benchmark support: frames sent at kernel speed, and counted where they arrive.
//!
//! [`LiveSender`] runs `mecgw_bench_tx` with BPF_PROG_TEST_RUN in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18+): each repetition starts from a page holding the
//! frame, the program's XDP_TX really transmits it on the interface the run names, and
//! `repeat` and `batch_size` say how many and how many per flush. It is the pktgen of XDP, and
//! it costs the sending CPU far less than any socket, so the system under test, not the
//! sender, sets the rate. aya 0.14 does not expose the live-frames flag or `batch_size`, so
//! this module makes the `bpf(2)` call itself.
//!
//! The sink (`mecgw_bench_sink`, attached with [`super::FastPath::attach_bench_sink`]) counts
//! what arrives and drops it; [`super::FastPath::bench_sink_counter`] reads the count.
//!
//! Nothing here is used by `mecgw run`.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya::programs::Xdp;
use mecgw_ebpf::{BENCH_FRAME_MAX, BenchFrame, names};

use super::{DatapathError, FastPath};

/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd` in `include/uapi/linux/bpf.h`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: run as if received, and carry out the returned action.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// The kernel's largest `batch_size` in live-frames mode (`TEST_XDP_MAX_BATCH`).
pub const MAX_BATCH: u32 = 256;

/// The `test` member of `union bpf_attr`, as the kernel lays it out (every field at its
/// natural alignment; the `__aligned_u64` pointers sit on 8-byte offsets). The kernel reads
/// `size_of::<TestRunAttr>()` bytes and treats the rest of the union as zero.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit tail padding, zero (the kernel rejects non-zero bytes it does not know).
    _pad: u32,
}

/// `struct xdp_md`, the XDP context a test run may pass in. Offsets into the frame, not
/// pointers; `ingress_ifindex` picks the interface an XDP_TX leaves by.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
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
            return Err(DatapathError::Unexpected(format!(
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
            .map_err(|_| DatapathError::Unexpected("a benchmark run panicked earlier".into()))?
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
            return Err(DatapathError::Unexpected(format!(
                "batch size {batch_size}: expected 1 to {MAX_BATCH}"
            )));
        }
        let fd = self.prog.fd().map_err(|source| DatapathError::Program {
            action: format!("program {}", names::PROG_BENCH_TX),
            source,
        })?;
        let ctx = XdpMd {
            data_end: self.frame.len() as u32,
            ingress_ifindex: self.ifindex,
            ..XdpMd::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: fd.as_fd().as_raw_fd() as u32,
            data_size_in: self.frame.len() as u32,
            data_in: self.frame.as_ptr() as u64,
            repeat,
            ctx_size_in: size_of::<XdpMd>() as u32,
            ctx_in: &raw const ctx as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a fully initialised `bpf_attr.test` of the size we pass; the kernel
        // only reads `data_size_in` bytes at `data_in` (our frame) and `ctx_size_in` bytes at
        // `ctx_in` (our `ctx`), both alive until the call returns; live-frames mode writes no
        // output buffers (`data_out`/`ctx_out` are null), only `retval` and `duration` in
        // `attr`, which we own mutably for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>(),
            )
        };
        if r != 0 {
            return Err(DatapathError::Io(std::io::Error::last_os_error()));
        }
        Ok(Duration::from_nanos(u64::from(attr.duration)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of `include/uapi/linux/bpf.h`; a mistake here would hand the kernel
    /// garbage for a pointer.
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(size_of::<XdpMd>(), 24);
    }
}
