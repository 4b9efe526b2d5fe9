//! What each `mecgw ctl` command shows: one serialisable view per command, built from the
//! API's messages, rendered either as one JSON document (`--json`, for scripts: the field
//! names are a contract, add fields but never rename them) or as tables for people.
//!
//! Shows only what the API answers. What an operator might expect and the API does not
//! expose (the server's version, egress sent/refused counts) is said to be missing, never
//! made up.

use serde::Serialize;

use super::table::{Align, Table};
use mecgw::api::proto::{
    EdgeService, EdgeServiceState, GetStatusResponse, Session, TrafficRule, TrafficRuleAction,
    TrafficRuleState,
};

/// What `egress` cannot show: the API exposes only the backlog.
pub const EGRESS_NOT_EXPOSED: &[&str] = &["sent", "refused"];

/// A command's result, ready to print.
pub trait View: Serialize {
    /// The human form: tables and `key  value` lines, each line ending in `\n`.
    fn human(&self) -> String;
}

/// `ENUM_PREFIX_ACTIVE` → `ACTIVE`; a value this build does not know → `UNKNOWN(7)`.
fn enum_name(name: Option<&str>, prefix: &str, raw: i32) -> String {
    match name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_string(),
        None => format!("UNKNOWN({raw})"),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn list_or_any<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "any".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Packets and bytes under one name.
#[derive(Debug, Serialize)]
pub struct CounterView {
    /// Verdict or reason name.
    pub name: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Budget left in one scope.
#[derive(Debug, Serialize)]
pub struct BudgetView {
    /// What the budget is for (a release or period).
    pub scope: String,
    /// Epsilon left.
    pub epsilon_left: f64,
    /// Delta left.
    pub delta_left: f64,
}

/// What waits to leave the site for one destination.
#[derive(Debug, Serialize)]
pub struct BacklogView {
    /// The destination name.
    pub destination: String,
    /// Batches waiting.
    pub backlog_batches: u64,
    /// Bytes waiting.
    pub backlog_bytes: u64,
}

/// `status`: health, tables, policy, counters, budget and egress backlog.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// `true` while grpc.health says SERVING (programs attached, policy loaded, not
    /// draining); `null` if the health service did not answer.
    pub ready: Option<bool>,
    /// The health status as the server named it (`SERVING`, `NOT_SERVING`, ...), or `null`.
    pub health: Option<String>,
    /// This `mecgw ctl`'s version. The API does not expose the server's.
    pub ctl_version: &'static str,
    /// Sessions installed.
    pub sessions: u32,
    /// Traffic rules installed.
    pub rules: u32,
    /// Hash of the policy in force; `null` if none is loaded.
    pub policy_hash: Option<String>,
    /// Fast-path packets by verdict.
    pub verdicts: Vec<CounterView>,
    /// Fast-path packets by reason.
    pub reasons: Vec<CounterView>,
    /// Budget left per scope.
    pub budgets: Vec<BudgetView>,
    /// Egress backlog per destination.
    pub egress_backlog: Vec<BacklogView>,
}

fn counters(list: &[mecgw::api::proto::NamedCounter]) -> Vec<CounterView> {
    list.iter()
        .map(|c| CounterView {
            name: c.name.clone(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect()
}

fn budgets(status: &GetStatusResponse) -> Vec<BudgetView> {
    status
        .budgets
        .iter()
        .map(|b| BudgetView {
            scope: b.scope.clone(),
            epsilon_left: b.epsilon,
            delta_left: b.delta,
        })
        .collect()
}

fn backlog(status: &GetStatusResponse) -> Vec<BacklogView> {
    status
        .egress_backlog
        .iter()
        .map(|b| BacklogView {
            destination: b.destination.clone(),
            backlog_batches: b.batches,
            backlog_bytes: b.bytes,
        })
        .collect()
}

impl StatusView {
    /// The view of a GetStatus answer and the health status (`None`: no answer).
    pub fn new(status: &GetStatusResponse, health: Option<String>) -> StatusView {
        StatusView {
            ready: health.as_deref().map(|h| h == "SERVING"),
            health,
            ctl_version: env!("CARGO_PKG_VERSION"),
            sessions: status.sessions,
            rules: status.rules,
            policy_hash: Some(status.policy_hash.clone()).filter(|h| !h.is_empty()),
            verdicts: counters(&status.verdicts),
            reasons: counters(&status.reasons),
            budgets: budgets(status),
            egress_backlog: backlog(status),
        }
    }
}

fn counter_table(title: &'static str, list: &[CounterView]) -> String {
    let mut t = Table::new(&[
        (title, Align::Left),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for c in list {
        t.row(vec![
            c.name.clone(),
            c.packets.to_string(),
            c.bytes.to_string(),
        ]);
    }
    t.render()
}

impl View for StatusView {
    fn human(&self) -> String {
        let ready = match (self.ready, &self.health) {
            (Some(true), _) => "yes".to_string(),
            (Some(false), Some(h)) => format!("no ({h})"),
            _ => "unknown (grpc.health did not answer)".to_string(),
        };
        let mut t = Table::new(&[("", Align::Left), ("", Align::Left)]);
        for (k, v) in [
            ("ready", ready),
            ("sessions", self.sessions.to_string()),
            ("traffic rules", self.rules.to_string()),
            (
                "policy",
                self.policy_hash
                    .clone()
                    .unwrap_or_else(|| "none loaded".into()),
            ),
            ("ctl version", self.ctl_version.to_string()),
            ("server version", "not exposed by the API".to_string()),
        ] {
            t.row(vec![k.to_string(), v]);
        }
        // The header of a key/value block is blank: drop its (empty) first line.
        let block = t.render();
        let mut out = block.lines().skip(1).fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        });
        out.push('\n');
        out.push_str(&counter_table("VERDICT", &self.verdicts));
        out.push('\n');
        out.push_str(&counter_table("REASON", &self.reasons));
        out.push('\n');
        out.push_str(&budget_table(&self.budgets));
        out.push('\n');
        out.push_str(&backlog_table(&self.egress_backlog));
        out
    }
}

/// `budget`: the privacy budget left per scope.
#[derive(Debug, Serialize)]
pub struct BudgetsView {
    /// Budget left per scope, as GetStatus reports it.
    pub budgets: Vec<BudgetView>,
}

impl BudgetsView {
    /// The view of a GetStatus answer.
    pub fn new(status: &GetStatusResponse) -> BudgetsView {
        BudgetsView {
            budgets: budgets(status),
        }
    }
}

fn budget_table(list: &[BudgetView]) -> String {
    if list.is_empty() {
        return "no privacy budget reported (no policy with a budget in force)\n".into();
    }
    let mut t = Table::new(&[
        ("SCOPE", Align::Left),
        ("EPSILON LEFT", Align::Right),
        ("DELTA LEFT", Align::Right),
    ]);
    for b in list {
        t.row(vec![
            b.scope.clone(),
            b.epsilon_left.to_string(),
            b.delta_left.to_string(),
        ]);
    }
    t.render()
}

impl View for BudgetsView {
    fn human(&self) -> String {
        budget_table(&self.budgets)
    }
}

/// `egress`: per-destination backlog; what the API does not expose is listed as such.
#[derive(Debug, Serialize)]
pub struct EgressView {
    /// Backlog per destination, as GetStatus reports it.
    pub destinations: Vec<BacklogView>,
    /// Per-destination figures the API does not expose (always `["sent", "refused"]` for
    /// now): `null` is not zero, so they are left out rather than reported.
    pub not_exposed: &'static [&'static str],
}

impl EgressView {
    /// The view of a GetStatus answer.
    pub fn new(status: &GetStatusResponse) -> EgressView {
        EgressView {
            destinations: backlog(status),
            not_exposed: EGRESS_NOT_EXPOSED,
        }
    }
}

fn backlog_table(list: &[BacklogView]) -> String {
    if list.is_empty() {
        return "no egress backlog reported\n".into();
    }
    let mut t = Table::new(&[
        ("DESTINATION", Align::Left),
        ("BACKLOG BATCHES", Align::Right),
        ("BACKLOG BYTES", Align::Right),
    ]);
    for b in list {
        t.row(vec![
            b.destination.clone(),
            b.backlog_batches.to_string(),
            b.backlog_bytes.to_string(),
        ]);
    }
    t.render()
}

impl View for EgressView {
    fn human(&self) -> String {
        let mut out = backlog_table(&self.destinations);
        out.push_str(&format!(
            "\n{} per destination: not exposed by the API (GetStatus reports the backlog only)\n",
            self.not_exposed.join(" and ")
        ));
        out
    }
}

/// An inclusive destination port range.
#[derive(Debug, Serialize)]
pub struct PortRangeView {
    /// Lowest port.
    pub low: u32,
    /// Highest port.
    pub high: u32,
}

/// A traffic rule.
#[derive(Debug, Serialize)]
pub struct RuleView {
    /// Rule id.
    pub id: u32,
    /// 0-255, 0 highest.
    pub priority: u32,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
    /// `LOCAL`, `PASSTHROUGH` or `DROP`.
    pub action: String,
    /// Destination prefixes; empty: any.
    pub destination_prefixes: Vec<String>,
    /// UE source prefixes; empty: any.
    pub source_prefixes: Vec<String>,
    /// IP protocol numbers; empty: any.
    pub protocols: Vec<u32>,
    /// Destination port ranges; empty: any.
    pub destination_ports: Vec<PortRangeView>,
    /// Only this uplink TEID, if set.
    pub teid: Option<u32>,
    /// Only this QFI, if set.
    pub qfi: Option<u32>,
    /// The rule's current etag.
    pub etag: String,
}

impl From<&TrafficRule> for RuleView {
    fn from(r: &TrafficRule) -> RuleView {
        RuleView {
            id: r.id,
            priority: r.priority,
            state: enum_name(
                TrafficRuleState::try_from(r.state)
                    .ok()
                    .map(|s| s.as_str_name()),
                "TRAFFIC_RULE_STATE_",
                r.state,
            ),
            action: enum_name(
                TrafficRuleAction::try_from(r.action)
                    .ok()
                    .map(|a| a.as_str_name()),
                "TRAFFIC_RULE_ACTION_",
                r.action,
            ),
            destination_prefixes: r.destination_prefixes.clone(),
            source_prefixes: r.source_prefixes.clone(),
            protocols: r.protocols.clone(),
            destination_ports: r
                .destination_ports
                .iter()
                .map(|p| PortRangeView {
                    low: p.low,
                    high: p.high,
                })
                .collect(),
            teid: r.teid,
            qfi: r.qfi,
            etag: r.etag.clone(),
        }
    }
}

/// `rules`: the rules the caller may see, by id.
#[derive(Debug, Serialize)]
pub struct RulesView {
    /// The rules.
    pub rules: Vec<RuleView>,
}

impl View for RulesView {
    fn human(&self) -> String {
        if self.rules.is_empty() {
            return "no traffic rules\n".into();
        }
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("PRIO", Align::Right),
            ("STATE", Align::Left),
            ("ACTION", Align::Left),
            ("DESTINATIONS", Align::Left),
            ("SOURCES", Align::Left),
            ("PROTOCOLS", Align::Left),
            ("PORTS", Align::Left),
            ("TEID", Align::Left),
            ("QFI", Align::Left),
        ]);
        for r in &self.rules {
            let ports: Vec<String> = r
                .destination_ports
                .iter()
                .map(|p| {
                    if p.low == p.high {
                        p.low.to_string()
                    } else {
                        format!("{}-{}", p.low, p.high)
                    }
                })
                .collect();
            t.row(vec![
                r.id.to_string(),
                r.priority.to_string(),
                r.state.clone(),
                r.action.clone(),
                list_or_any(&r.destination_prefixes),
                list_or_any(&r.source_prefixes),
                list_or_any(&r.protocols),
                list_or_any(&ports),
                r.teid.map_or_else(|| "any".into(), |t| format!("{t:#x}")),
                r.qfi.map_or_else(|| "any".into(), |q| q.to_string()),
            ]);
        }
        t.render()
    }
}

/// `rules get ID`: one rule.
#[derive(Debug, Serialize)]
pub struct OneRuleView {
    /// The rule.
    pub rule: RuleView,
}

impl View for OneRuleView {
    fn human(&self) -> String {
        let r = &self.rule;
        let ports: Vec<String> = r
            .destination_ports
            .iter()
            .map(|p| format!("{}-{}", p.low, p.high))
            .collect();
        let mut t = Table::new(&[("", Align::Left), ("", Align::Left)]);
        for (k, v) in [
            ("id", r.id.to_string()),
            ("priority", r.priority.to_string()),
            ("state", r.state.clone()),
            ("action", r.action.clone()),
            ("destinations", list_or_any(&r.destination_prefixes)),
            ("sources", list_or_any(&r.source_prefixes)),
            ("protocols", list_or_any(&r.protocols)),
            ("ports", list_or_any(&ports)),
            (
                "teid",
                r.teid.map_or_else(|| "any".into(), |t| format!("{t:#x}")),
            ),
            ("qfi", r.qfi.map_or_else(|| "any".into(), |q| q.to_string())),
            ("etag", r.etag.clone()),
        ] {
            t.row(vec![k.into(), v]);
        }
        t.render().lines().skip(1).fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
    }
}

/// A PDU session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// Session id.
    pub id: u32,
    /// Uplink TEID.
    pub uplink_teid: u32,
    /// Downlink TEID.
    pub downlink_teid: u32,
    /// The UE's IPv4 address, if any.
    pub ue_ipv4: Option<String>,
    /// The UE's IPv6 prefix, if any.
    pub ue_ipv6: Option<String>,
    /// The gNB's N3 address.
    pub gnb: String,
    /// QFI of downlink PDU Session Containers.
    pub qfi: u32,
    /// Whether the session has an IMSI. The IMSI itself is personal data and is not printed:
    /// the API gives it to the operator only as the privacy unit of the flow records.
    pub has_imsi: bool,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> SessionView {
        SessionView {
            id: s.id,
            uplink_teid: s.uplink_teid,
            downlink_teid: s.downlink_teid,
            ue_ipv4: Some(s.ue_ipv4.clone()).filter(|a| !a.is_empty()),
            ue_ipv6: Some(s.ue_ipv6.clone()).filter(|a| !a.is_empty()),
            gnb: s.gnb.clone(),
            qfi: s.qfi,
            has_imsi: !s.imsi.is_empty(),
        }
    }
}

