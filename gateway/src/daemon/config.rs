//! The daemon's configuration: a TOML file (`examples/mecgw.toml` documents every key), with
//! flags and environment variables overriding it.
//!
//! This module owns reading, validating and resolving the configuration; it never acts on it.
//! Every error says where it is: `file:line:column` for the file, the flag and variable name
//! for an override. Relative paths in the file are relative to the file's directory.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::datapath::AttachMode;

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration, as the daemon uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The interfaces the gateway works on, by role.
    pub interfaces: Interfaces,
    /// How the XDP programs attach (with `datapath.kind = "xdp"`).
    #[serde(default)]
    pub xdp: Xdp,
    /// Which datapath runs and the tables it judges by.
    pub datapath: Datapath,
    /// The privacy policy (optional: without one, no regulated data is released at all).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Where the daemon keeps state that must survive restarts.
    #[serde(default)]
    pub state: State,
    /// The plaintext operations port: /metrics, /healthz, /readyz.
    #[serde(default)]
    pub metrics: Metrics,
    /// GTP-U signalling: the socket that answers Echo Requests passed up by the fast path.
    #[serde(default)]
    pub gtpu: Gtpu,
    /// The gRPC local APIs (mTLS); absent: no API is served. See docs/api.md.
    #[serde(default)]
    pub api: Option<crate::api::ApiConfig>,
    /// Per-flow accounting in the fast path, harvested into `flow` records for the policy.
    #[serde(default)]
    pub flows: Flows,
    /// Where what the policy releases goes: spool, sinks, audit (docs/egress.md). Required
    /// when the policy names destinations. The spool and audit directories default to
    /// `spool/` and `audit/` under `[state] dir`.
    #[serde(default)]
    pub egress: Option<crate::records::egress::EgressConfig>,
    /// The PFCP (N4) endpoint an SMF programs sessions through (docs/pfcp.md); absent: none.
    /// Needs the XDP datapath.
    #[serde(default)]
    pub pfcp: Option<crate::pfcp::PfcpConfig>,
}

/// Flow records.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flows {
    /// Count packets and bytes per session and 5-tuple in the fast path, and feed them to
    /// the policy as `flow` records (when the policy declares that kind). Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between harvests: the window each flow record covers. Default 10.
    #[serde(default = "default_flow_interval")]
    pub interval_secs: u64,
    /// Flows counted per harvest window; packets of new flows beyond are refused until the
    /// next window (counted on `/metrics`). Kernel memory: about 435 bytes per flow,
    /// preallocated, whatever the number of CPUs. Default 65,536; 1 to
    /// [`MAX_FLOWS_CONFIGURED`].
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            enabled: true,
            interval_secs: default_flow_interval(),
            max_flows: default_max_flows(),
        }
    }
}

fn default_max_flows() -> u32 {
    mecgw_ebpf::MAX_FLOWS
}

/// The most flows per window `[flows] max_flows` takes: 16,777,216, about 3.4 GB of
/// preallocated kernel memory on 2 CPUs (more with more CPUs). A typo beyond it would
/// otherwise fail only at load, as the kernel refusing the memory.
pub const MAX_FLOWS_CONFIGURED: u32 = 1 << 24;

/// The longest `[flows] interval_secs`: a day.
const MAX_FLOW_INTERVAL_SECS: u64 = 86_400;

impl Flows {
    /// What is wrong with these values: (key under `flows.`, message).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_flows == 0 || self.max_flows > MAX_FLOWS_CONFIGURED {
            out.push((
                "max_flows",
                format!(
                    "{} is out of range: 1 to {MAX_FLOWS_CONFIGURED} flows per window (to count \
                     none, set enabled = false)",
                    self.max_flows
                ),
            ));
        }
        if self.interval_secs == 0 || self.interval_secs > MAX_FLOW_INTERVAL_SECS {
            out.push((
                "interval_secs",
                format!(
                    "{} is out of range: 1 to {MAX_FLOW_INTERVAL_SECS} seconds",
                    self.interval_secs
                ),
            ));
        }
        out
    }
}

fn default_flow_interval() -> u64 {
    10
}

/// Interfaces by role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interfaces {
    /// N3, facing the gNBs: the uplink program attaches here, and encapsulated downlink
    /// packets leave here.
    pub n3: String,
    /// Facing the local edge services: the downlink program attaches here, and locally
    /// broken-out packets leave here.
    pub local: String,
}

