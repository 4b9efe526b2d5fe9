//! `mecgw-gnbsim`: a gNB and its UEs, run in the testbed's `ran` namespace.
//!
//! Every UE has a PDU session: UE `i` (from 0) has IPv4 address `ue_v4_base + i`, IPv6
//! address `<ue_v6_prefix>:i::1` (a /64 per UE), uplink TEID `ul_teid_base + i` and downlink TEID
//! `dl_teid_base + i`. The simulator sends each probe from each UE as a G-PDU (with an uplink
//! PDU Session Container) to the UPF's address over N3, through the gateway, and waits for the
//! answer to come back as a downlink G-PDU. Each answer is checked independently of the
//! gateway's code: message type, downlink TEID, container direction and QFI, inner checksums,
//! addresses and payload. It prints per-probe results and round-trip times as JSON.
//!
//! Probes are `NAME=KIND:ADDR[:PORT]` with KIND `udp`, `icmp` or `tcp` (a whole TCP connection:
//! handshake, data echoed by the service, orderly close).
//!
//! With `--ul-teids` the uplink TEIDs are given, one per UE (those a UPF chose for the
//! sessions an SMF set up over PFCP), instead of numbered. The report also counts, per UE,
//! the inner IP packets and octets sent uplink and received downlink (by the downlink
//! G-PDU's outer source: the gateway's local breakout or the core), every downlink G-PDU
//! for the UE's downlink TEID included, also late ones; `--drain-ms` keeps counting that long
//! after the last probe. These are what a usage report of the session must add up to.
//!
//! `--blast N` (for `cargo xtask bench e2e`) instead sends N UDP G-PDUs to the first probe
//! (which must be `udp`), cycling over the UEs, at `--rate` packets per second (0: as fast as
//! the socket takes them), from one thread, while another counts the answers (also by outer
//! source: the gateway's local breakout or the core). Each payload
//! carries its sequence number and send time, so every answer gives a round-trip time and
//! duplicates are not counted twice. It reports sent, answered, loss and RTT p50/p99.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use mecgw_testbed::{
    SessionNumbering,
    packet::{self, Gtpu, IpPacket, PduType, TcpHeader, gtp_type, tcp_flags},
};

#[derive(Parser)]
#[command(about = "testbed gNB/UE simulator over GTP-U")]
struct Args {
    /// Outer destination of uplink G-PDUs: the UPF, reached through the gateway.
    #[arg(long)]
    upf: IpAddr,
    /// Local address to send from (default: any).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Number of UEs.
    #[arg(long, default_value_t = 4)]
    ues: u32,
    #[arg(long, default_value = "198.19.0.1")]
    ue_v4_base: Ipv4Addr,
    /// First 48 bits of the UEs' IPv6 /64 prefixes.
    #[arg(long, default_value = "2001:db8:100::")]
    ue_v6_prefix: Ipv6Addr,
    #[command(flatten)]
    sessions: SessionNumbering,
    /// Uplink TEIDs, one per UE in order (decimal or 0x-hex, comma-separated), instead of
    /// `--ul-teid-base` numbering: the TEIDs a UPF chose for PFCP sessions.
    #[arg(long, value_delimiter = ',', value_parser = mecgw_testbed::parse_u32)]
    ul_teids: Vec<u32>,
    /// After the last probe, keep counting downlink G-PDUs for this many milliseconds.
    #[arg(long, default_value_t = 0)]
    drain_ms: u64,
    /// Probes, `NAME=KIND:ADDR[:PORT]`; repeatable.
    #[arg(long = "probe", required = true)]
    probes: Vec<String>,
    /// Rounds: each UE runs every probe this many times.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Bytes of pattern after a UDP probe's token: with 7900, G-PDUs of about 8 KB, for a
    /// jumbo-frame N3 (the answer must carry them back exactly).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Append every uplink datagram sent, as hex, one per line, to this file.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
    /// Blast mode: send this many UDP G-PDUs to the first probe and count the answers.
    #[arg(long, default_value_t = 0)]
    blast: u64,
    /// Blast mode: packets per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Udp,
    Icmp,
    Tcp,
}

