//! `mecgw policy …`: the compliance team's tools — check, explain, test, apply; and
//! `mecgw budget …`: the operator's tools for the budget ledger — verify, reset.
//!
//! This module owns the command-line surface of the policy engine: reading files, printing
//! diagnostics and reports, exit statuses, and atomic output files. Every decision about
//! records and the ledger is the `mecgw-policy` library's. Nothing here prints a record value:
//! diagnostics name positions, reports name reasons and counts.

use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use mecgw_policy::budget::{self, Ledger};
use mecgw_policy::engine::{Engine, KeySource};
use mecgw_policy::noise::OsRandom;
use mecgw_policy::{Policy, batch, explain, testcases};

/// Subcommands of `mecgw policy`.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file and report every error (file:line:column, code, what to change).
    ///
    /// Exits with status 1 if there is any error.
    Check {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Explain what a policy does to each field and the privacy numbers of each release.
    Explain {
        /// The policy file (YAML).
        file: PathBuf,
        /// Also show what happens to this record (one JSON object); uses the real key files.
        #[arg(long)]
        record: Option<String>,
    },
    /// Run the test cases written under `tests:` in the policy file.
    Test {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Batch mode: transform records and compute releases, JSON lines in and out.
    Apply {
        /// The policy file (YAML).
        file: PathBuf,
        /// Input records, one JSON object per line.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output file: one tagged JSON object per line (written atomically).
        #[arg(long)]
        out: PathBuf,
        /// Directory holding the budget ledger, so the budget survives restarts. Without it
        /// the budget is accounted for this run only.
        #[arg(long)]
        state: Option<PathBuf>,
    },
}

/// Subcommands of `mecgw budget`.
#[derive(Subcommand)]
pub enum BudgetCommand {
    /// Check the budget ledger's hash chain against its head; report what differs.
    ///
    /// Exits with status 1 if the ledger would be refused (releases withheld).
    Verify {
        /// The ledger's directory: `policy apply --state DIR`, or `<state dir>/budget` of
        /// `mecgw run`.
        #[arg(long)]
        state: PathBuf,
    },
    /// Start a new ledger chain after damage or tampering, as an audited decision.
    ///
    /// Keeps the old ledger and head beside them (`*.reset-<unix time>`), and writes a new
    /// chain whose first entry records the reset (time, reason, what the check found, the
    /// old head) followed by every old entry that can still be read. Charges that cannot be
    /// read are lost: restore the ledger from a backup instead if you can. Refused while
    /// `mecgw run` or `policy apply` has the ledger open.
    Reset {
        /// The ledger's directory: `policy apply --state DIR`, or `<state dir>/budget` of
        /// `mecgw run`.
        #[arg(long)]
        state: PathBuf,
        /// Why, for the audit trail (e.g. a ticket number and what happened).
        #[arg(long)]
        reason: String,
    },
}

/// Runs a `mecgw budget` subcommand.
pub fn run_budget(command: BudgetCommand) -> anyhow::Result<()> {
    match command {
        BudgetCommand::Verify { state } => {
            let ledger = state.join(budget::LEDGER_FILE);
            // A ledger whose files are gone but which the state marker remembers is refused
            // by `policy apply --state` (marker in DIR) and the daemon (marker in the state
            // directory, the ledger in its `budget/`): say so here too.
            mecgw::records::engine::ledger_not_vanished(&state, &state)?;
            if state.file_name().is_some_and(|n| n == "budget")
                && let Some(parent) = state.parent()
            {
                mecgw::records::engine::ledger_not_vanished(parent, &state)?;
            }
            let v = budget::verify(&state)?;
            if v.fresh && !ledger.exists() {
                println!(
                    "{}: no ledger yet (a new one starts here)",
                    ledger.display()
                );
                return Ok(());
            }
            println!(
                "{}: chain intact: {} entries ({} reset(s)), last hash {}",
                ledger.display(),
                v.entries,
                v.resets,
                v.last_hash
            );
            if v.torn_tail {
                println!(
                    "  a torn last line (a write a crash interrupted) is cut off at the next open"
                );
            }
            if v.past_head {
                println!(
                    "  the head counts one entry less (a crash between the two writes); it is brought up to date at the next open"
                );
            }
            Ok(())
        }
        BudgetCommand::Reset { state, reason } => {
            let reason = reason.trim();
            if reason.is_empty() {
                bail!(
                    "--reason is empty; say why the ledger is reset (it goes into the audit trail)"
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let r = budget::reset(&state, reason, now)?;
            let rec = &r.record;
            println!(
                "{}: reset at {}",
                state.join(budget::LEDGER_FILE).display(),
                rec.time
            );
            println!("  found:    {}", rec.found);
            if rec.archived.is_empty() {
                println!("  kept:     nothing (there were no ledger files)");
            } else {
                let kept: Vec<String> = rec
                    .archived
                    .iter()
                    .map(|a| state.join(a).display().to_string())
                    .collect();
                println!("  kept:     {}", kept.join(", "));
            }
            println!(
                "  new chain: {} entries: the reset, then {} carried over; {} unreadable line(s) lost; last hash {}",
                r.entries, rec.carried, rec.unreadable, r.last_hash
            );
            Ok(())
        }
    }
}

/// Runs a `mecgw policy` subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { file } => {
            let (policy, _) = load(&file)?;
            println!(
                "{}: ok ({} kind(s), {} release(s), {} destination(s), {} test case(s))",
                file.display(),
                policy.kinds.len(),
                policy.releases.len(),
                policy.destinations.len(),
                policy.tests.len()
            );
            Ok(())
        }
        PolicyCommand::Explain { file, record } => {
            let (policy, src) = load(&file)?;
            print!("{}", explain::explain(&policy, &file.display().to_string()));
            if let Some(record) = record {
                explain_record(&policy, &src, &file, &record)?;
            }
            Ok(())
        }
        PolicyCommand::Test { file } => {
            let (policy, src) = load(&file)?;
            if policy.tests.is_empty() {
                bail!(
                    "{}: the policy has no test cases; add them under `tests:`",
                    file.display()
                );
            }
            let results = testcases::run_all(&policy, &src);
            let mut failed = 0;
            for r in &results {
                if r.failures.is_empty() {
                    println!("ok      {} ({}:{})", r.name, file.display(), r.pos);
                } else {
                    failed += 1;
                    println!("FAILED  {} ({}:{})", r.name, file.display(), r.pos);
                    for f in &r.failures {
                        println!("        {f}");
                    }
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            if failed > 0 {
                bail!("{failed} test case(s) failed");
            }
            Ok(())
        }
        PolicyCommand::Apply {
            file,
            input,
            out,
            state,
        } => apply(&file, &input, &out, state.as_deref()),
    }
}

/// Reads and compiles a policy; prints every diagnostic and fails if there is any.
fn load(file: &Path) -> anyhow::Result<(Policy, String)> {
    let src = mecgw_policy::yaml::read_source(file)
        .with_context(|| format!("reading {}", file.display()))?;
    match mecgw_policy::compile(&src) {
        Ok(p) => Ok((p, src)),
        Err(diags) => {
            let name = file.display().to_string();
            for d in &diags.0 {
                eprintln!("{}", d.render(&name));
            }
            bail!("{name}: {} error(s); nothing was changed", diags.0.len())
        }
    }
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn explain_record(policy: &Policy, src: &str, file: &Path, record: &str) -> anyhow::Result<()> {
    let value = explain::parse_record(record).context("--record must be one JSON object")?;
    let base = base_dir(file);
    let ledger = Ledger::in_memory(
        policy.budget.epsilon,
        policy.budget.delta,
        policy.budget.period.0,
    );
    let mut engine = Engine::new(
        policy,
        src,
        KeySource::Files(&base),
        ledger,
        Box::new(OsRandom::new()),
    )
    .context("loading the policy's keys")?;
    let preview = engine.preview(&value);
    print!("{}", explain::describe_preview(policy, &value, &preview));
    Ok(())
}

fn apply(file: &Path, input: &Path, out: &Path, state: Option<&Path>) -> anyhow::Result<()> {
    let (policy, src) = load(file)?;
    let b = &policy.budget;
    let ledger = match state {
        // The directory's state marker remembers the ledger: deleting the ledger and its
        // head together is refused, not a fresh budget.
        Some(dir) => mecgw::records::engine::open_ledger(dir, dir, b)?,
        None => {
            eprintln!(
                "mecgw: warning: no --state directory: the budget is accounted for this run only, not across runs"
            );
            Ledger::in_memory(b.epsilon, b.delta, b.period.0)
        }
    };
    let base = base_dir(file);
    let mut engine = Engine::new(
        &policy,
        &src,
        KeySource::Files(&base),
        ledger,
        Box::new(OsRandom::new()),
    )
    .context("starting the policy engine")?;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    // Records read, records/s and time left, on a terminal only.
    let progress = mecgw::progress::Progress::for_input(input, "records");
    let file: Box<dyn std::io::Read> = if progress.visible() {
        Box::new(mecgw::progress::CountLines::new(
            progress.reader(file),
            &progress,
        ))
    } else {
        Box::new(file)
    };
    let reader = BufReader::with_capacity(1 << 16, file);
    let tmp = tmp_path(out);
    let result = (|| -> anyhow::Result<()> {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        batch::apply(&mut engine, reader, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        Ok(())
    })();
    progress.finish();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let report = batch::report(&engine.stats);
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(report.as_bytes());
    result?;
    let _ = writeln!(stderr, "wrote {}", out.display());
    Ok(())
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    out.with_file_name(name)
}
