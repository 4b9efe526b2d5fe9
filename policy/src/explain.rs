//! `mecgw policy explain`: what a policy does, in words and numbers.
//!
//! This module owns the explanation: for each field, its treatment and the rule that says so;
//! for each release, its privacy parameters, noise scales, the 95% error bound at the cohort
//! floor, and how many releases the budget allows per period; and, for `--record`, what happens
//! to one record (the engine transforms it, [`describe_preview`] puts it in words). It only
//! reads the policy and that record, and never repeats an input value.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::engine::MAX_RECORD_BYTES;
use crate::model::{BucketWidth, Policy, Transform};
use crate::release::Mechanism;
use crate::transform::RecordError;
use crate::units::{Delta, Epsilon};

fn transform_text(t: &Transform, policy: &Policy) -> String {
    match t {
        Transform::Keep => "kept unchanged".into(),
        Transform::Redact => "redacted (replaced by \"[REDACTED]\")".into(),
        Transform::Pseudonymise { key } => {
            let rot = policy
                .keys
                .get(key)
                .map(|k| k.rotation.to_string())
                .unwrap_or_default();
            format!(
                "pseudonymised: HMAC-SHA-256 under key `{key}`, new key every {rot}; output `e<epoch>:<128-bit hex>`"
            )
        }
        Transform::Truncate { ipv4, ipv6 } => {
            let (p4, p6) = (ipv4.unwrap_or(24), ipv6.unwrap_or(48));
            format!(
                "truncated to a network prefix: IPv4 /{p4}, IPv6 /{p6}, IPv4-mapped IPv6 /{}; \
                 IPv6 that embeds an IPv4 address keeps at most its /{p4}: \
                 IPv4-compatible, -translated and NAT64 64:ff9b::/96 /{}, 6to4 /{}, \
                 Teredo /{} (server only), NAT64 64:ff9b:1::/48 /{}",
                96 + p4,
                96 + p4,
                p6.min(16 + p4),
                p6.min(32 + p4),
                p6.min(48)
            )
        }
        Transform::Coarsen { grid } => format!(
            "coarsened to a {}° grid (south-west corner of the cell)",
            f64::from(grid.0) / 1e6
        ),
        Transform::Bucket { width } => match width {
            BucketWidth::Duration(d) => format!("bucketed to {d} (start of the bucket)"),
            BucketWidth::Number { units, places } => {
                format!(
                    "bucketed to multiples of {}",
                    *units as f64 / 10f64.powi(*places as i32)
                )
            }
        },
    }
}

