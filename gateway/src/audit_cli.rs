//! `mecgw audit …`: operator checks of the egress audit log (`mecgw::records::egress::audit`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use mecgw::records::egress::audit::{self, AuditError};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log in DIR and report the first broken link.
    ///
    /// Exits 0 if every entry's hash, index and link to the previous entry are intact and the
    /// head file matches, 1 otherwise.
    Verify {
        /// The egress audit directory (holds audit.log and audit.head).
        dir: PathBuf,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { dir } => verify(&dir),
    }
}

fn verify(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    if !dir.join(audit::LOG_FILE).exists() && !dir.join(audit::HEAD_FILE).exists() {
        bail!(
            "{}: no {} here; is this the egress audit directory?",
            dir.display(),
            audit::LOG_FILE
        );
    }
    match audit::verify(dir) {
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
            Ok(())
        }
        Err(e @ AuditError::Broken { .. }) => bail!("{e}"),
        Err(e) => Err(e.into()),
    }
}
