//! Files that are not what a configuration says they are (issue #12, item 1): a device that
//! never ends (/dev/zero, /dev/urandom) or a FIFO no one writes, given as a config, tables,
//! policy, key, TLS or audit-head path. Each is refused at once with a message naming the
//! path and what it is; nothing reads without limit or waits. Driven through the CLI and the
//! daemon, each command under a deadline (a hang fails the test instead of stalling CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mecgw_tests::{
    bed::{Bed, sample},
    mecgw_bin,
};

/// Runs mecgw with `args`; panics if it has not ended after 20 s (a read that never ends or
/// an open that waits for a writer).
fn mecgw(args: &[&str]) -> Output {
    let mut child = Command::new(mecgw_bin().unwrap())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("mecgw {args:?} hung on a file that is not a regular file");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn fifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_refuses_devices_and_fifos_without_reading_or_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("pipe");
    fifo(&pipe);
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device"),
        (Path::new("/dev/urandom"), "a character device"),
        (pipe.as_path(), "a FIFO"),
    ] {
        let p = path.to_str().unwrap();
        let out = mecgw(&["policy", "check", p]);
        assert_eq!(out.status.code(), Some(1), "policy check {p}");
        assert!(
            stderr(&out).contains(kind),
            "policy check {p}: {}",
            stderr(&out)
        );

        let out = mecgw(&["run", "--config", p]);
        assert!(!out.status.success(), "run --config {p}");
        assert!(
            stderr(&out).contains(kind),
            "run --config {p}: {}",
            stderr(&out)
        );
    }

    // An audit head that is a FIFO or a device: a broken chain, said at once.
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    std::fs::write(audit.join("audit.log"), "").unwrap();
    fifo(&audit.join("audit.head"));
    let out = mecgw(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FIFO") || stderr(&out).contains("FIFO"),
        "{out:?}"
    );
    std::fs::remove_file(audit.join("audit.head")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", audit.join("audit.head")).unwrap();
    let out = mecgw(&["audit", "verify", audit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_reload_of_a_tables_file_that_is_dev_zero_is_rejected_and_sigterm_still_works() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let tables = bed.path("tables.toml");
    std::fs::remove_file(&tables).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &tables).unwrap();
    d.signal(libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"rejected\"}", 1);
    assert_eq!(
        sample(&m, "mecgw_sessions"),
        1,
        "the old tables stay in force"
    );
    assert!(bed.http("/readyz").0);
    let status = d.stop();
    assert!(status.success());
    let log = d.stderr();
    assert!(
        log.contains("is a character device, not a regular file"),
        "{log}"
    );
}

/// Puts a FIFO, then a link to /dev/zero, at `path`, runs `args` for each and checks that the
/// command fails at once, naming the path and what it is.
fn refused_at(path: &Path, args: &[&str]) {
    for (make, kind) in [
        (fifo as fn(&Path), "a FIFO"),
        (
            (|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()) as fn(&Path),
            "a character device",
        ),
    ] {
        let _ = std::fs::remove_file(path);
        make(path);
        let out = mecgw(args);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} with {kind} at {path:?}: {said}"
        );
        assert!(
            said.contains(&format!(
                "{}: is {kind}, not a regular file",
                path.display()
            )),
            "{args:?} with {kind} at {path:?}: {said}"
        );
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn state_files_that_are_fifos_or_devices_are_refused_by_the_verifiers() {
    let dir = tempfile::tempdir().unwrap();

    // The budget ledger and its head (`mecgw budget verify`).
    let budget = dir.path().join("budget");
    std::fs::create_dir(&budget).unwrap();
    let b = budget.to_str().unwrap();
    refused_at(
        &budget.join("budget-ledger.head"),
        &["budget", "verify", "--state", b],
    );
    std::fs::write(
        budget.join("budget-ledger.head"),
        format!("0 {}\n", "0".repeat(64)),
    )
    .unwrap();
    refused_at(
        &budget.join("budget-ledger.jsonl"),
        &["budget", "verify", "--state", b],
    );

    // The audit log and the state directory's marker (`mecgw audit verify`).
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    let a = audit.to_str().unwrap();
    std::fs::write(audit.join("audit.head"), "").unwrap();
    refused_at(&audit.join("audit.log"), &["audit", "verify", a]);
    std::fs::write(audit.join("audit.log"), "").unwrap();
    refused_at(&dir.path().join("state.marker"), &["audit", "verify", a]);
}