/// The explanation of a whole policy. `file` names the policy in rule references.
pub fn explain(policy: &Policy, file: &str) -> String {
    let mut s = String::new();
    let b = &policy.budget;
    let _ = writeln!(
        s,
        "policy {}{}\nbudget: ε {} and δ {} per privacy unit per {}, shared by all releases ({file}:{})\n",
        policy.name.as_deref().unwrap_or("(unnamed)"),
        policy
            .description
            .as_deref()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default(),
        b.epsilon,
        b.delta,
        b.period,
        b.pos
    );
    for (kname, kind) in &policy.kinds {
        let dests: Vec<String> = policy
            .destinations
            .iter()
            .filter(|(_, d)| d.kinds.contains(kname))
            .map(|(n, d)| format!("{n} ({})", d.region))
            .collect();
        let _ = writeln!(
            s,
            "kind `{kname}`: privacy unit `{}`, time `{}` ({file}:{})\n  transformed records go to: {}",
            kind.privacy_unit,
            kind.time,
            kind.pos,
            if dests.is_empty() {
                "nowhere — they stay on site".to_owned()
            } else {
                dests.join(", ")
            }
        );
        for (field, ty) in &kind.fields {
            match kind.transforms.get(field) {
                Some(t) => {
                    let pos = kind.transform_pos.get(field).copied().unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  {field} ({}): {} — rule kinds.{kname}.transforms.{field} at {file}:{pos}",
                        ty.name(),
                        transform_text(t, policy)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  {field} ({}): dropped — no rule in kinds.{kname}.transforms (the policy is an allow-list)",
                        ty.name()
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "  any other field: dropped — not declared in kinds.{kname}.fields\n"
        );
    }
    for (rname, r) in &policy.releases {
        let dests: Vec<String> = policy
            .destinations
            .iter()
            .filter(|(_, d)| d.releases.contains(rname))
            .map(|(n, d)| format!("{n} ({})", d.region))
            .collect();
        let windows_per_period = b.period.0 / r.window.0.max(1);
        let by_eps = b.epsilon.0 / r.epsilon.0.max(1);
        let by_delta = b.delta.0.checked_div(r.delta.0).unwrap_or(u64::MAX);
        let allowed = by_eps.min(by_delta);
        let _ = writeln!(
            s,
            "release `{rname}` over kind `{}` ({file}:{})\n  goes to: {}\n  window {} ({windows_per_period} per {}), grouped by [{}]\n  per window: ε {}, δ {}; per {}: ε {}, δ {}\n  budget allows {allowed} releases of it per {} ({} needed)\n  contribution per privacy unit per window: at most {} group(s), {} row(s) per group\n  cohort floor k = {}",
            r.kind,
            r.pos,
            if dests.is_empty() {
                "nowhere — it is not computed".to_owned()
            } else {
                dests.join(", ")
            },
            r.window,
            b.period,
            r.group_by.join(", "),
            r.epsilon,
            r.delta,
            b.period,
            Epsilon(r.epsilon.0.saturating_mul(windows_per_period)),
            Delta(r.delta.0.saturating_mul(windows_per_period)),
            b.period,
            windows_per_period,
            r.contribution.max_groups,
            r.contribution.max_rows,
            r.k,
        );
        match Mechanism::new(rname, r) {
            Ok(m) => {
                let _ = writeln!(
                    s,
                    "  partition selection: discrete Laplace scale {:.3} on distinct units (ε {:.6}, δ {:e}); a group is released only if it has ≥ {} units and its noisy unit count is ≥ {}; a group of exactly k units is released with probability {:.3e}",
                    m.selection.scale(),
                    r.epsilon.as_f64() / f64::from(m.shares),
                    m.selection_delta,
                    r.k,
                    m.threshold,
                    m.release_probability_at_k
                );
                for q in m.quantities.iter().flatten() {
                    let err = q.sampler.error95() / q.unit_scale;
                    let rel = if q.label == "count" || q.label.ends_with(".count") {
                        format!(
                            " ({:.1}% of a count at k = {})",
                            100.0 * err / f64::from(r.k),
                            r.k
                        )
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        s,
                        "  {}: discrete {} noise, ε {:.6}, sensitivity {}, scale {:.3}, 95% error ±{:.3}{rel}",
                        q.label,
                        q.sampler.name(),
                        r.epsilon.as_f64() / f64::from(m.shares),
                        q.sensitivity,
                        q.sampler.scale() / q.unit_scale,
                        err
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "  cannot be released: {e}");
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "everything not listed above stays on site.");
    s
}

/// Parses one record given on a command line.
pub fn parse_record(text: &str) -> Result<Value, RecordError> {
    if text.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong(MAX_RECORD_BYTES));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(RecordError::NotAnObject),
        Err(_) => Err(RecordError::InvalidJson),
    }
}

/// Describes what happens to one record (for `policy explain --record`): each input field's
/// fate and the output value. Input values are not repeated; only outputs are shown.
pub fn describe_preview(
    policy: &Policy,
    input: &Value,
    preview: &Result<(String, Map<String, Value>), RecordError>,
) -> String {
    let mut s = String::from("\nrecord:\n");
    let (kind_name, fields) = match preview {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(s, "  rejected: {e} (it would be counted as a bad record)");
            return s;
        }
    };
    let Some(kind) = policy.kinds.get(kind_name) else {
        return s;
    };
    let _ = writeln!(s, "  kind `{kind_name}`");
    if let Value::Object(input) = input {
        for name in input.keys() {
            if name == "kind" {
                continue;
            }
            match (
                kind.fields.get(name),
                kind.transforms.get(name),
                fields.get(name),
            ) {
                (None, _, _) => {
                    let _ = writeln!(
                        s,
                        "  {name}: dropped — not declared in kinds.{kind_name}.fields"
                    );
                }
                (Some(_), None, _) => {
                    let _ = writeln!(
                        s,
                        "  {name}: dropped — no rule in kinds.{kind_name}.transforms"
                    );
                }
                (Some(_), Some(t), Some(out)) => {
                    let pos = kind.transform_pos.get(name).copied().unwrap_or_default();
                    let _ = writeln!(s, "  {name}: {} (rule at {pos}) → {out}", t.name());
                }
                (Some(_), Some(t), None) => {
                    let _ = writeln!(s, "  {name}: {} → (absent)", t.name());
                }
            }
        }
    }
    let dests: Vec<String> = policy
        .destinations
        .iter()
        .filter(|(_, d)| d.kinds.contains(kind_name))
        .map(|(n, d)| format!("{n} ({})", d.region))
        .collect();
    let _ = writeln!(
        s,
        "  the transformed record goes to: {}",
        if dests.is_empty() {
            "nowhere — it stays on site".to_owned()
        } else {
            dests.join(", ")
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_fields_rules_and_release_numbers() {
        let p = crate::compile(crate::compile::tests::GOOD).unwrap();
        let text = explain(&p, "p.yaml");
        assert!(
            text.contains("imsi (string): pseudonymised: HMAC-SHA-256 under key `subscriber`"),
            "{text}"
        );
        assert!(
            text.contains("rule kinds.flow.transforms.imsi at p.yaml:12:7"),
            "{text}"
        );
        assert!(text.contains("bytes (integer): dropped"), "{text}");
        assert!(
            text.contains("budget allows 24 releases of it per 1d (24 needed)"),
            "{text}"
        );
        assert!(text.contains("count: discrete laplace noise"), "{text}");
        assert!(text.contains("95% error ±"), "{text}");
        assert!(
            text.contains("transformed records go to: nowhere"),
            "{text}"
        );
    }
}
