//! The gRPC API benchmark (`cargo xtask bench api`): over mTLS on loopback, one connection,
//!
//! - unary latency: `GetTrafficRule` through the real API (identity from the client
//!   certificate, ownership check, table lookup, etag digest) against a bare tonic service
//!   with the same messages that answers a canned rule, on the same mTLS set-up;
//! - streaming ingest: `Publish` batches through the real API (JSON parse, kind checks, the
//!   bounded queue, drained by a task standing in for the engine) against a bare `Publish`
//!   that only counts the records.
//!
//! Rounds alternate API and bare so drift on a shared machine hits both alike; the figures
//! are medians over rounds. It prints figures and ratios; it never fails on a figure.
//!
//! Then the memory of the real daemon ([`memory`], needs root): `mecgw run` in a network
//! namespace with 100,000 sessions, 5,000 rules, a policy, egress to file sinks and the API;
//! its resident memory idle and under a streaming Publish ingest at full speed, and the kernel
//! memory of its BPF maps.

mod memory;

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use mecgw::{
    api::{
        ApiBackend, BackendError, PublishedRecord, ReleasedOutput, ReplaceError, StatusReport,
        proto::{
            self, CreateTrafficRuleRequest, CreateTrafficRuleResponse, DeleteTrafficRuleRequest,
            DeleteTrafficRuleResponse, GetTrafficRuleRequest, GetTrafficRuleResponse,
            ListTrafficRulesRequest, ListTrafficRulesResponse, PublishRequest, PublishResponse,
            ReplaceTrafficRuleRequest, ReplaceTrafficRuleResponse, SubscribeRequest,
            SubscribeResponse, UpdateTrafficRuleStateRequest, UpdateTrafficRuleStateResponse,
            telemetry_service_client::TelemetryServiceClient,
            telemetry_service_server::{TelemetryService, TelemetryServiceServer},
            traffic_rules_service_client::TrafficRulesServiceClient,
            traffic_rules_service_server::{TrafficRulesService, TrafficRulesServiceServer},
        },
    },
    datapath::{CompiledTables, tables::overlay::Overlay},
};
use mecgw_bench::median;
use mecgw_tests::api::{Running, Site, connect};
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

#[derive(Parser)]
#[command(about = "mecgw gRPC API benchmark: mTLS unary latency and Publish ingest")]
struct Args {
    /// Rounds (API and bare alternate in each).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Unary calls per round and service.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Records per round and service in the Publish test.
    #[arg(long, default_value_t = 500_000)]
    records: usize,
    /// Records per Publish message.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds of Publish ingest per round of the memory phase.
    #[arg(long, default_value_t = 5)]
    memory_secs: u64,
    /// Rounds of the memory phase (0: skip it; it needs root).
    #[arg(long, default_value_t = 3)]
    memory_rounds: usize,
    /// Only the memory phase.
    #[arg(long)]
    memory_only: bool,
}

/// Sessions and rules after the shared test interfaces ([`mecgw_tests::tables_with`]).
const TABLE_ENTRIES: &str = r#"
[[rules]]
id = 10
priority = 10
action = "LOCAL"
dst = ["192.0.2.0/24", "2001:db8:e::/48"]
protocols = ["tcp", "udp"]
dst_ports = [443, "8000-8100"]
"#;

/// The daemon's part without a kernel: the benchmark reads tables and feeds a queue that a
/// task drains, counting, as the policy engine would.
struct Backend {
    tables: RwLock<Arc<CompiledTables>>,
    ready: watch::Sender<bool>,
    ingest: mpsc::Sender<PublishedRecord>,
    released: broadcast::Sender<Arc<ReleasedOutput>>,
}

