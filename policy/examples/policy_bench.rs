//! Policy engine benchmark (run by `cargo xtask bench policy`, release build).
//!
//! `policy_bench throughput [--records N] [--runs R]`: records/s on one core for a realistic
//! flow-record policy (two pseudonymised fields, one truncated address, a bucketed time, three
//! dropped fields, one release), JSON lines in and out, and in memory (parsed records in,
//! output objects not serialised); HMAC-SHA-256/s; and, in the same run, the baseline: a bare
//! serde_json parse-and-serialise of the same lines, taking turns with the engine over slices
//! of 10,000 lines so that other load on the machine falls on both alike. Reports medians and
//! the median of the runs' time ratios (engine / baseline).
//!
//! `policy_bench memory [--units U] [--groups G] [--max-state S]`: peak RSS growth for one
//! window holding U distinct privacy units across G groups, per (unit, group) pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use mecgw_policy::budget::Ledger;
use mecgw_policy::engine::{Engine, KeySource, Output};
use mecgw_policy::noise::OsRandom;
use serde_json::Value;

const KEY: &str = "6d656367772d62656e63686d61726b2d6b65792d6e6f742d666f722d75736521";

fn policy(max_state: Option<u64>) -> String {
    format!(
        r#"version: 1
budget: {{period: 1d, epsilon: 2.4, delta: 1e-5}}
keys:
  subscriber: {{path: unused.key, rotation: 1d}}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    window: 1h
    fields:
      imsi: string
      msisdn: string
      imei: string
      teid: integer
      qfi: integer
      ue_ip: ip
      start: timestamp
      cell_id: string
      bytes_down: integer
    transforms:
      imsi: {{pseudonymise: {{key: subscriber}}}}
      msisdn: {{pseudonymise: {{key: subscriber}}}}
      ue_ip: {{truncate: {{ipv4: 24, ipv6: 48}}}}
      start: {{bucket: {{width: 15m}}}}
      cell_id: keep
      bytes_down: keep
releases:
  traffic_per_cell:
    kind: flow
    window: 1h
    group_by: [cell_id]
    contribution: {{max_groups: 1, max_rows: 20}}
    k: 20
    epsilon: 0.1
    delta: 4e-7
    metrics: [count, {{sum: {{field: bytes_down, bounds: [0, 10000000]}}}}]
    {}
destinations:
  analytics: {{region: EU-DE, kinds: [flow]}}
  stats: {{region: EU-DE, releases: [traffic_per_cell]}}
"#,
        max_state
            .map(|s| format!("max_state: {s}"))
            .unwrap_or_default()
    )
}

fn engine(src: &str) -> Engine {
    let p = mecgw_policy::compile(src).unwrap();
    let keys = BTreeMap::from([("subscriber".to_owned(), KEY.to_owned())]);
    let ledger = Ledger::in_memory(p.budget.epsilon, p.budget.delta, p.budget.period.0);
    Engine::new(
        &p,
        src,
        KeySource::Test(&keys),
        ledger,
        Box::new(OsRandom::new()),
    )
    .unwrap()
}

