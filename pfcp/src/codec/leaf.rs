//! The IEs that hold values (not other IEs): one `put_*` writing the whole IE and one reader
//! of its value per IE, side by side, with the octet layout of TS 29.244 §8.2 beside each.
//!
//! Encoding never fails: a value wider than its field is cut to the field's width (the
//! session layer must not build such values; the round-trip tests only build valid ones).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DecodeErrorKind;
use super::wire::{Cursor, Writer};
use crate::ie::ie_type as t;
use crate::ie::*;

type Result<T> = std::result::Result<T, DecodeErrorKind>;

// ---- unsigned integers of a fixed width (IDs, Precedence, times, counters) ----

pub(crate) fn put_u8_ie(w: &mut Writer, ie: u16, v: u8) {
    w.ie(ie, |w| w.u8(v));
}

pub(crate) fn put_u16_ie(w: &mut Writer, ie: u16, v: u16) {
    w.ie(ie, |w| w.u16(v));
}

pub(crate) fn put_u32_ie(w: &mut Writer, ie: u16, v: u32) {
    w.ie(ie, |w| w.u32(v));
}

pub(crate) fn u8_ie(ie: u16, value: &[u8]) -> Result<u8> {
    Cursor::new(ie, value).u8()
}

pub(crate) fn u16_ie(ie: u16, value: &[u8]) -> Result<u16> {
    Cursor::new(ie, value).u16()
}

pub(crate) fn u32_ie(ie: u16, value: &[u8]) -> Result<u32> {
    Cursor::new(ie, value).u32()
}

// ---- Cause (§8.2.1) ----

pub(crate) fn put_cause(w: &mut Writer, v: Cause) {
    put_u8_ie(w, t::CAUSE, v.0);
}

pub(crate) fn cause(value: &[u8]) -> Result<Cause> {
    let mut c = Cursor::new(t::CAUSE, value);
    match c.u8()? {
        0 => Err(c.incorrect("cause value 0 is reserved")),
        v => Ok(Cause(v)),
    }
}

// ---- Source Interface (§8.2.2), Destination Interface (§8.2.24): spare(4) | value(4) ----

pub(crate) fn put_interface(w: &mut Writer, ie: u16, v: Interface) {
    put_u8_ie(w, ie, v.value() & 0x0F);
}

/// Source Interface values 0-4 are defined (4: 5G VN internal), Destination Interface 0-5
/// (4: LI function, 5: 5G VN internal); the rest are spare, and a UP function cannot act on
/// them.
pub(crate) fn interface(ie: u16, value: &[u8]) -> Result<Interface> {
    let mut c = Cursor::new(ie, value);
    let v = c.u8()? & 0x0F;
    let highest = if ie == t::SOURCE_INTERFACE { 4 } else { 5 };
    if v > highest {
        return Err(c.incorrect("spare interface value"));
    }
    Ok(Interface::from_value(v))
}

// ---- F-TEID (§8.2.3): flags (CHID, CH, V6, V4), TEID, IPv4, IPv6, CHOOSE ID ----

const FTEID_V4: u8 = 0x01;
const FTEID_V6: u8 = 0x02;
const FTEID_CH: u8 = 0x04;
const FTEID_CHID: u8 = 0x08;

pub(crate) fn put_f_teid(w: &mut Writer, v: &FTeid) {
    w.ie(t::F_TEID, |w| match *v {
        FTeid::Assigned { teid, ipv4, ipv6 } => {
            let mut flags = 0;
            if ipv4.is_some() {
                flags |= FTEID_V4;
            }
            if ipv6.is_some() {
                flags |= FTEID_V6;
            }
            w.u8(flags);
            w.u32(teid);
            ipv4.into_iter().for_each(|a| w.ipv4(a));
            ipv6.into_iter().for_each(|a| w.ipv6(a));
        }
        FTeid::Choose {
            ipv4,
            ipv6,
            choose_id,
        } => {
            let mut flags = FTEID_CH;
            if ipv4 {
                flags |= FTEID_V4;
            }
            if ipv6 {
                flags |= FTEID_V6;
            }
            if choose_id.is_some() {
                flags |= FTEID_CHID;
            }
            w.u8(flags);
            choose_id.into_iter().for_each(|id| w.u8(id));
        }
    });
}

