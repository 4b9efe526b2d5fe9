//! Reading a whole per-CPU counter array in batches of thousands of entries per system call.
//!
//! A scrape of the session and rule counters uses `BPF_MAP_LOOKUP_BATCH` (`bpf_batch`; Linux
//! 5.6+, array maps included). Entry by entry, a scrape at 100,000 sessions cost 205,000
//! system calls (≈ 110–130 ms of CPU). It only reads.

use std::{io, os::fd::BorrowedFd};

use mecgw_ebpf::Counter;

use super::bpf_batch::{self, Command};

/// Entries asked for per system call.
const CHUNK: usize = 8192;

/// The kernel lays per-CPU values out at 8-byte strides: `Counter` must be a multiple.
const _: () = assert!(size_of::<Counter>().is_multiple_of(8));

/// The first `len` entries of the per-CPU array of [`Counter`]s `map` (values of `cpus` CPUs,
/// the possible CPUs), each summed over the CPUs: element `i` is entry `i`.
pub(super) fn sum_all(map: BorrowedFd<'_>, len: u32, cpus: usize) -> io::Result<Vec<Counter>> {
    let mut out = vec![Counter::default(); len as usize];
    // No more asked for per call than wanted in all: a scrape of a few counters stays small.
    let chunk = CHUNK.min(len as usize).max(1);
    let mut keys = vec![0u32; chunk];
    let mut values = vec![Counter::default(); chunk * cpus];
    let mut token = None;
    loop {
        // SAFETY: the map is a per-CPU array of `Counter`s (the caller's): u32 keys and
        // tokens, 16-byte values (a multiple of 8, checked above) for `cpus` CPUs each,
        // which is what `values` holds per key; both are plain integers.
        let step = unsafe { bpf_batch::step(Command::Lookup, map, token, &mut keys, &mut values) }?;
        for (i, &key) in keys[..step.got].iter().enumerate() {
            let sum = values[i * cpus..(i + 1) * cpus]
                .iter()
                .fold(Counter::default(), |acc, c| acc.plus(*c));
            if let Some(slot) = out.get_mut(key as usize) {
                *slot = sum;
            }
        }
        // Past `len`, nothing more is wanted.
        if step.done || step.got == 0 || step.next >= len {
            return Ok(out);
        }
        token = Some(step.next);
    }
}
