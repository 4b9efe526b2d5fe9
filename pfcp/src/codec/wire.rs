//! The TLV layer: writing IEs into a buffer and splitting bytes into IEs, with every bound
//! checked here so that the IE and message code above never indexes a slice itself.
//!
//! Owns: octet order (network order everywhere), the IE header (type, length), the limits on
//! nesting and on the number of IEs. Never interprets an IE's value.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{DecodeErrorKind, MAX_GROUPED_DEPTH, MAX_IES_PER_MESSAGE};

/// Bit 16 of an IE type: a vendor-specific IE whose value starts with a 2-octet enterprise ID
/// (TS 29.244 §8.1.1).
const ENTERPRISE_BIT: u16 = 0x8000;

/// An output buffer with helpers for the PFCP field widths.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// The low 24 bits of `v`.
    pub(crate) fn u24(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes()[1..]);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// The low 40 bits of `v` (MBR, GBR).
    pub(crate) fn u40(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes()[3..]);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn ipv4(&mut self, v: Ipv4Addr) {
        self.buf.extend_from_slice(&v.octets());
    }

    pub(crate) fn ipv6(&mut self, v: Ipv6Addr) {
        self.buf.extend_from_slice(&v.octets());
    }

    /// Writes the 2-octet length of what was written since `at` (the position just after
    /// the length field itself) into the two octets before `at`. A value longer than 65,535
    /// octets cannot be described by PFCP; its length saturates rather than panicking, and
    /// such bytes fail to decode.
    pub(crate) fn patch_len(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len().saturating_sub(at)).unwrap_or(u16::MAX);
        if let Some(slot) = self.buf.get_mut(at.wrapping_sub(2)..at) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// One IE: its type, its length, and the value `value` writes.
    pub(crate) fn ie(&mut self, ie_type: u16, value: impl FnOnce(&mut Writer)) {
        self.u16(ie_type);
        self.u16(0);
        let at = self.buf.len();
        value(self);
        self.patch_len(at);
    }
}

