//! The PFCP programs in the kernel against the reference model (issue #11), on random
//! sessions compiled by the PFCP rules compiler and random packets: the same verdict, reason,
//! session, PDR and bytes for every packet, and the same flow samples.
//!
//! Re-tunnelled packets consult the kernel's FIB, so the packets are judged in a network
//! namespace of our own (`mgw-pf-<pid>`) whose routes and neighbours the model's FIB mirrors:
//! one PSA with a neighbour entry, one routed without one, one unroutable.
//!
//! `MECGW_PFCP_CASES` sets the number of cases (default 120); `MECGW_PFCP_SEED` runs one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use mecgw::{
    datapath::{
        CompiledTables, Direction, FastPath, FastPathOptions, Judged,
        compile::from_toml,
        flow_counters::FlowTable,
        model::{
            Model,
            pfcp::{Fib, PfcpEntries, Route},
        },
        pfcp_maps::PfcpOptions,
    },
    pfcp::rules::{Compiled, Ctx, Rules, UeKey, compile},
};
use mecgw_ebpf::{Reason, Verdict};
use mecgw_pfcp::ie::{
    ApplyAction, CreateFar, CreatePdr, FTeid, ForwardingParameters, GateStatus, Interface,
    OuterHeaderCreation, OuterHeaderRemoval, Pdi, Qer, SdfFilter, UeIpAddress,
};
use mecgw_tests::{packet::*, testbed::ScratchNetns};

/// SplitMix64: every random choice of one case, from its seed.
use mecgw_tests::testbed::rng::SplitMix64 as Rng;

const TEID_MIN: u32 = 0x8000_0000;
const NS: &str = "mgw-pf";
/// The PSAs a re-tunnel may target: routed with a neighbour, routed without, unroutable.
const PSA_OK: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PSA_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const PSA_NO_ROUTE: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 9);
const PSA6_OK: &str = "2001:db8:77::2";
const PSA_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
/// The remote ends the filters and packets use.
const REMOTES_V4: &[&str] = &["198.51.100.7", "198.51.100.200", "203.0.113.5"];
const REMOTES_V6: &[&str] = &["2001:db8:51::7", "2001:db8:99::1"];
const FILTERS: &[&str] = &[
    "permit out ip from any to assigned",
    "permit out ip from 198.51.100.0/24 to assigned",
    "permit out udp from 198.51.100.7 5000-5100 to assigned",
    "permit out 17 from any to assigned 1000-2000",
    "permit out tcp from 203.0.113.5 80,443 to assigned",
    "permit out ip from 2001:db8:51::/48 to assigned",
    "permit out icmp from any to assigned",
];
const QFIS: &[u8] = &[1, 5, 9];

const TABLES: &str = r#"[n3]
ifindex = 0
mac = "02:00:00:00:00:02"
next_hop_mac = "02:00:00:00:00:01"
ipv4 = "198.18.0.2"
ipv6 = "2001:db8:3::2"
mtu = 1500

[local]
ifindex = 0
mac = "02:00:00:00:01:01"
next_hop_mac = "02:00:00:00:01:02"

[[sessions]]
id = 1
uplink_teid = 0x1000
downlink_teid = 0x2000
ue_ipv4 = "198.19.0.1"
gnb = "198.18.0.1"
qfi = 9
"#;

