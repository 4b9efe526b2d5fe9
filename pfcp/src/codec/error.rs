//! Why a datagram did not decode, and what a UP function answers to it.

use crate::ie::Cause;
use crate::message::Header;

/// A datagram that did not decode into a [`Message`](crate::message::Message).
///
/// `header` is kept whenever the header could be read, so that a server can still answer
/// with the request's message type and sequence number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode PFCP message: {kind}")]
pub struct DecodeError {
    pub header: Option<Header>,
    pub kind: DecodeErrorKind,
}

/// What was wrong. `ie` fields hold the IE type (TS 29.244 Table 8.1.2-1) of the innermost
/// IE concerned, e.g. the PDR ID missing inside a Create PDR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The datagram ends before the end of the PFCP header (4 octets, then 4 more for a node
    /// message or 12 more for a session message).
    #[error("datagram too short for a PFCP header")]
    TooShort,
    /// The header's version is not 1: answer with a Version Not Supported Response (§7.6.2).
    #[error("PFCP version {0} is not supported")]
    VersionNotSupported(u8),
    /// The header's length field does not describe the datagram: `declared` + 4 octets were
    /// announced, `actual` received. Trailing octets after the message are refused too: a
    /// message piggybacked after another (the FO flag) is not supported.
    #[error("header says {declared} octets follow its first 4, the datagram has {actual} in all")]
    LengthMismatch { declared: u16, actual: usize },
    /// The datagram is longer than [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES).
    #[error("datagram longer than {} octets", super::MAX_MESSAGE_BYTES)]
    TooLarge,
    /// A message type this crate does not model (e.g. PFD management, node report, session
    /// set deletion) or that TS 29.244 does not define: silently discarded (§7.6.4).
    #[error("message type {0} is not handled")]
    UnknownMessageType(u8),
    /// The S flag disagrees with the message type: session messages (type 50 and up) carry
    /// a SEID, node messages do not.
    #[error("the S flag is wrong for this message type")]
    SeidFlag,
    /// An IE the spec makes mandatory here is absent.
    #[error("mandatory IE {ie} is missing")]
    MissingMandatory { ie: u16 },
    /// An IE the spec makes conditional is absent although its condition holds (e.g.
    /// Forwarding Parameters in a Create FAR whose Apply Action forwards).
    #[error("conditional IE {ie} is missing")]
    MissingConditional { ie: u16 },
    /// An IE's length runs past its parent, or is too short for the fields its type (and its
    /// own flags) say it holds.
    #[error("IE {ie} has an invalid length")]
    InvalidLength { ie: u16 },
    /// An IE holds a value TS 29.244 does not allow.
    #[error("IE {ie} is incorrect: {why}")]
    IncorrectValue { ie: u16, why: &'static str },
    /// Grouped IEs nest deeper than [`MAX_GROUPED_DEPTH`](super::MAX_GROUPED_DEPTH).
    #[error("grouped IEs nest deeper than {}", super::MAX_GROUPED_DEPTH)]
    TooDeep,
    /// The message holds more than [`MAX_IES_PER_MESSAGE`](super::MAX_IES_PER_MESSAGE) IEs.
    #[error("more than {} IEs in one message", super::MAX_IES_PER_MESSAGE)]
    TooManyIes,
}

impl DecodeError {
    /// The Cause value a response to this request carries (TS 29.244 §7.6 and Table 8.2.1-1):
    /// - 66 Mandatory IE missing, 67 Conditional IE missing: §7.6 "missing IEs";
    /// - 68 Invalid length: an IE whose length is inconsistent with its parent or with its
    ///   own fields, and a request whose datagram disagrees with the header's length (§7.6.3);
    /// - 69 Mandatory IE incorrect: any IE with a value the spec does not allow. The codec
    ///   refuses an incorrect optional IE too rather than dropping it (dropping, say, a UE IP
    ///   Address from a PDI would widen what the PDR matches); no cause value names that case
    ///   better;
    /// - 64 Request rejected for the rest (too many IEs, nesting too deep, S flag wrong,
    ///   oversized). Some of those get no response at all: a datagram too short for a header,
    ///   an unknown message type (§7.6.4; silently discarded) and an unsupported version
    ///   (answered by a Version Not Supported Response, which has no Cause).
    pub fn cause(&self) -> Cause {
        match self.kind {
            DecodeErrorKind::MissingMandatory { .. } => Cause::MANDATORY_IE_MISSING,
            DecodeErrorKind::MissingConditional { .. } => Cause::CONDITIONAL_IE_MISSING,
            DecodeErrorKind::InvalidLength { .. } | DecodeErrorKind::LengthMismatch { .. } => {
                Cause::INVALID_LENGTH
            }
            DecodeErrorKind::IncorrectValue { .. } => Cause::MANDATORY_IE_INCORRECT,
            DecodeErrorKind::TooShort
            | DecodeErrorKind::VersionNotSupported(_)
            | DecodeErrorKind::TooLarge
            | DecodeErrorKind::UnknownMessageType(_)
            | DecodeErrorKind::SeidFlag
            | DecodeErrorKind::TooDeep
            | DecodeErrorKind::TooManyIes => Cause::REJECTED,
        }
    }

    /// The IE type for the response's Offending IE (§8.2.22), where one IE is to blame. IE
    /// type 0 (reserved) stands for "stray octets in the message body" and gives `None`.
    pub fn offending_ie(&self) -> Option<u16> {
        match self.kind {
            DecodeErrorKind::MissingMandatory { ie }
            | DecodeErrorKind::MissingConditional { ie }
            | DecodeErrorKind::InvalidLength { ie }
            | DecodeErrorKind::IncorrectValue { ie, .. } => (ie != 0).then_some(ie),
            _ => None,
        }
    }
}
