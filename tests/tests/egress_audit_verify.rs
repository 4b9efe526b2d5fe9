#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tampering with the egress audit log is detected by `mecgw audit verify DIR`, driven as an
//! operator runs it: a changed entry, a deleted entry and entries cut off the end each give
//! exit status 1 and name the first broken entry; the untouched log gives 0.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mecgw::records::egress::Egress;
use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::file::FileSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw_tests::egress::{config, release, wait_until};
use serde_json::json;

const BATCHES: u64 = 8;

/// Writes a real audit log: 8 batches sent through a file sink and 1 refused at enqueue.
async fn audited_dir(root: &Path) -> std::path::PathBuf {
    let sink = SinkConfig::File(FileSinkConfig {
        dir: root.join("out"),
    });
    let permissions = Arc::new(Permissions::new(Arc::new(PermissionTable::new().allow(
        "eu",
        "EU-DE",
        &["cells"],
        &[],
    ))));
    let egress = Egress::open(
        config(
            root,
            vec![("eu", "EU-DE", sink)],
            SpoolLimits::default(),
            WhenFull::Backpressure,
        ),
        permissions,
    )
    .unwrap();
    let forwarders = egress.start().unwrap();
    for n in 0..BATCHES {
        egress
            .enqueue("eu", &[release("eu", "cells", n, json!({}))])
            .unwrap();
    }
    assert!(
        egress
            .enqueue("eu", &[release("eu", "not_permitted", 99, json!({}))])
            .is_err()
    );
    let metrics = Arc::clone(egress.metrics().destination("eu").unwrap());
    wait_until("delivery", Duration::from_secs(30), || {
        metrics.snapshot().sent_batches == BATCHES
    })
    .await
    .unwrap();
    forwarders.shutdown().await.unwrap();
    root.join("audit")
}

fn verify(dir: &Path) -> (i32, String, String) {
    let out = Command::new(mecgw_tests::mecgw_bin().unwrap())
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn edit_log(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join("audit.log");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    edit(&mut lines);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_by_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let audit = audited_dir(root.path()).await;

    let (code, stdout, stderr) = verify(&audit);
    assert_eq!(code, 0, "intact log must verify: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{} entries", BATCHES + 1)),
        "{stdout}"
    );

    // One entry changed: its own hash no longer matches.
    let changed = root.path().join("changed");
    copy_dir(&audit, &changed);
    edit_log(&changed, |lines| {
        assert!(lines[3].contains("\"epsilon\":0.125"));
        lines[3] = lines[3].replace("\"epsilon\":0.125", "\"epsilon\":0.001");
    });
    let (code, _, stderr) = verify(&changed);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("entry 3") && stderr.contains("was changed"),
        "{stderr}"
    );

    // One entry deleted: the next one's index and prev no longer fit.
    let deleted = root.path().join("deleted");
    copy_dir(&audit, &deleted);
    edit_log(&deleted, |lines| {
        lines.remove(4);
    });
    let (code, _, stderr) = verify(&deleted);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("entry 4") && stderr.contains("index is 5"),
        "{stderr}"
    );

    // The last two entries cut off: the head file still names the old last entry.
    let cut = root.path().join("cut");
    copy_dir(&audit, &cut);
    edit_log(&cut, |lines| {
        lines.truncate(lines.len() - 2);
    });
    let (code, _, stderr) = verify(&cut);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cut off the end"), "{stderr}");

    // Nothing to verify is an error too, not a silent success.
    let (code, _, stderr) = verify(&root.path().join("out"));
    assert_eq!(code, 1, "{stderr}");
}
