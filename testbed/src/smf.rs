//! The test SMF (`testbed/pfcp/smf.py`, scapy's PFCP layers only) as a child process that
//! the tests and the demo drive with JSON lines, and the UL CL sessions they ask it for.
//!
//! The script is embedded in this crate and written to a temporary file at start, so a
//! binary that moved still runs the SMF it was built with. It runs in the `core` namespace at
//! the UPF stand-in's address ([`SMF_ADDR`]) and talks to mecgw's PFCP endpoint at the
//! gateway host's core-side address ([`MECGW_PFCP_ADDR`]). Its command protocol is in the
//! script's docstring.
//!
//! Nothing here reads PFCP bytes: the SMF does, with scapy, and reports JSON.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{CORE, DL_TEID_BASE, GNB, NS_CORE, QFI, UL_TEID_BASE, UPF, imsi};

/// The SMF's script.
const SCRIPT: &str = include_str!("../pfcp/smf.py");

/// Where the SMF lives: the core namespace, at the UPF stand-in's address.
pub const SMF_ADDR: &str = UPF.v4;
/// mecgw's PFCP address and Node ID: the gateway host's core-side address.
pub const MECGW_PFCP_ADDR: &str = CORE.v4;

/// How long one command may take before the SMF is taken for hung (a fuzz run of a few
/// thousand messages takes seconds).
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// A running test SMF. Dropping it ends the process.
pub struct Smf {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Smf {
    /// Starts the SMF in the `core` namespace, speaking to mecgw's PFCP endpoint.
    pub fn start() -> anyhow::Result<Smf> {
        Smf::spawn(
            Some(NS_CORE),
            &["--local", SMF_ADDR, "--peer", MECGW_PFCP_ADDR],
        )
    }

    /// Starts the SMF outside any namespace on loopback with an ephemeral port and no peer
    /// listening: for building messages offline (`build`).
    pub fn offline() -> anyhow::Result<Smf> {
        Smf::spawn(
            None,
            &[
                "--local",
                "127.0.0.1",
                "--port",
                "0",
                "--peer",
                "127.0.0.1",
                "--peer-port",
                "9",
            ],
        )
    }

