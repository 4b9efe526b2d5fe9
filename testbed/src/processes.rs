//! The processes on the testbed: the gateway with its edge services and core stand-in, the
//! gNB simulator, and what a run observes of them (the operations port, attached programs).
//! Every process started here is killed when its guard drops; SIGINT and SIGTERM only set a
//! flag ([`catch_interrupts`]), so that the guards get to clean up.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use mecgw_cmd::capture;

use crate::{METRICS, NS_CORE, NS_EDGE, NS_MEC, NS_RAN, Port, netns_cmd};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set a flag, so that guards get to clean up.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// True if `ip` shows an XDP program on `port`'s link.
pub fn xdp_attached(port: &Port) -> anyhow::Result<bool> {
    let out = capture(&[
        "ip", "-netns", port.netns, "-details", "link", "show", port.link,
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("prog/xdp"))
}

/// GET `path` from the gateway's operations port inside `mec`.
pub fn ops_get(path: &str) -> anyhow::Result<Option<String>> {
    let out = capture(&[
        "ip",
        "netns",
        "exec",
        NS_MEC,
        "curl",
        "-sf",
        &format!("http://{METRICS}{path}"),
    ])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The value of `name{labels}` in Prometheus text, or 0.
pub fn metric(text: &str, name: &str, labels: &str) -> u64 {
    sample_value(text, &format!("{name}{{{labels}}}")).unwrap_or(0)
}

/// The value of the sample line `series` (`name{labels}`, or `name` without labels) in
/// Prometheus or OpenMetrics text (`/metrics`), if it is there and a whole number.
pub fn sample_value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Background processes; every one still running is killed on drop.
#[derive(Default)]
pub struct Children(Vec<(String, Child)>);

impl Children {
    /// Starts `cmd` (stdin closed); returns its handle.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<usize> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.0.push((name.to_string(), child));
        Ok(self.0.len() - 1)
    }

    /// The exit status of child `i`, if it has exited.
    pub fn exited(&mut self, i: usize) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.0[i].1.try_wait()?)
    }

    /// Sends SIGTERM to child `i` and waits up to `limit` for its exit.
    pub fn terminate(&mut self, i: usize, limit: Duration) -> anyhow::Result<ExitStatus> {
        let (name, child) = &mut self.0[i];
        // `ip netns exec` execs the program, so the pid is the program's own.
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                bail!("{name} did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to child `i`.
    pub fn signal(&self, i: usize, signal: libc::c_int) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.0[i].1.id()).context("pid out of range")?;
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A running gateway on the testbed, with its edge services and core stand-in.
pub struct Gateway {
    pub children: Children,
    pub mecgw: usize,
    /// Where mecgw's output goes (appended), if not to ours.
    log: Option<std::path::PathBuf>,
}

impl Gateway {
    /// Starts the edge services, the core (answering after `core_delay_ms`, with `core_args`
    /// added) and `mecgw run` with the config in `dir`, and waits until the gateway is ready.
    /// `bin` holds the binaries.
    pub fn start(
        bin: &Path,
        dir: &Path,
        core_delay_ms: u64,
        core_args: &[&str],
    ) -> anyhow::Result<Gateway> {
        let mut gw = Gateway::start_services(bin, core_delay_ms, core_args)?;
        gw.restart(bin, dir)?;
        Ok(gw)
    }

    /// The edge services and the core, without mecgw yet.
    fn start_services(
        bin: &Path,
        core_delay_ms: u64,
        core_args: &[&str],
    ) -> anyhow::Result<Gateway> {
        let mut children = Children::default();
        children.spawn(
            "edge services",
            netns_cmd(NS_EDGE, &bin.join("mecgw-edge"), &[]),
        )?;
        let delay = core_delay_ms.to_string();
        let mut args = vec!["--delay-ms", delay.as_str()];
        args.extend_from_slice(core_args);
        children.spawn(
            "core stand-in",
            netns_cmd(NS_CORE, &bin.join("mecgw-core"), &args),
        )?;
        Ok(Gateway {
            children,
            mecgw: 0,
            log: None,
        })
    }

    /// Like [`Gateway::start`], with mecgw's stdout and stderr appended to `log` (for tests
    /// that read what it logged).
    pub fn start_logging(
        bin: &Path,
        dir: &Path,
        core_delay_ms: u64,
        core_args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Gateway> {
        let mut gw = Gateway::start_services(bin, core_delay_ms, core_args)?;
        gw.log = Some(log.to_path_buf());
        gw.restart(bin, dir)?;
        Ok(gw)
    }

    /// Waits until `/readyz` answers 200, or the gateway exits, or 30 s pass.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let gw = self;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            anyhow::ensure!(!interrupted(), "interrupted");
            if let Some(status) = gw.children.exited(gw.mecgw)? {
                bail!("mecgw exited before it was ready ({status}); see its log above");
            }
            if ops_get("/readyz")?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("mecgw was not ready within 30 s")
    }

    /// Starts `mecgw run` with the config in `dir` (again, after [`Gateway::stop`]) and waits
    /// until it is ready.
    pub fn restart(&mut self, bin: &Path, dir: &Path) -> anyhow::Result<()> {
        let config = dir.join("mecgw.toml");
        let mut cmd = netns_cmd(
            NS_MEC,
            &bin.join("mecgw"),
            &["run", "--config", &config.to_string_lossy()],
        );
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        self.mecgw = self.children.spawn("mecgw", cmd)?;
        self.wait_ready()
    }

    /// Stops the gateway with SIGTERM, as an operator does.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.children.terminate(self.mecgw, Duration::from_secs(10))
    }
}

/// Runs the gNB simulator in `ran` with `args` and returns its JSON report.
pub fn gnbsim(bin: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = netns_cmd(NS_RAN, &bin.join("mecgw-gnbsim"), args)
        .output()
        .context("running mecgw-gnbsim")?;
    if !out.status.success() {
        bail!(
            "mecgw-gnbsim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "simulator output {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A tshark capture on one link of the testbed, written to a file: an independent reader of
/// what crossed it. Dropped unstopped, the capture is killed.
pub struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing on `port`'s link into `file`, and returns once tshark captures.
    pub fn start(port: &Port, file: &Path) -> anyhow::Result<Capture> {
        let child = Command::new("ip")
            .args(["netns", "exec", port.netns, "tshark", "-q", "-i", port.link])
            .arg("-w")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tshark (installed by cargo xtask setup)")?;
        let capture = Capture {
            child,
            file: file.to_path_buf(),
        };
        // tshark writes the capture file's header once it is capturing.
        let start = Instant::now();
        while std::fs::metadata(file).map_or(0, |m| m.len()) == 0 {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("tshark never started capturing on {}", port.link);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(capture)
    }

    /// Stops the capture (after a moment for what is in flight) and returns its file.
    pub fn stop(mut self) -> anyhow::Result<std::path::PathBuf> {
        std::thread::sleep(Duration::from_millis(300));
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child, not yet reaped; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait().context("waiting for tshark")?;
        Ok(self.file.clone())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
