//! [`ApiBackend`] over the running daemon's [`Gateway`]: what `mecgw run` hands to
//! [`crate::api::serve`]. The daemon is the composition root: it knows both sides, the API
//! knows only its backend trait.
//!
//! The gateway owns the fast path, the tables in force and the policy; this adapter adds the
//! ingest queue and release broadcast, whose other ends belong to the policy engine.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};

use super::{Gateway, TablesChangeError};
use crate::{
    api::{
        ApiBackend, ApiMetrics, BackendError, PublishedRecord, ReleasedOutput, ReplaceError,
        StatusReport,
    },
    datapath::{CompiledTables, tables::overlay::Overlay},
    records::engine::FlushError,
};

/// The daemon's [`Gateway`] as the API sees it.
pub struct GatewayApi {
    gateway: Arc<Gateway>,
    ingest: mpsc::Sender<PublishedRecord>,
    releases: broadcast::Sender<Arc<ReleasedOutput>>,
    metrics: Arc<ApiMetrics>,
}

impl GatewayApi {
    /// The API's view of `gateway`. Publish feeds `ingest` (bounded: its capacity is the
    /// backpressure point); Subscribe follows `releases`.
    pub fn new(
        gateway: Arc<Gateway>,
        ingest: mpsc::Sender<PublishedRecord>,
        releases: broadcast::Sender<Arc<ReleasedOutput>>,
    ) -> GatewayApi {
        GatewayApi {
            gateway,
            ingest,
            releases,
            metrics: Arc::default(),
        }
    }
    /// Calls per method and code, for the operations port's `/metrics`
    /// ([`ApiMetrics::render`]).
    pub fn metrics(&self) -> Arc<ApiMetrics> {
        self.metrics.clone()
    }
}

impl ApiBackend for GatewayApi {
    fn tables(&self) -> Arc<CompiledTables> {
        self.gateway.tables()
    }

    fn overlay(&self) -> Arc<Overlay> {
        self.gateway.api_overlay()
    }

    fn replace_overlay(
        &self,
        base: &Arc<Overlay>,
        next: Overlay,
    ) -> Result<Arc<CompiledTables>, ReplaceError> {
        // Compare, store and install under one lock: a SIGHUP reload in between is never lost.
        match self.gateway.replace_api_overlay(base, next) {
            Ok(installed) => Ok(installed),
            Err(TablesChangeError::Conflict) => Err(ReplaceError::Conflict),
            Err(TablesChangeError::Invalid(problems)) => Err(ReplaceError::Invalid(problems)),
            Err(e) => Err(ReplaceError::Internal(Box::new(e))),
        }
    }

    fn status(&self) -> Result<StatusReport, BackendError> {
        let internal = |e: crate::datapath::DatapathError| BackendError::Internal(Box::new(e));
        let fp = self.gateway.fast_path();
        let verdicts = fp
            .verdict_counters()
            .map_err(internal)?
            .into_iter()
            .map(|(v, c)| (v.name().to_string(), c.packets, c.bytes))
            .collect();
        let reasons = fp
            .reason_counters()
            .map_err(internal)?
            .into_iter()
            .map(|(r, c)| (r.name().to_string(), c.packets, c.bytes))
            .collect();
        let budgets = self
            .gateway
            .privacy()
            .map(|p| {
                let s = p.metrics().snapshot();
                vec![(
                    "current period".to_string(),
                    s.budget_epsilon_left,
                    s.budget_delta_left,
                )]
            })
            .unwrap_or_default();
        let egress_backlog = self
            .gateway
            .egress()
            .map(|e| {
                e.metrics()
                    .snapshot()
                    .into_iter()
                    .map(|(d, m)| (d, m.backlog_batches, m.backlog_bytes))
                    .collect()
            })
            .unwrap_or_default();
        Ok(StatusReport {
            verdicts,
            reasons,
            policy_hash: self.gateway.policy().map(|p| p.hash.clone()),
            budgets,
            egress_backlog,
        })
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.gateway.readiness()
    }

    fn record_kinds(&self) -> Vec<String> {
        self.gateway
            .policy()
            .map(|p| p.policy.kinds.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn ingest(&self) -> mpsc::Sender<PublishedRecord> {
        self.ingest.clone()
    }

    fn releases(&self) -> broadcast::Receiver<Arc<ReleasedOutput>> {
        self.releases.subscribe()
    }

    fn api_metrics(&self) -> Option<Arc<ApiMetrics>> {
        Some(self.metrics.clone())
    }

    fn flush(&self) -> futures::future::BoxFuture<'static, Result<(), BackendError>> {
        let plane = self.gateway.privacy().cloned();
        Box::pin(async move {
            let Some(plane) = plane else {
                return Err(BackendError::Unavailable(FlushError::Stopped.to_string()));
            };
            plane.flush().await.map_err(|e| match e {
                // A full disk is an exhausted resource too (the gRPC spec names it).
                FlushError::SpoolFull { .. } | FlushError::NoSpace { .. } => {
                    BackendError::Exhausted {
                        retry_after: e.retry_after(),
                        message: e.to_string(),
                    }
                }
                e => BackendError::Unavailable(e.to_string()),
            })
        })
    }
}
