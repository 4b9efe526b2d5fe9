//! Drives the egress library the way the daemon will, for the crash test: opens the spool and
//! audit log in `--dir`, starts the forwarder to a JetStream server, enqueues `--batches`
//! batches tagged with `--run`, and prints `ACK <run> <i>` (flushed) after each enqueue has
//! returned, that is after the batch is durably acknowledged. Then it waits for the spool to
//! drain, prints `DRAINED` and exits. The crash test `kill -9`s it at random moments.
//!
//! Usage: `egress_driver --dir DIR --nats URL --run R --batches N`

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mecgw::records::egress::Egress;
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::egress::{config, nats_sink, release};
use rand::Rng as _;
use serde_json::json;

struct Args {
    dir: std::path::PathBuf,
    nats: String,
    run: u64,
    batches: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut dir = None;
    let mut nats = None;
    let mut run = None;
    let mut batches = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => dir = Some(value.into()),
            "--nats" => nats = Some(value),
            "--run" => run = Some(value.parse().context("--run")?),
            "--batches" => batches = Some(value.parse().context("--batches")?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        dir: dir.context("--dir is required")?,
        nats: nats.context("--nats is required")?,
        run: run.context("--run is required")?,
        batches: batches.context("--batches is required")?,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let permissions = Arc::new(Permissions::new(Arc::new(PermissionTable::new().allow(
        "eu",
        "EU-DE",
        &["cells"],
        &[],
    ))));
    let egress = Arc::new(Egress::open(
        config(
            &args.dir,
            vec![("eu", "EU-DE", nats_sink(&args.nats))],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        permissions,
    )?);
    let forwarders = egress.start()?;
    let producer = {
        let egress = Arc::clone(&egress);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut rng = rand::rng();
            let mut stdout = std::io::stdout().lock();
            for i in 0..args.batches {
                let items = [
                    release("eu", "cells", i, json!({"run": args.run, "part": 0})),
                    release("eu", "cells", i, json!({"run": args.run, "part": 1})),
                ];
                egress.enqueue("eu", &items)?;
                writeln!(stdout, "ACK {} {i}", args.run)?;
                stdout.flush()?;
                std::thread::sleep(Duration::from_micros(rng.random_range(0..2_000)));
            }
            Ok(())
        })
    };
    producer.await??;
    while egress.backlog("eu").map_or(0, |(b, _)| b) > 0 {
        if forwarders.any_stopped() {
            bail!("a forwarder stopped");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    forwarders.shutdown().await?;
    println!("DRAINED");
    Ok(())
}