pub(crate) fn f_teid(value: &[u8]) -> Result<FTeid> {
    let mut c = Cursor::new(t::F_TEID, value);
    let flags = c.u8()?;
    let (v4, v6) = (flags & FTEID_V4 != 0, flags & FTEID_V6 != 0);
    if !v4 && !v6 {
        return Err(c.incorrect("neither V4 nor V6 is set"));
    }
    if flags & FTEID_CH != 0 {
        let choose_id = if flags & FTEID_CHID != 0 {
            Some(c.u8()?)
        } else {
            None
        };
        return Ok(FTeid::Choose {
            ipv4: v4,
            ipv6: v6,
            choose_id,
        });
    }
    if flags & FTEID_CHID != 0 {
        return Err(c.incorrect("CHID is set without CH"));
    }
    let teid = c.u32()?;
    let ipv4 = if v4 { Some(c.ipv4()?) } else { None };
    let ipv6 = if v6 { Some(c.ipv6()?) } else { None };
    Ok(FTeid::Assigned { teid, ipv4, ipv6 })
}

// ---- Network Instance (§8.2.4): an octet string ----

pub(crate) fn put_network_instance(w: &mut Writer, v: &[u8]) {
    w.ie(t::NETWORK_INSTANCE, |w| w.bytes(v));
}

// ---- SDF Filter (§8.2.5): flags (BID, FL, SPI, TTC, FD), spare octet, then the fields ----

const SDF_FD: u8 = 0x01;
const SDF_TTC: u8 = 0x02;
const SDF_SPI: u8 = 0x04;
const SDF_FL: u8 = 0x08;
const SDF_BID: u8 = 0x10;

pub(crate) fn put_sdf_filter(w: &mut Writer, v: &SdfFilter) {
    w.ie(t::SDF_FILTER, |w| {
        let mut flags = 0;
        for (present, bit) in [
            (v.flow_description.is_some(), SDF_FD),
            (v.tos_traffic_class.is_some(), SDF_TTC),
            (v.security_parameter_index.is_some(), SDF_SPI),
            (v.flow_label.is_some(), SDF_FL),
            (v.sdf_filter_id.is_some(), SDF_BID),
        ] {
            if present {
                flags |= bit;
            }
        }
        w.u8(flags);
        w.u8(0);
        if let Some(fd) = &v.flow_description {
            let fd = fd.as_bytes();
            let fd = &fd[..fd.len().min(usize::from(u16::MAX))];
            // fd.len() ≤ u16::MAX by the line above.
            w.u16(u16::try_from(fd.len()).unwrap_or(u16::MAX));
            w.bytes(fd);
        }
        v.tos_traffic_class.into_iter().for_each(|x| w.u16(x));
        v.security_parameter_index
            .into_iter()
            .for_each(|x| w.u32(x));
        v.flow_label
            .into_iter()
            .for_each(|x| w.u24(x & 0x000F_FFFF));
        v.sdf_filter_id.into_iter().for_each(|x| w.u32(x));
    });
}

pub(crate) fn sdf_filter(value: &[u8]) -> Result<SdfFilter> {
    let mut c = Cursor::new(t::SDF_FILTER, value);
    let flags = c.u8()?;
    let _spare = c.u8()?;
    let flow_description = if flags & SDF_FD != 0 {
        let len = usize::from(c.u16()?);
        if len == 0 {
            return Err(c.incorrect("FD is set but the flow description is empty"));
        }
        let text = std::str::from_utf8(c.take(len)?)
            .map_err(|_| c.incorrect("flow description is not text"))?;
        Some(text.to_owned())
    } else {
        None
    };
    let tos_traffic_class = (flags & SDF_TTC != 0).then(|| c.u16()).transpose()?;
    let security_parameter_index = (flags & SDF_SPI != 0).then(|| c.u32()).transpose()?;
    // The 4 bits above the 20-bit flow label are spare.
    let flow_label = (flags & SDF_FL != 0)
        .then(|| c.u24().map(|x| x & 0x000F_FFFF))
        .transpose()?;
    let sdf_filter_id = (flags & SDF_BID != 0).then(|| c.u32()).transpose()?;
    Ok(SdfFilter {
        flow_description,
        tos_traffic_class,
        security_parameter_index,
        flow_label,
        sdf_filter_id,
    })
}

