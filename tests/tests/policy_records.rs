#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What `mecgw policy apply` does with the values inside records, driven as a compliance
//! team runs it: IPv6 addresses that embed an IPv4 address are generalised with the IPv4
//! prefix (issue #12.13), and timestamps are real dates inside the accepted range or the
//! record is counted bad with a reason, never written with an absurd year (issue #12.14).

use mecgw_tests::policy_site::{PolicySite, stderr};
use serde_json::Value;

const POLICY: &str = r#"version: 1
name: record values
budget: {period: 1d, epsilon: 1, delta: 1e-6}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    window: 1h
    fields: {imsi: string, ue_ip: ip, start: timestamp, end: timestamp}
    transforms:
      ue_ip: {truncate: {ipv4: 24, ipv6: 48}}
      start: {bucket: {width: 15m}}
      end: {bucket: {width: 1h}}
destinations:
  analytics: {region: EU-DE, kinds: [flow]}
"#;

/// Runs `policy apply` on `records`; returns (success, output objects, stderr).
fn apply(records: &str) -> (bool, Vec<Value>, String) {
    let (out, lines) = PolicySite::new(POLICY).apply(records, None);
    (out.status.success(), lines, stderr(&out))
}

fn record(ue_ip: &str, start: &str) -> String {
    format!("{{\"imsi\":\"001010000000001\",\"ue_ip\":\"{ue_ip}\",\"start\":{start}}}\n")
}

#[test]
fn ipv6_that_embeds_an_ipv4_address_keeps_no_more_of_it_than_the_ipv4_prefix() {
    let cases = [
        // 6to4 of 192.0.2.4: a /48 would be 2002:c000:204::/48, the whole IPv4 address.
        ("2002:c000:204:1::1", "2002:c000:200::/40"),
        // Teredo, RFC 4380 §4: server 65.54.227.120, client 192.0.2.45 (inverted) at the end.
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136::/48"),
        // NAT64 well-known prefix and IPv4-compatible: like the IPv4-mapped form, /96 + 24.
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:200/120"),
        ("::192.0.2.33", "::c000:200/120"),
        ("::ffff:192.0.2.33", "::ffff:192.0.2.0/120"),
        // NAT64 local-use prefix: the operator's prefix length is unknown, nothing past /48.
        ("64:ff9b:1:c000:2:2100::", "64:ff9b:1::/48"),
        // Native IPv6 and IPv4, unchanged behaviour.
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("192.0.2.33", "192.0.2.0/24"),
        // Already a network: a shorter input prefix is kept, never lengthened.
        ("::ffff:192.0.2.0/100", "::ffff:192.0.0.0/100"),
    ];
    let input: String = cases
        .iter()
        .map(|(ip, _)| record(ip, "\"2026-11-26T10:00:00Z\""))
        .collect();
    let (ok, lines, stderr) = apply(&input);
    assert!(ok, "{stderr}");
    let got: Vec<&str> = lines
        .iter()
        .map(|v| v["record"]["ue_ip"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = cases.iter().map(|(_, w)| *w).collect();
    assert_eq!(got, want);
    // Neither the 6to4 site's last octet, nor anything of the Teredo client, leaves.
    let text = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for leak in ["c000:204", "3fff:fdd2", "63bf", "c000:221", "e378"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[test]
fn impossible_or_out_of_range_timestamps_make_a_record_bad_with_a_reason() {
    let records = [
        record("10.0.0.1", "\"2026-11-26T10:20:00Z\""), // good
        record("10.0.0.1", "\"2026-02-31T10:00:00Z\""), // 31 February
        record("10.0.0.1", "\"2026-11-26T10:20:00.5+24:00\""), // offset beyond 23:59
        record("10.0.0.1", "99999999999999"),           // year 3170843
        record("10.0.0.1", "-86400"),                   // 1969-12-31
        record("10.0.0.1", "\"0001-01-01T00:00:00Z\""),
        record("10.0.0.1", "\"9999-12-31T23:59:59Z\""), // the last accepted second
    ];
    let mut input: String = records.concat();
    // A timestamp field that is not the record's time is checked the same way.
    input.push_str(
        "{\"imsi\":\"1\",\"ue_ip\":\"10.0.0.1\",\"start\":\"2026-11-26T10:20:00Z\",\"end\":\"2026-11-26T10:20:00Z\"}\n",
    );
    input.push_str(
        "{\"imsi\":\"1\",\"ue_ip\":\"10.0.0.1\",\"start\":\"2026-11-26T10:20:00Z\",\"end\":1e300}\n",
    );
    input.push_str(
        "{\"imsi\":\"1\",\"ue_ip\":\"10.0.0.1\",\"start\":\"2026-11-26T10:20:00Z\",\"end\":253402300800}\n",
    );
    let (ok, lines, stderr) = apply(&input);
    assert!(ok, "bad records do not fail the run: {stderr}");
    assert!(stderr.contains("10 read, 3 transformed, 7 bad"), "{stderr}");
    assert!(
        stderr.contains("bad records by reason: time_out_of_range: 4, wrong_type: 3"),
        "{stderr}"
    );
    for (line, why) in [
        (2, "field `start` is not a valid timestamp"),
        (3, "field `start` is not a valid timestamp"),
        (
            4,
            "field `start` is outside the accepted time range, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
        ),
        (5, "field `start` is outside the accepted time range"),
        (6, "field `start` is outside the accepted time range"),
        (9, "field `end` is not a valid timestamp"),
        (10, "field `end` is outside the accepted time range"),
    ] {
        assert!(
            stderr.contains(&format!("line {line}: {why}")),
            "line {line}: {stderr}"
        );
    }
    // What is written carries real, four-digit-year dates only.
    let starts: Vec<&str> = lines
        .iter()
        .map(|v| v["record"]["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-11-26T10:15:00Z",
            "9999-12-31T23:45:00Z",
            "2026-11-26T10:15:00Z",
        ]
    );
    assert_eq!(lines[2]["record"]["end"], "2026-11-26T10:00:00Z");
}