#[derive(Clone, Debug)]
struct Probe {
    name: String,
    kind: Kind,
    target: IpAddr,
    port: u16,
}

impl std::str::FromStr for Probe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("probe {s:?}: expected NAME=KIND:ADDR[:PORT], KIND udp|icmp|tcp");
        let (name, spec) = s.split_once('=').ok_or_else(bad)?;
        let (kind, rest) = spec.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "udp" => Kind::Udp,
            "icmp" => Kind::Icmp,
            "tcp" => Kind::Tcp,
            _ => return Err(bad()),
        };
        let (target, port) = if kind == Kind::Icmp {
            (rest.trim_matches(['[', ']']).parse().map_err(|_| bad())?, 0)
        } else {
            let sa: SocketAddr = rest.parse().map_err(|_| bad())?;
            (sa.ip(), sa.port())
        };
        Ok(Probe {
            name: name.to_string(),
            kind,
            target,
            port,
        })
    }
}

/// One UE's PDU session, by the simulator's numbering convention.
#[derive(Clone, Copy, Debug)]
struct Ue {
    index: u32,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    ul_teid: u32,
    dl_teid: u32,
}

impl Ue {
    fn new(args: &Args, index: u32) -> Ue {
        let mut seg = args.ue_v6_prefix.segments();
        seg[3] = index as u16;
        seg[7] = 1;
        let ul_teid = match args.ul_teids.get(index as usize) {
            Some(&teid) => teid,
            None => args.sessions.ul_teid_base.wrapping_add(index),
        };
        Ue {
            index,
            v4: Ipv4Addr::from(u32::from(args.ue_v4_base).wrapping_add(index)),
            v6: Ipv6Addr::from(seg),
            ul_teid,
            dl_teid: args.sessions.dl_teid_base.wrapping_add(index),
        }
    }

    fn addr_for(&self, target: IpAddr) -> IpAddr {
        if target.is_ipv4() {
            IpAddr::V4(self.v4)
        } else {
            IpAddr::V6(self.v6)
        }
    }
}

/// Results of one probe over all UEs and rounds.
#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    lost: u64,
    bad: BTreeMap<String, u64>,
    rtts: Vec<Duration>,
}

/// Inner IP packets and octets.
#[derive(Clone, Copy, Default)]
struct Volume {
    packets: u64,
    octets: u64,
}

impl Volume {
    fn add(&mut self, octets: usize) {
        self.packets += 1;
        self.octets += octets as u64;
    }

    fn json(self) -> serde_json::Value {
        serde_json::json!({"packets": self.packets, "octets": self.octets})
    }
}

struct Sim {
    sock: UdpSocket,
    record: Option<std::fs::File>,
    upf: SocketAddr,
    qfi: u8,
    timeout: Duration,
    /// Pattern bytes after a UDP probe's token (`--pad`).
    pad: usize,
    stray: u64,
    buf: Vec<u8>,
    /// The first downlink TEID and the number of UEs: which UE a downlink G-PDU is for.
    dl_teid_base: u32,
    ues: u32,
    /// Per UE: what was sent uplink, and what came back downlink by outer source.
    uplink: Vec<Volume>,
    downlink: Vec<BTreeMap<IpAddr, Volume>>,
}

/// What a downlink answer failed on.
type Bad = String;

impl Sim {
    fn send(&mut self, ue: &Ue, inner: &[u8]) -> anyhow::Result<()> {
        let msg = Gtpu::g_pdu(ue.ul_teid, Some((PduType::Uplink, self.qfi)), inner);
        if let Some(f) = self.record.as_mut() {
            use std::io::Write as _;
            let hex: String = msg.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(f, "{hex}").context("recording a sent datagram")?;
        }
        self.sock.send_to(&msg, self.upf).context("send G-PDU")?;
        self.uplink[ue.index as usize].add(inner.len());
        Ok(())
    }

