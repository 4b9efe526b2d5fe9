//! Reading a tables file: TOML text → [`Tables`] plus where each entry starts, so that a
//! problem found later can be reported at its line and column.
//!
//! A 100,000-session file would peak at some 27 times its size in the `toml` crate's
//! document tree, so the `[[sessions]]`/`[[rules]]` blocks are parsed in runs of about
//! [`ENTRIES_PER_PARSE_BYTES`] when that cannot change the file's meaning
//! ([`Parsed::in_pieces`]); otherwise, and on any error, the whole file is parsed at once,
//! which gives the exact message and position.

use serde::Deserialize;

use super::{Defaults, LocalInterface, N3Interface, Session, Tables, TablesError, TrafficRule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    n3: N3Interface,
    local: LocalInterface,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    sessions: Vec<toml::Spanned<Session>>,
    #[serde(default)]
    rules: Vec<toml::Spanned<TrafficRule>>,
}

/// A tables file without its `[[sessions]]` and `[[rules]]` blocks (see [`Parsed::in_pieces`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame {
    n3: N3Interface,
    local: LocalInterface,
    #[serde(default)]
    defaults: Defaults,
    /// Present only if the frame itself defines sessions (`sessions = [...]`): then the
    /// blocks cannot be parsed apart from it.
    #[serde(default)]
    sessions: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    rules: Option<serde::de::IgnoredAny>,
}

/// A run of consecutive `[[sessions]]` / `[[rules]]` blocks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entries {
    #[serde(default)]
    sessions: Vec<toml::Spanned<Session>>,
    #[serde(default)]
    rules: Vec<toml::Spanned<TrafficRule>>,
}

/// About this many bytes of `[[sessions]]` / `[[rules]]` blocks are parsed at a time. The
/// `toml` crate's document tree is some 27 times its text, so this bounds the parse's peak
/// to a few MiB whatever the file's size.
pub(super) const ENTRIES_PER_PARSE_BYTES: usize = 64 * 1024;

/// What a line starting with `[` is, in the pieces parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// `[[sessions]]` or `[[rules]]`.
    Entry,
    /// `[n3]`, `[local]` or `[defaults]`.
    Table,
    /// Anything else (another header, a nested array's line, a typo): the file is parsed whole.
    Other,
}

/// The header a line starts, if it starts with `[` (after blanks).
fn header(line: &str) -> Option<Header> {
    let t = line.trim_start_matches([' ', '\t']);
    if !t.starts_with('[') {
        return None;
    }
    let (entry, close) = if t.starts_with("[[") {
        (true, "]]")
    } else {
        (false, "]")
    };
    let Some((name, after)) = t[if entry { 2 } else { 1 }..].split_once(close) else {
        return Some(Header::Other);
    };
    let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
    if !(after.is_empty() || after.starts_with('#')) {
        return Some(Header::Other);
    }
    Some(match (entry, name.trim_matches([' ', '\t'])) {
        (true, "sessions" | "rules") => Header::Entry,
        (false, "n3" | "local" | "defaults") => Header::Table,
        _ => Header::Other,
    })
}

/// A tables file deserialised, before validation; `*_at` are the byte offsets of each entry.
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct Parsed {
    n3: N3Interface,
    local: LocalInterface,
    defaults: Defaults,
    sessions: Vec<Session>,
    session_at: Vec<usize>,
    rules: Vec<TrafficRule>,
    rule_at: Vec<usize>,
}

impl Parsed {
    /// The whole file parsed at once: exact, but the parse tree peaks at ~27 times the file.
    pub(super) fn whole(text: &str, origin: &str) -> Result<Parsed, TablesError> {
        let file: TablesFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |s| LineIndex::new(text).line_col(s.start));
            TablesError::Syntax {
                path: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let (sessions, session_at) = file
            .sessions
            .into_iter()
            .map(|s| {
                let at = s.span().start;
                (s.into_inner(), at)
            })
            .unzip();
        let (rules, rule_at) = file
            .rules
            .into_iter()
            .map(|r| {
                let at = r.span().start;
                (r.into_inner(), at)
            })
            .unzip();
        Ok(Parsed {
            n3: file.n3,
            local: file.local,
            defaults: file.defaults,
            sessions,
            session_at,
            rules,
            rule_at,
        })
    }

    /// The file parsed in pieces, so that memory stays near the size of the result: the
    /// frame (root, `[n3]`, `[local]`, `[defaults]`, with every `[[sessions]]` /
    /// `[[rules]]` block's lines left empty), then runs of those blocks of about
    /// [`ENTRIES_PER_PARSE_BYTES`] each, in file order.
    ///
    /// `None` when the pieces might not mean what the whole file means, or when any piece
    /// fails: the caller then parses the whole file, which gives the exact error. A split
    /// is trusted only when every line starting with `[` is one of the five headers of the
    /// format (so no other table can own a block's keys), the file has no multi-line string
    /// (the only place a header-like line is not a header in valid TOML), and the frame
    /// does not itself define `sessions` or `rules`.
    pub(super) fn in_pieces(text: &str) -> Option<Parsed> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let mut frame = String::new();
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut in_entry = false;
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            match header(line) {
                Some(Header::Other) => return None,
                Some(Header::Entry) => {
                    match runs.last_mut() {
                        Some((start, _)) if in_entry && at - *start < ENTRIES_PER_PARSE_BYTES => {}
                        _ => runs.push((at, at)),
                    }
                    in_entry = true;
                }
                Some(Header::Table) => in_entry = false,
                None => {}
            }
            if in_entry {
                if let Some(run) = runs.last_mut() {
                    run.1 = at + line.len();
                }
                if line.ends_with('\n') {
                    frame.push('\n');
                }
            } else {
                frame.push_str(line);
            }
            at += line.len();
        }
        if runs.is_empty() {
            return None;
        }
        let head: Frame = toml::from_str(&frame).ok()?;
        std::mem::drop(frame);
        if head.sessions.is_some() || head.rules.is_some() {
            return None;
        }
        let mut sessions = Vec::new();
        let mut session_at = Vec::new();
        let mut rules = Vec::new();
        let mut rule_at = Vec::new();
        for (start, end) in runs {
            let run: Entries = toml::from_str(text.get(start..end)?).ok()?;
            for s in run.sessions {
                session_at.push(start + s.span().start);
                sessions.push(s.into_inner());
            }
            for r in run.rules {
                rule_at.push(start + r.span().start);
                rules.push(r.into_inner());
            }
        }
        Some(Parsed {
            n3: head.n3,
            local: head.local,
            defaults: head.defaults,
            sessions,
            session_at,
            rules,
            rule_at,
        })
    }
}

