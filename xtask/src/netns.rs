//! Network-namespace testbeds: created with `ip`, always project-prefixed, always removed.
//!
//! A [`Testbed`] deletes every namespace it created when dropped, also when a step fails or
//! the user presses Ctrl-C (see [`interrupted`]). Stale namespaces left by a killed run are
//! removed before new ones are made.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use crate::shell;

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

/// A set of namespaces joined by veth pairs. Dropping it removes them all.
pub struct Testbed {
    namespaces: Vec<String>,
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
            if shell::succeeds(&["ip", "netns", "pids", ns]) {
                println!("    removing stale namespace {ns}");
                shell::run(&["ip", "netns", "delete", ns])?;
            }
        }
        let mut bed = Testbed {
            namespaces: Vec::new(),
        };
        for ns in namespaces {
            shell::run(&["ip", "netns", "add", ns]).with_context(|| format!("creating {ns}"))?;
            bed.namespaces.push((*ns).to_string());
            bed.exec(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(bed)
    }

    /// Joins `a` and `b` with a veth pair and brings both ends up with their addresses.
    pub fn link(&self, a: &Endpoint<'_>, b: &Endpoint<'_>) -> anyhow::Result<()> {
        shell::run(&[
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

    /// Runs `argv` inside `netns`; fails if it exits non-zero.
    pub fn exec(&self, netns: &str, argv: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["ip", "netns", "exec", netns];
        full.extend_from_slice(argv);
        shell::run(&full)
    }
}

impl Testbed {
    /// Leaves the namespaces in place (for `cargo xtask testbed up`).
    pub fn keep(mut self) {
        self.namespaces.clear();
    }
}

/// Deletes the namespaces that exist among `namespaces`; missing ones are fine.
pub fn delete_all(namespaces: &[&str]) -> anyhow::Result<()> {
    for ns in namespaces {
        if shell::succeeds(&["ip", "netns", "pids", ns]) {
            shell::run(&["ip", "netns", "delete", ns])?;
            println!("    deleted namespace {ns}");
        }
    }
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            // Deleting the namespace also deletes the veth ends inside it.
            if let Err(e) = shell::run(&["ip", "netns", "delete", &ns]) {
                eprintln!("xtask: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}
