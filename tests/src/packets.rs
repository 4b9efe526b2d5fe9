//! Hand-assembled packets for the fast-path tests, written from the RFCs and TS 29.281 /
//! TS 38.415 independently of the code under test, with their own checksum routine.

/// RFC 1071 Internet checksum of `data` (the one's complement of the one's-complement sum).
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < data.len() {
        let hi = u64::from(data[i]) << 8;
        let lo = data.get(i + 1).map_or(0, |&b| u64::from(b));
        sum += hi | lo;
        i += 2;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

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

/// An IPv4 packet (no options) with a correct header checksum. `frag` is the flags +
/// fragment offset field.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = internet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
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

/// A minimal TCP header (SYN) to `dport`, checksum left 0.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// An ICMP echo request.
pub fn icmp_echo() -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0, 0, 1, 0, 1, b'p', b'i', b'n', b'g'];
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

/// PDU Session Container, uplink (PDU type 1), with `qfi`.
pub fn ul_container(qfi: u8) -> Ext {
    Ext {
        kind: 0x85,
        content: vec![0x10, qfi],
    }
}

/// PDU Session Container, downlink (PDU type 0), with `qfi`.
pub fn dl_container(qfi: u8) -> Ext {
    Ext {
        kind: 0x85,
        content: vec![0x00, qfi],
    }
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
        body.push(0);
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
    let mut f = eth(MAC_A, MAC_B, 0x0800);
    f.extend_from_slice(&ipv4(src, dst, 17, 64, 0, &udp(2152, 2152, gtp)));
    f
}

/// Ethernet / IPv6 / UDP 2152 / `gtp`.
pub fn n3_v6(src: [u8; 16], dst: [u8; 16], gtp: &[u8]) -> Vec<u8> {
    let mut f = eth(MAC_A, MAC_B, 0x86dd);
    f.extend_from_slice(&ipv6(src, dst, 17, 64, &udp(2152, 2152, gtp)));
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

/// The UDP checksum over IPv6 of `udp` (whose checksum field is taken as zero).
pub fn udp6_checksum(src: &[u8; 16], dst: &[u8; 16], udp: &[u8]) -> u16 {
    let mut data = src.to_vec();
    data.extend_from_slice(dst);
    data.extend_from_slice(&(udp.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 17]);
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    data.extend_from_slice(&u);
    match internet_checksum(&data) {
        0 => 0xffff,
        c => c,
    }
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