/// Byte offsets of the start of every line of a text: line and column of any offset in
/// O(log lines), computed once however many positions are asked for.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= at);
        let start = self.starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..at)
            .map_or(at - start, |l| l.chars().count());
        (line, column + 1)
    }
}

/// A tables file read, with the byte offset where each session and rule starts.
pub struct Positioned {
    pub tables: Tables,
    pub session_at: Vec<usize>,
    pub rule_at: Vec<usize>,
}

/// Reads tables from TOML text; `origin` names it in errors.
pub fn read(text: &str, origin: &str) -> Result<Positioned, TablesError> {
    let file = match Parsed::in_pieces(text) {
        Some(file) => file,
        None => Parsed::whole(text, origin)?,
    };
    Ok(Positioned {
        tables: Tables {
            n3: file.n3,
            local: file.local,
            defaults: file.defaults,
            sessions: file.sessions,
            rules: file.rules,
        },
        session_at: file.session_at,
        rule_at: file.rule_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{super::tests::MINIMAL, *};

    /// `n` sessions and `n / 10` rules, interleaved, with `[defaults]` and comments between.
    fn many_entries(n: u32) -> String {
        let mut text = MINIMAL.to_string();
        for i in 0..n {
            text.push_str(&format!(
                "\n# session {i}\n[[sessions]]\nid = {i}\nuplink_teid = {}\n\
                 downlink_teid = {}\nue_ipv4 = \"10.{}.{}.{}\"\ngnb = \"198.18.1.1\"\nqfi = 9\n",
                i + 1,
                i + 1,
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
            if i % 10 == 0 {
                text.push_str(&format!(
                    "  [[ rules ]] # indented\r\nid = {i}\npriority = 1\naction = \"DROP\"\n\
                     dst = [\n  \"192.0.2.0/24\",\n]\n"
                ));
            }
            if i == n / 2 {
                text.push_str("[defaults]\nunknown_teid = \"drop\"\n");
            }
        }
        text
    }

    #[test]
    fn parsing_in_pieces_gives_what_parsing_whole_gives() {
        let example = include_str!("../../../../examples/tables.toml");
        for text in [example.to_string(), many_entries(3), many_entries(3000)] {
            let whole = Parsed::whole(&text, "t").unwrap();
            let pieces = Parsed::in_pieces(&text).expect("an unambiguous file is split");
            assert_eq!(pieces, whole);
        }
        assert!(many_entries(3000).len() > 4 * ENTRIES_PER_PARSE_BYTES);
    }

    #[test]
    fn an_ambiguous_split_parses_the_whole_file() {
        let session = "[[sessions]]\nid = 1\nuplink_teid = 1\ndownlink_teid = 1\n\
                       ue_ipv4 = \"10.0.0.1\"\ngnb = \"198.18.1.1\"\nqfi = 9\n";
        let cases = [
            // A header-like line inside a multi-line string is not a header.
            format!("{MINIMAL}\n[defaults]\nunknown_teid = \"\"\"\n{session}\"\"\"\n"),
            // A table the format does not know could own the keys after it.
            format!("{MINIMAL}\n{session}[sessions.extra]\nx = 1\n"),
            // The frame defines sessions itself: they conflict with the blocks.
            format!("sessions = []\n{MINIMAL}\n{session}"),
            format!("rules = []\n{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\n"),
            // A nested array's line starts with `[`.
            format!(
                "{MINIMAL}\n[[rules]]\nid = 1\npriority = 0\naction = \"DROP\"\nx = [\n[1],\n]\n"
            ),
        ];
        for text in cases {
            assert_eq!(Parsed::in_pieces(&text), None, "{text}");
            let e = Parsed::whole(&text, "t.toml")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }

    #[test]
    fn line_and_column_are_found_for_any_offset() {
        let text = "ab\ncdé\n\nx";
        let lines = LineIndex::new(text);
        assert_eq!(lines.line_col(0), (1, 1));
        assert_eq!(lines.line_col(2), (1, 3));
        assert_eq!(lines.line_col(3), (2, 1));
        assert_eq!(lines.line_col(7), (2, 4), "columns count characters");
        assert_eq!(lines.line_col(8), (3, 1));
        assert_eq!(lines.line_col(9), (4, 1));
        assert_eq!(lines.line_col(100), (4, 2), "past the end: the end");
    }
}
