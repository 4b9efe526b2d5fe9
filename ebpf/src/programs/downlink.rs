//! `mecgw_downlink`, attached to the local-services interface: encapsulate replies to UEs.
//!
//! An IP packet whose destination is a UE with a session gets its TTL or hop limit
//! decremented, then an outer IPv4 or IPv6 header towards the session's gNB, UDP 2152 and a
//! GTP-U header with the downlink TEID and a downlink PDU Session Container carrying the
//! session's QFI; it is redirected to the N3 interface, to the next hop's MAC (fixed, or the
//! kernel's FIB's for the gNB). Anything else passes to the kernel.
//! With PFCP on, `mecgw_downlink_pfcp` is attached instead: a UE of a PFCP session is looked
//! up first, and its downlink PDR's FAR says encapsulate (TEID and gNB from the outer header
//! creation, QFI from the QER) or drop; other packets go on to `mecgw_downlink`.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::{map, xdp},
    maps::ProgramArray,
    programs::XdpContext,
};
use mecgw_ebpf::{
    CONFIG_N3_FIB, Config, DIR_DOWNLINK, DOWNLINK_GNB_V6, ENCAP_OVERHEAD_V4, ENCAP_OVERHEAD_V6,
    EXT_PDU_SESSION_CONTAINER, FLOW_FAMILY_V4, FLOW_FAMILY_V6, FlowKey, GTP_TYPE_GPDU, GTPU_PORT,
    NONE, PfcpDownlink, Reason, SESSION_GNB_V6, SessionEntry, Verdict, pdr_action,
};

use super::{
    checksum::{decrement_ttl, fold, sum_be, sum_packet},
    counters::{Outcome, PdrHit, count_pdr, record, record_pdr},
    fib,
    flows::{self, FlowHit},
    maps,
    parse::{
        ETH_P_IPV4, ETH_P_IPV6, ethernet, frame_len, has_ports, ipv6_upper, is_multi, linear_len,
        push_tags, view, word, write_at,
    },
};

/// GTP-U header with optional fields and a downlink PDU Session Container: 8 + 4 + 4 bytes.
const GTP_LEN: usize = 16;
const OUTER_TTL: u8 = 64;

#[xdp(frags)]
pub fn mecgw_downlink(ctx: XdpContext) -> u32 {
    if is_multi(&ctx, frame_len(&ctx)) {
        // SAFETY: a tail call with the program's own context; on failure control returns here.
        unsafe { DOWNLINK_CALLS.tail_call(&ctx, JUMBO) };
        return internal(&ctx);
    }
    downlink(&ctx, false)
}

/// `mecgw_downlink`'s judgement of a frame of the kind `multi` says, by the tables.
#[inline(always)]
fn downlink(ctx: &XdpContext, multi: bool) -> u32 {
    let len = whole_len(ctx, multi) as u64;
    let outcome = classify(ctx, multi);
    record(&outcome, len, DIR_DOWNLINK)
}

/// Index of `mecgw_downlink` in `DOWNLINK_CALLS`.
const TABLES: u32 = 0;
/// Index of `mecgw_downlink_pfcp_v6` in `DOWNLINK_CALLS`.
const PFCP_V6: u32 = 1;
/// Index of `mecgw_downlink_jumbo` in `DOWNLINK_CALLS`.
const JUMBO: u32 = 2;

/// The downlink programs' tail calls: `mecgw_downlink` at index [`TABLES`],
/// `mecgw_downlink_pfcp_v6` at [`PFCP_V6`] and `mecgw_downlink_jumbo` at [`JUMBO`], set by
/// userspace at load.
#[map(name = "DOWNLINK_CALLS")]
static DOWNLINK_CALLS: ProgramArray = ProgramArray::with_max_entries(3, 0);

/// `mecgw_downlink` for multi-buffer (jumbo) frames, which it tail-calls first: the same
/// judgement, but lengths are the whole frame's (asked of the kernel) and an outer
/// IPv6 header's UDP checksum is summed over bytes copied out of the fragments
/// ([`sum_packet`]). A program of its own: with both in one program the verifier would walk
/// past its budget.
#[xdp(frags)]
pub fn mecgw_downlink_jumbo(ctx: XdpContext) -> u32 {
    downlink(&ctx, true)
}

