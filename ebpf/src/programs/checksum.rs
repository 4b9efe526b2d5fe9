//! Internet checksums (RFC 1071), the incremental update of RFC 1624, and the TTL decrement
//! that needs it.

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};

use super::parse::{be16_at, bytes_at, ptr_at, write_at};

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
#[inline(always)]
pub fn sum_packet(ctx: &XdpContext, off: usize, len: usize) -> Option<u16> {
    const CHUNK: usize = 512;
    let mut seed: u32 = 0;
    let mut pos = off;
    let mut left = len;
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