/// Reads the fields of one IE value; every short read is an [`DecodeErrorKind::InvalidLength`]
/// naming that IE. Octets left after the fields the IE defines are ignored: TS 29.244 marks
/// every IE "octets … present only if explicitly specified", the way later releases extend
/// an IE, so a longer IE from a newer peer is not an error.
pub(crate) struct Cursor<'a> {
    ie: u16,
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(ie: u16, value: &'a [u8]) -> Self {
        Cursor { ie, rest: value }
    }

    pub(crate) fn ie(&self) -> u16 {
        self.ie
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The octets not read yet (consumes them).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeErrorKind> {
        match self.rest.split_at_checked(n) {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(DecodeErrorKind::InvalidLength { ie: self.ie }),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeErrorKind> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeErrorKind> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeErrorKind> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, DecodeErrorKind> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeErrorKind> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u40(&mut self) -> Result<u64, DecodeErrorKind> {
        let [a, b, c, d, e] = self.array()?;
        Ok(u64::from_be_bytes([0, 0, 0, a, b, c, d, e]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeErrorKind> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn ipv4(&mut self) -> Result<Ipv4Addr, DecodeErrorKind> {
        Ok(Ipv4Addr::from(self.array::<4>()?))
    }

    pub(crate) fn ipv6(&mut self) -> Result<Ipv6Addr, DecodeErrorKind> {
        Ok(Ipv6Addr::from(self.array::<16>()?))
    }

    /// An error saying this IE holds a value TS 29.244 does not allow.
    pub(crate) fn incorrect(&self, why: &'static str) -> DecodeErrorKind {
        DecodeErrorKind::IncorrectValue { ie: self.ie, why }
    }
}

/// How many more IEs the message being decoded may contain ([`MAX_IES_PER_MESSAGE`]).
pub(crate) struct Budget {
    remaining: usize,
}

impl Budget {
    pub(crate) fn new() -> Self {
        Budget {
            remaining: MAX_IES_PER_MESSAGE,
        }
    }

    fn spend(&mut self) -> Result<(), DecodeErrorKind> {
        self.remaining = self
            .remaining
            .checked_sub(1)
            .ok_or(DecodeErrorKind::TooManyIes)?;
        Ok(())
    }
}

/// The IEs directly inside a message body or a grouped IE, in wire order.
pub(crate) struct Ies<'a> {
    list: Vec<(u16, &'a [u8])>,
    depth: usize,
}

impl<'a> Ies<'a> {
    /// Splits `bytes` (a message body or a grouped IE's value) into IEs. `owner` is the
    /// grouped IE's type (0 for a message body) and `depth` the number of grouped IEs around
    /// `bytes` (0 for a message body). Each IE's length must fit in what is left of `bytes`;
    /// a vendor IE must hold at least its enterprise ID.
    pub(crate) fn parse(
        bytes: &'a [u8],
        owner: u16,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<Self, DecodeErrorKind> {
        if depth > MAX_GROUPED_DEPTH {
            return Err(DecodeErrorKind::TooDeep);
        }
        let mut list = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            budget.spend()?;
            let Some((head, tail)) = rest.split_first_chunk::<4>() else {
                // Fewer than 4 octets cannot be an IE header: name the IE whose type can be
                // read, else the group that holds the stray octets.
                let ie = match rest {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => owner,
                };
                return Err(DecodeErrorKind::InvalidLength { ie });
            };
            let ie_type = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let Some((value, after)) = tail.split_at_checked(len) else {
                return Err(DecodeErrorKind::InvalidLength { ie: ie_type });
            };
            if ie_type & ENTERPRISE_BIT != 0 && value.len() < 2 {
                return Err(DecodeErrorKind::InvalidLength { ie: ie_type });
            }
            list.push((ie_type, value));
            rest = after;
        }
        Ok(Ies { list, depth })
    }

    /// The value of the first IE of `ie_type`. A later repetition of an IE that may appear
    /// once is ignored: the first one wins.
    pub(crate) fn first(&self, ie_type: u16) -> Option<&'a [u8]> {
        self.list
            .iter()
            .find(|(t, _)| *t == ie_type)
            .map(|(_, v)| *v)
    }

    /// The value of the first IE of `ie_type`, which the spec makes mandatory here.
    pub(crate) fn mandatory(&self, ie_type: u16) -> Result<&'a [u8], DecodeErrorKind> {
        self.first(ie_type)
            .ok_or(DecodeErrorKind::MissingMandatory { ie: ie_type })
    }

    /// The values of every IE of `ie_type`, in wire order.
    pub(crate) fn all(&self, ie_type: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.list
            .iter()
            .filter(move |(t, _)| *t == ie_type)
            .map(|(_, v)| *v)
    }

    /// The IEs inside `value`, a grouped IE of type `ie_type` found in this group.
    pub(crate) fn group(
        &self,
        ie_type: u16,
        value: &'a [u8],
        budget: &mut Budget,
    ) -> Result<Ies<'a>, DecodeErrorKind> {
        Ies::parse(value, ie_type, self.depth + 1, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_deeper_than_the_limit_are_refused() {
        let mut budget = Budget::new();
        assert!(Ies::parse(&[], 1, MAX_GROUPED_DEPTH, &mut budget).is_ok());
        assert!(matches!(
            Ies::parse(&[], 1, MAX_GROUPED_DEPTH + 1, &mut budget),
            Err(DecodeErrorKind::TooDeep)
        ));
    }

    #[test]
    fn stray_octets_name_the_ie_or_the_group() {
        let mut budget = Budget::new();
        let err = Ies::parse(&[0x00, 0x38, 0x00], 1, 1, &mut budget).err();
        assert_eq!(err, Some(DecodeErrorKind::InvalidLength { ie: 0x38 }));
        let err = Ies::parse(&[0x00], 2, 1, &mut budget).err();
        assert_eq!(err, Some(DecodeErrorKind::InvalidLength { ie: 2 }));
    }

    #[test]
    fn a_vendor_ie_must_hold_its_enterprise_id() {
        let mut budget = Budget::new();
        let err = Ies::parse(&[0x80, 0x01, 0x00, 0x01, 0xAA], 0, 0, &mut budget).err();
        assert_eq!(err, Some(DecodeErrorKind::InvalidLength { ie: 0x8001 }));
        let ok = Ies::parse(&[0x80, 0x01, 0x00, 0x02, 0x12, 0x34], 0, 0, &mut budget);
        assert!(ok.is_ok());
    }

    #[test]
    fn the_writer_saturates_lengths_it_cannot_express() {
        let mut w = Writer::default();
        w.ie(22, |w| w.bytes(&vec![0u8; 70_000]));
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..4], &[0, 22, 0xFF, 0xFF]);
    }
}
