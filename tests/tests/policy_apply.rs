#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `mecgw policy apply|test|explain`, driven as a compliance team and an operator run them:
//! batch transformation with tagged output, releases closed at end of input, bad records
//! counted and reported, the budget ledger surviving restarts and refusing when spent, and
//! key files refused when short or readable by others.

use std::path::Path;
use std::process::Command;

use mecgw_tests::mecgw_bin;
use mecgw_tests::policy_site::PolicySite;
use serde_json::Value;

const POLICY: &str = r#"version: 1
name: apply test
budget: {period: 1d, epsilon: 8, delta: 1e-5}
keys:
  subscriber: {path: subscriber.key, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    window: 1h
    fields: {imsi: string, imei: string, ue_ip: ip, start: timestamp, cell: string, bytes: integer}
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      ue_ip: {truncate: {ipv4: 24, ipv6: 48}}
      start: {bucket: {width: 15m}}
      cell: keep
releases:
  per_cell:
    kind: flow
    window: 1d
    group_by: [cell]
    contribution: {max_groups: 1, max_rows: 1}
    k: 5
    epsilon: 8
    delta: 1e-5
    metrics: [count, {sum: {field: bytes, bounds: [0, 1000]}}]
destinations:
  analytics: {region: EU-DE, kinds: [flow]}
  stats: {region: EU-FR, releases: [per_cell]}
"#;

/// A site with `policy` and its key file `subscriber.key` (permission bits `key_mode`).
fn site_with_key(policy: &str, key: &[u8], key_mode: u32) -> PolicySite {
    let site = PolicySite::new(policy);
    site.write_key("subscriber.key", key, key_mode);
    site
}

const KEY_HEX: &[u8] = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

/// 40 subscribers in cell A, 3 in cell B, over two hours of one day.
fn records() -> String {
    let mut s = String::new();
    for i in 0..43 {
        let cell = if i < 40 { "A" } else { "B" };
        s.push_str(&format!(
            "{{\"imsi\":\"00101{i:010}\",\"imei\":\"35349006{i:07}\",\"ue_ip\":\"10.9.{}.{}\",\"start\":\"2026-11-26T{:02}:{:02}:00Z\",\"cell\":\"{cell}\",\"bytes\":{}}}\n",
            i % 7,
            i,
            10 + i % 2,
            i % 60,
            100 + i
        ));
    }
    s
}

#[test]
fn apply_tags_every_object_and_closes_windows_at_end_of_input() {
    let site = site_with_key(POLICY, KEY_HEX, 0o600);
    let mut input = records();
    input.push_str("not json\n{\"imsi\": 12, \"start\": 0}\n[1,2]\n\n");
    let (out, lines) = site.apply(&input, Some(&site.path("state")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "flow").collect();
    let releases: Vec<&Value> = lines.iter().filter(|v| v["kind"] == "release").collect();
    assert_eq!(records.len(), 43);
    let hash = lines[0]["policy"].as_str().unwrap();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    for v in &lines {
        assert_eq!(v["policy"], hash);
        assert!(v["window"]["start"].is_string() && v["window"]["end"].is_string());
    }
    let r0 = &records[0];
    assert_eq!(r0["destination"], "analytics");
    assert_eq!(r0["region"], "EU-DE");
    assert_eq!(r0["window"]["start"], "2026-11-26T10:00:00Z");
    assert_eq!(r0["window"]["end"], "2026-11-26T11:00:00Z");
    let rec = r0["record"].as_object().unwrap();
    let mut keys: Vec<&str> = rec.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["cell", "imsi", "start", "ue_ip"],
        "imei and bytes are dropped"
    );
    assert_eq!(rec["ue_ip"], "10.9.0.0/24");
    assert_eq!(rec["start"], "2026-11-26T10:00:00Z");
    assert!(rec["imsi"].as_str().unwrap().starts_with("e20783:"));
    // One daily window; cell A (40 people) is released, cell B (3 < k) never is.
    assert_eq!(releases.len(), 1, "{lines:?}");
    let r = releases[0];
    assert_eq!(r["release"], "per_cell");
    assert_eq!(r["destination"], "stats");
    assert_eq!(r["region"], "EU-FR");
    assert_eq!(r["group"]["cell"], "A");
    assert_eq!(r["window"]["start"], "2026-11-26T00:00:00Z");
    let count = r["metrics"]["count"].as_i64().unwrap();
    assert!((25..=55).contains(&count), "count {count}");
    // Bad records are counted and reported with their line numbers, never silently dropped.
    assert!(
        stderr.contains("46 read, 43 transformed, 3 bad"),
        "{stderr}"
    );
    assert!(stderr.contains("line 44: not valid JSON"), "{stderr}");
    assert!(
        stderr.contains("line 45: field `imsi` is not a valid string"),
        "{stderr}"
    );
    assert!(stderr.contains("line 46: not a JSON object"), "{stderr}");
    assert!(stderr.contains("1 below k"), "{stderr}");
}

#[test]
fn the_budget_survives_restarts_and_refuses_when_spent() {
    let site = site_with_key(POLICY, KEY_HEX, 0o600);
    let state = site.path("state");
    // The budget (ε 8 per day) allows exactly one release of per_cell (ε 8) per day.
    let (out, lines) = site.apply(&records(), Some(&state));
    assert!(out.status.success());
    assert_eq!(lines.iter().filter(|v| v["kind"] == "release").count(), 1);
    // A restart with the same state directory: the day's budget is spent.
    let (out, lines) = site.apply(&records(), Some(&state));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(lines.iter().filter(|v| v["kind"] == "release").count(), 0);
    assert_eq!(lines.iter().filter(|v| v["kind"] == "flow").count(), 43);
    assert!(
        stderr.contains("0 released, 1 refused by the budget"),
        "{stderr}"
    );
    let ledger = std::fs::read_to_string(state.join("budget-ledger.jsonl")).unwrap();
    let outcomes: Vec<String> = ledger
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["spent", "refused"]);
    // Another day has its own budget.
    let next_day = records().replace("2026-11-26", "2026-11-27");
    let (_, lines) = site.apply(&next_day, Some(&state));
    assert_eq!(lines.iter().filter(|v| v["kind"] == "release").count(), 1);
}

