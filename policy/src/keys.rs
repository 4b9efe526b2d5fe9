//! Pseudonymisation keys: loading them, deriving per-epoch keys, and computing pseudonyms.
//!
//! This module owns key material. A key is read from a file (epoch keys are derived from it
//! with HKDF-SHA-256, so one secret covers every epoch) or from a directory holding one file per
//! epoch, `<epoch>.key` (so an operator can destroy old epochs and make old pseudonyms
//! unlinkable for good). Keys shorter than 32 bytes are refused, and so are key files that other
//! users can access at all or that the group can do more than read (a Kubernetes Secret
//! mounted 0400, or 0440 with an `fsGroup`, passes). Every `<epoch>.key` of a directory is
//! checked when the key is loaded, not when a record first needs it, so a bad file stops the
//! engine from starting instead of turning records into bad records. Key bytes never leave
//! this module and are never logged.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ring::{hkdf, hmac};

use crate::model::KeySpec;

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Largest key file read, in bytes.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file or directory could not be read.
    #[error("key `{name}`: cannot read {path}: {error}")]
    Io {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    /// Other users can access the key file, or its group can do more than read it.
    #[error(
        "key `{name}`: {path} is {} (mode {mode:03o}); run `chmod 600 {path}` (or 640 if a group must read it)",
        access_problem(*mode)
    )]
    Readable {
        name: String,
        path: PathBuf,
        mode: u32,
    },
    /// The key is too short.
    #[error(
        "key `{name}`: {path} holds {len} bytes; keys must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32 > {path}`)"
    )]
    TooShort {
        name: String,
        path: PathBuf,
        len: usize,
    },
    /// The key file is larger than any key.
    #[error("key `{name}`: {path} is larger than {MAX_KEY_FILE_BYTES} bytes; is it a key?")]
    TooLarge { name: String, path: PathBuf },
    /// A key directory has no file for this epoch.
    #[error("key `{name}`: no key for epoch {epoch} (expected {path})")]
    MissingEpoch {
        name: String,
        epoch: i64,
        path: PathBuf,
    },
    /// A test key is not valid hex.
    #[error("key `{name}`: test key is not hex of at least {MIN_KEY_BYTES} bytes")]
    BadTestKey { name: String },
}

enum Source {
    /// One secret; epoch keys derived with HKDF.
    Derived(hkdf::Prk),
    /// One file per epoch in a directory.
    Directory(PathBuf),
}

/// One named key with its rotation schedule.
pub struct EpochKeys {
    name: String,
    rotation: u64,
    source: Source,
    cache: HashMap<i64, hmac::Key>,
    /// The epoch of the last pseudonym, its key and its output prefix `e<epoch>:` (records
    /// arrive roughly in time order: most need neither a map lookup nor formatting).
    last: Option<(i64, hmac::Key, String)>,
}

/// Permission bits a key file must not have: any access for other users, and group write or
/// execute. Group read is allowed: it is how a Kubernetes Secret mounted with an `fsGroup`
/// (0440) reaches a non-root process, and the group is the operator's to choose.
pub const FORBIDDEN_MODE_BITS: u32 = 0o037;

/// What is wrong with `mode`, in words (for [`KeyError::Readable`]).
fn access_problem(mode: u32) -> &'static str {
    if mode & 0o004 != 0 {
        "readable by other users"
    } else if mode & 0o007 != 0 {
        "accessible by other users"
    } else {
        "writable or executable by its group"
    }
}

