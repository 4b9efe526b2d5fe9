//! `mecgw-edge`: the local edge services of the testbed, run in the `edge` namespace.
//!
//! A UDP echo service and a TCP echo service, on IPv4 and IPv6. Traffic that reaches them
//! from a UE has been decapsulated by the gateway's local breakout; a completed TCP exchange
//! proves its checksums and MAC rewrites are right, because the kernel here checks them.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(about = "testbed edge services: UDP and TCP echo")]
struct Args {
    /// UDP echo port.
    #[arg(long, default_value_t = 7)]
    udp_port: u16,
    /// TCP echo port.
    #[arg(long, default_value_t = 8080)]
    tcp_port: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One dual-stack socket each ([::] takes IPv4 too, as mapped addresses, on Linux).
    let udp_addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, args.udp_port));
    let udp = UdpSocket::bind(udp_addr).with_context(|| format!("bind UDP {udp_addr}"))?;
    let tcp_addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, args.tcp_port));
    let tcp = TcpListener::bind(tcp_addr).with_context(|| format!("bind TCP {tcp_addr}"))?;
    eprintln!(
        "mecgw-edge: UDP echo on {}, TCP echo on {}",
        args.udp_port, args.tcp_port
    );
    let udp_thread = std::thread::spawn(move || udp_echo(&udp));
    tcp_echo(&tcp);
    let _ = udp_thread.join();
    Ok(())
}

fn udp_echo(sock: &UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from);
            }
            Err(e) => eprintln!("mecgw-edge: udp: {e}"),
        }
    }
}

fn tcp_echo(listener: &TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}
