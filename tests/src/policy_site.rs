//! A working directory for driving `mecgw policy …` and `mecgw budget …` as a compliance team
//! or an operator does: a policy file, key files with their modes, input records, an output
//! file and a state directory, and the commands run on them.
// Test support: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::mecgw_bin;

/// A temporary directory holding `policy.yaml`; removed on drop.
pub struct PolicySite {
    dir: tempfile::TempDir,
}

impl PolicySite {
    /// A directory with `policy` as `policy.yaml`.
    pub fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
        Self { dir }
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a key file `name` (parent directories created) with permission bits `mode`.
    pub fn write_key(&self, name: &str, text: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Runs `mecgw ARGS` in the directory.
    pub fn mecgw<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new(mecgw_bin().unwrap())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// `mecgw policy apply` on `policy.yaml` and `records` (written to `in.jsonl`), with
    /// `--state` if given, every path absolute: its output, and the objects written to
    /// `out.jsonl` (none if it was not).
    pub fn apply(&self, records: &str, state: Option<&Path>) -> (Output, Vec<Value>) {
        std::fs::write(self.path("in.jsonl"), records).unwrap();
        let _ = std::fs::remove_file(self.path("out.jsonl"));
        let (policy, input, output) = (
            self.path("policy.yaml"),
            self.path("in.jsonl"),
            self.path("out.jsonl"),
        );
        let mut args = vec![
            OsStr::new("policy"),
            OsStr::new("apply"),
            policy.as_os_str(),
            OsStr::new("--in"),
            input.as_os_str(),
            OsStr::new("--out"),
            output.as_os_str(),
        ];
        if let Some(s) = state {
            args.extend([OsStr::new("--state"), s.as_os_str()]);
        }
        let out = self.mecgw(args);
        let lines = std::fs::read_to_string(self.path("out.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out, lines)
    }
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
