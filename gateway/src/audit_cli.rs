//! `mecgw audit …`: operator checks of the egress audit log (`mecgw::records::egress::audit`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use mecgw::records::egress::audit::{self, AuditError};
use mecgw::records::egress::state::{MARKER_FILE, StateMarker};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log in DIR and report the first broken link.
    ///
    /// Exits 0 if every entry's hash, index and link to the previous entry are intact and the
    /// head file matches, 1 otherwise. A log that the state directory's marker says existed
    /// but that is now missing or empty is broken too. An intact log that records damaged or
    /// lost batches (quarantined, lost) lists them after the summary.
    Verify {
        /// The egress audit directory (holds audit.log and audit.head).
        dir: PathBuf,
        /// The state directory holding the state marker (`state.marker`); default: the
        /// directory that holds DIR, as in the daemon's layout.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { dir, state_dir } => verify(&dir, state_dir.as_deref()),
    }
}

fn verify(dir: &Path, state_dir: Option<&Path>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let state_dir = match state_dir {
        Some(s) => s.to_path_buf(),
        None => dir
            .canonicalize()
            .with_context(|| dir.display().to_string())?
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    };
    let marker = StateMarker::open(&state_dir)?;
    let has_log = dir.join(audit::LOG_FILE).exists() || dir.join(audit::HEAD_FILE).exists();
    if !has_log && !marker.had_state(mecgw::records::egress::state::AUDIT) {
        bail!(
            "{}: no {} here, and {} records no audit log; is this the egress audit directory?",
            dir.display(),
            audit::LOG_FILE,
            state_dir.join(MARKER_FILE).display()
        );
    }
    match audit::verify_with_marker(dir, &marker) {
        Ok(report) => {
            println!(
                "{}: chain intact: {} entries, last hash {}",
                dir.join(audit::LOG_FILE).display(),
                report.entries,
                report.last_hash
            );
            if report.incomplete_tail {
                println!(
                    "note: the log ends in an incomplete line (a crash during a write); it is not \
                     part of the chain and is cut off when egress next starts"
                );
            }
            if report.unfinished_write > 0 {
                println!(
                    "note: the last {} entries are a write that a crash interrupted before the \
                     head recorded it; the head announced it, and egress adopts it when it next \
                     starts",
                    report.unfinished_write
                );
            }
            if report.incident_count > 0 {
                println!(
                    "incidents: {} entries record damaged or lost batches:",
                    report.incident_count
                );
                for i in &report.incidents {
                    println!(
                        "  entry {}: {} {} (destination {}): {}",
                        i.index,
                        serde_json::to_value(i.outcome)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        i.batch_id.as_deref().unwrap_or("-"),
                        i.destination,
                        i.reason.as_deref().unwrap_or("")
                    );
                }
                if report.incident_count > report.incidents.len() as u64 {
                    println!(
                        "  … and {} more",
                        report.incident_count - report.incidents.len() as u64
                    );
                }
            }
            Ok(())
        }
        Err(e @ AuditError::Broken { .. }) => bail!("{e}"),
        Err(e) => Err(e.into()),
    }
}
