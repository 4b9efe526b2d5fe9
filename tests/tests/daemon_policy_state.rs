//! What `mecgw run` does with the privacy plane's files on disk when they are unsafe, driven
//! as an operator meets it: an `<epoch>.key` that other users can read (or that is too short)
//! in a key directory stops the start and a reload, naming the file (issue #12.15); a budget
//! ledger that does not match its hash chain and head stops the start, or at a reload stops
//! the engine (nothing released), until `mecgw budget reset` (issue #12.4).
//! Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mecgw_tests::bed::{Bed, Daemon, sample};
use mecgw_tests::mecgw_bin;

const KEY: &str = "6d656367772d6461656d6f6e2d746573742d6b65792d6e6f742d7265616c2121\n";

/// A policy whose one kind pseudonymises with a key directory and keeps records on site.
const POLICY: &str = r#"version: 1
name: daemon key directory
budget: {period: 1d, epsilon: 1.0, delta: 1e-6}
keys:
  subscriber: {path: keys, rotation: 1d}
kinds:
  app_event:
    privacy_unit: imsi
    time: time
    fields: {imsi: string, time: timestamp}
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
"#;

/// Writes the daemon configuration with `[policy]`, the policy and a key directory holding
/// `files` (name, text, mode).
fn configure(bed: &Bed, files: &[(&str, &str, u32)]) -> PathBuf {
    let config = bed.write("");
    std::fs::write(bed.path("policy.yaml"), POLICY).unwrap();
    let keys = bed.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for (name, text, mode) in files {
        write_key(&keys.join(name), text, *mode);
    }
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[policy]\nfile = \"policy.yaml\"\n");
    std::fs::write(&config, text).unwrap();
    config
}

/// The daemon started on a key directory holding one good key file (mode `mode`), ready.
fn running(bed: &Bed, mode: u32) -> (PathBuf, Daemon) {
    let config = configure(bed, &[("20000.key", KEY, mode)]);
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    (config, d)
}

fn write_key(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Waits for the daemon to exit on its own; its status.
fn exits(d: &mut Daemon) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mecgw started anyway"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unsafe_epoch_key_file_stops_the_start_naming_it() {
    for (text, mode, problem) in [
        (KEY, 0o644, "is readable by other users (mode 644)"),
        (
            "00112233",
            0o600,
            "holds 4 bytes; keys must be at least 32 bytes",
        ),
    ] {
        let bed = Bed::new();
        let config = configure(
            &bed,
            &[("20000.key", KEY, 0o600), ("20001.key", text, mode)],
        );
        let mut d = bed.start(&config);
        assert!(!exits(&mut d).success());
        let log = d.stderr();
        let file = bed.path("keys").join("20001.key");
        assert!(
            log.contains(&format!("{} {problem}", file.display())),
            "{log}"
        );
    }
}

#[test]
fn an_epoch_key_file_made_unsafe_is_refused_at_reload_naming_it() {
    let bed = Bed::new();
    // 0440: a Kubernetes Secret mounted with an fsGroup starts.
    let (_, mut d) = running(&bed, 0o440);
    let ok = "mecgw_reloads_total{result=\"ok\"}";
    let before = sample(&bed.http("/metrics").1, ok);
    write_key(&bed.path("keys").join("20001.key"), KEY, 0o604);
    // A changed policy, so that the reload has something to switch to.
    let policy = POLICY.replace("daemon key directory", "daemon key directory v2");
    std::fs::write(bed.path("policy.yaml"), policy).unwrap();
    d.signal(libc::SIGHUP);
    bed.wait_for_sample("mecgw_last_reload_rejected", 1);
    let m = bed.http("/metrics").1;
    assert_eq!(sample(&m, ok), before, "{m}");
    assert!(d.stop().success());
    let log = d.stderr();
    let file = bed.path("keys").join("20001.key");
    assert!(
        log.contains("reload rejected")
            && log.contains(&format!(
                "{} is readable by other users (mode 604)",
                file.display()
            )),
        "{log}"
    );
}

