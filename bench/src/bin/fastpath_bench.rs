//! The fast-path benchmark behind `cargo xtask bench fastpath` (run in release mode).
//!
//! Kernel-reported nanoseconds per packet through BPF_PROG_TEST_RUN, for each case with 1 and
//! 100,000 sessions and 10 and 5,000 rules, as the median of several runs and as a ratio to
//! an empty XDP program measured in the same run.
//!
//! Three methods, because with `repeat > 1` the kernel reruns the program on the buffer the
//! previous run left behind:
//! - `batch`: one call with `repeat = N` (default 1,000,000). Valid only for paths that do
//!   not rewrite the packet (pass, drop, malformed, passthrough).
//! - `restored`: for the rewriting paths, `repeat = N` through `mecgw_bench_restore`, a
//!   wrapper that puts the original frame back before every repetition and tail-calls the
//!   program; the same wrapper tail-calling the empty program is measured on the same frame
//!   and subtracted: `restored(case) - restored(empty) + batch(empty)`.
//! - `per-call`: `repeat = 1`, a fresh copy of the frame each call, many calls. Each figure
//!   includes the kernel's fixed timing overhead, so the empty program is measured the same
//!   way and the per-packet cost is `per-call(case) - per-call(empty) + batch(empty)`.
//!   Used for the rewriting paths (LOCAL, downlink encapsulation), and shown for all.
//!
//! After every measurement the program's own reason counter must have grown by exactly the
//! number of runs: proof that every run took the path being measured. A final line shows the
//! trap: LOCAL with `repeat = N` takes the LOCAL path once.
//!
//! Uplink LOCAL is measured once more with the next hop from the kernel's FIB
//! (`next_hop = "fib"`: one `bpf_fib_lookup` per packet), in a network namespace of its own
//! (`mgw-bf-<pid>`) where the inner destination is routed out of the local interface with a
//! neighbour entry, next to the fixed-MAC figure measured there too: with the programs'
//! next-hop cache (`fib`: a per-CPU table answers, the FIB is asked once a second) and without
//! it (`fib uncached`: the helper on every packet, a third `FastPath`).
//!
//! The rewriting paths are measured a second time with flow accounting on (a second
//! `FastPath` loaded with it, same tables, same restored method and baseline); there the
//! proof is also that the harvested flow counters grew by exactly the number of runs. All
//! repetitions are one flow, so this is the steady state of a flow already counted, whose
//! classification the uplink finds cached in the flow's index entry (`+flows`). The uplink
//! is measured once more with that cache off (`+flows miss`, a third `FastPath`): every
//! packet is classified, as a flow's first packet after an install is (a brand-new flow
//! also takes a slot and inserts its index entry).
//!
//! `floor` is the uplink LOCAL frame through `mecgw_bench_floor`: the same G-PDU parser and
//! decapsulation with no table lookup and no counter (one count as its proof), restored like
//! the rest. It is what the lookups, the classification and the counters of every other row
//! add to, and the least any program that steers this frame pays.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, builder::RangedU64ValueParser};
use mecgw::datapath::{
    BenchTarget, Direction, FastPath, FastPathOptions, Reason, compile::compile, tables::NextHop,
};
use mecgw_bench::{
    median,
    scale::{UPLINK_TEID_BASE, tables, ue},
    test_run::{batch, ns, reason_count},
};
use mecgw_testbed::packet::*;

#[derive(Parser)]
#[command(
    about = "mecgw fast-path benchmark: kernel ns per packet, as ratios to an empty XDP program"
)]
struct Args {
    /// Repetitions per BPF_PROG_TEST_RUN call (the batch and restored methods).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Calls of the per-call method (repeat = 1, a fresh frame each).
    #[arg(long, default_value_t = 20_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    calls: usize,
}

struct Case {
    name: &'static str,
    direction: Direction,
    frame: Vec<u8>,
    reason: Reason,
    rewrites: bool,
}

