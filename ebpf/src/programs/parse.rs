//! Bounds-checked packet access and the header parsers shared by both programs.
//!
//! Every read of packet memory goes through [`ptr_at`], which checks the access against
//! `data_end` (what the verifier needs) and caps the offset (so variable offsets stay bounded).
//! Parsers return `Err(Reason)` for packets they classify without going further.
//!
//! There is deliberately no one-byte accessor: LLVM turns `p + 1 > end` into `p >= end`,
//! which the verifier cannot use to prove a variable-offset read safe. Single bytes are
//! taken from wider reads that the packet format guarantees anyway.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_get_buff_len},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use mecgw_ebpf::{
    EXT_PDU_SESSION_CONTAINER, GTP_TYPE_GPDU, GTPU_PORT, IPV6_FRAGMENT, MAX_EXT_HEADERS,
    MAX_IPV6_EXT_HEADERS, Reason, is_ipv6_ext,
};

/// No packet offset we read is larger: keeps variable offsets bounded for the verifier.
pub const MAX_OFFSET: usize = 0x3fff;
/// `qfi` value meaning "no PDU Session Container".
pub const NO_QFI: u32 = 0xff;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// Length of the frame's linear part: the bytes direct packet access reaches. The whole
/// frame for a single-buffer frame; a multi-buffer (jumbo) frame has more in fragments.
#[inline(always)]
pub fn linear_len(ctx: &XdpContext) -> usize {
    ctx.data_end().saturating_sub(ctx.data())
}

/// Whether the frame is a multi-buffer one, whose `whole` length (from [`frame_len`]) is more
/// than its linear part. The context is read afresh (volatile): the packet pointers LLVM
/// would otherwise keep from here on would change what the verifier tracks through the
/// rest of the program, and multiply the states it walks.
#[inline(always)]
pub fn is_multi(ctx: &XdpContext, whole: usize) -> bool {
    // SAFETY: `ctx.ctx` is the program's context, valid for the whole run; plain u32 reads.
    let (data, end) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data),
            core::ptr::read_volatile(&(*ctx.ctx).data_end),
        )
    };
    whole > end.wrapping_sub(data) as usize
}

/// Length of the whole frame, linear part and fragments: what lengths in headers, counters
/// and MTUs are compared with.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: the helper only reads the program's own context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// The reason for a header read that failed: `r`, or [`Reason::HeadersNotLinear`] in a
/// multi-buffer frame (whose headers we read from the linear part only).
#[inline(always)]
fn miss(multi: bool, r: Reason) -> Reason {
    if multi { Reason::HeadersNotLinear } else { r }
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

/// Turns the untagged Ethernet frame in the packet into one with `count` (0-2) of `tags`
/// (wire bytes, outermost first) after its MAC addresses: the head grows by 4 bytes a tag and
/// the addresses move to the new start. `None` if the kernel refuses to grow the head.
#[inline(always)]
pub fn push_tags(ctx: &XdpContext, tags: &[u8; 8], count: u32) -> Option<()> {
    if count == 0 {
        return Some(());
    }
    let macs = bytes_at::<12>(ctx, 0)?;
    let grow: i32 = if count == 1 { 4 } else { 8 };
    // SAFETY: the helper is given the program's own context; every packet pointer after this
    // is re-derived through `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return None;
    }
    write_at(ctx, 0, macs)?;
    if count == 1 {
        write_at(ctx, 12, [tags[0], tags[1], tags[2], tags[3]])
    } else {
        write_at(ctx, 12, *tags)
    }
}

/// Ethernet, with up to two VLAN tags (802.1Q, or an 802.1ad S-tag: QinQ).
pub struct L2 {
    /// Offset of the L3 header (14, 18 with one tag, 22 with two).
    pub l3_off: usize,
    /// The EtherType after the tags; a third tag's TPID, which no caller takes for IP.
    pub ethertype: u16,
}

#[inline(always)]
fn is_vlan(tpid: u16) -> bool {
    tpid == ETH_P_8021Q || tpid == ETH_P_8021AD
}

#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<L2> {
    let ethertype = be16_at(ctx, 12)?;
    if !is_vlan(ethertype) {
        return Some(L2 {
            l3_off: 14,
            ethertype,
        });
    }
    let ethertype = be16_at(ctx, 16)?;
    if !is_vlan(ethertype) {
        return Some(L2 {
            l3_off: 18,
            ethertype,
        });
    }
    Some(L2 {
        l3_off: 22,
        ethertype: be16_at(ctx, 20)?,
    })
}

