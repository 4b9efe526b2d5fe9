//! The next hop from the kernel's FIB (`next_hop = "fib"`, issue #15), in the kernel against
//! the reference model: uplink LOCAL and downlink, each with a resolved neighbour (the MACs
//! are the neighbour entry's and our interface's), an unresolved one (passed to the kernel,
//! `next_hop_unresolved`), no route, a route out of the other interface (`no_route`) and a
//! route whose MTU the packet exceeds (`oversize`); a neighbour whose MAC changes between
//! two packets, which the second follows; and a PFCP session's downlink, which takes the same
//! next hop.
//!
//! `bpf_fib_lookup` answers from the namespace the test run happens in, so the packets are
//! judged in a network namespace of our own (`mgw-fib-<pid>`), whose routes and neighbours the
//! model's FIB mirrors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, net::IpAddr};

use mecgw::datapath::{
    CompiledTables, Direction, FastPath, FastPathOptions, Judged,
    compile::from_toml,
    model::{
        Model,
        pfcp::{Fib, Route},
    },
};
use mecgw_ebpf::{Reason, Verdict};
use mecgw_tests::{packet::*, testbed::ScratchNetns};

const NS: &str = "mgw-fib";
/// Our N3 and local-services interfaces in the namespace (veths; their peers stay idle).
const N3: &str = "mgw-fn3";
const LOCAL: &str = "mgw-flo";
const GNB_MAC: [u8; 6] = [0x02, 0x9b, 0, 0, 0, 1];
const SERVICE_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 5];
/// The MAC a neighbour takes over (a VRRP failover, a replaced host).
const NEW_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x77];

/// FIB next hop on both sides; one session per kind of gNB answer; everything uplink LOCAL.
const TABLES: &str = r#"[n3]
ifindex = 0
mac = "02:00:00:00:00:02"
next_hop = "fib"
ipv4 = "198.18.0.2"
ipv6 = "2001:db8:3::2"
mtu = 1500

[local]
ifindex = 0
mac = "02:00:00:00:01:01"
next_hop = "fib"

[[sessions]]
id = 1
uplink_teid = 0x101
downlink_teid = 0x201
ue_ipv4 = "10.45.0.1"
ue_ipv6 = "2001:db8:45:1::/64"
gnb = "198.18.0.1"
qfi = 9

[[sessions]]
id = 2
uplink_teid = 0x102
downlink_teid = 0x202
ue_ipv4 = "10.45.0.2"
gnb = "198.18.0.7"
qfi = 9

[[sessions]]
id = 3
uplink_teid = 0x103
downlink_teid = 0x203
ue_ipv4 = "10.45.0.3"
gnb = "198.51.100.9"
qfi = 9

[[sessions]]
id = 4
uplink_teid = 0x104
downlink_teid = 0x204
ue_ipv4 = "10.45.0.4"
gnb = "10.60.0.5"
qfi = 9

[[sessions]]
id = 5
uplink_teid = 0x105
downlink_teid = 0x205
ue_ipv4 = "10.45.0.5"
ue_ipv6 = "2001:db8:45:5::/64"
gnb = "2001:db8:3::1"
qfi = 5

[[sessions]]
id = 6
uplink_teid = 0x106
downlink_teid = 0x206
ue_ipv4 = "10.45.0.6"
gnb = "2001:db8:3::7"
qfi = 5

[[rules]]
id = 1
priority = 0
action = "LOCAL"
"#;

