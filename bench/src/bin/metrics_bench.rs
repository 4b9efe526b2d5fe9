//! The `/metrics` benchmark behind `cargo xtask bench metrics` (run in release mode, as root).
//!
//! The XDP programs are loaded (not attached) and the tables of [`mecgw_bench::scale`]
//! installed, as `mecgw run` installs them; then, per round, what the daemon's `/metrics`
//! handler does for the fast path on its blocking thread:
//!
//! - read: [`FastPathSample::read`], every counter the scrape shows (verdicts, reasons, one
//!   per rule, every session summed per direction) from the per-CPU maps;
//! - encode: the sample written as OpenMetrics text by prometheus-client, with the build and
//!   process collectors beside it (the other parts of the daemon are a few dozen series);
//! - scrape: both, as one figure.
//!
//! The baseline, measured in the same run, is the same work at 1 session and 10 rules, so the
//! ratio is what the scale itself costs. Each round also reads the rule and session counters
//! one lookup at a time, as the handler did before it read each map in batches
//! (`one-by-one`), for the ratio of the two ways in the same run. CPU-only: no packet is sent, and reading a zero
//! counter costs what reading any counter does. Figures are printed, never judged.

use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, builder::RangedU64ValueParser};
use mecgw::{
    daemon::{Datapath, metrics::FastPathSample},
    datapath::{Direction, FastPath, compile::compile},
    openmetrics::{self, BuildInfo, process::ProcessCollector},
};
use mecgw_bench::{median, scale};
use prometheus_client::registry::Registry;

#[derive(Parser)]
struct Args {
    /// Scrapes measured at each scale; the median is reported.
    #[arg(long, default_value_t = 15, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// Sessions installed.
    #[arg(long, default_value_t = 100_000)]
    sessions: u32,
    /// Traffic rules installed.
    #[arg(long, default_value_t = 5_000)]
    rules: u32,
}

/// Medians of one scale, milliseconds, and the size of one scrape.
struct Figures {
    read_ms: f64,
    /// The same counters read as the handler read them before the batched reads: one
    /// lookup per rule and per session and direction.
    one_by_one_ms: f64,
    encode_ms: f64,
    scrape_ms: f64,
    bytes: usize,
    series: usize,
}

fn measure(sessions: u32, rules: u32, rounds: usize) -> anyhow::Result<Figures> {
    let compiled = compile(scale::tables(sessions, rules)).map_err(|p| anyhow::anyhow!("{p}"))?;
    let fp = FastPath::load().context("loading the XDP programs (are we root?)")?;
    fp.install(&compiled)
        .with_context(|| format!("installing {sessions} sessions and {rules} rules"))?;
    let dp = Datapath::Xdp(Box::new(fp));
    let (mut read, mut encode, mut scrape) = (Vec::new(), Vec::new(), Vec::new());
    let mut one_by_one = Vec::new();
    let mut last = String::new();
    // One scrape first, unmeasured: page faults of the first map reads.
    for round in 0..=rounds {
        let t0 = Instant::now();
        let sample = FastPathSample::read(&dp, &compiled)?;
        let t1 = Instant::now();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sample));
        registry.register_collector(Box::new(BuildInfo));
        registry.register_collector(Box::new(ProcessCollector));
        let text = openmetrics::encode(&registry)?;
        let t2 = Instant::now();
        read_one_by_one(&dp, &compiled)?;
        let t3 = Instant::now();
        if round > 0 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            read.push(ms(t0, t1));
            encode.push(ms(t1, t2));
            scrape.push(ms(t0, t2));
            one_by_one.push(ms(t2, t3));
        }
        last = text;
    }
    Ok(Figures {
        read_ms: median(read),
        one_by_one_ms: median(one_by_one),
        encode_ms: median(encode),
        scrape_ms: median(scrape),
        bytes: last.len(),
        series: last
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
    })
}

/// The rule and session counters read one lookup at a time (the handler's way before the
/// batched reads; `fastpath_concurrency` and `fastpath_restart` check that both ways agree).
fn read_one_by_one(dp: &Datapath, t: &mecgw::datapath::CompiledTables) -> anyhow::Result<()> {
    for r in &t.rules {
        dp.rule_counter(r.id)?;
    }
    for s in &t.sessions {
        for dir in [Direction::Uplink, Direction::Downlink] {
            dp.session_counter(s.id, dir)?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    println!(
        "/metrics, fast-path part of one scrape (median of {} rounds, ms)",
        a.rounds
    );
    let base = measure(1, 10, a.rounds)?;
    let goal = measure(a.sessions, a.rules, a.rounds)?;
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>8} {:>9} {:>12}",
        "tables", "read", "encode", "scrape", "series", "bytes", "one-by-one"
    );
    for (what, f) in [
        ("baseline: 1 session, 10 rules".to_string(), &base),
        (format!("{} sessions, {} rules", a.sessions, a.rules), &goal),
    ] {
        println!(
            "{what:<28} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>9} {:>12.3}",
            f.read_ms, f.encode_ms, f.scrape_ms, f.series, f.bytes, f.one_by_one_ms
        );
    }
    println!(
        "read batched / one by one, {} sessions: {:.3}",
        a.sessions,
        goal.read_ms / goal.one_by_one_ms
    );
    println!(
        "ratio to baseline            {:>9.1} {:>9.1} {:>9.1}",
        goal.read_ms / base.read_ms,
        goal.encode_ms / base.encode_ms,
        goal.scrape_ms / base.scrape_ms
    );
    Ok(())
}
