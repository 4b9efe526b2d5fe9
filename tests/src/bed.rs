//! A two-namespace bed for driving `mecgw run` as an operator does: a config file, signals,
//! the operations port. `gnb` (198.18.0.1) and `mec` (198.18.0.2, plus a veth pair for the
//! local-services link) are joined by veth; everything is deleted on drop, also when a test
//! fails. Needs root.
// Test support: a failed setup step is a failed test, and panicking with the command's
// output is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::mecgw_bin;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by veth: `gnb` (198.18.0.1) and `mec` (198.18.0.2, plus a dummy
/// local-services link). Deleted on drop.
pub struct Bed {
    pub gnb: String,
    pub mec: String,
    dir: tempfile::TempDir,
}

/// Runs `argv` quietly; panics, with its stderr, if it fails.
pub fn sh(argv: &[&str]) -> Output {
    mecgw_cmd::run_quiet(argv).unwrap_or_else(|e| panic!("{e:#}"))
}

impl Default for Bed {
    fn default() -> Self {
        Self::new()
    }
}

impl Bed {
    pub fn new() -> Bed {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let bed = Bed {
            gnb: format!("mecgw-t-{tag}-gnb"),
            mec: format!("mecgw-t-{tag}-mec"),
            dir: tempfile::tempdir().unwrap(),
        };
        sh(&["ip", "netns", "add", &bed.gnb]);
        sh(&["ip", "netns", "add", &bed.mec]);
        sh(&[
            "ip", "link", "add", "t-gnb", "netns", &bed.gnb, "type", "veth", "peer", "name",
            "t-n3", "netns", &bed.mec,
        ]);
        sh(&[
            "ip", "link", "add", "t-local", "netns", &bed.mec, "type", "veth", "peer", "name",
            "t-svc", "netns", &bed.mec,
        ]);
        for (ns, link, addr) in [
            (&bed.gnb, "t-gnb", Some("198.18.0.1/24")),
            (&bed.mec, "t-n3", Some("198.18.0.2/24")),
            (&bed.mec, "t-local", Some("198.18.1.1/24")),
            (&bed.mec, "t-svc", None),
            (&bed.gnb, "lo", None),
            (&bed.mec, "lo", None),
        ] {
            if let Some(a) = addr {
                sh(&["ip", "-n", ns, "addr", "add", a, "dev", link]);
            }
            sh(&["ip", "-n", ns, "link", "set", link, "up"]);
        }
        bed
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the config and a tables file with `rules` extra TOML.
    pub fn write(&self, rules: &str) -> PathBuf {
        std::fs::write(self.path("tables.toml"), tables(rules)).unwrap();
        let config = format!(
            "[interfaces]\nn3 = \"t-n3\"\nlocal = \"t-local\"\n\n[xdp]\nmode = \"native\"\n\
             pin_dir = \"{}\"\n\n\
             [datapath]\ntables = \"tables.toml\"\n\n[state]\ndir = \"{}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:9464\"\n",
            mecgw_testbed::pin_root().unwrap(),
            self.path("state").display()
        );
        std::fs::write(self.path("mecgw.toml"), config).unwrap();
        self.path("mecgw.toml")
    }

    pub fn start(&self, config: &Path) -> Daemon {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.mec])
            .arg(mecgw_bin().unwrap())
            .args(["run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon {
            child,
            mec: self.mec.clone(),
        }
    }

    pub fn http(&self, path: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.mec, "curl", "-s", "-f"])
            .arg(format!("http://127.0.0.1:9464{path}"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// GETs `path` on the operations port: (HTTP status, body), whatever the status (0 if
    /// nothing answered).
    pub fn http_status(&self, path: &str) -> (u16, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.mec,
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("http://127.0.0.1:9464{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn xdp_on(&self, link: &str) -> bool {
        let out = sh(&["ip", "-n", &self.mec, "-details", "link", "show", link]);
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    /// Scrapes /metrics until `series` has `value` (10 s at most); returns that scrape.
    pub fn wait_for_sample(&self, series: &str, value: u64) -> String {
        let start = Instant::now();
        loop {
            let m = self.http("/metrics").1;
            if sample(&m, series) == value {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{series} never reached {value}:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for /readyz to answer 200.
    pub fn wait_ready(&self, d: &mut Daemon) {
        let start = Instant::now();
        loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("mecgw exited early ({status}): {}", d.stderr());
            }
            if self.http("/readyz").0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mecgw never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // A daemon killed here left its programs pinned.
        mecgw_testbed::remove_pins(&self.mec);
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.gnb])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.mec])
            .status();
    }
}

pub struct Daemon {
    pub child: Child,
    mec: String,
}

impl Daemon {
    pub fn signal(&self, sig: libc::c_int) {
        // `ip netns exec` execs mecgw, so this pid is the daemon's own.
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child; no memory involved.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "mecgw ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if mecgw has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn stderr(&mut self) -> String {
        use std::io::Read as _;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = &self.mec;
    }
}

pub fn tables(rules: &str) -> String {
    format!(
        r#"[n3]
ifindex = 0
mac = "02:00:00:00:00:02"
next_hop_mac = "02:00:00:00:00:01"
ipv4 = "198.18.0.2"
mtu = 1500

[local]
ifindex = 0
mac = "02:00:00:00:01:01"
next_hop_mac = "02:00:00:00:01:02"

[[sessions]]
id = 1
uplink_teid = 0x1000
downlink_teid = 0x2000
ue_ipv4 = "198.19.0.1"
gnb = "198.18.0.1"
qfi = 9

[[rules]]
id = 10
priority = 10
action = "LOCAL"
dst = ["198.18.1.0/24"]
{rules}"#
    )
}

/// The value of a Prometheus sample line `name{labels}` (or `name` without labels); panics
/// if there is none.
pub fn sample(metrics: &str, series: &str) -> u64 {
    mecgw_testbed::sample_value(metrics, series)
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}
