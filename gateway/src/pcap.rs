//! A minimal reader and writer of classic pcap files (Ethernet link type only).
//!
//! Hand-written rather than a crate: the format is a 24-byte header and 16-byte record
//! headers, and we need exactly this much, with our own limits and error messages (file,
//! record number, what is wrong). pcapng is recognised and refused with a hint.

use std::io::{self, Read, Write};

/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record we accept: bigger than any jumbo frame, small enough to bound memory.
pub const MAX_RECORD_BYTES: u32 = 262_144;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapError {
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
    #[error(
        "not a pcap file (magic {0:#010x}); pcapng is not supported: convert it with `editcap -F pcap IN OUT`"
    )]
    Pcapng(u32),
    #[error("not a pcap file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("link type {0} is not Ethernet (1): only Ethernet captures can be replayed")]
    LinkType(u32),
    #[error("record {index}: captured length {len} exceeds the {MAX_RECORD_BYTES}-byte limit")]
    TooLong { index: u64, len: u32 },
    #[error("record {index}: the file ends inside the record")]
    Truncated { index: u64 },
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    /// Microseconds or nanoseconds, as the file's magic says (kept as is).
    pub ts_frac: u32,
    /// Original length on the wire.
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Reads records one by one.
pub struct Reader<R> {
    inner: R,
    big_endian: bool,
    nanos: bool,
    index: u64,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the global header.
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        inner.read_exact(&mut h)?;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match magic {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            0x0a0d_0d0a => return Err(PcapError::Pcapng(magic)),
            other => return Err(PcapError::BadMagic(other)),
        };
        let r = Reader {
            inner,
            big_endian,
            nanos,
            index: 0,
        };
        let link = r.u32(&h[20..24]);
        if link != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(link));
        }
        Ok(r)
    }

    /// Whether timestamps are in nanoseconds.
    pub fn nanos(&self) -> bool {
        self.nanos
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let index = self.index;
        let mut h = [0u8; 16];
        let mut got = 0;
        while got < h.len() {
            let n = self.inner.read(&mut h[got..])?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(PcapError::Truncated { index })
                };
            }
            got += n;
        }
        let len = self.u32(&h[8..12]);
        if len > MAX_RECORD_BYTES {
            return Err(PcapError::TooLong { index, len });
        }
        let mut data = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => PcapError::Truncated { index },
                _ => PcapError::Io(e),
            })?;
        self.index += 1;
        Ok(Some(Record {
            ts_sec: self.u32(&h[0..4]),
            ts_frac: self.u32(&h[4..8]),
            orig_len: self.u32(&h[12..16]),
            data,
        }))
    }
}

/// Writes a little-endian Ethernet pcap.
pub struct Writer<W> {
    inner: W,
}

impl<W: Write> Writer<W> {
    /// Writes the global header; `nanos` selects nanosecond timestamps.
    pub fn new(mut inner: W, nanos: bool) -> io::Result<Self> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&MAX_RECORD_BYTES.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&h)?;
        Ok(Writer { inner })
    }

    /// Appends a frame.
    pub fn write(&mut self, ts_sec: u32, ts_frac: u32, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&ts_sec.to_le_bytes());
        h.extend_from_slice(&ts_frac.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&len.to_le_bytes());
        self.inner.write_all(&h)?;
        self.inner.write_all(data)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = Writer::new(Vec::new(), false).unwrap();
        w.write(1, 2, &[1, 2, 3]).unwrap();
        w.write(3, 4, &[]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = Reader::new(&bytes[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!((a.ts_sec, a.ts_frac, a.data), (1, 2, vec![1, 2, 3]));
        assert_eq!(r.next_record().unwrap().unwrap().data, Vec::<u8>::new());
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn big_endian_files_are_read() {
        let mut f = vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0xab, 0xcd]);
        let mut r = Reader::new(&f[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!((rec.ts_sec, rec.data), (9, vec![0xab, 0xcd]));
    }

    #[test]
    fn bad_input_gets_a_specific_error() {
        let mut ok = Writer::new(Vec::new(), false).unwrap();
        ok.write(0, 0, &[1, 2, 3, 4]).unwrap();
        let ok = ok.finish().unwrap();
        let cut = &ok[..ok.len() - 1];
        let mut r = Reader::new(cut).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(PcapError::Truncated { index: 0 })
        ));

        let mut huge = ok[..24].to_vec();
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&(MAX_RECORD_BYTES + 1).to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        let mut r = Reader::new(&huge[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(PcapError::TooLong { index: 0, .. })
        ));

        let mut raw_ip = ok[..24].to_vec();
        raw_ip[20] = 101;
        assert!(matches!(
            Reader::new(&raw_ip[..]),
            Err(PcapError::LinkType(101))
        ));
        let ng = [0x0a, 0x0d, 0x0d, 0x0a].repeat(6);
        let e = Reader::new(&ng[..]).err().unwrap().to_string();
        assert!(e.contains("pcapng is not supported"), "{e}");
    }
}
