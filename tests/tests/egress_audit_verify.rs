#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tampering with the egress audit log is detected by `mecgw audit verify DIR`, driven as an
//! operator runs it: a changed entry, a deleted entry and entries cut off the end each give
//! exit status 1 and name the first broken entry; the untouched log gives 0. So do (issue
//! #12, item 7) the head deleted or emptied together with the last entry cut, both files
//! emptied or deleted in a state directory that has had a log, and an entry appended past
//! the head, chained correctly and with the time of the last real write.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_head_a_vanished_log_and_a_forged_append_are_detected_by_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let audit = audited_dir(root.path()).await;
    // The copies below sit beside `audit`, in the state directory whose marker records
    // that it has had an audit log.

    // The last entry cut, and the head that would show it deleted, or emptied.
    for empty_head in [false, true] {
        let dir = root.path().join(format!("headless-{empty_head}"));
        copy_dir(&audit, &dir);
        edit_log(&dir, |lines| {
            lines.pop();
        });
        if empty_head {
            std::fs::write(dir.join("audit.head"), "").unwrap();
        } else {
            std::fs::remove_file(dir.join("audit.head")).unwrap();
        }
        let (code, stdout, stderr) = verify(&dir);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stderr.contains("audit.head is missing or empty"),
            "{stderr}"
        );
    }

    // Both files emptied, or deleted.
    for delete in [false, true] {
        let dir = root.path().join(format!("vanished-{delete}"));
        copy_dir(&audit, &dir);
        for f in ["audit.log", "audit.head"] {
            if delete {
                std::fs::remove_file(dir.join(f)).unwrap();
            } else {
                std::fs::write(dir.join(f), "").unwrap();
            }
        }
        let (code, stdout, stderr) = verify(&dir);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stderr.contains("the log is missing or empty but the state marker"),
            "{stderr}"
        );
    }

    // An entry appended past the head with the time of the last real write.
    let forged = root.path().join("forged");
    copy_dir(&audit, &forged);
    edit_log(&forged, |lines| {
        let last = lines.last().unwrap().clone();
        let (hash, body) = last.split_once(' ').unwrap();
        let mut entry: serde_json::Value = serde_json::from_str(body).unwrap();
        entry["index"] = json!(entry["index"].as_u64().unwrap() + 1);
        entry["prev"] = json!(hash);
        entry["batch"]["epsilon"] = json!(0.0);
        let body = entry.to_string();
        let hash = hex_sha256(body.as_bytes());
        lines.push(format!("{hash} {body}"));
    });
    let (code, stdout, stderr) = verify(&forged);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("entry {}", BATCHES + 1))
            && stderr.contains("not written by mecgw"),
        "{stderr}"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    mecgw::records::egress::spool::payload_digest(bytes)
        .trim_start_matches("sha256:")
        .to_string()
}
