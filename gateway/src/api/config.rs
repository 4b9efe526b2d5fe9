//! The `[api]` table of the daemon configuration: where the gRPC APIs listen, their TLS
//! material, and each app's identity, role and what it owns.
//!
//! ```toml
//! [api]
//! listen = "0.0.0.0:50051"
//! cert = "/etc/mecgw/api/server.pem"
//! key = "/etc/mecgw/api/server.key"
//! client_ca = "/etc/mecgw/api/clients-ca.pem"
//!
//! [api.apps.operator]
//! role = "operator"
//! sans = ["spiffe://mec.example/operator"]
//!
//! [api.apps.video-analytics]
//! role = "app"
//! rules = [10, 30]
//! services = ["video-analytics"]
//! discover = ["maps"]
//! publish = ["app_telemetry"]
//! releases = ["cell_load"]
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

/// Largest message limit a configuration may set (bytes).
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// The gRPC API configuration (the daemon's `[api]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port the gRPC APIs listen on, e.g. `"0.0.0.0:50051"`.
    pub listen: SocketAddr,
    /// PEM file with the server certificate chain (required unless `insecure`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (required unless `insecure`).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM file with the CA(s) that issue client certificates. Every client must present a
    /// certificate this CA verifies (required unless `insecure`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Serve plaintext without client certificates; a caller then names its app in the
    /// `mecgw-app` request header. For test benches only: it logs a warning at start.
    #[serde(default)]
    pub insecure: bool,
    /// Largest request or response message on the app-facing services, bytes
    /// (default 4 MiB, at most 64 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long Publish waits for room in the policy engine's queue before it answers
    /// RESOURCE_EXHAUSTED, milliseconds (default 50).
    #[serde(default = "default_publish_wait_ms")]
    pub publish_wait_ms: u64,
    /// After shutdown starts, how long the API keeps answering with health NOT_SERVING so
    /// that clients and load balancers move away, milliseconds (default 1000).
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// The apps allowed to call, by name.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
}

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and changes everything: rules, sessions, services, status, all releases.
    Operator,
    /// Sees and changes only what its entry lists.
    App,
}

/// One app: how its certificate names it, its role, and what it owns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `operator` or `app`.
    pub role: Option<Role>,
    /// Subject alternative names (DNS names or URIs) that identify this app in a client
    /// certificate; default: the app's name as a DNS name.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Traffic rule ids the app owns: it may list and read them and change their state.
    #[serde(default)]
    pub rules: Vec<u32>,
    /// Edge service names the app owns: it may register, deregister, discover and watch them.
    #[serde(default)]
    pub services: Vec<String>,
    /// Further edge service names the app may discover and watch (read-only).
    #[serde(default)]
    pub discover: Vec<String>,
    /// Record kinds the app may publish into the policy engine.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Releases whose outputs the app may subscribe to.
    #[serde(default)]
    pub releases: Vec<String>,
}

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_publish_wait_ms() -> u64 {
    50
}
fn default_drain_ms() -> u64 {
    1000
}

impl ApiConfig {
    /// A configuration listening on `listen` with default limits and no apps.
    pub fn new(listen: SocketAddr) -> ApiConfig {
        ApiConfig {
            listen,
            cert: None,
            key: None,
            client_ca: None,
            insecure: false,
            max_message_bytes: default_max_message_bytes(),
            publish_wait_ms: default_publish_wait_ms(),
            drain_ms: default_drain_ms(),
            apps: BTreeMap::new(),
        }
    }

    /// The SANs that identify `app` (its `sans`, or its name).
    pub fn sans_of<'a>(name: &'a str, app: &'a AppConfig) -> Vec<&'a str> {
        if app.sans.is_empty() {
            vec![name]
        } else {
            app.sans.iter().map(String::as_str).collect()
        }
    }

    /// Every problem with this configuration (field paths as in the TOML, under `api.`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if !self.insecure {
            for (field, v) in [
                ("cert", &self.cert),
                ("key", &self.key),
                ("client_ca", &self.client_ca),
            ] {
                if v.is_none() {
                    errors.push(format!(
                        "api.{field} is required (mTLS) unless api.insecure = true"
                    ));
                }
            }
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
            errors.push(format!(
                "api.max_message_bytes = {} is out of range: 1024-{MAX_MESSAGE_BYTES_LIMIT}",
                self.max_message_bytes
            ));
        }
        if self.drain_ms > 60_000 {
            errors.push(format!(
                "api.drain_ms = {} is out of range: at most 60000",
                self.drain_ms
            ));
        }
        if self.publish_wait_ms > 10_000 {
            errors.push(format!(
                "api.publish_wait_ms = {} is out of range: at most 10000",
                self.publish_wait_ms
            ));
        }
        if self.apps.is_empty() {
            errors.push("api.apps is empty: no caller could use the API".to_string());
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        let mut rule_owner: HashMap<u32, &str> = HashMap::new();
        let mut service_owner: HashMap<&str, &str> = HashMap::new();
        for (name, app) in &self.apps {
            if app.role.is_none() {
                errors.push(format!(
                    "api.apps.{name}.role is missing: \"operator\" or \"app\""
                ));
            }
            for san in ApiConfig::sans_of(name, app) {
                if san.is_empty() {
                    errors.push(format!("api.apps.{name}.sans has an empty name"));
                } else if let Some(other) = seen.insert(san, name) {
                    errors.push(format!(
                        "api.apps.{name}.sans: {san:?} also names app {other:?}; a certificate must name one app"
                    ));
                }
            }
            for &id in &app.rules {
                if let Some(other) = rule_owner.insert(id, name) {
                    errors.push(format!(
                        "api.apps.{name}.rules: rule {id} is also owned by app {other:?}"
                    ));
                }
            }
            for s in &app.services {
                if let Err(e) = super::services::valid_service_name(s) {
                    errors.push(format!("api.apps.{name}.services: {e}"));
                }
                if let Some(other) = service_owner.insert(s, name) {
                    errors.push(format!(
                        "api.apps.{name}.services: {s:?} is also owned by app {other:?}"
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<ApiConfig, String> {
        toml::from_str::<ApiConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn documented_example_parses_and_validates() {
        let text = "listen = \"127.0.0.1:50051\"\ncert = \"s.pem\"\nkey = \"s.key\"\nclient_ca = \"ca.pem\"\n\
            [apps.operator]\nrole = \"operator\"\nsans = [\"spiffe://mec.example/operator\"]\n\
            [apps.video-analytics]\nrole = \"app\"\nrules = [10, 30]\nservices = [\"video-analytics\"]\n";
        let c = parse(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.apps["video-analytics"].rules, vec![10, 30]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = parse("listen = \"127.0.0.1:1\"\ninsecure = true\ncolour = 1\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e =
            parse("listen = \"127.0.0.1:1\"\n[apps.a]\nrole = \"app\"\nrule = [1]\n").unwrap_err();
        assert!(e.contains("rule"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "listen = \"127.0.0.1:1\"\nmax_message_bytes = 10\n\
            [apps.a]\nrole = \"app\"\nrules = [1]\nsans = [\"x\"]\nservices = [\"Bad Name\"]\n\
            [apps.b]\nrules = [1]\nsans = [\"x\"]\n";
        let errors = parse(text).unwrap().validate().unwrap_err();
        let all = errors.join("\n");
        for want in [
            "api.cert is required",
            "api.key is required",
            "api.client_ca is required",
            "api.max_message_bytes = 10 is out of range",
            "api.apps.b.role is missing",
            "\"x\" also names app \"a\"",
            "rule 1 is also owned by app \"a\"",
            "api.apps.a.services",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 8, "{all}");
    }
}
