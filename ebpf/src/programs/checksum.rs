//! Internet checksums (RFC 1071), the incremental update of RFC 1624, and the TTL decrement
//! that needs it.

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_load_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};

use super::parse::{be16_at, bytes_at, launder, ptr_at, write_at};

/// Bytes summed per `bpf_csum_diff` call at most.
const CHUNK: usize = 512;

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of big-endian 16-bit words of `bytes` (even length).
#[inline(always)]
pub fn sum_be<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// RFC 1624 eqn. 3: the header checksum after one 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// One's-complement sum, as a big-endian 16-bit value, of `len` packet bytes from `off`
/// (`off` must be at an even distance from the start of the checksummed data).
///
/// Whole 4-byte words go through `bpf_csum_diff` (at most 512 bytes a call); the last 0-3
/// bytes are added here. `None` if the range leaves the packet or exceeds `MAX_N3_MTU`.
///
/// A single-buffer frame is read in place. A multi-buffer (`multi`: one that was, before its
/// tail was trimmed; the copying way is right for any frame) (jumbo) frame is copied chunk by
/// chunk with `bpf_xdp_load_bytes`, which reads across the linear part and the fragments,
/// into a per-CPU scratch buffer that `bpf_csum_diff` then sums ([`sum_loaded`]).
#[inline(always)]
pub fn sum_packet(ctx: &XdpContext, off: usize, len: usize, multi: bool) -> Option<u16> {
    // `multi` comes from the caller, which asked before it changed the frame: a helper call
    // or a comparison on `len` here would change what the verifier tracks through the loop
    // below and multiply the states it walks past its budget.
    if multi {
        return sum_loaded(ctx, off, len);
    }
    // Through a map: the loop below then starts from the same unknown scalars whatever path
    // led here, so the verifier's states prune into one instead of multiplying with every
    // way the caller narrowed the length.
    let [pos, left, _] = launder([off as u32, len as u32, 0])?;
    let mut seed: u32 = 0;
    let mut pos = pos as usize;
    let mut left = left as usize;
    for _ in 0..18 {
        if left < CHUNK {
            break;
        }
        seed = csum_diff::<CHUNK>(ctx, pos, seed)?;
        pos += CHUNK;
        left -= CHUNK;
    }
    if left >= CHUNK {
        return None;
    }
    if left >= 256 {
        seed = csum_diff::<256>(ctx, pos, seed)?;
        pos += 256;
        left -= 256;
    }
    if left >= 128 {
        seed = csum_diff::<128>(ctx, pos, seed)?;
        pos += 128;
        left -= 128;
    }
    if left >= 64 {
        seed = csum_diff::<64>(ctx, pos, seed)?;
        pos += 64;
        left -= 64;
    }
    if left >= 32 {
        seed = csum_diff::<32>(ctx, pos, seed)?;
        pos += 32;
        left -= 32;
    }
    if left >= 16 {
        seed = csum_diff::<16>(ctx, pos, seed)?;
        pos += 16;
        left -= 16;
    }
    if left >= 8 {
        seed = csum_diff::<8>(ctx, pos, seed)?;
        pos += 8;
        left -= 8;
    }
    if left >= 4 {
        seed = csum_diff::<4>(ctx, pos, seed)?;
        pos += 4;
        left -= 4;
    }
    // csum_diff sums words as loaded (little-endian here): fold, then swap to big-endian.
    let mut sum = fold(seed).swap_bytes() as u32;
    if left >= 2 {
        sum += be16_at(ctx, pos)? as u32;
        pos += 2;
        left -= 2;
    }
    if left == 1 {
        // The byte before is part of the checksummed data, so this read stays inside it.
        sum += (bytes_at::<2>(ctx, pos - 1)?[1] as u32) << 8;
    }
    Some(fold(sum))
}

/// What [`sum_loaded`] works in: the bytes it copies out of the frame (3 more than a chunk,
/// for the zeros that pad a last chunk to whole words) and its loop's state, kept here
/// rather than in registers so that every pass of the loop looks the same to the verifier
/// (the values read back are unknown scalars, whatever the pass before left).
#[repr(C)]
pub struct CsumScratch {
    bytes: [u8; CHUNK + 4],
    pos: u32,
    left: u32,
    seed: u32,
}