/// Inner destinations uplink: resolved, unresolved, unroutable, routed out of N3, routed
/// over a 1000-byte MTU; IPv6 resolved and unresolved.
const SERVICE: &str = "10.60.0.5";
const SERVICE_UNRESOLVED: &str = "10.60.0.6";
const UNROUTABLE: &str = "203.0.113.5";
const ON_N3: &str = "198.18.0.1";
const SMALL_MTU: &str = "10.61.0.5";
const SERVICE6: &str = "2001:db8:60::5";
const SERVICE6_UNRESOLVED: &str = "2001:db8:60::6";

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn fast_path() -> &'static FastPath {
    static FP: std::sync::OnceLock<FastPath> = std::sync::OnceLock::new();
    // Flow accounting on: the programs as close to the verifier's budget as they get.
    FP.get_or_init(|| {
        FastPath::load_with(FastPathOptions {
            flow_accounting: true,
            ..FastPathOptions::default()
        })
        .expect("load the XDP programs (are we root?)")
    })
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// The namespace with its two interfaces, and what the model needs of it.
struct Bed {
    ns: ScratchNetns,
    n3: (u32, [u8; 6]),
    local: (u32, [u8; 6]),
}

impl Bed {
    fn new() -> Bed {
        let ns = ScratchNetns::create(NS).unwrap();
        let ip = |args: &[&str]| ns.ip(args).unwrap();
        for (link, peer) in [(N3, "mgw-fn3p"), (LOCAL, "mgw-flop")] {
            ip(&["link", "add", link, "type", "veth", "peer", "name", peer]);
            ip(&["link", "set", link, "up"]);
            ip(&["link", "set", peer, "up"]);
        }
        for (addr, link) in [
            ("198.18.0.2/24", N3),
            ("2001:db8:3::2/64", N3),
            ("10.60.0.1/24", LOCAL),
            ("2001:db8:60::1/64", LOCAL),
        ] {
            ip(&["addr", "add", addr, "dev", link, "nodad"]);
        }
        // Locked: the kernel's forwarding takes a route's MTU only then (or with
        // ip_forward_use_pmtu); otherwise the device's.
        ip(&[
            "route",
            "add",
            "10.61.0.0/24",
            "dev",
            LOCAL,
            "mtu",
            "lock",
            "1000",
        ]);
        // bpf_fib_lookup answers only where forwarding is on.
        for knob in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            ns.sysctl(knob).unwrap();
        }
        let bed = Bed {
            n3: ns.link(N3).unwrap(),
            local: ns.link(LOCAL).unwrap(),
            ns,
        };
        for (addr, mac, link) in [
            (ON_N3, GNB_MAC, N3),
            ("2001:db8:3::1", GNB_MAC, N3),
            (SERVICE, SERVICE_MAC, LOCAL),
            (SERVICE6, SERVICE_MAC, LOCAL),
            (SMALL_MTU, SERVICE_MAC, LOCAL),
        ] {
            bed.neighbour(addr, mac, link);
        }
        bed
    }

    fn name(&self) -> &str {
        self.ns.name()
    }

    /// `addr` is at `mac` on `link` (replacing what was there).
    fn neighbour(&self, addr: &str, mac: [u8; 6], link: &str) {
        let mac = mac_text(mac);
        self.ns
            .ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &mac,
                "dev",
                link,
                "nud",
                "permanent",
            ])
            .unwrap();
    }

    /// The FIB as the namespace holds it, with `service_mac` for the service's neighbour and
    /// `gnb_mac` for the gNB's.
    fn fib(&self, gnb_mac: [u8; 6], service_mac: [u8; 6]) -> Fib {
        let (n3, n3_mac) = self.n3;
        let (local, local_mac) = self.local;
        let forward = |ifindex, smac, dmac, mtu| Route::Forward {
            ifindex,
            smac,
            dmac,
            mtu,
        };
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        Fib::from([
            (a(ON_N3), forward(n3, n3_mac, gnb_mac, 1500)),
            (a("2001:db8:3::1"), forward(n3, n3_mac, gnb_mac, 1500)),
            (
                a("198.18.0.7"),
                Route::NoNeighbour {
                    ifindex: n3,
                    mtu: 1500,
                },
            ),
            (
                a("2001:db8:3::7"),
                Route::NoNeighbour {
                    ifindex: n3,
                    mtu: 1500,
                },
            ),
            (a(SERVICE), forward(local, local_mac, service_mac, 1500)),
            (a(SERVICE6), forward(local, local_mac, service_mac, 1500)),
            (a(SMALL_MTU), forward(local, local_mac, SERVICE_MAC, 1000)),
            (
                a(SERVICE_UNRESOLVED),
                Route::NoNeighbour {
                    ifindex: local,
                    mtu: 1500,
                },
            ),
            (
                a(SERVICE6_UNRESOLVED),
                Route::NoNeighbour {
                    ifindex: local,
                    mtu: 1500,
                },
            ),
        ])
    }

    fn tables(&self, text: &str) -> CompiledTables {
        from_toml(text, "tables")
            .unwrap()
            .on_interfaces(self.n3.0, self.local.0)
    }
}

