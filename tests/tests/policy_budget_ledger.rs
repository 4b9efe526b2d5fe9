#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The budget ledger is tamper-evident (issue #12.4), driven as an operator meets it through
//! `mecgw policy apply --state DIR` and `mecgw budget verify|reset`: emptying or deleting the
//! ledger, changing one byte of a `spent` line, or damaging its last complete line no longer
//! gives the spent budget back; each is refused (nothing written, exit 1) with the file and
//! what differs, until an operator restores the files or runs an audited reset. A torn last
//! line from a crash is still recovered.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Output;

use mecgw_tests::policy_site::{PolicySite, stderr, stdout};
use serde_json::Value;

/// One release whose ε (8) is the whole day's budget: a second run over the same day must be
/// refused by the budget, which is what a ledger that "forgot" would let through.
const POLICY: &str = r#"version: 1
name: ledger test
budget: {period: 1d, epsilon: 8, delta: 1e-5}
kinds:
  flow:
    privacy_unit: imsi
    time: start
    fields: {imsi: string, start: timestamp, cell: string}
    transforms: {cell: keep}
releases:
  per_cell:
    kind: flow
    window: 1d
    group_by: [cell]
    contribution: {max_groups: 1, max_rows: 1}
    k: 5
    epsilon: 8
    delta: 1e-5
    metrics: [count]
destinations:
  stats: {region: EU-FR, releases: [per_cell]}
"#;

struct Site(PolicySite);

/// 60 people in cell A on 2026-11-26: one release of per_cell.
fn records() -> String {
    (0..60)
        .map(|i| {
            format!(
                "{{\"imsi\":\"00101{i:010}\",\"start\":\"2026-11-26T10:{i:02}:00Z\",\"cell\":\"A\"}}\n"
            )
        })
        .collect()
}

