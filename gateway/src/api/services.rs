//! `mecgw.v1.EdgeServicesService`: the registry of local edge services.
//!
//! An app registers and deregisters the service names its configuration gives it, and
//! discovers and watches those plus the ones it may consume; the operator sees and changes
//! all. The registry lives in memory (apps register again after a restart) and is bounded.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, sync::Mutex};

use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::{Request, Response, Status};

use super::{
    ApiBackend, Shared,
    proto::{
        DeregisterServiceRequest, DeregisterServiceResponse, DiscoverServicesRequest,
        DiscoverServicesResponse, EdgeService, EdgeServiceState, RegisterServiceRequest,
        RegisterServiceResponse, ServiceChangeKind, WatchServicesRequest, WatchServicesResponse,
        edge_services_service_server::EdgeServicesService,
    },
};

/// Most services registered at once.
pub const MAX_SERVICES: usize = 1024;
/// Changes kept for watchers that fall behind.
const CHANGE_BACKLOG: usize = 1024;

/// Whether `name` is a valid service name: 1-63 of `a-z`, `0-9`, `-`, `.`.
pub fn valid_service_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a service name: 1-63 of a-z, 0-9, '-' and '.'"
        ))
    }
}

fn printable(field: &str, s: &str, max: usize) -> Result<(), String> {
    if (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1-{max} printable ASCII characters without spaces"
        ))
    }
}

/// A change, as broadcast to watchers.
#[derive(Debug, Clone)]
struct Change {
    kind: ServiceChangeKind,
    service: EdgeService,
}

/// The registered services and the stream of their changes.
pub(crate) struct Registry {
    services: Mutex<BTreeMap<String, EdgeService>>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            services: Mutex::new(BTreeMap::new()),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, EdgeService>>, Status> {
        self.services
            .lock()
            .map_err(|_| Status::internal("the service registry failed earlier"))
    }
}

/// The EdgeServices service.
pub struct EdgeServices<B>(pub(crate) Arc<Shared<B>>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchServicesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: ApiBackend> EdgeServicesService for EdgeServices<B> {
    async fn register_service(
        &self,
        request: Request<RegisterServiceRequest>,
    ) -> Result<Response<RegisterServiceResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let mut s = request
            .into_inner()
            .service
            .ok_or_else(|| Status::invalid_argument("service: required"))?;
        let mut errors = Vec::new();
        if let Err(e) = valid_service_name(&s.name) {
            errors.push(format!("service.name: {e}"));
        }
        if let Err(e) = printable("service.version", &s.version, 64) {
            errors.push(e);
        }
        if let Err(e) = printable("service.endpoint", &s.endpoint, 256) {
            errors.push(e);
        }
        if !matches!(
            EdgeServiceState::try_from(s.state),
            Ok(EdgeServiceState::Active | EdgeServiceState::Inactive)
        ) {
            errors.push(format!(
                "service.state: {} is not EDGE_SERVICE_STATE_ACTIVE or EDGE_SERVICE_STATE_INACTIVE",
                s.state
            ));
        }
        if !errors.is_empty() {
            return Err(super::errors::invalid_argument(&errors));
        }
        if !caller.owns_service(&s.name) {
            return Err(Status::permission_denied(format!(
                "app {:?} does not own service {:?}",
                caller.name, s.name
            )));
        }
        s.owner = caller.name.to_string();
        let registry = &self.0.registry;
        let mut services = registry.lock()?;
        if !services.contains_key(&s.name) && services.len() >= MAX_SERVICES {
            return Err(Status::resource_exhausted(format!(
                "{MAX_SERVICES} services are registered already"
            )));
        }
        let kind = match services.insert(s.name.clone(), s.clone()) {
            Some(_) => ServiceChangeKind::Updated,
            None => ServiceChangeKind::Registered,
        };
        // Sent under the lock, so watchers see changes in registry order. No receivers is fine.
        let _ = registry.changes.send(Arc::new(Change {
            kind,
            service: s.clone(),
        }));
        drop(services);
        Ok(Response::new(RegisterServiceResponse { service: Some(s) }))
    }

    async fn deregister_service(
        &self,
        request: Request<DeregisterServiceRequest>,
    ) -> Result<Response<DeregisterServiceResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let name = request.into_inner().name;
        if !caller.owns_service(&name) {
            return Err(Status::permission_denied(format!(
                "app {:?} does not own service {name:?}",
                caller.name
            )));
        }
        let registry = &self.0.registry;
        let mut services = registry.lock()?;
        let service = services
            .remove(&name)
            .ok_or_else(|| Status::not_found(format!("service {name:?} is not registered")))?;
        let _ = registry.changes.send(Arc::new(Change {
            kind: ServiceChangeKind::Deregistered,
            service,
        }));
        Ok(Response::new(DeregisterServiceResponse {}))
    }

    async fn discover_services(
        &self,
        request: Request<DiscoverServicesRequest>,
    ) -> Result<Response<DiscoverServicesResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let name = request.into_inner().name;
        if !name.is_empty() && !caller.sees_service(&name) {
            return Err(Status::permission_denied(format!(
                "app {:?} may not discover service {name:?}",
                caller.name
            )));
        }
        let services = self.0.registry.lock()?;
        let found = services
            .values()
            .filter(|s| (name.is_empty() || s.name == name) && caller.sees_service(&s.name))
            .cloned()
            .collect();
        Ok(Response::new(DiscoverServicesResponse { services: found }))
    }

    type WatchServicesStream = WatchStream;

    async fn watch_services(
        &self,
        request: Request<WatchServicesRequest>,
    ) -> Result<Response<Self::WatchServicesStream>, Status> {
        let caller = self.0.authority.caller(&request)?;
        // Subscribe and snapshot under one lock: no change is missed or seen twice.
        let (snapshot, changes) = {
            let services = self.0.registry.lock()?;
            let rx = self.0.registry.changes.subscribe();
            let now: Vec<WatchServicesResponse> = services
                .values()
                .filter(|s| caller.sees_service(&s.name))
                .map(|s| WatchServicesResponse {
                    kind: ServiceChangeKind::Registered as i32,
                    service: Some(s.clone()),
                    missed: 0,
                })
                .collect();
            (now, rx)
        };
        let mut missed = 0u64;
        let later = BroadcastStream::new(changes).filter_map(move |c| {
            let out = match c {
                Ok(c) if caller.sees_service(&c.service.name) => {
                    let m = std::mem::take(&mut missed);
                    Some(Ok(WatchServicesResponse {
                        kind: c.kind as i32,
                        service: Some(c.service.clone()),
                        missed: m,
                    }))
                }
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    missed += n;
                    None
                }
            };
            std::future::ready(out)
        });
        let stream = futures::stream::iter(snapshot.into_iter().map(Ok))
            .chain(later)
            .take_until(self.0.drained());
        Ok(Response::new(Box::pin(stream)))
    }
}
