//! The egress benchmark (`cargo xtask bench egress` runs it in release mode): batches/s and
//! records/s from a pre-filled spool to JetStream through the forwarder (jurisdiction check,
//! publish with `Nats-Msg-Id`, wait for the ack, audit entry, spool removal), against a bare
//! async-nats loop that publishes the same payloads with the same header and waits for each
//! ack, in the same run against the same server. Runs alternate which goes first; medians are
//! reported with their ratio. It never fails on a figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use mecgw::records::egress::Egress;
use mecgw::records::egress::item::{BatchId, EgressItem, encode_batch};
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::nats::NatsSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_bench::median;
use mecgw_tests::egress::{POLICY_HASH, config, release};
use mecgw_tests::nats::NatsServer;
use serde_json::json;

#[derive(Parser)]
#[command(about = "mecgw egress benchmark: spool → JetStream against a bare async-nats loop")]
struct Args {
    /// Batches per run.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    batches: u64,
    /// Records per batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    items: u64,
    /// Runs (each measures both, alternating which goes first); medians are reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
}

fn batch_items(b: u64, items: u64) -> Vec<EgressItem> {
    (0..items)
        .map(|i| {
            release(
                "bench",
                "cells",
                b * items + i,
                json!({"group": {"cell": format!("262-01-{:05}", i * 7919 % 65_536), "slice": "embb"},
                       "sum_bytes": 1_234_567 + i, "p95_ms": 41}),
            )
        })
        .collect()
}

/// The bare loop: publish with `Nats-Msg-Id`, wait for the ack, next. It runs in a spawned
/// task, as the forwarder does, so both pay the same scheduling costs.
async fn bare(
    url: &str,
    run: u64,
    payloads: &Arc<Vec<(String, Vec<u8>)>>,
) -> anyhow::Result<Duration> {
    let (url, payloads) = (url.to_string(), Arc::clone(payloads));
    tokio::spawn(async move { bare_loop(&url, run, &payloads).await }).await?
}

async fn bare_loop(
    url: &str,
    run: u64,
    payloads: &[(String, Vec<u8>)],
) -> anyhow::Result<Duration> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let subject = format!("bench.bare.{run}");
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("bench_bare_{run}"),
        subjects: vec![subject.clone()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let start = Instant::now();
    for (id, payload) in payloads {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        js.publish_with_headers(subject.clone(), headers, payload.clone().into())
            .await?
            .await?;
    }
    Ok(start.elapsed())
}

/// Egress: pre-fill the spool, then time the forwarder draining it into JetStream.
async fn egress(url: &str, run: u64, batches: &[Vec<EgressItem>]) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let mut sink = NatsSinkConfig::new(url);
    sink.stream = Some(format!("bench_egress_{run}"));
    sink.subject = Some(format!("bench.egress.{run}"));
    let permissions = Arc::new(Permissions::new(Arc::new(PermissionTable::new().allow(
        "bench",
        "EU-DE",
        &["cells"],
        &[],
    ))));
    let egress = Egress::open(
        config(
            dir.path(),
            vec![("bench", "EU-DE", SinkConfig::Nats(sink))],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        permissions,
    )?;
    for items in batches {
        egress.enqueue("bench", items)?;
    }
    let metrics = Arc::clone(
        egress
            .metrics()
            .destination("bench")
            .context("bench destination")?,
    );
    let total = batches.len() as u64;
    let start = Instant::now();
    let forwarders = egress.start()?;
    egress.wait_drained("bench").await;
    let elapsed = start.elapsed();
    if metrics.snapshot().sent_batches != total {
        bail!("the forwarder did not send every batch");
    }
    forwarders.shutdown().await?;
    Ok(elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = NatsServer::start()?;
    let url = server.url();
    let batches: Vec<Vec<EgressItem>> = (0..args.batches)
        .map(|b| batch_items(b, args.items))
        .collect();
    let payloads: Vec<(String, Vec<u8>)> = batches
        .iter()
        .enumerate()
        .map(|(seq, items)| {
            let id = BatchId {
                destination: "bench".into(),
                instance: 0x5eed,
                seq: seq as u64 + 1,
            };
            Ok((
                id.to_string(),
                encode_batch(&id, "EU-DE", POLICY_HASH, items)?,
            ))
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let payloads = Arc::new(payloads);
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    println!(
        "egress bench: {} batches × {} records ({} B/batch on average), {} runs, nats-server on loopback",
        args.batches,
        args.items,
        bytes / payloads.len(),
        args.runs
    );
    let (mut bare_rates, mut egress_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let (b, e) = if run % 2 == 0 {
            let b = bare(&url, run, &payloads).await?;
            (b, egress(&url, run, &batches).await?)
        } else {
            let e = egress(&url, run, &batches).await?;
            (bare(&url, run, &payloads).await?, e)
        };
        let n = args.batches as f64;
        let (br, er) = (n / b.as_secs_f64(), n / e.as_secs_f64());
        println!(
            "run {run}: bare {br:>9.0} batches/s   egress {er:>9.0} batches/s   ratio {:.2}",
            er / br
        );
        bare_rates.push(br);
        ratios.push(er / br);
        egress_rates.push(er);
    }
    let (bm, em) = (median(bare_rates), median(egress_rates));
    let k = args.items as f64;
    println!(
        "median bare loop      : {bm:>9.0} batches/s {:>11.0} records/s",
        bm * k
    );
    println!(
        "median egress forward : {em:>9.0} batches/s {:>11.0} records/s",
        em * k
    );
    println!("ratio of the medians  : {:.2} (goal ≥ 0.80)", em / bm);
    println!(
        "median per-run ratio  : {:.2} (each run pairs both under the same load)",
        median(ratios)
    );
    Ok(())
}