    /// Counts a downlink G-PDU from `from` for the UE whose downlink TEID it carries.
    fn count_downlink(&mut self, msg: &Gtpu, from: IpAddr) {
        let ue = msg.teid.wrapping_sub(self.dl_teid_base);
        if msg.msg_type == gtp_type::G_PDU && ue < self.ues {
            self.downlink[ue as usize]
                .entry(from)
                .or_default()
                .add(msg.payload.len());
        }
    }

    /// Receives and counts downlink G-PDUs until `deadline`.
    fn drain(&mut self, deadline: Instant) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let _ = self.sock.set_read_timeout(Some(deadline - now));
            let Ok((n, from)) = self.sock.recv_from(&mut self.buf) else {
                continue;
            };
            if let Ok(msg) = Gtpu::parse(&self.buf[..n]) {
                self.count_downlink(&msg, from.ip());
            }
        }
    }

    /// Waits for a downlink G-PDU for `ue` whose inner packet `accept` takes. Answers for
    /// other probes (late ones) are counted as stray. Returns the inner packet, an error
    /// describing a malformed answer, or `None` on timeout.
    fn receive(
        &mut self,
        ue: &Ue,
        deadline: Instant,
        accept: &mut dyn FnMut(&IpPacket) -> bool,
    ) -> Option<Result<IpPacket, Bad>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let _ = self.sock.set_read_timeout(Some(deadline - now));
            let (n, from) = match self.sock.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let msg = match Gtpu::parse(&self.buf[..n]) {
                Ok(m) => m,
                Err(e) => return Some(Err(format!("malformed GTP-U: {e}"))),
            };
            self.count_downlink(&msg, from.ip());
            if msg.msg_type != gtp_type::G_PDU {
                self.stray += 1;
                continue;
            }
            let inner = match IpPacket::parse(&msg.payload) {
                Ok(p) => p,
                Err(e) => return Some(Err(format!("malformed inner packet: {e}"))),
            };
            if !accept(&inner) {
                self.stray += 1;
                continue;
            }
            if msg.teid != ue.dl_teid {
                return Some(Err(format!(
                    "TEID {:#x}, expected downlink TEID {:#x}",
                    msg.teid, ue.dl_teid
                )));
            }
            if msg.container != Some((PduType::Downlink as u8, self.qfi)) {
                return Some(Err(format!(
                    "container {:?}, expected downlink QFI {}",
                    msg.container, self.qfi
                )));
            }
            if !inner.header_ok || !inner.l4_checksum_ok() {
                return Some(Err("bad inner checksum".to_string()));
            }
            return Some(Ok(inner));
        }
    }

    /// One UDP or ICMP exchange. Returns the round-trip time.
    fn ping(&mut self, ue: &Ue, probe: &Probe, round: u32) -> Result<Option<Duration>, Bad> {
        let src = ue.addr_for(probe.target);
        let mut token = format!("mecgw-probe ue={} round={round}", ue.index).into_bytes();
        if probe.kind == Kind::Udp {
            token.extend((0..self.pad).map(|i| b'a' + (i % 26) as u8));
        }
        let sport = 30000 + (ue.index % 30000) as u16;
        let seq = round as u16;
        let id = ue.index as u16;
        let inner = match probe.kind {
            Kind::Udp => packet::inner::udp(src, probe.target, sport, probe.port, &token),
            _ => packet::inner::icmp_echo(src, probe.target, false, id, seq, &token),
        };
        let start = Instant::now();
        self.send(ue, &inner).map_err(|e| e.to_string())?;
        let kind = probe.kind;
        let (target, port) = (probe.target, probe.port);
        let mut accept = |p: &IpPacket| {
            p.dst == src
                && p.src == target
                && match kind {
                    Kind::Udp => p.ports() == Some((port, sport)),
                    _ => matches!(p.icmp_echo(), Some((0 | 129, i, s)) if i == id && s == seq),
                }
        };
        match self.receive(ue, start + self.timeout, &mut accept) {
            None => Ok(None),
            Some(Err(bad)) => Err(bad),
            Some(Ok(p)) if p.l4_payload() != &token[..] => {
                Err("answer payload differs".to_string())
            }
            Some(Ok(_)) => Ok(Some(start.elapsed())),
        }
    }

    /// One whole TCP connection: handshake, data echoed back, orderly close. Returns the
    /// handshake's round-trip time.
    fn tcp(&mut self, ue: &Ue, probe: &Probe, round: u32) -> Result<Option<Duration>, Bad> {
        let src = ue.addr_for(probe.target);
        let dst = probe.target;
        let sport = 40000 + ((ue.index * 97 + round) % 20000) as u16;
        let isn: u32 = 0x1000_0000u32.wrapping_mul(round + 1) ^ (ue.index << 8);
        let hdr = |seq, ack, flags| TcpHeader {
            sport,
            dport: probe.port,
            seq,
            ack,
            flags,
            window: 65535,
        };
        let from_server = move |p: &IpPacket| {
            p.dst == src && p.src == dst && p.ports() == Some((hdr(0, 0, 0).dport, sport))
        };
        let start = Instant::now();
        let deadline = start + self.timeout;
        self.send(
            ue,
            &packet::inner::tcp(src, dst, hdr(isn, 0, tcp_flags::SYN), b""),
        )
        .map_err(|e| e.to_string())?;
        let synack = match self.receive(ue, deadline, &mut |p| from_server(p)) {
            None => return Ok(None),
            Some(r) => r?,
        };
        let h = synack.tcp().ok_or("not TCP")?;
        if h.flags & (tcp_flags::SYN | tcp_flags::ACK) != tcp_flags::SYN | tcp_flags::ACK
            || h.ack != isn.wrapping_add(1)
        {
            return Err(format!(
                "expected SYN-ACK of {isn}, got flags {:#x}",
                h.flags
            ));
        }
        let rtt = start.elapsed();
        let server_isn = h.seq;
        let data = format!("mecgw-tcp ue={} round={round}", ue.index).into_bytes();
        let mut seq = isn.wrapping_add(1);
        let mut ack = server_isn.wrapping_add(1);
        self.send(
            ue,
            &packet::inner::tcp(
                src,
                dst,
                hdr(seq, ack, tcp_flags::ACK | tcp_flags::PSH),
                &data,
            ),
        )
        .map_err(|e| e.to_string())?;
        seq = seq.wrapping_add(data.len() as u32);
        let mut echoed = Vec::new();
        while echoed.len() < data.len() {
            let seg = match self.receive(ue, deadline, &mut |p| from_server(p)) {
                None => return Ok(None),
                Some(r) => r?,
            };
            let h = seg.tcp().ok_or("not TCP")?;
            if h.flags & tcp_flags::RST != 0 {
                return Err("connection reset by the service".to_string());
            }
            if h.seq == ack && !seg.l4_payload().is_empty() {
                echoed.extend_from_slice(seg.l4_payload());
                ack = ack.wrapping_add(seg.l4_payload().len() as u32);
            }
        }
        if echoed != data {
            return Err("TCP echo differs from what was sent".to_string());
        }
        self.send(
            ue,
            &packet::inner::tcp(
                src,
                dst,
                hdr(seq, ack, tcp_flags::FIN | tcp_flags::ACK),
                b"",
            ),
        )
        .map_err(|e| e.to_string())?;
        loop {
            let seg = match self.receive(ue, deadline, &mut |p| from_server(p)) {
                None => return Ok(None),
                Some(r) => r?,
            };
            let h = seg.tcp().ok_or("not TCP")?;
            if h.flags & tcp_flags::FIN != 0 {
                let fin_ack = h.seq.wrapping_add(1);
                self.send(
                    ue,
                    &packet::inner::tcp(
                        src,
                        dst,
                        hdr(seq.wrapping_add(1), fin_ack, tcp_flags::ACK),
                        b"",
                    ),
                )
                .map_err(|e| e.to_string())?;
                return Ok(Some(rtt));
            }
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(idx).copied()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let probes: Vec<Probe> = args
        .probes
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    if args.ues == 0 || args.ues > 60000 {
        bail!("--ues must be 1-60000");
    }
    if !args.ul_teids.is_empty() && args.ul_teids.len() != args.ues as usize {
        bail!(
            "--ul-teids gives {} TEIDs for {} UEs",
            args.ul_teids.len(),
            args.ues
        );
    }
    let bind = SocketAddr::new(
        args.bind.unwrap_or(if args.upf.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }),
        packet::GTPU_PORT,
    );
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    let record = match &args.record {
        Some(p) => {
            Some(std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?)
        }
        None => None,
    };
    let mut sim = Sim {
        sock,
        record,
        upf: SocketAddr::new(args.upf, packet::GTPU_PORT),
        qfi: args.sessions.qfi,
        timeout: Duration::from_millis(args.timeout_ms),
        pad: args.pad,
        stray: 0,
        buf: vec![0u8; 65536],
        dl_teid_base: args.sessions.dl_teid_base,
        ues: args.ues,
        uplink: vec![Volume::default(); args.ues as usize],
        downlink: vec![BTreeMap::new(); args.ues as usize],
    };
    let ues: Vec<Ue> = (0..args.ues).map(|i| Ue::new(&args, i)).collect();
    if args.blast > 0 {
        return blast(&args, &probes[0], &ues, sim);
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for round in 0..args.count {
        for ue in &ues {
            for probe in &probes {
                let tally = tallies.entry(probe.name.clone()).or_default();
                tally.sent += 1;
                let outcome = match probe.kind {
                    Kind::Tcp => sim.tcp(ue, probe, round),
                    _ => sim.ping(ue, probe, round),
                };
                match outcome {
                    Ok(Some(rtt)) => {
                        tally.ok += 1;
                        tally.rtts.push(rtt);
                    }
                    Ok(None) => tally.lost += 1,
                    Err(bad) => *tally.bad.entry(bad).or_default() += 1,
                }
            }
        }
        if args.interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
    }
    sim.drain(Instant::now() + Duration::from_millis(args.drain_ms));
    let mut report = serde_json::Map::new();
    for (name, mut t) in tallies {
        t.rtts.sort();
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        report.insert(
            name,
            serde_json::json!({
                "sent": t.sent,
                "ok": t.ok,
                "lost": t.lost,
                "bad": t.bad,
                "rtt_p50_us": us(percentile(&t.rtts, 0.5)),
                "rtt_p99_us": us(percentile(&t.rtts, 0.99)),
            }),
        );
    }
    report.insert("stray".to_string(), serde_json::json!(sim.stray));
    let per_ue: Vec<serde_json::Value> = ues
        .iter()
        .map(|ue| {
            let i = ue.index as usize;
            let down: serde_json::Map<String, serde_json::Value> = sim.downlink[i]
                .iter()
                .map(|(from, v)| (from.to_string(), v.json()))
                .collect();
            serde_json::json!({
                "ue": ue.index,
                "ul_teid": ue.ul_teid,
                "uplink": sim.uplink[i].json(),
                "downlink": down,
            })
        })
        .collect();
    report.insert("ues".to_string(), serde_json::Value::Array(per_ue));
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}

/// Largest blast: the receiver keeps one flag per packet.
const MAX_BLAST: u64 = 100_000_000;

/// `--blast`: N UDP G-PDUs at `--rate`, answers counted; prints the JSON report.
fn blast(args: &Args, probe: &Probe, ues: &[Ue], sim: Sim) -> anyhow::Result<()> {
    if probe.kind != Kind::Udp {
        bail!("--blast needs a udp probe first, not {:?}", probe.name);
    }
    if args.blast > MAX_BLAST {
        bail!("--blast is at most {MAX_BLAST}");
    }
    let n = args.blast;
    let tx = sim.sock.try_clone().context("cloning the socket")?;
    let rx = sim.sock;
    rx.set_read_timeout(Some(Duration::from_millis(20)))?;
    let start = Instant::now();
    let (upf, qfi, rate, target, port) = (
        sim.upf,
        args.sessions.qfi,
        args.rate,
        probe.target,
        probe.port,
    );
    let ues_tx = ues.to_vec();
    let sender = std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
        let mut sent = 0u64;
        for seq in 0..n {
            if rate > 0 {
                let due = Duration::from_secs_f64(seq as f64 / rate as f64);
                loop {
                    let now = start.elapsed();
                    if now >= due {
                        break;
                    }
                    if due - now > Duration::from_micros(200) {
                        std::thread::sleep(due - now - Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            let ue = &ues_tx[(seq % ues_tx.len() as u64) as usize];
            let mut payload = [0u8; 32];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            let at = start.elapsed().as_nanos() as u64;
            payload[8..16].copy_from_slice(&at.to_be_bytes());
            let src = ue.addr_for(target);
            let sport = 30000 + (ue.index % 30000) as u16;
            let inner = packet::inner::udp(src, target, sport, port, &payload);
            let msg = Gtpu::g_pdu(ue.ul_teid, Some((PduType::Uplink, qfi)), &inner);
            // A full socket buffer is loss at this rate, as on a wire: count it as sent.
            let _ = tx.send_to(&msg, upf);
            sent += 1;
        }
        Ok((sent, start.elapsed()))
    });
    let mut seen = vec![false; n as usize];
    let mut answered = 0u64;
    // By the downlink G-PDU's outer source: the gateway's local breakout, or the core.
    let mut answered_from = BTreeMap::new();
    let mut bad = 0u64;
    let mut rtts: Vec<Duration> = Vec::with_capacity(n.min(1 << 22) as usize);
    let mut buf = vec![0u8; 65536];
    let mut done_at: Option<Instant> = None;
    loop {
        if done_at.is_none() && sender.is_finished() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > Duration::from_millis(300)) || answered == n {
            break;
        }
        let Ok((len, from)) = rx.recv_from(&mut buf) else {
            continue;
        };
        let now = start.elapsed();
        let answer = Gtpu::parse(&buf[..len]).ok().and_then(|m| {
            let inner = IpPacket::parse(&m.payload).ok()?;
            let p = inner.l4_payload();
            (m.msg_type == gtp_type::G_PDU && inner.src == target && p.len() == 32).then(|| {
                let seq = u64::from_be_bytes(p[..8].try_into().unwrap_or_default());
                let at = u64::from_be_bytes(p[8..16].try_into().unwrap_or_default());
                (seq, at)
            })
        });
        match answer {
            Some((seq, at)) if seq < n && !seen[seq as usize] => {
                seen[seq as usize] = true;
                answered += 1;
                *answered_from.entry(from.ip().to_string()).or_insert(0u64) += 1;
                rtts.push(now.saturating_sub(Duration::from_nanos(at)));
            }
            _ => bad += 1,
        }
    }
    let (sent, send_time) = match sender.join() {
        Ok(r) => r?,
        Err(_) => bail!("the sender thread panicked"),
    };
    rtts.sort();
    let secs = send_time.as_secs_f64().max(1e-9);
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    let report = serde_json::json!({
        "blast": {
            "sent": sent,
            "answered": answered,
            "answered_from": answered_from,
            "other": bad,
            "send_secs": secs,
            "offered_pps": sent as f64 / secs,
            "answered_pps": answered as f64 / secs,
            "loss": 1.0 - answered as f64 / sent.max(1) as f64,
            "rtt_p50_us": us(percentile(&rtts, 0.5)),
            "rtt_p99_us": us(percentile(&rtts, 0.99)),
        }
    });
    println!("{report}");
    Ok(())
}
