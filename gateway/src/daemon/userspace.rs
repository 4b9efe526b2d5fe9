//! The userspace datapath: the reference model ([`crate::datapath::model`]) run over AF_PACKET
//! sockets (pnet's datalink channel), for hosts where XDP cannot attach, and the baseline the
//! XDP path is measured against (`cargo xtask bench e2e`).
//!
//! This module owns the two packet threads, the counters they keep, and the kernel
//! arrangement that stops the kernel from also forwarding what the model redirects or drops.
//!
//! # How it shares the interfaces with the kernel
//!
//! An AF_PACKET socket receives a *copy* of each frame; the kernel still gets the original.
//! XDP takes a frame away from the kernel; here the kernel must be told not to forward the
//! copies it gets of frames the model judges itself. No BPF is used (this is the no-XDP
//! fallback); the arrangement is policy routing inside the gateway's network namespace:
//!
//! - `ip rule pref 1000 iif N3 ipproto udp dport 2152 blackhole` (IPv4 and IPv6): the kernel
//!   forwards no G-PDU that arrives on N3. The local table (rule 0) comes first, so GTP-U
//!   addressed to the gateway itself (Echo) is still delivered locally.
//! - `ip rule pref 1001 iif LOCAL lookup 2152`, where table 2152 holds a `blackhole` route per
//!   UE address of the installed sessions: the kernel forwards nothing addressed to a UE that
//!   arrives from the local services. Other destinations fall through to the main table.
//! - A TUN device, `mgw-us-pass`: frames of those two classes that the model judges PASS are
//!   written to it, without their Ethernet header and otherwise byte for byte, and the kernel
//!   routes them exactly as it would have (rules match `iif N3`/`iif LOCAL`, not the TUN).
//!   Its reverse-path filter is turned off (net.ipv4.conf.all.rp_filter must be 0 too).
//!
//! Every other frame the model judges PASS is left to the kernel's own copy, untouched.
//! Frames sent out by the host itself are ignored (`PACKET_IGNORE_OUTGOING`).
//!
//! Limits, against XDP: (1) a PASS frame of the two classes reaches the kernel on
//! `mgw-us-pass`, not on its own interface: netfilter or policy rules keyed on the input
//! interface see the TUN for it; (2) on a reload, a UE added or removed is blackholed before
//! the model changes (added) or after (removed): a downlink frame for it in that window is
//! dropped; (3) the kernel still parses every frame once more, and the userspace copy costs
//! two system calls per frame: this path is many times slower than XDP; (4) it needs `ip`
//! (iproute2) and `/dev/net/tun`; (5) the addresses of the gateway itself are read at start
//! and at each reload, not followed live.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use mecgw_ebpf::{Counter, GTPU_PORT, Reason, Verdict};
use pnet_datalink::{self as datalink, Channel, DataLinkReceiver, DataLinkSender};
use tracing::{info, warn};

use crate::datapath::{
    CompiledTables, DatapathError, Direction,
    flow_counters::{FlowLosses, FlowSample, FlowTable},
    model::{self, Model},
    tables::Tables,
};

/// The TUN device through which PASS frames of the blackholed classes reach the kernel.
pub const PASS_TUN: &str = "mgw-us-pass";
/// Policy-routing rule preferences and table used by the arrangement.
const PREF_N3: &str = "1000";
const PREF_LOCAL: &str = "1001";
const TABLE: &str = "2152";
/// Largest frame read (GRO may hand AF_PACKET more than an MTU).
const FRAME_BUFFER: usize = 65_536 + 256;
/// How often the packet threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Counters, as the XDP programs keep them.
#[derive(Default)]
struct Counters {
    verdicts: [(AtomicU64, AtomicU64); Verdict::COUNT as usize],
    reasons: [(AtomicU64, AtomicU64); Reason::COUNT as usize],
    rules: Mutex<HashMap<u32, Counter>>,
    sessions: Mutex<HashMap<(u32, Direction), Counter>>,
    /// Frames the model redirected that could not be sent.
    tx_errors: AtomicU64,
    /// PASS frames that could not be handed to the kernel through the TUN.
    pass_errors: AtomicU64,
    /// Whether frames are counted per flow (off until [`UserspacePath::set_flow_accounting`]).
    flow_accounting: AtomicBool,
    flows: Mutex<FlowTable>,
}

