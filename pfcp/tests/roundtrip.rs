//! Round trips and robustness: every message the generators make survives encode → decode,
//! and no byte string (truncated, mutated or random) makes the decoder panic.
//!
//! `MECGW_PFCP_FUZZ_CASES=N` runs the robustness properties with N cases (default 1,000).

mod common;

use mecgw_pfcp::message::message_type;
use mecgw_pfcp::{DecodeErrorKind, MAX_MESSAGE_BYTES, decode, encode};
use proptest::prelude::*;

fn fuzz_cases() -> u32 {
    std::env::var("MECGW_PFCP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// The header's length field says how many octets follow the first 4.
fn set_length(bytes: &mut [u8]) {
    let len = u16::try_from(bytes.len().saturating_sub(4)).unwrap_or(u16::MAX);
    if bytes.len() >= 4 {
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Decoding never panics, and what decodes is stable: re-encoding it and decoding again
/// gives the same value.
fn decodes_sanely(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((header, message)) = decode(bytes) {
        let again = encode(&header, &message);
        let (h2, m2) = decode(&again)
            .map_err(|e| TestCaseError::fail(format!("re-encoded bytes fail to decode: {e}")))?;
        prop_assert_eq!(h2, header);
        prop_assert_eq!(m2, message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips((header, message) in common::header_and_message()) {
        let bytes = encode(&header, &message);
        prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        prop_assert_eq!(bytes[0] >> 5, 1, "version 1");
        let session = message_type::is_session_message(message.message_type());
        prop_assert_eq!(bytes[0] & 1 == 1, session, "S flag exactly for session messages");
        prop_assert_eq!(bytes[0] & 2 == 2, header.priority.is_some(), "MP flag");
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        prop_assert_eq!(declared + 4, bytes.len());
        let decoded = decode(&bytes);
        prop_assert_eq!(decoded, Ok((header, message)));
    }

    #[test]
    fn every_truncation_is_an_error((header, message) in common::header_and_message()) {
        let bytes = encode(&header, &message);
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            let err = decode(prefix).expect_err("a truncated datagram must not decode");
            let expected = matches!(
                err.kind,
                DecodeErrorKind::TooShort | DecodeErrorKind::LengthMismatch { .. }
            );
            prop_assert!(expected, "cut at {}: {:?}", cut, err.kind);
            // The same prefix with a header that agrees with it reaches the IE parser.
            let mut patched = prefix.to_vec();
            set_length(&mut patched);
            decodes_sanely(&patched)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decodes_sanely(&bytes)?;
        // And the same with a version-1 header whose length agrees.
        let mut framed = bytes.clone();
        if framed.len() >= 4 {
            framed[0] = 0x20 | (framed[0] & 0x03);
            set_length(&mut framed);
        }
        decodes_sanely(&framed)?;
    }

    #[test]
    fn mutated_messages_never_panic(
        (header, message) in common::header_and_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        fix_length in any::<bool>(),
    ) {
        let mut bytes = encode(&header, &message);
        for (at, byte, how) in edits {
            let i = at.index(bytes.len() + 1);
            match how {
                // Overwrite, insert, delete an octet, or flip bits in an IE length.
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] ^= 1 << (byte % 8),
                _ => {}
            }
        }
        if fix_length {
            set_length(&mut bytes);
        }
        decodes_sanely(&bytes)?;
    }
}
