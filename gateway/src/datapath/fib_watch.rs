//! Tells the programs' next-hop cache when the kernel's FIB may have changed.
//!
//! The programs keep the FIB's answers per destination (`ebpf/src/programs/fib.rs`), tagged
//! with the FIB serial ([`names::MAP_FIB_SERIAL`]) they were asked under. A thread here listens
//! to rtnetlink's link, address, route, neighbour and nexthop groups of the network namespace
//! the fast path was loaded in, and moves the serial after every burst of reports, so that
//! each cached answer is asked again from the next packet on. What a report that never comes
//! (or a namespace nobody watches) can cost is bounded in the programs: an answer serves for
//! at most a second.
//!
//! The reports are not parsed: any of them may change a next hop, and asking the FIB again
//! costs one lookup per destination and CPU.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use aya::maps::{Array, MapData};
use mecgw_ebpf::names;
use tracing::{debug, warn};

use super::DatapathError;

/// `RTNLGRP_NEXTHOP`: nexthop objects, a group past the 32 of the bind mask.
const RTNLGRP_NEXTHOP: libc::c_int = 32;

/// What the next-hop cache's watch has done, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibWatchStatus {
    /// Times the FIB serial moved (each a burst of reports, or [`super::FastPath::fib_changed`]).
    pub changes: u64,
    /// Whether the thread listens to rtnetlink (false: it could not start, or stopped on an
    /// error; kept answers then follow a change within 1 s).
    pub watching: bool,
}

/// The FIB serial, shared by the watcher thread and [`super::FastPath::fib_changed`]. The
/// serial is the number of moves, counted in `1..=u32::MAX` (0 keeps nothing).
#[derive(Clone)]
pub(super) struct FibSerial {
    /// Held while a move writes the map, so that moves land in order.
    map: Arc<Mutex<Array<MapData, u32>>>,
    moves: Arc<AtomicU64>,
    watching: Arc<AtomicBool>,
}

/// The serial after `moves` moves.
fn serial_after(moves: u64) -> u32 {
    match moves {
        0 => 0,
        // Wraps from u32::MAX to 1, never to 0.
        m => ((m - 1) % u64::from(u32::MAX)) as u32 + 1,
    }
}

impl FibSerial {
    pub(super) fn new(map: Array<MapData, u32>) -> Self {
        FibSerial {
            map: Arc::new(Mutex::new(map)),
            moves: Arc::new(AtomicU64::new(0)),
            watching: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn status(&self) -> FibWatchStatus {
        FibWatchStatus {
            // The first move sets the serial at start; the others drop kept answers.
            changes: self.moves.load(Ordering::Relaxed).saturating_sub(1),
            watching: self.watching.load(Ordering::Relaxed),
        }
    }

    /// Moves the serial on: every answer the programs keep is asked again.
    pub(super) fn advance(&self) -> Result<u32, DatapathError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| DatapathError::Poisoned("a FIB serial update"))?;
        let moves = self.moves.load(Ordering::Relaxed) + 1;
        let next = serial_after(moves);
        map.set(0, next, 0).map_err(|source| DatapathError::Map {
            name: names::MAP_FIB_SERIAL,
            source,
        })?;
        self.moves.store(moves, Ordering::Release);
        Ok(next)
    }

    /// The serial last written (0: none yet).
    pub(super) fn current(&self) -> u32 {
        serial_after(self.moves.load(Ordering::Acquire))
    }
}

/// The watcher thread; stopped and joined on drop.
pub(super) struct FibWatch {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A non-blocking rtnetlink socket subscribed to every group that can change a next hop.
fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(last_error("rtnetlink socket"));
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero bytes are a valid `sockaddr_nl`.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = (libc::RTMGRP_LINK
        | libc::RTMGRP_NEIGH
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: `addr` is a valid `sockaddr_nl` of the length passed.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(last_error("binding the rtnetlink socket to its groups"));
    }
    let group = RTNLGRP_NEXTHOP;
    // SAFETY: an int option of the size passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&raw const group).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        // Kernels before 5.3 have no nexthop objects, so nothing to miss.
        debug!(error = %last_error("nexthop group"), "FIB watch without nexthop reports");
    }
    Ok(sock)
}

impl FibWatch {
    /// Subscribes in the calling thread's network namespace, sets the first serial, and
    /// starts the thread that moves it on every report.
    pub(super) fn start(serial: FibSerial) -> io::Result<FibWatch> {
        let sock = subscribe()?;
        // SAFETY: plain eventfd(2); the result is checked before it is owned.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(last_error("eventfd"));
        }
        // SAFETY: a new descriptor nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        serial
            .advance()
            .map_err(|e| io::Error::other(format!("the first FIB serial: {e}")))?;
        let stop_fd = stop.try_clone()?;
        serial.watching.store(true, Ordering::Relaxed);
        let watching = Arc::clone(&serial.watching);
        let thread = std::thread::Builder::new()
            .name("mecgw-fib-watch".into())
            .spawn(move || {
                watch(&sock, &stop_fd, &serial);
                serial.watching.store(false, Ordering::Relaxed);
            })
            .inspect_err(|_| watching.store(false, Ordering::Relaxed))?;
        Ok(FibWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FibWatch {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a live u64 to our eventfd.
        let r = unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if r != 8 {
            warn!(error = %last_error("stopping the FIB watch"), "the FIB watch thread is left running");
            return;
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the FIB watch thread panicked");
        }
    }
}

/// Waits for reports (or the stop), drains them, and moves the serial once per burst.
fn watch(sock: &OwnedFd, stop: &OwnedFd, serial: &FibSerial) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of the length passed.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "FIB watch stopped: next hops are kept for at most 1 s");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        // Drain everything queued: one move covers the whole burst.
        loop {
            // SAFETY: `buf` is a live buffer of the length passed.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                // Reports were lost to a full socket buffer: the move below covers them.
                Some(libc::ENOBUFS) => continue,
                _ => {
                    warn!(error = %e, "FIB watch stopped: next hops are kept for at most 1 s");
                    return;
                }
            }
        }
        if let Err(e) = serial.advance() {
            warn!(error = %e, "FIB serial not moved: next hops are kept for at most 1 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::serial_after;

    #[test]
    fn the_serial_counts_moves_and_skips_zero_when_it_wraps() {
        assert_eq!(serial_after(0), 0);
        assert_eq!(serial_after(1), 1);
        assert_eq!(serial_after(u64::from(u32::MAX)), u32::MAX);
        assert_eq!(serial_after(u64::from(u32::MAX) + 1), 1);
        assert_eq!(serial_after(2 * u64::from(u32::MAX)), u32::MAX);
    }
}
