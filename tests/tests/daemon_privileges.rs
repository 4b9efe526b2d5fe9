//! `mecgw run` as an unprivileged user (uid/gid 65534) holding only CAP_BPF, CAP_PERFMON and
//! CAP_NET_ADMIN, as the systemd unit runs it: it attaches, serves, reloads on SIGHUP after
//! giving every capability up, and without CAP_BPF it refuses to start with an error naming
//! the capability.
//!
//! Runs on the namespace bed of `daemon_run.rs` (removed on drop). Needs root (to create the
//! namespaces and hand the capabilities over with setpriv); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mecgw_tests::{
    bed::{Bed, sample, tables},
    mecgw_bin,
};

const NOBODY: u32 = 65534;

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

impl Running {
    fn stderr(&mut self) -> String {
        use std::io::Read as _;
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

/// The bed's files readable by nobody, its state directory nobody's own.
fn open_to_nobody(bed: &Bed) {
    let dir = bed.path("state");
    let top = dir.parent().unwrap();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["mecgw.toml", "tables.toml"] {
        std::fs::set_permissions(bed.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Starts `mecgw run` in the bed as uid/gid 65534 with exactly `caps` (setpriv syntax,
/// e.g. "+bpf,+perfmon"): inheritable and ambient, so they survive the exec; bounding set
/// limited to them too. `ip netns exec` and setpriv exec in turn: the pid is the daemon's.
fn start_as_nobody(bed: &Bed, caps: &str) -> Running {
    let config = bed.path("mecgw.toml");
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let set = format!("-all,{caps}");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.mec,
            "setpriv",
            &uid,
            &gid,
            "--clear-groups",
        ])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(mecgw_bin().unwrap())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running(child)
}

/// A field of /proc/<pid>/task/<tid>/status for every thread of `pid`.
fn thread_fields(pid: u32, field: &str) -> Vec<String> {
    let mut values = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(status) = std::fs::read_to_string(t.unwrap().path().join("status")) else {
            continue;
        };
        if let Some(v) = status.lines().find_map(|l| l.strip_prefix(field)) {
            values.push(v.trim().to_string());
        }
    }
    values
}

fn wait_exit(d: &mut Running) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mecgw did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(d: &Running, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(d.0.id()).unwrap();
    // SAFETY: kill(2) on our own child; no memory involved.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn non_root_with_bpf_perfmon_net_admin_attaches_reloads_and_gives_its_capabilities_up() {
    let bed = Bed::new();
    bed.write("");
    open_to_nobody(&bed);
    let mut d = start_as_nobody(&bed, "+bpf,+perfmon,+net_admin");
    let start = Instant::now();
    while !bed.http("/readyz").0 {
        if let Some(status) = d.0.try_wait().unwrap() {
            panic!("mecgw exited ({status}): {}", d.stderr());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mecgw never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(bed.xdp_on("t-n3"), "ready, but no XDP program on N3");
    assert!(bed.xdp_on("t-local"), "ready, but no XDP program on local");

    // Not root, and once ready no thread holds a capability any more.
    let pid = d.0.id();
    for uid in thread_fields(pid, "Uid:") {
        assert!(
            uid.split_whitespace().all(|u| u == NOBODY.to_string()),
            "{uid}"
        );
    }
    for field in ["CapPrm:", "CapEff:", "CapAmb:", "CapInh:"] {
        let sets = thread_fields(pid, field);
        assert!(!sets.is_empty());
        assert!(
            sets.iter().all(|s| u64::from_str_radix(s, 16) == Ok(0)),
            "{field} {sets:?}"
        );
    }

    // SIGHUP reload without capabilities: a new rule reaches the fast path's maps.
    std::fs::write(
        bed.path("tables.toml"),
        tables(
            "\n[[rules]]\nid = 11\npriority = 3\naction = \"DROP\"\ndst = [\"198.18.9.0/24\"]\n",
        ),
    )
    .unwrap();
    signal(&d, libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"ok\"}", 1);
    assert_eq!(sample(&m, "mecgw_rules"), 2);
    assert_eq!(sample(&m, "mecgw_last_reload_rejected"), 0);

    // The GTP-U restart counter was written under the state directory nobody owns.
    assert!(bed.path("state").read_dir().unwrap().next().is_some());

    signal(&d, libc::SIGTERM);
    let status = wait_exit(&mut d);
    let log = d.stderr();
    assert!(status.success(), "mecgw exited {status}: {log}");
    assert!(log.contains("capabilities given up"), "{log}");
    assert!(
        !bed.xdp_on("t-n3") && !bed.xdp_on("t-local"),
        "programs left attached: {log}"
    );
}

#[test]
fn without_cap_bpf_the_start_fails_naming_the_missing_capability() {
    let bed = Bed::new();
    bed.write("");
    open_to_nobody(&bed);
    for (caps, missing) in [
        ("+perfmon,+net_admin", "CAP_BPF"),
        ("+bpf,+net_admin", "CAP_PERFMON"),
        ("+bpf,+perfmon", "CAP_NET_ADMIN"),
    ] {
        let mut d = start_as_nobody(&bed, caps);
        let status = wait_exit(&mut d);
        let log = d.stderr();
        assert_eq!(status.code(), Some(1), "{caps}: {log}");
        assert!(
            log.contains(&format!(
                "mecgw lacks {missing} in its effective capability set"
            )),
            "{caps}: {log}"
        );
        assert!(!log.contains("mecgw is ready"), "{log}");
        assert!(!bed.xdp_on("t-n3") && !bed.xdp_on("t-local"), "{log}");
    }
}
