//! Packets for the testbed tools and tests, built and parsed here, independently of the
//! gateway's own code, so that what the gateway emits is checked against a second
//! implementation.
//!
//! Inner packets are whole IP packets (no Ethernet): the tools carry them inside GTP-U over
//! ordinary UDP sockets, and the kernel builds the outer headers.

use std::net::IpAddr;

/// IP protocol numbers used here.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// GTP-U message types (TS 29.281).
pub mod gtp_type {
    pub const ECHO_REQUEST: u8 = 1;
    pub const ECHO_RESPONSE: u8 = 2;
    pub const ERROR_INDICATION: u8 = 26;
    pub const END_MARKER: u8 = 254;
    pub const G_PDU: u8 = 255;
}

/// The GTP-U port.
pub const GTPU_PORT: u16 = 2152;

/// Folds a 32-bit one's-complement accumulator to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Adds `data` to a one's-complement accumulator, as 16-bit big-endian words.
fn add_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(add_words(0, data))
}

/// The checksum of an L4 segment with the IPv4 or IPv6 pseudo-header.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let mut sum = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = add_words(sum, &s.octets());
            sum = add_words(sum, &d.octets());
            sum = add_words(sum, &[0, protocol]);
            sum = add_words(sum, &(segment.len() as u16).to_be_bytes());
        }
        _ => {
            sum = add_words(sum, &ip_octets(src));
            sum = add_words(sum, &ip_octets(dst));
            sum = add_words(sum, &(segment.len() as u32).to_be_bytes());
            sum = add_words(sum, &[0, 0, 0, protocol]);
        }
    }
    !fold(add_words(sum, segment))
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An IP header around `payload`: IPv4 (with DF, id 0) or IPv6, by the family of `src`.
/// `src` and `dst` must be of the same family.
pub fn ip(src: IpAddr, dst: IpAddr, protocol: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + payload.len()) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, ttl, protocol, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(payload);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[protocol, ttl]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(payload);
            h
        }
        _ => Vec::new(),
    }
}

/// A UDP datagram in an IP packet.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(8 + payload.len());
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
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
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let (protocol, c) = if v6 {
        (proto::ICMPV6, l4_checksum(src, dst, proto::ICMPV6, &m))
    } else {
        (proto::ICMP, checksum(&m))
    };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, protocol, 64, &m)
}

/// The fields of a TCP segment that the tools set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// A TCP segment (no options) in an IP packet.
pub fn tcp(src: IpAddr, dst: IpAddr, h: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20 + payload.len());
    seg.extend_from_slice(&h.sport.to_be_bytes());
    seg.extend_from_slice(&h.dport.to_be_bytes());
    seg.extend_from_slice(&h.seq.to_be_bytes());
    seg.extend_from_slice(&h.ack.to_be_bytes());
    seg.extend_from_slice(&[5 << 4, h.flags]);
    seg.extend_from_slice(&h.window.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0]);
    seg.extend_from_slice(payload);
    let c = l4_checksum(src, dst, proto::TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip(src, dst, proto::TCP, 64, &seg)
}

/// An IP packet, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The L4 segment (for IPv4, only when not a fragment).
    pub l4: Vec<u8>,
    /// IPv4 header checksum verified (always true for IPv6).
    pub header_ok: bool,
}

