//! Types shared between the mecgw XDP programs and userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding (`u32` flags, never `bool`) so the
//! kernel and userspace agree on every byte. With the `user` feature the types implement
//! `aya::Pod` so the userspace loader can read and write them in maps.
//!
//! Addresses are kept as byte arrays in network order, TEIDs and ports as host-order integers.
#![no_std]

/// Names of the programs and maps in the eBPF object. Userspace looks them up by these names.
pub mod names {
    /// The minimal program: counts every frame and passes it to the kernel.
    pub const PROG_PASS: &str = "mecgw_pass";
    /// A program that only returns XDP_PASS: the benchmark baseline.
    pub const PROG_EMPTY: &str = "mecgw_empty";
    /// Benchmark wrapper: restores the original frame, then tail-calls `MAP_BENCH_TARGET[0]`.
    pub const PROG_BENCH_RESTORE: &str = "mecgw_bench_restore";
    /// The frame the benchmark wrapper restores ([`super::BenchFrame`]).
    pub const MAP_BENCH_FRAME: &str = "BENCH_FRAME";
    /// Program array with the program under test at index 0.
    pub const MAP_BENCH_TARGET: &str = "BENCH_TARGET";
    /// Live-frames traffic generator: restores `MAP_BENCH_FRAME`, then XDP_TX.
    pub const PROG_BENCH_TX: &str = "mecgw_bench_tx";
    /// Benchmark sink: counts every frame in `MAP_BENCH_SINK[0]` and drops it.
    pub const PROG_BENCH_SINK: &str = "mecgw_bench_sink";
    /// The benchmark's floor: the uplink's G-PDU parse and LOCAL decapsulation without any
    /// lookup or counter; counts what it redirects in `MAP_BENCH_SINK`.
    pub const PROG_BENCH_FLOOR: &str = "mecgw_bench_floor";
    /// Per-CPU [`super::Counter`] of what the sink (or the floor) counted.
    pub const MAP_BENCH_SINK: &str = "BENCH_SINK";
    /// The uplink classifier, attached to the N3 interface.
    pub const PROG_UPLINK: &str = "mecgw_uplink";
    /// The downlink encapsulator, attached to the local-services interface.
    pub const PROG_DOWNLINK: &str = "mecgw_downlink";
    /// The uplink of PFCP sessions: `mecgw_uplink` tail-calls it for TEIDs of the PFCP range.
    pub const PROG_UPLINK_PFCP: &str = "mecgw_uplink_pfcp";
    /// Program array with [`PROG_UPLINK_PFCP`] at index 0.
    pub const MAP_UPLINK_PFCP: &str = "UPLINK_PFCP";
    /// The re-tunnel of PFCP sessions: `mecgw_uplink_pfcp` tail-calls it.
    pub const PROG_RETUNNEL: &str = "mecgw_retunnel";
    /// Program array with [`PROG_RETUNNEL`] at index 0.
    pub const MAP_RETUNNEL: &str = "RETUNNEL";
    /// The downlink entry with PFCP on, attached in place of [`PROG_DOWNLINK`]: judges
    /// packets to PFCP sessions' IPv4 UEs and tail-calls for the rest.
    pub const PROG_DOWNLINK_PFCP: &str = "mecgw_downlink_pfcp";
    /// The downlink of PFCP sessions' IPv6 UEs: `mecgw_downlink_pfcp` tail-calls it.
    pub const PROG_DOWNLINK_PFCP_V6: &str = "mecgw_downlink_pfcp_v6";
    /// Program array with [`PROG_DOWNLINK`] at index 0, [`PROG_DOWNLINK_PFCP_V6`] at index 1
    /// and [`PROG_DOWNLINK_JUMBO`] at index 2.
    pub const MAP_DOWNLINK_CALLS: &str = "DOWNLINK_CALLS";
    /// The downlink's tables path for multi-buffer (jumbo) frames: `mecgw_downlink`
    /// tail-calls it.
    pub const PROG_DOWNLINK_JUMBO: &str = "mecgw_downlink_jumbo";
    /// Per-CPU packet/byte counters indexed by [`super::Verdict`].
    pub const MAP_VERDICTS: &str = "VERDICTS";
    /// Per-CPU packet/byte counters indexed by [`super::Reason`].
    pub const MAP_REASONS: &str = "REASONS";
    /// Per-CPU packet/byte counters indexed by a rule's counter slot.
    pub const MAP_RULE_COUNTERS: &str = "RULE_COUNTERS";
    /// Per-CPU packet/byte counters indexed by `2 * session counter slot + direction`; PFCP
    /// sessions' slots start at [`super::MAX_SESSIONS`].
    pub const MAP_SESSION_COUNTERS: &str = "SESSION_COUNTERS";
    /// Per-CPU record of the last decision taken on that CPU ([`super::Decision`]).
    pub const MAP_LAST_DECISION: &str = "LAST_DECISION";
    /// One `u32`: which generation (0 or 1) of the tables the programs read.
    pub const MAP_ACTIVE: &str = "ACTIVE_GEN";
    /// [`super::Config`] per generation (index 0 and 1).
    pub const MAP_CONFIG: &str = "CONFIG";
    /// Uplink TEID → [`super::SessionEntry`], per generation.
    pub const MAP_SESSIONS: [&str; 2] = ["SESSIONS_0", "SESSIONS_1"];
    /// UE IPv4 address → [`super::SessionEntry`], per generation.
    pub const MAP_UE_V4: [&str; 2] = ["UE_V4_0", "UE_V4_1"];
    /// UE IPv6 prefix (LPM) → [`super::SessionEntry`], per generation.
    pub const MAP_UE_V6: [&str; 2] = ["UE_V6_0", "UE_V6_1"];
    /// Rule index → [`super::RuleEntry`], per generation.
    pub const MAP_RULES: [&str; 2] = ["RULES_0", "RULES_1"];
    /// IPv4 destination prefix (LPM) → [`super::Candidates`], per generation.
    pub const MAP_DST_V4: [&str; 2] = ["DST_V4_0", "DST_V4_1"];
    /// IPv6 destination prefix (LPM) → [`super::Candidates`], per generation.
    pub const MAP_DST_V6: [&str; 2] = ["DST_V6_0", "DST_V6_1"];
    /// One `u32`: the flow window (epoch) the programs count into; its parity picks the
    /// half of the slot maps ([`MAP_FLOW_SLOTS`]).
    pub const MAP_FLOW_GEN: &str = "FLOW_GEN";
    /// LRU hash [`super::FlowKey`] → [`super::FlowIndexEntry`]: where a flow's slot is, and
    /// the uplink's cached classification of the flow.
    pub const MAP_FLOW_INDEX: &str = "FLOW_INDEX";
    /// Memory-mappable arrays of [`super::FlowSlot`], one per window parity: the flows
    /// counted in a window, read by userspace through `mmap`.
    pub const MAP_FLOW_SLOTS: [&str; 2] = ["FLOW_SLOTS_0", "FLOW_SLOTS_1"];
    /// Two `u64`s: the next free slot of each half, taken with an atomic add.
    pub const MAP_FLOW_ALLOC: &str = "FLOW_ALLOC";
    /// The flow maps of the previous layout (per-CPU LRU hashes of [`super::FlowKey`] →
    /// [`super::FlowValue`], one per generation), read only when adopting what an instance
    /// of an older build counted.
    pub const MAP_FLOWS_LEGACY: [&str; 2] = ["FLOWS_0", "FLOWS_1"];
    /// Per-CPU [`super::FlowGenStats`] indexed by window parity.
    pub const MAP_FLOW_STATS: &str = "FLOW_STATS";
    /// Read-only global (`u32`, 0 or 1) set at load time: whether the programs count flows.
    /// The verifier sees its value and removes the flow code when it is 0.
    pub const GLOBAL_FLOW_ACCOUNTING: &str = "FLOW_ACCOUNTING";
    /// Read-only global (`u32`, 0 or 1) set at load time: whether the programs record each
    /// frame's decision in [`MAP_LAST_DECISION`]; the verifier removes the store when 0.
    pub const GLOBAL_RECORD_DECISIONS: &str = "RECORD_DECISIONS";
    /// Per-CPU array of [`super::NextHop`]: the programs' cache of the FIB's answers.
    pub const MAP_FIB_CACHE: &str = "FIB_CACHE";
    /// One `u32`, moved by userspace on every neighbour, route, address or link change the
    /// kernel reports: a [`super::NextHop`] kept under another serial is stale.
    pub const MAP_FIB_SERIAL: &str = "FIB_SERIAL";
    /// Read-only global (`u32`, 0 or 1) set at load time: whether the programs answer FIB
    /// lookups from [`MAP_FIB_CACHE`].
    pub const GLOBAL_FIB_CACHE: &str = "FIB_CACHE_ON";
    /// Read-only global (`u32`, 0 or 1) set at load time: whether the uplink keeps each
    /// flow's classification in its [`MAP_FLOW_INDEX`] entry (with flow accounting only).
    pub const GLOBAL_VERDICT_CACHE: &str = "VERDICT_CACHE";
    /// Local TEID → [`super::PfcpTunnel`]: the GTP-U tunnels of PFCP sessions (not
    /// generational: each entry is replaced atomically).
    pub const MAP_PFCP_TUNNELS: &str = "PFCP_TUNNELS";
    /// UE IPv4 address → [`super::PfcpDownlink`] of PFCP sessions.
    pub const MAP_PFCP_UE_V4: &str = "PFCP_UE_V4";
    /// UE IPv6 prefix (LPM) → [`super::PfcpDownlink`] of PFCP sessions.
    pub const MAP_PFCP_UE_V6: &str = "PFCP_UE_V6";
    /// Per-CPU packet/byte counters indexed by a PDR's counter slot.
    pub const MAP_PDR_COUNTERS: &str = "PDR_COUNTERS";
    /// [`super::CarriedKey`] → [`super::Counter`]: what earlier instances of the daemon counted,
    /// carried over at a restart. Written by userspace only; no program touches it.
    pub const MAP_CARRIED: &str = "CARRIED";
}

