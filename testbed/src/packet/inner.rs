//! Whole IP packets built from addresses, with every checksum computed: the inner packets
//! the testbed tools carry inside GTP-U (and the edge and core answer with). IPv4 headers
//! carry identification 0 and DF.

use std::net::IpAddr;

use super::{
    TcpHeader, echo_message, internet_checksum, ipv4_with_id, ipv6, l4_checksum, proto, tcp_segment,
};

/// An IP header around `payload`: IPv4 (with DF, id 0) or IPv6, by the family of `src`.
/// `src` and `dst` must be of the same family (otherwise the packet is empty).
pub fn ip(src: IpAddr, dst: IpAddr, protocol: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4_with_id(0, s.octets(), d.octets(), protocol, ttl, 0x4000, payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s.octets(), d.octets(), protocol, ttl, payload),
        _ => Vec::new(),
    }
}

/// A UDP datagram in an IP packet.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut seg = super::udp(sport, dport, payload);
    let mut c = l4_checksum(src, dst, proto::UDP, &seg);
    if c == 0 {
        c = 0xffff;
    }
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, proto::UDP, 64, &seg)
}

/// An ICMP (IPv4) or ICMPv6 echo request or reply in an IP packet.
pub fn icmp_echo(
    src: IpAddr,
    dst: IpAddr,
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let kind = match (v6, reply) {
        (false, false) => 8,
        (false, true) => 0,
        (true, false) => 128,
        (true, true) => 129,
    };
    let mut m = echo_message(kind, id, seq, payload);
    let (protocol, c) = if v6 {
        (proto::ICMPV6, l4_checksum(src, dst, proto::ICMPV6, &m))
    } else {
        (proto::ICMP, internet_checksum(&m))
    };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, protocol, 64, &m)
}

/// A TCP segment (no options) in an IP packet.
pub fn tcp(src: IpAddr, dst: IpAddr, h: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let mut seg = tcp_segment(h, payload);
    let c = l4_checksum(src, dst, proto::TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, proto::TCP, 64, &seg)
}
