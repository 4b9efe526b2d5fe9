//! The batched `bpf(2)` map commands aya 0.14 does not expose: `BPF_MAP_LOOKUP_BATCH` and
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (Linux 5.6+), thousands of entries per system call.
//! One call here; the loops over a map live with their users (`flow_batch`,
//! `counter_batch`).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `enum bpf_cmd` in `linux/bpf.h`: stable kernel ABI numbers.
#[derive(Clone, Copy)]
#[repr(i64)]
pub(super) enum Command {
    Lookup = 24,
    LookupAndDelete = 25,
}

/// `union bpf_attr`'s `batch` member (`linux/bpf.h`), the only fields the commands read.
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

/// What one call did.
pub(super) struct Step {
    /// Entries written to the front of the buffers.
    pub got: usize,
    /// Where the next call resumes (a bucket index for hash maps, an index for arrays).
    pub next: u32,
    /// The map has no more entries (this call's `got` are still valid).
    pub done: bool,
}

/// Runs `cmd` once on `map` from `token` (`None`: the start), into `keys` and `values`:
/// at most `keys.len()` entries, and `values` holds `values.len() / keys.len()` values per
/// entry (one per possible CPU for a per-CPU map).
///
/// # Safety
/// `K` must have the map's key size and a u32 batch token must be the map's (hash maps and
/// arrays with u32 keys); `V` must have the map's value size, rounded up to 8 bytes for a
/// per-CPU map (the kernel's stride), and `values.len()` must be `keys.len()` times the
/// values the kernel writes per entry. Any bytes must be a valid `K` and `V`.
pub(super) unsafe fn step<K, V>(
    cmd: Command,
    map: BorrowedFd<'_>,
    token: Option<u32>,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<Step> {
    let map_fd = u32::try_from(map.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a negative map fd"))?;
    let count = u32::try_from(keys.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many entries asked"))?;
    let start = token.unwrap_or(0);
    let mut next: u32 = 0;
    let mut attr = BatchAttr {
        in_batch: if token.is_some() {
            &raw const start as u64
        } else {
            0
        },
        out_batch: &raw mut next as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` for the size passed; the buffers have room
    // for `count` keys and their values at the layout the kernel writes (the caller's
    // contract), the token buffers are u32; everything lives until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    let done = if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
        true
    } else {
        false
    };
    Ok(Step {
        got: (attr.count as usize).min(keys.len()),
        next,
        done,
    })
}
