#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Key files as `mecgw policy apply` and `explain --record` meet them (issue #12.15): an
//! `<epoch>.key` in a key directory that other users can read, that its group can write, or
//! that is too short stops the run with an error naming the file, as a single key file does;
//! group read (a Kubernetes Secret mounted 0440 with an fsGroup) is accepted.

use std::process::Output;

use mecgw_tests::policy_site::{PolicySite, stderr};

const POLICY: &str = r#"version: 1
name: key directory
budget: {period: 1d, epsilon: 1, delta: 1e-6}
keys:
  subscriber: {path: keys, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields: {imsi: string, start: timestamp}
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
destinations:
  analytics: {region: EU-DE, kinds: [flow]}
"#;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

/// 2026-11-26 is day 20783: the record's epoch.
const RECORD: &str = "{\"imsi\":\"001010000000001\",\"start\":\"2026-11-26T10:00:00Z\"}\n";

/// A site whose key directory `keys/` holds `files` (name, text, mode).
fn site(files: &[(&str, &str, u32)]) -> PolicySite {
    let site = PolicySite::new(POLICY);
    std::fs::create_dir(site.path("keys")).unwrap();
    for (name, text, mode) in files {
        site.write_key(&format!("keys/{name}"), text.as_bytes(), *mode);
    }
    site
}

fn apply(site: &PolicySite) -> Output {
    site.apply(RECORD, None).0
}

#[test]
fn a_good_key_directory_pseudonymises_and_accepts_group_read() {
    for mode in [0o600, 0o400, 0o640, 0o440] {
        let site = site(&[("20783.key", KEY, mode), ("README", "notes", 0o644)]);
        let out = apply(&site);
        assert!(out.status.success(), "mode {mode:o}: {}", stderr(&out));
        let text = std::fs::read_to_string(site.path("out.jsonl")).unwrap();
        assert!(text.contains("\"imsi\":\"e20783:"), "{text}");
    }
}

#[test]
fn an_epoch_file_open_to_others_or_writable_by_its_group_stops_apply_naming_it() {
    for (mode, problem) in [
        (0o644, "readable by other users (mode 644)"),
        (0o604, "readable by other users (mode 604)"),
        (0o660, "writable or executable by its group (mode 660)"),
    ] {
        // The bad file is another epoch's: the run stops although this record does not need it.
        let site = site(&[("20783.key", KEY, 0o600), ("20784.key", KEY, mode)]);
        let out = apply(&site);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "mode {mode:o}: {err}");
        let file = site.path("keys").join("20784.key");
        assert!(
            err.contains(&format!("{} is {problem}", file.display())),
            "{err}"
        );
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!site.path("out.jsonl").exists(), "nothing is written");
        assert!(!err.contains("key_unavailable"), "{err}");
    }
}

#[test]
fn a_short_epoch_file_stops_apply_and_explain_naming_it() {
    let site = site(&[("20783.key", "0011223344556677\n", 0o600)]);
    let file = site.path("keys").join("20783.key");
    let want = format!(
        "{} holds 8 bytes; keys must be at least 32 bytes",
        file.display()
    );
    let out = apply(&site);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(!site.path("out.jsonl").exists());
    let policy = site.path("policy.yaml");
    let out = site.mecgw([
        "policy".as_ref(),
        "explain".as_ref(),
        policy.as_os_str(),
        "--record".as_ref(),
        RECORD.trim_end().as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[test]
fn a_missing_epoch_file_is_still_a_bad_record_not_a_stop() {
    // Destroying an epoch's key is how its pseudonyms are made unlinkable: not an error.
    let site = site(&[("20782.key", KEY, 0o600)]);
    let out = apply(&site);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("key_unavailable: 1"),
        "{}",
        stderr(&out)
    );
    assert!(site.path("out.jsonl").exists());
}

/// Lays `keys/` out as the kubelet mounts a Secret volume: every file a symlink
/// `NAME -> ..data/NAME`, `..data` a symlink to a timestamped directory holding the real files
/// with the volume's `defaultMode` (docs/deploy.md, deploy/kubernetes/base).
fn secret_volume_site(policy: &str, files: &[(&str, &str)], default_mode: u32) -> PolicySite {
    let site = PolicySite::new(policy);
    let keys = site.path("keys");
    let payload = "..2026_11_26_10_00_00.000000001";
    for (name, text) in files {
        site.write_key(
            &format!("keys/{payload}/{name}"),
            text.as_bytes(),
            default_mode,
        );
        std::os::unix::fs::symlink(format!("..data/{name}"), keys.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(payload, keys.join("..data")).unwrap();
    site
}

#[test]
fn a_kubernetes_secret_volume_passes_the_key_checks_through_its_symlinks() {
    let single = POLICY.replace("{path: keys,", "{path: keys/subscriber.key,");
    for mode in [0o400, 0o440] {
        // A key directory (one file per epoch) and a single key file, both as a Secret.
        let dir = secret_volume_site(POLICY, &[("20783.key", KEY)], mode);
        let out = apply(&dir);
        assert!(out.status.success(), "mode {mode:o}: {}", stderr(&out));
        let file = secret_volume_site(&single, &[("subscriber.key", KEY)], mode);
        let out = apply(&file);
        assert!(out.status.success(), "mode {mode:o}: {}", stderr(&out));
    }
}

#[test]
fn a_kubernetes_secret_volume_with_the_default_mode_0644_is_refused() {
    // Kubernetes mounts Secrets 0644 unless told otherwise: the mode is checked on the file the
    // symlinks lead to, so the manifests must set defaultMode 0400.
    let site = secret_volume_site(POLICY, &[("20783.key", KEY)], 0o644);
    let out = apply(&site);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("readable by other users (mode 644)"), "{err}");
}
