//! Reading a whole per-CPU counter array in batches of thousands of entries per system call.
//!
//! Owns the one raw `bpf(2)` command aya 0.14 does not expose that a scrape of the session
//! and rule counters needs: `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+, array maps included). Entry by
//! entry, a scrape at 100,000 sessions cost 205,000 system calls (≈ 130 ms of CPU). It only
//! reads.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use mecgw_ebpf::Counter;

/// `enum bpf_cmd` in `linux/bpf.h`: a stable kernel ABI number.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per system call.
const CHUNK: usize = 8192;

/// The kernel lays per-CPU values out at 8-byte strides: `Counter` must be a multiple.
const _: () = assert!(size_of::<Counter>().is_multiple_of(8));

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

/// The first `len` entries of the per-CPU array of [`Counter`]s `map` (values of `cpus` CPUs,
/// the possible CPUs), each summed over the CPUs: element `i` is entry `i`.
pub(super) fn sum_all(map: BorrowedFd<'_>, len: u32, cpus: usize) -> io::Result<Vec<Counter>> {
    let mut out = vec![Counter::default(); len as usize];
    // No more asked for per call than wanted in all: a scrape of a few counters stays small.
    let chunk = CHUNK.min(len as usize).max(1);
    let mut keys = vec![0u32; chunk];
    let mut values = vec![Counter::default(); chunk * cpus];
    // For arrays the batch token is an index (a u32, the key's size): where the next call
    // resumes.
    let mut token: u32 = 0;
    let mut started = false;
    let map_fd = u32::try_from(map.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a negative map fd"))?;
    loop {
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if started { &raw const token as u64 } else { 0 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for the size passed; `keys` and `values`
        // have room for `count` u32 keys and `count × cpus` counters at the layout the kernel
        // writes (per-CPU values at 8-byte strides, checked above); the token buffers are
        // u32, the array's key size. Everything lives until the call returns.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        // ENOENT: the array is exhausted; this call's `count` entries are still valid.
        let done = if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            true
        } else {
            false
        };
        let got = (attr.count as usize).min(chunk);
        for (i, &key) in keys[..got].iter().enumerate() {
            let sum = values[i * cpus..(i + 1) * cpus]
                .iter()
                .fold(Counter::default(), |acc, c| acc.plus(*c));
            if let Some(slot) = out.get_mut(key as usize) {
                *slot = sum;
            }
        }
        // Past `len`, nothing more is wanted.
        if done || got == 0 || next >= len {
            return Ok(out);
        }
        token = next;
        started = true;
    }
}
