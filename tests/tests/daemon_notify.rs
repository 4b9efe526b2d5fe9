//! `mecgw run` under systemd's `Type=notify`, checked without systemd: the test binds the
//! AF_UNIX datagram socket systemd would, points `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) at
//! it, and reads what the daemon sends: READY=1 only once /readyz answers 200, WATCHDOG=1
//! while it runs, STOPPING=1 when SIGTERM starts the drain.
//!
//! Runs on the namespace bed of `daemon_run.rs` (removed on drop). Needs root; CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::net::UnixDatagram,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mecgw_tests::{bed::Bed, mecgw_bin};

/// The daemon, killed on drop if a failed assertion left it running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next datagram on `socket`, if one comes within `wait`.
fn next(socket: &UnixDatagram, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn ready_is_notified_only_once_serving_and_stopping_on_sigterm() {
    let bed = Bed::new();
    let config = bed.write("");
    let socket_path = bed.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    // `ip netns exec` execs mecgw: the child's pid is the daemon's (WATCHDOG_PID says so).
    let child = Command::new("ip")
        .args(["netns", "exec", &bed.mec])
        .arg(mecgw_bin().unwrap())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Running(child);

    // Until READY=1 comes, every datagram must be something else; the moment it comes,
    // /readyz must already answer 200 (the daemon turns ready before it notifies).
    let start = Instant::now();
    let mut before_ready = Vec::new();
    loop {
        if let Some(status) = d.0.try_wait().unwrap() {
            panic!("mecgw exited before it was ready: {status}");
        }
        match next(&socket, Duration::from_millis(100)) {
            Some(m) if has_line(&m, "READY=1") => {
                assert!(
                    bed.http("/readyz").0,
                    "READY=1 arrived while /readyz did not answer 200"
                );
                break;
            }
            Some(m) => before_ready.push(m),
            None => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no READY=1 came; before it: {before_ready:?}"
        );
    }
    assert!(
        before_ready.iter().all(|m| m == "WATCHDOG=1"),
        "before READY=1 only the watchdog may speak: {before_ready:?}"
    );
    assert!(bed.xdp_on("t-n3") && bed.xdp_on("t-local"));

    // The watchdog keeps coming at half of WATCHDOG_USEC while the daemon runs.
    let mut watchdog = false;
    for _ in 0..50 {
        if next(&socket, Duration::from_millis(100)).is_some_and(|m| m == "WATCHDOG=1") {
            watchdog = true;
            break;
        }
    }
    assert!(watchdog, "no WATCHDOG=1 with WATCHDOG_USEC set");

    // SIGTERM: STOPPING=1 (after any watchdog pings still queued), then a clean exit.
    let pid = libc::pid_t::try_from(d.0.id()).unwrap();
    // SAFETY: kill(2) on our own child; no memory involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut stopping = false;
    let start = Instant::now();
    while !stopping && start.elapsed() < Duration::from_secs(30) {
        stopping =
            next(&socket, Duration::from_millis(100)).is_some_and(|m| has_line(&m, "STOPPING=1"));
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
    let status = d.0.wait().unwrap();
    let mut log = String::new();
    if let Some(mut e) = d.0.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut log);
    }
    assert!(status.success(), "mecgw exited {status}: {log}");
    assert!(
        !bed.xdp_on("t-n3") && !bed.xdp_on("t-local"),
        "programs left attached"
    );
}

/// Without NOTIFY_SOCKET (not under systemd) nothing is sent and nothing changes; with a
/// socket that does not exist the daemon still starts (a lost notification is logged).
#[test]
fn a_missing_notify_socket_does_not_stop_the_start() {
    let bed = Bed::new();
    let config = bed.write("");
    let child = Command::new("ip")
        .args(["netns", "exec", &bed.mec])
        .arg(mecgw_bin().unwrap())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", bed.path("nobody-listens.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut d = Running(child);
    let start = Instant::now();
    while !bed.http("/readyz").0 {
        if let Some(status) = d.0.try_wait().unwrap() {
            panic!("mecgw exited: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mecgw never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = libc::pid_t::try_from(d.0.id()).unwrap();
    // SAFETY: kill(2) on our own child; no memory involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = d.0.wait().unwrap();
    let mut log = String::new();
    if let Some(mut e) = d.0.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut log);
    }
    assert!(status.success(), "mecgw exited {status}: {log}");
    assert!(log.contains("could not notify systemd"), "{log}");
}
