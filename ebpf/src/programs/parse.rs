//! Bounds-checked packet access and the header parsers shared by both programs.
//!
//! Every read of packet memory goes through [`ptr_at`], which checks the access against
//! `data_end` (what the verifier needs) and caps the offset (so variable offsets stay bounded).
//! Parsers return `Err(Reason)` for packets they classify without going further.
//!
//! There is deliberately no one-byte accessor: LLVM turns `p + 1 > end` into `p >= end`,
//! which the verifier cannot use to prove a variable-offset read safe. Single bytes are
//! taken from wider reads that the packet format guarantees anyway.

use aya_ebpf::programs::XdpContext;
use mecgw_ebpf::{EXT_PDU_SESSION_CONTAINER, GTP_TYPE_GPDU, GTPU_PORT, MAX_EXT_HEADERS, Reason};

/// No packet offset we read is larger: keeps variable offsets bounded for the verifier.
pub const MAX_OFFSET: usize = 0x3fff;
/// `qfi` value meaning "no PDU Session Container".
pub const NO_QFI: u32 = 0xff;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// Frame length in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end().saturating_sub(ctx.data())
}

/// A pointer to a `T` at `off`, if the whole `T` lies inside the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    if off > MAX_OFFSET {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The `N` bytes at `off`, in place: indexing reads only the bytes used (a copy to the stack
/// would cost a load and a store per byte).
#[inline(always)]
pub fn view<const N: usize>(ctx: &XdpContext, off: usize) -> Option<&[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: `ptr_at` checked that all N bytes lie inside the packet, which outlives the
    // program run; [u8; N] has alignment 1. Nothing writes the packet while the view is used.
    Some(unsafe { &*p })
}

/// Four bytes as a native-order word (byte order kept: compare with words built the same way).
#[inline(always)]
pub fn word(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `N` bytes at `off`.
#[inline(always)]
pub fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: `ptr_at` checked that all N bytes lie inside the packet; [u8; N] has alignment 1.
    Some(unsafe { *p })
}

#[inline(always)]
pub fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    bytes_at::<2>(ctx, off).map(u16::from_be_bytes)
}

/// Writes `bytes` at `off`; `None` if they do not fit in the packet.
#[inline(always)]
pub fn write_at<const N: usize>(ctx: &XdpContext, off: usize, bytes: [u8; N]) -> Option<()> {
    let p = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: `ptr_at` checked that all N bytes lie inside the packet; alignment 1.
    unsafe { *p = bytes };
    Some(())
}

/// Ethernet, with at most one 802.1Q tag.
pub struct L2 {
    /// Offset of the L3 header (14, or 18 with a VLAN tag).
    pub l3_off: usize,
    pub ethertype: u16,
}

#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<L2> {
    let ethertype = be16_at(ctx, 12)?;
    if ethertype == ETH_P_8021Q {
        return Some(L2 {
            l3_off: 18,
            ethertype: be16_at(ctx, 16)?,
        });
    }
    Some(L2 {
        l3_off: 14,
        ethertype,
    })
}

/// What the classifier needs from an IP packet.
pub struct IpInfo {
    /// 1 for IPv6, 0 for IPv4.
    pub v6: u32,
    /// Source and destination as native-order words of their bytes (IPv4 in word 0).
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub proto: u8,
    /// 1 when `sport` and `dport` are valid (TCP/UDP/SCTP, not a fragment, header long enough).
    pub has_ports: u32,
    pub sport: u16,
    pub dport: u16,
    /// TTL or hop limit.
    pub ttl: u8,
}

#[inline(always)]
pub fn has_ports(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP
}

/// Parses the IP packet at `off` whose exact length is `len`.
///
/// IPv4: IHL ≥ 5, header inside `len`, total length == `len`. IPv6: payload length + 40 ==
/// `len`; extension headers are not walked (the protocol is the first Next Header). Ports are
/// read only from an unfragmented packet.
#[inline(always)]
pub fn inner_ip(ctx: &XdpContext, off: usize, len: usize) -> Result<IpInfo, Reason> {
    // Every IP packet we accept is at least 20 bytes, so reading them first rejects nothing
    // that would otherwise be accepted.
    let first = view::<20>(ctx, off).ok_or(Reason::MalformedInner)?;
    let mut info = IpInfo {
        v6: 0,
        src: [0; 4],
        dst: [0; 4],
        proto: 0,
        has_ports: 0,
        sport: 0,
        dport: 0,
        ttl: 0,
    };
    let l4_off;
    let fragment;
    match first[0] >> 4 {
        4 => {
            let h = first;
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if len < 20 || ihl < 20 || ihl > len || total != len {
                return Err(Reason::MalformedInner);
            }
            info.ttl = h[8];
            info.proto = h[9];
            info.src[0] = word(h, 12);
            info.dst[0] = word(h, 16);
            fragment = (u16::from_be_bytes([h[6], h[7]]) & 0x3fff) != 0;
            l4_off = ihl;
        }
        6 => {
            let h = view::<40>(ctx, off).ok_or(Reason::MalformedInner)?;
            let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
            if len < 40 || payload + 40 != len {
                return Err(Reason::MalformedInner);
            }
            info.v6 = 1;
            info.proto = h[6];
            info.ttl = h[7];
            info.src = [word(h, 8), word(h, 12), word(h, 16), word(h, 20)];
            info.dst = [word(h, 24), word(h, 28), word(h, 32), word(h, 36)];
            fragment = false;
            l4_off = 40;
        }
        _ => return Err(Reason::MalformedInner),
    }
    if !fragment
        && has_ports(info.proto)
        && l4_off + 4 <= len
        && let Some(p) = view::<4>(ctx, off + l4_off)
    {
        info.has_ports = 1;
        info.sport = u16::from_be_bytes([p[0], p[1]]);
        info.dport = u16::from_be_bytes([p[2], p[3]]);
    }
    Ok(info)
}