/// `sessions`: every session, by id.
#[derive(Debug, Serialize)]
pub struct SessionsView {
    /// The sessions.
    pub sessions: Vec<SessionView>,
}

impl View for SessionsView {
    fn human(&self) -> String {
        if self.sessions.is_empty() {
            return "no sessions\n".into();
        }
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("UL TEID", Align::Left),
            ("DL TEID", Align::Left),
            ("UE IPV4", Align::Left),
            ("UE IPV6", Align::Left),
            ("GNB", Align::Left),
            ("QFI", Align::Right),
            ("IMSI", Align::Left),
        ]);
        for s in &self.sessions {
            t.row(vec![
                s.id.to_string(),
                format!("{:#x}", s.uplink_teid),
                format!("{:#x}", s.downlink_teid),
                or_dash(s.ue_ipv4.as_deref().unwrap_or("")),
                or_dash(s.ue_ipv6.as_deref().unwrap_or("")),
                s.gnb.clone(),
                s.qfi.to_string(),
                if s.has_imsi { "set" } else { "-" }.into(),
            ]);
        }
        t.render()
    }
}

/// A local edge service.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// Unique name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Where to reach it.
    pub endpoint: String,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
    /// The app that registered it.
    pub owner: String,
}

impl From<&EdgeService> for ServiceView {
    fn from(s: &EdgeService) -> ServiceView {
        ServiceView {
            name: s.name.clone(),
            version: s.version.clone(),
            endpoint: s.endpoint.clone(),
            state: enum_name(
                EdgeServiceState::try_from(s.state)
                    .ok()
                    .map(|v| v.as_str_name()),
                "EDGE_SERVICE_STATE_",
                s.state,
            ),
            owner: s.owner.clone(),
        }
    }
}

