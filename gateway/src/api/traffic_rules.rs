//! `mecgw.v1.TrafficRulesService`: the fast path's traffic rules.
//!
//! Apps list, read and change the state of the rules they own; the operator also creates,
//! replaces and deletes. A rule's etag is a digest of its contents, so any change to it,
//! through this API or a SIGHUP reload, makes an older etag stale (FAILED_PRECONDITION).
//! Every change is validated against the whole tables and installed in the fast path before
//! the call answers; an invalid rule gets INVALID_ARGUMENT naming the field.

use std::{str::FromStr, sync::Arc};

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{
    ApiBackend, Shared,
    proto::{
        self, CreateTrafficRuleRequest, CreateTrafficRuleResponse, DeleteTrafficRuleRequest,
        DeleteTrafficRuleResponse, GetTrafficRuleRequest, GetTrafficRuleResponse,
        ListTrafficRulesRequest, ListTrafficRulesResponse, ReplaceTrafficRuleRequest,
        ReplaceTrafficRuleResponse, TrafficRuleAction, TrafficRuleState,
        UpdateTrafficRuleStateRequest, UpdateTrafficRuleStateResponse,
        traffic_rules_service_server::TrafficRulesService,
    },
};
use mecgw_ebpf::{MAX_PORT_RANGES, MAX_SRC_PREFIXES};

use crate::datapath::tables::{
    IpPrefix, PortRange, Protocol, Qfi, RuleAction, RuleState, Tables, Teid, TrafficRule,
    overlay::Overlay,
};

/// The TrafficRules service.
pub struct TrafficRules<B>(pub(crate) Arc<Shared<B>>);

/// A rule as the API shows it, with its etag.
pub fn to_proto(rule: &TrafficRule) -> proto::TrafficRule {
    let mut p = proto::TrafficRule {
        id: rule.id,
        priority: u32::from(rule.priority),
        state: match rule.state {
            RuleState::Active => TrafficRuleState::Active,
            RuleState::Inactive => TrafficRuleState::Inactive,
        } as i32,
        action: match rule.action {
            RuleAction::Local => TrafficRuleAction::Local,
            RuleAction::Passthrough => TrafficRuleAction::Passthrough,
            RuleAction::Drop => TrafficRuleAction::Drop,
        } as i32,
        destination_prefixes: rule.dst.iter().map(ToString::to_string).collect(),
        source_prefixes: rule.src.iter().map(ToString::to_string).collect(),
        protocols: rule.protocols.iter().map(|p| u32::from(p.0)).collect(),
        destination_ports: rule
            .dst_ports
            .iter()
            .map(|r| proto::PortRange {
                low: u32::from(r.lo),
                high: u32::from(r.hi),
            })
            .collect(),
        teid: rule.teid.map(|t| t.0),
        qfi: rule.qfi.map(|q| u32::from(q.get())),
        etag: String::new(),
    };
    p.etag = etag(&p);
    p
}