fn add(slot: &(AtomicU64, AtomicU64), bytes: usize) {
    slot.0.fetch_add(1, Ordering::Relaxed);
    slot.1.fetch_add(bytes as u64, Ordering::Relaxed);
}

fn load(slot: &(AtomicU64, AtomicU64)) -> Counter {
    Counter {
        packets: slot.0.load(Ordering::Relaxed),
        bytes: slot.1.load(Ordering::Relaxed),
    }
}

fn bump(c: &mut Counter, bytes: usize) {
    *c = c.plus(Counter {
        packets: 1,
        bytes: bytes as u64,
    });
}

/// The model in force and what the kernel arrangement blackholes for it.
struct InForce {
    model: Model,
    tables: Tables,
    /// Addresses of this host: traffic to them is delivered locally, never blackholed.
    own: Vec<IpAddr>,
}

struct Shared {
    in_force: RwLock<Arc<InForce>>,
    counters: Counters,
    stop: AtomicBool,
    tun: File,
}

/// The running userspace datapath. Dropping it stops the threads and removes the kernel
/// arrangement.
pub struct UserspacePath {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    n3: String,
    local: String,
    /// UE prefixes now blackholed in table 2152.
    routed: Mutex<Vec<String>>,
}

impl UserspacePath {
    /// Opens AF_PACKET channels on `n3` and `local`, sets up the kernel arrangement, installs
    /// `tables` and starts the two packet threads.
    pub fn start(n3: &str, local: &str, tables: &CompiledTables) -> anyhow::Result<UserspacePath> {
        let n3_if = interface(n3)?;
        let local_if = interface(local)?;
        remove_arrangement(n3, local);
        let tun = open_tun(PASS_TUN)?;
        ip(&["link", "set", "dev", PASS_TUN, "up"])?;
        // Frames re-injected on the TUN come from addresses routed elsewhere: the reverse-path
        // filter must be off for it (even loose mode refuses them, measured on Linux 6.x).
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{PASS_TUN}/rp_filter"), "0")
            .context("turning the reverse-path filter of the TUN off")?;
        if std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
            .is_ok_and(|v| v.trim() != "0")
        {
            warn!(
                "net.ipv4.conf.all.rp_filter is on: IPv4 frames this datapath passes to the \
                 kernel through {PASS_TUN} will be dropped as martians; set it to 0"
            );
        }
        for family in ["-4", "-6"] {
            ip(&[
                family,
                "rule",
                "add",
                "pref",
                PREF_N3,
                "iif",
                n3,
                "ipproto",
                "udp",
                "dport",
                "2152",
                "blackhole",
            ])?;
            ip(&[
                family, "rule", "add", "pref", PREF_LOCAL, "iif", local, "lookup", TABLE,
            ])?;
        }
        let (n3_tx, n3_rx) = channel(&n3_if)?;
        let (local_tx, local_rx) = channel(&local_if)?;
        let shared = Arc::new(Shared {
            in_force: RwLock::new(Arc::new(InForce {
                model: Model::new(tables),
                tables: Tables::clone(tables),
                own: own_addresses(),
            })),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            tun,
        });
        let mut path = UserspacePath {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            n3: n3.to_string(),
            local: local.to_string(),
            routed: Mutex::new(Vec::new()),
        };
        path.route_ues(tables, true)?;
        for (direction, rx, tx) in [
            (Direction::Uplink, n3_rx, local_tx),
            (Direction::Downlink, local_rx, n3_tx),
        ] {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("mecgw-{}", direction.name()))
                .spawn(move || forward(&shared, direction, rx, tx))
                .context("starting a packet thread")?;
            path.threads.push(handle);
        }
        info!(%n3, %local, tun = PASS_TUN, "userspace datapath running (AF_PACKET)");
        Ok(path)
    }

    /// Puts `tables` in force: every frame judged after this returns is judged by them.
    pub fn install(&self, tables: &CompiledTables) -> Result<(), DatapathError> {
        let routes = |source: anyhow::Error| DatapathError::Userspace {
            action: "updating the UE routes in table 2152",
            source: source.into(),
        };
        self.route_ues(tables, false).map_err(routes)?;
        let next = Arc::new(InForce {
            model: Model::new(tables),
            tables: Tables::clone(tables),
            own: own_addresses(),
        });
        match self.shared.in_force.write() {
            Ok(mut slot) => *slot = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.route_ues(tables, true).map_err(routes)
    }

    /// Blackholes the UE addresses of `tables` in table 2152; with `prune`, also removes
    /// those of earlier tables.
    fn route_ues(&self, tables: &Tables, prune: bool) -> anyhow::Result<()> {
        let mut wanted: Vec<String> = Vec::new();
        for s in &tables.sessions {
            if let Some(a) = s.ue_ipv4 {
                wanted.push(format!("{a}/32"));
            }
            if let Some(p) = s.ue_ipv6 {
                wanted.push(p.to_string());
            }
        }
        let mut routed = match self.routed.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let mut batch = String::new();
        for p in &wanted {
            batch.push_str(&format!("route replace blackhole {p} table {TABLE}\n"));
        }
        if prune {
            for p in routed.iter().filter(|p| !wanted.contains(p)) {
                batch.push_str(&format!("route del blackhole {p} table {TABLE}\n"));
            }
        }
        ip_batch(&batch)?;
        if prune {
            *routed = wanted;
        } else {
            routed.extend(wanted);
            routed.sort();
            routed.dedup();
        }
        Ok(())
    }

    /// Frames and bytes per verdict.
    pub fn verdict_counters(&self) -> Vec<(Verdict, Counter)> {
        let c = &self.shared.counters;
        Verdict::ALL
            .iter()
            .map(|&v| (v, load(&c.verdicts[v as usize])))
            .collect()
    }

    /// Frames and bytes per reason.
    pub fn reason_counters(&self) -> Vec<(Reason, Counter)> {
        let c = &self.shared.counters;
        Reason::ALL
            .iter()
            .map(|&r| (r, load(&c.reasons[r as usize])))
            .collect()
    }

    /// The counter of rule `id` (zero if it never matched).
    pub fn rule_counter(&self, id: u32) -> Counter {
        let rules = match self.shared.counters.rules.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        rules.get(&id).copied().unwrap_or_default()
    }

    /// The counter of session `id` in `direction` (zero if it never matched).
    pub fn session_counter(&self, id: u32, direction: Direction) -> Counter {
        let sessions = match self.shared.counters.sessions.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        sessions.get(&(id, direction)).copied().unwrap_or_default()
    }

    /// Switches per-flow counting on or off (off at start, as `FastPath::load`), with at most
    /// `max_flows` flows per window (`[flows] max_flows`, as the XDP programs). Off, frames
    /// are not counted per flow; what was counted stays until the next harvest.
    pub fn set_flow_accounting(&self, on: bool, max_flows: u32) {
        lock(&self.shared.counters.flows).set_max_flows(max_flows);
        self.shared
            .counters
            .flow_accounting
            .store(on, Ordering::Relaxed);
    }

    /// Everything counted per flow since the last harvest, in no particular order: the
    /// samples the XDP programs give for the same frames
    /// ([`crate::datapath::FastPath::harvest_flows`]).
    pub fn harvest_flows(&self) -> Vec<FlowSample> {
        lock(&self.shared.counters.flows).harvest()
    }

    /// Flow records lost since the start (a full flow table).
    pub fn flow_losses(&self) -> FlowLosses {
        lock(&self.shared.counters.flows).losses()
    }

    /// Redirected frames that could not be sent, and PASS frames the TUN refused.
    pub fn errors(&self) -> (u64, u64) {
        let c = &self.shared.counters;
        (
            c.tx_errors.load(Ordering::Relaxed),
            c.pass_errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for UserspacePath {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("a userspace packet thread panicked");
            }
        }
        remove_arrangement(&self.n3, &self.local);
        info!("userspace datapath stopped; its rules and routes are removed");
    }
}

