//! `mecgw_uplink`, attached to the N3 interface: classify G-PDUs from gNBs.
//!
//! Order of judgement: not GTP-U / signalling → pass; malformed → the configured default;
//! unknown TEID → default; inner source not the session's UE → default; then the traffic
//! rules (best candidate that matches wins; none → passthrough). LOCAL decapsulates, writes
//! the next-hop Ethernet header (a fixed MAC, or the kernel's FIB's), decrements the TTL and
//! redirects to the local interface.
//!
//! With flow accounting on, the flow's index entry is found before the source check: a later
//! packet of a flow already classified under these tables takes the rule kept there (the
//! flow verdict cache, `flows.rs`) instead of the source check and the rule walk.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use mecgw_ebpf::{
    CONFIG_LOCAL_FIB, CONFIG_PFCP, Config, DIR_UPLINK, FLOW_FAMILY_V4, FLOW_FAMILY_V6, FlowKey,
    MATCH_PORTS, MATCH_PROTO, MATCH_QFI, MATCH_SRC, MATCH_TEID, MAX_CANDIDATES, MAX_PORT_RANGES,
    MAX_SRC_PREFIXES, Reason, RuleEntry, SESSION_HAS_UE_V4, SESSION_HAS_UE_V6, SessionEntry,
    Verdict, action, disposition,
};

use super::{
    checksum::decrement_ttl,
    counters::{Outcome, record},
    fib,
    flows::{self, FlowHit},
    maps,
    parse::{self, ETH_P_IPV4, ETH_P_IPV6, Gpdu, IpInfo, frame_len, word, write_at},
    pfcp,
};

#[xdp(frags)]
pub fn mecgw_uplink(ctx: XdpContext) -> u32 {
    let whole = frame_len(&ctx);
    let outcome = classify(&ctx, whole);
    record(&outcome, whole as u64, DIR_UPLINK)
}

#[inline(always)]
pub(super) fn by_default(d: u32, reason: Reason) -> Outcome {
    let verdict = if d == disposition::DROP {
        Verdict::Drop
    } else {
        Verdict::Pass
    };
    Outcome::new(verdict, reason)
}

#[inline(always)]
fn classify(ctx: &XdpContext, whole: usize) -> Outcome {
    // What is not GTP-U (most of what reaches N3 besides G-PDUs) passes before any map is
    // read: it needs nothing from the tables.
    let parsed = parse::gpdu(ctx, whole);
    if let Err(r) = &parsed
        && r.passes_unjudged()
    {
        return Outcome::new(Verdict::Pass, *r);
    }
    let Some((generation, config)) = maps::active() else {
        return Outcome::new(Verdict::Pass, Reason::NotGtp);
    };
    let pdu = match parsed {
        Ok(p) => p,
        Err(r) => return by_default(config.malformed, r),
    };
    if config.flags & CONFIG_PFCP != 0 && pdu.teid >= config.pfcp_teid_min {
        pfcp::hand_over(ctx);
        // Only if the PFCP program is missing (never after a complete load).
        return Outcome::new(Verdict::Drop, Reason::Internal);
    }
    let Some(session) = maps::session_by_teid(generation, pdu.teid) else {
        return by_default(config.unknown_teid, Reason::UnknownTeid);
    };
    if !flows::enabled() {
        let (rule, _) = match classify_session(generation, config, session, &pdu) {
            Ok(found) => found,
            Err(spoofed) => return of_session(spoofed, session),
        };
        return judge_session(ctx, config, session, rule, &pdu);
    }
    // With flow accounting, the flow's index entry is found first: it may hold the flow's
    // classification under these tables, and it is where the packet is counted.
    let key = flow_key(session.id, &pdu);
    let entry = flows::find(&key);
    let tag = flows::verdict_tag(config.tables_serial, pdu.qfi, pdu.inner.has_ports);
    let (rule, verdict) = match flows::cached(entry, tag) {
        Some(flows::NO_RULE) => (None, 0),
        Some(index) => match maps::rule(generation, index) {
            Some(rule) => (Some(rule), 0),
            // Never: the index came from this install's candidate lists.
            None => return Outcome::new(Verdict::Drop, Reason::Internal),
        },
        // A spoofed source is not the UE's traffic: no flow (the reason and session
        // counters have it), and nothing cached, so it is checked on every packet.
        None => match classify_session(generation, config, session, &pdu) {
            Ok((rule, index)) => (rule, flows::to_keep(tag, index)),
            Err(spoofed) => return of_session(spoofed, session),
        },
    };
    let out = judge_session(ctx, config, session, rule, &pdu);
    let hit = FlowHit {
        uplink: true,
        bytes: pdu.inner_len as u64,
        rule: out.rule_id,
    };
    flows::count_found(entry, &key, &hit, verdict);
    out
}

