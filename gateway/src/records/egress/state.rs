//! The state marker: a state directory remembers which components have had state in it, so
//! that a component whose files vanished is a finding, not a fresh start.
//!
//! Owns one file, `DIR/state.marker`: a comment header, then one component name per line,
//! appended (and fsynced, with its directory) the first time that component has state. A
//! component asks [`StateMarker::presence`] when it opens: its files are there
//! ([`Presence::Present`]), it never had any ([`Presence::Fresh`]), or the marker says it had
//! state but its files are missing or empty ([`Presence::Vanished`]), which the component
//! reports (egress audits a vanished spool, and refuses to continue a vanished audit log)
//! instead of starting afresh. Lines are only ever appended, with `O_APPEND`, so several
//! components (and several `StateMarker` values on the same file) can record themselves
//! without coordinating; a repeated line is harmless.
//!
//! It never reads or judges a component's files: the component says whether it has state.
//! What it cannot see: the marker itself deleted together with the component's files (the
//! whole state directory wiped). Detecting that needs memory outside the site, which the
//! audit log shipped to a sink provides.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The marker file inside a state directory.
pub const MARKER_FILE: &str = "state.marker";
/// The component name of the egress spool.
pub const SPOOL: &str = "spool";
/// The component name of the egress audit log.
pub const AUDIT: &str = "audit";
/// Longest component name.
pub const MAX_COMPONENT_LEN: usize = 64;
/// Largest marker read: the header and every component mecgw has, many times over.
pub const MAX_MARKER_BYTES: u64 = 64 * 1024;

const HEADER: &str = "# mecgw state marker: the components that have had state in this directory, one per line.\n\
# A listed component whose files are missing or empty is reported as vanished, not started afresh.\n\
# Written by mecgw only. To accept that a component's state is gone, delete its line.\n";

/// The marker cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateMarkerError {
    /// Reading or writing the marker failed.
    #[error("state marker {}: {source}", path.display())]
    Io {
        /// The marker file (or its directory).
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The marker is not a regular file (a FIFO, a device), is larger than any marker mecgw
    /// writes ([`MAX_MARKER_BYTES`]), or could not be opened.
    #[error("state marker {0}")]
    Read(mecgw_policy::files::ReadError),
    /// A line is not a component name: the file was changed by something other than mecgw.
    #[error(
        "state marker {}: line {line}: {problem}; mecgw writes this file itself: restore it, or \
         remove the line (a vanished component is then no longer detected)",
        path.display()
    )]
    Unreadable {
        /// The marker file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A component name outside the accepted set (a programming error of the caller).
    #[error("state marker: component name {0:?} must be 1 to 64 of [a-z0-9_-]")]
    BadName(String),
}

/// What a component's files are, measured against the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The component never had state here and has none: a first start.
    Fresh,
    /// The component has state (whether or not the marker knew yet).
    Present,
    /// The marker records state for the component but its files are missing or empty.
    Vanished,
}

/// The record of which components have had state in one directory.
#[derive(Debug)]
pub struct StateMarker {
    path: PathBuf,
    components: Mutex<BTreeSet<String>>,
}

