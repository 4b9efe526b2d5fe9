//! The four-namespace testbed: `ran` (gNB and UEs), `mec` (the gateway host), `edge` (local
//! edge services) and `core` (the central UPF and the cloud), joined by veth pairs; and the
//! gateway configuration that fits it.
//!
//! ```text
//!  mecgw-tb-ran            mecgw-tb-mec                      mecgw-tb-edge
//!  mgw-tb-gnb ──N3── mgw-tb-n3     mgw-tb-local ──local── mgw-tb-svc
//!  198.18.0.1        198.18.0.2    198.18.1.1              198.18.1.2
//!                                  mgw-tb-core ──core──── mgw-tb-upf   mecgw-tb-core
//!                                  198.18.2.1              198.18.2.2
//! ```
//!
//! The gNB sends GTP-U to the UPF (198.18.2.2) through the gateway host, which routes it; the
//! gateway's XDP programs on `mgw-tb-n3` and `mgw-tb-local` take what the rules steer locally.
//! UEs are 198.19.0.0/16 and 2001:db8:100::/48 (a /64 each). Every address is from the
//! benchmark (198.18.0.0/15) and documentation (2001:db8::/32) ranges and lives only inside
//! these namespaces. MACs are fixed so that the gateway's tables can name next hops.
//!
//! A [`Testbed`] deletes every namespace it created when dropped, also when a step fails or
//! the user presses Ctrl-C (see [`interrupted`]). Stale namespaces left by a killed run are
//! removed before new ones are made. The names are fixed, so [`up`] first takes a lock
//! ([`TestbedLock`], an exclusive `flock` on [`LOCK_PATH`]) that it holds while the testbed
//! exists: a second process (`cargo xtask demo` while the tests run) waits for the first
//! one's testbed to go instead of deleting its namespaces as stale. Used by `cargo xtask testbed|demo` (through the
//! `mecgw-testbed` and `mecgw-demo` binaries) and by the end-to-end tests.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions, TryLockError},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

// Tests and tools run their own commands through these too.
pub use mecgw_cmd::{capture, run};
use mecgw_cmd::{run_quiet, succeeds};

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

/// The file whose `flock` says a process has the testbed's namespaces up.
pub const LOCK_PATH: &str = "/run/mecgw-testbed.lock";

/// An exclusive lock on [`LOCK_PATH`], held until dropped (or the process exits: the kernel
/// releases a `flock` with the last descriptor, so a killed holder never leaves it taken).
#[derive(Debug)]
pub struct TestbedLock {
    _file: File,
}

/// Takes the testbed lock, waiting (and saying so) while another process holds it.
///
/// `flock` locks belong to the open file, not the process: a second lock taken in the same
/// process while the first is held would wait for ever. In-process users serialise
/// themselves (the tests hold a mutex around each testbed), as they did before the lock.
pub fn lock() -> anyhow::Result<TestbedLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("opening the testbed lock {LOCK_PATH}"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            println!(
                "    waiting: another process has the testbed up (lock {LOCK_PATH}; its \
                 namespaces are {})",
                NAMESPACES.join(", ")
            );
            file.lock()
                .with_context(|| format!("waiting for the testbed lock {LOCK_PATH}"))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {LOCK_PATH}"));
        }
    }
    Ok(TestbedLock { _file: file })
}

/// A set of namespaces joined by veth pairs. Dropping it removes them all (and then releases
/// the testbed lock, if it holds one).
pub struct Testbed {
    namespaces: Vec<String>,
    // Declared after `namespaces` and released only after `Drop::drop` deleted them.
    _lock: Option<TestbedLock>,
}

/// One end of a veth pair: the namespace it lives in, its name, its MAC (or the kernel's
/// random one) and its addresses (CIDR, IPv4 or IPv6).
pub struct Endpoint<'a> {
    pub netns: &'a str,
    pub link: &'a str,
    pub mac: Option<&'a str>,
    pub addrs: &'a [&'a str],
}

