//! The fast path of PFCP sessions: what an SMF's PDRs and FARs decide per packet.
//!
//! Uplink, a G-PDU whose TEID is in the PFCP range is handed by `mecgw_uplink` to
//! `mecgw_uplink_pfcp` with a tail call (a program of its own: the verifier checks it apart
//! from the tables path, each well inside its limits), which looks the TEID up once in
//! `PFCP_TUNNELS` (keyed by the local TEID); its matches, in PDR precedence order, say what
//! happens (a re-tunnel goes on to `mecgw_retunnel`, a third program, by another tail call): remove the
//! outer header and redirect to the local services (LOCAL), pass unchanged towards the core
//! (FORWARD), rewrite the tunnel header to another GTP-U peer and redirect by the kernel's FIB
//! (RETUNNEL: to a remote PSA, or, for a tunnel from the core side, back to the gNB), or drop.
//! A G-PDU no PDR matches is dropped, as a UPF does. Downlink from the local services, a
//! packet to a UE of a PFCP session is encapsulated as its downlink PDR's FAR says
//! (`downlink.rs` does the encapsulation).
//!
//! Entries are replaced whole by userspace (hash and LPM map updates are RCU-safe), so a
//! packet sees a session entirely before or entirely after a change.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_redirect,
    macros::{map, xdp},
    maps::{PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use mecgw_ebpf::{
    Config, DIR_DOWNLINK, DIR_UPLINK, MAX_TUNNEL_PDRS, MAX_TUNNEL_TARGETS, NONE, PDR_FAMILY_V4,
    PDR_FAMILY_V6, PDR_MATCH_PROTO, PDR_MATCH_QFI, PDR_MATCH_REMOTE, PDR_MATCH_REMOTE_PORTS,
    PDR_MATCH_UE_PORTS, PdrMatch, PfcpTunnel, Reason, TARGET_V6, TUNNEL_CHECK_UE,
    TUNNEL_FROM_ACCESS, TUNNEL_HAS_UE_V4, TUNNEL_HAS_UE_V6, TunnelTarget, Verdict, pdr_action,
};

use super::{
    checksum::fold,
    counters::{Outcome, PdrHit, record_pdr},
    fib::{self, Answer},
    flows, maps,
    parse::{
        self, ETH_P_IPV4, ETH_P_IPV6, Gpdu, IpInfo, be16_at, ethernet, frame_len, ipv6_upper, view,
        word, write_at,
    },
    uplink::{by_default, count_flow, decapsulate},
};

/// `mecgw_uplink_pfcp` at index 0, set by userspace at load.
#[map(name = "UPLINK_PFCP")]
static UPLINK_PFCP: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Hands the frame to `mecgw_uplink_pfcp`. Returns only if the tail call failed (the program
/// array is empty: never, once userspace has loaded the programs).
#[inline(always)]
pub fn hand_over(ctx: &XdpContext) {
    // SAFETY: a tail call with the program's own context; on failure control returns here.
    unsafe {
        UPLINK_PFCP.tail_call(ctx, 0);
    }
}

/// `mecgw_retunnel` at index 0, set by userspace at load.
#[map(name = "RETUNNEL")]
static RETUNNEL: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What `mecgw_uplink_pfcp` hands `mecgw_retunnel` with the frame: where to, and what to
/// count. Per CPU: the tail call runs on the same CPU, with nothing in between.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RetunnelJob {
    target: TunnelTarget,
    session_id: u32,
    session_slot: u32,
    pdr_id: u32,
    pdr_slot: u32,
    pdr_bytes: u64,
    len: u64,
    dir: u32,
    pad: u32,
}

#[map(name = "RETUNNEL_JOB")]
static RETUNNEL_JOB: PerCpuArray<RetunnelJob> = PerCpuArray::with_max_entries(1, 0);

/// What the classifier decided: an outcome to count, or a re-tunnel for `mecgw_retunnel`.
enum Decided {
    Done(Outcome, PdrHit),
    Retunnel(RetunnelJob),
}

/// The PFCP sessions' G-PDUs (a TEID of the PFCP range; from the access side, or from the
/// core side for a tunnel whose PDRs come from a remote PSA).
#[xdp(frags)]
pub fn mecgw_uplink_pfcp(ctx: XdpContext) -> u32 {
    let len = frame_len(&ctx) as u64;
    match classify(&ctx, len) {
        Decided::Done(outcome, pdr) => record_pdr(&outcome, &pdr, len, DIR_UPLINK),
        Decided::Retunnel(job) => {
            if let Some(slot) = RETUNNEL_JOB.get_ptr_mut(0) {
                // SAFETY: this CPU's slot of the map; the tail call below reads it on this CPU
                // before anything else runs here.
                unsafe { *slot = job };
                // SAFETY: a tail call with the program's own context; on failure control
                // returns here.
                unsafe { RETUNNEL.tail_call(&ctx, 0) };
            }
            let pdr = PdrHit {
                id: job.pdr_id,
                slot: job.pdr_slot,
                bytes: job.pdr_bytes,
            };
            let mut out = Outcome::new(Verdict::Drop, Reason::Internal);
            out.session_id = job.session_id;
            out.session_slot = job.session_slot;
            record_pdr(&out, &pdr, len, job.dir)
        }
    }
}

/// Rewrites and redirects the frame `mecgw_uplink_pfcp` handed over, and counts it. A program
/// of its own (a tail call): its header rewrites need a stack frame of their own.
#[xdp(frags)]
pub fn mecgw_retunnel(ctx: XdpContext) -> u32 {
    let Some(job) = RETUNNEL_JOB.get(0) else {
        return xdp_action::XDP_DROP;
    };
    let job = *job;
    let mut out = match maps::active() {
        Some((_, config)) => retunnel(&ctx, config, &job.target),
        None => Outcome::new(Verdict::Drop, Reason::Internal),
    };
    out.session_id = job.session_id;
    out.session_slot = job.session_slot;
    let pdr = PdrHit {
        id: job.pdr_id,
        slot: job.pdr_slot,
        bytes: job.pdr_bytes,
    };
    record_pdr(&out, &pdr, job.len, job.dir)
}

#[inline(always)]
fn classify(ctx: &XdpContext, len: u64) -> Decided {
    let Some((_, config)) = maps::active() else {
        return Decided::Done(Outcome::new(Verdict::Pass, Reason::NotGtp), PdrHit::NONE);
    };
    let pdu = match parse::gpdu(ctx, len as usize) {
        Ok(p) => p,
        Err(r) if r.passes_unjudged() => {
            return Decided::Done(Outcome::new(Verdict::Pass, r), PdrHit::NONE);
        }
        Err(r) => return Decided::Done(by_default(config.malformed, r), PdrHit::NONE),
    };
    let Some(t) = maps::pfcp_tunnel(pdu.teid) else {
        return Decided::Done(
            by_default(config.unknown_teid, Reason::UnknownTeid),
            PdrHit::NONE,
        );
    };
    let from_access = t.flags & TUNNEL_FROM_ACCESS != 0;
    let decided = tunnel(ctx, config, t, &pdu, len);
    // A flow is the UE's traffic: G-PDUs from the access side whose source is the UE.
    if flows::enabled() && from_access {
        let spoofed = matches!(&decided, Decided::Done(o, _) if o.reason == Reason::SpoofedSource);
        if !spoofed {
            count_flow(t.session, &pdu, NONE);
        }
    }
    match decided {
        Decided::Done(mut out, pdr) => {
            out.session_id = t.session;
            out.session_slot = t.counter;
            Decided::Done(out, pdr)
        }
        retunnel => retunnel,
    }
}

/// Hop limit of a re-tunnelled packet's new outer header.
const OUTER_TTL: u8 = 64;

/// What happens to a G-PDU of PFCP tunnel `t` (of `len` bytes), and the PDR that decided.
#[inline(always)]
fn tunnel(ctx: &XdpContext, config: &Config, t: &PfcpTunnel, pdu: &Gpdu, len: u64) -> Decided {
    let from_access = t.flags & TUNNEL_FROM_ACCESS != 0;
    if t.flags & TUNNEL_CHECK_UE != 0 && !source_is_ue(t, &pdu.inner) {
        return Decided::Done(
            by_default(config.spoofed_source, Reason::SpoofedSource),
            PdrHit::NONE,
        );
    }
    // Find first, act once: acting inside the loop would have the verifier walk every
    // action once per match slot.
    let Some(m) = find(t, pdu, from_access) else {
        return Decided::Done(Outcome::new(Verdict::Drop, Reason::NoPdr), PdrHit::NONE);
    };
    let hit = PdrHit {
        id: m.pdr_id,
        slot: m.counter,
        bytes: pdu.inner_len as u64,
    };
    if m.action == pdr_action::RETUNNEL {
        let target = m.target as usize;
        if target >= MAX_TUNNEL_TARGETS {
            return Decided::Done(Outcome::new(Verdict::Drop, Reason::Internal), hit);
        }
        return Decided::Retunnel(RetunnelJob {
            target: t.targets[target],
            session_id: t.session,
            session_slot: t.counter,
            pdr_id: hit.id,
            pdr_slot: hit.slot,
            pdr_bytes: hit.bytes,
            len,
            dir: if from_access {
                DIR_UPLINK
            } else {
                DIR_DOWNLINK
            },
            pad: 0,
        });
    }
    let out = match m.action {
        pdr_action::DROP => Outcome::new(Verdict::Drop, Reason::PdrDrop),
        pdr_action::LOCAL => decapsulate(ctx, config, pdu, Reason::PdrLocal),
        _ => Outcome::new(Verdict::Pass, Reason::PdrForward),
    };
    Decided::Done(out, hit)
}

/// The first of `t`'s matches that `pdu` matches, in the order userspace compiled.
#[inline(always)]
fn find<'a>(t: &'a PfcpTunnel, pdu: &Gpdu, from_access: bool) -> Option<&'a PdrMatch> {
    let count = t.pdr_count as usize;
    for i in 0..MAX_TUNNEL_PDRS {
        if i >= count {
            break;
        }
        let m = &t.pdrs[i];
        if matches(m, pdu, from_access) {
            return Some(m);
        }
    }
    None
}