/// UDP port of GTP-U (TS 29.281).
pub const GTPU_PORT: u16 = 2152;
/// GTP-U message type of a G-PDU (a user packet).
pub const GTP_TYPE_GPDU: u8 = 255;
/// Extension header type of the PDU Session Container (TS 38.415).
pub const EXT_PDU_SESSION_CONTAINER: u8 = 0x85;
/// Capacity of each rule generation. The product promises 5,000 rules.
pub const MAX_RULES: u32 = 8192;
/// Capacity of each session generation. The product promises 100,000 sessions.
pub const MAX_SESSIONS: u32 = 131_072;
/// Capacity of each destination-prefix trie (distinct prefixes over all rules).
pub const MAX_DST_PREFIXES: u32 = 16_384;
/// How many rules may apply to one destination address (the candidate list of one prefix).
pub const MAX_CANDIDATES: usize = 16;
/// How many GTP-U extension headers the parser walks before calling the chain over-long.
pub const MAX_EXT_HEADERS: usize = 4;
/// IPv6 extension headers (hop-by-hop, routing, fragment, destination options) walked before
/// the upper layer, outer and inner. Behind more, an inner packet's protocol is the next
/// extension header's type and it has no ports; an outer packet is not GTP-U (passed).
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
/// IPv6 Next Header values of the extension headers that are walked (ESP, 50, and AH, 51, are
/// upper layers without ports).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DEST_OPTS: u8 = 60;