/// `services`: the registered edge services the caller may see, by name.
#[derive(Debug, Serialize)]
pub struct ServicesView {
    /// The services.
    pub services: Vec<ServiceView>,
}

impl View for ServicesView {
    fn human(&self) -> String {
        if self.services.is_empty() {
            return "no edge services registered\n".into();
        }
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("VERSION", Align::Left),
            ("STATE", Align::Left),
            ("OWNER", Align::Left),
            ("ENDPOINT", Align::Left),
        ]);
        for s in &self.services {
            t.row(vec![
                s.name.clone(),
                s.version.clone(),
                s.state.clone(),
                or_dash(&s.owner),
                s.endpoint.clone(),
            ]);
        }
        t.render()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mecgw::api::proto::{BudgetLeft, EgressBacklog, PortRange};

    fn rule() -> TrafficRule {
        TrafficRule {
            id: 10,
            priority: 5,
            state: TrafficRuleState::Active as i32,
            action: TrafficRuleAction::Local as i32,
            destination_prefixes: vec!["192.0.2.0/24".into()],
            source_prefixes: vec![],
            protocols: vec![17],
            destination_ports: vec![PortRange {
                low: 443,
                high: 443,
            }],
            teid: Some(0x100),
            qfi: None,
            etag: "e1".into(),
        }
    }

    #[test]
    fn rule_json_field_names_are_stable() {
        let v = serde_json::to_value(RulesView {
            rules: vec![RuleView::from(&rule())],
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"rules": [{
                "id": 10, "priority": 5, "state": "ACTIVE", "action": "LOCAL",
                "destination_prefixes": ["192.0.2.0/24"], "source_prefixes": [],
                "protocols": [17], "destination_ports": [{"low": 443, "high": 443}],
                "teid": 256, "qfi": null, "etag": "e1"
            }]})
        );
    }

    #[test]
    fn rules_table_shows_any_for_empty_filters() {
        let text = RulesView {
            rules: vec![RuleView::from(&rule())],
        }
        .human();
        assert_eq!(
            text,
            "ID  PRIO  STATE   ACTION  DESTINATIONS  SOURCES  PROTOCOLS  PORTS  TEID   QFI\n\
             10     5  ACTIVE  LOCAL   192.0.2.0/24  any      17         443    0x100  any\n"
        );
    }

    #[test]
    fn unknown_enum_values_are_shown_not_hidden() {
        let mut r = rule();
        r.action = 42;
        assert_eq!(RuleView::from(&r).action, "UNKNOWN(42)");
    }

    #[test]
    fn sessions_never_print_the_imsi() {
        let s = Session {
            id: 1,
            uplink_teid: 0x100,
            downlink_teid: 0x200,
            ue_ipv4: "10.45.0.1".into(),
            ue_ipv6: String::new(),
            gnb: "198.18.1.1".into(),
            qfi: 9,
            imsi: "001010123456789".into(),
        };
        let view = SessionsView {
            sessions: vec![SessionView::from(&s)],
        };
        let json = serde_json::to_string(&view).unwrap();
        let text = view.human();
        for out in [&json, &text] {
            assert!(!out.contains("001010123456789"), "{out}");
        }
        assert!(json.contains("\"has_imsi\":true"), "{json}");
    }

    #[test]
    fn egress_says_what_the_api_does_not_expose() {
        let status = GetStatusResponse {
            egress_backlog: vec![EgressBacklog {
                destination: "central".into(),
                batches: 3,
                bytes: 4096,
            }],
            budgets: vec![BudgetLeft {
                scope: "cell_load".into(),
                epsilon: 0.75,
                delta: 1e-6,
            }],
            ..GetStatusResponse::default()
        };
        let v = EgressView::new(&status);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({
                "destinations": [{"destination": "central", "backlog_batches": 3, "backlog_bytes": 4096}],
                "not_exposed": ["sent", "refused"]
            })
        );
        assert!(
            v.human()
                .contains("sent and refused per destination: not exposed")
        );
        let b = serde_json::to_value(BudgetsView::new(&status)).unwrap();
        assert_eq!(
            b,
            serde_json::json!({"budgets": [{"scope": "cell_load", "epsilon_left": 0.75, "delta_left": 1e-6}]})
        );
    }
}
