#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mecgw policy check FILE`, driven as a compliance team runs it: every error in a file is
//! reported at once, each as FILE:LINE:COL with its stable code and a hint, exit status 1;
//! every error code of the policy language is exercised here with its position; a good policy
//! exits 0.

use std::collections::BTreeSet;
use std::process::Command;

use mecgw_tests::mecgw_bin;

/// Runs `mecgw policy check` on `src`; returns (exit code, [(line:col, code)], stderr).
fn check(src: &str) -> (i32, Vec<(String, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, src).unwrap();
    let out = Command::new(mecgw_bin().unwrap())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let prefix = format!("{}:", file.display());
    let mut found = Vec::new();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            // LINE:COL: error[PNNN]: message
            let mut parts = rest.splitn(3, ':');
            let pos = format!("{}:{}", parts.next().unwrap(), parts.next().unwrap());
            let tail = parts.next().unwrap();
            let code = tail.split_once("error[").unwrap().1[..4].to_owned();
            found.push((pos, code));
        }
    }
    (out.status.code().unwrap(), found, stderr)
}

const MANY: &str = r#"version: 1
budget: {period: 1d, epsilon: 1, delta: 1e-6, colour: red}
keys:
  sub: {path: k, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    fields:
      imsi: string
      start: timestamp
      cell: string
      bytes: integer
      kind: string
    transforms:
      imsi: pseudonymise
      cell: {truncate: {ipv4: 24}}
      colour: keep
  ok:
    privacy_unit: imsi
    time: start
    fields: {imsi: string, start: timestamp, cell: string, bytes: integer, note: string}
    transforms: {cell: keep}
releases:
  r1:
    kind: ok
    window: 1y
    group_by: [cel]
    contribution: {max_groups: 0, max_rows: 1}
    k: 1
    epsilon: 0
    delta: 2
    metrics: [count]
  r2:
    kind: ok
    window: 7h
    group_by: [note]
    contribution: {max_groups: 1, max_rows: 1}
    k: 5
    epsilon: 0.1
    delta: 1e-9
    metrics:
      - sum: {field: bytes}
      - sum: {field: note, bounds: [0, 10]}
      - histogram: {field: bytes, bins: [10, 5]}
  r3:
    kind: ok
    window: 1h
    group_by: 5
    contribution: {max_groups: 1, max_rows: 1}
    k: 5
    epsilon: 0.01
    noise: gaussian
    delta: 0
    metrics: [count]
destinations:
  d: {region: EU, releases: [nope]}
tests:
  - name: t
    keys: {sub: abc}
    input: []
    expect: []
"#;

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
}

#[test]
fn every_error_in_a_file_is_reported_at_once_with_its_position() {
    let (code, found, stderr) = check(MANY);
    assert_eq!(code, 1, "{stderr}");
    let want = pairs(&[
        ("2:47", "P002"),  // unknown key `colour` in budget
        ("7:5", "P003"),   // kind without `time`
        ("13:7", "P022"),  // field named `kind`
        ("15:13", "P010"), // pseudonymise without a key
        ("16:14", "P014"), // truncate on a string
        ("17:7", "P013"),  // transform of an undeclared field
        ("26:13", "P005"), // window `1y`
        ("27:16", "P012"), // group_by on an unknown field
        ("28:32", "P018"), // max_groups 0
        ("29:8", "P008"),  // k < 2
        ("30:14", "P006"), // ε ≤ 0
        ("31:12", "P007"), // δ ≥ 1
        ("35:13", "P019"), // 7h windows do not divide 1d
        ("36:16", "P017"), // group_by on a dropped field
        ("42:9", "P009"),  // sum without bounds
        ("43:22", "P025"), // sum over a string
        ("44:41", "P021"), // bins not increasing
        ("46:5", "P020"),  // Gaussian with δ = 0
        ("48:15", "P004"), // group_by not a list
        ("53:12", "P007"), // δ = 0: no partition selection possible
        ("56:30", "P015"), // destination names an undeclared release
        ("59:17", "P026"), // test key too short
    ]);
    assert_eq!(found, want, "{stderr}");
    // Every diagnostic says what to change.
    assert_eq!(stderr.matches("\n  help: ").count(), want.len(), "{stderr}");
    assert!(stderr.contains("did you mean `cell`?"), "{stderr}");
}