/// The namespace, the FIB the model mirrors of it, and the index of its interface towards
/// the PSAs (N3: the FIB lookup's input interface).
fn namespace() -> (ScratchNetns, Fib, u32) {
    let ns = ScratchNetns::create(NS).unwrap();
    let ip = |args: &[&str]| ns.ip(args).unwrap();
    ip(&[
        "link", "add", "mgw-pfa", "type", "veth", "peer", "name", "mgw-pfb",
    ]);
    ip(&["link", "set", "mgw-pfa", "up"]);
    ip(&["link", "set", "mgw-pfb", "up"]);
    ip(&["addr", "add", "10.77.0.1/24", "dev", "mgw-pfa"]);
    ip(&[
        "addr",
        "add",
        "2001:db8:77::1/64",
        "dev",
        "mgw-pfa",
        "nodad",
    ]);
    let mac = "02:77:00:00:00:02";
    for addr in ["10.77.0.2", PSA6_OK] {
        ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            "mgw-pfa",
            "nud",
            "permanent",
        ]);
    }
    // bpf_fib_lookup answers only where forwarding is on.
    for knob in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        ns.sysctl(knob).unwrap();
    }
    let (ifindex, smac) = ns.link("mgw-pfa").unwrap();
    let forward = Route::Forward {
        ifindex: 0,
        smac,
        dmac: PSA_MAC,
        mtu: 1500,
    };
    let mut fib = Fib::new();
    fib.insert(IpAddr::V4(PSA_OK), forward);
    fib.insert(IpAddr::V6(PSA6_OK.parse().unwrap()), forward);
    fib.insert(
        IpAddr::V4(PSA_NO_NEIGH),
        Route::NoNeighbour {
            ifindex: 0,
            mtu: 1500,
        },
    );
    (ns, fib, ifindex)
}

/// One random session's rules: an uplink tunnel from the gNB (several PDRs), sometimes a
/// tunnel from the core side back to the gNB, and the UE's downlink.
struct Generated {
    rules: Rules,
    ue_v4: Ipv4Addr,
    ue_v6: Option<Ipv6Addr>,
    teids: Vec<u32>,
}

fn far(
    id: u32,
    action: u16,
    dest: Option<Interface>,
    ohc: Option<OuterHeaderCreation>,
) -> CreateFar {
    CreateFar {
        far_id: id,
        apply_action: ApplyAction(action),
        forwarding_parameters: dest.map(|d| ForwardingParameters {
            destination_interface: Some(d),
            network_instance: None,
            outer_header_creation: ohc,
        }),
        bar_id: None,
    }
}

fn gtpu_to(teid: u32, addr: IpAddr) -> OuterHeaderCreation {
    match addr {
        IpAddr::V4(a) => OuterHeaderCreation {
            description: OuterHeaderCreation::GTPU_UDP_IPV4,
            teid: Some(teid),
            ipv4: Some(a),
            ipv6: None,
            port: None,
        },
        IpAddr::V6(a) => OuterHeaderCreation {
            description: OuterHeaderCreation::GTPU_UDP_IPV6,
            teid: Some(teid),
            ipv4: None,
            ipv6: Some(a),
            port: None,
        },
    }
}

const OHR_GTPU_V4: OuterHeaderRemoval = OuterHeaderRemoval {
    description: 0,
    extension_header_deletion: None,
};

