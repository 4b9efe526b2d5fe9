//! What `mecgw run` exposes on `/metrics`: one registry per scrape, of collectors that read
//! the live state (kernel maps, atomics, the parts' snapshots) and write it as OpenMetrics
//! text ([`crate::openmetrics`]). Nothing here keeps a value of its own.
//!
//! The fast path's counters are read first, into a [`FastPathSample`], because those reads
//! can fail (the scrape then answers 500 and says why) and encoding cannot. Everything else
//! is read while it is encoded.
//!
//! Sessions are summed per direction, never one series per session: 100,000 sessions would
//! be 200,000 series per scrape, and a subscriber's traffic is regulated data that the
//! record path, not this plaintext port, releases. Rules (at most a few thousand, chosen by
//! the operator) have one series each.

use std::sync::{Arc, atomic::Ordering};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

use super::{Datapath, Gateway};
use crate::datapath::{
    CompiledTables, Counter, DatapathError, Direction, FlowLosses, Reason, Verdict,
    fib_watch::FibWatchStatus,
};
use crate::openmetrics::{self, BuildInfo, counter, counters, gauge, gauges, info};
use crate::records::{LoadedPolicy, egress::metrics::EgressCollector, engine::PrivacySnapshot};

/// Why `/metrics` could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A fast-path counter map could not be read.
    #[error("reading the fast-path counters failed: {0}")]
    FastPath(#[from] DatapathError),
    /// A collector failed while writing (none of ours returns an error of its own).
    #[error("encoding the metrics failed")]
    Encode(#[from] std::fmt::Error),
}

/// The OpenMetrics document of everything the daemon counts.
pub fn render(gw: &Arc<Gateway>) -> Result<String, RenderError> {
    Ok(openmetrics::encode(&registry(gw)?)?)
}

/// The collectors of one scrape, the fast path's counters already read.
pub fn registry(gw: &Arc<Gateway>) -> Result<Registry, RenderError> {
    let mut r = Registry::default();
    r.register_collector(Box::new(FastPathSample::read(
        gw.fast_path(),
        &gw.tables(),
    )?));
    r.register_collector(Box::new(DaemonCollector(Arc::clone(gw))));
    if let Some(api) = gw.api_metrics() {
        r.register_collector(Box::new(Arc::clone(api)));
    }
    if let Some(p) = gw.policy() {
        r.register_collector(Box::new(PolicyCollector(p)));
    }
    if let Some(p) = gw.privacy() {
        r.register_collector(Box::new(PrivacyCollector(p.metrics().snapshot())));
    }
    if let Some(e) = gw.egress() {
        r.register_collector(Box::new(EgressCollector {
            destinations: e.metrics().snapshot(),
            storage: e.storage(),
        }));
    }
    if let Some(p) = gw.pfcp_metrics() {
        r.register_collector(Box::new(Arc::clone(p)));
    }
    r.register_collector(Box::new(BuildInfo));
    r.register_collector(Box::new(openmetrics::process::ProcessCollector));
    Ok(r)
}

/// The fast path's counters and the size of its tables, read at one scrape.
#[derive(Debug, Clone, Default)]
pub struct FastPathSample {
    verdicts: Vec<(Verdict, Counter)>,
    reasons: Vec<(Reason, Counter)>,
    /// Per rule in the tables, by id.
    rules: Vec<(u32, Counter)>,
    /// Summed over every session, per direction.
    sessions: Vec<(Direction, Counter)>,
    losses: FlowLosses,
    session_count: usize,
    /// The next-hop cache's watch (XDP only).
    fib_watch: Option<FibWatchStatus>,
}

impl FastPathSample {
    /// Reads every counter of `fp` for the sessions and rules of `tables` (the tables in
    /// force).
    pub fn read(fp: &Datapath, tables: &CompiledTables) -> Result<Self, DatapathError> {
        // Each map read in batches: one lookup per rule and per session and direction cost
        // ≈ 130 ms of system calls at 100,000 sessions.
        let rule_ids: Vec<u32> = tables.rules.iter().map(|r| r.id).collect();
        let rules = fp.rule_counters(&rule_ids)?;
        let session_ids: Vec<u32> = tables.sessions.iter().map(|s| s.id).collect();
        let totals = fp.session_totals(&session_ids)?;
        let sessions = [Direction::Uplink, Direction::Downlink]
            .into_iter()
            .map(|dir| (dir, totals[dir.index() as usize]))
            .collect();
        Ok(FastPathSample {
            verdicts: fp.verdict_counters()?,
            reasons: fp.reason_counters()?,
            rules,
            sessions,
            losses: fp.flow_losses()?,
            session_count: tables.sessions.len(),
            fib_watch: fp.fib_watch(),
        })
    }
}

impl Collector for FastPathSample {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let verdicts = || {
            self.verdicts
                .iter()
                .map(|(v, c)| ([("verdict", v.name())], *c))
        };
        counters(
            &mut e,
            "mecgw_fastpath_packets_total",
            "Frames per fast-path verdict.",
            verdicts().map(|(l, c)| (l, c.packets)),
        )?;
        counters(
            &mut e,
            "mecgw_fastpath_bytes_total",
            "Bytes per fast-path verdict.",
            verdicts().map(|(l, c)| (l, c.bytes)),
        )?;
        counters(
            &mut e,
            "mecgw_fastpath_reason_packets_total",
            "Frames per reason for their verdict.",
            self.reasons
                .iter()
                .map(|(r, c)| ([("reason", r.name())], c.packets)),
        )?;
        counters(
            &mut e,
            "mecgw_rule_packets_total",
            "Frames matched per traffic rule.",
            self.rules
                .iter()
                .map(|(id, c)| ([("rule", *id)], c.packets)),
        )?;
        counters(
            &mut e,
            "mecgw_rule_bytes_total",
            "Bytes matched per traffic rule.",
            self.rules.iter().map(|(id, c)| ([("rule", *id)], c.bytes)),
        )?;
        counters(
            &mut e,
            "mecgw_session_packets_total",
            "Frames per direction summed over sessions.",
            self.sessions
                .iter()
                .map(|(d, c)| ([("direction", d.name())], c.packets)),
        )?;
        counters(
            &mut e,
            "mecgw_flow_accounting_lost_total",
            "Flow accounting lost in the fast path: packets of new flows a full window refused (raise [flows] max_flows), packets a map lookup refused, flows read with an unknown key.",
            [
                (
                    [("what", "packets_window_full")],
                    self.losses.refused_packets,
                ),
                ([("what", "packets_uncounted")], self.losses.failed_packets),
                ([("what", "flows_unreadable")], self.losses.unreadable_flows),
            ],
        )?;
        gauge(
            &mut e,
            "mecgw_sessions",
            "PDU sessions installed.",
            self.session_count as u64,
        )?;
        if let Some(w) = self.fib_watch {
            counter(
                &mut e,
                "mecgw_fastpath_fib_changes_total",
                "Times the fast path dropped the next hops it keeps from the kernel's FIB: bursts of neighbour, route, address or link reports.",
                w.changes,
            )?;
            gauge(
                &mut e,
                "mecgw_fastpath_fib_watch",
                "1 while the fast path listens to the kernel's FIB reports; 0: kept next hops follow a change within 1 s.",
                u64::from(w.watching),
            )?;
        }
        gauge(
            &mut e,
            "mecgw_rules",
            "Traffic rules installed.",
            self.rules.len() as u64,
        )
    }
}

