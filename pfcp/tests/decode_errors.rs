//! One test per [`DecodeErrorKind`] a datagram can cause, through the public API, with the
//! cause a response would carry and the header kept for the reply.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: a failure is a test failure

use mecgw_pfcp::ie::{Cause, ie_type as t};
use mecgw_pfcp::message::Header;
use mecgw_pfcp::{
    DecodeError, DecodeErrorKind as K, MAX_IES_PER_MESSAGE, MAX_MESSAGE_BYTES, decode,
};

/// A node message (S=0) with `body` as its IEs.
fn node(message_type: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0x20, message_type];
    b.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    b.extend_from_slice(&[0x00, 0x01, 0x02, 0x00]);
    b.extend_from_slice(body);
    b
}

/// A session message (S=1, SEID 7, sequence 0x000102) with `body` as its IEs.
fn session(message_type: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0x21, message_type];
    b.extend_from_slice(&u16::try_from(12 + body.len()).unwrap().to_be_bytes());
    b.extend_from_slice(&7u64.to_be_bytes());
    b.extend_from_slice(&[0x00, 0x01, 0x02, 0x00]);
    b.extend_from_slice(body);
    b
}

fn ie(ie_type: u16, value: &[u8]) -> Vec<u8> {
    let mut b = ie_type.to_be_bytes().to_vec();
    b.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
    b.extend_from_slice(value);
    b
}

fn err(bytes: &[u8]) -> DecodeError {
    decode(bytes).expect_err("must not decode")
}

const RECOVERY: [u8; 8] = [0x00, 0x60, 0x00, 0x04, 0xe8, 0x75, 0x47, 0x00];
const NODE_ID: [u8; 9] = [0x00, 0x3c, 0x00, 0x05, 0x00, 192, 0, 2, 1];

fn heartbeat_header() -> Header {
    Header {
        message_type: 1,
        seid: None,
        sequence: 0x000102,
        priority: None,
    }
}

#[test]
fn a_valid_heartbeat_decodes() {
    assert!(decode(&node(1, &RECOVERY)).is_ok());
}

#[test]
fn too_short_has_no_header() {
    for bytes in [
        &[][..],
        &[0x20],
        &[0x20, 1, 0, 4],
        &[0x20, 1, 0, 4, 0, 0, 1],
    ] {
        let e = err(bytes);
        assert_eq!((e.header, e.kind), (None, K::TooShort), "{bytes:?}");
    }
    // A session header needs 16 octets.
    assert_eq!(err(&session(50, &[])[..15]).kind, K::TooShort);
}

#[test]
fn another_version_keeps_the_header_for_the_version_not_supported_response() {
    let mut b = node(1, &RECOVERY);
    b[0] = 0x40 | (b[0] & 0x1f);
    let e = err(&b);
    assert_eq!(e.kind, K::VersionNotSupported(2));
    assert_eq!(e.header, Some(heartbeat_header()));
}

#[test]
fn length_must_match_the_datagram() {
    let mut b = node(1, &RECOVERY);
    b.push(0);
    let e = err(&b);
    assert_eq!(
        e.kind,
        K::LengthMismatch {
            declared: 12,
            actual: 17
        }
    );
    assert_eq!(e.header, Some(heartbeat_header()));
    assert_eq!(e.cause(), Cause::INVALID_LENGTH);
    let short = &node(1, &RECOVERY)[..15];
    assert!(matches!(err(short).kind, K::LengthMismatch { .. }));
}

#[test]
fn datagrams_over_the_limit_are_too_large() {
    let body = vec![0u8; MAX_MESSAGE_BYTES];
    let mut b = node(1, &[]);
    b.extend_from_slice(&body);
    assert_eq!(err(&b).kind, K::TooLarge);
}

#[test]
fn unmodelled_message_types_keep_their_header() {
    for message_type in [3u8, 12, 14, 99] {
        let e = err(&node(message_type, &[]));
        assert_eq!(e.kind, K::UnknownMessageType(message_type));
        assert_eq!(e.header.map(|h| h.message_type), Some(message_type));
    }
}

#[test]
fn the_s_flag_must_match_the_type() {
    assert_eq!(err(&session(1, &RECOVERY)).kind, K::SeidFlag);
    assert_eq!(err(&node(54, &[])).kind, K::SeidFlag);
}

