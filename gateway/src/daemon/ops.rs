//! The plaintext operations port: `/metrics` (Prometheus text), `/healthz` and `/readyz`.
//!
//! Kubelet probes cannot do mTLS, so this port carries no regulated data: only counters and
//! health. It is read-only.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use mecgw_ebpf::Counter;
use tracing::{info, warn};

use super::Gateway;
use crate::datapath::Direction;

pub async fn serve(
    gw: Arc<Gateway>,
    listen: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gw);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%listen, error = %e, "cannot bind the operations port");
            return;
        }
    };
    info!(%listen, "operations port: /metrics /healthz /readyz");
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "operations port failed");
    }
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    match render(&gw) {
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
    gauge(
        &mut out,
        "mecgw_ready",
        "1 when programs are attached and tables and policy loaded.",
        u64::from(gw.is_ready()),
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
    }
    Ok(out)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}