/// The daemon's own counters: reloads, GTP-U signalling, log limits, the operations port,
/// readiness.
#[derive(Clone)]
struct DaemonCollector(Arc<Gateway>);

impl std::fmt::Debug for DaemonCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonCollector")
    }
}

impl Collector for DaemonCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let gw = &self.0;
        let m = &gw.metrics;
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        counters(
            &mut e,
            "mecgw_reloads_total",
            "Reloads of tables and policy, by result.",
            [
                ([("result", "ok")], load(&m.reloads_ok)),
                ([("result", "rejected")], load(&m.reloads_failed)),
            ],
        )?;
        gauge(
            &mut e,
            "mecgw_last_reload_rejected",
            "1 while the newest reload was rejected (the old tables and policy stay in force).",
            load(&m.last_reload_failed),
        )?;
        let g = &m.gtpu;
        counters(
            &mut e,
            "mecgw_gtpu_signalling_total",
            "GTP-U signalling messages received, by type.",
            [
                ("echo_request", &g.echo_requests),
                ("end_marker", &g.end_markers),
                ("error_indication", &g.error_indications),
                ("other", &g.other),
                ("malformed", &g.malformed),
            ]
            .map(|(kind, v)| ([("type", kind)], load(v))),
        )?;
        counter(
            &mut e,
            "mecgw_log_lines_suppressed_total",
            "Log lines held back by rate limits (lines anyone outside can cause: GTP-U, PFCP).",
            load(&crate::log_limit::SUPPRESSED),
        )?;
        counter(
            &mut e,
            "mecgw_ops_connections_refused_total",
            "Operations-port connections closed at accept because the connection limit was reached and every connection was serving a request.",
            load(&m.ops_connections_refused),
        )?;
        counter(
            &mut e,
            "mecgw_ops_connections_evicted_total",
            "Idle operations-port connections (no request in progress) closed to make room for a new one at the connection limit.",
            load(&m.ops_connections_evicted),
        )?;
        gauge(
            &mut e,
            "mecgw_ready",
            "1 when every configured part serves: programs attached, tables and policy loaded, egress able to spool and audit.",
            u64::from(gw.is_ready() && gw.egress().is_none_or(|e| e.health().is_ready())),
        )
    }
}