/// XDP attachment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xdp {
    /// "native" (in the driver; the default) or "generic" (any interface, slower).
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: AttachMode,
    /// If native attach fails, attach in generic mode instead (logged). Default true.
    #[serde(default = "yes")]
    pub fallback_to_generic: bool,
    /// Where the links and program arrays are pinned (a directory on bpffs; one
    /// subdirectory per network namespace). Default /sys/fs/bpf/mecgw.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// At SIGTERM/SIGINT, leave the programs on the interfaces, forwarding with the tables in
    /// force, for the next `mecgw run` to adopt without a gap (restarts and upgrades).
    /// Default false: detach. A daemon killed or crashed always leaves them; `mecgw
    /// datapath detach` removes them.
    #[serde(default)]
    pub keep_datapath: bool,
}

impl Default for Xdp {
    fn default() -> Self {
        Xdp {
            mode: AttachMode::Native,
            fallback_to_generic: true,
            pin_dir: default_pin_dir(),
            keep_datapath: false,
        }
    }
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from(crate::datapath::pins::DEFAULT_ROOT)
}

fn yes() -> bool {
    true
}

fn de_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AttachMode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Which datapath runs and its tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datapath {
    /// "xdp" (the default): the XDP programs, attached as `[xdp]` says. "userspace": the
    /// reference model over AF_PACKET sockets, for hosts where XDP cannot attach; many
    /// times slower, and it sets up policy routing and a TUN device in the gateway's network
    /// namespace to keep the kernel from forwarding what it steers (see
    /// `gateway/src/daemon/userspace.rs` for the arrangement and its limits).
    #[serde(default)]
    pub kind: DatapathKind,
    /// Sessions, traffic rules, MACs and defaults (format: `examples/tables.toml`). The
    /// interface indexes in it are replaced by those of `[interfaces]`.
    pub tables: PathBuf,
}

/// The datapath that judges frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    /// The XDP programs in the kernel.
    #[default]
    Xdp,
    /// The reference model in userspace, over AF_PACKET.
    Userspace,
}

impl DatapathKind {
    pub const fn name(self) -> &'static str {
        match self {
            DatapathKind::Xdp => "xdp",
            DatapathKind::Userspace => "userspace",
        }
    }
}

/// The privacy policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The policy file (YAML, see docs/policy.md).
    pub file: PathBuf,
    /// Directory the policy's key paths are relative to (default: the policy file's
    /// directory). Key files: mode 0600/0700, at least 32 bytes.
    #[serde(default)]
    pub keys: Option<PathBuf>,
    /// Seconds after a release window ends before it is closed and released, so that late
    /// records still count. Default 60.
    #[serde(default = "default_window_grace")]
    pub window_grace_secs: u64,
}

fn default_window_grace() -> u64 {
    60
}

/// Persistent state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Directory for the budget ledger, spool and GTP-U restart counter.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

impl Default for State {
    fn default() -> Self {
        State {
            dir: default_state_dir(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mecgw")
}

/// The plaintext operations port.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address of /metrics, /healthz and /readyz. Default 127.0.0.1:9464.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// GTP-U signalling.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gtpu {
    /// UDP address that answers GTP-U Echo Requests. Default [::]:2152.
    #[serde(default = "default_gtpu_listen")]
    pub listen: SocketAddr,
    /// Whether to run the responder at all. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for Gtpu {
    fn default() -> Self {
        Gtpu {
            listen: default_gtpu_listen(),
            enabled: true,
        }
    }
}

fn default_gtpu_listen() -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 2152))
}