    fn spawn(netns: Option<&str>, args: &[&str]) -> anyhow::Result<Smf> {
        let dir = tempfile::tempdir().context("temporary directory for the SMF")?;
        let script = dir.path().join("smf.py");
        std::fs::write(&script, SCRIPT).context("writing the SMF's script")?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        cmd.arg("-u").arg(&script).args(args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the test SMF (python3 with scapy: cargo xtask setup)")?;
        let stdin = child.stdin.take().context("the SMF's stdin")?;
        let stdout = child.stdout.take().context("the SMF's stdout")?;
        // A thread reads the answers, so that a hung SMF is a timeout, not a hung test.
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut smf = Smf {
            child,
            stdin,
            lines,
            _dir: dir,
        };
        let ready = smf.read()?;
        if ready["ready"] != true {
            bail!("the SMF did not start: {ready}");
        }
        Ok(smf)
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let line = match self.lines.recv_timeout(COMMAND_LIMIT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the SMF gave no answer within {COMMAND_LIMIT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!("the SMF exited ({status:?}); its stderr is above")
            }
        };
        serde_json::from_str(&line).with_context(|| format!("the SMF's answer {line:?}"))
    }

    /// Sends one command and returns its result; a result with `"ok": false` is an error.
    pub fn call(&mut self, command: Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{command}").context("writing to the SMF")?;
        self.stdin.flush().context("writing to the SMF")?;
        let out = self.read()?;
        if out["ok"] != true {
            bail!("SMF command {command} failed: {out}");
        }
        Ok(out)
    }

    /// Association Setup with `recovery_ts` (NTP seconds), or the SMF's start time. Fails
    /// unless it was accepted.
    pub fn associate(&mut self, recovery_ts: Option<u32>) -> anyhow::Result<Value> {
        let mut cmd = json!({"cmd": "associate"});
        if let Some(ts) = recovery_ts {
            cmd["recovery_ts"] = ts.into();
        }
        let out = self.call(cmd)?;
        if out["cause"] != 1 {
            bail!("association setup not accepted: {out}");
        }
        Ok(out)
    }

    /// Establishes `session` (see [`UlclSession::to_json`]); fails unless it was accepted.
    pub fn establish(&mut self, session: &UlclSession) -> anyhow::Result<Established> {
        let out = self.call(session.to_json())?;
        if out["cause"] != 1 {
            bail!("session {} not established: {out}", session.name);
        }
        let teid = out["teid"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .with_context(|| format!("no single uplink TEID in {out}"))?;
        let up_seid = out["up_seid"]
            .as_u64()
            .with_context(|| format!("no UP F-SEID in {out}"))?;
        Ok(Established {
            teid,
            n3_addr: out["ipv4"].as_str().unwrap_or_default().to_string(),
            up_seid,
            answer: out,
        })
    }
}

impl Drop for Smf {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        for _ in 0..20 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an accepted establishment gave back.
#[derive(Clone, Debug)]
pub struct Established {
    /// The uplink TEID mecgw chose (every uplink PDR shares one CHOOSE ID).
    pub teid: u32,
    /// The N3 address mecgw chose with it.
    pub n3_addr: String,
    pub up_seid: u64,
    /// The SMF's whole result.
    pub answer: Value,
}

/// What a UL CL session's catch-all uplink PDR does with what is not for the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchAll {
    /// Forward to Core without outer header creation: the G-PDU passes unchanged.
    Pass,
    /// Re-tunnel to a PSA: outer header removal, then creation with this TEID and address.
    Psa { teid: u32, addr: String },
}

/// A UL CL session for UE `index` of the gNB simulator's numbering: its addresses, the gNB's
/// downlink TEID, the edge prefixes, the catch-all and the URR.
#[derive(Clone, Debug)]
pub struct UlclSession {
    pub name: String,
    pub ue_v4: String,
    /// The UE's IPv6 /64, if it has one.
    pub ue_v6: Option<String>,
    pub dl_teid: u32,
    pub qfi: u8,
    pub edge: Vec<String>,
    pub catch_all: CatchAll,
    pub imsi: String,
    /// The User ID's MSISDN and IMEI, if the SMF names them.
    pub msisdn: Option<String>,
    pub imei: Option<String>,
    /// Periodic usage reports every this many seconds.
    pub report_period_secs: Option<u32>,
    /// A usage report when this many octets (total) were counted.
    pub volume_threshold: Option<u64>,
}

impl UlclSession {
    /// UE `index` (from 0) of the simulator's numbering: IPv4 `198.19.0.(index+1)`, downlink
    /// TEID `DL_TEID_BASE + index`, QFI [`QFI`], edge prefixes `edge`; a PSA catch-all
    /// re-tunnels to the core stand-in with TEID `UL_TEID_BASE + index`, which it answers
    /// on `DL_TEID_BASE + index`.
    pub fn numbered(index: u32, edge: &[&str], catch_all_psa: bool) -> UlclSession {
        let n = index + 1;
        UlclSession {
            name: format!("ue{n}"),
            ue_v4: format!("198.19.{}.{}", n >> 8, n & 0xff),
            ue_v6: None,
            dl_teid: DL_TEID_BASE + index,
            qfi: QFI,
            edge: edge.iter().map(|s| s.to_string()).collect(),
            catch_all: if catch_all_psa {
                CatchAll::Psa {
                    teid: UL_TEID_BASE + index,
                    addr: UPF.v4.to_string(),
                }
            } else {
                CatchAll::Pass
            },
            imsi: imsi(n),
            msisdn: None,
            imei: None,
            report_period_secs: None,
            volume_threshold: None,
        }
    }

    /// With the UE's IPv6 /64 of the simulator's numbering (`2001:db8:100:<index>::/64`).
    pub fn with_ipv6(mut self, index: u32) -> UlclSession {
        self.ue_v6 = Some(format!("2001:db8:100:{index:x}::/64"));
        self
    }

    /// The SMF's `establish` command.
    pub fn to_json(&self) -> Value {
        let catch_all = match &self.catch_all {
            CatchAll::Pass => json!({"mode": "pass"}),
            CatchAll::Psa { teid, addr } => json!({"mode": "psa", "teid": teid, "addr": addr}),
        };
        let mut urr = json!({});
        if let Some(p) = self.report_period_secs {
            urr["period"] = p.into();
        }
        if let Some(v) = self.volume_threshold {
            urr["volume_threshold"] = v.into();
        }
        let mut cmd = json!({
            "cmd": "establish",
            "name": self.name,
            "ue_v4": self.ue_v4,
            "gnb": GNB.v4,
            "dl_teid": self.dl_teid,
            "qfi": self.qfi,
            "edge": self.edge,
            "imsi": self.imsi,
            "catch_all": catch_all,
            "urr": urr,
        });
        if let Some(v6) = &self.ue_v6 {
            cmd["ue_v6"] = v6.clone().into();
        }
        if let Some(m) = &self.msisdn {
            cmd["msisdn"] = m.clone().into();
        }
        if let Some(i) = &self.imei {
            cmd["imei"] = i.clone().into();
        }
        cmd
    }
}

/// The usage reports' volume in a result (`usage_reports` of `delete` or `modify`, or
/// `reports`), summed over the reports: (uplink octets, downlink octets, uplink packets,
/// downlink packets).
pub fn usage_totals(reports: &Value) -> (u64, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    for r in reports.as_array().into_iter().flatten() {
        let v = &r["volume"];
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        t.0 += n("uplink");
        t.1 += n("downlink");
        t.2 += n("uplink_packets");
        t.3 += n("downlink_packets");
    }
    t
}