fn cases(sessions: u32) -> Vec<Case> {
    let last = sessions - 1;
    let teid = UPLINK_TEID_BASE + last;
    let src = ue(last).octets();
    let gpdu = |dst: &str| {
        let inner = ipv4(src, v4(dst), 17, 64, 0, &udp(40000, 443, &[0x5a; 66]));
        n3_v4(
            v4("198.18.1.1"),
            v4("198.18.0.1"),
            &gtp(255, teid, None, &[ul_container(9)], &inner),
        )
    };
    let mut not_gtp = eth(MAC_A, MAC_B, 0x0800);
    not_gtp.extend_from_slice(&ipv4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        17,
        64,
        0,
        &udp(5353, 53, &[0; 64]),
    ));
    let mut malformed = gpdu("192.0.2.10");
    malformed[42] = 0x54; // GTP version 2
    let mut down = eth(MAC_A, MAC_B, 0x0800);
    down.extend_from_slice(&ipv4(
        v4("192.0.2.10"),
        src,
        17,
        64,
        0,
        &udp(443, 40000, &[0x5a; 70]),
    ));
    vec![
        Case {
            name: "non-GTP pass",
            direction: Direction::Uplink,
            frame: not_gtp,
            reason: Reason::NotGtp,
            rewrites: false,
        },
        Case {
            name: "uplink LOCAL",
            direction: Direction::Uplink,
            frame: gpdu("192.0.2.10"),
            reason: Reason::RuleLocal,
            rewrites: true,
        },
        Case {
            name: "uplink PASSTHROUGH",
            direction: Direction::Uplink,
            frame: gpdu("203.0.113.10"),
            reason: Reason::RulePassthrough,
            rewrites: false,
        },
        Case {
            name: "uplink DROP",
            direction: Direction::Uplink,
            frame: gpdu("198.51.100.10"),
            reason: Reason::RuleDrop,
            rewrites: false,
        },
        Case {
            name: "uplink malformed",
            direction: Direction::Uplink,
            frame: malformed,
            reason: Reason::MalformedGtp,
            rewrites: false,
        },
        Case {
            name: "downlink encap",
            direction: Direction::Downlink,
            frame: down,
            reason: Reason::Encapsulated,
            rewrites: true,
        },
    ]
}

/// Packets harvested from the flow counters in `direction`.
fn flow_packets(fp: &FastPath, direction: Direction) -> anyhow::Result<u64> {
    Ok(fp
        .harvest_flows()?
        .iter()
        .map(|s| match direction {
            Direction::Uplink => s.uplink.packets,
            Direction::Downlink => s.downlink.packets,
        })
        .sum())
}

/// A proof: "ok" when the counter grew by exactly the runs.
fn proof(counted: u64, runs: u64) -> String {
    if counted == runs {
        "ok".to_string()
    } else {
        format!("MISMATCH: {counted} of {runs}")
    }
}

/// How far `direction`'s program moves the start of `frame`: what the wrapper must undo.
fn shift_of(fp: &FastPath, direction: Direction, frame: &[u8]) -> anyhow::Result<i32> {
    let once = fp.test_run(direction, frame, 1)?;
    Ok(frame.len() as i32 - once.data_out.len() as i32)
}

/// `target` on `frame` behind the restore wrapper, net of the wrapper with the empty program
/// (measured on the same frame) plus `empty_batch`, and the repetitions it made.
fn restored_net(
    a: &Args,
    fp: &FastPath,
    target: BenchTarget,
    frame: &[u8],
    shift: i32,
    empty_batch: f64,
) -> anyhow::Result<(f64, u64)> {
    let base = batch(a.runs, a.repeat, |r| {
        Ok(fp.bench_restored(BenchTarget::Empty, frame, 0, r)?.duration)
    })?;
    let wrapped = batch(a.runs, a.repeat, |r| {
        Ok(fp.bench_restored(target, frame, shift, r)?.duration)
    })?;
    let runs = a.runs as u64 * u64::from(a.repeat);
    Ok(((wrapped - base + empty_batch).max(0.0), runs))
}

/// The restored measurement of a rewriting `case` on `fp`, with its proof: the reason
/// counter (and, with flow accounting, the flow counters) grew by exactly the runs.
fn restored(
    a: &Args,
    fp: &FastPath,
    case: &Case,
    empty_batch: f64,
) -> anyhow::Result<(f64, String)> {
    let shift = shift_of(fp, case.direction, &case.frame)?;
    fp.harvest_flows()?;
    let before = reason_count(fp, case.reason)?;
    let target = BenchTarget::Program(case.direction);
    let (net, runs) = restored_net(a, fp, target, &case.frame, shift, empty_batch)?;
    let mut shown = proof(reason_count(fp, case.reason)? - before, runs);
    if fp.flow_accounting() {
        shown += ", flows ";
        shown += &proof(flow_packets(fp, case.direction)?, runs);
    }
    Ok((net, shown))
}