/// The policy in force: its hash and its privacy budget per period.
#[derive(Debug)]
struct PolicyCollector(Arc<LoadedPolicy>);

impl Collector for PolicyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let hash = self.0.hash.to_string();
        info(
            &mut e,
            "mecgw_policy_info",
            "The policy in force, by hash.",
            &[("hash", hash.as_str())],
        )?;
        let b = &self.0.policy.budget;
        gauges(
            &mut e,
            "mecgw_budget_per_period",
            "The privacy budget of each period, per privacy unit (compare mecgw_budget_left).",
            [
                ([("param", "epsilon")], b.epsilon.as_f64()),
                ([("param", "delta")], b.delta.as_f64()),
            ],
        )
    }
}

/// The policy engine's counters: records in, transformed, suppressed and released, and the
/// budget left.
#[derive(Debug)]
struct PrivacyCollector(PrivacySnapshot);

impl Collector for PrivacyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        counters(
            &mut e,
            "mecgw_records_in_total",
            "Regulated records taken into the policy engine, by source.",
            [
                ([("source", "api")], s.records_in_api),
                ([("source", "flow")], s.records_in_flow),
            ],
        )?;
        counter(
            &mut e,
            "mecgw_flow_harvest_failures_total",
            "Flow harvests that failed (their counters are read at the next harvest).",
            s.flow_harvest_failures,
        )?;
        counter(
            &mut e,
            "mecgw_records_transformed_total",
            "Records the policy transformed.",
            s.records_transformed,
        )?;
        counters(
            &mut e,
            "mecgw_records_bad_total",
            "Records that could not be used, by reason.",
            s.records_bad
                .iter()
                .map(|(reason, n)| ([("reason", reason.as_str())], *n)),
        )?;
        counter(
            &mut e,
            "mecgw_records_released_total",
            "Transformed records emitted towards a destination (once per destination).",
            s.records_released,
        )?;
        counter(
            &mut e,
            "mecgw_records_on_site_total",
            "Transformed records no destination may receive; they stay on site.",
            s.records_on_site,
        )?;
        counter(
            &mut e,
            "mecgw_release_cells_total",
            "Aggregate cells released (once per destination).",
            s.cells_released,
        )?;
        counters(
            &mut e,
            "mecgw_release_groups_suppressed_total",
            "Groups withheld from releases, by reason.",
            [
                ([("reason", "below_k")], s.groups_below_k),
                ([("reason", "below_threshold")], s.groups_below_threshold),
            ],
        )?;
        counters(
            &mut e,
            "mecgw_release_windows_total",
            "Closed release windows, by outcome (refused: budget spent).",
            s.windows
                .iter()
                .map(|(outcome, n)| ([("outcome", *outcome)], *n)),
        )?;
        counter(
            &mut e,
            "mecgw_release_rows_late_total",
            "Rows for windows already closed (not counted in any release).",
            s.rows_late,
        )?;
        gauge(
            &mut e,
            "mecgw_release_open_windows",
            "Release windows open now.",
            s.open_windows,
        )?;
        gauges(
            &mut e,
            "mecgw_budget_left",
            "Privacy budget left in the current period.",
            [
                ([("param", "epsilon")], s.budget_epsilon_left),
                ([("param", "delta")], s.budget_delta_left),
            ],
        )?;
        counter(
            &mut e,
            "mecgw_outputs_refused_total",
            "Policy outputs egress refused at enqueue (audited).",
            s.outputs_refused,
        )?;
        gauge(
            &mut e,
            "mecgw_outputs_waiting",
            "Policy outputs held in memory while the spool is full.",
            s.outputs_waiting,
        )?;
        counter(
            &mut e,
            "mecgw_outputs_lost_at_shutdown_total",
            "Outputs not spooled because the spool stayed full through a shutdown.",
            s.outputs_lost_at_shutdown,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn encode(c: impl Collector) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(c));
        openmetrics::encode(&r).unwrap()
    }

    #[test]
    fn the_fast_path_sample_keeps_every_series_name() {
        let c = |packets, bytes| Counter { packets, bytes };
        let text = encode(FastPathSample {
            verdicts: vec![(Verdict::Redirect, c(5, 500))],
            reasons: vec![(Reason::ALL[0], c(2, 0))],
            rules: vec![(10, c(3, 300)), (40, c(0, 0))],
            sessions: vec![(Direction::Uplink, c(7, 0)), (Direction::Downlink, c(1, 0))],
            losses: FlowLosses {
                refused_packets: 4,
                failed_packets: 9,
                unreadable_flows: 1,
            },
            session_count: 2,
            fib_watch: Some(FibWatchStatus {
                changes: 6,
                watching: true,
            }),
        });
        for line in [
            "# TYPE mecgw_fastpath_packets counter",
            "mecgw_fastpath_packets_total{verdict=\"redirect\"} 5",
            "mecgw_fastpath_bytes_total{verdict=\"redirect\"} 500",
            &format!(
                "mecgw_fastpath_reason_packets_total{{reason=\"{}\"}} 2",
                Reason::ALL[0].name()
            ),
            "mecgw_rule_packets_total{rule=\"10\"} 3",
            "mecgw_rule_bytes_total{rule=\"10\"} 300",
            "mecgw_rule_packets_total{rule=\"40\"} 0",
            "mecgw_session_packets_total{direction=\"uplink\"} 7",
            "mecgw_session_packets_total{direction=\"downlink\"} 1",
            "mecgw_flow_accounting_lost_total{what=\"packets_window_full\"} 4",
            "mecgw_flow_accounting_lost_total{what=\"flows_unreadable\"} 1",
            "mecgw_flow_accounting_lost_total{what=\"packets_uncounted\"} 9",
            "mecgw_sessions 2",
            "mecgw_rules 2",
            "mecgw_fastpath_fib_changes_total 6",
            "mecgw_fastpath_fib_watch 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn the_privacy_snapshot_keeps_every_series_name_and_its_float_budget() {
        let text = encode(PrivacyCollector(PrivacySnapshot {
            records_in_flow: 3,
            records_bad: BTreeMap::from([("not_json".to_string(), 2)]),
            windows: BTreeMap::from([("released", 1)]),
            budget_epsilon_left: 1.2,
            budget_delta_left: 0.0,
            ..PrivacySnapshot::default()
        }));
        for line in [
            "mecgw_records_in_total{source=\"api\"} 0",
            "mecgw_records_in_total{source=\"flow\"} 3",
            "mecgw_records_bad_total{reason=\"not_json\"} 2",
            "mecgw_release_windows_total{outcome=\"released\"} 1",
            "mecgw_release_groups_suppressed_total{reason=\"below_k\"} 0",
            "mecgw_budget_left{param=\"epsilon\"} 1.2",
            "mecgw_budget_left{param=\"delta\"} 0.0",
            "mecgw_outputs_lost_at_shutdown_total 0",
            "mecgw_release_open_windows 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