/// One packet thread: frames from `rx`, judged in `direction`, redirects out of `tx`.
fn forward(
    shared: &Shared,
    direction: Direction,
    mut rx: Box<dyn DataLinkReceiver>,
    mut tx: Box<dyn DataLinkSender>,
) {
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        let frame = match rx.next() {
            Ok(f) => f,
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                continue;
            }
            Err(e) => {
                warn!(error = %e, direction = direction.name(), "AF_PACKET receive failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let in_force = match shared.in_force.read() {
            Ok(m) => Arc::clone(&m),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        let outcome = match direction {
            Direction::Uplink => in_force.model.uplink(frame),
            Direction::Downlink => in_force.model.downlink(frame),
        };
        add(&c.verdicts[outcome.verdict as usize], frame.len());
        add(&c.reasons[outcome.reason as usize], frame.len());
        if let Some(id) = outcome.rule
            && let Ok(mut rules) = c.rules.lock()
        {
            bump(rules.entry(id).or_default(), frame.len());
        }
        if let Some(id) = outcome.session
            && let Ok(mut sessions) = c.sessions.lock()
        {
            bump(sessions.entry((id, direction)).or_default(), frame.len());
        }
        if let Some(hit) = &outcome.flow
            && c.flow_accounting.load(Ordering::Relaxed)
        {
            lock(&c.flows).record(hit);
        }
        match outcome.verdict {
            Verdict::Redirect | Verdict::Tx => {
                if !matches!(tx.send_to(&outcome.packet, None), Some(Ok(()))) {
                    c.tx_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Verdict::Drop => {}
            Verdict::Pass => {
                if let Some(ip) = blackholed(&in_force, direction, frame)
                    && (&shared.tun).write(ip).is_err()
                {
                    c.pass_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The value behind `m`, also if a thread panicked holding it (counters stay usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// If the kernel arrangement dropped the kernel's copy of `frame`, its IP packet (for the
/// TUN); `None` if the kernel has its own copy.
fn blackholed<'f>(in_force: &InForce, direction: Direction, frame: &'f [u8]) -> Option<&'f [u8]> {
    let (l3, ethertype) = model::parse_ethernet(frame)?;
    let ip = frame.get(l3..)?;
    let (dst, proto, l4): (IpAddr, u8, usize) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            // Fragments (first ones too) carry no ports for the rule to match: the kernel
            // forwards them itself (and the model passes them as not GTP).
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if frag != 0 {
                return None;
            }
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let ip = ip.get(..total.max(ihl))?;
            return finish(in_force, direction, ip, IpAddr::V4(dst), ip[9], ihl);
        }
        0x86dd if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let mut d = [0u8; 16];
            d.copy_from_slice(&ip[24..40]);
            let total = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let ip = ip.get(..total)?;
            // The upper layer behind extension headers, as the kernel's rule sees it; no
            // ports in a fragment, as IPv4.
            let (proto, l4, fragment) = model::ipv6_upper(ip, total)?;
            if fragment {
                return None;
            }
            (IpAddr::V6(Ipv6Addr::from(d)), proto, l4)
        }
        _ => return None,
    };
    let total = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    finish(in_force, direction, ip.get(..total)?, dst, proto, l4)
}

fn finish<'f>(
    in_force: &InForce,
    direction: Direction,
    ip: &'f [u8],
    dst: IpAddr,
    proto: u8,
    l4: usize,
) -> Option<&'f [u8]> {
    if in_force.own.contains(&dst) || dst.is_multicast() {
        return None;
    }
    let hit = match direction {
        Direction::Uplink => {
            proto == 17
                && ip
                    .get(l4 + 2..l4 + 4)
                    .is_some_and(|p| u16::from_be_bytes([p[0], p[1]]) == GTPU_PORT)
        }
        Direction::Downlink => in_force.tables.sessions.iter().any(|s| match dst {
            IpAddr::V4(a) => s.ue_ipv4 == Some(a),
            IpAddr::V6(_) => s.ue_ipv6.is_some_and(|p| p.contains(dst)),
        }),
    };
    hit.then_some(ip)
}

fn interface(name: &str) -> anyhow::Result<datalink::NetworkInterface> {
    datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no interface named {name:?} in this network namespace"))
}

fn own_addresses() -> Vec<IpAddr> {
    datalink::interfaces()
        .iter()
        .flat_map(|i| i.ips.iter().map(|n| n.ip()))
        .collect()
}

/// A pnet datalink channel on `iface` whose socket ignores frames this host sends.
fn channel(
    iface: &datalink::NetworkInterface,
) -> anyhow::Result<(Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>)> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the descriptor is handed to pnet, which owns it from here.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening an AF_PACKET socket");
    }
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a valid socket and `one` lives across the call; the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: `fd` is ours and not yet handed to anyone.
        unsafe { libc::close(fd) };
        return Err(e).context("PACKET_IGNORE_OUTGOING (Linux 4.20 or newer is needed)");
    }
    let config = datalink::Config {
        read_buffer_size: FRAME_BUFFER,
        write_buffer_size: FRAME_BUFFER,
        read_timeout: Some(POLL),
        promiscuous: false,
        socket_fd: Some(fd),
        ..datalink::Config::default()
    };
    match datalink::channel(iface, config)
        .with_context(|| format!("AF_PACKET channel on {}", iface.name))?
    {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => anyhow::bail!("{}: not an Ethernet channel", iface.name),
    }
}