/// The frame's whole length: the linear part's when `multi` is false (a constant in
/// `mecgw_downlink`, which hands multi-buffer frames on), asked of the kernel otherwise. The
/// helper's value, unbounded to the verifier, compared with an IP header's length in
/// `mecgw_downlink` would multiply the states it walks through the checksum loop past its
/// budget; the linear part's it knows bounded.
#[inline(always)]
fn whole_len(ctx: &XdpContext, multi: bool) -> usize {
    if multi {
        frame_len(ctx)
    } else {
        linear_len(ctx)
    }
}

/// A failed tail call (never, once userspace has loaded the programs): dropped, counted.
#[inline(always)]
fn internal(ctx: &XdpContext) -> u32 {
    let outcome = Outcome::new(Verdict::Drop, Reason::Internal);
    record(&outcome, frame_len(ctx) as u64, DIR_DOWNLINK)
}

/// The downlink entry when PFCP is on: userspace attaches it in place of `mecgw_downlink`.
/// A packet to an IPv4 UE of a PFCP session is judged here, as its downlink PDR says, with
/// one parse and one lookup; one to an IPv6 UE of a PFCP session goes to
/// `mecgw_downlink_pfcp_v6`, anything else to the tables (`mecgw_downlink`), by tail calls.
/// PFCP sessions come first because in a PFCP deployment they are the sessions: the tables'
/// then pay the PFCP lookup and a tail call.
#[xdp(frags)]
pub fn mecgw_downlink_pfcp(ctx: XdpContext) -> u32 {
    let whole = frame_len(&ctx);
    let mut pdr = PdrHit::NONE;
    if let Some(outcome) = classify_pfcp::<false>(&ctx, whole, &mut pdr) {
        return record_pdr(&outcome, &pdr, whole as u64, DIR_DOWNLINK);
    }
    let next = if to_pfcp_ue_v6(&ctx) { PFCP_V6 } else { TABLES };
    // SAFETY: a tail call with the program's own context; on failure control returns here.
    unsafe { DOWNLINK_CALLS.tail_call(&ctx, next) };
    internal(&ctx)
}

/// Whether the frame is an IPv6 packet to a UE of a PFCP session.
#[inline(always)]
fn to_pfcp_ue_v6(ctx: &XdpContext) -> bool {
    let Some(l2) = ethernet(ctx) else {
        return false;
    };
    if l2.ethertype != ETH_P_IPV6 {
        return false;
    }
    let Some(h) = view::<40>(ctx, l2.l3_off) else {
        return false;
    };
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    h[0] >> 4 == 6 && maps::pfcp_ue_v6(dst).is_some()
}

/// The downlink of PFCP sessions' IPv6 UEs, as their downlink PDRs say.
#[xdp(frags)]
pub fn mecgw_downlink_pfcp_v6(ctx: XdpContext) -> u32 {
    let whole = frame_len(&ctx);
    let mut pdr = PdrHit::NONE;
    let outcome = classify_pfcp::<true>(&ctx, whole, &mut pdr)
        .unwrap_or(Outcome::new(Verdict::Pass, Reason::NotForUe));
    record_pdr(&outcome, &pdr, whole as u64, DIR_DOWNLINK)
}

