//! Resident memory of loading a large tables file, as `mecgw run` loads it.
//!
//! `tables_mem write PATH [SESSIONS RULES]` writes a scale tables file (default 100,000
//! sessions, 5,000 rules: the issue #6 memory goal); `tables_mem load PATH` loads it with
//! `Tables::load` in a fresh process and prints VmRSS/VmHWM before, after, and after
//! `malloc_trim`, so the figures are the loader's alone, not the generator's.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mecgw_bench::{procmem, scale};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a scale tables file.
    Write {
        path: PathBuf,
        #[arg(default_value_t = 100_000)]
        sessions: u32,
        #[arg(default_value_t = 5_000)]
        rules: u32,
    },
    /// Load a tables file and report resident memory.
    Load {
        path: PathBuf,
        /// Load it this many times (a daemon reloading on SIGHUP).
        #[arg(long, default_value_t = 1)]
        times: u32,
    },
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn show(what: &str) -> anyhow::Result<()> {
    let r = procmem::resident(std::process::id())?;
    println!(
        "{what:<16} VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB",
        mib(r.rss),
        mib(r.peak)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Write {
            path,
            sessions,
            rules,
        } => {
            let text = scale::to_toml(&scale::tables(sessions, rules));
            std::fs::write(&path, &text).with_context(|| path.display().to_string())?;
            println!("{}: {} bytes", path.display(), text.len());
        }
        Cmd::Load { path, times } => {
            show("before")?;
            for i in 0..times {
                let start = std::time::Instant::now();
                let t = mecgw::datapath::compile::load(&path)?;
                let took = start.elapsed();
                show(&format!("loaded #{i}"))?;
                println!(
                    "  {} sessions, {} rules in {took:.2?}",
                    t.sessions.len(),
                    t.rules.len()
                );
            }
            // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
            // pointers and is safe to call at any time with glibc.
            unsafe { libc::malloc_trim(0) };
            show("malloc_trim(0)")?;
        }
    }
    Ok(())
}