#[map(name = "CSUM_SCRATCH")]
static CSUM_SCRATCH: PerCpuArray<CsumScratch> = PerCpuArray::with_max_entries(1, 0);

/// Chunks [`sum_loaded`] copies at most: a 9000-byte packet is 18 of them.
const MAX_LOADED_CHUNKS: usize = 18;

/// [`sum_packet`] for a multi-buffer frame: chunk by chunk, each copied out of the frame
/// (linear part or fragments, wherever it lies) with `bpf_xdp_load_bytes` into this CPU's
/// scratch buffer, then summed there by `bpf_csum_diff`. A last chunk that is not whole
/// words is padded with zeros, as RFC 1071 pads an odd byte (every chunk starts at an even
/// distance from the start of the data). `None` past `MAX_LOADED_CHUNKS` chunks.
#[inline(always)]
fn sum_loaded(ctx: &XdpContext, off: usize, len: usize) -> Option<u16> {
    let s = CSUM_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of the scratch map, which no other program run on this CPU
    // uses meanwhile; plain integers and bytes, valid whatever is written.
    unsafe {
        (*s).pos = off as u32;
        (*s).left = len as u32;
        (*s).seed = 0;
    }
    for _ in 0..MAX_LOADED_CHUNKS + 1 {
        // SAFETY: as above; volatile, so each pass reads what the last one stored.
        let (pos, left, seed) = unsafe {
            (
                core::ptr::read_volatile(&(*s).pos) as usize,
                core::ptr::read_volatile(&(*s).left) as usize,
                core::ptr::read_volatile(&(*s).seed),
            )
        };
        if left == 0 {
            return Some(fold(seed).swap_bytes());
        }
        let n = if left > CHUNK { CHUNK } else { left };
        if n == 0 || pos > 0xffff {
            return None;
        }
        // SAFETY: `bytes` is CHUNK + 4 bytes of this CPU's slot; the helper writes n ≤ CHUNK
        // bytes at its start; the three zeros go at n..n + 3 < CHUNK + 4.
        let sum = unsafe {
            let buf = (*s).bytes.as_mut_ptr();
            if bpf_xdp_load_bytes(ctx.ctx, pos as u32, buf as *mut _, n as u32) != 0 {
                return None;
            }
            (*s).bytes[n] = 0;
            (*s).bytes[n + 1] = 0;
            (*s).bytes[n + 2] = 0;
            let words = (n + 3) & !3;
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf as *mut u32,
                words as u32,
                seed,
            )
        };
        if sum < 0 {
            return None;
        }
        // SAFETY: as above.
        unsafe {
            (*s).pos = (pos + n) as u32;
            (*s).left = (left - n) as u32;
            (*s).seed = sum as u32;
        }
    }
    None
}

#[inline(always)]
fn csum_diff<const N: usize>(ctx: &XdpContext, off: usize, seed: u32) -> Option<u32> {
    let p = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: `ptr_at` checked that N bytes at `p` lie inside the packet; the helper only
    // reads them (`from` is empty).
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) };
    if r < 0 { None } else { Some(r as u32) }
}

/// Decrements the TTL (updating the header checksum incrementally) or the hop limit of the
/// IP header at `off`.
#[inline(always)]
pub fn decrement_ttl(ctx: &XdpContext, off: usize, v6: u32) -> Option<()> {
    if v6 == 0 {
        let word = be16_at(ctx, off + 8)?;
        let check = be16_at(ctx, off + 10)?;
        let new_word = word.wrapping_sub(0x0100);
        write_at(ctx, off + 8, new_word.to_be_bytes())?;
        write_at(
            ctx,
            off + 10,
            replace16(check, word, new_word).to_be_bytes(),
        )
    } else {
        let [next_header, hop] = bytes_at::<2>(ctx, off + 6)?;
        write_at(ctx, off + 6, [next_header, hop.wrapping_sub(1)])
    }
}