/// The same tables with fixed next-hop MACs: what a FIB next hop must equal but for the MACs.
fn fixed_macs(text: &str) -> String {
    text.replacen(
        "next_hop = \"fib\"",
        "next_hop_mac = \"02:00:00:00:00:01\"",
        1,
    )
    .replacen(
        "next_hop = \"fib\"",
        "next_hop_mac = \"02:00:00:00:01:02\"",
        1,
    )
}

/// A G-PDU of session `teid` from its UE `src` to `dst`, `pad` payload bytes.
fn g_pdu(teid: u32, src: &str, dst: &str, ttl: u8, pad: usize) -> Vec<u8> {
    let payload = vec![0x5a; pad];
    let inner = match (
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
    ) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(
            s.octets(),
            d.octets(),
            17,
            ttl,
            0,
            &udp(40000, 443, &payload),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6(s.octets(), d.octets(), 17, ttl, &udp(40000, 443, &payload))
        }
        _ => unreachable!("one family"),
    };
    n3_v4(
        v4("198.18.0.1"),
        v4("198.18.0.2"),
        &gtp(255, teid, None, &[ul_container(9)], &inner),
    )
}

/// A packet from a local service `src` to UE `dst`, `pad` payload bytes.
fn to_ue(src: &str, dst: &str, ttl: u8, pad: usize) -> Vec<u8> {
    let payload = vec![0xa5; pad];
    let (ethertype, ip) = match (
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
    ) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            0x0800,
            ipv4(
                s.octets(),
                d.octets(),
                17,
                ttl,
                0,
                &udp(443, 40000, &payload),
            ),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => (
            0x86dd,
            ipv6(s.octets(), d.octets(), 17, ttl, &udp(443, 40000, &payload)),
        ),
        _ => unreachable!("one family"),
    };
    let mut f = eth([0x02, 0, 0, 0, 1, 1], [0x02, 0x5e, 0, 0, 0, 9], ethertype);
    f.extend_from_slice(&ip);
    f
}

fn judge_both(fp: &FastPath, model: &Model, direction: Direction, frame: &[u8]) -> Judged {
    let kernel = fp.judge(direction, frame).unwrap();
    let expected = Judged::from(match direction {
        Direction::Uplink => model.uplink(frame),
        Direction::Downlink => model.downlink(frame),
    });
    let head = |j: &Judged| (j.verdict, j.reason, j.rule, j.session, j.packet.len());
    assert_eq!(
        head(&kernel),
        head(&expected),
        "{direction:?} frame of {} bytes: {:02x?}…",
        frame.len(),
        &frame[..frame.len().min(90)]
    );
    let first = kernel
        .packet
        .iter()
        .zip(&expected.packet)
        .position(|(k, m)| k != m);
    assert_eq!(first, None, "{direction:?}: kernel and model bytes differ");
    kernel
}