/// Whether Next Header `next` is an IPv6 extension header the parsers walk.
#[inline(always)]
pub const fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DEST_OPTS
    )
}
/// Source prefixes per address family in one rule.
pub const MAX_SRC_PREFIXES: usize = 4;
/// Destination port ranges in one rule.
pub const MAX_PORT_RANGES: usize = 4;
/// Largest N3 MTU accepted: the downlink checksum loop covers packets up to this size.
pub const MAX_N3_MTU: u32 = 9000;
/// Smallest N3 MTU accepted (the IPv6 minimum).
pub const MIN_N3_MTU: u32 = 1280;
/// Bytes downlink encapsulation adds over an IPv4 outer header (IP 20, UDP 8, GTP-U 8,
/// optional fields 4, PDU Session Container 4).
pub const ENCAP_OVERHEAD_V4: u32 = 44;
/// Bytes downlink encapsulation adds over an IPv6 outer header.
pub const ENCAP_OVERHEAD_V6: u32 = 64;
/// Marks "no rule" / "no session" in a [`Decision`].
pub const NONE: u32 = u32::MAX;
/// Counter direction index: uplink.
pub const DIR_UPLINK: u32 = 0;
/// Counter direction index: downlink.
pub const DIR_DOWNLINK: u32 = 1;
/// Flows counted per harvest window by default (`[flows] max_flows`): slots per half of
/// the slot maps; the flow index holds twice as many. See docs/fastpath.md for the memory.
pub const MAX_FLOWS: u32 = 65_536;
/// PFCP sessions the fast path counts (their session counter slots follow the tables').
pub const MAX_PFCP_SESSIONS: u32 = 131_072;
/// Entries of the PFCP tunnel map (local TEIDs of PFCP sessions).
pub const MAX_PFCP_TUNNELS: u32 = 262_144;
/// Entries of each PFCP UE map (UE addresses of PFCP sessions, per family).
pub const MAX_PFCP_UES: u32 = 131_072;
/// Matches (a PDR's SDF filters, or the PDR itself) one PFCP tunnel holds, in precedence order.
pub const MAX_TUNNEL_PDRS: usize = 8;
/// Distinct forwarding targets (re-tunnel destinations) one PFCP tunnel holds.
pub const MAX_TUNNEL_TARGETS: usize = 2;
/// PDR counter slots: PDRs of all PFCP sessions.
pub const MAX_PDR_COUNTERS: u32 = 524_288;

/// [`FlowKey::family`] of an IPv4 flow.
pub const FLOW_FAMILY_V4: u8 = 4;
/// [`FlowKey::family`] of an IPv6 flow.
pub const FLOW_FAMILY_V6: u8 = 6;

/// What the fast path decided for a frame. The discriminant indexes the verdict counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Handed to the kernel's stack unchanged (`XDP_PASS`).
    Pass = 0,
    /// Dropped (`XDP_DROP`).
    Drop = 1,
    /// Transmitted back out of the interface it came in on (`XDP_TX`).
    Tx = 2,
    /// Redirected to another interface (`XDP_REDIRECT`).
    Redirect = 3,
}

impl Verdict {
    /// Number of verdicts: the size of the verdict counter array.
    pub const COUNT: u32 = 4;
    /// All verdicts, in discriminant order.
    pub const ALL: [Verdict; Self::COUNT as usize] =
        [Verdict::Pass, Verdict::Drop, Verdict::Tx, Verdict::Redirect];

    /// Lower-case name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Tx => "tx",
            Verdict::Redirect => "redirect",
        }
    }

    /// The XDP action code (`XDP_PASS` = 2, …) for this verdict.
    pub const fn xdp_action(self) -> u32 {
        match self {
            Verdict::Pass => 2,
            Verdict::Drop => 1,
            Verdict::Tx => 3,
            Verdict::Redirect => 4,
        }
    }

    /// The verdict for an XDP action code, if it is one the fast path returns.
    pub const fn from_xdp_action(action: u32) -> Option<Verdict> {
        match action {
            2 => Some(Verdict::Pass),
            1 => Some(Verdict::Drop),
            3 => Some(Verdict::Tx),
            4 => Some(Verdict::Redirect),
            _ => None,
        }
    }
}