/// The outcome of a packet to a UE of a PFCP session (of the family `V6` says), and the PDR
/// that decided (in `pdr`); `None` if the frame is not an IP packet of that family to such
/// a UE. `whole` is the frame's length ([`frame_len`]), asked of the kernel once per packet.
#[inline(always)]
fn classify_pfcp<const V6: bool>(
    ctx: &XdpContext,
    whole: usize,
    pdr: &mut PdrHit,
) -> Option<Outcome> {
    let (_, config) = maps::active()?;
    let l2 = ethernet(ctx)?;
    let l3 = l2.l3_off;
    let avail = whole;
    let (p, inner) = if !V6 && l2.ethertype == ETH_P_IPV4 {
        let h = view::<20>(ctx, l3)?;
        if h[0] >> 4 != 4 {
            return None;
        }
        let p = maps::pfcp_ue_v4([h[16], h[17], h[18], h[19]])?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([h[2], h[3]]) as usize;
        if ihl < 20 || total < ihl || l3 + total > avail {
            return Some(for_pfcp(
                Outcome::new(Verdict::Drop, Reason::MalformedInner),
                p,
                pdr,
            ));
        }
        let inner = Inner {
            l3_off: l3,
            len: total,
            v6: 0,
            ttl: h[8],
        };
        (p, inner)
    } else if V6 && l2.ethertype == ETH_P_IPV6 {
        let h = view::<40>(ctx, l3)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[24..40]);
        let p = maps::pfcp_ue_v6(dst)?;
        let total = 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
        if l3 + total > avail {
            return Some(for_pfcp(
                Outcome::new(Verdict::Drop, Reason::MalformedInner),
                p,
                pdr,
            ));
        }
        let inner = Inner {
            l3_off: l3,
            len: total,
            v6: 1,
            ttl: h[7],
        };
        (p, inner)
    } else {
        return None;
    };
    if flows::enabled() {
        count_flow(ctx, p.session, l3, inner.v6);
    }
    // Counted here, not through `pdr` when recording: a copy of the length kept until then
    // would share the verifier's bounds with the one the checksum loop narrows, and multiply
    // the states it walks.
    count_pdr(p.pdr_counter, inner.len as u64);
    Some(pfcp_downlink(ctx, config, p, &inner, whole, pdr))
}

/// The inner packet as found in the frame.
struct Inner {
    l3_off: usize,
    len: usize,
    v6: u32,
    ttl: u8,
}

/// The outcome for a frame that is not to a UE of a PFCP session; `multi` for a multi-buffer
/// frame (a constant in each program that calls this).
#[inline(always)]
fn classify(ctx: &XdpContext, multi: bool) -> Outcome {
    let not_for_ue = Outcome::new(Verdict::Pass, Reason::NotForUe);
    let Some((generation, config)) = maps::active() else {
        return not_for_ue;
    };
    let Some(l2) = ethernet(ctx) else {
        return not_for_ue;
    };
    let l3 = l2.l3_off;
    let avail = whole_len(ctx, multi);
    let (session, inner) = if l2.ethertype == ETH_P_IPV4 {
        let Some(h) = view::<20>(ctx, l3) else {
            return not_for_ue;
        };
        if h[0] >> 4 != 4 {
            return not_for_ue;
        }
        let ue = [h[16], h[17], h[18], h[19]];
        let Some(s) = maps::session_by_ue_v4(generation, ue) else {
            return not_for_ue;
        };
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        let total = u16::from_be_bytes([h[2], h[3]]) as usize;
        if ihl < 20 || total < ihl || l3 + total > avail {
            return for_session(Outcome::new(Verdict::Drop, Reason::MalformedInner), s);
        }
        if flows::enabled() {
            count_flow(ctx, s.id, l3, 0);
        }
        let inner = Inner {
            l3_off: l3,
            len: total,
            v6: 0,
            ttl: h[8],
        };
        (s, inner)
    } else if l2.ethertype == ETH_P_IPV6 {
        let Some(h) = view::<40>(ctx, l3) else {
            return not_for_ue;
        };
        if h[0] >> 4 != 6 {
            return not_for_ue;
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[24..40]);
        let Some(s) = maps::session_by_ue_v6(generation, dst) else {
            return not_for_ue;
        };
        let total = 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
        if l3 + total > avail {
            return for_session(Outcome::new(Verdict::Drop, Reason::MalformedInner), s);
        }
        if flows::enabled() {
            count_flow(ctx, s.id, l3, 1);
        }
        let inner = Inner {
            l3_off: l3,
            len: total,
            v6: 1,
            ttl: h[7],
        };
        (s, inner)
    } else {
        return not_for_ue;
    };
    let out = if inner.ttl <= 1 {
        Outcome::new(Verdict::Pass, Reason::TtlExpired)
    } else {
        let to = Encap {
            teid: session.downlink_teid,
            qfi: session.qfi,
            gnb: &session.gnb,
            gnb_v6: session.flags & SESSION_GNB_V6 != 0,
            multi,
        };
        encapsulate(ctx, config, &to, &inner)
    };
    for_session(out, session)
}

