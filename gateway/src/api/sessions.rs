//! `mecgw.v1.SessionsService`: PDU sessions in the fast path, operator only, until PFCP
//! arrives. A change is validated against the whole tables (unique ids, TEIDs and UE
//! addresses; the N3 family of the gNB) and installed before the call answers.

use std::{net::Ipv4Addr, str::FromStr, sync::Arc};

use tonic::{Request, Response, Status};

use super::{
    ApiBackend, Shared,
    proto::{
        self, CreateSessionRequest, CreateSessionResponse, DeleteSessionRequest,
        DeleteSessionResponse, ListSessionsRequest, ListSessionsResponse,
        sessions_service_server::SessionsService,
    },
};
use crate::datapath::tables::{Imsi, IpPrefix, Qfi, Session, Teid};

/// Sessions in a page when the request does not say.
const DEFAULT_PAGE: usize = 1000;
/// Most sessions in a page (about 100 bytes each: well under the message limit).
const MAX_PAGE: usize = 10_000;

/// The Sessions service.
pub struct Sessions<B>(pub(crate) Arc<Shared<B>>);

/// A session as the API shows it.
pub fn to_proto(s: &Session) -> proto::Session {
    proto::Session {
        id: s.id,
        uplink_teid: s.uplink_teid.0,
        downlink_teid: s.downlink_teid.0,
        ue_ipv4: s.ue_ipv4.map(|a| a.to_string()).unwrap_or_default(),
        ue_ipv6: s.ue_ipv6.map(|p| p.to_string()).unwrap_or_default(),
        gnb: s.gnb.to_string(),
        qfi: u32::from(s.qfi.get()),
        imsi: s
            .imsi
            .as_ref()
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// The session `p` describes, or every problem with it, each naming its field.
pub fn from_proto(p: &proto::Session) -> Result<Session, Status> {
    let mut errors = Vec::new();
    let ue_ipv4 = match p.ue_ipv4.as_str() {
        "" => None,
        s => Ipv4Addr::from_str(s)
            .map_err(|_| errors.push(format!("session.ue_ipv4: {s:?} is not an IPv4 address")))
            .ok(),
    };
    let ue_ipv6 = match p.ue_ipv6.as_str() {
        "" => None,
        s => match IpPrefix::from_str(s) {
            Ok(prefix) if prefix.is_ipv6() => Some(prefix),
            Ok(_) => {
                errors.push(format!("session.ue_ipv6: {s:?} is not an IPv6 prefix"));
                None
            }
            Err(e) => {
                errors.push(format!("session.ue_ipv6: {e}"));
                None
            }
        },
    };
    if ue_ipv4.is_none() && ue_ipv6.is_none() && errors.is_empty() {
        errors.push("session.ue_ipv4, session.ue_ipv6: give at least one".to_string());
    }
    let gnb = p
        .gnb
        .parse()
        .map_err(|_| {
            errors.push(format!(
                "session.gnb: {:?} is not an IP address (the gNB's N3 address is required)",
                p.gnb
            ))
        })
        .ok();
    let imsi = match p.imsi.as_str() {
        "" => None,
        s => Imsi::from_str(s)
            .map_err(|e| errors.push(format!("session.imsi: {e}")))
            .ok(),
    };
    let qfi = u8::try_from(p.qfi).ok().and_then(Qfi::new);
    if qfi.is_none() {
        errors.push(format!(
            "session.qfi: {} is out of range: a QFI is 0-63",
            p.qfi
        ));
    }
    match (gnb, qfi) {
        (Some(gnb), Some(qfi)) if errors.is_empty() => Ok(Session {
            id: p.id,
            uplink_teid: Teid(p.uplink_teid),
            downlink_teid: Teid(p.downlink_teid),
            ue_ipv4,
            ue_ipv6,
            gnb,
            qfi,
            imsi,
        }),
        _ => Err(super::errors::invalid_argument(&errors)),
    }
}

#[tonic::async_trait]
impl<B: ApiBackend> SessionsService for Sessions<B> {
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("CreateSession")?;
        let p = request
            .into_inner()
            .session
            .ok_or_else(|| Status::invalid_argument("session: required"))?;
        let session = from_proto(&p)?;
        let shown = self
            .0
            .edit_tables("session", |owned, tables| {
                if tables.sessions.iter().any(|s| s.id == session.id) {
                    let owner = if owned.owns_session(session.id) {
                        "created through this API"
                    } else {
                        "defined in the tables file"
                    };
                    return Err(Status::already_exists(format!(
                        "session.id: session {} exists ({owner})",
                        session.id
                    )));
                }
                let mut next = owned.clone();
                next.sessions.push(session.clone());
                Ok((next, to_proto(&session)))
            })
            .await?;
        Ok(Response::new(CreateSessionResponse {
            session: Some(shown),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<DeleteSessionRequest>,
    ) -> Result<Response<DeleteSessionResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("DeleteSession")?;
        let id = request.get_ref().id;
        self.0
            .edit_tables("id", |owned, tables| {
                if let Some(i) = owned.sessions.iter().position(|s| s.id == id) {
                    let mut next = owned.clone();
                    next.sessions.remove(i);
                    return Ok((next, ()));
                }
                if tables.sessions.iter().any(|s| s.id == id) {
                    return Err(Status::failed_precondition(format!(
                        "id: session {id} is defined in the tables file, which owns it: remove \
                         it there and reload (SIGHUP)"
                    )));
                }
                Err(Status::not_found(format!("there is no session {id}")))
            })
            .await?;
        Ok(Response::new(DeleteSessionResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        caller.require_operator("ListSessions")?;
        let req = request.into_inner();
        let size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is more than {MAX_PAGE}"
                )));
            }
        };
        let after: Option<u32> = match req.page_token.as_str() {
            "" => None,
            t => Some(t.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token: {t:?} is not a token this service gave out"
                ))
            })?),
        };
        let tables = self.0.backend.tables();
        let mut page: Vec<&Session> = tables
            .sessions
            .iter()
            .filter(|s| after.is_none_or(|a| s.id > a))
            .collect();
        page.sort_unstable_by_key(|s| s.id);
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListSessionsResponse {
            sessions: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session(imsi: &str) -> proto::Session {
        proto::Session {
            id: 7,
            uplink_teid: 0x100,
            downlink_teid: 0x200,
            ue_ipv4: "10.45.0.7".into(),
            ue_ipv6: String::new(),
            gnb: "198.18.0.1".into(),
            qfi: 9,
            imsi: imsi.into(),
        }
    }

    #[test]
    fn the_imsi_round_trips_and_a_bad_one_is_named() {
        let s = from_proto(&session("001010000000007")).unwrap();
        assert_eq!(s.imsi.as_ref().map(Imsi::as_str), Some("001010000000007"));
        assert_eq!(to_proto(&s), session("001010000000007"));
        assert!(from_proto(&session("")).unwrap().imsi.is_none());
        let e = from_proto(&session("00101-7")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("session.imsi: "), "{}", e.message());
    }
}