#[inline(always)]
fn in_prefix(addr: &[u32; 4], prefix: &[u32; 4], mask: &[u32; 4], v6: bool) -> bool {
    if (addr[0] & mask[0]) != prefix[0] {
        return false;
    }
    !v6 || ((addr[1] & mask[1]) == prefix[1]
        && (addr[2] & mask[2]) == prefix[2]
        && (addr[3] & mask[3]) == prefix[3])
}

#[inline(always)]
fn source_is_ue(t: &PfcpTunnel, ip: &IpInfo) -> bool {
    if ip.v6 == 0 {
        t.flags & TUNNEL_HAS_UE_V4 != 0 && ip.src[0] == t.ue_v4
    } else {
        t.flags & TUNNEL_HAS_UE_V6 != 0 && in_prefix(&ip.src, &t.ue_v6, &t.ue_v6_mask, true)
    }
}

/// Whether `pdu` matches `m`. The remote side is the inner destination of a tunnel from the
/// access side (uplink) and the inner source of one from the core side (downlink).
#[inline(always)]
fn matches(m: &PdrMatch, pdu: &Gpdu, from_access: bool) -> bool {
    let ip = &pdu.inner;
    let f = m.flags;
    let v6 = ip.v6 != 0;
    if (f & PDR_FAMILY_V4 != 0 && v6) || (f & PDR_FAMILY_V6 != 0 && !v6) {
        return false;
    }
    if f & PDR_MATCH_QFI != 0 && m.qfi != pdu.qfi {
        return false;
    }
    if f & PDR_MATCH_PROTO != 0 && m.protocol != ip.proto as u32 {
        return false;
    }
    let (remote, remote_port, ue_port) = if from_access {
        (&ip.dst, ip.dport, ip.sport)
    } else {
        (&ip.src, ip.sport, ip.dport)
    };
    if f & PDR_MATCH_REMOTE != 0 && !in_prefix(remote, &m.remote, &m.remote_mask, v6) {
        return false;
    }
    if f & (PDR_MATCH_REMOTE_PORTS | PDR_MATCH_UE_PORTS) != 0 {
        if ip.has_ports == 0 {
            return false;
        }
        if f & PDR_MATCH_REMOTE_PORTS != 0
            && !(m.remote_ports.lo <= remote_port && remote_port <= m.remote_ports.hi)
        {
            return false;
        }
        if f & PDR_MATCH_UE_PORTS != 0 && !(m.ue_ports.lo <= ue_port && ue_port <= m.ue_ports.hi) {
            return false;
        }
    }
    true
}