// ---- Gate Status (§8.2.7): spare(4) | UL gate(2) | DL gate(2); 0 open, 1 closed ----

pub(crate) fn put_gate_status(w: &mut Writer, v: GateStatus) {
    let ul = if v.uplink_open { 0 } else { 1 };
    let dl = if v.downlink_open { 0 } else { 1 };
    put_u8_ie(w, t::GATE_STATUS, (ul << 2) | dl);
}

/// Gate values 2 and 3 are spare; they are read as closed, the safe side.
pub(crate) fn gate_status(value: &[u8]) -> Result<GateStatus> {
    let v = u8_ie(t::GATE_STATUS, value)?;
    Ok(GateStatus {
        uplink_open: (v >> 2) & 0x03 == 0,
        downlink_open: v & 0x03 == 0,
    })
}

// ---- MBR (§8.2.8), GBR (§8.2.9): UL then DL, 40 bits each, kbit/s ----

pub(crate) fn put_bit_rate(w: &mut Writer, ie: u16, v: BitRate) {
    w.ie(ie, |w| {
        w.u40(v.uplink_kbps);
        w.u40(v.downlink_kbps);
    });
}

pub(crate) fn bit_rate(ie: u16, value: &[u8]) -> Result<BitRate> {
    let mut c = Cursor::new(ie, value);
    Ok(BitRate {
        uplink_kbps: c.u40()?,
        downlink_kbps: c.u40()?,
    })
}

// ---- Volume Threshold (§8.2.13): flags (DLVOL, ULVOL, TOVOL), then 8 octets each ----

const VOL_TOVOL: u8 = 0x01;
const VOL_ULVOL: u8 = 0x02;
const VOL_DLVOL: u8 = 0x04;
const VOL_TONOP: u8 = 0x08;
const VOL_ULNOP: u8 = 0x10;
const VOL_DLNOP: u8 = 0x20;

/// Flags for the present values, then the values, in the order of `parts`.
fn put_flagged_u64s(w: &mut Writer, parts: &[(Option<u64>, u8)]) {
    let flags = parts
        .iter()
        .filter(|(v, _)| v.is_some())
        .fold(0, |f, (_, bit)| f | bit);
    w.u8(flags);
    parts.iter().filter_map(|(v, _)| *v).for_each(|v| w.u64(v));
}

fn flagged_u64<const N: usize>(c: &mut Cursor<'_>, bits: [u8; N]) -> Result<[Option<u64>; N]> {
    let flags = c.u8()?;
    let mut out = [None; N];
    for (slot, bit) in out.iter_mut().zip(bits) {
        if flags & bit != 0 {
            *slot = Some(c.u64()?);
        }
    }
    Ok(out)
}

pub(crate) fn put_volume_threshold(w: &mut Writer, v: Volume) {
    w.ie(t::VOLUME_THRESHOLD, |w| {
        put_flagged_u64s(
            w,
            &[
                (v.total, VOL_TOVOL),
                (v.uplink, VOL_ULVOL),
                (v.downlink, VOL_DLVOL),
            ],
        )
    });
}

pub(crate) fn volume_threshold(value: &[u8]) -> Result<Volume> {
    let mut c = Cursor::new(t::VOLUME_THRESHOLD, value);
    let [total, uplink, downlink] = flagged_u64(&mut c, [VOL_TOVOL, VOL_ULVOL, VOL_DLVOL])?;
    Ok(Volume {
        total,
        uplink,
        downlink,
    })
}

// ---- Volume Measurement (§8.2.44): flags (DLNOP, ULNOP, TONOP, DLVOL, ULVOL, TOVOL), then
// the volumes, then the packet counts, 8 octets each ----

