//! `mecgw-core`: the testbed's stand-in for the central UPF and the distant cloud, run in the
//! `core` namespace.
//!
//! It receives the GTP-U that the gateway passed through, answers ICMP echo and UDP (echoing
//! the payload) after a configurable delay — the long way to a distant cloud, since netem is not
//! available here — and sends the answer back to the gNB as a downlink G-PDU. It answers GTP-U
//! Echo Requests, and can record every datagram it receives (hex, one per line) so that tests
//! can check that pass-through traffic arrived byte for byte.
//!
//! The downlink TEID of an answer follows the sessions' numbering: uplink TEID
//! `ul_teid_base + i` is answered on `dl_teid_base + i`. With `--dl-teid-by-ue` it comes from
//! the UE's address instead (UE `i` is `ue_v4_base + i` or `2001:db8:100:i::/64`, as the gNB
//! simulator numbers them): a G-PDU that passed a gateway unchanged carries the TEID the
//! gateway chose for a PFCP session, which the core cannot know. Answers go back to the
//! sender, or, with `--gnb`, to that gNB: as a PSA does when a UL CL re-tunnelled the uplink
//! to it and the downlink goes straight to the RAN.

use std::{
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use mecgw_testbed::{
    SessionNumbering,
    packet::{self, Gtpu, IpPacket, PduType, gtp_type, proto},
};

#[derive(Parser)]
#[command(about = "testbed core: a delayed GTP-U responder standing in for the central UPF")]
struct Args {
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    #[command(flatten)]
    sessions: SessionNumbering,
    /// Append every datagram received, as hex, one per line, to this file.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
    /// Take the downlink TEID from the UE's address (see the module doc), not the TEID.
    #[arg(long)]
    dl_teid_by_ue: bool,
    /// The first UE's IPv4 address, for `--dl-teid-by-ue`.
    #[arg(long, default_value = "198.19.0.1")]
    ue_v4_base: Ipv4Addr,
    /// Send downlink G-PDUs to this gNB (port 2152) instead of back to the sender.
    #[arg(long)]
    gnb: Option<IpAddr>,
}

/// The index of UE `ue` by the simulator's numbering.
fn ue_index(ue: IpAddr, v4_base: Ipv4Addr) -> u32 {
    match ue {
        IpAddr::V4(a) => u32::from(a).wrapping_sub(u32::from(v4_base)),
        IpAddr::V6(a) => u32::from(a.segments()[3]),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bind = SocketAddr::from((Ipv6Addr::UNSPECIFIED, packet::GTPU_PORT));
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    let sender = sock.try_clone()?;
    let mut record = match &args.record {
        Some(p) => Some(File::create(p).with_context(|| format!("create {}", p.display()))?),
        None => None,
    };
    let delay = Duration::from_millis(args.delay_ms);
    // The socket is IPv6 (dual-stack): an IPv4 gNB is reached at its mapped address.
    let gnb = args.gnb.map(|a| {
        let a = match a {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        SocketAddr::new(a, packet::GTPU_PORT)
    });

    // Answers leave in arrival order after a constant delay, so a FIFO is a delay queue.
    let (tx, rx) = mpsc::channel::<(Instant, SocketAddr, Vec<u8>)>();
    std::thread::spawn(move || {
        for (due, to, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if let Err(e) = sender.send_to(&bytes, to) {
                eprintln!("mecgw-core: send to {to}: {e}");
            }
        }
    });
    eprintln!("mecgw-core: GTP-U on {bind}, answering after {delay:?}");

    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let datagram = &buf[..n];
        if let Some(f) = record.as_mut() {
            let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(f, "{hex}")?;
            f.flush()?;
        }
        let Ok(msg) = Gtpu::parse(datagram) else {
            eprintln!("mecgw-core: malformed GTP-U from {from}");
            continue;
        };
        let mut to = from;
        let answer = match msg.msg_type {
            gtp_type::ECHO_REQUEST => {
                // Recovery IE (type 14) with restart counter 0.
                Some(Gtpu::encode(
                    gtp_type::ECHO_RESPONSE,
                    0,
                    Some(msg.sequence.unwrap_or(0)),
                    None,
                    &[14, 0],
                ))
            }
            gtp_type::G_PDU => answer_inner(&msg.payload).map(|(ue, inner)| {
                let index = if args.dl_teid_by_ue {
                    ue_index(ue, args.ue_v4_base)
                } else {
                    msg.teid.wrapping_sub(args.sessions.ul_teid_base)
                };
                let dl = args.sessions.dl_teid_base.wrapping_add(index);
                to = gnb.unwrap_or(from);
                Gtpu::g_pdu(dl, Some((PduType::Downlink, args.sessions.qfi)), &inner)
            }),
            _ => None,
        };
        if let Some(bytes) = answer {
            let _ = tx.send((Instant::now() + delay, to, bytes));
        }
    }
}

/// The reply a cloud server would send to an inner packet (echo reply, or the UDP payload
/// echoed back), with the UE it goes to.
fn answer_inner(inner: &[u8]) -> Option<(IpAddr, Vec<u8>)> {
    let p = IpPacket::parse(inner).ok()?;
    let answer = match p.protocol {
        proto::ICMP | proto::ICMPV6 => {
            let (kind, id, seq) = p.icmp_echo()?;
            (kind == 8 || kind == 128)
                .then(|| packet::inner::icmp_echo(p.dst, p.src, true, id, seq, p.l4_payload()))
        }
        proto::UDP => {
            let (sport, dport) = p.ports()?;
            Some(packet::inner::udp(
                p.dst,
                p.src,
                dport,
                sport,
                p.l4_payload(),
            ))
        }
        _ => None,
    };
    answer.map(|a| (p.src, a))
}