/// Opens (creating) the TUN device `name`, without packet information headers.
fn open_tun(name: &str) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes an `ifreq`, which `req` is; `file` is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("creating TUN {name}"));
    }
    Ok(file)
}

/// Runs `ip ARGS`; fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip -batch -` on `commands`.
fn ip_batch(commands: &str) -> anyhow::Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch (iproute2)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip -batch` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the rules, routes and TUN of an earlier run (missing ones are fine).
fn remove_arrangement(n3: &str, local: &str) {
    for family in ["-4", "-6"] {
        for (pref, iif) in [(PREF_N3, n3), (PREF_LOCAL, local)] {
            while ip(&[family, "rule", "del", "pref", pref, "iif", iif]).is_ok() {}
        }
        let _ = ip(&[family, "route", "flush", "table", TABLE]);
    }
    let _ = ip(&["link", "del", "dev", PASS_TUN]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::datapath::tables::tests::MINIMAL;

    fn in_force() -> InForce {
        let text = format!(
            "{MINIMAL}\n[[sessions]]\nid = 1\nuplink_teid = 1\ndownlink_teid = 2\n\
             ue_ipv6 = \"2001:db8:45::/64\"\ngnb = \"198.18.1.1\"\nqfi = 9\n"
        );
        let t = crate::datapath::compile::from_toml(&text, "test").unwrap();
        InForce {
            model: Model::new(&t),
            tables: Tables::clone(&t),
            own: Vec::new(),
        }
    }

    /// Ethernet with `tags` (TPID, VLAN id) and an IPv6 packet with one 8-byte
    /// destination-options header before `next`/`payload`.
    fn frame(tags: &[u16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for &tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0, 7]);
        }
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[60, 64]);
        f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    /// What the kernel's rules blackhole reaches the TUN whatever the tags and extension
    /// headers in front of it: a G-PDU over IPv6 behind a destination-options header on a
    /// QinQ frame (uplink), and a packet to a UE's IPv6 prefix the same way (downlink).
    #[test]
    fn blackholed_frames_are_found_behind_two_tags_and_ipv6_extension_headers() {
        let f = in_force();
        let gnb = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let udp_2152 = [0x08, 0x68, 0x08, 0x68, 0, 12, 0, 0, 0x30, 0xff, 0, 0];
        let up = frame(&[0x88a8, 0x8100], gnb, 17, &udp_2152);
        let ip = blackholed(&f, Direction::Uplink, &up).unwrap();
        assert_eq!(ip, &up[22..], "the IP packet, without Ethernet and tags");
        let other_port = [0x08, 0x68, 0x00, 0x35, 0, 12, 0, 0, 0x30, 0xff, 0, 0];
        let not_gtp = frame(&[0x8100, 0x8100], gnb, 17, &other_port);
        assert!(blackholed(&f, Direction::Uplink, &not_gtp).is_none());

        let ue = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
        ];
        let down = frame(&[0x8100, 0x8100], ue, 17, &other_port);
        assert_eq!(
            blackholed(&f, Direction::Downlink, &down).unwrap(),
            &down[22..]
        );
        let elsewhere = frame(&[0x8100], gnb, 17, &other_port);
        assert!(blackholed(&f, Direction::Downlink, &elsewhere).is_none());
    }
}