fn ue_ip(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> UeIpAddress {
    UeIpAddress {
        ipv4: v4,
        ipv6: v6,
        is_destination: false,
        ipv6_prefix_delegation_bits: None,
        ipv6_prefix_length: v6.map(|_| 64),
        choose_ipv4: false,
        choose_ipv6: false,
    }
}

fn generate(r: &mut Rng, index: u32) -> Generated {
    let ue_v4 = Ipv4Addr::new(10, 45, (index >> 8) as u8, index as u8 + 1);
    let ue_v6 = r
        .chance(50)
        .then(|| Ipv6Addr::new(0x2001, 0xdb8, 0x45, index as u16, 0, 0, 0, 0));
    let uplink_teid = TEID_MIN + 0x100 * index + 1;
    let mut pdrs = Vec::new();
    let mut fars = Vec::new();
    let mut qers = Vec::new();
    let mut teids = vec![uplink_teid];
    // Uplink PDRs on one F-TEID.
    for k in 0..1 + r.below(3) as u16 {
        let far_id = u32::from(k) + 1;
        let (action, dest, ohc, ohr) = match r.below(5) {
            0 | 1 => (ApplyAction::FORW, Some(Interface::SgiLan), None, true),
            2 => (ApplyAction::FORW, Some(Interface::Core), None, false),
            3 => {
                let psa = r.pick(&[
                    IpAddr::V4(PSA_OK),
                    IpAddr::V4(PSA_OK),
                    IpAddr::V4(PSA_NO_NEIGH),
                    IpAddr::V4(PSA_NO_ROUTE),
                    IpAddr::V6(PSA6_OK.parse().unwrap()),
                ]);
                (
                    ApplyAction::FORW,
                    Some(Interface::Core),
                    Some(gtpu_to(0x5000 + u32::from(k), psa)),
                    true,
                )
            }
            _ => (ApplyAction::DROP, None, None, false),
        };
        fars.push(far(far_id, action, dest, ohc));
        let mut qer_ids = Vec::new();
        if r.chance(15) {
            // A closed uplink gate drops what the PDR matches.
            let qer_id = u32::from(k) + 1;
            qers.push(Qer {
                qer_id,
                gate_status: Some(GateStatus {
                    uplink_open: false,
                    downlink_open: true,
                }),
                mbr: None,
                gbr: None,
                qfi: None,
            });
            qer_ids.push(qer_id);
        }
        let filters = (0..r.pick(&[0u64, 1, 1, 2]))
            .map(|_| SdfFilter {
                flow_description: Some(r.pick(FILTERS).to_string()),
                ..SdfFilter::default()
            })
            .collect();
        let qfis = if r.chance(40) {
            vec![r.pick(QFIS)]
        } else {
            Vec::new()
        };
        pdrs.push(CreatePdr {
            pdr_id: k + 1,
            precedence: r.below(300) as u32,
            pdi: Pdi {
                source_interface: Interface::Access,
                local_f_teid: Some(FTeid::Assigned {
                    teid: uplink_teid,
                    ipv4: Some(Ipv4Addr::new(198, 18, 0, 2)),
                    ipv6: None,
                }),
                network_instance: None,
                ue_ip_address: vec![ue_ip(Some(ue_v4), ue_v6)],
                sdf_filters: filters,
                qfis,
            },
            outer_header_removal: ohr.then_some(OHR_GTPU_V4),
            far_id: Some(far_id),
            urr_ids: Vec::new(),
            qer_ids,
        });
    }
    let gnb = if r.chance(70) {
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1))
    } else {
        IpAddr::V6("2001:db8:3::100".parse().unwrap())
    };
    // A tunnel from the core side (a PSA's downlink) back to the gNB.
    if r.chance(40) {
        let teid = uplink_teid + 1;
        teids.push(teid);
        fars.push(far(
            20,
            ApplyAction::FORW,
            Some(Interface::Access),
            Some(gtpu_to(0x6000 + index, gnb)),
        ));
        pdrs.push(CreatePdr {
            pdr_id: 20,
            precedence: 500,
            pdi: Pdi {
                source_interface: Interface::Core,
                local_f_teid: Some(FTeid::Assigned {
                    teid,
                    ipv4: Some(Ipv4Addr::new(198, 18, 0, 2)),
                    ipv6: None,
                }),
                network_instance: None,
                ue_ip_address: Vec::new(),
                sdf_filters: Vec::new(),
                qfis: Vec::new(),
            },
            outer_header_removal: Some(OHR_GTPU_V4),
            far_id: Some(20),
            urr_ids: Vec::new(),
            qer_ids: Vec::new(),
        });
    }
    // The UE's downlink from the local services.
    let drop = r.chance(15);
    fars.push(if drop {
        far(30, ApplyAction::DROP, None, None)
    } else {
        far(
            30,
            ApplyAction::FORW,
            Some(Interface::Access),
            Some(gtpu_to(0x7000 + index, gnb)),
        )
    });
    let mut qer_ids = Vec::new();
    if r.chance(70) {
        qers.push(Qer {
            qer_id: 30,
            gate_status: Some(GateStatus {
                uplink_open: true,
                downlink_open: true,
            }),
            mbr: None,
            gbr: None,
            qfi: Some(r.pick(QFIS)),
        });
        qer_ids.push(30);
    }
    pdrs.push(CreatePdr {
        pdr_id: 30,
        precedence: 1000,
        pdi: Pdi {
            source_interface: Interface::SgiLan,
            local_f_teid: None,
            network_instance: None,
            ue_ip_address: vec![UeIpAddress {
                is_destination: true,
                ..ue_ip(Some(ue_v4), ue_v6)
            }],
            sdf_filters: Vec::new(),
            qfis: Vec::new(),
        },
        outer_header_removal: None,
        far_id: Some(30),
        urr_ids: Vec::new(),
        qer_ids,
    });
    let mut rules = Rules::create(&pdrs, &fars, &qers, &[]).expect("generated rules are valid");
    for p in rules.pdrs.values_mut() {
        if let Some(FTeid::Assigned { teid, .. }) = &p.def.pdi.local_f_teid {
            p.local_teid = Some(*teid);
        }
    }
    Generated {
        rules,
        ue_v4,
        ue_v6,
        teids,
    }
}

