//! The memory phase: the real `mecgw run`, at the scale of the goal, idle and under ingest.
//!
//! The daemon runs in the `mec` namespace of a [`Bed`] (XDP attached, native mode) with
//! 100,000 sessions and 5,000 rules ([`mecgw_bench::scale`]), a policy with one kind and one
//! release, egress to file sinks, and the API over mTLS. Measured:
//!
//! - baseline: resident memory after ready with 1 session and 10 rules, same configuration;
//! - idle: VmRSS and VmHWM two seconds after ready (VmHWM includes start-up: reading and
//!   compiling the tables file);
//! - under load: each round, one connection streams Publish batches as fast as the daemon
//!   takes them for `secs` seconds, cycling over 100,000 subscribers in 200 grid cells (so the
//!   window state reaches its full size: one row per subscriber); every record is transformed
//!   and spooled for a file sink, and counted into the release's open window. VmRSS is sampled
//!   every 10 ms; the peak is VmHWM at the end. A RESOURCE_EXHAUSTED (the bounded ingest
//!   queue stayed full) is answered by publishing again from the first record not accepted,
//!   and counted. The rate is records accepted / time until the last PublishResponse (which
//!   comes once the outputs are spooled);
//! - the kernel memory of the daemon's BPF maps: the sum of the `memlock` of each map it
//!   holds ([`mecgw_bench::procmem`]).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use mecgw::api::proto::{PublishRequest, telemetry_service_client::TelemetryServiceClient};
use mecgw_bench::{
    median,
    proccpu::{self, ThreadCpu},
    procmem::{self, Resident},
    scale,
};
use mecgw_tests::{
    api::{Site, connect},
    bed::{Bed, Daemon},
    privacy::configure_app_events,
};
use tonic::{Code, transport::Channel};

pub struct Options {
    pub rounds: usize,
    pub secs: u64,
    pub batch: usize,
}

const SESSIONS: u32 = 100_000;
const RULES: u32 = 5_000;
/// Subscribers in the records (one per session).
const SUBSCRIBERS: usize = 100_000;
/// Grid cells they are spread over.
const CELLS: usize = 200;
const MIB: f64 = 1024.0 * 1024.0;
/// The issue's goal for resident memory under load.
const GOAL_BYTES: u64 = 256 * 1024 * 1024;
const APP: &str = "bench-app";
const API: &str = "127.0.0.1:50051";

/// The daemon's configuration: [`configure_app_events`]'s realistic app policy (a
/// subscriber-keyed kind whose records leave pseudonymised and generalised, and one
/// aggregated release over them), two file-sink destinations and the API over mTLS.
fn configure(bed: &Bed, site: &Site) -> anyhow::Result<PathBuf> {
    Ok(configure_app_events(bed, site, APP, false))
}

/// Starts the daemon with `sessions`/`rules` tables, waits for ready; its log is drained on a
/// thread so a full pipe never stalls it.
fn start(
    bed: &Bed,
    config: &std::path::Path,
    sessions: u32,
    rules: u32,
) -> anyhow::Result<(Daemon, std::thread::JoinHandle<String>)> {
    let tables = scale::to_toml(&scale::tables(sessions, rules));
    std::fs::write(bed.path("tables.toml"), &tables)?;
    let mut d = bed.start(config);
    bed.wait_ready(&mut d);
    let mut stderr = d.child.stderr.take().context("no stderr pipe")?;
    let log = std::thread::spawn(move || {
        use std::io::Read as _;
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Ok((d, log))
}

/// The number in "... N record(s) were accepted ..." of a Publish error.
fn accepted_in(message: &str) -> Option<u64> {
    let before = message.split(" record(s) were accepted").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

/// 100,000 subscribers' records, `batch` to a message, stamped now (the current window).
fn pool(batch: usize) -> Vec<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let records: Vec<String> = (0..SUBSCRIBERS)
        .map(|i| {
            let cell = i % CELLS;
            let (lat, lon) = (
                48.0 + (cell / 20) as f64 * 0.01 + 0.003,
                11.0 + (cell % 20) as f64 * 0.01 + 0.004,
            );
            format!(
                r#"{{"imsi":"00101{i:010}","device_id":"dev-{i}","time":{now},"location":{{"lat":{lat:.5},"lon":{lon:.5}}},"rtt_ms":{}}}"#,
                10 + i % 90
            )
        })
        .collect();
    records.chunks(batch).map(<[String]>::to_vec).collect()
}

/// What one ingest round achieved.
struct Round {
    accepted: u64,
    took: Duration,
    /// Publish calls that ended RESOURCE_EXHAUSTED and were resumed.
    exhausted: u64,
}

/// Streams batches from `pool` (starting at `*next`, a record index into the pool taken as one
/// sequence) for `secs` seconds, resuming after RESOURCE_EXHAUSTED.
async fn ingest(
    client: &mut TelemetryServiceClient<Channel>,
    pool: &Arc<Vec<Vec<String>>>,
    batch: usize,
    next: &mut usize,
    secs: u64,
) -> anyhow::Result<Round> {
    let total = pool.len() * batch;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let (mut accepted, mut exhausted) = (0u64, 0u64);
    loop {
        let from = *next % total;
        let pool2 = Arc::clone(pool);
        // The first message starts at `from` (perhaps mid-batch, after RESOURCE_EXHAUSTED);
        // then whole batches in order, until the deadline.
        let messages = futures::stream::unfold(from, move |at| {
            let pool = Arc::clone(&pool2);
            async move {
                if Instant::now() >= deadline {
                    return None;
                }
                let (b, i) = (at / batch, at % batch);
                let records = pool[b][i..].to_vec();
                let next = ((b + 1) % pool.len()) * batch;
                Some((
                    PublishRequest {
                        kind: "app_event".into(),
                        records_json: records,
                    },
                    next,
                ))
            }
        });
        match client.publish(messages).await {
            Ok(r) => {
                let n = r.into_inner().accepted;
                accepted += n;
                *next = from + usize::try_from(n)?;
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                let n = accepted_in(status.message())
                    .with_context(|| format!("no accepted count in {status:?}"))?;
                accepted += n;
                *next = from + usize::try_from(n)?;
                exhausted += 1;
                if Instant::now() >= deadline {
                    break;
                }
            }
            Err(status) => anyhow::bail!("Publish failed: {status:?}"),
        }
    }
    Ok(Round {
        accepted,
        took: start.elapsed(),
        exhausted,
    })
}

/// The CPU time of the daemon's threads and of this benchmark (whose client is the only
/// other thing it runs meanwhile) at one moment, and the wall clock.
struct Cpu {
    daemon: Vec<ThreadCpu>,
    client: Duration,
    at: Instant,
}

impl Cpu {
    fn now(pid: u32) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            daemon: proccpu::threads(pid)?,
            client: proccpu::own(),
            at: Instant::now(),
        })
    }
}