/// Why the fast path decided what it did. The discriminant indexes the reason counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not GTP-U (not IPv4/IPv6, not UDP to port 2152, more than two VLAN tags, or UDP only
    /// behind more than [`MAX_IPV6_EXT_HEADERS`] extension headers): passed.
    NotGtp = 0,
    /// GTP-U, but not a G-PDU (echo, error indication, end marker, …): passed.
    GtpSignalling = 1,
    /// GTP-U whose version, flags or lengths are wrong, or that is truncated.
    MalformedGtp = 2,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    ExtChainTooLong = 3,
    /// The packet inside the tunnel (uplink) or the IP packet (downlink) is malformed.
    MalformedInner = 4,
    /// A G-PDU whose TEID belongs to no session.
    UnknownTeid = 5,
    /// A G-PDU whose inner source is not its session's UE.
    SpoofedSource = 6,
    /// No active rule matched: passthrough.
    NoRule = 7,
    /// A PASSTHROUGH rule matched.
    RulePassthrough = 8,
    /// A DROP rule matched.
    RuleDrop = 9,
    /// A LOCAL rule matched: decapsulated and redirected to the local-services interface.
    RuleLocal = 10,
    /// The TTL or hop limit would expire on forwarding: handed to the kernel unchanged.
    TtlExpired = 11,
    /// Downlink: not an IP packet for a UE with a session: passed.
    NotForUe = 12,
    /// Downlink: encapsulated and redirected to the N3 interface.
    Encapsulated = 13,
    /// Downlink: the encapsulated packet would exceed the N3 MTU; or a re-tunnelled packet,
    /// or one whose next hop comes from the FIB, exceeds its route's MTU: dropped.
    Oversize = 14,
    /// A kernel helper (adjust head/tail) refused: dropped. Never expected.
    Internal = 15,
    /// A PFCP PDR whose FAR sends to the local services matched: decapsulated, redirected.
    PdrLocal = 16,
    /// A PFCP PDR whose FAR forwards towards the core unchanged matched: passed.
    PdrForward = 17,
    /// A PFCP PDR whose FAR creates a new outer header (to a PSA, or back to the gNB)
    /// matched: the tunnel header rewritten and the frame redirected.
    PdrRetunnel = 18,
    /// A PFCP PDR whose FAR drops (or whose QER gate is closed) matched: dropped.
    PdrDrop = 19,
    /// A G-PDU of a PFCP tunnel that no PDR matched: dropped, as a UPF does.
    NoPdr = 20,
    /// A re-tunnel whose next hop the kernel has no neighbour entry for yet: dropped (the
    /// PFCP endpoint probes every target, so the kernel resolves it).
    NoNeighbour = 21,
    /// A re-tunnel the kernel's FIB has no route for (or forwarding is off on N3, or the
    /// target is of another IP family than the packet): dropped. Likewise a packet whose next
    /// hop comes from the FIB (`next_hop = "fib"`) when the FIB has no route for its next
    /// destination, or routes it out of another interface than the configured one.
    NoRoute = 22,
    /// Uplink: an outer IPv4 or IPv6 fragment (of a G-PDU or not; a non-first fragment has no
    /// UDP header to tell): passed to the kernel, which reassembles, rather than misparsed.
    OuterFragment = 23,
    /// Uplink: a multi-buffer (jumbo) frame whose headers, as far as the parser reads them
    /// (up to the inner packet's ports), do not all lie in the frame's linear part, the only
    /// part the programs read headers from: passed to the kernel unjudged, rather than
    /// judged on headers it could not see.
    HeadersNotLinear = 24,
    /// With the next hop from the FIB (`next_hop = "fib"`), the kernel has a route but no
    /// resolved neighbour for the next hop yet: the frame is passed to the kernel as it would
    /// leave (uplink LOCAL: the decapsulated packet, TTL as received; downlink: the
    /// encapsulated packet), which routes it, resolves the neighbour and sends it.
    NextHopUnresolved = 25,
}

impl Reason {
    /// Whether a frame the G-PDU parser gives this reason for is passed to the kernel as it
    /// is, whatever the configured dispositions say: it is not a G-PDU mecgw judges (not
    /// GTP-U, GTP-U signalling, an outer fragment, headers outside the linear part).
    pub const fn passes_unjudged(self) -> bool {
        matches!(
            self,
            Reason::NotGtp
                | Reason::GtpSignalling
                | Reason::OuterFragment
                | Reason::HeadersNotLinear
        )
    }