/// The etag of a rule: the first 64 bits of SHA-256 over its protobuf encoding (without the
/// etag), in hex. prost encodes fields in field-number order, so equal rules give equal tags.
fn etag(rule: &proto::TrafficRule) -> String {
    let mut bytes = Vec::with_capacity(rule.encoded_len());
    let mut bare = rule.clone();
    bare.etag.clear();
    // Encoding into a Vec grows it as needed; it cannot run out of room.
    let _ = bare.encode(&mut bytes);
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The rule `p` describes, or every problem with it, each naming its field under `field`.
pub fn from_proto(p: &proto::TrafficRule, field: &str) -> Result<TrafficRule, Status> {
    let mut errors = Vec::new();
    let priority = u8::try_from(p.priority).unwrap_or_else(|_| {
        errors.push(format!(
            "{field}.priority: {} is out of range: 0-255 (0 highest)",
            p.priority
        ));
        0
    });
    let state = match TrafficRuleState::try_from(p.state) {
        Ok(TrafficRuleState::Active) => RuleState::Active,
        Ok(TrafficRuleState::Inactive) => RuleState::Inactive,
        _ => {
            errors.push(format!(
                "{field}.state: {} is not TRAFFIC_RULE_STATE_ACTIVE or TRAFFIC_RULE_STATE_INACTIVE",
                p.state
            ));
            RuleState::Active
        }
    };
    let action = match TrafficRuleAction::try_from(p.action) {
        Ok(TrafficRuleAction::Local) => RuleAction::Local,
        Ok(TrafficRuleAction::Passthrough) => RuleAction::Passthrough,
        Ok(TrafficRuleAction::Drop) => RuleAction::Drop,
        _ => {
            errors.push(format!(
                "{field}.action: {} is not TRAFFIC_RULE_ACTION_LOCAL, _PASSTHROUGH or _DROP",
                p.action
            ));
            RuleAction::Drop
        }
    };
    let mut prefixes = |name: &str, list: &[String]| -> Vec<IpPrefix> {
        if list.len() > MAX_PREFIXES {
            errors.push(format!(
                "{field}.{name}: {} prefixes, at most {MAX_PREFIXES}",
                list.len()
            ));
            return Vec::new();
        }
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                IpPrefix::from_str(s)
                    .map_err(|e| errors.push(format!("{field}.{name}[{i}]: {e}")))
                    .ok()
            })
            .collect()
    };
    let dst = prefixes("destination_prefixes", &p.destination_prefixes);
    let src = prefixes("source_prefixes", &p.source_prefixes);
    let v6 = src.iter().filter(|p| p.is_ipv6()).count();
    let v4 = src.len() - v6;
    if v4 > MAX_SRC_PREFIXES || v6 > MAX_SRC_PREFIXES {
        errors.push(format!(
            "{field}.source_prefixes: {v4} IPv4 and {v6} IPv6 prefixes, at most \
             {MAX_SRC_PREFIXES} per family"
        ));
    }
    if p.destination_ports.len() > MAX_PORT_RANGES {
        errors.push(format!(
            "{field}.destination_ports: {} ranges, at most {MAX_PORT_RANGES}",
            p.destination_ports.len()
        ));
    }
    let protocols = p
        .protocols
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| match u8::try_from(n) {
            Ok(n) => Some(Protocol(n)),
            Err(_) => {
                errors.push(format!(
                    "{field}.protocols[{i}]: {n} is not an IP protocol number (0-255)"
                ));
                None
            }
        })
        .collect();
    let dst_ports = p
        .destination_ports
        .iter()
        .enumerate()
        .filter_map(
            |(i, r)| match (u16::try_from(r.low), u16::try_from(r.high)) {
                (Ok(lo), Ok(hi)) if lo <= hi => Some(PortRange { lo, hi }),
                (Ok(lo), Ok(hi)) => {
                    errors.push(format!(
                        "{field}.destination_ports[{i}]: the range is empty: low {lo} > high {hi}"
                    ));
                    None
                }
                _ => {
                    errors.push(format!(
                        "{field}.destination_ports[{i}]: {}-{} is out of range: ports are 0-65535",
                        r.low, r.high
                    ));
                    None
                }
            },
        )
        .collect();
    let qfi = match p.qfi {
        None => None,
        Some(q) => match u8::try_from(q).ok().and_then(Qfi::new) {
            Some(q) => Some(q),
            None => {
                errors.push(format!("{field}.qfi: {q} is out of range: a QFI is 0-63"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(super::errors::invalid_argument(&errors));
    }
    Ok(TrafficRule {
        id: p.id,
        priority,
        state,
        action,
        dst,
        src,
        protocols,
        dst_ports,
        teid: p.teid.map(Teid),
        qfi,
    })
}

/// Most prefixes in one filter list (the fast path's own limits are checked on the tables).
const MAX_PREFIXES: usize = 64;

/// Who owns rule `id`, for messages.
fn owner_of(owned: &Overlay, id: u32) -> &'static str {
    if owned.owns_rule(id) {
        "created through this API"
    } else {
        "defined in the tables file"
    }
}

/// The index of rule `id` among the API's own rules; FAILED_PRECONDITION for a rule of the
/// tables file, which only the file (and a reload) changes.
fn owned_index(owned: &Overlay, id: u32) -> Result<usize, Status> {
    owned.rules.iter().position(|r| r.id == id).ok_or_else(|| {
        Status::failed_precondition(format!(
            "id: traffic rule {id} is defined in the tables file, which owns it: change it \
             there and reload (SIGHUP); through this API only its state can be switched"
        ))
    })
}

fn find(tables: &Tables, id: u32) -> Result<(usize, &TrafficRule), Status> {
    tables
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.id == id)
        .ok_or_else(|| Status::not_found(format!("there is no traffic rule {id}")))
}

fn require_etag(etag: &str, current: &TrafficRule, id: u32) -> Result<(), Status> {
    if etag.is_empty() {
        return Err(Status::invalid_argument(
            "etag: required; read the rule first (GetTrafficRule) and send its etag",
        ));
    }
    let now = to_proto(current).etag;
    if etag != now {
        return Err(Status::failed_precondition(format!(
            "etag: {etag:?} is stale: traffic rule {id} has changed since (now {now:?}); read it again"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl<B: ApiBackend> TrafficRulesService for TrafficRules<B> {
    async fn list_traffic_rules(
        &self,
        request: Request<ListTrafficRulesRequest>,
    ) -> Result<Response<ListTrafficRulesResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let tables = self.0.backend.tables();
        let mut rules: Vec<proto::TrafficRule> = tables
            .rules
            .iter()
            .filter(|r| caller.owns_rule(r.id))
            .map(to_proto)
            .collect();
        rules.sort_by_key(|r| r.id);
        Ok(Response::new(ListTrafficRulesResponse { rules }))
    }

    async fn get_traffic_rule(
        &self,
        request: Request<GetTrafficRuleRequest>,
    ) -> Result<Response<GetTrafficRuleResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let id = request.get_ref().id;
        caller.require_rule(id)?;
        let tables = self.0.backend.tables();
        let (_, rule) = find(&tables, id)?;
        Ok(Response::new(GetTrafficRuleResponse {
            rule: Some(to_proto(rule)),
        }))
    }

    async fn update_traffic_rule_state(
        &self,
        request: Request<UpdateTrafficRuleStateRequest>,
    ) -> Result<Response<UpdateTrafficRuleStateResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let req = request.into_inner();
        caller.require_rule(req.id)?;
        let state = match TrafficRuleState::try_from(req.state) {
            Ok(TrafficRuleState::Active) => RuleState::Active,
            Ok(TrafficRuleState::Inactive) => RuleState::Inactive,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "state: {} is not TRAFFIC_RULE_STATE_ACTIVE or TRAFFIC_RULE_STATE_INACTIVE",
                    req.state
                )));
            }
        };
        let rule = self
            .0
            .edit_tables("state", |owned, tables| {
                let (_, current) = find(tables, req.id)?;
                require_etag(&req.etag, current, req.id)?;
                let mut next = owned.clone();
                // The API's own rule changes; a rule of the tables file keeps its definition
                // there and gets the state set here on top (it survives reloads).
                match next.rules.iter_mut().find(|r| r.id == req.id) {
                    Some(r) => r.state = state,
                    None => {
                        next.rule_states.insert(req.id, state);
                    }
                }
                let mut shown = current.clone();
                shown.state = state;
                Ok((next, to_proto(&shown)))
            })
            .await?;
        Ok(Response::new(UpdateTrafficRuleStateResponse {
            rule: Some(rule),
        }))
    }

    async fn create_traffic_rule(
        &self,
        request: Request<CreateTrafficRuleRequest>,
    ) -> Result<Response<CreateTrafficRuleResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("CreateTrafficRule")?;
        let p = request
            .into_inner()
            .rule
            .ok_or_else(|| Status::invalid_argument("rule: required"))?;
        let rule = from_proto(&p, "rule")?;
        let shown = self
            .0
            .edit_tables("rule", |owned, tables| {
                if tables.rules.iter().any(|r| r.id == rule.id) {
                    return Err(Status::already_exists(format!(
                        "rule.id: traffic rule {} exists ({}); replace it instead",
                        rule.id,
                        owner_of(owned, rule.id)
                    )));
                }
                let mut next = owned.clone();
                next.rules.push(rule.clone());
                Ok((next, to_proto(&rule)))
            })
            .await?;
        Ok(Response::new(CreateTrafficRuleResponse {
            rule: Some(shown),
        }))
    }

    async fn replace_traffic_rule(
        &self,
        request: Request<ReplaceTrafficRuleRequest>,
    ) -> Result<Response<ReplaceTrafficRuleResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("ReplaceTrafficRule")?;
        let req = request.into_inner();
        let p = req
            .rule
            .ok_or_else(|| Status::invalid_argument("rule: required"))?;
        let rule = from_proto(&p, "rule")?;
        let shown = self
            .0
            .edit_tables("rule", |owned, tables| {
                let (_, current) = find(tables, rule.id)?;
                require_etag(&req.etag, current, rule.id)?;
                let i = owned_index(owned, rule.id)?;
                let mut next = owned.clone();
                next.rules[i] = rule.clone();
                Ok((next, to_proto(&rule)))
            })
            .await?;
        Ok(Response::new(ReplaceTrafficRuleResponse {
            rule: Some(shown),
        }))
    }

    async fn delete_traffic_rule(
        &self,
        request: Request<DeleteTrafficRuleRequest>,
    ) -> Result<Response<DeleteTrafficRuleResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("DeleteTrafficRule")?;
        let req = request.into_inner();
        self.0
            .edit_tables("id", |owned, tables| {
                let (_, current) = find(tables, req.id)?;
                require_etag(&req.etag, current, req.id)?;
                let i = owned_index(owned, req.id)?;
                let mut next = owned.clone();
                next.rules.remove(i);
                Ok((next, ()))
            })
            .await?;
        Ok(Response::new(DeleteTrafficRuleResponse {}))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule() -> proto::TrafficRule {
        proto::TrafficRule {
            id: 7,
            priority: 3,
            state: TrafficRuleState::Active as i32,
            action: TrafficRuleAction::Drop as i32,
            destination_prefixes: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            source_prefixes: vec![],
            protocols: vec![17],
            destination_ports: vec![proto::PortRange {
                low: 8000,
                high: 8100,
            }],
            teid: Some(0x1001),
            qfi: Some(9),
            etag: String::new(),
        }
    }

    #[test]
    fn round_trip_keeps_every_field_and_etag_follows_contents() {
        let p = rule();
        let model = from_proto(&p, "rule").unwrap();
        let back = to_proto(&model);
        assert_eq!(
            proto::TrafficRule {
                etag: String::new(),
                ..back.clone()
            },
            p
        );
        assert_eq!(back.etag.len(), 16);
        let mut other = model.clone();
        other.priority = 4;
        assert_ne!(to_proto(&other).etag, back.etag);
        assert_eq!(to_proto(&model).etag, back.etag);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut p = rule();
        p.priority = 256;
        p.state = 0;
        p.action = 9;
        p.destination_prefixes[1] = "10.0.0.1/8".into();
        p.protocols.push(300);
        p.destination_ports[0].low = 9000;
        p.qfi = Some(64);
        let e = from_proto(&p, "rule").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let m = e.message();
        for want in [
            "rule.priority: 256",
            "rule.state: 0",
            "rule.action: 9",
            "rule.destination_prefixes[1]: \"10.0.0.1/8\" has host bits set",
            "rule.protocols[1]: 300",
            "rule.destination_ports[0]: the range is empty",
            "rule.qfi: 64",
        ] {
            assert!(m.contains(want), "missing {want:?} in {m}");
        }
    }
}
