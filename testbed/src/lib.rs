//! The testbed: what the demo, the end-to-end tests and the benchmarks run the gateway in,
//! and everything of it that does not link the gateway.
//!
//! Four network namespaces, `ran` (gNB and UEs), `mec` (the gateway host), `edge` (local
//! edge services) and `core` (the central UPF and the cloud), joined by veth pairs:
//!
//! ```text
//!  mecgw-tb-ran            mecgw-tb-mec                      mecgw-tb-edge
//!  mgw-tb-gnb ──N3── mgw-tb-n3     mgw-tb-local ──local── mgw-tb-svc
//!  198.18.0.1        198.18.0.2    198.18.1.1              198.18.1.2
//!                                  mgw-tb-core ──core──── mgw-tb-upf   mecgw-tb-core
//!                                  198.18.2.1              198.18.2.2
//! ```
//!
//! The gNB sends GTP-U to the UPF (198.18.2.2) through the gateway host, which routes it; the
//! gateway's XDP programs on `mgw-tb-n3` and `mgw-tb-local` take what the rules steer locally.
//! UEs are 198.19.0.0/16 and 2001:db8:100::/48 (a /64 each). Every address is from the
//! benchmark (198.18.0.0/15) and documentation (2001:db8::/32) ranges and lives only inside
//! these namespaces. MACs are fixed so that the gateway's tables can name next hops.
//!
//! A [`Testbed`] deletes every namespace it created when dropped, also when a step fails or
//! the user presses Ctrl-C (see [`interrupted`]). Stale namespaces left by a killed run are
//! removed before new ones are made. The names are fixed, so [`up`] first takes a lock
//! ([`TestbedLock`], an exclusive `flock` on [`LOCK_PATH`]) that it holds while the testbed
//! exists: a second process (`cargo xtask demo` while the tests run) waits for the first
//! one's testbed to go instead of deleting its namespaces as stale.
//!
//! Here: the topology and [`up`] (this file); namespaces, veth pairs and the lock
//! (`netns.rs`); the gateway's configuration for the testbed (`config.rs`); the processes on
//! it, [`Gateway`] and [`gnbsim`] (`processes.rs`); [`smf`], the test SMF (scapy's PFCP
//! layers) that programs the gateway's sessions over N4; and [`packet`], the packets the tools
//! and the tests build and parse independently of the gateway's code. The binaries are the tools
//! that run in the namespaces (`mecgw-gnbsim`, `mecgw-edge`, `mecgw-core`), `mecgw-testbed`
//! (`cargo xtask testbed up|down`) and `mecgw-demo` (`cargo xtask demo`).
//!
//! Nothing here links the gateway: the testbed checks it from outside.

mod config;
mod netns;
pub mod packet;
mod processes;
pub mod rng;
pub mod smf;

// Tests and tools run their own commands through these too.
pub use mecgw_cmd::{capture, run};

pub use config::{
    DatapathChoice, PfcpSettings, imsi, write_gateway_config, write_gateway_config_for,
    write_gateway_config_pfcp, write_tables,
};
pub use netns::{
    Endpoint, LOCK_PATH, PIN_ROOT, ScratchNetns, Testbed, TestbedLock, delete_all, in_netns, lock,
    netns_cmd, pin_root, remove_pins,
};
pub use processes::{
    Capture, Children, Gateway, catch_interrupts, gnbsim, interrupted, metric, ops_get,
    sample_value, xdp_attached,
};

pub const NS_RAN: &str = "mecgw-tb-ran";
pub const NS_MEC: &str = "mecgw-tb-mec";
pub const NS_EDGE: &str = "mecgw-tb-edge";
pub const NS_CORE: &str = "mecgw-tb-core";
pub const NAMESPACES: [&str; 4] = [NS_RAN, NS_MEC, NS_EDGE, NS_CORE];

/// One end of a testbed link.
pub struct Port {
    pub netns: &'static str,
    pub link: &'static str,
    pub mac: &'static str,
    pub v4: &'static str,
    pub v6: &'static str,
}

pub const GNB: Port = Port {
    netns: NS_RAN,
    link: "mgw-tb-gnb",
    mac: "02:6d:67:00:00:01",
    v4: "198.18.0.1",
    v6: "2001:db8:0:3::1",
};
pub const N3: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-n3",
    mac: "02:6d:67:00:00:02",
    v4: "198.18.0.2",
    v6: "2001:db8:0:3::2",
};
pub const LOCAL: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-local",
    mac: "02:6d:67:00:01:01",
    v4: "198.18.1.1",
    v6: "2001:db8:0:1::1",
};
pub const EDGE: Port = Port {
    netns: NS_EDGE,
    link: "mgw-tb-svc",
    mac: "02:6d:67:00:01:02",
    v4: "198.18.1.2",
    v6: "2001:db8:0:1::2",
};
pub const CORE: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-core",
    mac: "02:6d:67:00:02:01",
    v4: "198.18.2.1",
    v6: "2001:db8:0:2::1",
};
pub const UPF: Port = Port {
    netns: NS_CORE,
    link: "mgw-tb-upf",
    mac: "02:6d:67:00:02:02",
    v4: "198.18.2.2",
    v6: "2001:db8:0:2::2",
};

pub const UE_POOL_V4: &str = "198.19.0.0/16";
pub const UE_POOL_V6: &str = "2001:db8:100::/48";

/// Brings the testbed up. Dropping the result tears it down.
pub fn up() -> anyhow::Result<Testbed> {
    up_with_mtu(None)
}