/// The flow a G-PDU of `session` belongs to.
#[inline(always)]
fn flow_key(session: u32, pdu: &Gpdu) -> FlowKey {
    let ip = &pdu.inner;
    FlowKey {
        session,
        ue: bytes(&ip.src),
        peer: bytes(&ip.dst),
        ue_port: ip.sport,
        peer_port: ip.dport,
        protocol: ip.proto,
        family: if ip.v6 == 0 {
            FLOW_FAMILY_V4
        } else {
            FLOW_FAMILY_V6
        },
        pad: [0; 2],
    }
}

/// Counts a G-PDU of `session` whose classification was not cached against its flow (the
/// PFCP program's uplink).
#[inline(always)]
pub(super) fn count_flow(session: u32, pdu: &Gpdu, rule: u32) {
    let hit = FlowHit {
        uplink: true,
        bytes: pdu.inner_len as u64,
        rule,
    };
    flows::count(&flow_key(session, pdu), &hit);
}

/// Classifies a G-PDU of `session`: the rule that matches (`None`: passthrough) and its
/// index in the rule array (or [`flows::NO_RULE`]), or the outcome of a spoofed source.
#[inline(always)]
fn classify_session(
    generation: u32,
    config: &Config,
    session: &SessionEntry,
    pdu: &Gpdu,
) -> Result<(Option<&'static RuleEntry>, u32), Outcome> {
    if !source_is_ue(session, &pdu.inner) {
        return Err(by_default(config.spoofed_source, Reason::SpoofedSource));
    }
    Ok(match find_rule(generation, pdu) {
        Some((index, rule)) => (Some(rule), index),
        None => (None, flows::NO_RULE),
    })
}

/// Does what `rule` (`None`: no rule matched) says with a G-PDU of `session`.
#[inline(always)]
fn judge_session(
    ctx: &XdpContext,
    config: &Config,
    session: &SessionEntry,
    rule: Option<&RuleEntry>,
    pdu: &Gpdu,
) -> Outcome {
    let out = match rule {
        None => Outcome::new(Verdict::Pass, Reason::NoRule),
        Some(rule) => {
            let mut out = match rule.action {
                action::DROP => Outcome::new(Verdict::Drop, Reason::RuleDrop),
                action::LOCAL => decapsulate(ctx, config, pdu, Reason::RuleLocal),
                _ => Outcome::new(Verdict::Pass, Reason::RulePassthrough),
            };
            out.rule_id = rule.id;
            out.rule_slot = rule.counter;
            out
        }
    };
    of_session(out, session)
}

/// `out`, counted against `session`.
#[inline(always)]
fn of_session(mut out: Outcome, session: &SessionEntry) -> Outcome {
    out.session_id = session.id;
    out.session_slot = session.counter;
    out
}

#[inline(always)]
fn words(b: &[u8; 16]) -> [u32; 4] {
    [word(b, 0), word(b, 4), word(b, 8), word(b, 12)]
}