/// `mecgw budget reset` on the daemon's ledger directory.
fn reset_ledger(bed: &Bed) -> std::process::Output {
    std::process::Command::new(mecgw_bin().unwrap())
        .args(["budget", "reset", "--reason", "test: ledger deleted"])
        .arg("--state")
        .arg(bed.path("state").join("budget"))
        .output()
        .unwrap()
}

/// After an audited `budget reset`, the daemon starts and gets ready again.
fn reset_then_ready(bed: &Bed, config: &std::path::Path) {
    let out = reset_ledger(bed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut d = bed.start(config);
    bed.wait_ready(&mut d);
    assert!(d.stop().success());
}

#[test]
fn a_refused_budget_ledger_stops_the_start_until_it_is_reset() {
    let bed = Bed::new();
    let (config, mut d) = running(&bed, 0o600);
    assert!(d.stop().success());
    let ledger = bed.path("state").join("budget").join("budget-ledger.jsonl");
    std::fs::remove_file(&ledger).unwrap();

    let mut d = bed.start(&config);
    assert!(!exits(&mut d).success());
    let log = d.stderr();
    assert!(
        log.contains(&format!("budget ledger {}", ledger.display()))
            && log.contains("the ledger file is missing but its head records")
            && log.contains("mecgw budget reset --state"),
        "{log}"
    );

    reset_then_ready(&bed, &config);
}

#[test]
fn a_ledger_deleted_with_its_head_stops_the_start_until_it_is_reset() {
    let bed = Bed::new();
    let (config, mut d) = running(&bed, 0o600);
    assert!(d.stop().success());
    let budget = bed.path("state").join("budget");
    let ledger = budget.join("budget-ledger.jsonl");
    std::fs::remove_file(&ledger).unwrap();
    std::fs::remove_file(budget.join("budget-ledger.head")).unwrap();
    let want = format!(
        "the budget ledger {} and its head are missing, but {} says the ledger existed",
        ledger.display(),
        bed.path("state").join("state.marker").display()
    );

    let mut d = bed.start(&config);
    assert!(!exits(&mut d).success());
    let log = d.stderr();
    assert!(
        log.contains(&want) && log.contains("mecgw budget reset --state"),
        "{log}"
    );
    assert!(!ledger.exists(), "a refused start creates no new ledger");
    assert!(
        !log.contains("XDP program attached"),
        "the ledger is checked before anything is attached: {log}"
    );
    // `budget verify` on the daemon's ledger directory says the same.
    let out = std::process::Command::new(mecgw_bin().unwrap())
        .args(["budget", "verify", "--state"])
        .arg(&budget)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&want), "{err}");

    reset_then_ready(&bed, &config);
}

#[test]
fn a_ledger_refused_at_reload_stops_the_engine_until_reset_and_reload() {
    let bed = Bed::new();
    let (_, mut d) = running(&bed, 0o600);
    let ledger = bed.path("state").join("budget").join("budget-ledger.jsonl");
    std::fs::remove_file(&ledger).unwrap();
    // A new policy: the engine is rebuilt and the ledger opened again, and refused.
    let policy = POLICY.replace("daemon key directory", "daemon key directory v2");
    std::fs::write(bed.path("policy.yaml"), policy).unwrap();
    d.signal(libc::SIGHUP);
    let ok = "mecgw_reloads_total{result=\"ok\"}";
    bed.wait_for_sample(ok, 1);
    // The daemon keeps serving (the operations port answers), with no engine: the ledger is
    // free for the operator's reset.
    let start = Instant::now();
    let out = loop {
        let out = reset_ledger(&bed);
        if out.status.success() || start.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Back to the policy the engine last ran: a reload of it starts the engine again (the
    // engine thread handles the reload before the stop that follows).
    std::fs::write(bed.path("policy.yaml"), POLICY).unwrap();
    d.signal(libc::SIGHUP);
    bed.wait_for_sample(ok, 2);
    assert!(d.stop().success());
    let log = d.stderr();
    assert!(
        log.contains("cannot start the new policy's engine")
            && log.contains("the ledger file is missing but its head records"),
        "{log}"
    );
    assert!(
        log.contains("cannot restart the old policy's engine either"),
        "{log}"
    );
    let switched = log.matches("policy engine switched policies").count();
    assert_eq!(switched, 1, "{log}");
}
