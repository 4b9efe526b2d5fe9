//! Reading a file an operator points at, safely: only a regular file, and never more than a
//! hard limit of bytes.
//!
//! A size check on `metadata().len()` is not enough: devices such as `/dev/zero` report 0 and
//! then never end, and opening a FIFO for reading blocks until a writer comes. So the file is
//! opened without blocking, its type is checked on the open descriptor (no race with a rename),
//! and it is read through a limit one byte past the allowed size, so an over-long file is
//! refused however its size is reported. Every file mecgw reads from configuration (config,
//! tables, policy, keys, TLS material, audit and ledger heads) goes through here.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("{path}: is {kind}, not a regular file; point it at a regular file")]
    NotRegular { path: String, kind: &'static str },
    /// The file has more than `limit` bytes.
    #[error("{path}: more than the {limit} bytes this file may have")]
    TooLarge { path: String, limit: u64 },
    /// The file is not UTF-8 text.
    #[error("{path}: not UTF-8 text (byte {at} is not valid UTF-8)")]
    NotUtf8 { path: String, at: usize },
}

impl ReadError {
    /// The error as an `std::io::Error` (kind `InvalidData` unless the OS said otherwise),
    /// for callers that report I/O errors.
    pub fn into_io(self) -> std::io::Error {
        match self {
            ReadError::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// What kind of file system object `t` is, for messages.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file (following symbolic links), without
/// blocking on a FIFO.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    let shown = || path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let t = file.metadata().map_err(io)?.file_type();
    if !t.is_file() {
        return Err(ReadError::NotRegular {
            path: shown(),
            kind: kind(t),
        });
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| ReadError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.display().to_string(),
            limit,
        });
    }
    Ok(out)
}

/// The UTF-8 text of the regular file at `path`, at most `limit` bytes of it.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, ReadError> {
    let bytes = read_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        path: path.display().to_string(),
        at: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_regular_file_within_the_limit_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("mecgw-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_limited(&path, 5).unwrap(), b"12345");
        let e = read_limited(&path, 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 4, .. }), "{e}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let e = read_text_limited(&path, 10).unwrap_err();
        assert!(matches!(e, ReadError::NotUtf8 { at: 0, .. }), "{e}");
        let e = read_limited(&dir, 10).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_refused_before_anything_is_read() {
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let e = read_limited(Path::new(dev), 1 << 20).unwrap_err();
            assert!(
                e.to_string()
                    .contains("is a character device, not a regular file"),
                "{dev}: {e}"
            );
        }
    }
}
