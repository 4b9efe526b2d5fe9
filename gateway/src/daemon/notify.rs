//! systemd's service notification protocol (sd_notify(3)), written by hand: one datagram per
//! state change to the AF_UNIX socket named by `NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`).
//!
//! This module owns that socket and the watchdog keep-alive. It never blocks the daemon and
//! never fails a start: without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`)
//! every call is a no-op, and a datagram that cannot be sent is logged and dropped.
#![forbid(unsafe_code)]

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

use tracing::{debug, warn};

/// Where systemd listens for this service's notifications.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names; a no-op one if it is unset or unusable (said once).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        match connect(&name) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                warn!(notify_socket = ?name, error = %e, "NOTIFY_SOCKET is set but unusable: systemd will not hear that mecgw is ready");
                Notifier { target: None }
            }
        }
    }

    /// Everything configured is serving.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// Draining has started: the service is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// The watchdog keep-alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to send [`Notifier::watchdog`]: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    /// advises; `None` without a watchdog, or when `WATCHDOG_PID` names another process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        if let Some(pid) = std::env::var_os("WATCHDOG_PID")
            && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        match socket.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => debug!(message, "notified systemd"),
            Err(e) => warn!(error = %e, message, "could not notify systemd"),
        }
    }
}

/// An unbound, non-blocking datagram socket and the address `name` gives.
fn connect(name: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = name.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', abstract_name)) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        Some((b'/', _)) => SocketAddr::from_pathname(std::path::Path::new(name))?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name starting with '@'",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // systemd reads its socket promptly; if it ever does not, a lost notification is better
    // than a daemon stuck in send.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let (socket, addr) = connect(path.as_os_str()).unwrap();
        let n = Notifier {
            target: Some((socket, addr)),
        };
        n.ready();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        let name = format!("mecgw-notify-test-{}", std::process::id());
        let abstract_addr = {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let (socket, addr) = connect(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        let n = Notifier {
            target: Some((socket, addr)),
        };
        n.stopping();
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=draining");
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert!(connect(std::ffi::OsStr::new("notify")).is_err());
        assert!(connect(std::ffi::OsStr::new("")).is_err());
    }
}