    /// Number of reasons: the size of the reason counter array.
    pub const COUNT: u32 = 26;
    /// All reasons, in discriminant order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::NotGtp,
        Reason::GtpSignalling,
        Reason::MalformedGtp,
        Reason::ExtChainTooLong,
        Reason::MalformedInner,
        Reason::UnknownTeid,
        Reason::SpoofedSource,
        Reason::NoRule,
        Reason::RulePassthrough,
        Reason::RuleDrop,
        Reason::RuleLocal,
        Reason::TtlExpired,
        Reason::NotForUe,
        Reason::Encapsulated,
        Reason::Oversize,
        Reason::Internal,
        Reason::PdrLocal,
        Reason::PdrForward,
        Reason::PdrRetunnel,
        Reason::PdrDrop,
        Reason::NoPdr,
        Reason::NoNeighbour,
        Reason::NoRoute,
        Reason::OuterFragment,
        Reason::HeadersNotLinear,
        Reason::NextHopUnresolved,
    ];

    /// snake_case name used in logs, metrics and replay output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NotGtp => "not_gtp",
            Reason::GtpSignalling => "gtp_signalling",
            Reason::MalformedGtp => "malformed_gtp",
            Reason::ExtChainTooLong => "ext_chain_too_long",
            Reason::MalformedInner => "malformed_inner",
            Reason::UnknownTeid => "unknown_teid",
            Reason::SpoofedSource => "spoofed_source",
            Reason::NoRule => "no_rule",
            Reason::RulePassthrough => "rule_passthrough",
            Reason::RuleDrop => "rule_drop",
            Reason::RuleLocal => "rule_local",
            Reason::TtlExpired => "ttl_expired",
            Reason::NotForUe => "not_for_ue",
            Reason::Encapsulated => "encapsulated",
            Reason::Oversize => "oversize",
            Reason::Internal => "internal",
            Reason::PdrLocal => "pdr_local",
            Reason::PdrForward => "pdr_forward",
            Reason::PdrRetunnel => "pdr_retunnel",
            Reason::PdrDrop => "pdr_drop",
            Reason::NoPdr => "no_pdr",
            Reason::NoNeighbour => "no_neighbour",
            Reason::NoRoute => "no_route",
            Reason::OuterFragment => "outer_fragment",
            Reason::HeadersNotLinear => "headers_not_linear",
            Reason::NextHopUnresolved => "next_hop_unresolved",
        }
    }

    /// The reason with this discriminant.
    pub const fn from_u32(v: u32) -> Option<Reason> {
        if v < Self::COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

/// A traffic rule's action, as compiled for the datapath.
pub mod action {
    /// Forward unchanged towards the core (`XDP_PASS`).
    pub const PASSTHROUGH: u32 = 0;
    /// Drop.
    pub const DROP: u32 = 1;
    /// Decapsulate and redirect to the local-services interface.
    pub const LOCAL: u32 = 2;
}

/// What to do with a packet the defaults apply to (unknown TEID, spoofed source, malformed).
pub mod disposition {
    /// Hand it to the kernel unchanged.
    pub const PASS: u32 = 0;
    /// Drop it.
    pub const DROP: u32 = 1;
}

/// A packet and byte counter. Kept per CPU in the kernel; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// The sum of two counters (used to add up per-CPU values).
    pub const fn plus(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Which counter a [`CarriedKey`] names: a verdict, a reason, a rule, a session's direction.
pub mod carried {
    /// `id` is a [`super::Verdict`].
    pub const VERDICT: u32 = 0;
    /// `id` is a [`super::Reason`].
    pub const REASON: u32 = 1;
    /// `id` is a rule id.
    pub const RULE: u32 = 2;
    /// `id` is a session id; the uplink counter.
    pub const SESSION_UPLINK: u32 = 3;
    /// `id` is a session id; the downlink counter.
    pub const SESSION_DOWNLINK: u32 = 4;
}

/// Key of the carried-over counters ([`names::MAP_CARRIED`]): counters are carried by what
/// they count (operator-visible ids), not by counter slot, which each instance assigns anew.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CarriedKey {
    /// One of [`carried`].
    pub kind: u32,
    pub id: u32,
}

/// Entries of [`names::MAP_CARRIED`]: every verdict, reason, rule and session direction.
pub const MAX_CARRIED: u32 = Verdict::COUNT + Reason::COUNT + MAX_RULES + 2 * MAX_SESSIONS;

/// [`SessionEntry::flags`]: the session has a UE IPv4 address.
pub const SESSION_HAS_UE_V4: u32 = 1;
/// [`SessionEntry::flags`]: the session has a UE IPv6 prefix.
pub const SESSION_HAS_UE_V6: u32 = 2;
/// [`SessionEntry::flags`]: the gNB address is IPv6 (else IPv4 in the first 4 bytes of `gnb`).
pub const SESSION_GNB_V6: u32 = 4;

/// A PDU session as the datapath sees it. Keyed by uplink TEID and by UE address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionEntry {
    /// Operator-visible session id.
    pub id: u32,
    /// Slot in the session counters (stable across table updates).
    pub counter: u32,
    pub uplink_teid: u32,
    pub downlink_teid: u32,
    /// `SESSION_*` flags.
    pub flags: u32,
    /// QFI written into downlink PDU Session Containers (0-63).
    pub qfi: u32,
    pub ue_v4: [u8; 4],
    /// UE IPv6 prefix, host bits zero.
    pub ue_v6: [u8; 16],
    /// Mask of the UE IPv6 prefix.
    pub ue_v6_mask: [u8; 16],
    /// gNB address: IPv4 in the first 4 bytes, or IPv6.
    pub gnb: [u8; 16],
}

/// An IPv4 prefix as address and mask, each the native-order word of its four bytes (so
/// the programs compare it with a packet word in one instruction).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixV4 {
    pub addr: u32,
    pub mask: u32,
}

/// An IPv6 prefix as address and mask, each four native-order words of its bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixV6 {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

/// An inclusive port range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// [`RuleEntry::match_flags`]: the rule only matches this TEID.
pub const MATCH_TEID: u32 = 1;
/// [`RuleEntry::match_flags`]: the rule only matches this QFI.
pub const MATCH_QFI: u32 = 2;
/// [`RuleEntry::match_flags`]: the rule has source prefixes (in either family).
pub const MATCH_SRC: u32 = 4;
/// [`RuleEntry::match_flags`]: the rule has a protocol list.
pub const MATCH_PROTO: u32 = 8;
/// [`RuleEntry::match_flags`]: the rule has destination port ranges.
pub const MATCH_PORTS: u32 = 16;

/// A traffic rule compiled for the datapath. Its destination prefixes live in the
/// destination tries ([`Candidates`]); everything else it matches on is here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// Operator-visible rule id.
    pub id: u32,
    /// Slot in the rule counters (stable across table updates).
    pub counter: u32,
    /// One of [`action`].
    pub action: u32,
    /// `MATCH_*` flags.
    pub match_flags: u32,
    pub teid: u32,
    pub qfi: u32,
    pub src_v4_count: u32,
    pub src_v6_count: u32,
    pub port_count: u32,
    /// Bitmap of IP protocol numbers (bit `p % 32` of word `p / 32`).
    pub protocols: [u32; 8],
    pub ports: [PortRange; MAX_PORT_RANGES],
    pub src_v4: [PrefixV4; MAX_SRC_PREFIXES],
    pub src_v6: [PrefixV6; MAX_SRC_PREFIXES],
}

/// The rules that may apply to destinations under one trie prefix, best first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Candidates {
    pub count: u32,
    /// Indices into the rule array, in precedence order (lowest priority value, then lowest id).
    pub rules: [u32; MAX_CANDIDATES],
}