/// The floor (see the module docs), restored, with its proof: the bench sink's counter grew
/// by exactly the runs.
fn floor(a: &Args, fp: &FastPath, frame: &[u8], empty_batch: f64) -> anyhow::Result<(f64, String)> {
    // The floor strips what the uplink's LOCAL path strips.
    let shift = shift_of(fp, Direction::Uplink, frame)?;
    let before = fp.bench_sink_counter()?.packets;
    let (net, runs) = restored_net(a, fp, BenchTarget::Floor, frame, shift, empty_batch)?;
    let counted = fp.bench_sink_counter()?.packets - before;
    Ok((net, proof(counted, runs)))
}

/// Median over `runs` of the median of `calls` single-repetition calls.
fn per_call(a: &Args, mut run: impl FnMut(u32) -> anyhow::Result<Duration>) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..a.runs {
        let mut calls = Vec::with_capacity(a.calls);
        for _ in 0..a.calls {
            calls.push(ns(run(1)?));
        }
        v.push(median(calls));
    }
    Ok(median(v))
}

/// Uplink LOCAL with the local next hop from the FIB and with a fixed MAC, restored, in a
/// namespace where the LOCAL case's destination (192.0.2.10) is a resolved neighbour on the
/// local interface (1 session, 10 rules).
fn fib_next_hop(a: &Args, fp: &FastPath, uncached: &FastPath) -> anyhow::Result<()> {
    let ns = mecgw_testbed::ScratchNetns::create("mgw-bf")?;
    let n = ns.name();
    ns.ip(&[
        "link", "add", "mgw-bfl", "type", "veth", "peer", "name", "mgw-bflp",
    ])?;
    ns.ip(&["link", "set", "mgw-bfl", "up"])?;
    ns.ip(&["link", "set", "mgw-bflp", "up"])?;
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "mgw-bfl"])?;
    ns.ip(&[
        "neigh",
        "replace",
        "192.0.2.10",
        "lladdr",
        "02:00:00:00:04:02",
        "dev",
        "mgw-bfl",
        "nud",
        "permanent",
    ])?;
    ns.sysctl("net.ipv4.ip_forward=1")?;
    let (ifindex, _) = ns.link("mgw-bfl").context("the veth's ifindex")?;
    let case = cases(1).remove(1);
    let probe = cases(1).remove(0).frame;
    for (name, hop, fp) in [
        ("uplink LOCAL", None, fp),
        ("uplink LOCAL fib", Some(NextHop::Fib), fp),
        ("uplink LOCAL fib uncached", Some(NextHop::Fib), uncached),
    ] {
        let mut t = tables(1, 10);
        t.local.ifindex = ifindex;
        if let Some(hop) = hop {
            t.local.next_hop = hop;
        }
        fp.install(&compile(t).map_err(|p| anyhow::anyhow!("{p}"))?)?;
        let (empty, net, proof) = mecgw_testbed::in_netns(n, || -> anyhow::Result<_> {
            let empty = batch(a.runs, a.repeat, |r| {
                Ok(fp.test_run_empty(&probe, r)?.duration)
            })?;
            let (net, proof) = restored(a, fp, &case, empty)?;
            Ok((empty, net, proof))
        })??;
        println!(
            "{:>9} {:>6}  {:<20} {:>10} {:>10.1} {:>8.2}  {} {proof} (in {n})",
            1,
            10,
            name,
            "restored",
            net,
            net / empty,
            case.reason.name()
        );
    }
    println!();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // As the daemon loads them: without the per-frame decision record that only
    // `FastPath::judge` reads (the paths are proven by the counters).
    let fp = FastPath::load_with(FastPathOptions {
        record_decisions: false,
        ..FastPathOptions::default()
    })?;
    let with_flows = FastPath::load_with(FastPathOptions {
        flow_accounting: true,
        record_decisions: false,
        ..FastPathOptions::default()
    })?;
    let uncached = FastPath::load_with(FastPathOptions {
        flow_accounting: true,
        record_decisions: false,
        verdict_cache: false,
        ..FastPathOptions::default()
    })?;
    println!(
        "fast path: kernel ns per packet (BPF_PROG_TEST_RUN), median of {} runs",
        a.runs
    );
    println!(
        "  batch = one call, repeat {}; per-call = repeat 1, median of {} calls, net of the empty program's per-call figure",
        a.repeat, a.calls
    );
    println!();
    println!(
        "{:>9} {:>6}  {:<20} {:>10} {:>10} {:>8}  proof (reason counter delta = runs)",
        "sessions", "rules", "case", "method", "ns/pkt", "x empty",
    );
    for (sessions, rules) in [(1u32, 10u32), (1, 5000), (100_000, 10), (100_000, 5000)] {
        let t = compile(tables(sessions, rules)).map_err(|p| anyhow::anyhow!("{p}"))?;
        fp.install(&t)
            .with_context(|| format!("installing {sessions} sessions / {rules} rules"))?;
        for flows in [&with_flows, &uncached] {
            flows
                .install(&t)
                .with_context(|| format!("installing {sessions} sessions / {rules} rules"))?;
        }
        let probe = cases(1).remove(0).frame;
        let empty_batch = batch(a.runs, a.repeat, |r| {
            Ok(fp.test_run_empty(&probe, r)?.duration)
        })?;
        let empty_call = per_call(&a, |r| Ok(fp.test_run_empty(&probe, r)?.duration))?;
        println!(
            "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8}",
            "empty XDP program", "batch", empty_batch, "1.00"
        );
        println!(
            "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8}",
            "empty XDP program", "per-call", empty_call, "(fixed)"
        );
        if sessions == 1 && rules == 10 {
            let local = cases(1).remove(1);
            let (net, proof) = floor(&a, &fp, &local.frame, empty_batch)?;
            println!(
                "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8.2}  redirected {proof}",
                "floor (no lookups)",
                "restored",
                net,
                net / empty_batch,
            );
        }
        for case in cases(sessions) {
            let before = reason_count(&fp, case.reason)?;
            let run = |r: u32| -> anyhow::Result<Duration> {
                let out = fp.test_run(case.direction, &case.frame, r)?;
                Ok(out.duration)
            };
            if !case.rewrites {
                let b = batch(a.runs, a.repeat, run)?;
                let runs = a.runs as u64 * u64::from(a.repeat);
                let proof = proof(reason_count(&fp, case.reason)? - before, runs);
                println!(
                    "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8.2}  {} {proof}",
                    case.name,
                    "batch",
                    b,
                    b / empty_batch,
                    case.reason.name()
                );
            }
            if case.rewrites {
                // Without flows, with them (the uplink's verdict cache hit), and for the
                // uplink with every packet classified (only the uplink classifies by rules).
                let mut loads = vec![("", &fp), (" +flows", &with_flows)];
                if case.direction == Direction::Uplink {
                    loads.push((" +flows miss", &uncached));
                }
                for (suffix, load) in loads {
                    let (net, proof) = restored(&a, load, &case, empty_batch)?;
                    println!(
                        "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8.2}  {} {proof}",
                        format!("{}{suffix}", case.name),
                        "restored",
                        net,
                        net / empty_batch,
                        case.reason.name()
                    );
                }
            }
            let before = reason_count(&fp, case.reason)?;
            let c = per_call(&a, run)?;
            let runs = (a.runs * a.calls) as u64;
            let proof = proof(reason_count(&fp, case.reason)? - before, runs);
            let net = (c - empty_call + empty_batch).max(0.0);
            println!(
                "{sessions:>9} {rules:>6}  {:<20} {:>10} {:>10.1} {:>8.2}  {} {proof}",
                case.name,
                "per-call",
                net,
                net / empty_batch,
                case.reason.name()
            );
        }
        println!();
    }
    let fib_uncached = FastPath::load_with(FastPathOptions {
        record_decisions: false,
        fib_cache: false,
        ..FastPathOptions::default()
    })?;
    fib_next_hop(&a, &fp, &fib_uncached)?;
    // The trap, shown with the program's own counters.
    let local = cases(1).remove(1);
    fp.install(&compile(tables(1, 10)).map_err(|p| anyhow::anyhow!("{p}"))?)?;
    let before = reason_count(&fp, Reason::RuleLocal)?;
    fp.test_run(Direction::Uplink, &local.frame, a.repeat)?;
    let delta = reason_count(&fp, Reason::RuleLocal)? - before;
    println!(
        "trap check: uplink LOCAL with repeat {}: the LOCAL path ran {delta} time(s); the rest saw the rewritten frame, which is why rewriting paths are measured restored or per-call",
        a.repeat
    );
    Ok(())
}
