#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Canary test: records carry canary IMSIs, IMEIs, MSISDNs and IP addresses — in fields that
//! are pseudonymised, truncated, dropped, undeclared, and in records rejected as bad. None of
//! those values may appear in any byte the `mecgw` binary writes: the output file, the budget
//! ledger, stdout, or stderr (with the most verbose logging), for apply, explain and test.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use mecgw_tests::mecgw_bin;

const POLICY: &str = r#"version: 1
budget: {period: 1d, epsilon: 8, delta: 1e-5}
keys:
  subscriber: {path: subscriber.key, rotation: 1d}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields: {imsi: string, imei: string, msisdn: string, ue_ip: ip, peer_ip: ipv6, start: timestamp, cell: string, bytes: integer}
    transforms:
      imsi: {pseudonymise: {key: subscriber}}
      msisdn: {pseudonymise: {key: subscriber}}
      ue_ip: {truncate: {ipv4: 24, ipv6: 48}}
      peer_ip: {truncate: {ipv6: 32}}
      start: {bucket: {width: 1h}}
      cell: keep
releases:
  per_cell:
    kind: flow
    window: 1d
    group_by: [cell, start]
    contribution: {max_groups: 1, max_rows: 2}
    k: 5
    epsilon: 8
    delta: 1e-5
    metrics: [count, {sum: {field: bytes, bounds: [0, 100000]}}]
destinations:
  analytics: {region: EU-DE, kinds: [flow], releases: [per_cell]}
tests:
  - name: canary record
    keys: {subscriber: "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}
    input:
      - {imsi: "001019871234567", imei: "356938035643809", msisdn: "491709876543", ue_ip: "203.0.113.199", start: 0, cell: "c"}
    expect:
      - {record: {cell: "c"}}
"#;

/// Canary values, by what they are.
fn canaries(i: usize) -> [String; 6] {
    [
        format!("0010198712{i:05}"),                                   // IMSI
        format!("3569380356{i:05}"),                                   // IMEI
        format!("4917098{i:05}"),                                      // MSISDN
        format!("203.0.113.{}", 100 + i),                              // IPv4
        format!("2001:db8:cafe:{:x}:5678:9abc:def0:1234", 0x1000 + i), // IPv6
        format!("Canary Street {i} Berlin"),                           // an undeclared field
    ]
}

#[test]
fn no_canary_value_appears_in_any_output_byte_or_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("policy.yaml"), POLICY).unwrap();
    let key = root.join("subscriber.key");
    std::fs::write(&key, "a5".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut input = String::new();
    let mut all = Vec::new();
    for i in 0..60 {
        let [imsi, imei, msisdn, v4, v6, street] = canaries(i);
        input.push_str(&format!(
            "{{\"imsi\":\"{imsi}\",\"imei\":\"{imei}\",\"msisdn\":\"{msisdn}\",\"ue_ip\":\"{v4}\",\"peer_ip\":\"{v6}\",\"start\":\"2026-11-26T10:{:02}:00Z\",\"cell\":\"c{}\",\"bytes\":{},\"home\":\"{street}\"}}\n",
            i % 60,
            i % 2,
            1000 + i
        ));
        // Bad records carrying canaries in the wrong places.
        if i % 10 == 0 {
            input.push_str(&format!("{{\"imsi\":\"{imsi}\",\"start\":\"{imei}\"}}\n"));
            input.push_str(&format!(
                "{{\"imsi\":\"{imsi}\",\"start\":0,\"ue_ip\":\"{msisdn}\"}}\n"
            ));
            input.push_str(&format!(
                "{{\"imsi\":\"{imsi}\",\"start\":0,\"peer_ip\":\"{v4}\"}}\n"
            ));
            input.push_str(&format!(
                "{{\"imsi\":\"{imsi}\",\"start\":0,\"bytes\":\"{street}\"}}\n"
            ));
            input.push_str(&format!(
                "{{\"imsi\":\"{imsi}\",\"kind\":\"{imei}\",\"start\":0}}\n"
            ));
            input.push_str(&format!("{{\"imsi\":\"{imsi}\", broken json {v6}\n"));
        }
        all.extend(canaries(i));
    }
    // The test case's own canaries.
    all.extend(
        [
            "001019871234567",
            "356938035643809",
            "491709876543",
            "203.0.113.199",
        ]
        .map(String::from),
    );
    std::fs::write(root.join("in.jsonl"), &input).unwrap();

    let mut produced: Vec<(String, Vec<u8>)> = Vec::new();
    let run = |args: &[&str], produced: &mut Vec<(String, Vec<u8>)>| {
        let out = Command::new(mecgw_bin().unwrap())
            .args(args)
            .env("MECGW_LOG", "trace")
            .output()
            .unwrap();
        produced.push((format!("{args:?} stdout"), out.stdout));
        produced.push((format!("{args:?} stderr"), out.stderr));
        out.status
    };
    let p = root.join("policy.yaml");
    let p = p.to_str().unwrap();
    let in_path = root.join("in.jsonl");
    let out_path = root.join("out.jsonl");
    let state = root.join("state");
    let status = run(
        &[
            "policy",
            "apply",
            p,
            "--in",
            in_path.to_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
        &mut produced,
    );
    assert!(
        status.success(),
        "{}",
        String::from_utf8_lossy(&produced[1].1)
    );
    let record = format!(
        "{{\"imsi\":\"{}\",\"imei\":\"{}\",\"msisdn\":\"{}\",\"ue_ip\":\"{}\",\"peer_ip\":\"{}\",\"start\":0,\"home\":\"{}\"}}",
        all[0], all[1], all[2], all[3], all[4], all[5]
    );
    assert!(
        run(
            &["policy", "explain", p, "--record", &record],
            &mut produced
        )
        .success()
    );
    assert!(run(&["policy", "test", p], &mut produced).success());
    let bad_record = format!("{{\"imsi\":\"{}\",\"start\":\"{}\"}}", all[0], all[1]);
    assert!(
        run(
            &["policy", "explain", p, "--record", &bad_record],
            &mut produced
        )
        .success()
    );

    let out_bytes = std::fs::read(&out_path).unwrap();
    let out_text = String::from_utf8_lossy(&out_bytes).to_string();
    // The run did produce data: transformed records and released cells.
    assert!(out_text.lines().count() > 60, "{out_text}");
    assert!(out_text.contains("\"kind\":\"release\""), "{out_text}");
    assert!(
        out_text.contains("203.0.113.0/24") && out_text.contains("2001:db8::/32"),
        "{out_text}"
    );
    produced.push(("out.jsonl".into(), out_bytes));
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        produced.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    let stderr_apply = String::from_utf8_lossy(&produced[1].1).to_string();
    assert!(stderr_apply.contains("36 bad"), "{stderr_apply}");

    for (what, bytes) in &produced {
        let text = String::from_utf8_lossy(bytes);
        for canary in &all {
            assert!(
                !text.contains(canary.as_str()),
                "canary {canary:?} leaked into {what}:\n{text}"
            );
        }
    }
}
