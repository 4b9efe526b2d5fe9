//! Bytes ↔ [`Message`]s: the PFCP header (TS 29.244 §7.2.2), the IEs (§8) and the messages
//! (§7.4, §7.5).
//!
//! Owns the wire format and its limits. Never keeps state, never decides what a message
//! means, never panics on input: every datagram gets a [`Message`] or a [`DecodeError`]
//! saying which rule it broke and which IE is to blame, with the header whenever it could be
//! read. Memory use is bounded by the input: at most [`MAX_IES_PER_MESSAGE`] IEs are held,
//! and every decoded string or list comes from octets of the datagram.
//!
//! - `wire`: the TLV layer (writer, bounds-checked readers, the limits);
//! - `leaf`: the IEs that hold values;
//! - `grouped`: the grouped IEs;
//! - `messages`: the message bodies.

mod error;
mod grouped;
mod leaf;
mod messages;
mod wire;

pub use error::{DecodeError, DecodeErrorKind};

use crate::message::{Header, Message, message_type};
use wire::Writer;

/// The longest datagram [`decode`] accepts: 65,527 octets, the largest UDP payload over IPv6
/// without jumbograms (over IPv4 it is 65,507). Any datagram a peer can send therefore
/// decodes: an SMF's establishment with dozens of PDRs (each a few hundred octets) fits many
/// times over, and a server needs a receive buffer of exactly this size, no guesswork.
/// Nothing is allocated in proportion to this bound, only to the datagram itself.
pub const MAX_MESSAGE_BYTES: usize = 65_527;

/// The most IEs (counting those inside grouped IEs) one message may hold: 8,192. A real IE
/// takes 5 octets or more (often 8 to 30), so a full-size datagram of real IEs stays under
/// it; only datagrams made of empty IEs reach it. It bounds the IE index the decoder keeps
/// (16 octets per IE).
pub const MAX_IES_PER_MESSAGE: usize = 8_192;

/// How deep grouped IEs may nest below the message: 3, the deepest TS 29.244 defines (e.g.
/// Create PDR → PDI → Ethernet Packet Filter). The decoder only opens the grouped IEs it
/// models, which nest 2 deep (Create PDR → PDI, Update FAR → Update Forwarding Parameters);
/// unknown IEs are skipped unopened. The check guards the walker should deeper groups be
/// modelled.
pub const MAX_GROUPED_DEPTH: usize = 3;

/// Octet 1 of the header: version 1 in bits 8-6.
const VERSION_1: u8 = 0x20;
const FLAG_S: u8 = 0x01;
const FLAG_MP: u8 = 0x02;

/// Encodes `message` with `header`'s sequence number (its low 24 bits), SEID and priority.
///
/// The S flag and the SEID are written exactly for session messages
/// ([`message_type::is_session_message`]); a session message whose header has no SEID gets
/// SEID 0 (what a Session Establishment Request carries: the peer has no SEID for it yet), and a
/// node message's SEID is not written. `header.message_type` is ignored: the type is the
/// message's. MP is set when `priority` is `Some` (its low 4 bits are written).
pub fn encode(header: &Header, message: &Message) -> Vec<u8> {
    let message_type = message.message_type();
    let session = message_type::is_session_message(message_type);
    let mut w = Writer::default();
    let mut flags = VERSION_1;
    if session {
        flags |= FLAG_S;
    }
    if header.priority.is_some() {
        flags |= FLAG_MP;
    }
    w.u8(flags);
    w.u8(message_type);
    w.u16(0);
    let after_length = w.len();
    if session {
        w.u64(header.seid.unwrap_or(0));
    }
    w.u24(header.sequence);
    w.u8(header.priority.map_or(0, |p| (p & 0x0F) << 4));
    messages::put_body(&mut w, message);
    w.patch_len(after_length);
    w.into_bytes()
}

/// Decodes one datagram holding one PFCP message. Strict: see [`DecodeErrorKind`] for every
/// way a datagram is refused. IEs of types this crate does not know (and vendor IEs) are
/// skipped; a repeated IE that may appear once: the first wins.
pub fn decode(bytes: &[u8]) -> Result<(Header, Message), DecodeError> {
    let fail = |header: Option<&Header>, kind| DecodeError {
        header: header.cloned(),
        kind,
    };
    let Some(&[flags, message_type, len_hi, len_lo]) = bytes.first_chunk::<4>() else {
        return Err(fail(None, DecodeErrorKind::TooShort));
    };
    let session = flags & FLAG_S != 0;
    let header_len = if session { 16 } else { 8 };
    // The rest of the header as version 1 lays it out, when the datagram holds it: kept even
    // for another version, so that the Version Not Supported Response can echo the sequence.
    let header = bytes.get(4..header_len).map(|rest| {
        let (seid, tail) = match rest.split_first_chunk::<8>() {
            Some((seid, tail)) if session => (Some(u64::from_be_bytes(*seid)), tail),
            _ => (None, rest),
        };
        let (sequence, priority) = match *tail {
            [a, b, c, p] => (
                u32::from_be_bytes([0, a, b, c]),
                (flags & FLAG_MP != 0).then_some(p >> 4),
            ),
            _ => (0, None),
        };
        Header {
            message_type,
            seid,
            sequence,
            priority,
        }
    });
    let version = flags >> 5;
    if version != 1 {
        return Err(fail(
            header.as_ref(),
            DecodeErrorKind::VersionNotSupported(version),
        ));
    }
    let Some(header) = header else {
        return Err(fail(None, DecodeErrorKind::TooShort));
    };
    let h = Some(&header);
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(fail(h, DecodeErrorKind::TooLarge));
    }
    let declared = u16::from_be_bytes([len_hi, len_lo]);
    if usize::from(declared) + 4 != bytes.len() {
        return Err(fail(
            h,
            DecodeErrorKind::LengthMismatch {
                declared,
                actual: bytes.len(),
            },
        ));
    }
    if !messages::is_modelled(message_type) {
        return Err(fail(h, DecodeErrorKind::UnknownMessageType(message_type)));
    }
    if session != message_type::is_session_message(message_type) {
        return Err(fail(h, DecodeErrorKind::SeidFlag));
    }
    let body = bytes.get(header_len..).unwrap_or_default();
    match messages::body(message_type, body) {
        Ok(message) => Ok((header, message)),
        Err(kind) => Err(fail(h, kind)),
    }
}

#[cfg(test)]
mod golden;