/// Values given on the command line or in the environment; each replaces the file's. Their
/// relative paths are relative to the working directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// N3 interface (replaces interfaces.n3).
    #[arg(long, env = "MECGW_N3_IFACE")]
    pub n3_iface: Option<String>,
    /// Local-services interface (replaces interfaces.local).
    #[arg(long, env = "MECGW_LOCAL_IFACE")]
    pub local_iface: Option<String>,
    /// XDP mode, native or generic (replaces xdp.mode).
    #[arg(long, env = "MECGW_XDP_MODE")]
    pub xdp_mode: Option<AttachMode>,
    /// Datapath, xdp or userspace (replaces datapath.kind).
    #[arg(long, value_enum, env = "MECGW_DATAPATH")]
    pub datapath: Option<DatapathKind>,
    /// Tables file (replaces datapath.tables).
    #[arg(long, env = "MECGW_TABLES")]
    pub tables: Option<PathBuf>,
    /// Policy file (replaces policy.file).
    #[arg(long, env = "MECGW_POLICY")]
    pub policy: Option<PathBuf>,
    /// State directory (replaces state.dir).
    #[arg(long, env = "MECGW_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Operations port address (replaces metrics.listen).
    #[arg(long, env = "MECGW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// GTP-U signalling address (replaces gtpu.listen).
    #[arg(long, env = "MECGW_GTPU_LISTEN")]
    pub gtpu_listen: Option<SocketAddr>,
    /// Serve the gRPC APIs in plaintext, without mTLS (sets api.insecure; logged as a warning).
    #[arg(long, env = "MECGW_INSECURE")]
    pub insecure: bool,
    /// Leave the XDP programs forwarding at stop, for the next start to adopt (sets
    /// xdp.keep_datapath).
    #[arg(long, env = "MECGW_KEEP_DATAPATH")]
    pub keep_datapath: bool,
}