pub(crate) fn put_volume_measurement(w: &mut Writer, v: VolumeMeasurement) {
    w.ie(t::VOLUME_MEASUREMENT, |w| {
        put_flagged_u64s(
            w,
            &[
                (v.total_octets, VOL_TOVOL),
                (v.uplink_octets, VOL_ULVOL),
                (v.downlink_octets, VOL_DLVOL),
                (v.total_packets, VOL_TONOP),
                (v.uplink_packets, VOL_ULNOP),
                (v.downlink_packets, VOL_DLNOP),
            ],
        )
    });
}

pub(crate) fn volume_measurement(value: &[u8]) -> Result<VolumeMeasurement> {
    let mut c = Cursor::new(t::VOLUME_MEASUREMENT, value);
    let [to, ul, dl, top, ulp, dlp] = flagged_u64(
        &mut c,
        [
            VOL_TOVOL, VOL_ULVOL, VOL_DLVOL, VOL_TONOP, VOL_ULNOP, VOL_DLNOP,
        ],
    )?;
    Ok(VolumeMeasurement {
        total_octets: to,
        uplink_octets: ul,
        downlink_octets: dl,
        total_packets: top,
        uplink_packets: ulp,
        downlink_packets: dlp,
    })
}

// ---- Reporting Triggers (§8.2.19), Usage Report Trigger (§8.2.41): octets 5, 6 and,
// since Release 15, 7; octet 5 is the low byte of the flag word ----

/// Two octets, or three when a flag of octet 7 is set (older peers know two).
pub(crate) fn put_trigger_octets(w: &mut Writer, ie: u16, flags: u32) {
    let [o5, o6, o7, _] = flags.to_le_bytes();
    w.ie(ie, |w| {
        w.u8(o5);
        w.u8(o6);
        if o7 != 0 {
            w.u8(o7);
        }
    });
}

pub(crate) fn trigger_octets(ie: u16, value: &[u8]) -> Result<u32> {
    let mut c = Cursor::new(ie, value);
    let o5 = c.u8()?;
    let o6 = c.u8()?;
    let o7 = if c.remaining() > 0 { c.u8()? } else { 0 };
    Ok(u32::from_le_bytes([o5, o6, o7, 0]))
}

// ---- Offending IE (§8.2.22) ----

pub(crate) fn put_offending_ie(w: &mut Writer, v: u16) {
    put_u16_ie(w, t::OFFENDING_IE, v);
}

// ---- UP / CP Function Features (§8.2.25, §8.2.58): feature octets, as many as sent ----

pub(crate) fn put_octets(w: &mut Writer, ie: u16, v: &[u8]) {
    w.ie(ie, |w| w.bytes(v));
}

// ---- Apply Action (§8.2.26): octet 5 (DROP … DFRT) and, since Release 16, octet 6 ----

/// One octet when octet 6 has no flag set (what Release 15 peers read), else two.
pub(crate) fn put_apply_action(w: &mut Writer, v: ApplyAction) {
    let [o5, o6] = v.0.to_le_bytes();
    w.ie(t::APPLY_ACTION, |w| {
        w.u8(o5);
        if o6 != 0 {
            w.u8(o6);
        }
    });
}

pub(crate) fn apply_action(value: &[u8]) -> Result<ApplyAction> {
    let mut c = Cursor::new(t::APPLY_ACTION, value);
    let o5 = c.u8()?;
    let o6 = if c.remaining() > 0 { c.u8()? } else { 0 };
    Ok(ApplyAction(u16::from_le_bytes([o5, o6])))
}

// ---- F-SEID (§8.2.37): flags (V4, V6), SEID, IPv4, IPv6 ----

const FSEID_V6: u8 = 0x01;
const FSEID_V4: u8 = 0x02;

pub(crate) fn put_f_seid(w: &mut Writer, v: &FSeid) {
    w.ie(t::F_SEID, |w| {
        let mut flags = 0;
        if v.ipv4.is_some() {
            flags |= FSEID_V4;
        }
        if v.ipv6.is_some() {
            flags |= FSEID_V6;
        }
        w.u8(flags);
        w.u64(v.seid);
        v.ipv4.into_iter().for_each(|a| w.ipv4(a));
        v.ipv6.into_iter().for_each(|a| w.ipv6(a));
    });
}