impl Testbed {
    /// Creates `namespaces` (removing stale ones with the same names first).
    pub fn new(namespaces: &[&str]) -> anyhow::Result<Self> {
        for ns in namespaces {
            anyhow::ensure!(
                ns.starts_with("mecgw-"),
                "namespace {ns} lacks the mecgw- prefix"
            );
            if succeeds(&["ip", "netns", "pids", ns]) {
                println!("    removing stale namespace {ns}");
                run(&["ip", "netns", "delete", ns])?;
            }
        }
        let mut bed = Testbed {
            namespaces: Vec::new(),
            _lock: None,
        };
        for ns in namespaces {
            run(&["ip", "netns", "add", ns]).with_context(|| format!("creating {ns}"))?;
            bed.namespaces.push((*ns).to_string());
            bed.exec(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(bed)
    }

    /// Joins `a` and `b` with a veth pair and brings both ends up with their addresses.
    pub fn link(&self, a: &Endpoint<'_>, b: &Endpoint<'_>) -> anyhow::Result<()> {
        run(&[
            "ip", "link", "add", a.link, "netns", a.netns, "type", "veth", "peer", "name", b.link,
            "netns", b.netns,
        ])
        .with_context(|| format!("creating veth {} <-> {}", a.link, b.link))?;
        for end in [a, b] {
            if let Some(mac) = end.mac {
                self.exec(end.netns, &["ip", "link", "set", end.link, "address", mac])?;
            }
            for addr in end.addrs {
                let mut argv = vec!["ip", "addr", "add", addr, "dev", end.link];
                if addr.contains(':') {
                    // No duplicate-address detection: the address is usable at once.
                    argv.push("nodad");
                }
                self.exec(end.netns, &argv)?;
            }
            self.exec(end.netns, &["ip", "link", "set", end.link, "up"])?;
        }
        Ok(())
    }

    /// Runs `argv` inside `netns` quietly; fails, with its stderr, if it exits non-zero.
    pub fn exec(&self, netns: &str, argv: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["ip", "netns", "exec", netns];
        full.extend_from_slice(argv);
        run_quiet(&full).map(drop)
    }
}

impl Testbed {
    /// Leaves the namespaces in place (for `mecgw-testbed up`).
    pub fn keep(mut self) {
        self.namespaces.clear();
    }
}

/// Deletes the namespaces that exist among `namespaces`; missing ones are fine.
pub fn delete_all(namespaces: &[&str]) -> anyhow::Result<()> {
    for ns in namespaces {
        if succeeds(&["ip", "netns", "pids", ns]) {
            run(&["ip", "netns", "delete", ns])?;
            println!("    deleted namespace {ns}");
        }
    }
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Deleting the namespace also deletes the veth ends inside it.
            if let Err(e) = run(&["ip", "netns", "delete", &ns]) {
                eprintln!("testbed: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}

pub const NS_RAN: &str = "mecgw-tb-ran";
pub const NS_MEC: &str = "mecgw-tb-mec";
pub const NS_EDGE: &str = "mecgw-tb-edge";
pub const NS_CORE: &str = "mecgw-tb-core";
pub const NAMESPACES: [&str; 4] = [NS_RAN, NS_MEC, NS_EDGE, NS_CORE];

/// One end of a testbed link.
pub struct Port {
    pub netns: &'static str,
    pub link: &'static str,
    pub mac: &'static str,
    pub v4: &'static str,
    pub v6: &'static str,
}

pub const GNB: Port = Port {
    netns: NS_RAN,
    link: "mgw-tb-gnb",
    mac: "02:6d:67:00:00:01",
    v4: "198.18.0.1",
    v6: "2001:db8:0:3::1",
};
pub const N3: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-n3",
    mac: "02:6d:67:00:00:02",
    v4: "198.18.0.2",
    v6: "2001:db8:0:3::2",
};
pub const LOCAL: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-local",
    mac: "02:6d:67:00:01:01",
    v4: "198.18.1.1",
    v6: "2001:db8:0:1::1",
};
pub const EDGE: Port = Port {
    netns: NS_EDGE,
    link: "mgw-tb-svc",
    mac: "02:6d:67:00:01:02",
    v4: "198.18.1.2",
    v6: "2001:db8:0:1::2",
};
pub const CORE: Port = Port {
    netns: NS_MEC,
    link: "mgw-tb-core",
    mac: "02:6d:67:00:02:01",
    v4: "198.18.2.1",
    v6: "2001:db8:0:2::1",
};
pub const UPF: Port = Port {
    netns: NS_CORE,
    link: "mgw-tb-upf",
    mac: "02:6d:67:00:02:02",
    v4: "198.18.2.2",
    v6: "2001:db8:0:2::2",
};

pub const UE_POOL_V4: &str = "198.19.0.0/16";
pub const UE_POOL_V6: &str = "2001:db8:100::/48";

/// Brings the testbed up. Dropping the result tears it down.
pub fn up() -> anyhow::Result<Testbed> {
    println!("==> testbed: namespaces {}", NAMESPACES.join(", "));
    // Taken before the stale-namespace check: namespaces another live process holds the lock
    // for are not stale.
    let lock = lock()?;
    let mut bed = Testbed::new(&NAMESPACES)?;
    bed._lock = Some(lock);
    for (a, b) in [(&GNB, &N3), (&LOCAL, &EDGE), (&CORE, &UPF)] {
        let a_addrs = [format!("{}/24", a.v4), format!("{}/64", a.v6)];
        let b_addrs = [format!("{}/24", b.v4), format!("{}/64", b.v6)];
        let a_refs: Vec<&str> = a_addrs.iter().map(String::as_str).collect();
        let b_refs: Vec<&str> = b_addrs.iter().map(String::as_str).collect();
        bed.link(
            &Endpoint {
                netns: a.netns,
                link: a.link,
                mac: Some(a.mac),
                addrs: &a_refs,
            },
            &Endpoint {
                netns: b.netns,
                link: b.link,
                mac: Some(b.mac),
                addrs: &b_refs,
            },
        )?;
    }
    // The gateway host routes between N3, the local services and the core.
    bed.exec(NS_MEC, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    bed.exec(NS_MEC, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    // The gNB reaches the UPF through the gateway host, and the UPF answers the same way.
    bed.exec(NS_RAN, &["ip", "route", "add", "default", "via", N3.v4])?;
    bed.exec(
        NS_RAN,
        &["ip", "-6", "route", "add", "default", "via", N3.v6],
    )?;
    bed.exec(NS_CORE, &["ip", "route", "add", "default", "via", CORE.v4])?;
    bed.exec(
        NS_CORE,
        &["ip", "-6", "route", "add", "default", "via", CORE.v6],
    )?;
    // Local services answer UEs through the gateway, whose downlink program encapsulates.
    bed.exec(
        NS_EDGE,
        &["ip", "route", "add", UE_POOL_V4, "via", LOCAL.v4],
    )?;
    bed.exec(
        NS_EDGE,
        &["ip", "-6", "route", "add", UE_POOL_V6, "via", LOCAL.v6],
    )?;
    // veth delivers XDP-redirected frames only to a peer running NAPI: GRO turns it on.
    for p in [&GNB, &EDGE] {
        bed.exec(p.netns, &["ethtool", "-K", p.link, "gro", "on"])?;
    }
    // A veth sender with checksum offload leaves L4 checksums partial (the "hardware" never
    // finishes them), and XDP sees the frame as is: the downlink program would encapsulate a
    // packet whose inner checksum is wrong. A real NIC delivers complete checksums, so the
    // edge service computes them in software here (see README, known limitations).
    bed.exec(EDGE.netns, &["ethtool", "-K", EDGE.link, "tx", "off"])?;
    // The same for the gNB: the userspace datapath reads frames through AF_PACKET, which sees
    // the bytes without the kernel's "checksum still to do" mark, and hands those it passes
    // back to the kernel through a TUN, where the mark is gone: an unfinished outer checksum
    // would reach the core as wrong. A real gNB's NIC puts complete checksums on the wire.
    bed.exec(GNB.netns, &["ethtool", "-K", GNB.link, "tx", "off"])?;
    Ok(bed)
}

/// The gNB simulator's numbering convention (see `mecgw-gnbsim`): UE `i` has uplink TEID
/// `UL_TEID_BASE + i` and downlink TEID `DL_TEID_BASE + i`.
pub const UL_TEID_BASE: u32 = 0x1000;
pub const DL_TEID_BASE: u32 = 0x2000;
/// QFI the simulator puts in uplink containers and expects in downlink ones.
pub const QFI: u8 = 9;
/// The operations port of `mecgw run` inside the `mec` namespace.
pub const METRICS: &str = "127.0.0.1:9464";

/// The datapath a testbed gateway runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
         [xdp]\nmode = \"{mode}\"\nfallback_to_generic = false\n\n\
         [datapath]\nkind = \"{kind}\"\ntables = \"tables.toml\"\n\n\
         [state]\ndir = \"{state}\"\n\n[metrics]\nlisten = \"{METRICS}\"\n",
        n3 = N3.link,
        local = LOCAL.link,
        state = dir.join("state").display(),
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

/// `ip netns exec NS PROGRAM ARGS…`.
pub fn netns_cmd(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program).args(args);
    c
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
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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
        let mut gw = Gateway { children, mecgw: 0 };
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
        self.mecgw = self.children.spawn(
            "mecgw",
            netns_cmd(
                NS_MEC,
                &bin.join("mecgw"),
                &["run", "--config", &config.to_string_lossy()],
            ),
        )?;
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
