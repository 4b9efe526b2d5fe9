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
    api::{ApiBackend, ApiMetrics, PublishedRecord, ReleasedOutput, ReplaceError, StatusReport},
    datapath::{CompiledTables, Tables},
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

    fn replace_tables(
        &self,
        base: &Arc<CompiledTables>,
        next: Tables,
    ) -> Result<Arc<CompiledTables>, ReplaceError> {
        // Compare and install under one lock: a SIGHUP reload in between is never lost.
        match self.gateway.replace_tables_if(Some(base), next) {
            Ok(installed) => Ok(installed),
            Err(TablesChangeError::Conflict) => Err(ReplaceError::Conflict),
            Err(TablesChangeError::Invalid(problems)) => Err(ReplaceError::Invalid(problems)),
            Err(e) => Err(ReplaceError::Install(e.to_string())),
        }
    }

    fn status(&self) -> Result<StatusReport, String> {
        let fp = self.gateway.fast_path();
        let verdicts = fp
            .verdict_counters()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(v, c)| (v.name().to_string(), c.packets, c.bytes))
            .collect();
        let reasons = fp
            .reason_counters()
            .map_err(|e| e.to_string())?
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

    fn flush(&self) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let plane = self.gateway.privacy().cloned();
        Box::pin(async move {
            match plane {
                Some(p) => p.flush().await,
                None => Err("the policy engine is not running".into()),
            }
        })
    }
}