impl ApiBackend for Backend {
    fn tables(&self) -> Arc<CompiledTables> {
        match self.tables.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn overlay(&self) -> Arc<Overlay> {
        Arc::default()
    }
    fn replace_overlay(
        &self,
        _base: &Arc<Overlay>,
        _next: Overlay,
    ) -> Result<Arc<CompiledTables>, ReplaceError> {
        Err(ReplaceError::Internal(
            "the benchmark does not change tables".into(),
        ))
    }
    fn status(&self) -> Result<StatusReport, BackendError> {
        Ok(StatusReport::default())
    }
    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
    fn record_kinds(&self) -> Vec<String> {
        vec!["app".into()]
    }
    fn ingest(&self) -> mpsc::Sender<PublishedRecord> {
        self.ingest.clone()
    }
    fn releases(&self) -> broadcast::Receiver<Arc<ReleasedOutput>> {
        self.released.subscribe()
    }
}

/// The baseline: the same services and messages, no identity, no state.
struct Bare {
    rule: proto::TrafficRule,
    records: AtomicU64,
}

/// A handle on the shared baseline state (one per service).
#[derive(Clone)]
struct BareService(Arc<Bare>);

#[tonic::async_trait]
impl TrafficRulesService for BareService {
    async fn list_traffic_rules(
        &self,
        _: Request<ListTrafficRulesRequest>,
    ) -> Result<Response<ListTrafficRulesResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn get_traffic_rule(
        &self,
        request: Request<GetTrafficRuleRequest>,
    ) -> Result<Response<GetTrafficRuleResponse>, Status> {
        let mut rule = self.0.rule.clone();
        rule.id = request.get_ref().id;
        Ok(Response::new(GetTrafficRuleResponse { rule: Some(rule) }))
    }
    async fn update_traffic_rule_state(
        &self,
        _: Request<UpdateTrafficRuleStateRequest>,
    ) -> Result<Response<UpdateTrafficRuleStateResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn create_traffic_rule(
        &self,
        _: Request<CreateTrafficRuleRequest>,
    ) -> Result<Response<CreateTrafficRuleResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn replace_traffic_rule(
        &self,
        _: Request<ReplaceTrafficRuleRequest>,
    ) -> Result<Response<ReplaceTrafficRuleResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
    async fn delete_traffic_rule(
        &self,
        _: Request<DeleteTrafficRuleRequest>,
    ) -> Result<Response<DeleteTrafficRuleResponse>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

type SubscribeStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<SubscribeResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl TelemetryService for BareService {
    async fn publish(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishResponse>, Status> {
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        while let Some(m) = stream.message().await? {
            accepted += m.records_json.len() as u64;
        }
        self.0.records.fetch_add(accepted, Ordering::Relaxed);
        Ok(Response::new(PublishResponse { accepted }))
    }
    type SubscribeStream = SubscribeStream;
    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        Err(Status::unimplemented("bare"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn unary_round(
    client: &mut TrafficRulesServiceClient<tonic::transport::Channel>,
    calls: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = client
            .get_traffic_rule(GetTrafficRuleRequest { id: 10 })
            .await?;
        lat.push(t.elapsed());
        std::hint::black_box(r);
    }
    lat.sort();
    Ok((percentile(&lat, 0.50), percentile(&lat, 0.99)))
}

async fn publish_round(
    client: &mut TelemetryServiceClient<tonic::transport::Channel>,
    batches: &[PublishRequest],
) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let r = client
        .publish(futures::stream::iter(batches.to_vec()))
        .await?;
    Ok((r.into_inner().accepted, t.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.memory_only {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(bench(&args))?;
    }
    if args.memory_rounds > 0 {
        memory::run(&memory::Options {
            rounds: args.memory_rounds,
            secs: args.memory_secs,
            batch: args.batch,
        })?;
    }
    Ok(())
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let site = Site::new()?;
    let tables = mecgw::datapath::compile::from_toml(
        &mecgw_tests::tables_with(TABLE_ENTRIES),
        "bench.toml",
    )?;
    let (ingest, mut queue) = mpsc::channel::<PublishedRecord>(65_536);
    let drained = Arc::new(AtomicU64::new(0));
    let counter = drained.clone();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(1024);
        while queue.recv_many(&mut buf, 1024).await > 0 {
            counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.clear();
        }
    });
    let backend = Arc::new(Backend {
        tables: RwLock::new(Arc::new(tables.clone())),
        ready: watch::channel(true).0,
        ingest,
        released: broadcast::channel(16).0,
    });
    let mut config = site.config();
    config.publish_wait_ms = 1000;
    let api = Running::start(backend, config).await?;

    // The bare service: same TLS identity, same required client CA.
    let bare = Arc::new(Bare {
        rule: mecgw::api::traffic_rules::to_proto(&tables.rules[0]),
        records: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&site.server.cert, &site.server.key))
        .client_ca_root(Certificate::from_pem(site.ca.cert_pem()));
    let bare_server = Server::builder()
        .tcp_nodelay(true)
        .tls_config(tls)?
        .add_service(TrafficRulesServiceServer::new(BareService(bare.clone())))
        .add_service(TelemetryServiceServer::new(BareService(bare.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(bare_server);

    let ca = site.ca.cert_pem();
    let id = site.app("video")?;
    let api_channel = connect(api.addr, &ca, Some(&id)).await?;
    let bare_channel = connect(bare_addr, &ca, Some(&id)).await?;
    let mut api_rules = TrafficRulesServiceClient::new(api_channel.clone());
    let mut bare_rules = TrafficRulesServiceClient::new(bare_channel.clone());
    let mut api_telemetry = TelemetryServiceClient::new(api_channel);
    let mut bare_telemetry = TelemetryServiceClient::new(bare_channel);

    let record = |i: usize| {
        format!(
            r#"{{"cell":"c{}","ue":"u{}","rsrp":-{}.5,"ts":1764158400}}"#,
            i % 97,
            i,
            i % 120
        )
    };
    let batches: Vec<PublishRequest> = (0..args.records.div_ceil(args.batch))
        .map(|b| PublishRequest {
            kind: "app".into(),
            records_json: (0..args.batch)
                .map(|i| record(b * args.batch + i))
                .collect(),
        })
        .collect();
    let bytes: usize = batches[0].records_json.iter().map(String::len).sum();

    println!(
        "api bench: mTLS (rustls/ring, ECDSA P-256) on loopback, one connection per service; \
         {} rounds; {} unary calls per round; {} records per round in batches of {} \
         (~{} B/record)",
        args.rounds,
        args.calls,
        batches.len() * args.batch,
        args.batch,
        bytes / args.batch
    );
    // Warm-up: connections, TLS session, caches, allocator.
    unary_round(&mut api_rules, 500).await?;
    unary_round(&mut bare_rules, 500).await?;
    publish_round(&mut api_telemetry, &batches[..batches.len().min(100)]).await?;
    publish_round(&mut bare_telemetry, &batches[..batches.len().min(100)]).await?;

    let (mut a50, mut a99, mut b50, mut b99) = (vec![], vec![], vec![], vec![]);
    let (mut arate, mut brate) = (vec![], vec![]);
    for round in 0..args.rounds {
        let (p50, p99) = unary_round(&mut api_rules, args.calls).await?;
        let (q50, q99) = unary_round(&mut bare_rules, args.calls).await?;
        let before = drained.load(Ordering::Relaxed);
        let (accepted, took) = publish_round(&mut api_telemetry, &batches).await?;
        // The records count as ingested when the engine's end has taken them off the queue.
        let want = before + accepted;
        let t = Instant::now();
        while drained.load(Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let api_rate = accepted as f64 / (took + t.elapsed()).as_secs_f64();
        let (baccepted, btook) = publish_round(&mut bare_telemetry, &batches).await?;
        let bare_rate = baccepted as f64 / btook.as_secs_f64();
        println!(
            "  round {round}: unary p50/p99 api {:>6.1}/{:>6.1} us, bare {:>6.1}/{:>6.1} us; \
             publish api {:>9.0} rec/s, bare {:>9.0} rec/s",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            q50.as_secs_f64() * 1e6,
            q99.as_secs_f64() * 1e6,
            api_rate,
            bare_rate
        );
        a50.push(p50.as_secs_f64() * 1e6);
        a99.push(p99.as_secs_f64() * 1e6);
        b50.push(q50.as_secs_f64() * 1e6);
        b99.push(q99.as_secs_f64() * 1e6);
        arate.push(api_rate);
        brate.push(bare_rate);
    }
    let (a50, a99, b50, b99) = (median(a50), median(a99), median(b50), median(b99));
    let (arate, brate) = (median(arate), median(brate));
    println!("medians over {} rounds:", args.rounds);
    println!(
        "  unary GetTrafficRule p50: api {a50:.1} us, bare {b50:.1} us, ratio {:.2}",
        a50 / b50
    );
    println!(
        "  unary GetTrafficRule p99: api {a99:.1} us, bare {b99:.1} us, ratio {:.2} (goal <= 1.30: {})",
        a99 / b99,
        if a99 / b99 <= 1.3 { "met" } else { "NOT met" }
    );
    println!(
        "  Publish ingest: api {arate:.0} records/s, bare {brate:.0} records/s, ratio {:.2} \
         (goal >= 200000 records/s: {})",
        arate / brate,
        if arate >= 200_000.0 { "met" } else { "NOT met" }
    );
    api.stop().await.context("stopping the API server")?;
    Ok(())
}