/// A packet to a UE of a PFCP session: its downlink PDR's FAR decides.
#[inline(always)]
fn pfcp_downlink(
    ctx: &XdpContext,
    config: &Config,
    p: &PfcpDownlink,
    inner: &Inner,
    whole: usize,
    pdr: &mut PdrHit,
) -> Outcome {
    let out = if p.action != pdr_action::ENCAPSULATE {
        Outcome::new(Verdict::Drop, Reason::PdrDrop)
    } else if inner.ttl <= 1 {
        Outcome::new(Verdict::Pass, Reason::TtlExpired)
    } else {
        let to = Encap {
            teid: p.downlink_teid,
            qfi: p.qfi,
            gnb: &p.gnb,
            gnb_v6: p.flags & DOWNLINK_GNB_V6 != 0,
            // These programs are far enough inside the verifier's budget to decide at run
            // time.
            multi: is_multi(ctx, whole),
        };
        encapsulate(ctx, config, &to, inner)
    };
    for_pfcp(out, p, pdr)
}

/// `out` for session `p`; `pdr` names its PDR (whose counter the caller has counted).
#[inline(always)]
fn for_pfcp(mut out: Outcome, p: &PfcpDownlink, pdr: &mut PdrHit) -> Outcome {
    out.session_id = p.session;
    out.session_slot = p.counter;
    *pdr = PdrHit {
        id: p.pdr_id,
        slot: NONE,
        bytes: 0,
    };
    out
}

/// Where an encapsulated packet goes.
struct Encap<'a> {
    teid: u32,
    qfi: u32,
    gnb: &'a [u8; 16],
    gnb_v6: bool,
    /// A multi-buffer frame (see [`encapsulate`]).
    multi: bool,
}

/// Counts a packet to the UE of session `session` in its flow, before encapsulation. `l3` is
/// the offset of its (already checked) IP header, `v6` 1 for IPv6.
///
/// It reads the IP length from the packet again rather than taking the caller's: a
/// comparison here on the caller's value would narrow the caller's idea of it too and
/// multiply the states the verifier walks through the checksum loop.
#[inline(always)]
fn count_flow(ctx: &XdpContext, session: u32, l3: usize, v6: u32) {
    let mut key = FlowKey {
        session,
        ue: [0; 16],
        peer: [0; 16],
        ue_port: 0,
        peer_port: 0,
        protocol: 0,
        family: FLOW_FAMILY_V4,
        pad: [0; 2],
    };
    let total;
    // Where the ports are: none in any fragment (all fragments of a datagram share a flow, as
    // uplink) or behind IPv6 extension headers that do not all lie in the packet.
    let l4_off = if v6 == 0 {
        let Some(h) = view::<20>(ctx, l3) else {
            return;
        };
        key.ue[..4].copy_from_slice(&h[16..20]);
        key.peer[..4].copy_from_slice(&h[12..16]);
        key.protocol = h[9];
        total = u16::from_be_bytes([h[2], h[3]]) as usize;
        let fragment = (u16::from_be_bytes([h[6], h[7]]) & 0x3fff) != 0;
        (!fragment).then_some(((h[0] & 0x0f) as usize) * 4)
    } else {
        let Some(h) = view::<40>(ctx, l3) else {
            return;
        };
        key.ue.copy_from_slice(&h[24..40]);
        key.peer.copy_from_slice(&h[8..24]);
        key.family = FLOW_FAMILY_V6;
        total = 40 + u16::from_be_bytes([h[4], h[5]]) as usize;
        // The upper layer behind the extension headers, as uplink; the first Next Header if
        // they run past the packet.
        match ipv6_upper(ctx, l3, total, h[6]) {
            Some(up) => {
                key.protocol = up.proto;
                (!up.fragment).then_some(up.l4)
            }
            None => {
                key.protocol = h[6];
                None
            }
        }
    };
    if has_ports(key.protocol)
        && let Some(l4) = l4_off
        && l4 + 4 <= total
        && let Some(p) = view::<4>(ctx, l3 + l4)
    {
        key.peer_port = u16::from_be_bytes([p[0], p[1]]);
        key.ue_port = u16::from_be_bytes([p[2], p[3]]);
    }
    let hit = FlowHit {
        uplink: false,
        bytes: total as u64,
        rule: NONE,
    };
    flows::count(&key, &hit);
}