/// The tests share one loaded fast path and one namespace name: they take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn fast_path() -> &'static FastPath {
    static FP: std::sync::OnceLock<FastPath> = std::sync::OnceLock::new();
    FP.get_or_init(|| {
        FastPath::load_with(FastPathOptions {
            flow_accounting: true,
            pfcp: Some(PfcpOptions {
                sessions: 64,
                tunnels: 128,
                ues: 128,
                pdrs: 1024,
                teid_min: TEID_MIN,
            }),
            ..FastPathOptions::default()
        })
        .expect("load the XDP programs (are we root?)")
    })
}

fn inner_packet(r: &mut Rng, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let ttl = r.pick(&[64u8, 64, 64, 2, 1]);
    let proto = r.pick(&[17u8, 17, 6, 1]);
    let sport = r.pick(&[5000u16, 5050, 5200, 40000]);
    let dport = r.pick(&[80u16, 443, 1500, 2500, 53]);
    // Mostly small; sometimes near the N3 MTU, so that encapsulation's 36 to 56 bytes
    // push about half of those over it (Oversize) and the rest just under.
    let len = if r.chance(10) {
        1400 + r.below(80)
    } else {
        r.below(64)
    };
    let payload: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
    let l4 = match proto {
        17 => udp(sport, dport, &payload),
        6 => tcp(sport, dport),
        _ => icmp_echo(),
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s.octets(), d.octets(), proto, ttl, 0, &l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let next = if proto == 1 { 58 } else { proto };
            ipv6(s.octets(), d.octets(), next, ttl, &l4)
        }
        _ => unreachable!("same family"),
    }
}

fn remote(r: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        r.pick(REMOTES_V6).parse().unwrap()
    } else {
        r.pick(REMOTES_V4).parse().unwrap()
    }
}

fn uplink(r: &mut Rng, sessions: &[Generated]) -> Vec<u8> {
    let s = &sessions[r.below(sessions.len() as u64) as usize];
    let teid = match r.below(10) {
        0 => TEID_MIN + 0x7fff_0000 + r.below(100) as u32, // of no session
        1 if s.teids.len() > 1 => s.teids[1],              // the core side's tunnel
        _ => s.teids[0],
    };
    let inner_v6 = s.ue_v6.is_some() && r.chance(40);
    let src = match (inner_v6, r.chance(10)) {
        (_, true) => IpAddr::V4(Ipv4Addr::new(10, 46, 0, 1)),
        (true, false) => IpAddr::V6(s.ue_v6.map(|p| Ipv6Addr::from(u128::from(p) | 7)).unwrap()),
        (false, false) => IpAddr::V4(s.ue_v4),
    };
    let (src, dst) = if teid == s.teids.get(1).copied().unwrap_or(0) {
        // From the core side: remote to UE.
        let rem = remote(r, src.is_ipv6());
        (rem, src)
    } else {
        (src, remote(r, src.is_ipv6()))
    };
    let inner = inner_packet(r, src, dst);
    let exts = if r.chance(60) {
        vec![ul_container(r.pick(QFIS))]
    } else {
        Vec::new()
    };
    let g = gtp(255, teid, None, &exts, &inner);
    if r.chance(70) {
        return n3_v4([198, 18, 1, 1], [198, 18, 0, 2], &g);
    }
    let (src, dst) = (v6("2001:db8:3::100"), v6("2001:db8:3::2"));
    let mut frame = n3_v6(src, dst, &g);
    // Mostly a sender that computes the UDP checksum; sometimes one that sends zero.
    if r.chance(80) {
        let check = udp6_checksum(&src, &dst, &frame[54..]);
        frame[60..62].copy_from_slice(&check.to_be_bytes());
    }
    frame
}