#[test]
fn keys_readable_by_others_or_short_are_refused() {
    let site = site_with_key(POLICY, KEY_HEX, 0o644);
    let (out, _) = site.apply(&records(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("readable by other users (mode 644)") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!site.path("out.jsonl").exists(), "nothing is written");

    let site = site_with_key(POLICY, b"0011223344556677", 0o600);
    let (out, _) = site.apply(&records(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("holds 8 bytes; keys must be at least 32 bytes"),
        "{stderr}"
    );
}

#[test]
fn policy_test_runs_the_compliance_teams_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    for name in ["flow-records.yaml", "app-telemetry.yaml"] {
        let out = Command::new(mecgw_bin().unwrap())
            .args(["policy", "test"])
            .arg(root.join(name))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {stdout}");
        assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
    }
    // A case whose expectation is wrong fails, says where and why, and exits 1.
    let mut policy = POLICY.to_owned();
    policy.push_str(
        r#"tests:
  - name: wrong expectation
    keys: {subscriber: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}
    input:
      - {imsi: "1", start: 0, ue_ip: "10.1.2.3", cell: A}
    expect:
      - {record: {ue_ip: "10.1.2.3"}}
"#,
    );
    let site = site_with_key(&policy, KEY_HEX, 0o600);
    let out = Command::new(mecgw_bin().unwrap())
        .args(["policy", "test"])
        .arg(site.path("policy.yaml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("FAILED  wrong expectation"), "{stdout}");
    assert!(
        stdout.contains(".record.ue_ip is \"10.1.2.0/24\", expected \"10.1.2.3\""),
        "{stdout}"
    );
}

#[test]
fn explain_tells_each_fields_fate_and_each_releases_numbers() {
    let site = site_with_key(POLICY, KEY_HEX, 0o600);
    let out = Command::new(mecgw_bin().unwrap())
        .args(["policy", "explain"])
        .arg(site.path("policy.yaml"))
        .args(["--record", r#"{"imsi":"001010000000001","imei":"353490061234560","ue_ip":"::ffff:10.1.2.3","start":0,"cell":"A","extra":1}"#])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "imei (string): dropped — no rule in kinds.flow.transforms",
        "imsi (string): pseudonymised: HMAC-SHA-256 under key `subscriber`, new key every 1d",
        "rule kinds.flow.transforms.imsi at",
        "per window: ε 8, δ 1e-5",
        "budget allows 1 releases of it per 1d (1 needed)",
        "cohort floor k = 5",
        "count: discrete laplace noise",
        "95% error ±",
        "ue_ip: truncate (rule at 14:7) → \"::ffff:10.1.2.0/120\"",
        "extra: dropped — not declared in kinds.flow.fields",
        "the transformed record goes to: analytics (EU-DE)",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
}

/// On a terminal, a long apply shows records read, records/s and the time left on stderr;
/// into a pipe (scripts, CI, logs) it shows nothing of the kind.
#[test]
fn progress_is_shown_on_a_terminal_only() {
    let site = site_with_key(POLICY, KEY_HEX, 0o600);
    let mut input = String::new();
    let one = records();
    for _ in 0..2_000 {
        input.push_str(&one);
    }
    let (out, lines) = site.apply(&input, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(lines.len() >= 86_000, "{}", lines.len());
    assert!(
        !stderr.contains("records/s"),
        "no terminal, no progress: {stderr}"
    );

    // The same under a pseudo-terminal (util-linux `script` allocates one).
    let command = format!(
        "{} policy apply {} --in {} --out {}",
        mecgw_bin().unwrap().display(),
        site.path("policy.yaml").display(),
        site.path("in.jsonl").display(),
        site.path("out-tty.jsonl").display(),
    );
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("records/s") && shown.contains(" records, "),
        "on a terminal the progress is drawn: {shown}"
    );
}
