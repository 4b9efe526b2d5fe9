//! The Linux capabilities `mecgw run` needs, and giving them up once they are used.
//!
//! This module owns two things: the check before the datapath starts, which names each
//! missing capability and what needs it (instead of an EPERM, or a verifier log, from deep in
//! the loader), and [`drop_all`], which empties the capability sets of every thread of the
//! process once the XDP programs are attached and the tables installed. It never raises a
//! capability and never changes user or group ids.
//!
//! What needs what (measured as an unprivileged user on kernel 6.18, see README "Running
//! without root"): creating the maps and loading the programs needs CAP_BPF; the verifier
//! accepts the programs' pointer arithmetic only with CAP_PERFMON; loading networking
//! programs and attaching them to interfaces needs CAP_NET_ADMIN. After that every map is
//! written through file descriptors the process holds, which needs no capability, and the
//! programs detach when their bpf_link descriptors close. The userspace datapath needs
//! CAP_NET_RAW (AF_PACKET) and CAP_NET_ADMIN (TUN, `ip rule`), also at stop, so it keeps them.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::DatapathKind;

/// A capability the datapath may need: its number (linux/capability.h) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cap(u32, &'static str);

const CAP_NET_ADMIN: Cap = Cap(12, "CAP_NET_ADMIN");
const CAP_NET_RAW: Cap = Cap(13, "CAP_NET_RAW");
const CAP_SYS_ADMIN: Cap = Cap(21, "CAP_SYS_ADMIN");
const CAP_PERFMON: Cap = Cap(38, "CAP_PERFMON");
const CAP_BPF: Cap = Cap(39, "CAP_BPF");

/// What each datapath needs, with why; CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON
/// (it is what kernels before 5.8, which lack them, ask for).
fn needs(kind: DatapathKind) -> &'static [(Cap, Option<Cap>, &'static str)] {
    match kind {
        DatapathKind::Xdp => &[
            (
                CAP_BPF,
                Some(CAP_SYS_ADMIN),
                "to create the BPF maps and load the XDP programs",
            ),
            (
                CAP_PERFMON,
                Some(CAP_SYS_ADMIN),
                "for the verifier to accept the programs' packet pointer arithmetic",
            ),
            (
                CAP_NET_ADMIN,
                None,
                "to load networking programs and attach them to the interfaces",
            ),
        ],
        DatapathKind::Userspace => &[
            (
                CAP_NET_RAW,
                None,
                "to open AF_PACKET sockets on the interfaces",
            ),
            (
                CAP_NET_ADMIN,
                None,
                "to create the TUN device and add (and at stop remove) its ip rules",
            ),
        ],
    }
}

/// Why the datapath cannot start with this process's capabilities.
#[derive(Debug, thiserror::Error)]
#[error(
    "mecgw lacks {} in its effective capability set: {}. Run it as root, or grant \
     {} (systemd: AmbientCapabilities=; by hand: setpriv --inh-caps=… --ambient-caps=…)",
    .missing.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", "),
    .missing.iter().map(|(c, why)| format!("{c} is needed {why}")).collect::<Vec<_>>().join("; "),
    .all.join(", "),
)]
pub struct MissingCapabilities {
    /// Each missing capability and what needs it.
    missing: Vec<(&'static str, &'static str)>,
    /// Everything the datapath needs.
    all: Vec<&'static str>,
}

/// Checks that this thread's effective set holds what `kind` needs. Where the sets cannot be
/// read (no /proc), the check passes: the kernel still refuses, less clearly.
pub fn check(kind: DatapathKind) -> Result<(), MissingCapabilities> {
    let Some(effective) = sets().map(|s| s.effective) else {
        return Ok(());
    };
    let has = |c: Cap| effective & (1u64 << c.0) != 0;
    let missing: Vec<_> = needs(kind)
        .iter()
        .filter(|(cap, or, _)| !has(*cap) && !or.is_some_and(has))
        .map(|(cap, _, why)| (cap.1, *why))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingCapabilities {
            missing,
            all: needs(kind).iter().map(|(c, _, _)| c.1).collect(),
        })
    }
}

/// One thread's capability sets, from its /proc status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sets {
    permitted: u64,
    effective: u64,
}

/// The calling thread's sets.
fn sets() -> Option<Sets> {
    parse_sets(&std::fs::read_to_string("/proc/thread-self/status").ok()?)
}

