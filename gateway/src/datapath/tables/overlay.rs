//! Entries another owner adds on top of the tables file: the operator API's sessions and
//! rules, and the states it set on the file's rules (MEC 011 lets apps switch a rule
//! ACTIVE or INACTIVE).
//!
//! Every session and rule has exactly one owner. The tables file owns what it defines and is
//! what SIGHUP re-reads; an overlay owns what was created through the API and is kept in its
//! own file under the state directory, so it survives SIGHUP and restarts. An id defined by
//! both is a problem, never a silent override. Sessions an SMF creates over PFCP are owned by
//! its association and are not tables at all (they live in the PFCP session store).
//!
//! The overlay file is JSON (`{"sessions": [...], "rules": [...], "rule_states": {...}}`,
//! entries in the tables file's own field names and value forms), written atomically: a
//! temporary file, fsync, rename, fsync of the directory. A crash leaves the old or the new
//! file, never a mixture.

use std::{
    collections::{BTreeMap, HashSet},
    io::Write as _,
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{
    RuleState, Session, Tables, TrafficRule,
    problems::{Place, Problem},
};

/// Largest overlay file read back (bytes): it is written by mecgw, but read as untrusted.
pub const MAX_OVERLAY_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Sessions and rules one owner adds to a tables file, and the states it sets on the file's
/// rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Sessions this owner created.
    #[serde(default)]
    pub sessions: Vec<Session>,
    /// Rules this owner created.
    #[serde(default)]
    pub rules: Vec<TrafficRule>,
    /// States this owner set on rules it does not own (the file's), by rule id. A state for
    /// a rule the file no longer has is kept and applies if the rule comes back.
    #[serde(default)]
    pub rule_states: BTreeMap<u32, RuleState>,
}

/// Why an overlay file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The file is not a regular file, too large, or unreadable.
    #[error(transparent)]
    Read(#[from] mecgw_policy::files::ReadError),
    /// The file is not an overlay (damaged or edited by hand).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Writing failed; the previous file is intact.
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Overlay {
    /// Whether this overlay owns session `id`.
    pub fn owns_session(&self, id: u32) -> bool {
        self.sessions.iter().any(|s| s.id == id)
    }

    /// Whether this overlay owns rule `id`.
    pub fn owns_rule(&self, id: u32) -> bool {
        self.rules.iter().any(|r| r.id == id)
    }

    /// `file` with this overlay applied: its sessions and rules appended after the file's
    /// (so indexes below the file's counts are the file's entries), and its states set on
    /// the file's rules. A session or rule id defined by both is a problem at the file's
    /// entry; `owner` names this overlay's owner in the message ("the operator API").
    pub fn apply(&self, mut file: Tables, owner: &str) -> Result<Tables, Vec<Problem>> {
        let mine: HashSet<u32> = self.sessions.iter().map(|s| s.id).collect();
        let mut problems = Vec::new();
        for (i, s) in file.sessions.iter().enumerate() {
            if mine.contains(&s.id) {
                problems.push(Problem {
                    place: Place::Session(i),
                    message: format!(
                        "session {id}: also created through {owner}; a session has one owner: \
                         remove it from this file or delete it through {owner}",
                        id = s.id
                    ),
                });
            }
        }
        let mine: HashSet<u32> = self.rules.iter().map(|r| r.id).collect();
        for (i, r) in file.rules.iter_mut().enumerate() {
            if mine.contains(&r.id) {
                problems.push(Problem {
                    place: Place::Rule(i),
                    message: format!(
                        "rule {id}: also created through {owner}; a rule has one owner: \
                         remove it from this file or delete it through {owner}",
                        id = r.id
                    ),
                });
            }
            if let Some(&state) = self.rule_states.get(&r.id) {
                r.state = state;
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        file.sessions.extend(self.sessions.iter().cloned());
        file.rules.extend(self.rules.iter().cloned());
        Ok(file)
    }

    /// Reads the overlay at `path`; a missing file is an empty overlay (nothing was ever
    /// created through its owner).
    pub fn load(path: &Path) -> Result<Overlay, OverlayError> {
        if !path.exists() {
            return Ok(Overlay::default());
        }
        let text = mecgw_policy::files::read_text_limited(path, MAX_OVERLAY_FILE_BYTES)?;
        serde_json::from_str(&text).map_err(|e| OverlayError::Syntax {
            path: path.display().to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// Writes the overlay to `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<(), OverlayError> {
        let err = |source| OverlayError::Write {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::datapath::{compile::from_toml, tables::tests::MINIMAL};

    fn session(id: u32) -> Session {
        Session {
            id,
            uplink_teid: super::super::Teid(id),
            downlink_teid: super::super::Teid(id),
            ue_ipv4: Some(std::net::Ipv4Addr::new(10, 9, 0, id as u8)),
            ue_ipv6: Some("2001:db8:9::/64".parse().unwrap()),
            gnb: "198.18.1.1".parse().unwrap(),
            qfi: super::super::Qfi::new(9).unwrap(),
            imsi: Some("001010000000001".parse().unwrap()),
        }
    }

    #[test]
    fn what_is_stored_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api").join("tables.json");
        assert_eq!(Overlay::load(&path).unwrap(), Overlay::default());
        let example = from_toml(include_str!("../../../../examples/tables.toml"), "ex")
            .unwrap()
            .into_tables();
        let overlay = Overlay {
            sessions: vec![session(77)],
            rules: example.rules.clone(),
            rule_states: BTreeMap::from([(3, RuleState::Inactive)]),
        };
        overlay.store(&path).unwrap();
        assert_eq!(Overlay::load(&path).unwrap(), overlay);
    }

    #[test]
    fn a_damaged_file_is_an_error_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tables.json");
        std::fs::write(&path, "{\n  \"sessions\": [\n    {\"id\": \"x\"}\n  ]\n}\n").unwrap();
        let e = Overlay::load(&path).unwrap_err().to_string();
        assert!(e.contains("tables.json:3:"), "{e}");
    }

    #[test]
    fn an_id_has_one_owner() {
        let mut file = from_toml(MINIMAL, "t").unwrap().into_tables();
        file.sessions.push(session(5));
        let overlay = Overlay {
            sessions: vec![session(5)],
            ..Overlay::default()
        };
        let problems = overlay.apply(file.clone(), "the operator API").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].place, Place::Session(0));
        assert!(
            problems[0]
                .message
                .contains("also created through the operator API"),
            "{problems:?}"
        );
        let other = Overlay {
            sessions: vec![session(6)],
            ..Overlay::default()
        };
        let merged = other.apply(file, "the operator API").unwrap();
        assert_eq!(
            merged.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![5, 6],
            "the file's entries first"
        );
    }
}
