//! Packets for the tests and the testbed tools, built and parsed here from the RFCs and
//! TS 29.281 / TS 38.415, independently of the gateway's own code (with their own checksum
//! routine), so that what the gateway emits is checked against a second implementation.
//!
//! - Layer by layer (this module): Ethernet, IPv4/IPv6, UDP, TCP, ICMP, GTP-U with any chain
//!   of extension headers, and whole N3 frames. The fast-path tests build exact frames from
//!   these; fields are as given, and L4 checksums the fast path does not check are left 0.
//! - [`inner`]: whole IP packets from addresses with every checksum computed: what the
//!   testbed tools carry inside GTP-U over ordinary UDP sockets (the kernel builds the outer
//!   headers).
//! - Parsers for what comes back: [`IpPacket`] and [`Gtpu`].
//!
//! Nothing here may use the gateway's crates: a shared mistake would pass unseen.

use std::net::IpAddr;

pub mod inner;

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

/// The PDU Session Container extension header type (TS 29.281 5.2.1).
const PDU_SESSION_CONTAINER: u8 = 0x85;

// ---------------------------------------------------------------------------------------
// Checksums (RFC 1071).

/// Folds a 32-bit one's-complement accumulator to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Adds `data` to a one's-complement accumulator, as 16-bit big-endian words (an odd last
/// byte is padded with a zero byte).
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

/// RFC 1071 Internet checksum of `data` (the one's complement of the one's-complement sum).
pub fn internet_checksum(data: &[u8]) -> u16 {
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

/// The UDP checksum over IPv6 of `udp` (whose checksum field is taken as zero).
pub fn udp6_checksum(src: &[u8; 16], dst: &[u8; 16], udp: &[u8]) -> u16 {
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    match l4_checksum(IpAddr::from(*src), IpAddr::from(*dst), proto::UDP, &u) {
        0 => 0xffff,
        c => c,
    }
}

// ---------------------------------------------------------------------------------------
// Layer by layer.

pub const MAC_A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];

/// An Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An Ethernet header with one 802.1Q tag.
pub fn eth_vlan(dst: [u8; 6], src: [u8; 6], vid: u16, ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 packet (no options, identification 0x1234) with a correct header checksum. `frag`
/// is the flags + fragment offset field.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_with_id(0x1234, src, dst, proto, ttl, frag, payload)
}

fn ipv4_with_id(
    id: u16,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ttl: u8,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv4 packet whose header carries `options` (a multiple of 4 bytes: IHL > 5), with a
/// correct header checksum.
pub fn ipv4_options(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let ihl = (20 + options.len()) / 4;
    let total = (20 + options.len() + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 extension header, as [`ipv6_ext`] chains them.
#[derive(Clone, Debug)]
pub enum V6Ext {
    /// Hop-by-hop options (0), routing (43) or destination options (60), of `len8` units of 8
    /// bytes beyond the first 8 (the content is PadN).
    Options { kind: u8, len8: u8 },
    /// A fragment header (44) with this fragment offset (in 8-byte units) and more-fragments.
    Fragment { offset: u16, more: bool },
}

/// An IPv6 packet with `exts` in order before the upper layer `next`/`payload`.
pub fn ipv6_ext(
    src: [u8; 16],
    dst: [u8; 16],
    exts: &[V6Ext],
    next: u8,
    hop: u8,
    payload: &[u8],
) -> Vec<u8> {
    let kind = |e: &V6Ext| match e {
        V6Ext::Options { kind, .. } => *kind,
        V6Ext::Fragment { .. } => 44,
    };
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let after = exts.get(i + 1).map_or(next, kind);
        match e {
            V6Ext::Options { len8, .. } => {
                let len = 8 * (usize::from(*len8) + 1);
                chain.extend_from_slice(&[after, *len8]);
                // PadN filling the rest of the header.
                chain.extend_from_slice(&[1, (len - 4) as u8]);
                chain.extend(std::iter::repeat_n(0u8, len - 4));
            }
            V6Ext::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(*more);
                chain.extend_from_slice(&[after, 0]);
                chain.extend_from_slice(&field.to_be_bytes());
                chain.extend_from_slice(&[0, 0, 0x12, 0x34]);
            }
        }
    }
    chain.extend_from_slice(payload);
    let first = exts.first().map_or(next, kind);
    ipv6(src, dst, first, hop, &chain)
}

/// Ethernet with a stack of VLAN tags, outermost first: (TPID, VLAN id).
pub fn eth_tags(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv6 packet with no extension headers.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A UDP header + payload with checksum 0 (legal over IPv4; used for inner packets and
/// uplink outer headers, which the fast path does not check).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
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

/// A TCP segment (no options) with checksum 0.
fn tcp_segment(h: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20 + payload.len());
    seg.extend_from_slice(&h.sport.to_be_bytes());
    seg.extend_from_slice(&h.dport.to_be_bytes());
    seg.extend_from_slice(&h.seq.to_be_bytes());
    seg.extend_from_slice(&h.ack.to_be_bytes());
    seg.extend_from_slice(&[5 << 4, h.flags]);
    seg.extend_from_slice(&h.window.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0]);
    seg.extend_from_slice(payload);
    seg
}

/// A minimal TCP header (SYN, sequence number 1) to `dport`, checksum left 0.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    tcp_segment(
        TcpHeader {
            sport,
            dport,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 0xffff,
        },
        &[],
    )
}