#[test]
fn the_fib_gives_the_next_hop_or_the_kernel_resolves_it_or_the_packet_is_dropped() {
    let _turn = turn();
    let bed = Bed::new();
    let tables = bed.tables(TABLES);
    let fixed = bed.tables(&fixed_macs(TABLES));
    let fp = fast_path();
    fp.install(&tables).unwrap();
    // A new namespace, whose FIB this fast path's watch (in ours) does not see.
    fp.fib_changed().unwrap();
    let model = Model::new(&tables).with_fib(bed.fib(GNB_MAC, SERVICE_MAC));
    let fixed_model = Model::new(&fixed);
    let ue6 = "2001:db8:45:1::9";
    use Direction::*;
    use Reason::*;
    use Verdict::*;
    // (what, direction, frame, verdict, reason, destination MAC if redirected)
    let cases = [
        (
            "uplink to a resolved service",
            Uplink,
            g_pdu(0x101, "10.45.0.1", SERVICE, 64, 100),
            Redirect,
            RuleLocal,
            Some(SERVICE_MAC),
        ),
        (
            "uplink IPv6 to a resolved service",
            Uplink,
            g_pdu(0x101, ue6, SERVICE6, 64, 100),
            Redirect,
            RuleLocal,
            Some(SERVICE_MAC),
        ),
        (
            "uplink to an unresolved service",
            Uplink,
            g_pdu(0x101, "10.45.0.1", SERVICE_UNRESOLVED, 64, 100),
            Pass,
            NextHopUnresolved,
            None,
        ),
        (
            "uplink IPv6 to an unresolved service",
            Uplink,
            g_pdu(0x101, ue6, SERVICE6_UNRESOLVED, 64, 100),
            Pass,
            NextHopUnresolved,
            None,
        ),
        (
            "uplink to an unroutable destination",
            Uplink,
            g_pdu(0x101, "10.45.0.1", UNROUTABLE, 64, 100),
            Drop,
            NoRoute,
            None,
        ),
        (
            "uplink to a destination routed out of N3",
            Uplink,
            g_pdu(0x101, "10.45.0.1", ON_N3, 64, 100),
            Drop,
            NoRoute,
            None,
        ),
        (
            "uplink within the route's MTU",
            Uplink,
            g_pdu(0x101, "10.45.0.1", SMALL_MTU, 64, 900),
            Redirect,
            RuleLocal,
            Some(SERVICE_MAC),
        ),
        (
            "uplink over the route's MTU",
            Uplink,
            g_pdu(0x101, "10.45.0.1", SMALL_MTU, 64, 1000),
            Drop,
            Oversize,
            None,
        ),
        (
            "uplink with an expiring TTL",
            Uplink,
            g_pdu(0x101, "10.45.0.1", SERVICE, 1, 100),
            Pass,
            TtlExpired,
            None,
        ),
        (
            "downlink to a resolved gNB",
            Downlink,
            to_ue(SERVICE, "10.45.0.1", 64, 100),
            Redirect,
            Encapsulated,
            Some(GNB_MAC),
        ),
        (
            "downlink to a resolved IPv6 gNB",
            Downlink,
            to_ue(SERVICE, "10.45.0.5", 64, 100),
            Redirect,
            Encapsulated,
            Some(GNB_MAC),
        ),
        (
            "downlink IPv6 to a resolved gNB",
            Downlink,
            to_ue(SERVICE6, ue6, 64, 100),
            Redirect,
            Encapsulated,
            Some(GNB_MAC),
        ),
        (
            "downlink to an unresolved gNB",
            Downlink,
            to_ue(SERVICE, "10.45.0.2", 64, 100),
            Pass,
            NextHopUnresolved,
            None,
        ),
        (
            "downlink to an unresolved IPv6 gNB",
            Downlink,
            to_ue(SERVICE, "10.45.0.6", 64, 100),
            Pass,
            NextHopUnresolved,
            None,
        ),
        (
            "downlink to an unroutable gNB",
            Downlink,
            to_ue(SERVICE, "10.45.0.3", 64, 100),
            Drop,
            NoRoute,
            None,
        ),
        (
            "downlink to a gNB routed out of the local side",
            Downlink,
            to_ue(SERVICE, "10.45.0.4", 64, 100),
            Drop,
            NoRoute,
            None,
        ),
        (
            "downlink over the N3 MTU",
            Downlink,
            to_ue(SERVICE, "10.45.0.1", 64, 1440),
            Drop,
            Oversize,
            None,
        ),
    ];
    let judged = mecgw_tests::in_netns(bed.name(), || {
        // One CPU, each case twice: the second from the answers kept per CPU, where they
        // were kept (the MTU case after the one within it, to the same destination).
        mecgw_tests::pin_to_cpu(0);
        cases
            .iter()
            .map(|(_, direction, frame, ..)| {
                judge_both(fp, &model, *direction, frame);
                judge_both(fp, &model, *direction, frame)
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    for ((what, direction, frame, verdict, reason, dmac), kernel) in cases.iter().zip(judged) {
        assert_eq!(
            (kernel.verdict, kernel.reason),
            (*verdict, *reason),
            "{what}"
        );
        let fixed = Judged::from(match direction {
            Uplink => fixed_model.uplink(frame),
            Downlink => fixed_model.downlink(frame),
        });
        match (verdict, dmac) {
            (Redirect, Some(dmac)) => {
                // The neighbour's MAC from our interface's; the rest as with a fixed MAC.
                let ours = if *direction == Uplink {
                    bed.local.1
                } else {
                    bed.n3.1
                };
                assert_eq!(kernel.packet[..6], dmac[..], "{what}: destination MAC");
                assert_eq!(kernel.packet[6..12], ours[..], "{what}: source MAC");
                assert_eq!(fixed.verdict, Redirect, "{what}");
                assert_eq!(kernel.packet[12..], fixed.packet[12..], "{what}");
            }
            (Pass, _) if *reason == NextHopUnresolved => {
                // Passed as it would leave, behind the frame's own MACs.
                assert_eq!(kernel.packet[..12], frame[..12], "{what}: MACs as received");
                let ip = &kernel.packet[14..];
                if *direction == Uplink {
                    // Decapsulated, TTL as received: the kernel decrements it forwarding.
                    let inner_at = frame.len() - ip.len();
                    assert_eq!(ip, &frame[inner_at..], "{what}");
                } else {
                    assert_eq!(
                        kernel.packet[12..],
                        fixed.packet[12..],
                        "{what}: encapsulated"
                    );
                }
            }
            _ => assert_eq!(kernel.packet, *frame, "{what}: left as it is"),
        }
    }
    let names: HashSet<&str> = mecgw_ebpf::Reason::ALL.iter().map(|r| r.name()).collect();
    assert!(names.contains("next_hop_unresolved"));
}

/// A neighbour's new MAC (VRRP failover, a replaced host) is followed from the next packet
/// on, without reinstalling anything; with a fixed MAC it would not be.
/// The programs keep the FIB's answers (the next-hop cache, on by default): a fast path loaded
/// in the namespace hears the kernel report the change (rtnetlink), and the first packet
/// after that takes the new MAC.
#[test]
fn a_neighbours_new_mac_is_followed_once_the_kernel_reports_it() {
    let _turn = turn();
    let bed = Bed::new();
    let tables = bed.tables(TABLES);
    let fp = mecgw_tests::in_netns(bed.name(), || {
        FastPath::load_with(FastPathOptions {
            flow_accounting: true,
            ..FastPathOptions::default()
        })
    })
    .unwrap()
    .expect("load the XDP programs (are we root?)");
    let fp = &fp;
    fp.install(&tables).unwrap();
    let up = g_pdu(0x101, "10.45.0.1", SERVICE, 64, 64);
    let down = to_ue(SERVICE, "10.45.0.1", 64, 64);
    let run = |gnb_mac, service_mac| {
        let model = Model::new(&tables).with_fib(bed.fib(gnb_mac, service_mac));
        mecgw_tests::in_netns(bed.name(), || {
            // One CPU's kept answers throughout: the next-hop cache is per CPU.
            mecgw_tests::pin_to_cpu(0);
            (
                judge_both(fp, &model, Direction::Uplink, &up),
                judge_both(fp, &model, Direction::Downlink, &down),
            )
        })
        .unwrap()
    };
    // Twice: the second time from the kept answers.
    for _ in 0..2 {
        let (before_up, before_down) = run(GNB_MAC, SERVICE_MAC);
        assert_eq!(before_up.packet[..6], SERVICE_MAC[..]);
        assert_eq!(before_down.packet[..6], GNB_MAC[..]);
    }
    let (before_up, before_down) = run(GNB_MAC, SERVICE_MAC);
    let seen = fp.fib_serial();
    assert_ne!(seen, 0, "the next-hop cache is on");
    bed.neighbour(SERVICE, NEW_MAC, LOCAL);
    bed.neighbour(ON_N3, NEW_MAC, N3);
    // The report reaches the watch thread asynchronously (a hang guard, not a timing
    // assertion: it usually takes microseconds).
    let waited = std::time::Instant::now();
    while fp.fib_serial() == seen {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(30),
            "the FIB watch never saw the neighbour change"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (after_up, after_down) = run(NEW_MAC, NEW_MAC);

    assert_eq!(after_up.reason, Reason::RuleLocal);
    assert_eq!(
        after_up.packet[..6],
        NEW_MAC[..],
        "uplink follows the new MAC"
    );
    assert_eq!(after_down.reason, Reason::Encapsulated);
    assert_eq!(
        after_down.packet[..6],
        NEW_MAC[..],
        "downlink follows the new MAC"
    );
    assert_eq!(after_up.packet[6..], before_up.packet[6..]);
    assert_eq!(after_down.packet[6..], before_down.packet[6..]);
}

/// A PFCP session's downlink (the PFCP-first entry program, `mecgw_downlink_pfcp`) takes its
/// MACs from the FIB as the tables' do: to a resolved gNB, redirected with the neighbour's
/// MAC; to an unresolved one, passed encapsulated; both as the model says, byte for byte.
#[test]
fn pfcp_sessions_downlink_takes_the_fib_next_hop_too() {
    use mecgw::datapath::{model::pfcp::PfcpEntries, pfcp_maps::PfcpOptions};
    use mecgw_ebpf::{MAX_SESSIONS, PfcpDownlink, pdr_action};

    let _turn = turn();
    static FP: std::sync::OnceLock<FastPath> = std::sync::OnceLock::new();
    let fp = FP.get_or_init(|| {
        FastPath::load_with(FastPathOptions {
            flow_accounting: true,
            pfcp: Some(PfcpOptions {
                sessions: 16,
                tunnels: 16,
                ues: 16,
                pdrs: 64,
                teid_min: 0x8000_0000,
            }),
            ..FastPathOptions::default()
        })
        .expect("load the XDP programs with PFCP (are we root?)")
    });
    let bed = Bed::new();
    let tables = bed.tables(TABLES);
    fp.install(&tables).unwrap();
    // Two PFCP UEs: one whose gNB's neighbour is resolved, one whose is not.
    let downlink = |n: u32, gnb: &str| {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&gnb.parse::<std::net::Ipv4Addr>().unwrap().octets());
        PfcpDownlink {
            session: 0x8000_0000 + n,
            counter: MAX_SESSIONS + n,
            pdr_id: 3,
            pdr_counter: n,
            action: pdr_action::ENCAPSULATE,
            flags: 0,
            downlink_teid: 0x9000 + n,
            qfi: 7,
            gnb: addr,
        }
    };
    let mut entries = PfcpEntries {
        teid_min: 0x8000_0000,
        ..PfcpEntries::default()
    };
    for (n, ue, gnb) in [
        (1, [10, 46, 0, 1], ON_N3),
        (2, [10, 46, 0, 2], "198.18.0.7"),
    ] {
        let d = downlink(n, gnb);
        fp.put_pfcp_downlink_v4(ue, &d).unwrap();
        entries.ue_v4.insert(ue, d);
    }
    let model = Model::new(&tables)
        .with_pfcp(entries)
        .with_fib(bed.fib(GNB_MAC, SERVICE_MAC));
    let (resolved, unresolved) = mecgw_tests::in_netns(bed.name(), || {
        (
            judge_both(
                fp,
                &model,
                Direction::Downlink,
                &to_ue(SERVICE, "10.46.0.1", 64, 64),
            ),
            judge_both(
                fp,
                &model,
                Direction::Downlink,
                &to_ue(SERVICE, "10.46.0.2", 64, 64),
            ),
        )
    })
    .unwrap();
    assert_eq!(
        (resolved.verdict, resolved.reason, resolved.session),
        (Verdict::Redirect, Reason::Encapsulated, Some(0x8000_0001))
    );
    assert_eq!(
        resolved.packet[..6],
        GNB_MAC[..],
        "the gNB's neighbour's MAC"
    );
    assert_eq!(
        (unresolved.verdict, unresolved.reason),
        (Verdict::Pass, Reason::NextHopUnresolved)
    );
    for ue in [[10, 46, 0, 1], [10, 46, 0, 2]] {
        fp.remove_pfcp_downlink_v4(ue).unwrap();
    }
}

/// SplitMix64: every random choice, from the seed.
use mecgw_tests::testbed::rng::SplitMix64 as Rng;

/// Random packets over the FIB's every answer, both directions, both families: kernel and
/// model agree on each.
#[test]
fn kernel_and_model_agree_on_random_packets_with_the_fib_next_hop() {
    let _turn = turn();
    let bed = Bed::new();
    let tables = bed.tables(TABLES);
    let fp = fast_path();
    fp.install(&tables).unwrap();
    // A new namespace, whose FIB this fast path's watch (in ours) does not see.
    fp.fib_changed().unwrap();
    let model = Model::new(&tables).with_fib(bed.fib(GNB_MAC, SERVICE_MAC));
    let seed = rand::random::<u64>();
    eprintln!("fastpath_fib: seed {seed}");
    let mut r = Rng(seed);
    let seen = mecgw_tests::in_netns(bed.name(), || {
        let mut seen = HashSet::new();
        for _ in 0..400 {
            let ttl = r.pick(&[64u8, 64, 64, 1]);
            let pad = r.pick(&[0usize, 64, 900, 960, 1000, 1400, 1460]);
            let judged = if r.one_in(2) {
                let (teid, ue) = r.pick(&[(0x101, "10.45.0.1"), (0x102, "10.45.0.2")]);
                let (ue, dst) = if r.one_in(4) {
                    (
                        "2001:db8:45:1::9",
                        r.pick(&[SERVICE6, SERVICE6_UNRESOLVED, "2001:db8:99::1"]),
                    )
                } else {
                    (
                        ue,
                        r.pick(&[SERVICE, SERVICE_UNRESOLVED, UNROUTABLE, ON_N3, SMALL_MTU]),
                    )
                };
                let teid = if ue.contains(':') { 0x101 } else { teid };
                judge_both(
                    fp,
                    &model,
                    Direction::Uplink,
                    &g_pdu(teid, ue, dst, ttl, pad),
                )
            } else {
                let (src, ue) = if r.one_in(4) {
                    (SERVICE6, r.pick(&["2001:db8:45:1::9", "2001:db8:45:5::9"]))
                } else {
                    (
                        SERVICE,
                        r.pick(&[
                            "10.45.0.1",
                            "10.45.0.2",
                            "10.45.0.3",
                            "10.45.0.4",
                            "10.45.0.5",
                            "10.45.0.6",
                        ]),
                    )
                };
                judge_both(fp, &model, Direction::Downlink, &to_ue(src, ue, ttl, pad))
            };
            seen.insert(judged.reason);
        }
        seen
    })
    .unwrap();
    use Reason::*;
    for reason in [
        RuleLocal,
        Encapsulated,
        NextHopUnresolved,
        NoRoute,
        Oversize,
        TtlExpired,
    ] {
        assert!(
            seen.contains(&reason),
            "seed {seed}: no packet had {reason:?}"
        );
    }
}