/// Where the CPU of a record went over the measured rounds, and what the rate the issue
/// asks for would need at that cost.
fn cpu_per_record(before: &Cpu, after: &Cpu, accepted: u64) {
    if accepted == 0 {
        return;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / accepted as f64;
    let mut threads: Vec<(String, Duration)> = proccpu::used_by_name(&before.daemon, &after.daemon)
        .into_iter()
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    let daemon: Duration = threads.iter().map(|(_, d)| *d).sum();
    let client = after.client.saturating_sub(before.client);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let parts: Vec<String> = threads
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(name, d)| format!("{name} {:.2}", per(*d)))
        .collect();
    println!(
        "  CPU per accepted record (utime + stime over the measured rounds): daemon {:.2} µs \
         ({}), this benchmark's client {:.2} µs; together {:.2} of the machine's {cores} \
         cores were busy",
        per(daemon),
        parts.join(", "),
        per(client),
        (daemon + client).as_secs_f64() / wall
    );
    println!(
        "  at that cost, {GOAL_RATE} records/s would take {:.2} cores (daemon {:.2}, client \
         {:.2})",
        per(daemon + client) * GOAL_RATE as f64 / 1e6,
        per(daemon) * GOAL_RATE as f64 / 1e6,
        per(client) * GOAL_RATE as f64 / 1e6
    );
}

