//! The plaintext operations port: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//!
//! Kubelet probes cannot do mTLS, so this port carries no regulated data: only counters and
//! health. It is read-only.

use std::{
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use mecgw_ebpf::Counter;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Gateway;
use crate::datapath::Direction;
use crate::log_limit::LogBudget;

/// Connections served at once; more are closed at accept (counted), so that idle or slow
/// clients cannot take every file descriptor the daemon has.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request's headers (also the idle time allowed
/// between keep-alive requests before the next one's headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let metrics_of = Arc::clone(&gw);
    let app = Router::new()
        .route("/", get(status_page))
        .route("/status.js", get(status_script))
        .route("/status.css", get(status_style))
        .route("/status.json", get(status_json))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gw);
    let listen = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    info!(listen, "operations port: /metrics /healthz /readyz");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Both warnings can come once per connection attempt: the shared log limit, not one
    // line each.
    let mut accept_log = LogBudget::new("operations port accept failures", 10);
    let mut limit_log = LogBudget::new("operations port connection limit", 10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning on accept.
                    if accept_log.allow() {
                        warn!(error = %e, "operations port: accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics_of
                .metrics
                .ops_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if limit_log.allow() {
                warn!(%peer, max = MAX_CONNECTIONS, "operations port: connection limit reached; connections beyond it are closed (mecgw_ops_connections_refused_total)");
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "operations port: connection ended");
            }
        });
    }
}

/// The status page's files, embedded in the binary (no CDN, nothing fetched elsewhere).
const STATUS_HTML: &str = include_str!("status/index.html");
const STATUS_JS: &str = include_str!("status/status.js");
const STATUS_CSS: &str = include_str!("status/status.css");

/// Headers of every status-page answer: only this origin's scripts, styles and fetches, no
/// framing, no sniffing. The page is read-only and shows no regulated data.
fn page_headers(content_type: &'static str) -> [(http::header::HeaderName, &'static str); 5] {
    use http::header;
    [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

async fn status_page() -> impl IntoResponse {
    (page_headers("text/html; charset=utf-8"), STATUS_HTML)
}

async fn status_script() -> impl IntoResponse {
    (page_headers("text/javascript; charset=utf-8"), STATUS_JS)
}

async fn status_style() -> impl IntoResponse {
    (page_headers("text/css; charset=utf-8"), STATUS_CSS)
}

/// What the status page shows besides numbers: which parts are configured, why not ready,
/// the policy hash and the audit head.
async fn status_json(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let egress = gw.egress().cloned();
    let (egress_problems, audit_head) = match egress.clone() {
        Some(e) => {
            let problems: Vec<String> = e
                .health()
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.component, p.message))
                .collect();
            // A short file read: off the runtime.
            let head = tokio::task::spawn_blocking(move || e.audit_head())
                .await
                .ok()
                .flatten();
            (problems, head)
        }
        None => (Vec::new(), None),
    };
    let readyz = if !gw.is_ready() {
        "not ready".to_string()
    } else if let Some(problem) = egress_problems.first() {
        problem.clone()
    } else {
        "ready".to_string()
    };
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "datapath": gw.datapath_kind_name(),
        "ready": gw.is_ready(),
        "draining": gw.is_draining(),
        "readyz": readyz,
        "pfcp": gw.pfcp_metrics().is_some(),
        "egress": egress.is_some(),
        "egress_problems": egress_problems,
        "policy": gw.policy().map(|p| p.hash.to_string()),
        "audit_head": audit_head,
    });
    (page_headers("application/json"), body.to_string())
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if !gw.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    // Ready means every configured part serves: egress must be able to spool and audit.
    match gw.egress().map(|e| e.health()) {
        Some(h) if !h.is_ready() => (StatusCode::SERVICE_UNAVAILABLE, format!("{h}\n")),
        _ => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    // Rendering reads every counter map (100,000 sessions take a noticeable time): off the
    // runtime, so that /healthz and the API are not held up by scrapes.
    let rendered = tokio::task::spawn_blocking(move || render(&gw)).await;
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "text/plain")],
                format!("rendering the metrics failed: {e}\n"),
            );
        }
    };
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("reading the fast-path counters failed: {e}\n"),
        ),
    }
}