fn parse_sets(status: &str) -> Option<Sets> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(Sets {
        permitted: field("CapPrm:")?,
        effective: field("CapEff:")?,
    })
}

/// Why the capabilities could not all be given up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// capset(2) refused in the calling thread.
    #[error("capset: {0}")]
    Capset(std::io::Error),
    /// Listing or signalling the process's threads failed.
    #[error("{0}")]
    Threads(std::io::Error),
    /// Some threads still hold capabilities after every attempt.
    #[error("threads {0:?} still hold capabilities")]
    Remaining(Vec<u32>),
}

/// The signal that asks a thread to empty its own sets: capabilities are per thread, and
/// capset(2) changes only the caller's, so every thread must make the call itself (what
/// glibc does for setuid, and libcap's psx for capabilities). Nothing else in mecgw uses
/// real-time signals.
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Threads that ran the handler since the last round.
static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn drop_in_this_thread(_signal: libc::c_int) {
    // capset is a plain system call: async-signal-safe. A failure leaves this thread's
    // capabilities, which the caller finds in /proc and reports.
    let _ = clear_this_thread();
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// linux/capability.h: `_LINUX_CAPABILITY_VERSION_3`, 64-bit sets in two 32-bit halves.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the calling thread's permitted, effective and inheritable sets (which empties
/// its ambient set too).
fn clear_this_thread() -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a version-3 header and two data structs, which both pointers
    // point to and which outlive the call; pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every thread's id, and whether it still holds a capability.
fn threads_holding() -> std::io::Result<Vec<u32>> {
    let mut holding = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread that exited meanwhile holds nothing.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if parse_sets(&status).is_some_and(|s| s != Sets::default()) {
            holding.push(tid);
        }
    }
    Ok(holding)
}

/// Empties the capability sets of every thread of the process, and checks in /proc that
/// none is left holding one.
pub fn drop_all() -> Result<(), DropError> {
    let signal = drop_signal();
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = drop_in_this_thread as extern "C" fn(libc::c_int) as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: the handler only makes a system call and bumps an atomic (async-signal-safe);
    // it stays installed, so a late signal never meets the default action (termination).
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(DropError::Threads(std::io::Error::last_os_error()));
    }
    clear_this_thread().map_err(DropError::Capset)?;
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    // Threads started meanwhile copy the sets of their creator, which may not have dropped
    // yet: go round until no thread holds anything (a handful of rounds at most).
    for _ in 0..10 {
        let holding = threads_holding().map_err(DropError::Threads)?;
        if holding.is_empty() {
            return Ok(());
        }
        HANDLED.store(0, Ordering::SeqCst);
        let mut sent = 0;
        for tid in holding {
            let Ok(tid) = libc::pid_t::try_from(tid) else {
                continue;
            };
            if tid == me {
                continue;
            }
            // SAFETY: tgkill only sends a signal to a thread of this process; the handler is
            // installed above. ESRCH (the thread has exited) is harmless.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) } == 0 {
                sent += 1;
            }
        }
        // Each signalled thread runs the handler as soon as it is scheduled; a thread that
        // exits first never does, so the wait is bounded and the next round looks again.
        for _ in 0..200 {
            if HANDLED.load(Ordering::SeqCst) >= sent {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    match threads_holding().map_err(DropError::Threads)? {
        holding if holding.is_empty() => Ok(()),
        holding => Err(DropError::Remaining(holding)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sets_are_read_from_proc_status() {
        let status = "Name:\tmecgw\nCapInh:\t0000000000000000\nCapPrm:\t000000c000001000\n\
                      CapEff:\t000000c000001000\nCapBnd:\t000001ffffffffff\n";
        let s = parse_sets(status).unwrap();
        assert_eq!(s.permitted, 0xc0_0000_1000);
        for cap in [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN] {
            assert_ne!(s.effective & (1 << cap.0), 0, "{}", cap.1);
        }
        assert_eq!(s.effective & (1 << CAP_SYS_ADMIN.0), 0);
        assert!(parse_sets("Name:\tx\n").is_none());
    }

    #[test]
    fn the_error_names_each_missing_capability_and_why() {
        let e = MissingCapabilities {
            missing: vec![("CAP_BPF", "to load")],
            all: vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"],
        }
        .to_string();
        assert!(e.starts_with(
            "mecgw lacks CAP_BPF in its effective capability set: CAP_BPF is needed to load."
        ));
        assert!(e.contains("grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"));
    }
}
