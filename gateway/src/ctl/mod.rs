//! `mecgw ctl`: the operator's client for the local gRPC APIs, over mTLS, so that operators
//! need neither grpcurl nor the protos.
//!
//! One direction of flow: options → [`connect`] (files checked, channel built) → one or two
//! read-only RPCs → a [`views`] view → tables or one JSON document on stdout. Failures go to
//! stderr and become the exit codes of [`exit`], which are a contract with scripts.
//!
//! This module only reads: it never changes rules, sessions or services, and it adds no RPC
//! to the server; what the API does not expose it says is missing. [`docs`] (completions and
//! man pages for the whole `mecgw` CLI) lives here because `ctl` is what made them worth
//! having.

pub mod connect;
pub mod docs;
pub mod exit;
pub mod table;
pub mod views;

use std::{io::Write as _, process::ExitCode};

use mecgw::api::proto::{
    DiscoverServicesRequest, GetStatusRequest, GetStatusResponse, GetTrafficRuleRequest,
    ListSessionsRequest, ListTrafficRulesRequest,
    edge_services_service_client::EdgeServicesServiceClient,
    sessions_service_client::SessionsServiceClient, status_service_client::StatusServiceClient,
    traffic_rules_service_client::TrafficRulesServiceClient,
};
use tonic::transport::Channel;

pub use exit::{CtlError, EXIT_CODES, EXIT_LOCAL};
use views::View;

/// `mecgw ctl`'s options and command.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    #[command(flatten)]
    pub connection: connect::Connection,
    /// Print one JSON document (stable field names) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What to show.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Readiness, sessions and rules installed, policy hash, fast-path counters, budget left
    /// and egress backlog (GetStatus and grpc.health; operator only).
    Status,
    /// The traffic rules the caller may see, by id (ListTrafficRules), or one of them.
    Rules {
        #[command(subcommand)]
        command: Option<RulesCommand>,
    },
    /// The PDU sessions, by id (ListSessions, every page; operator only).
    Sessions,
    /// The registered edge services the caller may see, by name (DiscoverServices).
    Services,
    /// The privacy budget left per scope (from GetStatus; operator only).
    Budget,
    /// What waits to leave the site, per destination (from GetStatus; operator only). The
    /// API exposes the backlog only, not what was sent or refused.
    Egress,
}

/// `ctl rules` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RulesCommand {
    /// One rule by id (GetTrafficRule); exit code 4 with NOT_FOUND if there is none.
    Get {
        /// The rule id.
        id: u32,
    },
}

/// Page size for ListSessions (the API's default).
const SESSIONS_PAGE: u32 = 1000;

/// Runs `mecgw ctl` and returns its documented exit code.
pub async fn run(args: CtlArgs) -> ExitCode {
    match execute(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mecgw ctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The exit code for a command line clap could not parse (after printing clap's message):
/// 0 for `--help`/`--version`, [`EXIT_LOCAL`] for a usage error under `mecgw ctl` (whose
/// exit code 2 means "cannot connect"), and clap's usual 2 elsewhere.
pub fn parse_failure(
    e: &clap::Error,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> ExitCode {
    let _ = e.print();
    if !e.use_stderr() {
        return ExitCode::SUCCESS;
    }
    // The first word that is not a flag is the subcommand: the only flag before it
    // (`--log-json`) takes no value.
    let under_ctl = args
        .into_iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .is_some_and(|a| a == "ctl");
    if under_ctl {
        ExitCode::from(EXIT_LOCAL)
    } else {
        ExitCode::from(2)
    }
}

async fn execute(args: &CtlArgs) -> Result<(), CtlError> {
    let connected = args.connection.connect().await?;
    let addr = connected.addr.as_str();
    let channel = connected.channel;
    match &args.command {
        CtlCommand::Status => {
            let status = get_status(addr, channel.clone()).await?;
            let health = health(channel).await;
            emit(args.json, &views::StatusView::new(&status, health))
        }
        CtlCommand::Budget => {
            let status = get_status(addr, channel).await?;
            emit(args.json, &views::BudgetsView::new(&status))
        }
        CtlCommand::Egress => {
            let status = get_status(addr, channel).await?;
            emit(args.json, &views::EgressView::new(&status))
        }
        CtlCommand::Rules { command: None } => {
            let rules = TrafficRulesServiceClient::new(channel)
                .list_traffic_rules(ListTrafficRulesRequest {})
                .await
                .map_err(|s| CtlError::from_status(addr, "ListTrafficRules", &s))?
                .into_inner()
                .rules;
            emit(
                args.json,
                &views::RulesView {
                    rules: rules.iter().map(views::RuleView::from).collect(),
                },
            )
        }
        CtlCommand::Rules {
            command: Some(RulesCommand::Get { id }),
        } => {
            let rule = TrafficRulesServiceClient::new(channel)
                .get_traffic_rule(GetTrafficRuleRequest { id: *id })
                .await
                .map_err(|s| CtlError::from_status(addr, "GetTrafficRule", &s))?
                .into_inner()
                .rule
                .ok_or_else(|| CtlError::Server {
                    rpc: "GetTrafficRule",
                    code: "OK".into(),
                    message: "the answer has no rule".into(),
                })?;
            emit(
                args.json,
                &views::OneRuleView {
                    rule: views::RuleView::from(&rule),
                },
            )
        }
        CtlCommand::Sessions => {
            let mut client = SessionsServiceClient::new(channel);
            let mut sessions = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_sessions(ListSessionsRequest {
                        page_size: SESSIONS_PAGE,
                        page_token: page_token.clone(),
                    })
                    .await
                    .map_err(|s| CtlError::from_status(addr, "ListSessions", &s))?
                    .into_inner();
                sessions.extend(page.sessions.iter().map(views::SessionView::from));
                // A server that hands back the same token would page forever.
                if page.next_page_token.is_empty() || page.next_page_token == page_token {
                    break;
                }
                page_token = page.next_page_token;
            }
            emit(args.json, &views::SessionsView { sessions })
        }
        CtlCommand::Services => {
            let services = EdgeServicesServiceClient::new(channel)
                .discover_services(DiscoverServicesRequest {
                    name: String::new(),
                })
                .await
                .map_err(|s| CtlError::from_status(addr, "DiscoverServices", &s))?
                .into_inner()
                .services;
            emit(
                args.json,
                &views::ServicesView {
                    services: services.iter().map(views::ServiceView::from).collect(),
                },
            )
        }
    }
}

async fn get_status(addr: &str, channel: Channel) -> Result<GetStatusResponse, CtlError> {
    Ok(StatusServiceClient::new(channel)
        .get_status(GetStatusRequest {})
        .await
        .map_err(|s| CtlError::from_status(addr, "GetStatus", &s))?
        .into_inner())
}

/// The overall grpc.health status (`SERVING`, `NOT_SERVING`, ...); `None` if it did not
/// answer, which `status` reports rather than fails on: GetStatus already answered.
async fn health(channel: Channel) -> Option<String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner();
    Some(match ServingStatus::try_from(answer.status) {
        Ok(s) => s.as_str_name().to_string(),
        Err(_) => format!("UNKNOWN({})", answer.status),
    })
}

/// Prints `view` on stdout: one JSON document, or its human form.
fn emit<V: View>(json: bool, view: &V) -> Result<(), CtlError> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(view)
            .map_err(|e| CtlError::Local(format!("encoding JSON: {e}")))?;
        s.push('\n');
        s
    } else {
        view.human()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CtlError::Local(format!("writing to stdout: {e}")))
}