/// Where an IPv6 packet's upper layer is, behind its extension headers.
pub struct V6Upper {
    /// The upper-layer protocol; an extension header's type if there were more than
    /// [`MAX_IPV6_EXT_HEADERS`].
    pub proto: u8,
    /// Offset of the upper-layer header from the IPv6 header.
    pub l4: usize,
    /// A fragment header with a fragment offset or more-fragments: no ports.
    pub fragment: bool,
}

/// Walks the extension headers of the IPv6 packet at `off`, `len` bytes long, whose fixed
/// header says `next`. `None` if one runs past `len`.
#[inline(always)]
pub fn ipv6_upper(ctx: &XdpContext, off: usize, len: usize, next: u8) -> Option<V6Upper> {
    let mut up = V6Upper {
        proto: next,
        l4: 40,
        fragment: false,
    };
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_ext(up.proto) {
            break;
        }
        // Every extension header walked is a multiple of 8 bytes, at least 8.
        let h = view::<8>(ctx, off + up.l4)?;
        let hlen = if up.proto == IPV6_FRAGMENT {
            up.fragment |= u16::from_be_bytes([h[2], h[3]]) & 0xfff9 != 0;
            8
        } else {
            (h[1] as usize + 1) * 8
        };
        if up.l4 + hlen > len {
            return None;
        }
        up.proto = h[0];
        up.l4 += hlen;
    }
    if up.l4 == 40 {
        return Some(up);
    }
    // Behind extension headers (rare): the verifier would carry each walk's own offset range
    // through everything after it, and the paths multiply across the outer walk, the GTP-U
    // extension headers and the inner walk. Passed through a map, the results are plain
    // bounded scalars whatever the walk, so the states after it prune into one.
    launder_upper(up)
}

/// One per-CPU slot that parse results pass through ([`launder`]).
#[map(name = "PARSE_SCRATCH")]
static PARSE_SCRATCH: PerCpuArray<[u32; 3]> = PerCpuArray::with_max_entries(1, 0);

/// `v` as the verifier sees a map value: unknown scalars, the same whatever path computed
/// them, so that the states after a variable-length header prune into one instead of
/// multiplying through every later step. Callers bound what they read back. Only on the
/// less common paths (tags, extension headers): a per-CPU array lookup is inlined by the
/// kernel, but still costs a few instructions.
#[inline(always)]
pub fn launder(v: [u32; 3]) -> Option<[u32; 3]> {
    let slot = PARSE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, which nothing else uses during this program run; plain u32s.
    unsafe {
        *slot = v;
        Some(core::ptr::read_volatile(slot))
    }
}

