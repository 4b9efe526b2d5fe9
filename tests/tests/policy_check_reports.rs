#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mecgw policy check FILE` reports every error, and only real ones (issue #12.16): one
//! unreadable value does not hide another section's error or invent new ones, help never
//! offers an empty list, and a byte order mark, a NUL byte or a file that is not UTF-8 get a
//! message that says what is wrong where.

use std::process::Command;

use mecgw_tests::mecgw_bin;

/// Runs `mecgw policy check` on `bytes`; returns (exit code, [(line:col, code)], stderr).
fn check(bytes: &[u8]) -> (i32, Vec<(String, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(mecgw_bin().unwrap())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let prefix = format!("{}:", file.display());
    let mut found = Vec::new();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix(&prefix)
            && let Some((pos, tail)) = rest.split_once(": error[")
        {
            found.push((pos.to_owned(), tail[..4].to_owned()));
        }
    }
    (out.status.code().unwrap(), found, stderr)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
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