pub(crate) fn f_seid(value: &[u8]) -> Result<FSeid> {
    let mut c = Cursor::new(t::F_SEID, value);
    let flags = c.u8()?;
    if flags & (FSEID_V4 | FSEID_V6) == 0 {
        return Err(c.incorrect("neither V4 nor V6 is set"));
    }
    let seid = c.u64()?;
    let ipv4 = (flags & FSEID_V4 != 0).then(|| c.ipv4()).transpose()?;
    let ipv6 = (flags & FSEID_V6 != 0).then(|| c.ipv6()).transpose()?;
    Ok(FSeid { seid, ipv4, ipv6 })
}

// ---- Node ID (§8.2.38): spare(4) | type(4), then IPv4, IPv6 or an FQDN as DNS labels
// (TS 23.003 §19.4.2.4: no trailing root label) ----

const NODE_ID_IPV4: u8 = 0;
const NODE_ID_IPV6: u8 = 1;
const NODE_ID_FQDN: u8 = 2;

/// Labels are the dot-separated parts of the text; empty parts are skipped and a part longer
/// than 63 octets is cut to 63 (such text is not an FQDN; only valid names round-trip).
pub(crate) fn put_node_id(w: &mut Writer, v: &NodeId) {
    w.ie(t::NODE_ID, |w| match v {
        NodeId::Ipv4(a) => {
            w.u8(NODE_ID_IPV4);
            w.ipv4(*a);
        }
        NodeId::Ipv6(a) => {
            w.u8(NODE_ID_IPV6);
            w.ipv6(*a);
        }
        NodeId::Fqdn(name) => {
            w.u8(NODE_ID_FQDN);
            for label in name.split('.').filter(|l| !l.is_empty()) {
                let label = &label.as_bytes()[..label.len().min(63)];
                // label.len() ≤ 63 by the line above.
                w.u8(u8::try_from(label.len()).unwrap_or(63));
                w.bytes(label);
            }
        }
    });
}

pub(crate) fn node_id(value: &[u8]) -> Result<NodeId> {
    let mut c = Cursor::new(t::NODE_ID, value);
    match c.u8()? & 0x0F {
        NODE_ID_IPV4 => Ok(NodeId::Ipv4(c.ipv4()?)),
        NODE_ID_IPV6 => Ok(NodeId::Ipv6(c.ipv6()?)),
        NODE_ID_FQDN => fqdn(&mut c).map(NodeId::Fqdn),
        _ => Err(c.incorrect("spare Node ID type")),
    }
}

/// DNS labels of 1-63 letters, digits and hyphens (RFC 1035 §2.3.1, as TS 23.003 names
/// are), at most 255 octets in all.
fn fqdn(c: &mut Cursor<'_>) -> Result<String> {
    let ie = c.ie();
    let bad = |why| DecodeErrorKind::IncorrectValue { ie, why };
    let mut rest = c.rest();
    if rest.is_empty() {
        return Err(bad("empty FQDN"));
    }
    if rest.len() > 255 {
        return Err(bad("FQDN longer than 255 octets"));
    }
    let mut name = String::with_capacity(rest.len());
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > 63 {
            return Err(bad("FQDN label length not in 1..=63"));
        }
        let (label, after) = tail
            .split_at_checked(len)
            .ok_or(bad("FQDN label runs past the IE"))?;
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return Err(bad(
                "FQDN label holds a character other than a letter, digit or '-'",
            ));
        }
        if !name.is_empty() {
            name.push('.');
        }
        // Every octet is ASCII by the check above.
        name.extend(label.iter().map(|b| char::from(*b)));
        rest = after;
    }
    Ok(name)
}

// ---- Measurement Method (§8.2.40): spare(5) | EVENT | VOLUM | DURAT ----

pub(crate) fn put_measurement_method(w: &mut Writer, v: MeasurementMethod) {
    let flags = u8::from(v.duration) | (u8::from(v.volume) << 1) | (u8::from(v.event) << 2);
    put_u8_ie(w, t::MEASUREMENT_METHOD, flags);
}

