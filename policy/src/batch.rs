//! Batch mode (`mecgw policy apply`): JSON lines in, JSON lines out.
//!
//! This module owns reading records with a size limit per line, writing one output object per
//! line, and the human-readable run report. The report names reasons, fields, line numbers and
//! counts only, never a record value.

use std::fmt::Write as _;
use std::io::{BufRead, Read as _, Write};

use crate::engine::{Engine, EngineFailure, MAX_RECORD_BYTES, Output, Stats};

/// Reads every line of `input` into `engine`, writes outputs to `output`, and closes every
/// window at the end of input.
pub fn apply(
    engine: &mut Engine,
    mut input: impl BufRead,
    output: &mut impl Write,
) -> Result<(), EngineFailure> {
    let mut emit = |o: &Output<'_>| -> std::io::Result<()> {
        o.write_json(&mut *output)?;
        output.write_all(b"\n")
    };
    let mut buf = Vec::with_capacity(4096);
    let mut line_no: u64 = 0;
    loop {
        buf.clear();
        let n = (&mut input)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(EngineFailure::Output)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.len() > MAX_RECORD_BYTES && !buf.ends_with(b"\n") {
            // Skip the rest of the over-long line without holding it.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = (&mut input)
                    .take(1 << 16)
                    .read_until(b'\n', &mut sink)
                    .map_err(EngineFailure::Output)?;
                if m == 0 || sink.ends_with(b"\n") {
                    break;
                }
            }
            engine.process_line(line_no, &" ".repeat(MAX_RECORD_BYTES + 1), &mut emit)?;
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(_) => "\u{0}invalid utf-8",
        };
        if text.is_empty() {
            continue;
        }
        engine.process_line(line_no, text, &mut emit)?;
    }
    engine.finish(&mut emit)?;
    output.flush().map_err(EngineFailure::Output)
}

/// A report of a run, for people. Names reasons and counts, never values.
pub fn report(stats: &Stats) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "records: {} read, {} transformed, {} bad, {} written (per destination), {} kept on site",
        stats.records_in,
        stats.records_ok,
        stats.bad_total(),
        stats.records_out,
        stats.records_on_site
    );
    if !stats.bad.is_empty() {
        let reasons: Vec<String> = stats.bad.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(s, "bad records by reason: {}", reasons.join(", "));
        for (line, reason) in &stats.bad_samples {
            let _ = writeln!(s, "  line {line}: {reason}");
        }
        if stats.bad_total() > stats.bad_samples.len() as u64 {
            let _ = writeln!(s, "  (first {} shown)", stats.bad_samples.len());
        }
    }
    for (name, r) in &stats.releases {
        let _ = writeln!(
            s,
            "release {name}: {} windows closed, {} released, {} refused by the budget, {} suppressed at the state cap, {} failed; {} cells written; groups withheld: {} below k, {} by partition selection; rows: {} aggregated, {} over max_rows, {} over max_groups, {} at the state cap, {} late",
            r.windows_closed,
            r.windows_released,
            r.windows_refused,
            r.windows_suppressed,
            r.windows_failed,
            r.cells,
            r.groups_below_k,
            r.groups_below_threshold,
            r.rows_added,
            r.rows_over_max_rows,
            r.rows_over_max_groups,
            r.rows_state_cap,
            r.rows_late
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Ledger;
    use crate::engine::KeySource;
    use std::collections::BTreeMap;

    #[test]
    fn long_lines_blank_lines_and_bad_utf8_are_counted_not_fatal() {
        let src = crate::compile::tests::GOOD;
        let p = crate::compile(src).unwrap();
        let keys = BTreeMap::from([("subscriber".to_owned(), "00".repeat(32))]);
        let ledger = Ledger::in_memory(p.budget.epsilon, p.budget.delta, p.budget.period.0);
        use rand::SeedableRng as _;
        let mut e = Engine::new(
            &p,
            src,
            KeySource::Test(&keys),
            ledger,
            Box::new(rand::rngs::StdRng::seed_from_u64(0)),
        )
        .unwrap();
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"imsi\":\"1\",\"start\":0}\n\n");
        input.extend_from_slice(&vec![b'x'; MAX_RECORD_BYTES + 10]);
        input.extend_from_slice(b"\n\xff\xfe\n{\"imsi\":\"2\",\"start\":0}");
        let mut out = Vec::new();
        apply(&mut e, &input[..], &mut out).unwrap();
        assert_eq!(e.stats.records_in, 4);
        assert_eq!(e.stats.records_ok, 2);
        assert_eq!(e.stats.bad["too_long"], 1);
        assert_eq!(e.stats.bad["invalid_json"], 1);
        let r = report(&e.stats);
        assert!(r.contains("line 3: longer than"), "{r}");
    }
}