/// [`Config::flags`]: the N3 interface has an IPv4 address.
pub const CONFIG_N3_V4: u32 = 1;
/// [`Config::flags`]: the N3 interface has an IPv6 address.
pub const CONFIG_N3_V6: u32 = 2;
/// [`Config::flags`]: PFCP sessions exist: G-PDUs with a TEID of at least
/// [`Config::pfcp_teid_min`] are looked up in the PFCP tunnels, and packets to UEs in the
/// PFCP UE maps first.
pub const CONFIG_PFCP: u32 = 4;
/// [`Config::flags`]: decapsulated frames (uplink LOCAL) get their MACs from the kernel's FIB
/// (`bpf_fib_lookup` of the inner destination from the local interface), not from
/// [`Config::local_next_hop_mac`].
pub const CONFIG_LOCAL_FIB: u32 = 8;
/// [`Config::flags`]: encapsulated frames (downlink) get their MACs from the kernel's FIB
/// (`bpf_fib_lookup` of the gNB from N3), not from [`Config::n3_next_hop_mac`].
pub const CONFIG_N3_FIB: u32 = 16;

/// Interface facts and defaults, one per generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Config {
    pub local_ifindex: u32,
    pub n3_ifindex: u32,
    /// Largest outer IP packet (bytes) allowed on N3.
    pub n3_mtu: u32,
    /// [`disposition`] for a G-PDU with an unknown TEID.
    pub unknown_teid: u32,
    /// [`disposition`] for a G-PDU whose inner source is not its UE.
    pub spoofed_source: u32,
    /// [`disposition`] for malformed GTP-U.
    pub malformed: u32,
    /// `CONFIG_*` flags.
    pub flags: u32,
    /// The first TEID of the PFCP range (with [`CONFIG_PFCP`]): TEIDs from here up belong to
    /// PFCP sessions, those below to the tables.
    pub pfcp_teid_min: u32,
    pub local_mac: [u8; 6],
    pub local_next_hop_mac: [u8; 6],
    pub n3_mac: [u8; 6],
    pub n3_next_hop_mac: [u8; 6],
    pub n3_v4: [u8; 4],
    pub n3_v6: [u8; 16],
    /// Tags pushed onto encapsulated frames, as on the wire (TPID, TCI; outermost first).
    pub n3_tags: [u8; 8],
    /// How many of `n3_tags` (0-2).
    pub n3_tag_count: u32,
    /// Tags pushed onto decapsulated frames.
    pub local_tags: [u8; 8],
    pub local_tag_count: u32,
    /// Which install of the tables this generation holds: 1 for the first, one more for each
    /// later one (wrapping past 0, which is never used). The flow verdict cache tags what it
    /// keeps with it, so that a swap makes every cached classification stale at once.
    pub tables_serial: u32,
}

/// Most VLAN tags the parsers see through and the programs push.
pub const MAX_VLAN_TAGS: usize = 2;

/// The wire bytes of a stack of VLAN ids (at most [`MAX_VLAN_TAGS`], outermost first): one is
/// an 802.1Q tag, two an 802.1ad S-tag over an 802.1Q C-tag. Priority and DEI are 0.
pub fn vlan_tags(ids: &[u16]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, id) in ids.iter().take(MAX_VLAN_TAGS).enumerate() {
        let tpid: u16 = if ids.len() == 2 && i == 0 {
            0x88a8
        } else {
            0x8100
        };
        out[4 * i..4 * i + 2].copy_from_slice(&tpid.to_be_bytes());
        out[4 * i + 2..4 * i + 4].copy_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    out
}

/// What a PFCP PDR's FAR does with a matching packet ([`PdrMatch::action`]).
pub mod pdr_action {
    /// Forward unchanged towards the core (`XDP_PASS`).
    pub const FORWARD: u32 = 0;
    /// Drop.
    pub const DROP: u32 = 1;
    /// Remove the outer header and redirect to the local-services interface.
    pub const LOCAL: u32 = 2;
    /// Rewrite the tunnel header towards [`super::TunnelTarget`] `target` and redirect by the
    /// kernel's FIB.
    pub const RETUNNEL: u32 = 3;
    /// Downlink: encapsulate towards the gNB ([`super::PfcpDownlink`]).
    pub const ENCAPSULATE: u32 = 4;
}

/// [`PdrMatch::flags`]: only packets whose PDU Session Container carries [`PdrMatch::qfi`].
pub const PDR_MATCH_QFI: u32 = 1;
/// [`PdrMatch::flags`]: only packets of IP protocol [`PdrMatch::protocol`].
pub const PDR_MATCH_PROTO: u32 = 2;
/// [`PdrMatch::flags`]: only packets whose remote address (uplink destination) lies in
/// [`PdrMatch::remote`] / [`PdrMatch::remote_mask`] (of the family the `PDR_FAMILY_*` flag says).
pub const PDR_MATCH_REMOTE: u32 = 4;
/// [`PdrMatch::flags`]: only packets whose remote port is in [`PdrMatch::remote_ports`].
pub const PDR_MATCH_REMOTE_PORTS: u32 = 8;
/// [`PdrMatch::flags`]: only packets whose UE-side port is in [`PdrMatch::ue_ports`].
pub const PDR_MATCH_UE_PORTS: u32 = 16;
/// [`PdrMatch::flags`]: only IPv4 packets.
pub const PDR_FAMILY_V4: u32 = 32;
/// [`PdrMatch::flags`]: only IPv6 packets.
pub const PDR_FAMILY_V6: u32 = 64;