#[inline(always)]
fn for_session(mut out: Outcome, s: &SessionEntry) -> Outcome {
    out.session_id = s.id;
    out.session_slot = s.counter;
    out
}

/// Encapsulates the inner packet towards `s`; `s.multi` for a multi-buffer frame (whose
/// IPv6 UDP checksum is summed from copies).
#[inline(always)]
fn encapsulate(ctx: &XdpContext, config: &Config, s: &Encap<'_>, inner: &Inner) -> Outcome {
    let internal = Outcome::new(Verdict::Drop, Reason::Internal);
    let gnb_v6 = s.gnb_v6;
    let overhead = if gnb_v6 {
        ENCAP_OVERHEAD_V6
    } else {
        ENCAP_OVERHEAD_V4
    } as usize;
    if inner.len + overhead > config.n3_mtu as usize {
        return Outcome::new(Verdict::Drop, Reason::Oversize);
    }
    if config.flags & CONFIG_N3_FIB != 0 {
        let dst = [
            word(s.gnb, 0),
            word(s.gnb, 4),
            word(s.gnb, 8),
            word(s.gnb, 12),
        ];
        let query = fib::Query {
            v6: gnb_v6,
            dst: &dst,
            proto: 17,
            tot_len: (inner.len + overhead) as u16,
            ifindex: config.n3_ifindex,
        };
        if let Some(out) = fib::next_hop(ctx, &query) {
            return out;
        }
    }
    // Keep exactly the inner packet: drop Ethernet padding, then make room for the headers.
    let excess = whole_len(ctx, s.multi).saturating_sub(inner.l3_off + inner.len);
    if excess > 0 {
        // SAFETY: the helper is given the program's own context and a shrink within the frame.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(excess as i32)) } != 0 {
            return internal;
        }
    }
    let grow = 14 + overhead - inner.l3_off;
    // SAFETY: as above; every packet pointer after this is re-derived through `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return internal;
    }
    // The inner packet now starts at 14 + overhead.
    let inner_off = 14 + overhead;
    if decrement_ttl(ctx, inner_off, inner.v6).is_none() {
        return internal;
    }
    let gtp = gtp_header(s, inner.len);
    let udp_len = (8 + GTP_LEN + inner.len) as u16;
    let written = if gnb_v6 {
        write_v6(ctx, config, s, udp_len, &gtp, inner_off, inner.len)
    } else {
        write_v4(ctx, config, s, udp_len, &gtp)
    };
    if written.is_none() || push_tags(ctx, &config.n3_tags, config.n3_tag_count).is_none() {
        return internal;
    }
    // Read again, not kept from the test above: a value kept in a register would tell the
    // verifier's two walks (FIB or not) apart through everything in between, the checksum
    // loop included, and double them.
    // SAFETY: `&config.flags` is a valid, aligned reference into the live config map value;
    // any bits are a `u32`.
    let flags = unsafe { core::ptr::read_volatile(&config.flags) };
    if flags & CONFIG_N3_FIB != 0 {
        match fib::write_macs(ctx) {
            Some(true) => {}
            // Encapsulated, so that the kernel routes it to the gNB and resolves the neighbour.
            Some(false) => return Outcome::new(Verdict::Pass, Reason::NextHopUnresolved),
            None => return internal,
        }
    }
    // SAFETY: plain helper call with an interface index and no flags.
    let action = unsafe { bpf_redirect(config.n3_ifindex, 0) } as u32;
    if action != xdp_action::XDP_REDIRECT {
        return internal;
    }
    Outcome::new(Verdict::Redirect, Reason::Encapsulated)
}