pub(crate) fn measurement_method(value: &[u8]) -> Result<MeasurementMethod> {
    let v = u8_ie(t::MEASUREMENT_METHOD, value)?;
    Ok(MeasurementMethod {
        duration: v & 0x01 != 0,
        volume: v & 0x02 != 0,
        event: v & 0x04 != 0,
    })
}

// ---- Outer Header Creation (§8.2.56): 2-octet description, then TEID, IPv4, IPv6, port,
// C-TAG, S-TAG as the description says ----

type Ohc = OuterHeaderCreation;

const OHC_TEID: u16 = Ohc::GTPU_UDP_IPV4 | Ohc::GTPU_UDP_IPV6;
const OHC_V4: u16 = Ohc::GTPU_UDP_IPV4 | Ohc::UDP_IPV4 | Ohc::IPV4;
const OHC_V6: u16 = Ohc::GTPU_UDP_IPV6 | Ohc::UDP_IPV6 | Ohc::IPV6;
const OHC_PORT: u16 = Ohc::UDP_IPV4 | Ohc::UDP_IPV6;
const OHC_HEADERS: u16 = 0xFF00;

/// The fields written are those the description asks for; one missing from `v` is written
/// as zeros. The C-TAG and S-TAG fields have no place in [`OuterHeaderCreation`]: when their
/// flags are set, 3 zero octets are written for each (and decoding refuses them).
pub(crate) fn put_outer_header_creation(w: &mut Writer, v: &Ohc) {
    let d = v.description;
    w.ie(t::OUTER_HEADER_CREATION, |w| {
        w.u16(d);
        if d & OHC_TEID != 0 {
            w.u32(v.teid.unwrap_or(0));
        }
        if d & OHC_V4 != 0 {
            w.ipv4(v.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED));
        }
        if d & OHC_V6 != 0 {
            w.ipv6(v.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED));
        }
        if d & OHC_PORT != 0 {
            w.u16(v.port.unwrap_or(0));
        }
        for tag in [Ohc::C_TAG, Ohc::S_TAG] {
            if d & tag != 0 {
                w.u24(0);
            }
        }
    });
}

pub(crate) fn outer_header_creation(value: &[u8]) -> Result<Ohc> {
    let mut c = Cursor::new(t::OUTER_HEADER_CREATION, value);
    let d = c.u16()?;
    if d & OHC_HEADERS == 0 {
        return Err(c.incorrect("no outer header is asked for"));
    }
    if d & (Ohc::C_TAG | Ohc::S_TAG) != 0 {
        return Err(c.incorrect("C-TAG / S-TAG creation is not supported"));
    }
    Ok(Ohc {
        description: d,
        teid: (d & OHC_TEID != 0).then(|| c.u32()).transpose()?,
        ipv4: (d & OHC_V4 != 0).then(|| c.ipv4()).transpose()?,
        ipv6: (d & OHC_V6 != 0).then(|| c.ipv6()).transpose()?,
        port: (d & OHC_PORT != 0).then(|| c.u16()).transpose()?,
    })
}

// ---- UE IP Address (§8.2.62): flags (IP6PL, CHV6, CHV4, IPv6D, S/D, V4, V6), IPv4, IPv6,
// IPv6 prefix delegation bits, IPv6 prefix length ----

const UEIP_V6: u8 = 0x01;
const UEIP_V4: u8 = 0x02;
const UEIP_SD: u8 = 0x04;
const UEIP_IPV6D: u8 = 0x08;
const UEIP_CHV4: u8 = 0x10;
const UEIP_CHV6: u8 = 0x20;
const UEIP_IP6PL: u8 = 0x40;