#[inline(always)]
fn launder_upper(up: V6Upper) -> Option<V6Upper> {
    let v = launder([up.proto as u32, up.l4 as u32, up.fragment as u32])?;
    if v[1] as usize > 40 + MAX_IPV6_EXT_HEADERS * 2048 || v[0] > 255 {
        return None;
    }
    Some(V6Upper {
        proto: v[0] as u8,
        l4: v[1] as usize,
        fragment: v[2] != 0,
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
/// `len`; extension headers are walked ([`ipv6_upper`]): the protocol is the upper layer's.
/// Ports are read only from an unfragmented packet.
#[inline(always)]
pub fn inner_ip(ctx: &XdpContext, off: usize, len: usize, multi: bool) -> Result<IpInfo, Reason> {
    // Every IP packet we accept is at least 20 bytes, so reading them first rejects nothing
    // that would otherwise be accepted.
    let first = view::<20>(ctx, off).ok_or(miss(multi, Reason::MalformedInner))?;
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
            let h = view::<40>(ctx, off).ok_or(miss(multi, Reason::MalformedInner))?;
            let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
            if len < 40 || payload + 40 != len {
                return Err(Reason::MalformedInner);
            }
            info.v6 = 1;
            info.proto = h[6];
            info.ttl = h[7];
            info.src = [word(h, 8), word(h, 12), word(h, 16), word(h, 20)];
            info.dst = [word(h, 24), word(h, 28), word(h, 32), word(h, 36)];
            let up =
                ipv6_upper(ctx, off, len, info.proto).ok_or(miss(multi, Reason::MalformedInner))?;
            info.proto = up.proto;
            fragment = up.fragment;
            l4_off = up.l4;
        }
        _ => return Err(Reason::MalformedInner),
    }
    if !fragment && has_ports(info.proto) && l4_off + 4 <= len {
        // Inside the packet, so only a multi-buffer frame's linear part can end before it.
        let Some(p) = view::<4>(ctx, off + l4_off) else {
            return Err(miss(multi, Reason::MalformedInner));
        };
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
    /// The whole frame's length, as given to [`gpdu`].
    pub frame_len: usize,
}

/// Parses Ethernet / outer IP / UDP 2152 / GTP-U / inner IP of the frame, `whole` bytes
/// long ([`frame_len`]: the caller asks the kernel once per packet, a helper call).
///
/// `Err(NotGtp)` and `Err(GtpSignalling)` are packets that are not ours to classify;
/// the other errors are malformed GTP-U.
#[inline(always)]
pub fn gpdu(ctx: &XdpContext, whole: usize) -> Result<Gpdu, Reason> {
    let l2 = ethernet(ctx).ok_or(Reason::NotGtp)?;
    let l3 = l2.l3_off;
    let avail = whole;
    // Headers are read from the linear part only; in a multi-buffer frame, one that is not
    // there is `HeadersNotLinear` rather than the reason a truncated frame would have.
    let multi = avail > linear_len(ctx);
    let udp_off;
    let ip_payload_len;
    if l2.ethertype == ETH_P_IPV4 {
        let h = view::<20>(ctx, l3).ok_or(miss(multi, Reason::NotGtp))?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || h[9] != IPPROTO_UDP {
            return Err(Reason::NotGtp);
        }
        if (u16::from_be_bytes([h[6], h[7]]) & 0x3fff) != 0 {
            return Err(Reason::OuterFragment); // the kernel reassembles
        }
        let total = u16::from_be_bytes([h[2], h[3]]) as usize;
        udp_off = l3 + ihl;
        ip_payload_len = if total >= ihl && l3 + total <= avail {
            total - ihl
        } else {
            usize::MAX
        };
    } else if l2.ethertype == ETH_P_IPV6 {
        let h = view::<40>(ctx, l3).ok_or(miss(multi, Reason::NotGtp))?;
        if h[0] >> 4 != 6 {
            return Err(Reason::NotGtp);
        }
        let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
        let whole = l3 + 40 + payload <= avail;
        // Extension headers are walked within the packet as its length says, or as far as
        // the frame goes if that is wrong (a wrong length is malformed GTP-U below).
        let len = if whole { 40 + payload } else { avail - l3 };
        let up = ipv6_upper(ctx, l3, len, h[6]).ok_or(miss(multi, Reason::NotGtp))?;
        if up.proto != IPPROTO_UDP {
            return Err(Reason::NotGtp);
        }
        if up.fragment {
            return Err(Reason::OuterFragment); // the kernel reassembles
        }
        udp_off = l3 + up.l4;
        ip_payload_len = if whole {
            40 + payload - up.l4
        } else {
            usize::MAX
        };
    } else {
        return Err(Reason::NotGtp);
    }
    let udp = view::<8>(ctx, udp_off).ok_or(miss(multi, Reason::NotGtp))?;
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
    let g = view::<8>(ctx, gtp_off).ok_or(miss(multi, Reason::MalformedGtp))?;
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
        let opt = view::<4>(ctx, pos).ok_or(miss(multi, Reason::MalformedGtp))?;
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
        let head = view::<4>(ctx, pos).ok_or(miss(multi, Reason::MalformedGtp))?;
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
        next = view::<4>(ctx, last).ok_or(miss(multi, Reason::MalformedGtp))?[3];
        pos += hlen;
    }
    if next != 0 {
        return Err(Reason::ExtChainTooLong);
    }
    if pos >= udp_end {
        return Err(Reason::MalformedInner);
    }
    let inner_len = udp_end - pos;
    let inner = inner_ip(ctx, pos, inner_len, multi)?;
    Ok(Gpdu {
        teid,
        qfi,
        inner_off: pos,
        inner_len,
        inner,
        frame_len: whole,
    })
}
