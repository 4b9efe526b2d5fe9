//! Network namespaces joined by veth pairs: creating them (removing stale ones of the same
//! name first), running commands and threads inside them, and deleting them when dropped.
//! Also the lock that says one process has the testbed's fixed names in use.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, bail};
use mecgw_cmd::{run, run_quiet, succeeds};

use crate::NAMESPACES;

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
    /// Holds `lock` until the namespaces are deleted.
    pub(crate) fn hold(&mut self, lock: TestbedLock) {
        self._lock = Some(lock);
    }

    /// Leaves the namespaces in place (for `mecgw-testbed up`).
    pub fn keep(mut self) {
        self.namespaces.clear();
    }
}

/// Where gateways in test namespaces pin their XDP links and program arrays (`[xdp] pin_dir`):
/// a BPF filesystem of its own outside /sys, because `ip netns exec` mounts a fresh sysfs
/// over /sys, which hides the host's /sys/fs/bpf from the programs it runs. Mounted by
/// [`pin_root`].
pub const PIN_ROOT: &str = "/run/mecgw-test/bpf";

/// Mounts a BPF filesystem at [`PIN_ROOT`] unless one is there; returns the path.
pub fn pin_root() -> anyhow::Result<&'static str> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    std::fs::create_dir_all(PIN_ROOT).with_context(|| format!("creating {PIN_ROOT}"))?;
    let path = std::ffi::CString::new(PIN_ROOT)?;
    // SAFETY: `statfs` is plain old data, all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and outlives the call; `st` is a valid out-pointer.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    if rc == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(PIN_ROOT);
    }
    // World-writable and sticky, as /sys/fs/bpf is on Debian: a test's unprivileged daemon
    // (CAP_BPF, no file capabilities) pins there too.
    run(&[
        "mount",
        "-t",
        "bpf",
        "-o",
        "mode=1777",
        "mecgw-test-bpf",
        PIN_ROOT,
    ])?;
    Ok(PIN_ROOT)
}

/// Removes what a gateway in namespace `ns` pinned under [`PIN_ROOT`] (the gateway's
/// `datapath::pins` keeps a namespace's pins in `net-<netns inode>`), so that a gateway killed
/// there, or stopped with `keep_datapath`, leaves no programs and maps behind in the kernel
/// once the namespace is gone. Nothing there is fine.
pub fn remove_pins(ns: &str) {
    use std::os::unix::fs::MetadataExt as _;
    if let Ok(m) = std::fs::metadata(Path::new("/run/netns").join(ns)) {
        let _ = std::fs::remove_dir_all(Path::new(PIN_ROOT).join(format!("net-{}", m.ino())));
    }
}

/// Deletes the namespaces that exist among `namespaces`; missing ones are fine.
pub fn delete_all(namespaces: &[&str]) -> anyhow::Result<()> {
    for ns in namespaces {
        if succeeds(&["ip", "netns", "pids", ns]) {
            remove_pins(ns);
            run(&["ip", "netns", "delete", ns])?;
            println!("    deleted namespace {ns}");
        }
    }
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            remove_pins(&ns);
            // Deleting the namespace also deletes the veth ends inside it.
            if let Err(e) = run(&["ip", "netns", "delete", &ns]) {
                eprintln!("testbed: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}

/// A network namespace of a test's or benchmark's own (not the testbed's fixed ones), named
/// `<prefix>-<pid>` so that parallel processes never share one; deleted when dropped.
#[derive(Debug)]
pub struct ScratchNetns(String);

impl ScratchNetns {
    /// Creates `<prefix>-<pid>` (deleting one of that name a crashed run of this process id
    /// left), with its loopback up.
    pub fn create(prefix: &str) -> anyhow::Result<ScratchNetns> {
        let name = format!("{prefix}-{}", std::process::id());
        if Path::new(&format!("/run/netns/{name}")).exists() {
            let _ = run_quiet(&["ip", "netns", "del", &name]);
        }
        run(&["ip", "netns", "add", &name])?;
        let ns = ScratchNetns(name);
        run(&["ip", "-n", ns.name(), "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NAME ARGS…`; the error carries `ip`'s own message.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let argv: Vec<&str> = ["ip", "-n", self.name()]
            .iter()
            .chain(args)
            .copied()
            .collect();
        run_quiet(&argv).map(drop)
    }

    /// `sysctl -w KNOB` (`name=value`) inside the namespace.
    pub fn sysctl(&self, knob: &str) -> anyhow::Result<()> {
        run_quiet(&["ip", "netns", "exec", self.name(), "sysctl", "-qw", knob]).map(drop)
    }

    /// The interface index and MAC address of `link` in the namespace.
    pub fn link(&self, link: &str) -> anyhow::Result<(u32, [u8; 6])> {
        let out = run_quiet(&["ip", "-n", self.name(), "-o", "link", "show", link])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let ifindex = text
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .with_context(|| format!("no interface index in {text:?}"))?;
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .with_context(|| format!("no MAC address in {text:?}"))?;
        let mut b = [0u8; 6];
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6 {
            bail!("a MAC address of {} parts: {mac}", parts.len());
        }
        for (byte, part) in b.iter_mut().zip(parts) {
            *byte = u8::from_str_radix(part, 16).with_context(|| format!("MAC {mac}"))?;
        }
        Ok((ifindex, b))
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = run_quiet(&["ip", "netns", "del", &self.0]);
    }
}

/// `ip netns exec NS PROGRAM ARGS…`.
pub fn netns_cmd(ns: &str, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program).args(args);
    c
}

/// Runs `f` on a thread that has entered network namespace `name` (from `ip netns add`).
/// Sockets that `f` creates stay in that namespace; the calling thread's namespace is
/// untouched.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd as _;
    let ns = File::open(format!("/run/netns/{name}"))
        .map_err(|e| anyhow::anyhow!("network namespace {name}: {e}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) on a namespace fd we own, for this thread only; no memory
                // is shared with the kernel.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {name}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread in {name} panicked"))?
    })
}