#[inline(always)]
fn bytes(w: &[u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

#[inline(always)]
fn in_prefix_words(addr: &[u32; 4], prefix: &[u32; 4], mask: &[u32; 4]) -> bool {
    (addr[0] & mask[0]) == prefix[0]
        && (addr[1] & mask[1]) == prefix[1]
        && (addr[2] & mask[2]) == prefix[2]
        && (addr[3] & mask[3]) == prefix[3]
}

#[inline(always)]
fn in_prefix_v6(addr: &[u32; 4], prefix: &[u8; 16], mask: &[u8; 16]) -> bool {
    let p = words(prefix);
    let m = words(mask);
    (addr[0] & m[0]) == p[0]
        && (addr[1] & m[1]) == p[1]
        && (addr[2] & m[2]) == p[2]
        && (addr[3] & m[3]) == p[3]
}

#[inline(always)]
fn v4_word(b: &[u8]) -> u32 {
    word(b, 0)
}

#[inline(always)]
fn source_is_ue(s: &SessionEntry, ip: &IpInfo) -> bool {
    if ip.v6 == 0 {
        s.flags & SESSION_HAS_UE_V4 != 0 && ip.src[0] == v4_word(&s.ue_v4)
    } else {
        s.flags & SESSION_HAS_UE_V6 != 0 && in_prefix_v6(&ip.src, &s.ue_v6, &s.ue_v6_mask)
    }
}

/// The first candidate for the inner destination that matches, in the order userspace
/// compiled (lowest priority value, then lowest rule id), with its index in the rule array.
#[inline(always)]
fn find_rule(generation: u32, pdu: &Gpdu) -> Option<(u32, &'static RuleEntry)> {
    let ip = &pdu.inner;
    let candidates = if ip.v6 == 0 {
        maps::candidates_v4(generation, ip.dst[0].to_ne_bytes())?
    } else {
        maps::candidates_v6(generation, bytes(&ip.dst))?
    };
    let src = &ip.src;
    let count = candidates.count as usize;
    for i in 0..MAX_CANDIDATES {
        if i >= count {
            break;
        }
        let index = candidates.rules[i];
        if let Some(rule) = maps::rule(generation, index)
            && rule_matches(rule, pdu, src)
        {
            return Some((index, rule));
        }
    }
    None
}

#[inline(always)]
fn rule_matches(r: &RuleEntry, pdu: &Gpdu, src: &[u32; 4]) -> bool {
    let ip = &pdu.inner;
    let f = r.match_flags;
    if f & MATCH_TEID != 0 && r.teid != pdu.teid {
        return false;
    }
    if f & MATCH_QFI != 0 && r.qfi != pdu.qfi {
        return false;
    }
    if f & MATCH_PROTO != 0 {
        let p = ip.proto as usize;
        if (r.protocols[(p >> 5) & 7] >> (p & 31)) & 1 == 0 {
            return false;
        }
    }
    if f & MATCH_PORTS != 0 {
        if ip.has_ports == 0 {
            return false;
        }
        let mut hit = false;
        for i in 0..MAX_PORT_RANGES {
            if i as u32 >= r.port_count {
                break;
            }
            let range = r.ports[i];
            if range.lo <= ip.dport && ip.dport <= range.hi {
                hit = true;
                break;
            }
        }
        if !hit {
            return false;
        }
    }
    if f & MATCH_SRC != 0 {
        let mut hit = false;
        if ip.v6 == 0 {
            for i in 0..MAX_SRC_PREFIXES {
                if i as u32 >= r.src_v4_count {
                    break;
                }
                let p = &r.src_v4[i];
                if src[0] & p.mask == p.addr {
                    hit = true;
                    break;
                }
            }
        } else {
            for i in 0..MAX_SRC_PREFIXES {
                if i as u32 >= r.src_v6_count {
                    break;
                }
                let p = &r.src_v6[i];
                if in_prefix_words(src, &p.addr, &p.mask) {
                    hit = true;
                    break;
                }
            }
        }
        if !hit {
            return false;
        }
    }
    true
}

/// What LOCAL does (a rule's or a PDR's, counted under `reason`): strips everything before
/// the inner packet (and any bytes after it), writes the next-hop Ethernet header, decrements
/// the TTL or hop limit, and redirects to the local interface. A packet whose TTL or hop
/// limit would expire is passed to the kernel unchanged (`ttl_expired`), which answers it.
/// With the next hop from the FIB ([`CONFIG_LOCAL_FIB`]) the MACs are the route's to the inner
/// destination; without a route there (or out of another interface) the frame is dropped
/// untouched, and without a resolved neighbour the decapsulated packet is passed to the
/// kernel with its TTL as received and the frame's own MACs, so that the kernel forwards it
/// and resolves the neighbour.
#[inline(always)]
pub(super) fn decapsulate(
    ctx: &XdpContext,
    config: &Config,
    pdu: &Gpdu,
    reason: Reason,
) -> Outcome {
    if pdu.inner.ttl <= 1 {
        return Outcome::new(Verdict::Pass, Reason::TtlExpired);
    }
    let internal = Outcome::new(Verdict::Drop, Reason::Internal);
    let by_fib = config.flags & CONFIG_LOCAL_FIB != 0;
    if by_fib {
        let query = fib::Query {
            v6: pdu.inner.v6 != 0,
            dst: &pdu.inner.dst,
            proto: pdu.inner.proto,
            tot_len: pdu.inner_len as u16,
            ifindex: config.local_ifindex,
        };
        if let Some(out) = fib::next_hop(ctx, &query) {
            return out;
        }
    }
    let wanted = pdu.inner_off + pdu.inner_len;
    let excess = pdu.frame_len.saturating_sub(wanted);
    if excess > 0 {
        // SAFETY: the helper is given the program's own context and a shrink within the frame.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(excess as i32)) } != 0 {
            return internal;
        }
    }
    let strip = pdu.inner_off - 14;
    // SAFETY: as above; after this call every packet pointer is re-derived through `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return internal;
    }
    let ethertype = if pdu.inner.v6 == 0 {
        ETH_P_IPV4
    } else {
        ETH_P_IPV6
    };
    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&config.local_next_hop_mac);
    eth[6..12].copy_from_slice(&config.local_mac);
    eth[12..].copy_from_slice(&ethertype.to_be_bytes());
    if write_at(ctx, 0, eth).is_none() {
        return internal;
    }
    if by_fib {
        match fib::write_macs(ctx) {
            Some(true) => {}
            // The kernel forwards it, decrementing the TTL itself.
            Some(false) => return Outcome::new(Verdict::Pass, Reason::NextHopUnresolved),
            None => return internal,
        }
    }
    if decrement_ttl(ctx, 14, pdu.inner.v6).is_none()
        || parse::push_tags(ctx, &config.local_tags, config.local_tag_count).is_none()
    {
        return internal;
    }
    // SAFETY: plain helper call with an interface index and no flags.
    let action = unsafe { bpf_redirect(config.local_ifindex, 0) } as u32;
    if action != xdp_action::XDP_REDIRECT {
        return internal;
    }
    Outcome::new(Verdict::Redirect, reason)
}