fn downlink(r: &mut Rng, sessions: &[Generated]) -> Vec<u8> {
    let s = &sessions[r.below(sessions.len() as u64) as usize];
    let v6 = s.ue_v6.is_some() && r.chance(40);
    let dst = if v6 {
        IpAddr::V6(s.ue_v6.map(|p| Ipv6Addr::from(u128::from(p) | 9)).unwrap())
    } else {
        IpAddr::V4(s.ue_v4)
    };
    let src = remote(r, v6);
    let ip = inner_packet(r, src, dst);
    let mut frame = eth(
        [0x02, 0, 0, 0, 1, 1],
        [0x02, 0, 0, 0, 1, 2],
        if v6 { 0x86dd } else { 0x0800 },
    );
    frame.extend_from_slice(&ip);
    frame
}

/// Puts `c` into the kernel and the model's entries.
fn install(fp: &FastPath, entries: &mut PfcpEntries, c: &Compiled) {
    for (teid, t) in &c.tunnels {
        fp.put_pfcp_tunnel(*teid, t).unwrap();
        entries.tunnels.insert(*teid, *t);
    }
    for (ue, d) in &c.downlinks {
        match ue {
            UeKey::V4(a) => {
                fp.put_pfcp_downlink_v4(*a, d).unwrap();
                entries.ue_v4.insert(*a, *d);
            }
            UeKey::V6(p, len) => {
                fp.put_pfcp_downlink_v6(*p, *len, d).unwrap();
                entries.ue_v6.push((*p, *len, *d));
            }
        }
    }
}

fn uninstall(fp: &FastPath, entries: &PfcpEntries) {
    for teid in entries.tunnels.keys() {
        fp.remove_pfcp_tunnel(*teid).unwrap();
    }
    for a in entries.ue_v4.keys() {
        fp.remove_pfcp_downlink_v4(*a).unwrap();
    }
    for (p, len, _) in &entries.ue_v6 {
        fp.remove_pfcp_downlink_v6(*p, *len).unwrap();
    }
}

const PACKETS: usize = 40;

/// One case: random sessions from `seed`, installed; packets through kernel and model.
fn run_case(seed: u64, tables: &CompiledTables, fib: &Fib, seen: &mut HashSet<Reason>) -> usize {
    let fp = fast_path();
    let mut r = Rng(seed);
    let sessions: Vec<Generated> = (0..1 + r.below(4) as u32)
        .map(|i| generate(&mut r, i))
        .collect();
    let mut entries = PfcpEntries {
        teid_min: TEID_MIN,
        fib: fib.clone(),
        ..PfcpEntries::default()
    };
    let mut next_slot = 0u32;
    for (i, s) in sessions.iter().enumerate() {
        let slots: BTreeMap<u16, u32> = s
            .rules
            .pdrs
            .keys()
            .map(|id| {
                next_slot += 1;
                (*id, next_slot)
            })
            .collect();
        let compiled = compile(
            &s.rules,
            &Ctx {
                session: TEID_MIN + i as u32,
                counter: mecgw::datapath::pfcp_maps::session_counter_slot(i as u32),
                pdr_slots: &slots,
                n3_v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
                n3_v6: Some("2001:db8:3::2".parse().unwrap()),
            },
        );
        match compiled {
            Ok(c) => install(fp, &mut entries, &c),
            // More re-tunnel targets or matches than a tunnel holds: refused, as the SMF
            // would be told; its packets then meet no session.
            Err(e) if e.cause == mecgw_pfcp::ie::Cause::NO_RESOURCES_AVAILABLE => {}
            Err(e) => panic!("seed {seed}: session {i} does not compile: {e:?}"),
        }
    }
    let model = Model::new(tables).with_pfcp(entries.clone());
    let mut flows = FlowTable::default();
    for i in 0..PACKETS {
        let (direction, frame) = if i % 3 == 2 {
            (Direction::Downlink, downlink(&mut r, &sessions))
        } else {
            (Direction::Uplink, uplink(&mut r, &sessions))
        };
        let kernel = fp.judge(direction, &frame).unwrap();
        let outcome = match direction {
            Direction::Uplink => model.uplink(&frame),
            Direction::Downlink => model.downlink(&frame),
        };
        if let Some(hit) = &outcome.flow {
            flows.record(hit);
        }
        seen.insert(outcome.reason);
        let model = Judged::from(outcome);
        assert_eq!(
            kernel, model,
            "seed {seed} packet {i} ({direction:?}): frame {frame:02x?}\nentries {entries:#?}"
        );
    }
    assert_eq!(
        mecgw_tests::sorted_flows(fp.harvest_flows().unwrap()),
        mecgw_tests::sorted_flows(flows.harvest()),
        "seed {seed}: flow samples"
    );
    uninstall(fp, &entries);
    PACKETS
}