impl Overrides {
    /// The same values with relative paths made absolute against the working directory (a
    /// path that cannot be, because the working directory is gone, is kept as given).
    fn against_working_directory(&self) -> Overrides {
        let absolute = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        };
        Overrides {
            tables: absolute(&self.tables),
            policy: absolute(&self.policy),
            state_dir: absolute(&self.state_dir),
            ..self.clone()
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not a regular file, over [`MAX_CONFIG_BYTES`], not UTF-8, or unreadable.
    #[error(transparent)]
    Read(#[from] mecgw_policy::files::ReadError),
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Config {
    /// Reads `path`, applies `overrides`, and resolves relative paths: those in the file
    /// against the file's directory, those given by flags or environment variables against
    /// the working directory (as operators' other tools do).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = mecgw_policy::files::read_text_limited(path, MAX_CONFIG_BYTES)?;
        let mut config = Config::from_toml(&text, &shown)?;
        config.check_pfcp(&text, &shown)?;
        config.check_egress(&text, &shown)?;
        config.check_flows(&text, &shown)?;
        config.apply(&overrides.against_working_directory());
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses a configuration; errors carry `origin:line:column`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|s| crate::datapath::tables::toml::LineIndex::new(text).line_col(s.start))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                path: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// `[pfcp]`'s values, each problem at the line of its key (or of the section).
    fn check_pfcp(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let Some(p) = &self.pfcp else {
            return Ok(());
        };
        // Each problem is written `pfcp.<key>: <message>`.
        let problems: Vec<(String, String)> = p
            .problems()
            .into_iter()
            .map(|s| match s.split_once(": ") {
                Some((k, m)) => (k.to_string(), m.to_string()),
                None => ("pfcp".to_string(), s),
            })
            .collect();
        refuse(origin, &problems, |key| {
            pfcp_key_position(text, key.strip_prefix("pfcp.").unwrap_or(""))
        })
    }

    /// `[egress]`'s values, each problem at the line and column of its key (or of the nearest
    /// enclosing table that is written out); all of them in one message, located at the first.
    fn check_egress(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let Some(e) = &self.egress else {
            return Ok(());
        };
        let problems: Vec<(String, String)> = e
            .problems()
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect();
        refuse(origin, &problems, |key| key_position(text, key))
    }

    /// `[flows]`'s values, all problems in one message, located at the first one's key.
    fn check_flows(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let problems: Vec<(String, String)> = self
            .flows
            .problems()
            .into_iter()
            .map(|(k, m)| (format!("flows.{k}"), m))
            .collect();
        refuse(origin, &problems, |key| key_position(text, key))
    }

    fn apply(&mut self, o: &Overrides) {
        // Paths here are absolute ([`Overrides::against_working_directory`]): resolving the
        // file's paths later leaves them as they are.
        if let Some(v) = &o.n3_iface {
            self.interfaces.n3 = v.clone();
        }
        if let Some(v) = &o.local_iface {
            self.interfaces.local = v.clone();
        }
        if let Some(v) = o.xdp_mode {
            self.xdp.mode = v;
        }
        if o.keep_datapath {
            self.xdp.keep_datapath = true;
        }
        if let Some(v) = o.datapath {
            self.datapath.kind = v;
        }
        if let Some(v) = &o.tables {
            self.datapath.tables = v.clone();
        }
        if let Some(v) = &o.policy {
            match &mut self.policy {
                Some(p) => p.file = v.clone(),
                None => {
                    self.policy = Some(Policy {
                        file: v.clone(),
                        keys: None,
                        window_grace_secs: default_window_grace(),
                    })
                }
            }
        }
        if let Some(v) = &o.state_dir {
            self.state.dir = v.clone();
        }
        if let Some(v) = o.metrics_listen {
            self.metrics.listen = v;
        }
        if let Some(v) = o.gtpu_listen {
            self.gtpu.listen = v;
        }
        if o.insecure
            && let Some(api) = &mut self.api
        {
            api.insecure = true;
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.datapath.tables);
        if let Some(p) = &mut self.policy {
            fix(&mut p.file);
            if let Some(k) = &mut p.keys {
                fix(k);
            }
        }
        fix(&mut self.state.dir);
        fix(&mut self.xdp.pin_dir);
        if let Some(egress) = &mut self.egress {
            if egress.spool_dir.as_os_str().is_empty() {
                egress.spool_dir = self.state.dir.join("spool");
            }
            if egress.audit_dir.as_os_str().is_empty() {
                egress.audit_dir = self.state.dir.join("audit");
            }
            fix(&mut egress.spool_dir);
            fix(&mut egress.audit_dir);
            // The state directory's marker knows which components have had state.
            if egress.state_dir.is_none() {
                egress.state_dir = Some(self.state.dir.clone());
            }
            for d in &mut egress.destinations {
                match &mut d.sink {
                    crate::records::egress::sink::SinkConfig::File(f) => fix(&mut f.dir),
                    crate::records::egress::sink::SinkConfig::Nats(n) => {
                        if let Some(tls) = &mut n.tls {
                            for p in [&mut tls.ca, &mut tls.cert, &mut tls.key]
                                .into_iter()
                                .flatten()
                            {
                                fix(p);
                            }
                        }
                    }
                }
            }
        }
        if let Some(api) = &mut self.api {
            for p in [&mut api.cert, &mut api.key, &mut api.client_ca]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
    }
}

/// The 1-based line and column of the dotted `path` (array indexes as numbers) in the TOML
/// `text`: of its key, or of the deepest part of the path that is written out (a key left to
/// its default has no place of its own).
fn key_position(text: &str, path: &str) -> (usize, usize) {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return (1, 1);
    };
    let mut at = 0;
    let mut value: &DeValue<'_> = &DeValue::Boolean(false);
    let mut table = Some(root.get_ref());
    for segment in path.split('.') {
        let next = match (table, value) {
            (Some(t), _) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == segment)
                .map(|(k, v)| (k.span().start, v)),
            (None, DeValue::Array(a)) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|v| (v.span().start, v)),
            (None, _) => None,
        };
        let Some((start, v)) = next else { break };
        at = start;
        value = v.get_ref();
        table = match value {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    crate::datapath::tables::toml::LineIndex::new(text).line_col(at)
}

/// Where `key` is set in the `[pfcp]` section of `text` (1-based), or the section's header.
/// One error for a section's `problems` (key path, message), if there are any: all of them in
/// one message, `key: message` each, located where `locate` finds the first one's key.
fn refuse(
    origin: &str,
    problems: &[(String, String)],
    locate: impl FnOnce(&str) -> (usize, usize),
) -> Result<(), ConfigError> {
    let Some((first, _)) = problems.first() else {
        return Ok(());
    };
    let (line, column) = locate(first);
    Err(ConfigError::Invalid {
        path: origin.to_string(),
        line,
        column,
        message: problems
            .iter()
            .map(|(key, message)| format!("{key}: {message}"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

fn pfcp_key_position(text: &str, key: &str) -> (usize, usize) {
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') {
            if section.is_some() {
                break;
            }
            if t.trim_end() == "[pfcp]" {
                section = Some(n + 1);
            }
            continue;
        }
        if section.is_some()
            && !key.is_empty()
            && t.split('=').next().is_some_and(|k| k.trim() == key)
        {
            return (n + 1, line.len() - t.len() + 1);
        }
    }
    (section.unwrap_or(1), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[interfaces]\nn3 = \"eth1\"\nlocal = \"eth2\"\n\n[datapath]\ntables = \"tables.toml\"\n";

    /// `key = value` with a bare TOML key: a commented-out setting, not prose.
    fn is_setting(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
    }

    #[test]
    fn the_shipped_example_configuration_parses() {
        let text = include_str!("../../../examples/mecgw.toml");
        let c = Config::from_toml(text, "examples/mecgw.toml").unwrap();
        assert_eq!(c.interfaces.n3, "mgw-tb-n3");
        // Uncommented, the example [api] section must parse too.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(r) if r.starts_with('[') || is_setting(r) => r,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::from_toml(&uncommented, "examples/mecgw.toml (uncommented)").unwrap();
        let api = c.api.expect("the example's [api] section");
        assert_eq!(api.apps.len(), 2);
        assert!(c.policy.is_some());
        let egress = c.egress.expect("the example's [egress] section");
        assert_eq!(egress.destinations.len(), 2);
        assert!(c.flows.enabled);
        let pfcp = c.pfcp.expect("the example's [pfcp] section");
        assert!(pfcp.problems().is_empty(), "{:?}", pfcp.problems());
        assert_eq!(pfcp.teid_min, 0x8000_0000);
    }

    #[test]
    fn a_bad_pfcp_value_is_reported_at_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let text = format!(
            "{MINIMAL}\n[pfcp]\nnode_id = \"198.18.0.2\"\npeers = [\"198.18.2.2/32\"]\nretries = 0\n"
        );
        std::fs::write(&path, &text).unwrap();
        let err = Config::load(&path, &Overrides::default())
            .unwrap_err()
            .to_string();
        let line = text.lines().position(|l| l.starts_with("retries")).unwrap() + 1;
        assert!(
            err.contains(&format!("m.toml:{line}:1: pfcp.retries: must be 1-20")),
            "{err}"
        );
        let minimal = Config::from_toml(
            &format!("{MINIMAL}\n[pfcp]\nnode_id = \"a\"\npeers = [\"10.0.0.1\"]\n"),
            "m.toml",
        )
        .unwrap();
        let p = minimal.pfcp.unwrap();
        assert_eq!(p.listen, "0.0.0.0:8805".parse().unwrap());
        assert_eq!((p.heartbeat_interval_secs, p.retries), (10, 3));
    }

    #[test]
    fn flow_values_out_of_range_are_reported_at_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        // The error of loading `[flows]` with `values`, and where `max_flows` is in it.
        let refused = |values: &str| {
            let text = format!("{MINIMAL}\n[flows]\n{values}");
            std::fs::write(&path, &text).unwrap();
            let err = Config::load(&path, &Overrides::default()).unwrap_err();
            let line = text.lines().position(|l| l.starts_with("max_flows"));
            (err.to_string(), line.unwrap() + 1)
        };
        let (err, line) = refused("interval_secs = 10\nmax_flows = 0\n");
        let at = format!("m.toml:{line}:1: flows.max_flows: 0 is out of range");
        assert!(err.contains(&at), "{err}");
        assert!(err.contains("set enabled = false"), "{err}");
        // Both in one message, located at the first.
        let (err, line) = refused("interval_secs = 0\nmax_flows = 16777217\n");
        let at = format!("m.toml:{line}:1: flows.max_flows: 16777217 is out of range");
        assert!(err.contains(&at), "{err}");
        assert!(
            err.contains("; flows.interval_secs: 0 is out of range"),
            "{err}"
        );

        let text = format!("{MINIMAL}\n[flows]\nmax_flows = 1000000\n");
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path, &Overrides::default()).unwrap();
        assert_eq!((c.flows.max_flows, c.flows.interval_secs), (1_000_000, 10));
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::from_toml(MINIMAL, "m.toml").unwrap();
        assert_eq!(c.xdp.mode, AttachMode::Native);
        assert_eq!(c.datapath.kind, DatapathKind::Xdp);
        assert!(c.xdp.fallback_to_generic);
        assert_eq!(c.metrics.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(c.gtpu.listen, "[::]:2152".parse().unwrap());
        assert_eq!(c.state.dir, PathBuf::from("/var/lib/mecgw"));
        assert!(c.policy.is_none());
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_line_and_column() {
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:1\"\nlsten = 3\n");
        let err = Config::from_toml(&text, "m.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("m.toml:10:1: unknown field `lsten`"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_value_names_the_place_and_the_expected_form() {
        let text = MINIMAL.replace("[datapath]", "[xdp]\nmode = \"turbo\"\n\n[datapath]");
        let err = Config::from_toml(&text, "m.toml").unwrap_err().to_string();
        assert!(err.starts_with("m.toml:6:8:"), "{err}");
        assert!(err.contains("expected \"native\" or \"generic\""), "{err}");
    }

    #[test]
    fn the_userspace_datapath_is_chosen_by_kind_and_a_wrong_kind_is_located() {
        let text = MINIMAL.replace("[datapath]", "[datapath]\nkind = \"userspace\"");
        let c = Config::from_toml(&text, "m.toml").unwrap();
        assert_eq!(c.datapath.kind, DatapathKind::Userspace);
        let text = MINIMAL.replace("[datapath]", "[datapath]\nkind = \"afxdp\"");
        let err = Config::from_toml(&text, "m.toml").unwrap_err().to_string();
        assert!(err.starts_with("m.toml:6:8:"), "{err}");
        assert!(err.contains("expected `xdp` or `userspace`"), "{err}");
    }

    #[test]
    fn overrides_replace_file_values_and_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mecgw.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let o = Overrides {
            xdp_mode: Some(AttachMode::Generic),
            n3_iface: Some("n3x".into()),
            datapath: Some(DatapathKind::Userspace),
            ..Overrides::default()
        };
        let c = Config::load(&path, &o).unwrap();
        assert_eq!(c.datapath.kind, DatapathKind::Userspace);
        assert_eq!(c.xdp.mode, AttachMode::Generic);
        assert_eq!(c.interfaces.n3, "n3x");
        assert_eq!(c.datapath.tables, dir.path().join("tables.toml"));

        // A relative path given by a flag or variable is the operator's: the working
        // directory's, not the file's.
        let o = Overrides {
            tables: Some("given.toml".into()),
            state_dir: Some("st".into()),
            ..Overrides::default()
        };
        let c = Config::load(&path, &o).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.datapath.tables, cwd.join("given.toml"));
        assert_eq!(c.state.dir, cwd.join("st"));
    }

    #[test]
    fn egress_directories_default_under_the_state_dir_and_sink_paths_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mecgw.toml");
        let text = format!(
            "{MINIMAL}\n[state]\ndir = \"st\"\n\n[egress]\n[[egress.destinations]]\n\
             name = \"a\"\nregion = \"EU-DE\"\nsink = {{ type = \"file\", dir = \"out\" }}\n"
        );
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path, &Overrides::default()).unwrap();
        let e = c.egress.unwrap();
        assert_eq!(e.spool_dir, dir.path().join("st/spool"));
        assert_eq!(e.audit_dir, dir.path().join("st/audit"));
        match &e.destinations[0].sink {
            crate::records::egress::sink::SinkConfig::File(f) => {
                assert_eq!(f.dir, dir.path().join("out"))
            }
            other => panic!("{other:?}"),
        }
        // A misspelt egress key is located like any other.
        let bad = MINIMAL.to_string() + "\n[egress]\nspool_directory = \"x\"\ndestinations = []\n";
        let err = Config::from_toml(&bad, "m.toml").unwrap_err().to_string();
        assert!(err.starts_with("m.toml:9:1:"), "{err}");
        assert!(err.contains("spool_directory"), "{err}");
    }

    #[test]
    fn a_bad_egress_value_is_reported_at_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let load = |egress: &str| {
            let path = dir.path().join("m.toml");
            std::fs::write(&path, format!("{MINIMAL}\n[egress]\n{egress}")).unwrap();
            Config::load(&path, &Overrides::default())
                .unwrap_err()
                .to_string()
                .replacen(&path.display().to_string(), "m.toml", 1)
        };
        let dest = |name: &str, region: &str| {
            format!(
                "[[egress.destinations]]\nname = \"{name}\"\nregion = \"{region}\"\n\
                 sink = {{ type = \"file\", dir = \"out\" }}\n"
            )
        };
        // Line 8 is `[egress]`.
        let err = load(&format!("{}{}", dest("a", "EU"), dest("b", "")));
        assert_eq!(
            err,
            "m.toml:15:1: egress.destinations.1.region: destination b: region must not be empty"
        );
        let err = load(&format!(
            "[egress.limits]\n  max_bytes = 0\nmax_batches = 5\n{}",
            dest("a", "EU")
        ));
        assert_eq!(
            err,
            "m.toml:10:3: egress.limits.max_bytes: limits: max_bytes must be > 0"
        );
        let err = load(&format!("{}{}", dest("a", "EU"), dest("a", "EU")));
        assert!(
            err.starts_with(
                "m.toml:14:1: egress.destinations.1.name: destination a is configured twice"
            ),
            "{err}"
        );
    }
}