/// A parsed G-PDU.
pub struct Gpdu {
    pub teid: u32,
    /// QFI of the last PDU Session Container, or [`NO_QFI`].
    pub qfi: u32,
    /// Offset and length of the inner IP packet.
    pub inner_off: usize,
    pub inner_len: usize,
    pub inner: IpInfo,
}

/// Parses Ethernet / outer IP / UDP 2152 / GTP-U / inner IP.
///
/// `Err(NotGtp)` and `Err(GtpSignalling)` are packets that are not ours to classify;
/// the other errors are malformed GTP-U.
#[inline(always)]
pub fn gpdu(ctx: &XdpContext) -> Result<Gpdu, Reason> {
    let l2 = ethernet(ctx).ok_or(Reason::NotGtp)?;
    let l3 = l2.l3_off;
    let avail = frame_len(ctx);
    let udp_off;
    let ip_payload_len;
    if l2.ethertype == ETH_P_IPV4 {
        let h = view::<20>(ctx, l3).ok_or(Reason::NotGtp)?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || h[9] != IPPROTO_UDP {
            return Err(Reason::NotGtp);
        }
        if (u16::from_be_bytes([h[6], h[7]]) & 0x3fff) != 0 {
            return Err(Reason::NotGtp); // outer fragment: the kernel reassembles
        }
        let total = u16::from_be_bytes([h[2], h[3]]) as usize;
        udp_off = l3 + ihl;
        ip_payload_len = if total >= ihl && l3 + total <= avail {
            total - ihl
        } else {
            usize::MAX
        };
    } else if l2.ethertype == ETH_P_IPV6 {
        let h = view::<40>(ctx, l3).ok_or(Reason::NotGtp)?;
        if h[0] >> 4 != 6 || h[6] != IPPROTO_UDP {
            return Err(Reason::NotGtp);
        }
        let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
        udp_off = l3 + 40;
        ip_payload_len = if l3 + 40 + payload <= avail {
            payload
        } else {
            usize::MAX
        };
    } else {
        return Err(Reason::NotGtp);
    }
    let udp = view::<8>(ctx, udp_off).ok_or(Reason::NotGtp)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != GTPU_PORT {
        return Err(Reason::NotGtp);
    }
    // From here on it is GTP-U: anything wrong is malformed.
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len != ip_payload_len || udp_len < 16 {
        return Err(Reason::MalformedGtp);
    }
    let udp_end = udp_off + udp_len;
    let gtp_off = udp_off + 8;
    let g = view::<8>(ctx, gtp_off).ok_or(Reason::MalformedGtp)?;
    let flags = g[0];
    if flags >> 5 != 1 || flags & 0x10 == 0 {
        return Err(Reason::MalformedGtp);
    }
    let gtp_len = u16::from_be_bytes([g[2], g[3]]) as usize;
    if gtp_off + 8 + gtp_len != udp_end {
        return Err(Reason::MalformedGtp);
    }
    if g[1] != GTP_TYPE_GPDU {
        return Err(Reason::GtpSignalling);
    }
    let teid = u32::from_be_bytes([g[4], g[5], g[6], g[7]]);
    let mut pos = gtp_off + 8;
    let mut next: u8 = 0;
    if flags & 0x07 != 0 {
        if pos + 4 > udp_end {
            return Err(Reason::MalformedGtp);
        }
        let opt = view::<4>(ctx, pos).ok_or(Reason::MalformedGtp)?;
        if flags & 0x04 != 0 {
            next = opt[3];
        }
        pos += 4;
    }
    let mut qfi = NO_QFI;
    for _ in 0..MAX_EXT_HEADERS {
        if next == 0 {
            break;
        }
        // An extension header is at least 4 bytes (length, content, next type).
        let head = view::<4>(ctx, pos).ok_or(Reason::MalformedGtp)?;
        let hlen = head[0] as usize * 4;
        if hlen == 0 || pos + hlen > udp_end {
            return Err(Reason::MalformedGtp);
        }
        if next == EXT_PDU_SESSION_CONTAINER {
            qfi = (head[2] & 0x3f) as u32;
        }
        // Opaque to LLVM so it keeps a separate bounds check the verifier can follow (it
        // would otherwise reuse `pos + hlen <= end` and read at a negative offset).
        let last = core::hint::black_box(pos + hlen - 4);
        next = view::<4>(ctx, last).ok_or(Reason::MalformedGtp)?[3];
        pos += hlen;
    }
    if next != 0 {
        return Err(Reason::ExtChainTooLong);
    }
    if pos >= udp_end {
        return Err(Reason::MalformedInner);
    }
    let inner_len = udp_end - pos;
    let inner = inner_ip(ctx, pos, inner_len)?;
    Ok(Gpdu {
        teid,
        qfi,
        inner_off: pos,
        inner_len,
        inner,
    })
}