/// Reads a key file, checking permissions and length. Hex text (with optional trailing
/// whitespace) is decoded; anything else is taken as raw bytes.
pub fn read_key_file(name: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |error| KeyError::Io {
        name: name.to_owned(),
        path: path.to_owned(),
        error,
    };
    // Only a regular file (a device or a FIFO is refused before anything is read), its mode
    // checked on the open descriptor, read through the limit.
    let file = crate::files::open_regular(path).map_err(|e| io(e.into_io()))?;
    let meta = file.metadata().map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(KeyError::Readable {
            name: name.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_KEY_FILE_BYTES + 1),
        &mut raw,
    )
    .map_err(io)?;
    if raw.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::TooLarge {
            name: name.to_owned(),
            path: path.to_owned(),
        });
    }
    let key = decode_key_text(&raw).unwrap_or(raw);
    if key.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort {
            name: name.to_owned(),
            path: path.to_owned(),
            len: key.len(),
        });
    }
    Ok(key)
}

/// Checks every `<epoch>.key` in a key directory as [`read_key_file`] does (permissions,
/// length, size), so that a bad epoch file is an error naming it when the key is loaded.
/// Other files in the directory are not keys and are left alone.
fn check_directory(name: &str, dir: &Path) -> Result<(), KeyError> {
    let io = |error| KeyError::Io {
        name: name.to_owned(),
        path: dir.to_owned(),
        error,
    };
    let mut epochs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file = entry.file_name();
        let is_epoch = file
            .to_str()
            .and_then(|f| f.strip_suffix(".key"))
            .is_some_and(|e| e.parse::<i64>().is_ok());
        if is_epoch {
            epochs.push(entry.path());
        }
    }
    // In order, so that the error names the same file every time.
    epochs.sort();
    for path in epochs {
        read_key_file(name, &path)?;
    }
    Ok(())
}

/// Hex-decodes `raw` if it is hex text with optional trailing whitespace.
pub fn decode_key_text(raw: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?.trim_end();
    if text.is_empty() {
        return None;
    }
    crate::hex::decode(text)
}

fn derive_prk(secret: &[u8]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"mecgw pseudonym key v1").extract(secret)
}

impl EpochKeys {
    /// Loads a key as the policy declares it; `base` resolves relative paths.
    pub fn load(name: &str, spec: &KeySpec, base: &Path) -> Result<Self, KeyError> {
        let path = base.join(&spec.path);
        let meta = std::fs::metadata(&path).map_err(|error| KeyError::Io {
            name: name.to_owned(),
            path: path.clone(),
            error,
        })?;
        let source = if meta.is_dir() {
            check_directory(name, &path)?;
            Source::Directory(path)
        } else {
            Source::Derived(derive_prk(&read_key_file(name, &path)?))
        };
        Ok(Self {
            name: name.to_owned(),
            rotation: spec.rotation.0,
            source,
            cache: HashMap::new(),
            last: None,
        })
    }