#[test]
fn missing_mandatory_ies_are_named() {
    let e = err(&node(1, &[]));
    assert_eq!(
        e.kind,
        K::MissingMandatory {
            ie: t::RECOVERY_TIME_STAMP
        }
    );
    assert_eq!(e.cause(), Cause::MANDATORY_IE_MISSING);
    assert_eq!(e.offending_ie(), Some(t::RECOVERY_TIME_STAMP));
    // Inside a grouped IE: a Create PDR without its PDR ID.
    let fseid = ie(t::F_SEID, &[2, 0, 0, 0, 0, 0, 0, 0, 9, 192, 0, 2, 1]);
    let pdr = ie(t::CREATE_PDR, &ie(t::PRECEDENCE, &[0, 0, 0, 1]));
    let body = [&NODE_ID[..], &fseid, &pdr].concat();
    assert_eq!(
        err(&session(50, &body)).kind,
        K::MissingMandatory { ie: t::PDR_ID }
    );
    // No Create PDR at all.
    let body = [&NODE_ID[..], &fseid].concat();
    assert_eq!(
        err(&session(50, &body)).kind,
        K::MissingMandatory { ie: t::CREATE_PDR }
    );
}

#[test]
fn missing_conditional_ies_are_named() {
    // A Create FAR that forwards without Forwarding Parameters.
    let far = [ie(t::FAR_ID, &[0, 0, 0, 1]), ie(t::APPLY_ACTION, &[0x02])].concat();
    let body = ie(t::CREATE_FAR, &far);
    let e = err(&session(52, &body));
    assert_eq!(
        e.kind,
        K::MissingConditional {
            ie: t::FORWARDING_PARAMETERS
        }
    );
    assert_eq!(e.cause(), Cause::CONDITIONAL_IE_MISSING);
    // An accepted establishment without the UP F-SEID.
    let body = [&NODE_ID[..], &ie(t::CAUSE, &[1])].concat();
    assert_eq!(
        err(&session(51, &body)).kind,
        K::MissingConditional { ie: t::F_SEID }
    );
}

#[test]
fn ie_lengths_must_fit_their_parent() {
    // The Recovery Time Stamp says 5 octets; 4 follow.
    let mut b = node(1, &RECOVERY);
    b[11] = 5;
    let e = err(&b);
    assert_eq!(
        e.kind,
        K::InvalidLength {
            ie: t::RECOVERY_TIME_STAMP
        }
    );
    assert_eq!(e.cause(), Cause::INVALID_LENGTH);
    // A PDR ID longer than its Create PDR.
    let inner = [0x00, 0x38, 0x00, 0x09, 0x00, 0x01];
    let body = ie(t::CREATE_PDR, &inner);
    assert_eq!(
        err(&session(52, &body)).kind,
        K::InvalidLength { ie: t::PDR_ID }
    );
    // Three stray octets after the last IE.
    let mut body = RECOVERY.to_vec();
    body.extend_from_slice(&[0, 1, 2]);
    assert_eq!(err(&node(1, &body)).kind, K::InvalidLength { ie: 1 });
    // A known fixed-size IE that is too short.
    let body = ie(t::RECOVERY_TIME_STAMP, &[1, 2, 3]);
    assert_eq!(
        err(&node(1, &body)).kind,
        K::InvalidLength {
            ie: t::RECOVERY_TIME_STAMP
        }
    );
}

#[test]
fn incorrect_values_are_named() {
    let body = [&NODE_ID[..], &ie(t::CAUSE, &[0])].concat();
    let e = err(&node(10, &body));
    assert!(matches!(e.kind, K::IncorrectValue { ie: t::CAUSE, .. }));
    assert_eq!(e.cause(), Cause::MANDATORY_IE_INCORRECT);
    assert_eq!(e.offending_ie(), Some(t::CAUSE));
}

#[test]
fn unknown_and_vendor_ies_are_skipped_and_the_first_repeat_wins() {
    let later = ie(t::RECOVERY_TIME_STAMP, &[0, 0, 0, 9]);
    let body = [
        ie(0x00ff, &[1, 2, 3]),
        ie(0x8001, &[0x12, 0x34, 0xaa]),
        RECOVERY.to_vec(),
        later,
    ]
    .concat();
    let (_, m) = decode(&node(1, &body)).expect("decodes");
    assert_eq!(
        m,
        mecgw_pfcp::message::Message::HeartbeatRequest(mecgw_pfcp::message::Heartbeat {
            recovery_time_stamp: 0xe875_4700
        })
    );
}

#[test]
fn too_many_ies() {
    let body = [0x00, 0xff, 0x00, 0x00].repeat(MAX_IES_PER_MESSAGE + 1);
    let e = err(&node(1, &body));
    assert_eq!(e.kind, K::TooManyIes);
    assert_eq!(e.cause(), Cause::REJECTED);
    assert_eq!(e.offending_ie(), None);
}