/// One way a PFCP tunnel's packets can match (a PDR, or one SDF filter of a PDR), with what
/// its FAR does. Matches are tried in order (userspace sorts them by PDR precedence).
///
/// The SDF filter's "from" side is the remote (network) end and its "to" side the UE, in both
/// directions (TS 29.244 §5.2.1A.2A, TS 29.212 §5.4.2): for an uplink packet the remote
/// address is the inner destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PdrMatch {
    /// The PDR ID (for decisions).
    pub pdr_id: u32,
    /// Slot in the PDR counters.
    pub counter: u32,
    /// One of [`pdr_action`].
    pub action: u32,
    /// `PDR_MATCH_*` and `PDR_FAMILY_*` flags.
    pub flags: u32,
    pub qfi: u32,
    pub protocol: u32,
    /// Index into [`PfcpTunnel::targets`] for [`pdr_action::RETUNNEL`].
    pub target: u32,
    pub remote_ports: PortRange,
    pub ue_ports: PortRange,
    /// Remote prefix, as the bytes of the address in native-order words (IPv4 in word 0):
    /// compared with packet words read the same way.
    pub remote: [u32; 4],
    pub remote_mask: [u32; 4],
}

/// [`TunnelTarget::flags`]: the target address is IPv6.
pub const TARGET_V6: u32 = 1;

/// Where a re-tunnelled packet goes: the peer's TEID and address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelTarget {
    pub teid: u32,
    /// `TARGET_*` flags.
    pub flags: u32,
    /// The address bytes as native-order words: IPv4 in word 0, or IPv6.
    pub addr: [u32; 4],
}

/// [`PfcpTunnel::flags`]: the tunnel comes from the access side (uplink: the remote end of a
/// match is the inner destination, and its traffic is the UE's flows).
pub const TUNNEL_FROM_ACCESS: u32 = 1;
/// [`PfcpTunnel::flags`]: an inner source must be the session's UE (its PDRs name the UE's
/// address); a spoofed source is judged by the defaults.
pub const TUNNEL_CHECK_UE: u32 = 8;
/// [`PfcpTunnel::flags`]: the session has a UE IPv4 address.
pub const TUNNEL_HAS_UE_V4: u32 = 2;
/// [`PfcpTunnel::flags`]: the session has a UE IPv6 prefix.
pub const TUNNEL_HAS_UE_V6: u32 = 4;

/// A GTP-U tunnel of a PFCP session, keyed by its local TEID: every PDR whose PDI names that
/// F-TEID, compiled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PfcpTunnel {
    /// Operator-visible session id.
    pub session: u32,
    /// Slot in the session counters.
    pub counter: u32,
    /// `TUNNEL_*` flags.
    pub flags: u32,
    /// How many of `pdrs` are used.
    pub pdr_count: u32,
    /// The UE's addresses as native-order words of their bytes.
    pub ue_v4: u32,
    pub ue_v6: [u32; 4],
    pub ue_v6_mask: [u32; 4],
    pub targets: [TunnelTarget; MAX_TUNNEL_TARGETS],
    pub pdrs: [PdrMatch; MAX_TUNNEL_PDRS],
}

/// [`PfcpDownlink::flags`]: the gNB address is IPv6.
pub const DOWNLINK_GNB_V6: u32 = 1;

/// Packets from the local services to a UE of a PFCP session: its downlink PDR (Source
/// Interface SGi-LAN/N6-LAN) and what its FAR and QER say.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PfcpDownlink {
    /// Operator-visible session id.
    pub session: u32,
    /// Slot in the session counters.
    pub counter: u32,
    pub pdr_id: u32,
    /// Slot in the PDR counters.
    pub pdr_counter: u32,
    /// [`pdr_action::ENCAPSULATE`] or [`pdr_action::DROP`].
    pub action: u32,
    /// `DOWNLINK_*` flags.
    pub flags: u32,
    pub downlink_teid: u32,
    /// QFI written into the PDU Session Container (0-63).
    pub qfi: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub gnb: [u8; 16],
}

/// The last decision a CPU took: lets tests and `mecgw replay` learn the reason, rule and
/// session of a BPF_PROG_TEST_RUN without changing the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// 1 once written (userspace clears it before a run).
    pub valid: u32,
    pub verdict: u32,
    pub reason: u32,
    /// Rule id, or [`NONE`].
    pub rule: u32,
    /// Session id, or [`NONE`].
    pub session: u32,
    /// PFCP PDR id, or [`NONE`].
    pub pdr: u32,
}

/// A flow as the fast path counts it: one session, and the inner 5-tuple seen from the UE
/// (uplink source = downlink destination is `ue`), so both directions land in one entry.
///
/// Addresses are in network order; an IPv4 address fills the first 4 bytes, the rest are 0.
/// Ports are host-order and 0 when the packet has none (not TCP/UDP/SCTP, or a fragment).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Operator-visible session id.
    pub session: u32,
    pub ue: [u8; 16],
    pub peer: [u8; 16],
    pub ue_port: u16,
    pub peer_port: u16,
    pub protocol: u8,
    /// [`FLOW_FAMILY_V4`] or [`FLOW_FAMILY_V6`].
    pub family: u8,
    /// Always zero (explicit padding: the kernel hashes every key byte).
    pub pad: [u8; 2],
}

/// What the fast path of an older build counted for a flow, per CPU (its per-CPU LRU flow
/// maps, [`names::MAP_FLOWS_LEGACY`]): read when adopting what such an instance left.
/// Bytes are inner IP bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub uplink: Counter,
    pub downlink: Counter,
    /// Rule id of this CPU's last uplink decision for the flow, or [`NONE`].
    pub rule: u32,
    /// Always zero (explicit padding).
    pub pad: u32,
}