impl IpPacket {
    /// Parses an IPv4 or IPv6 packet (no IPv6 extension headers).
    pub fn parse(p: &[u8]) -> Result<IpPacket, String> {
        let version = p.first().ok_or("empty packet")? >> 4;
        match version {
            4 => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if ihl < 20 || p.len() < ihl {
                    return Err(format!(
                        "IPv4 header length {ihl} of a {}-byte packet",
                        p.len()
                    ));
                }
                let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
                if total < ihl || total > p.len() {
                    return Err(format!(
                        "IPv4 total length {total} of a {}-byte packet",
                        p.len()
                    ));
                }
                let src = IpAddr::from([p[12], p[13], p[14], p[15]]);
                let dst = IpAddr::from([p[16], p[17], p[18], p[19]]);
                Ok(IpPacket {
                    src,
                    dst,
                    protocol: p[9],
                    ttl: p[8],
                    l4: p[ihl..total].to_vec(),
                    header_ok: checksum(&p[..ihl]) == 0,
                })
            }
            6 => {
                if p.len() < 40 {
                    return Err(format!("{}-byte IPv6 packet", p.len()));
                }
                let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
                if 40 + plen > p.len() {
                    return Err(format!(
                        "IPv6 payload length {plen} of a {}-byte packet",
                        p.len()
                    ));
                }
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&p[8..24]);
                d.copy_from_slice(&p[24..40]);
                Ok(IpPacket {
                    src: IpAddr::from(s),
                    dst: IpAddr::from(d),
                    protocol: p[6],
                    ttl: p[7],
                    l4: p[40..40 + plen].to_vec(),
                    header_ok: true,
                })
            }
            v => Err(format!("IP version {v}")),
        }
    }

    /// Whether the L4 checksum (UDP, TCP, ICMP, ICMPv6) verifies.
    pub fn l4_checksum_ok(&self) -> bool {
        match self.protocol {
            proto::ICMP => checksum(&self.l4) == 0,
            proto::UDP if self.src.is_ipv4() && self.l4.get(6..8) == Some(&[0, 0]) => true,
            proto::UDP | proto::TCP | proto::ICMPV6 => {
                l4_checksum(self.src, self.dst, self.protocol, &self.l4) == 0
            }
            _ => true,
        }
    }

    /// Source and destination ports of a UDP or TCP segment.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.protocol {
            proto::UDP | proto::TCP if self.l4.len() >= 4 => Some((
                u16::from_be_bytes([self.l4[0], self.l4[1]]),
                u16::from_be_bytes([self.l4[2], self.l4[3]]),
            )),
            _ => None,
        }
    }

    /// The payload after the L4 header (UDP: 8 bytes, TCP: data offset, ICMP echo: 8).
    pub fn l4_payload(&self) -> &[u8] {
        let skip = match self.protocol {
            proto::TCP => self.l4.get(12).map_or(20, |b| usize::from(b >> 4) * 4),
            _ => 8,
        };
        self.l4.get(skip..).unwrap_or(&[])
    }

    /// The TCP header fields, if this is TCP.
    pub fn tcp(&self) -> Option<TcpHeader> {
        if self.protocol != proto::TCP || self.l4.len() < 20 {
            return None;
        }
        let l = &self.l4;
        Some(TcpHeader {
            sport: u16::from_be_bytes([l[0], l[1]]),
            dport: u16::from_be_bytes([l[2], l[3]]),
            seq: u32::from_be_bytes([l[4], l[5], l[6], l[7]]),
            ack: u32::from_be_bytes([l[8], l[9], l[10], l[11]]),
            flags: l[13],
            window: u16::from_be_bytes([l[14], l[15]]),
        })
    }

    /// (type, id, seq) of an ICMP/ICMPv6 echo message.
    pub fn icmp_echo(&self) -> Option<(u8, u16, u16)> {
        if !matches!(self.protocol, proto::ICMP | proto::ICMPV6) || self.l4.len() < 8 {
            return None;
        }
        let l = &self.l4;
        Some((
            l[0],
            u16::from_be_bytes([l[4], l[5]]),
            u16::from_be_bytes([l[6], l[7]]),
        ))
    }
}

/// PDU Session Container direction (TS 38.415 PDU type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduType {
    Downlink = 0,
    Uplink = 1,
}

/// A GTP-U v1 message, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gtpu {
    pub msg_type: u8,
    pub teid: u32,
    pub sequence: Option<u16>,
    /// (PDU type, QFI) from a PDU Session Container extension header.
    pub container: Option<(u8, u8)>,
    pub payload: Vec<u8>,
}

impl Gtpu {
    /// Encodes a G-PDU carrying `inner`. With a container, S=0/E=1 and one PDU Session
    /// Container extension header; with `sequence`, S=1.
    pub fn g_pdu(teid: u32, container: Option<(PduType, u8)>, inner: &[u8]) -> Vec<u8> {
        Self::encode(gtp_type::G_PDU, teid, None, container, inner)
    }

