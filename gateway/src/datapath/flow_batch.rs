//! Reading and emptying a flow map in batches of thousands of entries per system call.
//!
//! Owns the one raw `bpf(2)` command aya 0.14 does not expose that adopting an older build's
//! per-CPU flow maps (`FLOWS_0`, `FLOWS_1`) needs: `BPF_MAP_LOOKUP_AND_DELETE_BATCH`
//! (Linux 5.6+, hash maps of every kind, LRU and per-CPU included); key by key it would cost
//! three system calls per flow. It never writes a map that a program may still count into:
//! the caller drains only maps whose programs are gone.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use mecgw_ebpf::{FlowKey, FlowValue};

/// `enum bpf_cmd` in `linux/bpf.h`: a stable kernel ABI number.
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// Entries asked for per system call: 4,096 × (44-byte key + 40 bytes per CPU) of buffers.
const CHUNK: usize = 4096;

/// The kernel lays per-CPU values out at 8-byte strides: `FlowValue` must be a multiple.
const _: () = assert!(size_of::<FlowValue>().is_multiple_of(8));

/// `union bpf_attr`'s `batch` member (`linux/bpf.h`), the only fields the command reads.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads and deletes every entry of the per-CPU flow hash `map` (values of `cpus` CPUs, the
/// possible CPUs), handing each to `each` with its per-CPU values. Returns how many there
/// were.
///
/// On an error, the entries of the calls that succeeded have been handed over (and are gone
/// from the map); the others are still in it.
pub(super) fn drain(
    map: BorrowedFd<'_>,
    cpus: usize,
    mut each: impl FnMut(&FlowKey, &[FlowValue]),
) -> io::Result<u64> {
    let mut keys = vec![FlowKey::default(); CHUNK];
    let mut values = vec![FlowValue::default(); CHUNK * cpus];
    // For hash maps the batch token is a bucket index (a u32): where the next call resumes.
    let mut token: u32 = 0;
    let mut started = false;
    let mut total = 0u64;
    let map_fd = u32::try_from(map.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a negative map fd"))?;
    loop {
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if started { &raw const token as u64 } else { 0 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for the size passed; `keys` and `values`
        // have room for `count` keys and `count × cpus` values at the layout the kernel
        // writes (44-byte keys, per-CPU values at 8-byte strides, checked above); the token
        // buffers are u32, the size the kernel reads and writes for hash maps. Everything
        // lives until the call returns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        // ENOENT: the map is exhausted; this call's `count` entries are still valid.
        let done = if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            true
        } else {
            false
        };
        let got = (attr.count as usize).min(CHUNK);
        for (i, key) in keys[..got].iter().enumerate() {
            each(key, &values[i * cpus..(i + 1) * cpus]);
        }
        total += got as u64;
        if done {
            return Ok(total);
        }
        token = next;
        started = true;
    }
}