#[test]
fn kernel_and_model_agree_on_random_pfcp_sessions_and_packets() {
    let _turn = turn();
    let (ns, fib, n3) = namespace();
    let tables = from_toml(TABLES, "tables").unwrap().on_interfaces(n3, 0);
    fast_path().install(&tables).unwrap();
    let seeds: Vec<u64> = match std::env::var("MECGW_PFCP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let cases = std::env::var("MECGW_PFCP_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(120u64);
            let base = rand::random::<u64>();
            eprintln!("fastpath_pfcp: seeds from {base} (MECGW_PFCP_SEED=<seed> runs one)");
            (0..cases).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let single = seeds.len() == 1;
    let (total, seen) = mecgw_tests::in_netns(ns.name(), || {
        let mut seen = HashSet::new();
        let mut total = 0;
        for seed in &seeds {
            total += run_case(*seed, &tables, &fib, &mut seen);
        }
        (total, seen)
    })
    .unwrap();
    assert_eq!(total, seeds.len() * PACKETS);
    if single {
        return;
    }
    // A guard against a generator that stops reaching a path.
    use Reason::*;
    for reason in [
        PdrLocal,
        PdrForward,
        PdrRetunnel,
        PdrDrop,
        NoPdr,
        NoNeighbour,
        SpoofedSource,
        UnknownTeid,
        Encapsulated,
        TtlExpired,
        NoRoute,
        Oversize,
    ] {
        assert!(
            seen.contains(&reason),
            "no packet had reason {reason:?}; seen {seen:?}"
        );
    }
}

/// Operator traffic rules next to PFCP sessions, as docs/pfcp.md says they combine: the
/// rules (here from the tables file; the API's are the same entries) judge the table
/// session's uplink, and a PFCP session's uplink is judged by its PDRs alone, also where the
/// inner packet matches a rule. Rule 10 drops 198.51.100.0/24 and rule 20 breaks 203.0.113.0/24
/// out; the PFCP session breaks 198.51.100.0/24 out (an SDF filter) and forwards the rest to
/// the core. Kernel and model agree on every packet, and both say what the docs say.
#[test]
fn operator_rules_judge_table_sessions_and_pdrs_alone_judge_pfcp_sessions() {
    let _turn = turn();
    let (ns, fib, n3) = namespace();
    let source = format!(
        "{TABLES}\n[[rules]]\nid = 10\npriority = 0\naction = \"DROP\"\n\
         dst = [\"198.51.100.0/24\"]\n\n[[rules]]\nid = 20\npriority = 1\n\
         action = \"LOCAL\"\ndst = [\"203.0.113.0/24\"]\n"
    );
    let tables = from_toml(&source, "tables").unwrap().on_interfaces(n3, 0);
    let fp = fast_path();
    fp.install(&tables).unwrap();

    // The PFCP session, out of the random cases' way (TEIDs, UE addresses).
    let teid = TEID_MIN + 0x10_0000;
    let ue = Ipv4Addr::new(10, 47, 0, 1);
    let uplink_pdr = |id: u16, precedence: u32, filter: Option<&str>, ohr: bool| CreatePdr {
        pdr_id: id,
        precedence,
        pdi: Pdi {
            source_interface: Interface::Access,
            local_f_teid: Some(FTeid::Assigned {
                teid,
                ipv4: Some(Ipv4Addr::new(198, 18, 0, 2)),
                ipv6: None,
            }),
            network_instance: None,
            ue_ip_address: vec![ue_ip(Some(ue), None)],
            sdf_filters: filter
                .map(|f| SdfFilter {
                    flow_description: Some(f.to_string()),
                    ..SdfFilter::default()
                })
                .into_iter()
                .collect(),
            qfis: Vec::new(),
        },
        outer_header_removal: ohr.then_some(OHR_GTPU_V4),
        far_id: Some(u32::from(id)),
        urr_ids: Vec::new(),
        qer_ids: Vec::new(),
    };
    let mut rules = Rules::create(
        &[
            uplink_pdr(
                1,
                10,
                Some("permit out ip from 198.51.100.0/24 to assigned"),
                true,
            ),
            uplink_pdr(2, 100, None, false),
        ],
        &[
            far(1, ApplyAction::FORW, Some(Interface::SgiLan), None),
            far(2, ApplyAction::FORW, Some(Interface::Core), None),
        ],
        &[],
        &[],
    )
    .unwrap();
    for p in rules.pdrs.values_mut() {
        p.local_teid = Some(teid);
    }
    let slots: BTreeMap<u16, u32> = [(1, 900), (2, 901)].into_iter().collect();
    let compiled = compile(
        &rules,
        &Ctx {
            session: teid,
            counter: mecgw::datapath::pfcp_maps::session_counter_slot(60),
            pdr_slots: &slots,
            n3_v4: Some(Ipv4Addr::new(198, 18, 0, 2)),
            n3_v6: None,
        },
    )
    .unwrap();
    let mut entries = PfcpEntries {
        teid_min: TEID_MIN,
        fib,
        ..PfcpEntries::default()
    };
    install(fp, &mut entries, &compiled);
    let model = Model::new(&tables).with_pfcp(entries.clone());

    let g_pdu = |teid: u32, src: Ipv4Addr, dst: [u8; 4]| {
        let inner = ipv4(src.octets(), dst, 17, 64, 0, &udp(40000, 53, b"mecgw"));
        n3_v4(
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            &gtp(255, teid, None, &[], &inner),
        )
    };
    let table_ue = Ipv4Addr::new(198, 19, 0, 1);
    // (what, frame, verdict, reason, rule, session, PDR)
    let cases = [
        (
            "table session to the dropped prefix: rule 10",
            g_pdu(0x1000, table_ue, [198, 51, 100, 7]),
            Verdict::Drop,
            Reason::RuleDrop,
            Some(10),
            Some(1),
            None,
        ),
        (
            "table session to the broken-out prefix: rule 20",
            g_pdu(0x1000, table_ue, [203, 0, 113, 5]),
            Verdict::Redirect,
            Reason::RuleLocal,
            Some(20),
            Some(1),
            None,
        ),
        (
            "PFCP session to rule 10's prefix: its SDF filter PDR breaks it out",
            g_pdu(teid, ue, [198, 51, 100, 7]),
            Verdict::Redirect,
            Reason::PdrLocal,
            None,
            Some(teid),
            Some(1),
        ),
        (
            "PFCP session to rule 20's prefix: its catch-all PDR forwards it to the core",
            g_pdu(teid, ue, [203, 0, 113, 5]),
            Verdict::Pass,
            Reason::PdrForward,
            None,
            Some(teid),
            Some(2),
        ),
    ];
    let judged = mecgw_tests::in_netns(ns.name(), || {
        cases
            .iter()
            .map(|(_, frame, ..)| {
                (
                    fp.judge(Direction::Uplink, frame).unwrap(),
                    Judged::from(model.uplink(frame)),
                )
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    for ((what, _, verdict, reason, rule, session, pdr), (kernel, model)) in
        cases.iter().zip(&judged)
    {
        assert_eq!(kernel, model, "{what}: kernel vs model");
        assert_eq!(
            (
                kernel.verdict,
                kernel.reason,
                kernel.rule,
                kernel.session,
                kernel.pdr
            ),
            (*verdict, *reason, *rule, *session, *pdr),
            "{what}"
        );
    }
    // Leave the shared fast path as found: no PFCP entries, no flow samples.
    uninstall(fp, &entries);
    fp.harvest_flows().unwrap();
}