#[test]
fn a_release_that_cannot_fit_the_budget_is_an_error() {
    let src = "version: 1
budget: {period: 1d, epsilon: 1, delta: 1e-6}
kinds:
  k: {privacy_unit: u, time: t, fields: {u: string, t: timestamp, c: string}, transforms: {c: keep}}
releases:
  hourly:
    kind: k
    window: 1h
    group_by: [c]
    contribution: {max_groups: 1, max_rows: 1}
    k: 20
    epsilon: 0.1
    delta: 1e-9
    metrics: [count]
destinations:
  d: {region: EU, releases: [hourly]}
";
    let (code, found, stderr) = check(src);
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("12:14", "P011")]), "{stderr}");
    assert!(
        stderr.contains("the budget allows 10 windows of this release per period"),
        "{stderr}"
    );
}

#[test]
fn noise_beyond_the_exact_samplers_range_is_an_error() {
    let src = "version: 1
budget: {period: 1d, epsilon: 1, delta: 1e-6}
kinds:
  k: {privacy_unit: u, time: t, fields: {u: string, t: timestamp, c: string, b: integer}, transforms: {c: keep}}
releases:
  huge:
    kind: k
    window: 1d
    group_by: [c]
    contribution: {max_groups: 1000000, max_rows: 1000000}
    k: 20
    epsilon: 0.000000001
    delta: 1e-9
    metrics: [{sum: {field: b, bounds: [0, 4503599627370496]}}]
destinations:
  d: {region: EU, releases: [huge]}
";
    let (code, found, stderr) = check(src);
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("12:14", "P027")]), "{stderr}");
    assert!(stderr.contains("release `huge`"), "{stderr}");
}

#[test]
fn fatal_yaml_errors_have_positions() {
    let (code, found, _) = check("version: 1\nbudget: {period: 1d, epsilon: 1\n");
    assert_eq!((code, found), (1, pairs(&[("3:1", "P001")])));
    let (code, found, _) = check("version: 1\nversion: 2\n");
    assert_eq!((code, found), (1, pairs(&[("2:1", "P016")])));
    let deep = format!("version: 1\nx: {}{}\n", "[".repeat(80), "]".repeat(80));
    let (code, found, _) = check(&deep);
    assert_eq!((code, found), (1, pairs(&[("2:68", "P023")])));
    let (code, found, _) = check("version: 2\nbudget: {period: 1d, epsilon: 1}\nkinds: {}\n");
    assert_eq!((code, found), (1, pairs(&[("1:10", "P024")])));
}

#[test]
fn every_error_code_is_exercised() {
    let mut codes = BTreeSet::new();
    for (_, c) in check(MANY).1 {
        codes.insert(c);
    }
    codes.insert("P001".into()); // fatal_yaml_errors_have_positions
    codes.insert("P011".into()); // a_release_that_cannot_fit_the_budget_is_an_error
    codes.insert("P016".into());
    codes.insert("P023".into());
    codes.insert("P024".into());
    codes.insert("P027".into()); // noise_beyond_the_exact_samplers_range_is_an_error
    let all: BTreeSet<String> = (1..=27).map(|i| format!("P{i:03}")).collect();
    assert_eq!(codes, all);
}

#[test]
fn the_shipped_examples_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    for name in ["flow-records.yaml", "app-telemetry.yaml"] {
        let out = Command::new(mecgw_bin().unwrap())
            .args(["policy", "check"])
            .arg(root.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
    }
}
