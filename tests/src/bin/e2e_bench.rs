//! `e2e_bench` (run by `cargo xtask bench e2e`): packets per second and round-trip times
//! through the testbed, for native XDP, generic XDP and the userspace datapath, in one run.
//!
//! Method. The testbed comes up once. For each run, each datapath in turn (interleaved, so
//! drift on this shared machine hits all alike) gets a fresh `mecgw run` with one LOCAL rule
//! for the edge, and `mecgw-gnbsim --blast` sends UDP G-PDUs from 16 UEs to the edge's UDP
//! echo; every answer comes back encapsulated through the same datapath. Per datapath and
//! run:
//! - a ladder of offered rates (×1.25 a step) for `--step-ms` each, up to the first rate whose
//!   loss exceeds `--loss` (default 1 %): the highest rate within that loss is the datapath's
//!   *sustained rate*, reported with the RTT p50/p99 and the loss measured at it;
//! - one blast as fast as the sender can go: the answered rate and its loss.
//!
//! Reported: medians over runs, and ratios to the userspace datapath. Everything (sender,
//! echo service, gateway, kernel) shares this machine's cores, so absolute numbers are those
//! of the whole testbed, not of the gateway alone.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use mecgw_tests::testbed::{self, DatapathChoice, EDGE, Gateway};

const UES: u32 = 16;
const RULES: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                     dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";

struct Opts {
    runs: usize,
    step_ms: u64,
    loss: f64,
    start_rate: f64,
    max_rate: f64,
    blast: u64,
}

fn parse(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        runs: 3,
        step_ms: 400,
        loss: 0.01,
        start_rate: 10_000.0,
        max_rate: 3_000_000.0,
        blast: 200_000,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = v()?.parse().context("--runs")?,
            "--step-ms" => o.step_ms = v()?.parse().context("--step-ms")?,
            "--loss" => o.loss = v()?.parse().context("--loss")?,
            "--start-rate" => o.start_rate = v()?.parse().context("--start-rate")?,
            "--max-rate" => o.max_rate = v()?.parse().context("--max-rate")?,
            "--blast" => o.blast = v()?.parse().context("--blast")?,
            other => anyhow::bail!(
                "unknown option {other:?}; options: --runs N --step-ms MS --loss FRACTION \
                 --start-rate PPS --max-rate PPS --blast PACKETS"
            ),
        }
    }
    anyhow::ensure!(o.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(o.step_ms >= 50, "--step-ms must be at least 50");
    anyhow::ensure!((0.0..1.0).contains(&o.loss), "--loss must be in [0, 1)");
    anyhow::ensure!(o.start_rate >= 100.0, "--start-rate must be at least 100");
    Ok(o)
}

/// One blast's figures.
#[derive(Clone, Copy, Default, Debug)]
struct Blast {
    answered_pps: f64,
    loss: f64,
    p50_us: f64,
    p99_us: f64,
}

fn blast(bin: &Path, packets: u64, rate: f64) -> anyhow::Result<Blast> {
    let probe = format!("blast=udp:{}:7", EDGE.v4);
    let (n, r) = (packets.to_string(), (rate as u64).to_string());
    let ues = UES.to_string();
    let report = testbed::gnbsim(
        bin,
        &[
            "--upf",
            testbed::UPF.v4,
            "--ues",
            &ues,
            "--probe",
            &probe,
            "--blast",
            &n,
            "--rate",
            &r,
        ],
    )?;
    let b = &report["blast"];
    let f = |k: &str| b[k].as_f64().unwrap_or(f64::NAN);
    Ok(Blast {
        answered_pps: f("answered_pps"),
        loss: f("loss"),
        p50_us: f("rtt_p50_us"),
        p99_us: f("rtt_p99_us"),
    })
}

/// One datapath's figures in one run.
#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    sustained_pps: f64,
    at_sustained: Blast,
    max: Blast,
}

fn measure(bin: &Path, o: &Opts) -> anyhow::Result<Sample> {
    // Warm up: neighbours resolved, sockets and caches hot.
    blast(bin, 2_000, 20_000.0)?;
    let mut s = Sample::default();
    let mut rate = o.start_rate;
    while rate <= o.max_rate {
        anyhow::ensure!(!testbed::interrupted(), "interrupted");
        let packets = ((rate * o.step_ms as f64) / 1000.0).ceil() as u64;
        let b = blast(bin, packets, rate)?;
        if b.loss > o.loss {
            break;
        }
        s.sustained_pps = rate;
        s.at_sustained = b;
        rate *= 1.25;
    }
    s.max = blast(bin, o.blast, 0.0)?;
    Ok(s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> ExitCode {
    testbed::catch_interrupts();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory for this binary")?;
    for tool in ["mecgw", "mecgw-gnbsim", "mecgw-edge", "mecgw-core"] {
        anyhow::ensure!(
            bin.join(tool).exists(),
            "{} is missing: build with `cargo build --release -p mecgw -p mecgw-tests --bins`",
            bin.join(tool).display()
        );
    }
    let _bed = testbed::up()?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); DatapathChoice::ALL.len()];
    for run in 0..o.runs {
        for (i, &dp) in DatapathChoice::ALL.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            testbed::write_gateway_config_for(dir.path(), UES, RULES, dp)?;
            let mut gw = Gateway::start(bin, dir.path(), 1, &[])?;
            let s = measure(bin, &o).with_context(|| dp.name());
            let _ = gw.stop();
            let s = s?;
            println!(
                "run {}/{} {:<12} sustained {:>9.0} pps (loss {:.2}%, RTT p50 {:.0} µs p99 {:.0} µs); \
                 flat out {:>9.0} pps answered (loss {:.1}%)",
                run + 1,
                o.runs,
                dp.name(),
                s.sustained_pps,
                s.at_sustained.loss * 100.0,
                s.at_sustained.p50_us,
                s.at_sustained.p99_us,
                s.max.answered_pps,
                s.max.loss * 100.0
            );
            samples[i].push(s);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let user = DatapathChoice::ALL
        .iter()
        .position(|&d| d == DatapathChoice::Userspace)
        .context("userspace is a datapath")?;
    let base_rate = med(user, &|s| s.sustained_pps);
    let base_max = med(user, &|s| s.max.answered_pps);
    println!(
        "\nmedians of {} runs; sustained = highest offered rate (×1.25 steps of {} ms) with loss ≤ {}%",
        o.runs,
        o.step_ms,
        o.loss * 100.0
    );
    println!(
        "{:<12} {:>12} {:>8} {:>9} {:>9} {:>9} {:>14} {:>9} {:>8}",
        "datapath", "sustained", "×user", "loss", "RTT p50", "RTT p99", "flat out", "loss", "×user"
    );
    for (i, dp) in DatapathChoice::ALL.iter().enumerate() {
        let rate = med(i, &|s| s.sustained_pps);
        let max = med(i, &|s| s.max.answered_pps);
        println!(
            "{:<12} {:>8.0} pps {:>7.2}× {:>8.2}% {:>6.0} µs {:>6.0} µs {:>10.0} pps {:>8.1}% {:>7.2}×",
            dp.name(),
            rate,
            rate / base_rate,
            med(i, &|s| s.at_sustained.loss) * 100.0,
            med(i, &|s| s.at_sustained.p50_us),
            med(i, &|s| s.at_sustained.p99_us),
            max,
            med(i, &|s| s.max.loss) * 100.0,
            max / base_max
        );
    }
    Ok(())
}
