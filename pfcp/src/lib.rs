//! mecgw's PFCP wire format (3GPP TS 29.244): the N4 messages and information elements a
//! user-plane function needs to be programmed by an SMF.
//!
//! - [`ie`]: the information elements as typed values;
//! - [`message`]: the messages as typed values, and the header;
//! - [`codec`]: bytes ↔ messages ([`encode`], [`decode`]), strict about what it accepts.
//!
//! This crate owns bytes ↔ values and nothing else: it keeps no state, opens no socket and
//! never decides what a message means for the gateway (the gateway's `pfcp` module does).
//! Untrusted input never panics here.
#![forbid(unsafe_code)]

pub mod codec;
pub mod ie;
pub mod message;

pub use codec::{
    DecodeError, DecodeErrorKind, MAX_GROUPED_DEPTH, MAX_IES_PER_MESSAGE, MAX_MESSAGE_BYTES,
    decode, encode,
};