/// CHV4 (CHV6) asks the UP function for an address, so the address is left out and V4 (V6),
/// which §8.2.62 ties to the address field being present, is left clear; an address given
/// together with `choose_ipv4` (`choose_ipv6`) is therefore not written. (Wireshark reads
/// an IPv4 address whenever V4 is set, so CHV4 with V4 would be malformed there.)
pub(crate) fn put_ue_ip_address(w: &mut Writer, v: &UeIpAddress) {
    w.ie(t::UE_IP_ADDRESS, |w| {
        let ipv4 = v.ipv4.filter(|_| !v.choose_ipv4);
        let ipv6 = v.ipv6.filter(|_| !v.choose_ipv6);
        let mut flags = 0;
        for (on, bit) in [
            (ipv6.is_some(), UEIP_V6),
            (ipv4.is_some(), UEIP_V4),
            (v.is_destination, UEIP_SD),
            (v.ipv6_prefix_delegation_bits.is_some(), UEIP_IPV6D),
            (v.choose_ipv4, UEIP_CHV4),
            (v.choose_ipv6, UEIP_CHV6),
            (v.ipv6_prefix_length.is_some(), UEIP_IP6PL),
        ] {
            if on {
                flags |= bit;
            }
        }
        w.u8(flags);
        ipv4.into_iter().for_each(|a| w.ipv4(a));
        ipv6.into_iter().for_each(|a| w.ipv6(a));
        v.ipv6_prefix_delegation_bits
            .into_iter()
            .for_each(|b| w.u8(b));
        v.ipv6_prefix_length.into_iter().for_each(|b| w.u8(b));
    });
}

/// CHV4 together with V4 (CHV6 with V6) is refused: whether an address follows is then
/// ambiguous (some implementations write none, Wireshark reads one).
pub(crate) fn ue_ip_address(value: &[u8]) -> Result<UeIpAddress> {
    let mut c = Cursor::new(t::UE_IP_ADDRESS, value);
    let flags = c.u8()?;
    let on = |bit| flags & bit != 0;
    if on(UEIP_CHV4) && on(UEIP_V4) {
        return Err(c.incorrect("CHV4 and V4 are both set"));
    }
    if on(UEIP_CHV6) && on(UEIP_V6) {
        return Err(c.incorrect("CHV6 and V6 are both set"));
    }
    let ipv4 = on(UEIP_V4).then(|| c.ipv4()).transpose()?;
    let ipv6 = on(UEIP_V6).then(|| c.ipv6()).transpose()?;
    let ipv6_prefix_delegation_bits = on(UEIP_IPV6D).then(|| c.u8()).transpose()?;
    let ipv6_prefix_length = on(UEIP_IP6PL).then(|| c.u8()).transpose()?;
    Ok(UeIpAddress {
        ipv4,
        ipv6,
        is_destination: on(UEIP_SD),
        ipv6_prefix_delegation_bits,
        ipv6_prefix_length,
        choose_ipv4: on(UEIP_CHV4),
        choose_ipv6: on(UEIP_CHV6),
    })
}

// ---- Outer Header Removal (§8.2.64): description, then optionally the GTP-U extension
// header deletion octet ----

pub(crate) fn put_outer_header_removal(w: &mut Writer, v: OuterHeaderRemoval) {
    w.ie(t::OUTER_HEADER_REMOVAL, |w| {
        w.u8(v.description);
        v.extension_header_deletion
            .into_iter()
            .for_each(|x| w.u8(x));
    });
}

/// Descriptions 0-8 are defined; 9-255 are for future use and cannot be acted on.
pub(crate) fn outer_header_removal(value: &[u8]) -> Result<OuterHeaderRemoval> {
    let mut c = Cursor::new(t::OUTER_HEADER_REMOVAL, value);
    let description = c.u8()?;
    if description > 8 {
        return Err(c.incorrect("outer header removal description for future use"));
    }
    let extension_header_deletion = (c.remaining() > 0).then(|| c.u8()).transpose()?;
    Ok(OuterHeaderRemoval {
        description,
        extension_header_deletion,
    })
}

// ---- PDN Type (§8.2.79): spare(5) | value(3) ----

/// 1 IPv4, 2 IPv6, 3 IPv4v6, 4 Non-IP, 5 Ethernet; 0, 6 and 7 are not defined.
pub(crate) fn pdn_type(value: &[u8]) -> Result<u8> {
    let mut c = Cursor::new(t::PDN_TYPE, value);
    match c.u8()? & 0x07 {
        v @ 1..=5 => Ok(v),
        _ => Err(c.incorrect("PDN type not in 1..=5")),
    }
}

pub(crate) fn put_pdn_type(w: &mut Writer, v: u8) {
    put_u8_ie(w, t::PDN_TYPE, v & 0x07);
}