fn record(i: u64, units: u64, groups: u64) -> String {
    let u = i % units;
    format!(
        r#"{{"imsi":"00101{u:010}","msisdn":"4917{u:08}","imei":"3534900{u:08}","teid":{},"qfi":9,"ue_ip":"10.{}.{}.{}","start":{},"cell_id":"262-01-{:05}","bytes_down":{}}}"#,
        305_419_896 + u,
        (u >> 16) & 255,
        (u >> 8) & 255,
        u & 255,
        1_795_690_800 + (i % 3600),
        u % groups,
        (i * 7919) % 5_000_000
    )
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(args: &[String]) {
    let n = arg(args, "--records", 200_000);
    let runs = arg(args, "--runs", 5) as usize;
    let lines: Vec<String> = (0..n).map(|i| record(i, 50_000, 40)).collect();
    let values: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let src = policy(None);
    let mut out = Vec::with_capacity(64 << 20);
    let (mut base, mut json, mut mem, mut hmac) = (vec![], vec![], vec![], vec![]);
    // For profiling one phase: POLICY_BENCH_ONLY=base|json|mem.
    let only = std::env::var("POLICY_BENCH_ONLY").unwrap_or_default();
    if !only.is_empty() {
        for _ in 0..runs {
            let mut e = engine(&src);
            out.clear();
            let t = Instant::now();
            let mut emit = |o: &Output<'_>| -> std::io::Result<()> {
                o.write_json(&mut out)?;
                out.push(b'\n');
                Ok(())
            };
            if only == "base" {
                let mut buf = Vec::new();
                for l in &lines {
                    let v: Value = serde_json::from_str(l).unwrap();
                    serde_json::to_writer(&mut buf, &v).unwrap();
                    buf.push(b'\n');
                }
                std::hint::black_box(buf);
            } else if only == "json" {
                for (i, l) in lines.iter().enumerate() {
                    e.process_line(i as u64 + 1, l, &mut emit).unwrap();
                }
            } else {
                for (i, v) in values.iter().enumerate() {
                    e.process_value(i as u64 + 1, v.clone(), &mut emit).unwrap();
                }
            }
            e.finish(&mut emit).unwrap();
            println!(
                "{only}: {:.0} records/s",
                n as f64 / t.elapsed().as_secs_f64()
            );
        }
        return;
    }
    let mut ratios = vec![];
    let mut base_out = Vec::with_capacity(64 << 20);
    for _ in 0..runs {
        // The baseline (a bare serde_json parse and serialise of the same lines) and the
        // engine (JSON lines in, JSON lines out) take turns over slices of 10,000 lines, so
        // that load from other processes falls on both alike; each one's time is summed.
        out.clear();
        base_out.clear();
        let mut e = engine(&src);
        let (mut t_base, mut t_json) = (0f64, 0f64);
        {
            let mut emit = |o: &Output<'_>| -> std::io::Result<()> {
                o.write_json(&mut out)?;
                out.push(b'\n');
                Ok(())
            };
            let mut line_no = 0u64;
            for slice in lines.chunks(10_000) {
                let t = Instant::now();
                for l in slice {
                    let v: Value = serde_json::from_str(l).unwrap();
                    serde_json::to_writer(&mut base_out, &v).unwrap();
                    base_out.push(b'\n');
                }
                t_base += t.elapsed().as_secs_f64();
                let t = Instant::now();
                for l in slice {
                    line_no += 1;
                    e.process_line(line_no, l, &mut emit).unwrap();
                }
                t_json += t.elapsed().as_secs_f64();
            }
            let t = Instant::now();
            e.finish(&mut emit).unwrap();
            t_json += t.elapsed().as_secs_f64();
        }
        std::hint::black_box(&base_out);
        base.push(n as f64 / t_base);
        json.push(n as f64 / t_json);
        ratios.push(t_json / t_base);
        assert_eq!(e.stats.records_ok, n);
        assert!(e.stats.releases["traffic_per_cell"].cells > 0);

        // In memory: parsed records in, output objects kept as values.
        let mut e = engine(&src);
        let mut kept = 0u64;
        let batch = values.clone();
        let t = Instant::now();
        {
            let mut emit = |o: &Output<'_>| -> std::io::Result<()> {
                kept += 1;
                std::hint::black_box(o);
                Ok(())
            };
            for (i, v) in batch.into_iter().enumerate() {
                e.process_value(i as u64 + 1, v, &mut emit).unwrap();
            }
            e.finish(&mut emit).unwrap();
        }
        mem.push(n as f64 / t.elapsed().as_secs_f64());
        assert!(kept >= n);

        // HMAC-SHA-256 of a 15-byte IMSI with ring, the pseudonymiser's primitive.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
        let m = 1_000_000u64;
        let t = Instant::now();
        for i in 0..m {
            let imsi = format!("00101{i:010}");
            std::hint::black_box(ring::hmac::sign(&key, imsi.as_bytes()));
        }
        hmac.push(m as f64 / t.elapsed().as_secs_f64());
    }
    let (b, j, m, h) = (median(base), median(json), median(mem), median(hmac));
    let r = median(ratios);
    println!("policy throughput, one core, {n} records × {runs} runs (median):");
    println!(
        "  baseline serde_json parse+serialise : {:>10.0} records/s",
        b
    );
    println!(
        "  policy JSON lines in → out          : {:>10.0} records/s  ({:.2}× the baseline's time, median of the runs' ratios)",
        j, r
    );
    println!(
        "  policy in memory                    : {:>10.0} records/s",
        m
    );
    println!(
        "  HMAC-SHA-256 (ring, 15-byte input)  : {:>10.0} /s (incl. formatting the input)",
        h
    );
    println!(
        "  goal: ≥ 500000 records/s JSON→JSON and ≤ 2× baseline: {}",
        if j >= 500_000.0 && r <= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn memory(args: &[String]) {
    let units = arg(args, "--units", 1_000_000);
    let groups = arg(args, "--groups", 10_000);
    let max_state = args
        .iter()
        .any(|a| a == "--max-state")
        .then(|| arg(args, "--max-state", 0));
    let src = policy(max_state);
    let mut e = engine(&src);
    let before = rss_kib("VmRSS:");
    let mut sink = |_o: &Output<'_>| -> std::io::Result<()> { Ok(()) };
    let mut line = String::new();
    for i in 0..units {
        line.clear();
        line.push_str(&record(i, units, groups));
        e.process_line(i + 1, &line, &mut sink).unwrap();
    }
    let s = e.stats.releases["traffic_per_cell"].clone();
    // At the cap the window frees its state; its peak held max_state pairs.
    let pairs = if s.rows_state_cap > 0 {
        max_state.unwrap_or(0)
    } else {
        e.state_pairs() as u64
    };
    let peak = rss_kib("VmHWM:");
    let grown = peak.saturating_sub(before) * 1024;
    println!(
        "policy memory: {units} units across {groups} groups{}: {pairs} (unit, group) pairs held at peak, peak RSS grew {:.1} MiB = {:.0} bytes per pair (goal ≤ 200); rows dropped at the state cap: {}",
        max_state
            .map(|m| format!(" with max_state {m}"))
            .unwrap_or_default(),
        grown as f64 / (1024.0 * 1024.0),
        grown as f64 / pairs.max(1) as f64,
        s.rows_state_cap
    );
    e.finish(&mut sink).unwrap();
    let s = &e.stats.releases["traffic_per_cell"];
    println!(
        "  window closed: {} released, {} suppressed at the state cap, {} cells",
        s.windows_released, s.windows_suppressed, s.cells
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(&args),
        Some("memory") => memory(&args),
        _ => {
            eprintln!(
                "usage: policy_bench throughput [--records N] [--runs R] | memory [--units U] [--groups G] [--max-state S]"
            );
            std::process::exit(2);
        }
    }
}