/// [`up`], with every link's MTU (both ends) set to `mtu` when given: 9000 for jumbo frames.
pub fn up_with_mtu(mtu: Option<u32>) -> anyhow::Result<Testbed> {
    println!("==> testbed: namespaces {}", NAMESPACES.join(", "));
    // Taken before the stale-namespace check: namespaces another live process holds the lock
    // for are not stale.
    let lock = lock()?;
    let mut bed = Testbed::new(&NAMESPACES)?;
    bed.hold(lock);
    for (a, b) in [(&GNB, &N3), (&LOCAL, &EDGE), (&CORE, &UPF)] {
        let a_addrs = [format!("{}/24", a.v4), format!("{}/64", a.v6)];
        let b_addrs = [format!("{}/24", b.v4), format!("{}/64", b.v6)];
        let a_refs: Vec<&str> = a_addrs.iter().map(String::as_str).collect();
        let b_refs: Vec<&str> = b_addrs.iter().map(String::as_str).collect();
        bed.link(
            &Endpoint {
                netns: a.netns,
                link: a.link,
                mac: Some(a.mac),
                addrs: &a_refs,
            },
            &Endpoint {
                netns: b.netns,
                link: b.link,
                mac: Some(b.mac),
                addrs: &b_refs,
            },
        )?;
        if let Some(mtu) = mtu {
            let mtu = mtu.to_string();
            for p in [a, b] {
                bed.exec(p.netns, &["ip", "link", "set", "dev", p.link, "mtu", &mtu])?;
            }
        }
    }
    // The gateway host routes between N3, the local services and the core.
    bed.exec(NS_MEC, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    bed.exec(NS_MEC, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    // The gNB reaches the UPF through the gateway host, and the UPF answers the same way.
    bed.exec(NS_RAN, &["ip", "route", "add", "default", "via", N3.v4])?;
    bed.exec(
        NS_RAN,
        &["ip", "-6", "route", "add", "default", "via", N3.v6],
    )?;
    bed.exec(NS_CORE, &["ip", "route", "add", "default", "via", CORE.v4])?;
    bed.exec(
        NS_CORE,
        &["ip", "-6", "route", "add", "default", "via", CORE.v6],
    )?;
    // Local services answer UEs through the gateway, whose downlink program encapsulates.
    bed.exec(
        NS_EDGE,
        &["ip", "route", "add", UE_POOL_V4, "via", LOCAL.v4],
    )?;
    bed.exec(
        NS_EDGE,
        &["ip", "-6", "route", "add", UE_POOL_V6, "via", LOCAL.v6],
    )?;
    // veth delivers XDP-redirected frames only to a peer running NAPI: GRO turns it on. The
    // gateway redirects to the gNB (encapsulated downlink), the edge (local breakout) and the
    // UPF (a PFCP session's uplink re-tunnelled to its PSA).
    for p in [&GNB, &EDGE, &UPF] {
        bed.exec(p.netns, &["ethtool", "-K", p.link, "gro", "on"])?;
    }
    // A veth sender with checksum offload leaves L4 checksums partial (the "hardware" never
    // finishes them), and XDP sees the frame as is: the downlink program would encapsulate a
    // packet whose inner checksum is wrong. A real NIC delivers complete checksums, so the
    // edge service computes them in software here (see README, known limitations).
    bed.exec(EDGE.netns, &["ethtool", "-K", EDGE.link, "tx", "off"])?;
    // The same for the gNB: the userspace datapath reads frames through AF_PACKET, which sees
    // the bytes without the kernel's "checksum still to do" mark, and hands those it passes
    // back to the kernel through a TUN, where the mark is gone: an unfinished outer checksum
    // would reach the core as wrong. A real gNB's NIC puts complete checksums on the wire.
    bed.exec(GNB.netns, &["ethtool", "-K", GNB.link, "tx", "off"])?;
    Ok(bed)
}

/// The gNB simulator's numbering convention (see `mecgw-gnbsim`): UE `i` has uplink TEID
/// `UL_TEID_BASE + i` and downlink TEID `DL_TEID_BASE + i`.
pub const UL_TEID_BASE: u32 = 0x1000;
pub const DL_TEID_BASE: u32 = 0x2000;
/// QFI the simulator puts in uplink containers and expects in downlink ones.
pub const QFI: u8 = 9;
/// The operations port of `mecgw run` inside the `mec` namespace.
pub const METRICS: &str = "127.0.0.1:9464";

/// The sessions' numbering on a tool's command line (`#[command(flatten)]`): UE `i` (from
/// 0) has uplink TEID `ul_teid_base + i` and downlink TEID `dl_teid_base + i`; by default the
/// simulator's convention ([`UL_TEID_BASE`], [`DL_TEID_BASE`], [`QFI`]).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct SessionNumbering {
    /// Uplink TEID of the first session (decimal or 0x-hex).
    #[arg(long, default_value_t = UL_TEID_BASE, value_parser = parse_u32)]
    pub ul_teid_base: u32,
    /// Downlink TEID of the first session (decimal or 0x-hex).
    #[arg(long, default_value_t = DL_TEID_BASE, value_parser = parse_u32)]
    pub dl_teid_base: u32,
    /// QFI of the sessions: put in uplink containers by the gNB and in downlink ones by the
    /// core, and expected in downlink ones by the gNB.
    #[arg(long, default_value_t = QFI)]
    pub qfi: u8,
}

/// Parses a decimal or `0x`-prefixed hexadecimal u32 (TEIDs on the tools' command lines).
pub fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}