// ---- QFI (§8.2.89): spare(2) | QFI(6) ----

pub(crate) fn put_qfi(w: &mut Writer, v: u8) {
    put_u8_ie(w, t::QFI, v & 0x3F);
}

/// The two high bits are spare, so a value above 63 cannot arrive.
pub(crate) fn qfi(value: &[u8]) -> Result<u8> {
    Ok(u8_ie(t::QFI, value)? & 0x3F)
}

// ---- User ID (§8.2.101): flags (NAIF, MSISDNF, IMEIF, IMSIF), then length + value for
// each present: IMSI, IMEI and MSISDN in TBCD (TS 29.274 §8.3, §8.10, §8.11), NAI as text ----

const UID_IMSI: u8 = 0x01;
const UID_IMEI: u8 = 0x02;
const UID_MSISDN: u8 = 0x04;
const UID_NAI: u8 = 0x08;

pub(crate) fn put_user_id(w: &mut Writer, v: &UserId) {
    w.ie(t::USER_ID, |w| {
        let mut flags = 0;
        for (present, bit) in [
            (v.imsi.is_some(), UID_IMSI),
            (v.imei.is_some(), UID_IMEI),
            (v.msisdn.is_some(), UID_MSISDN),
            (v.nai.is_some(), UID_NAI),
        ] {
            if present {
                flags |= bit;
            }
        }
        w.u8(flags);
        for digits in [&v.imsi, &v.imei, &v.msisdn].into_iter().flatten() {
            put_short_octets(w, &tbcd(digits));
        }
        if let Some(nai) = &v.nai {
            put_short_octets(w, nai.as_bytes());
        }
    });
}

/// A 1-octet length, then the octets (at most 255 of them).
fn put_short_octets(w: &mut Writer, v: &[u8]) {
    let v = &v[..v.len().min(255)];
    // v.len() ≤ 255 by the line above.
    w.u8(u8::try_from(v.len()).unwrap_or(u8::MAX));
    w.bytes(v);
}

/// Decimal digits two to an octet, the first in the low nibble, an odd count padded with
/// 0xF. A character that is not a digit is written as 0xF (only digit strings round-trip).
fn tbcd(digits: &str) -> Vec<u8> {
    let nibble = |c: u8| if c.is_ascii_digit() { c - b'0' } else { 0x0F };
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| match *pair {
            [lo, hi] => nibble(lo) | (nibble(hi) << 4),
            [lo] => nibble(lo) | 0xF0,
            _ => 0xFF,
        })
        .collect()
}

pub(crate) fn user_id(value: &[u8]) -> Result<UserId> {
    let mut c = Cursor::new(t::USER_ID, value);
    let flags = c.u8()?;
    let digits = |bit: u8, c: &mut Cursor<'_>| -> Result<Option<String>> {
        if flags & bit == 0 {
            return Ok(None);
        }
        let len = usize::from(c.u8()?);
        let octets = c.take(len)?;
        untbcd(octets)
            .map(Some)
            .ok_or(c.incorrect("identity is not TBCD digits"))
    };
    let imsi = digits(UID_IMSI, &mut c)?;
    let imei = digits(UID_IMEI, &mut c)?;
    let msisdn = digits(UID_MSISDN, &mut c)?;
    let nai = if flags & UID_NAI != 0 {
        let len = usize::from(c.u8()?);
        let octets = c.take(len)?;
        let text = std::str::from_utf8(octets).map_err(|_| c.incorrect("NAI is not text"))?;
        Some(text.to_owned())
    } else {
        None
    };
    Ok(UserId {
        imsi,
        imei,
        msisdn,
        nai,
    })
}

/// The digits of TBCD octets; 0xF is allowed only as the last octet's high nibble.
fn untbcd(octets: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(octets.len() * 2);
    let last = octets.len().saturating_sub(1);
    for (i, o) in octets.iter().enumerate() {
        let (lo, hi) = (o & 0x0F, o >> 4);
        out.push(char::from_digit(u32::from(lo), 10)?);
        match hi {
            0x0F if i == last => {}
            _ => out.push(char::from_digit(u32::from(hi), 10)?),
        }
    }
    Some(out)
}