    /// A key from test material (hex), for `mecgw policy test` and unit tests.
    pub fn from_test_hex(name: &str, hex: &str, rotation: u64) -> Result<Self, KeyError> {
        let bad = || KeyError::BadTestKey {
            name: name.to_owned(),
        };
        let key = decode_key_text(hex.as_bytes()).ok_or_else(bad)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_owned(),
            rotation,
            source: Source::Derived(derive_prk(&key)),
            cache: HashMap::new(),
            last: None,
        })
    }

    /// The epoch a timestamp falls in.
    pub fn epoch_of(&self, unix_seconds: i64) -> i64 {
        // rotation ≥ 1 s: the compiler refuses zero durations.
        unix_seconds.div_euclid(i64::try_from(self.rotation).unwrap_or(i64::MAX).max(1))
    }

    fn key_for(&mut self, epoch: i64) -> Result<&hmac::Key, KeyError> {
        if !self.cache.contains_key(&epoch) {
            let key = match &self.source {
                Source::Derived(prk) => {
                    let info = [self.name.as_bytes(), b"\0", &epoch.to_be_bytes()];
                    let okm =
                        prk.expand(&info, hmac::HMAC_SHA256)
                            .map_err(|_| KeyError::BadTestKey {
                                name: self.name.clone(),
                            })?;
                    hmac::Key::from(okm)
                }
                Source::Directory(dir) => {
                    let path = dir.join(format!("{epoch}.key"));
                    if !path.exists() {
                        return Err(KeyError::MissingEpoch {
                            name: self.name.clone(),
                            epoch,
                            path,
                        });
                    }
                    hmac::Key::new(hmac::HMAC_SHA256, &read_key_file(&self.name, &path)?)
                }
            };
            // Bound the cache: a batch rarely spans more than a few epochs.
            if self.cache.len() >= 64 {
                self.cache.clear();
            }
            self.cache.insert(epoch, key);
        }
        self.cache.get(&epoch).ok_or_else(|| KeyError::BadTestKey {
            name: self.name.clone(),
        })
    }

    /// The pseudonym of `value` at time `unix_seconds`: `e<epoch>:<first 16 bytes of
    /// HMAC-SHA-256, hex>`.
    pub fn pseudonym(&mut self, value: &[u8], unix_seconds: i64) -> Result<String, KeyError> {
        let epoch = self.epoch_of(unix_seconds);
        if self.last.as_ref().is_none_or(|(e, _, _)| *e != epoch) {
            let key = self.key_for(epoch)?.clone();
            self.last = Some((epoch, key, format!("e{epoch}:")));
        }
        let Some((_, key, prefix)) = &self.last else {
            return Err(KeyError::BadTestKey {
                name: self.name.clone(),
            });
        };
        let tag = hmac::sign(key, value);
        let mut out = String::with_capacity(prefix.len() + 32);
        out.push_str(prefix);
        crate::hex::encode_into(&mut out, &tag.as_ref()[..16]);
        Ok(out)
    }
}

/// Every key a policy declares, by name.
#[derive(Default)]
pub struct KeyRing {
    keys: BTreeMap<String, EpochKeys>,
}

impl KeyRing {
    /// Adds a key.
    pub fn insert(&mut self, keys: EpochKeys) {
        self.keys.insert(keys.name.clone(), keys);
    }

    /// The key named `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut EpochKeys> {
        self.keys.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::hex::encode as hex;