    /// Encodes a GTP-U message (version 1, PT=1).
    pub fn encode(
        msg_type: u8,
        teid: u32,
        sequence: Option<u16>,
        container: Option<(PduType, u8)>,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut flags = 0x30u8;
        if sequence.is_some() {
            flags |= 0x02;
        }
        if container.is_some() {
            flags |= 0x04;
        }
        let mut body = Vec::new();
        if sequence.is_some() || container.is_some() {
            body.extend_from_slice(&sequence.unwrap_or(0).to_be_bytes());
            body.push(0); // N-PDU number
            body.push(if container.is_some() { 0x85 } else { 0 });
        }
        if let Some((pdu_type, qfi)) = container {
            // length 1 (4 octets): PDU type/spare, QFI, next extension header type = 0.
            body.extend_from_slice(&[1, (pdu_type as u8) << 4, qfi & 0x3f, 0]);
        }
        body.extend_from_slice(payload);
        let mut m = vec![flags, msg_type];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&teid.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    /// Parses a GTP-U v1 message: optional fields and a bounded extension-header walk.
    pub fn parse(m: &[u8]) -> Result<Gtpu, String> {
        if m.len() < 8 {
            return Err(format!("{}-byte GTP-U header", m.len()));
        }
        let flags = m[0];
        if flags >> 5 != 1 || flags & 0x10 == 0 {
            return Err(format!("GTP-U flags {flags:#04x}: not version 1 / PT=1"));
        }
        let length = usize::from(u16::from_be_bytes([m[2], m[3]]));
        if 8 + length != m.len() {
            return Err(format!(
                "GTP-U length {length} but {} bytes follow",
                m.len() - 8
            ));
        }
        let teid = u32::from_be_bytes([m[4], m[5], m[6], m[7]]);
        let mut at = 8;
        let mut sequence = None;
        let mut container = None;
        if flags & 0x07 != 0 {
            let opt = m.get(8..12).ok_or("truncated optional fields")?;
            if flags & 0x02 != 0 {
                sequence = Some(u16::from_be_bytes([opt[0], opt[1]]));
            }
            let mut next = if flags & 0x04 != 0 { opt[3] } else { 0 };
            at = 12;
            for _ in 0..8 {
                if next == 0 {
                    break;
                }
                let len = usize::from(*m.get(at).ok_or("truncated extension header")?) * 4;
                if len == 0 {
                    return Err("zero-length extension header".into());
                }
                let ext = m.get(at..at + len).ok_or("truncated extension header")?;
                if next == 0x85 && len >= 4 {
                    container = Some((ext[1] >> 4, ext[2] & 0x3f));
                }
                next = ext[len - 1];
                at += len;
            }
            if next != 0 {
                return Err("extension header chain too long".into());
            }
        }
        Ok(Gtpu {
            msg_type: m[1],
            teid,
            sequence,
            container,
            payload: m[at..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn built_packets_verify_and_parse_back() {
        let v4: IpAddr = "198.19.0.1".parse().unwrap();
        let e4: IpAddr = "198.18.1.2".parse().unwrap();
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let e6: IpAddr = "2001:db8:0:1::2".parse().unwrap();
        for (s, d) in [(v4, e4), (v6, e6)] {
            for p in [
                udp(s, d, 1000, 7, b"hello"),
                icmp_echo(s, d, false, 7, 1, b"abc"),
                tcp(
                    s,
                    d,
                    TcpHeader {
                        sport: 4000,
                        dport: 80,
                        seq: 1,
                        ack: 0,
                        flags: tcp_flags::SYN,
                        window: 65535,
                    },
                    b"",
                ),
            ] {
                let parsed = IpPacket::parse(&p).unwrap();
                assert!(parsed.header_ok && parsed.l4_checksum_ok(), "{parsed:?}");
                assert_eq!((parsed.src, parsed.dst), (s, d));
            }
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_l4_checksum() {
        let s: IpAddr = "198.19.0.1".parse().unwrap();
        let d: IpAddr = "198.18.1.2".parse().unwrap();
        let mut p = udp(s, d, 1000, 7, b"hello");
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(!IpPacket::parse(&p).unwrap().l4_checksum_ok());
    }

    #[test]
    fn gtpu_round_trips_with_a_container() {
        let m = Gtpu::g_pdu(0x1234, Some((PduType::Uplink, 9)), b"inner");
        assert_eq!(m.len(), 8 + 4 + 4 + 5);
        let g = Gtpu::parse(&m).unwrap();
        assert_eq!(g.teid, 0x1234);
        assert_eq!(g.container, Some((1, 9)));
        assert_eq!(g.payload, b"inner");
    }
}