/// Rewrites the tunnel header of the G-PDU in the frame towards `target` (our N3 address as
/// the outer source, the target's address and TEID, a fresh hop limit; the inner packet and
/// GTP-U extension headers unchanged) and redirects it where the kernel's FIB routes the
/// target, with the next hop's MAC. The outer family stays (userspace never installs a
/// target of the other family). Nothing is written unless the route and neighbour are known:
/// without a neighbour entry the frame is dropped and counted (the daemon probes every
/// target with a GTP-U Echo Request, which makes the kernel resolve it).
///
#[inline(always)]
fn retunnel(ctx: &XdpContext, config: &Config, target: &TunnelTarget) -> Outcome {
    let internal = Outcome::new(Verdict::Drop, Reason::Internal);
    let Some(l2) = ethernet(ctx) else {
        return internal;
    };
    let l3 = l2.l3_off;
    let v6 = l2.ethertype == ETH_P_IPV6;
    if !v6 && l2.ethertype != ETH_P_IPV4 {
        return internal;
    }
    // The outer header is rewritten in place: the target must be of the packet's family.
    if v6 != (target.flags & TARGET_V6 != 0) {
        return Outcome::new(Verdict::Drop, Reason::NoRoute);
    }
    let udp_off;
    let total;
    if v6 {
        let Some(h) = view::<40>(ctx, l3) else {
            return internal;
        };
        total = u16::from_be_bytes([h[4], h[5]]) + 40;
        // Behind the extension headers, as the uplink program found it.
        let Some(up) = ipv6_upper(ctx, l3, total as usize, h[6]) else {
            return internal;
        };
        // Opaque to LLVM, so that every read at it keeps its own bounds check (the verifier
        // cannot follow one LLVM derives from another with this variable offset).
        udp_off = core::hint::black_box(l3 + up.l4);
    } else {
        let Some(h) = view::<20>(ctx, l3) else {
            return internal;
        };
        total = u16::from_be_bytes([h[2], h[3]]);
        udp_off = l3 + ((h[0] & 0x0f) as usize) * 4;
    }
    let query = fib::Query {
        v6,
        dst: &target.addr,
        proto: 17,
        tot_len: total,
        ifindex: config.n3_ifindex,
    };
    let Some((fib, answer)) = fib::lookup(ctx, &query) else {
        return internal;
    };
    match answer {
        // Larger than the route's MTU: not fragmented here (GTP-U peers agree on MTUs).
        Answer::Oversize => return Outcome::new(Verdict::Drop, Reason::Oversize),
        Answer::NoNeighbour => return Outcome::new(Verdict::Drop, Reason::NoNeighbour),
        Answer::NoRoute => return Outcome::new(Verdict::Drop, Reason::NoRoute),
        Answer::Forward => {}
    }
    let fib = &fib.params;
    let written = if v6 {
        rewrite_v6(ctx, config, target, l3, udp_off)
    } else {
        rewrite_v4(ctx, config, target, l3, udp_off)
    };
    let mut eth = [0u8; 12];
    eth[..6].copy_from_slice(&fib.dmac);
    eth[6..].copy_from_slice(&fib.smac);
    if written.is_none() || write_at(ctx, 0, eth).is_none() {
        return internal;
    }
    // SAFETY: plain helper call with an interface index and no flags.
    let action = unsafe { bpf_redirect(fib.ifindex, 0) } as u32;
    if action != xdp_action::XDP_REDIRECT {
        return internal;
    }
    Outcome::new(Verdict::Redirect, Reason::PdrRetunnel)
}