    /// RFC 4231 HMAC-SHA-256 test vectors, computed with the same ring API the pseudonymiser uses.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let cases: &[(Vec<u8>, Vec<u8>, &str)] = &[
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1u8..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            let k = hmac::Key::new(hmac::HMAC_SHA256, key);
            assert_eq!(hex(hmac::sign(&k, data).as_ref()), *want);
        }
        // Test case 5: output truncated to 128 bits.
        let k = hmac::Key::new(hmac::HMAC_SHA256, &[0x0c; 20]);
        assert_eq!(
            &hex(hmac::sign(&k, b"Test With Truncation").as_ref())[..32],
            "a3b6167473100ee06e0c796c2955552b"
        );
    }

    const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    proptest! {
        #[test]
        fn pseudonyms_are_stable_within_an_epoch_and_differ_across(
            value in "[0-9]{5,15}", t in 0i64..4_000_000_000, dt in 0i64..86_400,
        ) {
            let mut k = EpochKeys::from_test_hex("subscriber", TEST_KEY, 86_400).unwrap();
            let start = t - t.rem_euclid(86_400);
            let a = k.pseudonym(value.as_bytes(), start).unwrap();
            let b = k.pseudonym(value.as_bytes(), start + dt).unwrap();
            let c = k.pseudonym(value.as_bytes(), start + 86_400).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_ne!(&a[a.find(':').unwrap()..], &c[c.find(':').unwrap()..]);
            let prefix = format!("e{}:", start / 86_400);
            prop_assert!(a.starts_with(&prefix));
            prop_assert!(!a.contains(value.as_str()) || value.len() < 5);
        }
    }

    #[test]
    fn a_key_directory_holds_one_key_per_epoch() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mecgw-keydir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (epoch, key) in [(20783, TEST_KEY), (20784, &TEST_KEY.replace('0', "f")[..])] {
            let p = dir.join(format!("{epoch}.key"));
            std::fs::write(&p, key).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let spec = KeySpec {
            path: dir.display().to_string(),
            rotation: crate::units::Duration(86_400),
            pos: crate::diag::Pos::default(),
        };
        let mut k = EpochKeys::load("subscriber", &spec, Path::new("/")).unwrap();
        let day = 20783 * 86_400;
        let a = k.pseudonym(b"001010000000001", day).unwrap();
        let b = k.pseudonym(b"001010000000001", day + 86_400).unwrap();
        assert!(a.starts_with("e20783:") && b.starts_with("e20784:"));
        assert_ne!(a[7..], b[7..]);
        // The directory key of an epoch is the file's key itself (no derivation).
        let direct = hmac::sign(
            &hmac::Key::new(
                hmac::HMAC_SHA256,
                &decode_key_text(TEST_KEY.as_bytes()).unwrap(),
            ),
            b"001010000000001",
        );
        assert_eq!(&a[7..], hex(&direct.as_ref()[..16]));
        // An epoch without a file: a clear error naming the file it looked for.
        let e = k
            .pseudonym(b"001010000000001", day + 2 * 86_400)
            .unwrap_err();
        assert!(e.to_string().contains("no key for epoch 20785"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A key directory's epoch files are all checked when the key is loaded: a bad one is an
    /// error naming it, not a bad record later. Files that are not `<epoch>.key` are ignored.
    #[test]
    fn every_epoch_file_of_a_key_directory_is_checked_at_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mecgw-keydir-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        write("20783.key", TEST_KEY, 0o600);
        write("README", "not a key", 0o644);
        write("20783.key.bak", "short", 0o644);
        let spec = KeySpec {
            path: dir.display().to_string(),
            rotation: crate::units::Duration(86_400),
            pos: crate::diag::Pos::default(),
        };
        assert!(EpochKeys::load("subscriber", &spec, Path::new("/")).is_ok());
        let open = write("20784.key", TEST_KEY, 0o604);
        match EpochKeys::load("subscriber", &spec, Path::new("/")) {
            Err(KeyError::Readable { path, mode, .. }) => assert_eq!((path, mode), (open, 0o604)),
            other => panic!("{:?}", other.err()),
        }
        std::fs::remove_file(dir.join("20784.key")).unwrap();
        let short = write("-1.key", "00112233", 0o400);
        match EpochKeys::load("subscriber", &spec, Path::new("/")) {
            Err(KeyError::TooShort { path, len, .. }) => assert_eq!((path, len), (short, 4)),
            other => panic!("{:?}", other.err()),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_and_readable_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mecgw-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short.key");
        std::fs::write(&short, "00112233").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_key_file("s", &short),
            Err(KeyError::TooShort { len: 4, .. })
        ));
        let open = dir.join("open.key");
        std::fs::write(&open, TEST_KEY).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file("o", &open).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Other users get nothing; the group may read (a Kubernetes Secret with an fsGroup),
        // never write or execute.
        for (mode, problem) in [
            (0o604, Some("readable by other users")),
            (0o602, Some("accessible by other users")),
            (0o601, Some("accessible by other users")),
            (0o660, Some("writable or executable by its group")),
            (0o650, Some("writable or executable by its group")),
            (0o600, None),
            (0o400, None),
            (0o640, None),
            (0o440, None),
        ] {
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            match (read_key_file("o", &open), problem) {
                (Ok(k), None) => assert_eq!(k.len(), 32),
                (Err(e), Some(p)) => {
                    let text = e.to_string();
                    assert!(text.contains(&format!("{p} (mode {mode:03o})")), "{text}");
                }
                (r, p) => panic!("mode {mode:03o}: {r:?}, expected {p:?}"),
            }
        }
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file("o", &open).unwrap().len(), 32);
        let raw = dir.join("raw.key");
        std::fs::write(&raw, [0xffu8; 40]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_key_file("r", &raw).unwrap(), vec![0xff; 40]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
