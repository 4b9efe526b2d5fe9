//! Reading and emptying a flow map in batches of thousands of entries per system call.
//!
//! Adopting an older build's per-CPU flow maps (`FLOWS_0`, `FLOWS_1`) uses
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (`bpf_batch`; Linux 5.6+, hash maps of every kind, LRU
//! and per-CPU included); key by key it would cost three system calls per flow. It never writes a map that a program may still count into:
//! the caller drains only maps whose programs are gone.

use std::{io, os::fd::BorrowedFd};

use mecgw_ebpf::{FlowKey, FlowValue};

use super::bpf_batch::{self, Command};

/// Entries asked for per system call: 4,096 × (44-byte key + 40 bytes per CPU) of buffers.
const CHUNK: usize = 4096;

/// The kernel lays per-CPU values out at 8-byte strides: `FlowValue` must be a multiple.
const _: () = assert!(size_of::<FlowValue>().is_multiple_of(8));

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
    let mut token = None;
    let mut total = 0u64;
    loop {
        // SAFETY: the map is a per-CPU flow hash (the caller's): 44-byte `FlowKey` keys, u32
        // bucket tokens, `FlowValue` values (a multiple of 8 bytes, checked above) for
        // `cpus` CPUs each, which is what `values` holds per key; both are plain integers.
        let step = unsafe {
            bpf_batch::step(Command::LookupAndDelete, map, token, &mut keys, &mut values)
        }?;
        for (i, key) in keys[..step.got].iter().enumerate() {
            each(key, &values[i * cpus..(i + 1) * cpus]);
        }
        total += step.got as u64;
        if step.done {
            return Ok(total);
        }
        token = Some(step.next);
    }
}
