//! The gateway's configuration for the testbed: `mecgw.toml` with the testbed's interfaces
//! and a datapath, and `tables.toml` with a session per simulated UE by the gNB simulator's
//! numbering ([`UL_TEID_BASE`], [`DL_TEID_BASE`], [`QFI`]).

use std::{fmt::Write as _, path::Path};

use anyhow::bail;

use crate::{DL_TEID_BASE, EDGE, GNB, LOCAL, METRICS, N3, QFI, UL_TEID_BASE};

/// The datapath a testbed gateway runs (on command lines: `native`, `generic`, `userspace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathChoice {
    /// XDP attached in the driver (veth supports it).
    Native,
    /// XDP attached in generic mode.
    Generic,
    /// The reference model over AF_PACKET (`datapath.kind = "userspace"`).
    Userspace,
}

impl DatapathChoice {
    pub const ALL: [DatapathChoice; 3] = [
        DatapathChoice::Native,
        DatapathChoice::Generic,
        DatapathChoice::Userspace,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DatapathChoice::Native => "native XDP",
            DatapathChoice::Generic => "generic XDP",
            DatapathChoice::Userspace => "userspace",
        }
    }
}

/// Writes `mecgw.toml` and `tables.toml` for `ues` simulated UEs into `dir`. `rules` is TOML
/// of `[[rules]]` tables; `mode` is the XDP mode ("native" or "generic").
pub fn write_gateway_config(dir: &Path, ues: u32, rules: &str, mode: &str) -> anyhow::Result<()> {
    let choice = match mode {
        "native" => DatapathChoice::Native,
        "generic" => DatapathChoice::Generic,
        other => bail!("XDP mode {other:?}: expected native or generic"),
    };
    write_gateway_config_for(dir, ues, rules, choice)
}

/// Like [`write_gateway_config`], for any datapath.
pub fn write_gateway_config_for(
    dir: &Path,
    ues: u32,
    rules: &str,
    datapath: DatapathChoice,
) -> anyhow::Result<()> {
    let (kind, mode) = match datapath {
        DatapathChoice::Native => ("xdp", "native"),
        DatapathChoice::Generic => ("xdp", "generic"),
        DatapathChoice::Userspace => ("userspace", "native"),
    };
    let config = format!(
        "# Written for the mecgw testbed.\n[interfaces]\nn3 = \"{n3}\"\nlocal = \"{local}\"\n\n\
         [xdp]\nmode = \"{mode}\"\nfallback_to_generic = false\npin_dir = \"{pins}\"\n\n\
         [datapath]\nkind = \"{kind}\"\ntables = \"tables.toml\"\n\n\
         [state]\ndir = \"{state}\"\n\n[metrics]\nlisten = \"{METRICS}\"\n",
        n3 = N3.link,
        local = LOCAL.link,
        state = dir.join("state").display(),
        pins = crate::pin_root()?,
    );
    std::fs::write(dir.join("mecgw.toml"), config)?;
    write_tables(dir, ues, rules)
}

/// Writes `tables.toml` (sessions by the simulator's convention, plus `rules`) into `dir`.
pub fn write_tables(dir: &Path, ues: u32, rules: &str) -> anyhow::Result<()> {
    let mut t = format!(
        "# Sessions follow mecgw-gnbsim's numbering.\n[n3]\nifindex = 0   # replaced by the daemon\n\
         mac = \"{n3_mac}\"\nnext_hop_mac = \"{gnb_mac}\"\nipv4 = \"{n3_v4}\"\nipv6 = \"{n3_v6}\"\nmtu = 1500\n\n\
         [local]\nifindex = 0\nmac = \"{local_mac}\"\nnext_hop_mac = \"{edge_mac}\"\n\n\
         [defaults]\nunknown_teid = \"pass\"\nspoofed_source = \"drop\"\nmalformed = \"drop\"\n\n{rules}\n",
        n3_mac = N3.mac,
        gnb_mac = GNB.mac,
        n3_v4 = N3.v4,
        n3_v6 = N3.v6,
        local_mac = LOCAL.mac,
        edge_mac = EDGE.mac,
    );
    for i in 0..ues {
        let _ = write!(
            t,
            "\n[[sessions]]\nid = {id}\nimsi = \"{imsi}\"\nuplink_teid = {ul}\ndownlink_teid = {dl}\n\
             ue_ipv4 = \"198.19.{hi}.{lo}\"\nue_ipv6 = \"2001:db8:100:{i:x}::/64\"\ngnb = \"{gnb}\"\nqfi = {QFI}\n",
            imsi = imsi(i + 1),
            id = i + 1,
            ul = UL_TEID_BASE + i,
            dl = DL_TEID_BASE + i,
            hi = (i + 1) >> 8,
            lo = (i + 1) & 0xff,
            gnb = GNB.v4,
        );
    }
    std::fs::write(dir.join("tables.toml"), t)?;
    Ok(())
}

/// The IMSI of simulated UE `n` (1-based), in the test network's MCC/MNC 001/01.
pub fn imsi(n: u32) -> String {
    format!("00101{n:010}")
}

/// The `[pfcp]` section of a testbed gateway whose sessions come from the test SMF
/// (`smf.rs`): mecgw listens on its core-side address, and answers the SMF's address.
#[derive(Clone, Debug)]
pub struct PfcpSettings {
    /// SMFs answered: addresses or CIDR prefixes.
    pub peers: Vec<String>,
    pub heartbeat_interval_secs: u32,
    pub response_timeout_ms: u32,
    pub retries: u32,
    /// "keep" or "release".
    pub on_peer_lost: &'static str,
    pub lost_session_timeout_secs: u32,
}

impl Default for PfcpSettings {
    fn default() -> Self {
        PfcpSettings {
            peers: vec![crate::smf::SMF_ADDR.to_string()],
            heartbeat_interval_secs: 5,
            response_timeout_ms: 1000,
            retries: 3,
            on_peer_lost: "keep",
            lost_session_timeout_secs: 600,
        }
    }
}

impl PfcpSettings {
    /// The TOML section.
    pub fn to_toml(&self) -> String {
        let peers: Vec<String> = self.peers.iter().map(|p| format!("\"{p}\"")).collect();
        format!(
            "\n[pfcp]\nlisten = \"{addr}:8805\"\nnode_id = \"{addr}\"\npeers = [{peers}]\n\
             heartbeat_interval_secs = {hb}\nresponse_timeout_ms = {t1}\nretries = {n1}\n\
             on_peer_lost = \"{lost}\"\nlost_session_timeout_secs = {keep}\n",
            addr = crate::smf::MECGW_PFCP_ADDR,
            peers = peers.join(", "),
            hb = self.heartbeat_interval_secs,
            t1 = self.response_timeout_ms,
            n1 = self.retries,
            lost = self.on_peer_lost,
            keep = self.lost_session_timeout_secs,
        )
    }
}

/// Writes `mecgw.toml` with `pfcp` and a tables file with no session (they come over PFCP)
/// and `rules` into `dir`.
pub fn write_gateway_config_pfcp(
    dir: &Path,
    rules: &str,
    datapath: DatapathChoice,
    pfcp: &PfcpSettings,
) -> anyhow::Result<()> {
    write_gateway_config_for(dir, 0, rules, datapath)?;
    let path = dir.join("mecgw.toml");
    let mut config = std::fs::read_to_string(&path)?;
    config.push_str(&pfcp.to_toml());
    std::fs::write(path, config)?;
    Ok(())
}
