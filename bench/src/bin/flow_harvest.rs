//! The flow harvest at site scale: how long a harvest of a full window takes, what it costs
//! the daemon's core, and the kernel memory per flow.
//!
//! Loads the fast path with flow accounting and `--flows` flows per window, pinned (so the
//! benchmark can open the flow maps itself), and in each round:
//! - fills the window the next harvest reads with `--flows` distinct flows from userspace
//!   (one slot each, as the programs take them, and the window's slot counter), then times
//!   [`FastPath::harvest_flows`] (move to the next window, RCU grace period, the slots read
//!   from memory and merged by key into samples): wall time and the thread's CPU time
//!   (`getrusage`);
//! - creates a map of the previous layout (a per-CPU LRU hash, as the programs counted into
//!   before), fills it with the same flows on every CPU and times the previous read through
//!   [`FastPath::adopt_flows`], which still reads that layout: batched read-and-delete
//!   (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`), each flow's CPUs summed into a sample, kept by key.
//!   The baseline leaves out the sort the previous harvest did (≈ 0.15 s at a million).
//!
//! Last, the daemon's side: one more full window goes through [`FlowHarvest::due`]; the
//! resident memory the window holds while the engine takes its `flow` records one at a time
//! is measured (VmRSS with it alive, less VmRSS before); `--all-records` holds every record
//! of the window as a JSON value at once instead, as the daemon did before.
//!
//! "Of a core" is CPU time per harvest / the harvest interval (`--interval`, default 10 s,
//! the daemon's default). Kernel memory is the `memlock` of the slot maps and the index.
//! Needs root (BPF, bpffs).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData, PerCpuValues};
use clap::Parser;
use mecgw::{
    datapath::{DatapathError, FastPath, FastPathOptions, flow_counters::FlowSample},
    records::harvest::{FlowHarvest, FlowSource, SessionIdentity},
};
use mecgw_bench::{median, procmem};
use mecgw_ebpf::{Counter, FLOW_FAMILY_V4, FlowKey, FlowSlot, FlowValue, NONE, names};

#[derive(Parser)]
#[command(about = "Flow harvest: time and CPU per harvest of a full window, memory per flow")]
struct Args {
    /// Flows per window.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u32,
    /// Rounds (each: one harvest and one baseline read).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Harvest interval the CPU share is taken against, seconds.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Hold every record of the window at once (what the daemon did before it built them
    /// one at a time), to measure what that costs.
    #[arg(long)]
    all_records: bool,
}

/// The fast path as the daemon's flow source, with no session identities.
struct Source<'a>(&'a FastPath);

impl FlowSource for Source<'_> {
    fn harvest(&self) -> Result<Vec<FlowSample>, DatapathError> {
        self.0.harvest_flows()
    }

    fn identities(&self, _: &[u32]) -> std::collections::HashMap<u32, SessionIdentity> {
        std::collections::HashMap::new()
    }
}