impl Site {
    fn new() -> Self {
        Self(PolicySite::new(POLICY))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn ledger(&self) -> PathBuf {
        self.state().join("budget-ledger.jsonl")
    }

    /// `policy apply --state`: (output, releases written).
    fn apply(&self) -> (Output, usize) {
        let (out, lines) = self.0.apply(&records(), Some(&self.state()));
        let releases = lines.iter().filter(|v| v["kind"] == "release").count();
        (out, releases)
    }

    /// `mecgw budget ARGS --state DIR`.
    fn budget(&self, args: &[&str]) -> Output {
        let mut argv: Vec<OsString> = vec!["budget".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.extend(["--state".into(), self.state().into_os_string()]);
        self.0.mecgw(argv)
    }

    /// The day's budget is spent: one release written, then one refusal recorded.
    fn spend_the_day(&self) {
        let (out, releases) = self.apply();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(releases, 1);
        let (out, releases) = self.apply();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(releases, 0, "the day's budget is spent");
    }

    fn ledger_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.ledger())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_ledger(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        if !lines.is_empty() {
            text.push('\n');
        }
        std::fs::write(self.ledger(), text).unwrap();
    }

    /// The next run is refused: exit 1, nothing written, and stderr names the ledger, says
    /// what differs (`want`) and how to resolve it.
    fn assert_refused(&self, want: &str) {
        let (out, releases) = self.apply();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(releases, 0);
        assert!(!self.path("out.jsonl").exists(), "nothing is written");
        assert!(
            err.contains(&format!("budget ledger {}", self.ledger().display())),
            "{err}"
        );
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(
            err.contains(&format!(
                "mecgw budget reset --state {} --reason TEXT",
                self.state().display()
            )),
            "{err}"
        );
        let v = self.budget(&["verify"]);
        assert_eq!(v.status.code(), Some(1));
        assert!(stderr(&v).contains(want), "{}", stderr(&v));
    }
}

#[test]
fn an_intact_ledger_verifies_and_holds_the_budget() {
    let site = Site::new();
    site.spend_the_day();
    let v = site.budget(&["verify"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(
        stdout(&v).contains("chain intact: 2 entries (0 reset(s)), last hash "),
        "{}",
        stdout(&v)
    );
    let head = std::fs::read_to_string(site.state().join("budget-ledger.head")).unwrap();
    assert!(head.starts_with("2 "), "{head}");
}

#[test]
fn an_emptied_ledger_is_refused() {
    let site = Site::new();
    site.spend_the_day();
    std::fs::write(site.ledger(), "").unwrap();
    site.assert_refused("the ledger is empty but its head records 2 entries: it was emptied");
}

#[test]
fn a_deleted_ledger_whose_head_remains_is_refused() {
    let site = Site::new();
    site.spend_the_day();
    std::fs::remove_file(site.ledger()).unwrap();
    site.assert_refused("the ledger file is missing but its head records 2 entries");
}

#[test]
fn a_ledger_deleted_with_its_head_is_refused_until_an_audited_reset() {
    let site = Site::new();
    site.spend_the_day();
    // The chain alone cannot see this: no head, no ledger looks like a new directory. The
    // directory's state marker remembers that it had a ledger.
    std::fs::remove_file(site.ledger()).unwrap();
    std::fs::remove_file(site.state().join("budget-ledger.head")).unwrap();
    let marker = site.state().join("state.marker");
    let want = format!(
        "the budget ledger {} and its head are missing, but {} says the ledger existed",
        site.ledger().display(),
        marker.display()
    );
    let (out, releases) = site.apply();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(releases, 0);
    assert!(!site.path("out.jsonl").exists(), "nothing is written");
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains(&format!(
            "mecgw budget reset --state {} --reason TEXT",
            site.state().display()
        )),
        "{err}"
    );
    assert!(
        !site.ledger().exists(),
        "a refused run creates no new ledger"
    );
    let v = site.budget(&["verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(stderr(&v).contains(&want), "{}", stderr(&v));

    // The explicit, audited way out: a new chain whose first entry records the reset.
    let out = site.budget(&["reset", "--reason", "INC-4712: state volume lost"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(site.ledger_lines()[0].contains("INC-4712: state volume lost"));
    let (out, releases) = site.apply();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        releases, 1,
        "the reset gave the lost budget back, as recorded"
    );
}

#[test]
fn one_byte_changed_in_a_spent_line_is_refused() {
    let site = Site::new();
    site.spend_the_day();
    let mut lines = site.ledger_lines();
    assert!(lines[0].contains("\"outcome\":\"spent\""));
    // ε 8 (8000000000 units of 1e-9) becomes ε 0.
    lines[0] = lines[0].replace("\"epsilon\":8000000000", "\"epsilon\":0000000000");
    site.write_ledger(&lines);
    site.assert_refused("line 1: its stored hash is");
}

#[test]
fn a_damaged_or_missing_last_complete_line_is_refused() {
    let site = Site::new();
    site.spend_the_day();
    let mut lines = site.ledger_lines();
    let last = lines.pop().unwrap();
    // Damaged but still newline-terminated.
    let damaged = last.replace("refused", "spent\"x");
    site.write_ledger(&[lines.clone(), vec![damaged]].concat());
    site.assert_refused("line 2");
    // Removed.
    site.write_ledger(&lines);
    site.assert_refused("the ledger holds 1 entries but its head records 2");
    // Cut inside the line the head counts (not a crash: that line was complete).
    let mut cut = lines.join("\n");
    cut.push('\n');
    cut.push_str(&last[..last.len() / 2]);
    std::fs::write(site.ledger(), cut).unwrap();
    site.assert_refused("the ledger holds 1 entries but its head records 2");
}

#[test]
fn a_torn_line_after_the_head_is_a_crash_and_is_recovered() {
    let site = Site::new();
    site.spend_the_day();
    let whole = std::fs::read_to_string(site.ledger()).unwrap();
    // A write the crash interrupted: never granted, and not counted by the head.
    std::fs::write(site.ledger(), format!("{whole}{{\"index\":2,\"prev\":\"00")).unwrap();
    let (out, releases) = site.apply();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(releases, 0, "the day's budget is still spent");
    let lines = site.ledger_lines();
    assert_eq!(lines.len(), 3, "the torn line was cut, one refusal added");
    let outcomes: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["spent", "refused", "refused"]);
}

#[test]
fn an_audited_reset_keeps_the_damaged_files_and_carries_what_it_can_read() {
    let site = Site::new();
    site.spend_the_day();
    let before = std::fs::read_to_string(site.ledger()).unwrap();
    let mut lines = site.ledger_lines();
    lines[1] = lines[1].replace("refused", "refusex"); // the refusal line, damaged
    site.write_ledger(&lines);
    site.assert_refused("line 2: its stored hash is");
    let damaged = std::fs::read_to_string(site.ledger()).unwrap();
    assert_ne!(damaged, before);

    // A reason is required.
    let out = site.budget(&["reset", "--reason", "  "]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--reason is empty"),
        "{}",
        stderr(&out)
    );

    let out = site.budget(&["reset", "--reason", "INC-4711: ledger edited by hand"]);
    let printed = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(printed.contains("found:    budget ledger"), "{printed}");
    assert!(
        printed.contains(
            "new chain: 2 entries: the reset, then 1 carried over; 1 unreadable line(s) lost"
        ),
        "{printed}"
    );
    // The damaged ledger and its head are kept, byte for byte.
    let kept: Vec<PathBuf> = std::fs::read_dir(site.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".reset-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let kept_ledger = kept
        .iter()
        .find(|p| p.to_string_lossy().contains("jsonl.reset-"))
        .unwrap();
    assert_eq!(std::fs::read_to_string(kept_ledger).unwrap(), damaged);
    // The new chain starts with the audit record of the reset.
    let first: Value = serde_json::from_str(&site.ledger_lines()[0]).unwrap();
    assert_eq!(first["outcome"], "reset");
    assert_eq!(first["reset"]["reason"], "INC-4711: ledger edited by hand");
    assert!(
        first["reset"]["old_head"]
            .as_str()
            .unwrap()
            .starts_with("2 ")
    );
    assert!(first["reset"]["found"].as_str().unwrap().contains("line 2"));
    let v = site.budget(&["verify"]);
    assert!(
        stdout(&v).contains("chain intact: 2 entries (1 reset(s))"),
        "{}",
        stdout(&v)
    );
    // The readable spending was carried over: the day's budget is still spent.
    let (out, releases) = site.apply();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(releases, 0);
}

#[test]
fn a_ledger_from_before_the_chain_is_refused_until_reset_adopts_it() {
    let site = Site::new();
    std::fs::create_dir_all(site.state()).unwrap();
    // What an older mecgw wrote: unchained lines, no head. ε 8 spent on 2026-11-26.
    std::fs::write(
        site.ledger(),
        "{\"period\":20783,\"period_len\":86400,\"release\":\"per_cell\",\"window\":1795651200,\"epsilon\":8000000000,\"delta\":10000000000000,\"outcome\":\"spent\",\"policy\":\"sha256:00\"}\n",
    )
    .unwrap();
    site.assert_refused("line 1: the line is not a ledger entry");
    let out = site.budget(&["reset", "--reason", "upgrade to the chained ledger"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, releases) = site.apply();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(releases, 0, "what the old ledger spent still counts");
}