/// N3's IPv4 address as the native-order word of its bytes, in one load.
#[inline(always)]
fn n3_v4_word(config: &Config) -> u32 {
    // SAFETY: `n3_v4` is 4 bytes at a 4-aligned offset of `Config` (asserted in the shared
    // crate) inside a map value, which the kernel aligns to 8 bytes; any bits are a `u32`.
    unsafe { core::ptr::read(config.n3_v4.as_ptr() as *const u32) }
}

/// N3's IPv6 address as four native-order words of its bytes, in four loads.
#[inline(always)]
fn n3_v6_words(config: &Config) -> [u32; 4] {
    // SAFETY: as in `n3_v4_word`: 16 bytes at a 4-aligned offset of an 8-aligned map value.
    unsafe { core::ptr::read(config.n3_v6.as_ptr() as *const [u32; 4]) }
}

/// One's-complement sum, as a big-endian 16-bit value, of bytes read as native-order words
/// (RFC 1071: the sum of byte-swapped words is the byte-swapped sum).
#[inline(always)]
fn sum_words<const N: usize>(words: &[u32; N]) -> u32 {
    let mut s: u64 = 0;
    let mut i = 0;
    while i < N {
        s += words[i] as u64;
        i += 1;
    }
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    fold(s as u32).swap_bytes() as u32
}