fn valid_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COMPONENT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl StateMarker {
    /// Reads the marker of state directory `dir` (none yet: no component has had state).
    /// A line that is not a component name is an error: the file was tampered with. An
    /// incomplete last line (a crash while recording) is ignored: that record never finished.
    pub fn open(dir: &Path) -> Result<Self, StateMarkerError> {
        let path = dir.join(MARKER_FILE);
        // Only a regular file, and never more than MAX_MARKER_BYTES: a FIFO is refused, not
        // waited on; a device, not read forever.
        let text = match mecgw_policy::files::read_limited(&path, MAX_MARKER_BYTES) {
            Ok(bytes) => bytes,
            Err(mecgw_policy::files::ReadError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Vec::new()
            }
            Err(e) => return Err(StateMarkerError::Read(e)),
        };
        let complete = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |end| end + 1);
        let unreadable = |line: usize, problem: String| StateMarkerError::Unreadable {
            path: path.clone(),
            line,
            problem,
        };
        let text = std::str::from_utf8(&text[..complete])
            .map_err(|e| unreadable(1, format!("not UTF-8 ({e})")))?;
        let mut components = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            if !valid_component(line) {
                return Err(unreadable(
                    n + 1,
                    format!("{line:?} is not a component name"),
                ));
            }
            components.insert(line.to_string());
        }
        Ok(Self {
            path,
            components: Mutex::new(components),
        })
    }

    /// The marker file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A set of names: a panic mid-insert leaves it usable.
        self.components.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if `component` has had state in this directory.
    pub fn had_state(&self, component: &str) -> bool {
        self.lock().contains(component)
    }

    /// Judges a component's files: `has_state` is whether it has state now.
    pub fn presence(&self, component: &str, has_state: bool) -> Presence {
        match (self.had_state(component), has_state) {
            (_, true) => Presence::Present,
            (false, false) => Presence::Fresh,
            (true, false) => Presence::Vanished,
        }
    }

    /// Records that `component` has state here; durable (file and directory fsynced) when it
    /// returns. Does nothing if it is recorded already.
    pub fn record(&self, component: &str) -> Result<(), StateMarkerError> {
        if !valid_component(component) {
            return Err(StateMarkerError::BadName(component.to_string()));
        }
        let mut components = self.lock();
        if components.contains(component) {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateMarkerError::Io { path, source }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        let len = file.metadata().map_err(io(&self.path))?.len();
        let mut line = String::new();
        if len == 0 {
            line.push_str(HEADER);
        } else {
            // An unfinished record (a crash while recording) must not run into this one.
            let mut last = [0u8];
            file.read_exact_at(&mut last, len - 1)
                .map_err(io(&self.path))?;
            if last != *b"\n" {
                line.push('\n');
            }
        }
        line.push_str(component);
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io(&self.path))?;
        // The file may be new: its directory entry must survive a power loss too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        components.insert(component.to_string());
        Ok(())
    }
}

/// True if `path` is a file with at least one byte (a missing or emptied file holds no state).
pub fn has_content(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_recorded_component_is_remembered_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let m = StateMarker::open(dir.path()).unwrap();
        assert_eq!(m.presence(SPOOL, false), Presence::Fresh);
        m.record(SPOOL).unwrap();
        m.record(SPOOL).unwrap();
        // A second value on the same file (another component of the same process).
        StateMarker::open(dir.path())
            .unwrap()
            .record("budget-ledger")
            .unwrap();
        let again = StateMarker::open(dir.path()).unwrap();
        assert_eq!(again.presence(SPOOL, false), Presence::Vanished);
        assert_eq!(again.presence(SPOOL, true), Presence::Present);
        assert!(again.had_state("budget-ledger"));
        assert_eq!(again.presence(AUDIT, false), Presence::Fresh);
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 2);
    }

    #[test]
    fn a_tampered_marker_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), "# header\nspool\nSP OOL\n").unwrap();
        let err = StateMarker::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateMarkerError::Unreadable { line: 3, .. }));
        assert!(err.to_string().contains("line 3"), "{err}");
        std::fs::write(dir.path().join(MARKER_FILE), b"spool\n\xff\n").unwrap();
        assert!(StateMarker::open(dir.path()).is_err());
    }

    #[test]
    fn an_unfinished_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), "spool\naud").unwrap();
        let m = StateMarker::open(dir.path()).unwrap();
        assert!(m.had_state(SPOOL));
        assert!(!m.had_state(AUDIT));
        assert!(matches!(
            m.record("Bad Name"),
            Err(StateMarkerError::BadName(_))
        ));
        m.record(AUDIT).unwrap();
        let again = StateMarker::open(dir.path()).unwrap();
        assert!(again.had_state(AUDIT) && again.had_state(SPOOL));
        assert!(!again.had_state("audaudit"));
    }
}