/// An ICMP (type `kind`: 8/0 or 128/129) echo message with checksum 0.
fn echo_message(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// An ICMP echo request (id 1, sequence 1, "ping").
pub fn icmp_echo() -> Vec<u8> {
    let mut m = echo_message(8, 1, 1, b"ping");
    let c = internet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A GTP-U extension header: type, and content (length byte and next type are added).
#[derive(Clone, Debug)]
pub struct Ext {
    pub kind: u8,
    pub content: Vec<u8>,
}

/// PDU Session Container direction (TS 38.415 PDU type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduType {
    Downlink = 0,
    Uplink = 1,
}

/// PDU Session Container of `pdu_type` with `qfi`.
pub fn pdu_session_container(pdu_type: PduType, qfi: u8) -> Ext {
    Ext {
        kind: PDU_SESSION_CONTAINER,
        content: vec![(pdu_type as u8) << 4, qfi],
    }
}

/// PDU Session Container, uplink (PDU type 1), with `qfi`.
pub fn ul_container(qfi: u8) -> Ext {
    pdu_session_container(PduType::Uplink, qfi)
}

/// PDU Session Container, downlink (PDU type 0), with `qfi`.
pub fn dl_container(qfi: u8) -> Ext {
    pdu_session_container(PduType::Downlink, qfi)
}

/// GTP-U v1 header (+ optional fields when `seq` is given or `exts` is not empty) and payload.
/// `seq = Some(n)` sets S; a non-empty `exts` sets E.
pub fn gtp(msg_type: u8, teid: u32, seq: Option<u16>, exts: &[Ext], payload: &[u8]) -> Vec<u8> {
    let mut flags = 0x30u8;
    if seq.is_some() {
        flags |= 0x02;
    }
    if !exts.is_empty() {
        flags |= 0x04;
    }
    let mut body = Vec::new();
    if flags & 0x07 != 0 {
        body.extend_from_slice(&seq.unwrap_or(0).to_be_bytes());
        body.push(0); // N-PDU number
        body.push(exts.first().map_or(0, |e| e.kind));
    }
    for (i, e) in exts.iter().enumerate() {
        let len = e.content.len() + 2;
        assert_eq!(
            len % 4,
            0,
            "extension header content must make a multiple of 4"
        );
        body.push((len / 4) as u8);
        body.extend_from_slice(&e.content);
        body.push(exts.get(i + 1).map_or(0, |n| n.kind));
    }
    body.extend_from_slice(payload);
    let mut g = vec![flags, msg_type];
    g.extend_from_slice(&(body.len() as u16).to_be_bytes());
    g.extend_from_slice(&teid.to_be_bytes());
    g.extend_from_slice(&body);
    g
}

/// Ethernet / IPv4 / UDP 2152 / `gtp`.
pub fn n3_v4(src: [u8; 4], dst: [u8; 4], gtp: &[u8]) -> Vec<u8> {
    n3_v4_tagged(&[], src, dst, gtp)
}

/// [`n3_v4`] behind VLAN `tags` ((TPID, VLAN id), outermost first).
pub fn n3_v4_tagged(tags: &[(u16, u16)], src: [u8; 4], dst: [u8; 4], gtp: &[u8]) -> Vec<u8> {
    let mut f = eth_tags(MAC_A, MAC_B, tags, 0x0800);
    f.extend_from_slice(&ipv4(
        src,
        dst,
        proto::UDP,
        64,
        0,
        &udp(GTPU_PORT, GTPU_PORT, gtp),
    ));
    f
}

/// Ethernet / IPv6 / UDP 2152 / `gtp`.
pub fn n3_v6(src: [u8; 16], dst: [u8; 16], gtp: &[u8]) -> Vec<u8> {
    let mut f = eth(MAC_A, MAC_B, 0x86dd);
    f.extend_from_slice(&ipv6(
        src,
        dst,
        proto::UDP,
        64,
        &udp(GTPU_PORT, GTPU_PORT, gtp),
    ));
    f
}

/// `ip` with its TTL (IPv4, header checksum recomputed from scratch) or hop limit lowered by 1.
pub fn ttl_minus_one(ip: &[u8]) -> Vec<u8> {
    let mut p = ip.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        p[10] = 0;
        p[11] = 0;
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let c = internet_checksum(&p[..ihl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}

/// The bytes of an IPv4 address literal written in a test.
#[allow(clippy::expect_used)] // a test's own literal: a typo should stop the test at once
pub fn v4(a: &str) -> [u8; 4] {
    a.parse::<std::net::Ipv4Addr>()
        .expect("IPv4 literal")
        .octets()
}

/// The bytes of an IPv6 address literal written in a test.
#[allow(clippy::expect_used)] // a test's own literal: a typo should stop the test at once
pub fn v6(a: &str) -> [u8; 16] {
    a.parse::<std::net::Ipv6Addr>()
        .expect("IPv6 literal")
        .octets()
}

// ---------------------------------------------------------------------------------------
// Parsers.

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
                    header_ok: internet_checksum(&p[..ihl]) == 0,
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
            proto::ICMP => internet_checksum(&self.l4) == 0,
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

    /// Encodes a GTP-U message (version 1, PT=1) with at most one extension header, a PDU
    /// Session Container (its QFI masked to 6 bits).
    pub fn encode(
        msg_type: u8,
        teid: u32,
        sequence: Option<u16>,
        container: Option<(PduType, u8)>,
        payload: &[u8],
    ) -> Vec<u8> {
        let exts: Vec<Ext> = container
            .map(|(pdu_type, qfi)| pdu_session_container(pdu_type, qfi & 0x3f))
            .into_iter()
            .collect();
        gtp(msg_type, teid, sequence, &exts, payload)
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
                if next == PDU_SESSION_CONTAINER && len >= 4 {
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn built_packets_verify_and_parse_back() {
        let v4: IpAddr = "198.19.0.1".parse().unwrap();
        let e4: IpAddr = "198.18.1.2".parse().unwrap();
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let e6: IpAddr = "2001:db8:0:1::2".parse().unwrap();
        for (s, d) in [(v4, e4), (v6, e6)] {
            for p in [
                inner::udp(s, d, 1000, 7, b"hello"),
                inner::icmp_echo(s, d, false, 7, 1, b"abc"),
                inner::tcp(
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
        let mut p = inner::udp(s, d, 1000, 7, b"hello");
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

    #[test]
    fn the_parser_walks_a_chain_of_extension_headers_to_the_container() {
        let other = Ext {
            kind: 0x40,
            content: vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
        };
        let m = gtp(gtp_type::G_PDU, 7, Some(3), &[other, dl_container(5)], b"x");
        let g = Gtpu::parse(&m).unwrap();
        assert_eq!(g.sequence, Some(3));
        assert_eq!(g.container, Some((PduType::Downlink as u8, 5)));
        assert_eq!(g.payload, b"x");
    }

    #[test]
    fn a_lowered_ttl_keeps_the_header_checksum_valid() {
        let p = ipv4(
            v4("10.0.0.1"),
            v4("10.0.0.2"),
            proto::UDP,
            64,
            0,
            &udp(1, 2, b""),
        );
        let q = IpPacket::parse(&ttl_minus_one(&p)).unwrap();
        assert_eq!(q.ttl, 63);
        assert!(q.header_ok);
    }
}