/// One flow's counters in one harvest window: an element of a slot map
/// ([`names::MAP_FLOW_SLOTS`]). Written by the program that takes the slot (the key and the
/// first packet) and then by atomic adds from any CPU; read by userspace through `mmap` once
/// no program counts into its half. Bytes are inner IP bytes (the IP total length of the
/// UE's packet, without Ethernet, outer headers, GTP-U or padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub key: FlowKey,
    /// The window the slot was taken in.
    pub epoch: u32,
    pub uplink: Counter,
    pub downlink: Counter,
    /// Rule id of the flow's last uplink decision in the window, or [`NONE`].
    pub rule: u32,
    /// Always zero (explicit padding).
    pub pad: u32,
}

/// A flow's entry in [`names::MAP_FLOW_INDEX`]: two words, each written with one 8-byte
/// store, so that each is whole when read (which of two racing writers wins does not matter:
/// both are right).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowIndexEntry {
    /// `epoch << 32 | slot`: the flow's slot in the window `epoch`.
    pub at: u64,
    /// The uplink's classification of the flow: [`Config::tables_serial`] << 32, the QFI and
    /// whether the packet had ports (the inputs of a rule match that the [`FlowKey`] lacks),
    /// and the index of the rule that matched; 0 when nothing is cached. Valid only while the
    /// tables serial and those inputs are the packet's own.
    pub verdict: u64,
}

/// Entries per CPU of the programs' next-hop cache ([`NextHop`]): a power of two.
pub const FIB_CACHE_SLOTS: u32 = 4096;
const _: () = assert!(FIB_CACHE_SLOTS.is_power_of_two());

/// An answer of the kernel's FIB the programs keep ([`names::MAP_FIB_CACHE`], per CPU):
/// where a destination is forwarded, asked from `ifindex_in`, under FIB serial `serial`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Destination: IPv4 in word 0, or IPv6 (native-order words of the address bytes).
    pub dst: [u32; 4],
    /// 1 << 8 for IPv6, and the IP protocol asked with.
    pub family_proto: u32,
    pub ifindex_in: u32,
    /// The route's egress interface.
    pub ifindex_out: u32,
    /// The route's MTU (`u32::MAX`: any length fits).
    pub mtu: u32,
    /// [`names::MAP_FIB_SERIAL`] when asked; 0: empty.
    pub serial: u32,
    pub pad: u32,
    /// `bpf_ktime_get_coarse_ns` when asked.
    pub asked_ns: u64,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub pad2: [u8; 4],
}

/// Per-CPU bookkeeping of one window parity, for the loss accounting of a harvest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowGenStats {
    /// Packets not counted because every slot of the window was taken (the window held
    /// `max_flows` flows already): their flows are missing from the window's records.
    pub refused: u64,
    /// Packets not counted because a map refused a lookup it should not have.
    pub failed: u64,
}

/// Largest frame the benchmark wrapper can restore.
pub const BENCH_FRAME_MAX: usize = 256;

/// The frame the benchmark wrapper puts back before every repetition.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchFrame {
    /// Frame length, a multiple of 8, at most [`BENCH_FRAME_MAX`].
    pub len: u32,
    /// How far the program under test moves the start of the frame (its
    /// `bpf_xdp_adjust_head` delta: positive for decapsulation, negative for encapsulation).
    pub head_shift: i32,
    pub bytes: [u8; BENCH_FRAME_MAX],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all impls below): each type is `#[repr(C)]`, made only of integers and integer
    // arrays laid out without padding (checked by the size assertions), so every bit pattern
    // is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CarriedKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SessionEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RuleEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Candidates {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Decision {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::BenchFrame {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowSlot {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowGenStats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PdrMatch {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TunnelTarget {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PfcpTunnel {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PfcpDownlink {}
}

// No implicit padding: each size is the sum of its fields.
const _: () = assert!(core::mem::size_of::<CarriedKey>() == 8);
const _: () = assert!(core::mem::size_of::<SessionEntry>() == 6 * 4 + 4 + 16 * 3);
const _: () = assert!(
    core::mem::size_of::<RuleEntry>()
        == 9 * 4 + 32 + 4 * MAX_PORT_RANGES + 8 * MAX_SRC_PREFIXES + 32 * MAX_SRC_PREFIXES
);
const _: () = assert!(core::mem::size_of::<Candidates>() == 4 + 4 * MAX_CANDIDATES);
const _: () = assert!(core::mem::size_of::<Config>() == 8 * 4 + 4 * 6 + 4 + 16 + 2 * (8 + 4) + 4);
// The programs read N3's addresses a word at a time (map values are 8-byte aligned).
const _: () = assert!(core::mem::offset_of!(Config, n3_v4) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(Config, n3_v6) % 4 == 0);
const _: () = assert!(core::mem::size_of::<Decision>() == 6 * 4);
const _: () = assert!(core::mem::size_of::<FlowIndexEntry>() == 16);
const _: () = assert!(core::mem::size_of::<NextHop>() == 64);
const _: () = assert!(core::mem::size_of::<PdrMatch>() == 7 * 4 + 8 + 32);
const _: () = assert!(core::mem::size_of::<TunnelTarget>() == 8 + 16);
const _: () = assert!(
    core::mem::size_of::<PfcpTunnel>()
        == 16 + 4 + 32 + 24 * MAX_TUNNEL_TARGETS + 68 * MAX_TUNNEL_PDRS
);
const _: () = assert!(core::mem::size_of::<PfcpDownlink>() == 8 * 4 + 16);
const _: () = assert!(core::mem::size_of::<BenchFrame>() == 8 + BENCH_FRAME_MAX);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 4 + 16 + 16 + 2 + 2 + 1 + 1 + 2);
const _: () = assert!(core::mem::size_of::<FlowValue>() == 16 + 16 + 4 + 4);
const _: () = assert!(core::mem::size_of::<FlowGenStats>() == 16);
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 44 + 4 + 16 + 16 + 4 + 4);