/// Prometheus text exposition of everything the daemon counts.
pub fn render(gw: &Gateway) -> Result<String, crate::datapath::DatapathError> {
    let mut out = String::with_capacity(4096);
    let fp = gw.fast_path();
    family(
        &mut out,
        "mecgw_fastpath_packets_total",
        "counter",
        "Frames per fast-path verdict.",
    );
    for (v, c) in fp.verdict_counters()? {
        let _ = writeln!(
            out,
            "mecgw_fastpath_packets_total{{verdict=\"{}\"}} {}",
            v.name(),
            c.packets
        );
    }
    family(
        &mut out,
        "mecgw_fastpath_bytes_total",
        "counter",
        "Bytes per fast-path verdict.",
    );
    for (v, c) in fp.verdict_counters()? {
        let _ = writeln!(
            out,
            "mecgw_fastpath_bytes_total{{verdict=\"{}\"}} {}",
            v.name(),
            c.bytes
        );
    }
    family(
        &mut out,
        "mecgw_fastpath_reason_packets_total",
        "counter",
        "Frames per reason for their verdict.",
    );
    for (r, c) in fp.reason_counters()? {
        let _ = writeln!(
            out,
            "mecgw_fastpath_reason_packets_total{{reason=\"{}\"}} {}",
            r.name(),
            c.packets
        );
    }
    let tables = gw.tables();
    family(
        &mut out,
        "mecgw_rule_packets_total",
        "counter",
        "Frames matched per traffic rule.",
    );
    let mut rule_bytes = String::new();
    for rule in &tables.rules {
        let c = fp.rule_counter(rule.id)?.unwrap_or(Counter::default());
        let _ = writeln!(
            out,
            "mecgw_rule_packets_total{{rule=\"{}\"}} {}",
            rule.id, c.packets
        );
        let _ = writeln!(
            rule_bytes,
            "mecgw_rule_bytes_total{{rule=\"{}\"}} {}",
            rule.id, c.bytes
        );
    }
    family(
        &mut out,
        "mecgw_rule_bytes_total",
        "counter",
        "Bytes matched per traffic rule.",
    );
    out.push_str(&rule_bytes);
    family(
        &mut out,
        "mecgw_session_packets_total",
        "counter",
        "Frames per direction summed over sessions.",
    );
    for dir in [Direction::Uplink, Direction::Downlink] {
        let mut total = Counter::default();
        for s in &tables.sessions {
            if let Some(c) = fp.session_counter(s.id, dir)? {
                total = total.plus(c);
            }
        }
        let _ = writeln!(
            out,
            "mecgw_session_packets_total{{direction=\"{}\"}} {}",
            dir.name(),
            total.packets
        );
    }
    let losses = fp.flow_losses()?;
    family(
        &mut out,
        "mecgw_flow_accounting_lost_total",
        "counter",
        "Flow accounting lost in the fast path: flows evicted from a full flow map (with what they had counted), packets a map update refused.",
    );
    let _ = writeln!(
        out,
        "mecgw_flow_accounting_lost_total{{what=\"flows_evicted\"}} {}",
        losses.evicted_flows
    );
    let _ = writeln!(
        out,
        "mecgw_flow_accounting_lost_total{{what=\"packets_uncounted\"}} {}",
        losses.failed_packets
    );
    gauge(
        &mut out,
        "mecgw_sessions",
        "PDU sessions installed.",
        tables.sessions.len() as u64,
    );
    gauge(
        &mut out,
        "mecgw_rules",
        "Traffic rules installed.",
        tables.rules.len() as u64,
    );
    let m = &gw.metrics;
    family(
        &mut out,
        "mecgw_reloads_total",
        "counter",
        "Reloads of tables and policy, by result.",
    );
    let _ = writeln!(
        out,
        "mecgw_reloads_total{{result=\"ok\"}} {}",
        m.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "mecgw_reloads_total{{result=\"rejected\"}} {}",
        m.reloads_failed.load(Ordering::Relaxed)
    );
    gauge(
        &mut out,
        "mecgw_last_reload_rejected",
        "1 while the newest reload was rejected (the old tables and policy stay in force).",
        m.last_reload_failed.load(Ordering::Relaxed),
    );
    let g = &m.gtpu;
    family(
        &mut out,
        "mecgw_gtpu_signalling_total",
        "counter",
        "GTP-U signalling messages received, by type.",
    );
    for (kind, v) in [
        ("echo_request", &g.echo_requests),
        ("end_marker", &g.end_markers),
        ("error_indication", &g.error_indications),
        ("other", &g.other),
        ("malformed", &g.malformed),
    ] {
        let _ = writeln!(
            out,
            "mecgw_gtpu_signalling_total{{type=\"{kind}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    counter(
        &mut out,
        "mecgw_log_lines_suppressed_total",
        "Log lines held back by rate limits (lines anyone outside can cause: GTP-U, PFCP).",
        crate::log_limit::SUPPRESSED.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "mecgw_ops_connections_refused_total",
        "Operations-port connections closed at accept because the connection limit was reached.",
        gw.metrics.ops_connections_refused.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "mecgw_ready",
        "1 when every configured part serves: programs attached, tables and policy loaded, egress able to spool and audit.",
        u64::from(gw.is_ready() && gw.egress().is_none_or(|e| e.health().is_ready())),
    );
    if let Some(api) = gw.api_metrics() {
        out.push_str(&api.render());
    }
    if let Some(p) = gw.policy() {
        family(
            &mut out,
            "mecgw_policy_info",
            "gauge",
            "The policy in force, by hash.",
        );
        let _ = writeln!(out, "mecgw_policy_info{{hash=\"{}\"}} 1", p.hash);
        let b = &p.policy.budget;
        family(
            &mut out,
            "mecgw_budget_per_period",
            "gauge",
            "The privacy budget of each period, per privacy unit (compare mecgw_budget_left).",
        );
        let _ = writeln!(
            out,
            "mecgw_budget_per_period{{param=\"epsilon\"}} {}\nmecgw_budget_per_period{{param=\"delta\"}} {}",
            b.epsilon.as_f64(),
            b.delta.as_f64()
        );
    }
    if let Some(p) = gw.privacy() {
        render_privacy(&mut out, &p.metrics().snapshot());
    }
    if let Some(e) = gw.egress() {
        let snapshot = e.metrics().snapshot();
        render_egress(&mut out, &snapshot);
        crate::records::egress::metrics::render(&mut out, &snapshot, &e.storage());
    }
    if let Some(p) = gw.pfcp_metrics() {
        p.render(&mut out);
    }
    Ok(out)
}

/// The policy engine's counters: records in, transformed, suppressed and released, and the
/// budget left.
fn render_privacy(out: &mut String, s: &crate::records::engine::PrivacySnapshot) {
    family(
        out,
        "mecgw_records_in_total",
        "counter",
        "Regulated records taken into the policy engine, by source.",
    );
    let _ = writeln!(
        out,
        "mecgw_records_in_total{{source=\"api\"}} {}",
        s.records_in_api
    );
    let _ = writeln!(
        out,
        "mecgw_records_in_total{{source=\"flow\"}} {}",
        s.records_in_flow
    );
    counter(
        out,
        "mecgw_flow_harvest_failures_total",
        "Flow harvests that failed (their counters are read at the next harvest).",
        s.flow_harvest_failures,
    );
    counter(
        out,
        "mecgw_records_transformed_total",
        "Records the policy transformed.",
        s.records_transformed,
    );
    family(
        out,
        "mecgw_records_bad_total",
        "counter",
        "Records that could not be used, by reason.",
    );
    for (reason, n) in &s.records_bad {
        let _ = writeln!(out, "mecgw_records_bad_total{{reason=\"{reason}\"}} {n}");
    }
    counter(
        out,
        "mecgw_records_released_total",
        "Transformed records emitted towards a destination (once per destination).",
        s.records_released,
    );
    counter(
        out,
        "mecgw_records_on_site_total",
        "Transformed records no destination may receive; they stay on site.",
        s.records_on_site,
    );
    counter(
        out,
        "mecgw_release_cells_total",
        "Aggregate cells released (once per destination).",
        s.cells_released,
    );
    family(
        out,
        "mecgw_release_groups_suppressed_total",
        "counter",
        "Groups withheld from releases, by reason.",
    );
    let _ = writeln!(
        out,
        "mecgw_release_groups_suppressed_total{{reason=\"below_k\"}} {}",
        s.groups_below_k
    );
    let _ = writeln!(
        out,
        "mecgw_release_groups_suppressed_total{{reason=\"below_threshold\"}} {}",
        s.groups_below_threshold
    );
    family(
        out,
        "mecgw_release_windows_total",
        "counter",
        "Closed release windows, by outcome (refused: budget spent).",
    );
    for (outcome, n) in &s.windows {
        let _ = writeln!(
            out,
            "mecgw_release_windows_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    counter(
        out,
        "mecgw_release_rows_late_total",
        "Rows for windows already closed (not counted in any release).",
        s.rows_late,
    );
    gauge(
        out,
        "mecgw_release_open_windows",
        "Release windows open now.",
        s.open_windows,
    );
    family(
        out,
        "mecgw_budget_left",
        "gauge",
        "Privacy budget left in the current period.",
    );
    let _ = writeln!(
        out,
        "mecgw_budget_left{{param=\"epsilon\"}} {}",
        s.budget_epsilon_left
    );
    let _ = writeln!(
        out,
        "mecgw_budget_left{{param=\"delta\"}} {}",
        s.budget_delta_left
    );
    counter(
        out,
        "mecgw_outputs_refused_total",
        "Policy outputs egress refused at enqueue (audited).",
        s.outputs_refused,
    );
    gauge(
        out,
        "mecgw_outputs_waiting",
        "Policy outputs held in memory while the spool is full.",
        s.outputs_waiting,
    );
    counter(
        out,
        "mecgw_outputs_lost_at_shutdown_total",
        "Outputs not spooled because the spool stayed full through a shutdown.",
        s.outputs_lost_at_shutdown,
    );
}

/// Egress per destination: spooled, sent, refused, shed, backlog.
fn render_egress(
    out: &mut String,
    snapshot: &std::collections::BTreeMap<String, crate::records::egress::metrics::MetricsSnapshot>,
) {
    type Field = fn(&crate::records::egress::metrics::MetricsSnapshot) -> u64;
    let families: [(&str, &str, &str, Field); 12] = [
        (
            "mecgw_egress_enqueued_batches_total",
            "counter",
            "Batches spooled.",
            |m| m.enqueued_batches,
        ),
        (
            "mecgw_egress_enqueued_items_total",
            "counter",
            "Outputs spooled.",
            |m| m.enqueued_items,
        ),
        (
            "mecgw_egress_sent_batches_total",
            "counter",
            "Batches the sink acknowledged.",
            |m| m.sent_batches,
        ),
        (
            "mecgw_egress_sent_items_total",
            "counter",
            "Outputs the sink acknowledged.",
            |m| m.sent_items,
        ),
        (
            "mecgw_egress_refused_at_enqueue_total",
            "counter",
            "Batches refused by the jurisdiction check at enqueue.",
            |m| m.refused_at_enqueue,
        ),
        (
            "mecgw_egress_refused_at_send_total",
            "counter",
            "Spooled batches refused by the jurisdiction check at send time.",
            |m| m.refused_at_send,
        ),
        (
            "mecgw_egress_shed_batches_total",
            "counter",
            "Oldest batches shed from a full spool (shed-oldest).",
            |m| m.shed_batches,
        ),
        (
            "mecgw_egress_rejected_full_total",
            "counter",
            "Batches rejected because the spool was full (backpressure).",
            |m| m.rejected_full,
        ),
        (
            "mecgw_egress_send_failures_total",
            "counter",
            "Failed deliveries (retried).",
            |m| m.send_failures,
        ),
        (
            "mecgw_egress_reconnects_total",
            "counter",
            "Sink reconnects.",
            |m| m.reconnects,
        ),
        (
            "mecgw_egress_backlog_batches",
            "gauge",
            "Batches waiting in the spool.",
            |m| m.backlog_batches,
        ),
        (
            "mecgw_egress_backlog_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            |m| m.backlog_bytes,
        ),
    ];
    for (name, kind, help, field) in families {
        family(out, name, kind, help);
        for (destination, m) in snapshot {
            let _ = writeln!(out, "{name}{{destination=\"{destination}\"}} {}", field(m));
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}