#[inline(always)]
fn gtp_header(s: &Encap<'_>, inner_len: usize) -> [u8; GTP_LEN] {
    let len = ((GTP_LEN - 8) + inner_len) as u16;
    let l = len.to_be_bytes();
    let t = s.teid.to_be_bytes();
    [
        0x34, // version 1, PT 1, E 1
        GTP_TYPE_GPDU,
        l[0],
        l[1],
        t[0],
        t[1],
        t[2],
        t[3],
        0, // sequence number
        0,
        0, // N-PDU number
        EXT_PDU_SESSION_CONTAINER,
        1,    // container length: 4 bytes
        0x00, // PDU type 0: downlink
        (s.qfi & 0x3f) as u8,
        0, // no next extension header
    ]
}

#[inline(always)]
fn eth_header(config: &Config, ethertype: u16) -> [u8; 14] {
    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&config.n3_next_hop_mac);
    eth[6..12].copy_from_slice(&config.n3_mac);
    eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    eth
}

#[inline(always)]
fn udp_header(udp_len: u16, check: u16) -> [u8; 8] {
    let p = GTPU_PORT.to_be_bytes();
    let l = udp_len.to_be_bytes();
    let c = check.to_be_bytes();
    [p[0], p[1], p[0], p[1], l[0], l[1], c[0], c[1]]
}

/// Outer IPv4 (DF set, TTL 64, header checksum) + UDP with a zero checksum, which IPv4 allows.
#[inline(always)]
fn write_v4(
    ctx: &XdpContext,
    config: &Config,
    s: &Encap<'_>,
    udp_len: u16,
    gtp: &[u8; GTP_LEN],
) -> Option<()> {
    let total = (udp_len + 20).to_be_bytes();
    let mut ip = [
        0x45, 0, total[0], total[1], 0, 0, 0x40, 0, OUTER_TTL, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[12..16].copy_from_slice(&config.n3_v4);
    ip[16..20].copy_from_slice(&s.gnb[..4]);
    let check = !fold(sum_be(&ip));
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    write_at(ctx, 0, eth_header(config, ETH_P_IPV4))?;
    write_at(ctx, 14, ip)?;
    write_at(ctx, 34, udp_header(udp_len, 0))?;
    write_at(ctx, 42, *gtp)
}

/// Outer IPv6 (hop limit 64) + UDP with the mandatory checksum over pseudo-header, UDP
/// header, GTP-U header and inner packet.
#[inline(always)]
fn write_v6(
    ctx: &XdpContext,
    config: &Config,
    s: &Encap<'_>,
    udp_len: u16,
    gtp: &[u8; GTP_LEN],
    inner_off: usize,
    inner_len: usize,
) -> Option<()> {
    let l = udp_len.to_be_bytes();
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4] = l[0];
    ip[5] = l[1];
    ip[6] = 17;
    ip[7] = OUTER_TTL;
    ip[8..24].copy_from_slice(&config.n3_v6);
    ip[24..40].copy_from_slice(s.gnb);
    // Pseudo-header: addresses, UDP length, next header; then UDP header (checksum 0) and GTP.
    let mut addrs = [0u8; 32];
    addrs.copy_from_slice(&ip[8..40]);
    let mut sum = sum_be(&addrs) + udp_len as u32 + 17;
    sum += sum_be(&udp_header(udp_len, 0)) + sum_be(gtp);
    write_at(ctx, 0, eth_header(config, ETH_P_IPV6))?;
    write_at(ctx, 14, ip)?;
    write_at(ctx, 62, *gtp)?;
    sum += sum_packet(ctx, inner_off, inner_len, s.multi)? as u32;
    let mut check = !fold(sum);
    if check == 0 {
        check = 0xffff;
    }
    write_at(ctx, 54, udp_header(udp_len, check))
}
