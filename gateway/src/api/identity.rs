//! Who is calling and what it may do.
//!
//! TLS (rustls, in tonic) has already verified the client certificate against the configured
//! client CA before any handler runs; this module reads the verified leaf certificate's
//! subject alternative names (DNS names and URIs), finds the one configured app they name,
//! and answers the handlers' questions: is this the operator, does it own rule 10, may it see
//! service "maps". A certificate that names no app, or more than one, is refused with
//! PERMISSION_DENIED; so is every request for something the app does not own.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use tonic::{Request, Status};
use tracing::debug;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::config::{ApiConfig, Role};

/// The request header naming the app in insecure (plaintext) mode.
pub const INSECURE_APP_HEADER: &str = "mecgw-app";

/// Verified identities kept, by certificate, so a connection's certificate is parsed once.
const CACHE_ENTRIES: usize = 4096;

/// An authenticated caller: a configured app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The app's name in the configuration.
    pub name: Arc<str>,
    /// Its role.
    pub role: Role,
    rules: HashSet<u32>,
    services: HashSet<String>,
    discover: HashSet<String>,
    publish: HashSet<String>,
    releases: HashSet<String>,
}

impl Caller {
    /// Whether the caller is the operator.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// PERMISSION_DENIED unless the caller is the operator.
    pub fn require_operator(&self, method: &str) -> Result<(), Status> {
        if self.is_operator() {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "app {:?} has role \"app\"; {method} needs the operator role",
            self.name
        )))
    }

    /// Whether the caller may read rule `id` and change its state.
    pub fn owns_rule(&self, id: u32) -> bool {
        self.is_operator() || self.rules.contains(&id)
    }

    /// PERMISSION_DENIED unless the caller owns rule `id`. Said the same way whether or not
    /// the rule exists, so an app learns nothing about other apps' rules.
    pub fn require_rule(&self, id: u32) -> Result<(), Status> {
        if self.owns_rule(id) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "app {:?} does not own traffic rule {id}",
            self.name
        )))
    }

    /// Whether the caller may register and deregister service `name`.
    pub fn owns_service(&self, name: &str) -> bool {
        self.is_operator() || self.services.contains(name)
    }

    /// Whether the caller may discover and watch service `name`.
    pub fn sees_service(&self, name: &str) -> bool {
        self.owns_service(name) || self.discover.contains(name)
    }

    /// Whether the caller may publish records of `kind`.
    pub fn may_publish(&self, kind: &str) -> bool {
        self.is_operator() || self.publish.contains(kind)
    }

    /// Whether the caller may receive outputs of `release`.
    pub fn sees_release(&self, release: &str) -> bool {
        self.is_operator() || self.releases.contains(release)
    }
}

/// Maps verified certificates (or, in insecure mode, the app header) to callers.
pub struct Authority {
    by_san: HashMap<String, Arc<Caller>>,
    by_name: HashMap<String, Arc<Caller>>,
    insecure: bool,
    cache: RwLock<HashMap<Vec<u8>, Arc<Caller>>>,
}

impl Authority {
    /// The apps of `config`. Assumes [`ApiConfig::validate`] passed (an app without a role
    /// is treated as a plain app).
    pub fn new(config: &ApiConfig) -> Authority {
        let mut by_san = HashMap::new();
        let mut by_name = HashMap::new();
        for (name, app) in &config.apps {
            let set = |v: &Vec<String>| v.iter().cloned().collect::<HashSet<_>>();
            let caller = Arc::new(Caller {
                name: Arc::from(name.as_str()),
                role: app.role.unwrap_or(Role::App),
                rules: app.rules.iter().copied().collect(),
                services: set(&app.services),
                discover: set(&app.discover),
                publish: set(&app.publish),
                releases: set(&app.releases),
            });
            for san in ApiConfig::sans_of(name, app) {
                by_san.insert(san.to_string(), caller.clone());
            }
            by_name.insert(name.clone(), caller);
        }
        Authority {
            by_san,
            by_name,
            insecure: config.insecure,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The caller of `request`.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Caller>, Status> {
        if self.insecure {
            let name = request
                .metadata()
                .get(INSECURE_APP_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "insecure mode: name your app in the {INSECURE_APP_HEADER} header"
                    ))
                })?;
            return self.by_name.get(name).cloned().ok_or_else(|| {
                Status::permission_denied(format!("{name:?} is not a configured app"))
            });
        }
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated("no client certificate: this API requires mTLS")
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        self.caller_of_certificate(leaf.as_ref())
    }

    /// The app a (verified) DER certificate names.
    pub fn caller_of_certificate(&self, der: &[u8]) -> Result<Arc<Caller>, Status> {
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(der)
        {
            return Ok(c.clone());
        }
        let sans = subject_alt_names(der).map_err(Status::unauthenticated)?;
        let mut found: Vec<&Arc<Caller>> = sans.iter().filter_map(|s| self.by_san.get(s)).collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.dedup_by(|a, b| a.name == b.name);
        let caller = match found[..] {
            [one] => one.clone(),
            [] => {
                return Err(Status::permission_denied(format!(
                    "the client certificate names no configured app (its SANs: {})",
                    sans.join(", ")
                )));
            }
            _ => {
                let names: Vec<&str> = found.iter().map(|c| &*c.name).collect();
                return Err(Status::permission_denied(format!(
                    "the client certificate names more than one app ({}): refusing to guess",
                    names.join(", ")
                )));
            }
        };
        debug!(app = %caller.name, "api: client authenticated");
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(der.to_vec(), caller.clone());
        }
        Ok(caller)
    }
}

/// DNS names and URIs in a certificate's subject alternative name extension.
fn subject_alt_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| format!("the client certificate's SAN extension is malformed: {e}"))?
        .ok_or("the client certificate has no subject alternative name naming an app")?;
    Ok(ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) => Some(s.to_string()),
            _ => None,
        })
        .collect())
}