/// The ingest rate issue 17 asks of `mecgw run`.
const GOAL_RATE: u64 = 500_000;

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.batch > 0 && o.secs > 0,
        "--batch and --memory-secs must be at least 1"
    );
    let site = Site::new()?;
    println!(
        "memory: mecgw run (release, native XDP in a network namespace, policy + egress to \
         file sinks + API over mTLS); {} rounds of {} s streaming Publish on one connection, \
         {} subscribers in {} grid cells, batches of {}",
        o.rounds, o.secs, SUBSCRIBERS, CELLS, o.batch
    );

    // Baseline: the same daemon with the smallest tables, in a bed (and state) of its own: a
    // restart on a state directory whose audit log has no entry yet fails (an empty
    // audit.head), which is not what this benchmark measures.
    let (base, base_maps) = {
        let bed = Bed::new();
        let config = configure(&bed, &site)?;
        let (mut small, small_log) = start(&bed, &config, 1, 10)?;
        std::thread::sleep(Duration::from_secs(2));
        let base = procmem::resident(small.child.id())?;
        let maps: u64 = procmem::bpf_maps(small.child.id())?
            .iter()
            .map(|m| m.memlock)
            .sum();
        anyhow::ensure!(
            small.stop().success(),
            "mecgw (1 session) did not stop cleanly"
        );
        let _ = small_log.join();
        (base, maps)
    };

    let bed = Bed::new();
    let config = configure(&bed, &site)?;
    let t = Instant::now();
    let (mut d, log) = start(&bed, &config, SESSIONS, RULES)?;
    let ready_after = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let pid = d.child.id();
    let idle = procmem::resident(pid)?;
    let maps = procmem::bpf_maps(pid)?;

    // Sample VmRSS while the rounds run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (Arc::clone(&stop), Arc::clone(&max_rss));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = procmem::resident(pid) {
                    max_rss.fetch_max(r.rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let app = site.app(APP)?;
    let ca = site.ca.cert_pem();
    let addr: SocketAddr = API.parse()?;
    let pool = Arc::new(pool(o.batch));
    let (rounds, opts_secs, batch) = (o.rounds, o.secs, o.batch);
    let (results, cpu_before, cpu_after) =
        mecgw_tests::in_netns(&bed.mec, move || -> anyhow::Result<_> {
            // Built on the thread inside the namespace: its sockets are the namespace's.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let channel = connect(addr, &ca, Some(&app)).await?;
                let mut client = TelemetryServiceClient::new(channel);
                let mut next = 0usize;
                let mut out = Vec::new();
                // Warm-up: connection, TLS, the engine's first allocations.
                ingest(&mut client, &pool, batch, &mut next, 1).await?;
                let before = Cpu::now(pid)?;
                for round in 0..rounds {
                    let r = ingest(&mut client, &pool, batch, &mut next, opts_secs).await?;
                    let rss = procmem::resident(pid)?;
                    println!(
                        "  round {round}: {:>9.0} records/s ({} records in {:.2} s, {} \
                     RESOURCE_EXHAUSTED resumed); VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                        r.accepted as f64 / r.took.as_secs_f64(),
                        r.accepted,
                        r.took.as_secs_f64(),
                        r.exhausted,
                        mib(rss.rss),
                        mib(rss.peak)
                    );
                    out.push(r);
                }
                Ok((out, before, Cpu::now(pid)?))
            })
        })??;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let loaded: Resident = procmem::resident(pid)?;
    let sampled = max_rss.load(Ordering::Relaxed);
    let metrics = bed.http("/metrics").1;
    anyhow::ensure!(d.stop().success(), "mecgw did not stop cleanly");
    let log = log.join().unwrap_or_default();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"));
    for w in warnings.take(5) {
        println!("  daemon log: {w}");
    }

    let rate = median(
        results
            .iter()
            .map(|r| r.accepted as f64 / r.took.as_secs_f64())
            .collect(),
    );
    let exhausted: u64 = results.iter().map(|r| r.exhausted).sum();
    let accepted: u64 = results.iter().map(|r| r.accepted).sum();
    let memlock: u64 = maps.iter().map(|m| m.memlock).sum();
    let in_api = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mecgw_records_in_total{source=\"api\"} "))
        .unwrap_or("?");
    println!(
        "  records the daemon counted in (mecgw_records_in_total, incl. warm-up): {in_api}; \
         accepted in the measured rounds: {accepted}"
    );
    println!(
        "figures ({SESSIONS} sessions / {RULES} rules; tables ready after {:.1} s):",
        ready_after.as_secs_f64()
    );
    println!(
        "  idle RSS, 1 session / 10 rules (baseline): VmRSS {:.1} MiB, VmHWM {:.1} MiB; BPF \
         memlock {:.1} MiB",
        mib(base.rss),
        mib(base.peak),
        mib(base_maps)
    );
    println!(
        "  idle RSS after ready: VmRSS {:.1} MiB, VmHWM {:.1} MiB (start-up included)",
        mib(idle.rss),
        mib(idle.peak)
    );
    println!(
        "  under load: VmRSS highest sample {:.1} MiB, end {:.1} MiB; peak RSS (VmHWM) {:.1} \
         MiB{} (goal <= 256 MiB: {})",
        mib(sampled),
        mib(loaded.rss),
        mib(loaded.peak),
        // VmHWM never falls: if the load did not raise it, start-up set it.
        if loaded.peak == idle.peak {
            ", set at start-up, not by the load"
        } else {
            ""
        },
        if loaded.peak <= GOAL_BYTES {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  Publish ingest through mecgw run: {rate:.0} records/s (median of {rounds} rounds); \
         {exhausted} RESOURCE_EXHAUSTED resumed"
    );
    cpu_per_record(&cpu_before, &cpu_after, accepted);
    println!(
        "  BPF maps, kernel memory (memlock): {:.1} MiB in {} maps; largest:",
        mib(memlock),
        maps.len()
    );
    for m in maps.iter().take(6) {
        println!(
            "    {:<20} type {:>2} {:>9} entries {:>8.1} MiB",
            m.name.as_deref().unwrap_or("(bpftool absent)"),
            m.map_type,
            m.max_entries,
            mib(m.memlock)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_accepted_count_is_read_from_either_exhausted_message() {
        assert_eq!(
            accepted_in(
                "the policy engine is behind (its queue stayed full for 50 ms); 12345 record(s) \
                 were accepted; retry later from records_json[45] of this batch"
            ),
            Some(12345)
        );
        assert_eq!(
            accepted_in("7 record(s) were accepted but are not yet durable: spool full"),
            Some(7)
        );
        assert_eq!(accepted_in("something else"), None);
    }
}