fn key(i: u32) -> FlowKey {
    let mut k = FlowKey {
        session: i / 32,
        ue_port: 40_000 + (i % 32) as u16,
        peer_port: 443,
        protocol: 6,
        family: FLOW_FAMILY_V4,
        ..FlowKey::default()
    };
    k.ue[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    k.peer[..4].copy_from_slice(&[192, 0, 2, 1]);
    k
}

/// The pinned flow maps, which the benchmark fills as the programs would.
struct Window {
    generation: Array<MapData, u32>,
    alloc: Array<MapData, u64>,
    slots: [Array<MapData, FlowSlot>; 2],
}

impl Window {
    fn open(dir: &Path) -> anyhow::Result<Window> {
        let array = |name: &str| -> anyhow::Result<Map> {
            let data =
                MapData::from_pin(dir.join(name)).with_context(|| format!("opening {name}"))?;
            Ok(Map::Array(data))
        };
        Ok(Window {
            generation: Array::try_from(array(names::MAP_FLOW_GEN)?)?,
            alloc: Array::try_from(array(names::MAP_FLOW_ALLOC)?)?,
            slots: [
                Array::try_from(array(names::MAP_FLOW_SLOTS[0])?)?,
                Array::try_from(array(names::MAP_FLOW_SLOTS[1])?)?,
            ],
        })
    }

    /// Puts `n` flows into the window the programs count into, one uplink packet of 100
    /// bytes each, and takes their slots.
    fn fill(&mut self, n: u32) -> anyhow::Result<()> {
        let epoch = self.generation.get(&0, 0)?;
        let half = epoch & 1;
        for i in 0..n {
            let slot = FlowSlot {
                key: key(i),
                epoch,
                uplink: Counter {
                    packets: 1,
                    bytes: 100,
                },
                rule: NONE,
                ..FlowSlot::default()
            };
            self.slots[half as usize].set(i, slot, 0)?;
        }
        self.alloc.set(half, u64::from(n), 0)?;
        Ok(())
    }
}

/// A map of the previous layout pinned at `path`, holding `n` flows with one packet on each
/// CPU.
fn legacy_window(path: &Path, n: u32, cpus: usize) -> anyhow::Result<()> {
    let mut map = mecgw_tests::legacy_flows::pin(path, n)?;
    let one = FlowValue {
        uplink: Counter {
            packets: 1,
            bytes: 100,
        },
        rule: NONE,
        ..FlowValue::default()
    };
    for i in 0..n {
        map.insert(key(i), PerCpuValues::try_from(vec![one; cpus])?, 0)?;
    }
    Ok(())
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is valid for the calling thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let root = std::path::Path::new(mecgw_testbed::pin_root()?)
        .join(format!("flow-harvest-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = run(&args, cpus, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(args: &Args, cpus: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let fp = FastPath::load_pinned(
        FastPathOptions {
            flow_accounting: true,
            max_flows: args.flows,
            ..FastPathOptions::default()
        },
        dir,
    )?;
    let mut window = Window::open(dir)?;
    let memlock: u64 = procmem::bpf_maps(std::process::id())?
        .iter()
        .filter(|m| {
            m.name
                .as_deref()
                .is_some_and(|n| n == names::MAP_FLOW_INDEX || names::MAP_FLOW_SLOTS.contains(&n))
        })
        .map(|m| m.memlock)
        .sum();
    anyhow::ensure!(
        memlock > 0,
        "no flow map found by name (is bpftool installed?)"
    );
    println!(
        "flow harvest: {} flows per window, {cpus} CPUs, {} rounds, interval {} s",
        args.flows, args.rounds, args.interval
    );
    let legacy = dir.join("legacy");
    std::fs::create_dir_all(&legacy)?;
    let (mut wall, mut cpu, mut base_wall, mut base_cpu) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        window.fill(args.flows)?;
        let (t, c) = (Instant::now(), thread_cpu());
        let samples = fp.harvest_flows()?;
        let (took, used) = (t.elapsed(), thread_cpu() - c);
        let packets: u64 = samples.iter().map(|s| s.uplink.packets).sum();
        let flows = samples.len();
        let losses = fp.flow_losses()?;
        drop(samples);
        // The baseline: the previous layout's read of the same flows.
        let pinned = legacy.join(names::MAP_FLOWS_LEGACY[0]);
        legacy_window(&pinned, args.flows, cpus)?;
        let (t, c) = (Instant::now(), thread_cpu());
        let adopted = fp.adopt_flows(&legacy)?;
        let (btook, bused) = (t.elapsed(), thread_cpu() - c);
        std::fs::remove_file(&pinned)?;
        // Empties what was adopted, untimed.
        fp.harvest_flows()?;
        println!(
            "  round {round}: harvest {:.3} s wall, {:.3} s CPU ({flows} flows, {packets} packets, \
             refused so far {}); previous layout {:.3} s wall, {:.3} s CPU ({} flows)",
            took.as_secs_f64(),
            used.as_secs_f64(),
            losses.refused_packets,
            btook.as_secs_f64(),
            bused.as_secs_f64(),
            adopted.flows,
        );
        wall.push(took.as_secs_f64());
        cpu.push(used.as_secs_f64());
        base_wall.push(btook.as_secs_f64());
        base_cpu.push(bused.as_secs_f64());
    }
    // The daemon's side: the window's flow records, all alive at once.
    window.fill(args.flows)?;
    let pid = std::process::id();
    let before = procmem::resident(pid)?.rss;
    let mut harvest = FlowHarvest::new(1, 0);
    let window = harvest
        .due(&Source(&fp), i64::MAX / 2)
        .context("no harvest was due")??;
    // What the engine holds while it takes them: the window, and one record at a time.
    let records: Vec<_> = if args.all_records {
        window.records().collect()
    } else {
        window.records().take(1).collect()
    };
    let held = procmem::resident(pid)?.rss.saturating_sub(before);
    let n = window.len().max(1);
    drop(records);
    drop(window);
    let (w, c, bw, bc) = (
        median(wall),
        median(cpu),
        median(base_wall),
        median(base_cpu),
    );
    println!("medians of {} rounds:", args.rounds);
    println!(
        "  harvest: {w:.3} s wall, {c:.3} s CPU = {:.2} % of a core at a {} s interval",
        100.0 * c / args.interval as f64,
        args.interval
    );
    println!(
        "  previous layout (baseline): {bw:.3} s wall, {bc:.3} s CPU; harvest / baseline CPU {:.3}",
        c / bc
    );
    println!(
        "  kernel memory of the slot maps and the index: {:.1} MiB = {:.0} bytes per flow \
         ({cpus} CPUs; the same for any number)",
        memlock as f64 / 1024.0 / 1024.0,
        memlock as f64 / f64::from(args.flows)
    );
    println!(
        "  daemon: the window of {n} flows{}: +{:.1} MiB resident = {:.0} bytes per flow",
        if args.all_records {
            ", every record built at once"
        } else {
            ", records built one at a time"
        },
        held as f64 / 1024.0 / 1024.0,
        held as f64 / n as f64
    );
    Ok(())
}
