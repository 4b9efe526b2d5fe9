//! A flow slot map ([`mecgw_ebpf::FlowSlot`] array, `BPF_F_MMAPABLE`) read straight from the
//! kernel's memory through a read-only `mmap`.
//!
//! Owns the one `mmap` of the datapath. A harvest reads a million slots in tens of
//! milliseconds this way, with no system call per flow and nothing copied through the
//! `bpf(2)` interface; the kernel's array is the memory mapped, so nothing is allocated for
//! it here. It only ever reads a half no program counts into (the caller's invariant), so
//! what it reads is settled.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::{MapData, MapType};
use mecgw_ebpf::FlowSlot;

/// `BPF_F_MMAPABLE` in `linux/bpf.h`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The kernel lays array elements out at 8-byte strides: `FlowSlot` must be a multiple.
const _: () = assert!(size_of::<FlowSlot>().is_multiple_of(8));

/// A read-only view of one slot map.
pub(super) struct SlotView {
    base: NonNull<FlowSlot>,
    entries: usize,
    mapped: usize,
    /// Keeps the map alive as long as the mapping (the mapping holds a reference too).
    _map: MapData,
}

// SAFETY: the view only reads through `base`, with volatile reads, and unmaps once on drop;
// nothing about it is tied to the thread that created it.
unsafe impl Send for SlotView {}
// SAFETY: as above: `&SlotView` gives reads only.
unsafe impl Sync for SlotView {}

impl SlotView {
    /// Maps `map`, checking that it is a memory-mappable array of this build's slots.
    pub(super) fn new(map: MapData) -> io::Result<SlotView> {
        let info = map.info().map_err(io::Error::other)?;
        let kind = info.map_type().map_err(io::Error::other)?;
        if kind != MapType::Array
            || info.value_size() as usize != size_of::<FlowSlot>()
            || info.map_flags() & BPF_F_MMAPABLE == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {kind:?} map of {}-byte values (flags {:#x}), not this build's \
                     memory-mappable flow slots ({} bytes)",
                    info.value_size(),
                    info.map_flags(),
                    size_of::<FlowSlot>()
                ),
            ));
        }
        let entries = info.max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        let mapped = (entries * size_of::<FlowSlot>()).div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of the map's fd, of the length the kernel
        // gives the array's values (rounded to pages); no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<FlowSlot>()).ok_or_else(|| io::Error::other("mmap"))?;
        Ok(SlotView {
            base,
            entries,
            mapped,
            _map: map,
        })
    }

    /// Slots in the map.
    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// Slot `i`, or `None` past the end.
    pub(super) fn get(&self, i: usize) -> Option<FlowSlot> {
        if i >= self.entries {
            return None;
        }
        // SAFETY: `i` is within the mapping (checked above), which is page-aligned and so
        // aligned for `FlowSlot`; volatile because the memory belongs to the kernel, and any
        // bit pattern is a valid `FlowSlot` (plain integers).
        Some(unsafe { self.base.as_ptr().add(i).read_volatile() })
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; nothing borrows it past `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped) };
    }
}
