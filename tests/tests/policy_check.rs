#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mecgw policy check FILE`, driven as a compliance team runs it: every error in a file is
//! reported at once, each as FILE:LINE:COL with its stable code and a hint, exit status 1;
//! every error code of the policy language is exercised here with its position; a good policy
//! exits 0. Only real errors are reported (issue #12.16): one unreadable value does not hide
//! another section's error or invent new ones, help never offers an empty list, and a byte
//! order mark, a NUL byte or a file that is not UTF-8 get a message that says what is wrong
//! where.

use std::collections::BTreeSet;
use std::process::Command;

use mecgw_tests::mecgw_bin;

/// Runs `mecgw policy check` on `src` (text, or any bytes); returns (exit code,
/// [(line:col, code)], stderr).
fn check(src: impl AsRef<[u8]>) -> (i32, Vec<(String, String)>, String) {
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

const GOOD: &str = "version: 1
budget: {period: 1d, epsilon: 1, delta: 1e-6}
keys:
  sub: {path: sub.key, rotation: 1d}
kinds:
  k:
    privacy_unit: u
    time: t
    fields: {u: string, t: timestamp, c: string}
    transforms: {u: {pseudonymise: {key: sub}}, c: keep}
releases:
  daily:
    kind: k
    window: 1d
    group_by: [c]
    contribution: {max_groups: 1, max_rows: 1}
    k: 20
    epsilon: 1
    delta: 1e-9
    metrics: [count]
destinations:
  d: {region: EU, releases: [daily], kinds: [k]}
";

#[test]
fn the_base_policy_is_valid() {
    let (code, found, stderr) = check(GOOD.as_bytes());
    assert_eq!((code, found), (0, vec![]), "{stderr}");
}

#[test]
fn an_unreadable_budget_epsilon_does_not_hide_a_window_that_does_not_divide_the_period() {
    let src = GOOD
        .replace("epsilon: 1, delta: 1e-6", "epsilon: lots, delta: 1e-6")
        .replace("window: 1d", "window: 7h");
    let (code, found, stderr) = check(src.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(
        found,
        pairs(&[("2:31", "P005"), ("14:13", "P019")]),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_rotation_is_reported_once_not_as_an_undeclared_key_too() {
    let src = GOOD.replace("rotation: 1d", "rotation: daily");
    let (code, found, stderr) = check(src.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("4:34", "P005")]), "{stderr}");
    assert!(!stderr.contains("not declared"), "{stderr}");
    // A key that really is undeclared is still reported, with a suggestion.
    let src = GOOD.replace("{key: sub}", "{key: subs}");
    let (_, found, stderr) = check(src.as_bytes());
    assert_eq!(found, pairs(&[("10:42", "P010")]), "{stderr}");
    assert!(stderr.contains("did you mean `sub`?"), "{stderr}");
}

#[test]
fn a_reference_with_nothing_declared_says_where_to_declare_it() {
    // No releases at all, and a destination that names one.
    let src = GOOD.split("releases:\n  daily:").next().unwrap().to_owned()
        + "destinations:\n  e: {region: EU, releases: [hourly]}\n";
    let (code, found, stderr) = check(src.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("12:30", "P015")]), "{stderr}");
    assert!(!stderr.contains("use one of: \n"), "{stderr}");
    assert!(
        stderr
            .contains("help: nothing is declared under releases yet: declare `hourly` there first"),
        "{stderr}"
    );
}

#[test]
fn a_byte_order_mark_is_accepted_and_positions_are_counted_after_it() {
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(GOOD.as_bytes());
    let (code, found, stderr) = check(&bytes);
    assert_eq!((code, found), (0, vec![]), "{stderr}");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(
        GOOD.replace("version: 1", "version: 1\ncolour: red")
            .as_bytes(),
    );
    let (code, found, stderr) = check(&bytes);
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("2:1", "P002")]), "{stderr}");
    assert!(!stderr.contains("no `version`"), "{stderr}");
}

#[test]
fn a_nul_byte_or_a_control_character_is_reported_where_it_is() {
    let src = GOOD.replace("k: 20", "k: 20\0");
    let (code, found, stderr) = check(src.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("17:10", "P001")]), "{stderr}");
    assert!(stderr.contains("contains a NUL byte"), "{stderr}");
    // Nothing about what the parser would have missed after it.
    assert!(!stderr.contains("P003"), "{stderr}");

    let src = GOOD
        .replace("budget:", "\u{1}budget:")
        .replace("k: 20", "k: 20\u{7f}");
    let (code, found, stderr) = check(src.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("2:1", "P001")]), "{stderr}");
    assert!(
        stderr.contains("the control character U+0001 (and 1 more), which YAML does not allow"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_utf8_says_where_or_that_it_is_utf16() {
    let mut bytes = GOOD.as_bytes().to_vec();
    let at = GOOD.find("c: string").unwrap();
    bytes[at] = 0xe9; // Latin-1 é
    let (code, _, stderr) = check(&bytes);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not UTF-8 text: invalid byte at 9:39"),
        "{stderr}"
    );
    let utf16: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(GOOD.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let (code, _, stderr) = check(&utf16);
    assert_eq!(code, 1);
    assert!(stderr.contains("the file is UTF-16 text"), "{stderr}");
}
