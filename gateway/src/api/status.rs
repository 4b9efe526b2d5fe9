//! `mecgw.v1.StatusService`: fast-path counters, sessions and rules installed, the policy
//! hash, the budget left and the egress backlog, for the operator.

use std::sync::Arc;

use tonic::{Request, Response, Status as GrpcStatus};

use super::{
    ApiBackend, Shared,
    proto::{
        BudgetLeft, EgressBacklog, GetStatusRequest, GetStatusResponse, NamedCounter,
        status_service_server::StatusService,
    },
};

/// The Status service.
pub struct Status<B>(pub(crate) Arc<Shared<B>>);

fn counters(list: Vec<(String, u64, u64)>) -> Vec<NamedCounter> {
    list.into_iter()
        .map(|(name, packets, bytes)| NamedCounter {
            name,
            packets,
            bytes,
        })
        .collect()
}

#[tonic::async_trait]
impl<B: ApiBackend> StatusService for Status<B> {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, GrpcStatus> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("GetStatus")?;
        let backend = self.0.backend.clone();
        // Reading per-CPU maps is a few system calls: keep them off the async workers.
        let report = tokio::task::spawn_blocking(move || backend.status())
            .await
            .map_err(|e| GrpcStatus::internal(format!("status task failed: {e}")))?
            .map_err(GrpcStatus::from)?;
        let tables = self.0.backend.tables();
        Ok(Response::new(GetStatusResponse {
            verdicts: counters(report.verdicts),
            reasons: counters(report.reasons),
            sessions: u32::try_from(tables.sessions.len()).unwrap_or(u32::MAX),
            rules: u32::try_from(tables.rules.len()).unwrap_or(u32::MAX),
            policy_hash: report.policy_hash.unwrap_or_default(),
            budgets: report
                .budgets
                .into_iter()
                .map(|(scope, epsilon, delta)| BudgetLeft {
                    scope,
                    epsilon,
                    delta,
                })
                .collect(),
            egress_backlog: report
                .egress_backlog
                .into_iter()
                .map(|(destination, batches, bytes)| EgressBacklog {
                    destination,
                    batches,
                    bytes,
                })
                .collect(),
        }))
    }
}