/// The checksum `check` after data summing to `old` becomes data summing to `new` (RFC 1624
/// eqn. 3, with sums as [`sum_words`] gives them).
#[inline(always)]
fn update_check(check: u16, old: u32, new: u32) -> u16 {
    !fold((!check) as u32 + (!fold(old)) as u32 + fold(new) as u32)
}

/// Four native-order words of the 16 packet bytes at `off`.
#[inline(always)]
fn words_at(ctx: &XdpContext, off: usize) -> Option<[u32; 4]> {
    let b = view::<16>(ctx, off)?;
    Some([word(b, 0), word(b, 4), word(b, 8), word(b, 12)])
}

/// Writes four native-order words as 16 packet bytes at `off`.
#[inline(always)]
fn write_words(ctx: &XdpContext, off: usize, w: &[u32; 4]) -> Option<()> {
    write_at(ctx, off, w[0].to_ne_bytes())?;
    write_at(ctx, off + 4, w[1].to_ne_bytes())?;
    write_at(ctx, off + 8, w[2].to_ne_bytes())?;
    write_at(ctx, off + 12, w[3].to_ne_bytes())
}

/// New outer IPv4 source, destination and TTL, and TEID; the header checksum updated, the
/// UDP checksum zeroed (which IPv4 allows).
#[inline(always)]
fn rewrite_v4(
    ctx: &XdpContext,
    config: &Config,
    target: &TunnelTarget,
    l3: usize,
    udp_off: usize,
) -> Option<()> {
    let old = view::<12>(ctx, l3 + 8)?;
    // TTL and protocol, then the two addresses.
    let old_sum = sum_words(&[
        u32::from_ne_bytes([old[0], old[1], 0, 0]),
        word(old, 4),
        word(old, 8),
    ]);
    let src = n3_v4_word(config);
    let new_sum = sum_words(&[
        u32::from_ne_bytes([OUTER_TTL, 17, 0, 0]),
        src,
        target.addr[0],
    ]);
    let check = be16_at(ctx, l3 + 10)?;
    let check = update_check(check, old_sum, new_sum);
    write_at(ctx, l3 + 8, [OUTER_TTL, 17])?;
    write_at(ctx, l3 + 10, check.to_be_bytes())?;
    write_at(ctx, l3 + 12, src.to_ne_bytes())?;
    write_at(ctx, l3 + 16, target.addr[0].to_ne_bytes())?;
    write_at(ctx, udp_off + 6, [0u8, 0])?;
    write_at(ctx, udp_off + 12, target.teid.to_be_bytes())
}

/// New outer IPv6 source, destination and hop limit, and TEID; the UDP checksum (which covers
/// the addresses through the pseudo-header, and the TEID) updated.
#[inline(always)]
fn rewrite_v6(
    ctx: &XdpContext,
    config: &Config,
    target: &TunnelTarget,
    l3: usize,
    udp_off: usize,
) -> Option<()> {
    let old_src = words_at(ctx, l3 + 8)?;
    let old_dst = words_at(ctx, l3 + 24)?;
    let old_teid = word(view::<4>(ctx, udp_off + 12)?, 0);
    let old_sum = sum_words(&old_src) + sum_words(&old_dst) + sum_words(&[old_teid]);
    let src = n3_v6_words(config);
    let new_teid = u32::from_ne_bytes(target.teid.to_be_bytes());
    let new_sum = sum_words(&src) + sum_words(&target.addr) + sum_words(&[new_teid]);
    let check = be16_at(ctx, udp_off + 6)?;
    // A zero checksum (a tunnel sender that does not compute one, RFC 6936) stays zero:
    // there is nothing to update, and computing one would mean reading the whole payload.
    let check = if check == 0 {
        0
    } else {
        match update_check(check, old_sum, new_sum) {
            0 => 0xffff,
            c => c,
        }
    };
    write_words(ctx, l3 + 8, &src)?;
    write_words(ctx, l3 + 24, &target.addr)?;
    let next_header = view::<2>(ctx, l3 + 6)?[0];
    write_at(ctx, l3 + 6, [next_header, OUTER_TTL])?;
    write_at(ctx, udp_off + 6, check.to_be_bytes())?;
    write_at(ctx, udp_off + 12, target.teid.to_be_bytes())
}
