//! A flow map of the layout the fast path counted into before the slot maps: a per-CPU LRU
//! hash of `FlowKey` → `FlowValue` (`FLOWS_0`, `FLOWS_1`), which an instance of an older
//! build leaves pinned and the next one adopts. Created here with raw `bpf(2)` calls, since
//! no program of this build declares one any more.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya::maps::{Map, MapData, PerCpuHashMap};
use mecgw_ebpf::{FlowKey, FlowValue};

/// `enum bpf_cmd` and `enum bpf_map_type` in `linux/bpf.h`: stable kernel ABI numbers.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;

/// A previous-layout flow map of `max_entries` flows, pinned at `path` (on a bpffs), for the
/// caller to fill.
pub fn pin(
    path: &Path,
    max_entries: u32,
) -> anyhow::Result<PerCpuHashMap<MapData, FlowKey, FlowValue>> {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let mut create = Create {
        map_type: BPF_MAP_TYPE_LRU_PERCPU_HASH,
        key_size: size_of::<FlowKey>() as u32,
        value_size: size_of::<FlowValue>() as u32,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: a `bpf_attr` prefix for BPF_MAP_CREATE of the size passed, alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &raw mut create,
            size_of::<Create>(),
        )
    };
    anyhow::ensure!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut pin = Pin {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: a `bpf_attr` prefix for BPF_OBJ_PIN; the path string outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, &raw mut pin, size_of::<Pin>()) };
    anyhow::ensure!(r == 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    Ok(PerCpuHashMap::try_from(Map::PerCpuLruHashMap(
        MapData::from_pin(path)?,
    ))?)
}
