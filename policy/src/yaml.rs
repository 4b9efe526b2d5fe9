//! A YAML tree whose every node carries its line and column.
//!
//! This module owns turning policy text into a positioned tree. It uses yaml-rust2's event
//! parser (maintained; it reports a position for every event) and builds the tree itself so
//! that duplicate keys, anchors and nesting depth are under our control. It never interprets
//! the policy: `compile` does that.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Code, Diagnostic, Pos};

/// Largest policy file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// The text of the policy file at `path`; a file over [`MAX_SOURCE_BYTES`] is refused
/// (`InvalidData`) before it is read, and so is one that is not UTF-8 (the error says where,
/// or that the file is UTF-16).
pub fn read_source(path: &std::path::Path) -> std::io::Result<String> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    // Only a regular file, read through the limit (a device or a FIFO is refused).
    let bytes = crate::files::read_limited(path, MAX_SOURCE_BYTES as u64)
        .map_err(crate::files::ReadError::into_io)?;
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(invalid(
            "the file is UTF-16 text; save the policy as UTF-8".to_owned(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // Only the valid prefix is decoded to find the position.
        let pos = position_at(&String::from_utf8_lossy(valid), valid.len());
        invalid(format!(
            "the file is not UTF-8 text: invalid byte at {pos}; save the policy as UTF-8"
        ))
    })
}

/// The line and column (in characters, from 1) of byte offset `at` of `text`.
fn position_at(text: &str, at: usize) -> Pos {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line: before.matches('\n').count() + 1,
        col: before[line_start..].chars().count() + 1,
    }
}

/// The first character YAML does not allow in a stream (YAML 1.2, c-printable: C0 controls
/// other than tab, LF and CR, DEL, C1 controls other than NEL, U+FFFE and U+FFFF), as a P001
/// at its position. The parser would otherwise stop silently at a NUL and report what is
/// missing after it, or misread other controls as part of a key.
fn forbidden_character(src: &str) -> Option<Diagnostic> {
    fn forbidden(c: char) -> bool {
        matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}'
            | '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}')
    }
    let (at, c) = src.char_indices().find(|(_, c)| forbidden(*c))?;
    let more = src[at..]
        .chars()
        .filter(|c| forbidden(*c))
        .count()
        .saturating_sub(1);
    let what = if c == '\0' {
        "a NUL byte".to_owned()
    } else {
        format!("the control character U+{:04X}", u32::from(c))
    };
    let more = match more {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    Some(Diagnostic::new(
        position_at(src, at),
        Code::Syntax,
        format!("the file contains {what}{more}, which YAML does not allow"),
        "remove it; a policy is UTF-8 text (a NUL often means a binary or UTF-16 file)",
    ))
}
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes accepted in one file.
pub const MAX_NODES: usize = 200_000;

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The content of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar; `quoted` is true for quoted and block scalars, which are always strings.
    Scalar { text: String, quoted: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order. Keys are scalars (others are rejected while building).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text if this is a plain or quoted scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for a plain scalar that YAML reads as null (`~`, `null`, empty).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's shape for error messages.
    pub fn shape(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Converts the node to JSON: plain scalars become numbers, booleans or null where YAML
    /// 1.2 core schema says so; quoted scalars stay strings.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar { text, quoted } => {
                if *quoted {
                    return serde_json::Value::String(text.clone());
                }
                if self.is_null() {
                    return serde_json::Value::Null;
                }
                match text.as_str() {
                    "true" | "True" | "TRUE" => return serde_json::Value::Bool(true),
                    "false" | "False" | "FALSE" => return serde_json::Value::Bool(false),
                    _ => {}
                }
                if let Ok(i) = text.parse::<i64>() {
                    return serde_json::Value::from(i);
                }
                if looks_numeric(text)
                    && let Ok(f) = text.parse::<f64>()
                    && let Some(n) = serde_json::Number::from_f64(f)
                {
                    return serde_json::Value::Number(n);
                }
                serde_json::Value::String(text.clone())
            }
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn looks_numeric(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    t.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
}

fn pos_of(m: &Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Parses `src` into a tree. An empty document is an empty mapping at 1:1.
///
/// Errors: P001 for YAML syntax (with the parser's position) and for characters YAML does not
/// allow (a NUL, other control characters), P023 for size, depth or node
/// count limits, P016 for a duplicate key, P004 for a non-scalar key, P005 for aliases (the
/// policy language does not use anchors, and they would allow exponential expansion).
pub fn parse(src: &str) -> Result<Node, Diagnostic> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::new(
            Pos { line: 1, col: 1 },
            Code::LimitExceeded,
            format!(
                "the policy is {} bytes; the limit is {MAX_SOURCE_BYTES}",
                src.len()
            ),
            "split the policy or remove unused parts",
        ));
    }
    // YAML allows a byte order mark at the start of a stream; positions are counted after
    // it, as editors show them.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    if let Some(d) = forbidden_character(src) {
        return Err(d);
    }
    let mut builder = Builder {
        parser: Parser::new_from_str(src),
        nodes: 0,
    };
    builder.document()
}

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    nodes: usize,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Pos), Diagnostic> {
        match self.parser.next_token() {
            Ok((ev, mark)) => Ok((ev, pos_of(&mark))),
            Err(e) => Err(Diagnostic::new(
                pos_of(e.marker()),
                Code::Syntax,
                format!("YAML syntax error: {}", e.info()),
                "fix the YAML syntax at this position (indentation, quotes, colons)",
            )),
        }
    }

    fn document(&mut self) -> Result<Node, Diagnostic> {
        let empty = Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Map(Vec::new()),
        };
        let mut root = None;
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::DocumentStart => {
                    if root.is_some() {
                        return Err(Diagnostic::new(
                            pos,
                            Code::Syntax,
                            "a second YAML document in the policy file",
                            "keep one policy per file; remove the extra `---` document",
                        ));
                    }
                    let (ev, pos) = self.next()?;
                    if matches!(ev, Event::DocumentEnd) {
                        root = Some(empty.clone());
                    } else {
                        root = Some(self.node(ev, pos, 0)?);
                    }
                }
                Event::StreamEnd => return Ok(root.unwrap_or(empty)),
                other => {
                    return Err(Diagnostic::new(
                        pos,
                        Code::Syntax,
                        format!("unexpected YAML event {other:?}"),
                        "fix the YAML structure",
                    ));
                }
            }
        }
    }

    fn node(&mut self, ev: Event, pos: Pos, depth: usize) -> Result<Node, Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Diagnostic::new(
                pos,
                Code::LimitExceeded,
                format!("the policy has more than {MAX_NODES} YAML nodes"),
                "split the policy or remove unused parts",
            ));
        }
        if depth > MAX_DEPTH {
            return Err(Diagnostic::new(
                pos,
                Code::LimitExceeded,
                format!("nesting deeper than {MAX_DEPTH} levels"),
                "flatten the structure; the policy language never nests this deep",
            ));
        }
        match ev {
            Event::Scalar(text, style, _, _) => Ok(Node {
                pos,
                value: Value::Scalar {
                    text,
                    quoted: !matches!(style, TScalarStyle::Plain),
                },
            }),
            Event::Alias(_) => Err(Diagnostic::new(
                pos,
                Code::InvalidValue,
                "YAML aliases (*name) are not allowed in policies",
                "write the value out in full; every rule must be readable where it applies",
            )),
            Event::SequenceStart(_, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, p) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        return Ok(Node {
                            pos,
                            value: Value::Seq(items),
                        });
                    }
                    items.push(self.node(ev, p, depth + 1)?);
                }
            }
            Event::MappingStart(_, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, p) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        // The parser marks a block mapping nested in a sequence after its
                        // first key; the first key's own position is the accurate start.
                        let pos = entries.first().map_or(pos, |(k, _)| pos.min(k.pos));
                        return Ok(Node {
                            pos,
                            value: Value::Map(entries),
                        });
                    }
                    let key = self.node(ev, p, depth + 1)?;
                    let Some(key_text) = key.as_scalar() else {
                        return Err(Diagnostic::new(
                            key.pos,
                            Code::WrongType,
                            format!("a mapping key must be a plain name, found {}", key.shape()),
                            "use a plain name as the key",
                        ));
                    };
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| k.as_scalar() == Some(key_text))
                    {
                        return Err(Diagnostic::new(
                            key.pos,
                            Code::DuplicateKey,
                            format!(
                                "duplicate key `{key_text}` (first defined at {})",
                                first.pos
                            ),
                            "remove one of the two definitions",
                        ));
                    }
                    let (ev, p) = self.next()?;
                    let value = self.node(ev, p, depth + 1)?;
                    entries.push((key, value));
                }
            }
            other => Err(Diagnostic::new(
                pos,
                Code::Syntax,
                format!("unexpected YAML event {other:?}"),
                "fix the YAML structure",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a: 1\nb:\n  c: [x, 'y']\n").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert_eq!(e[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(e[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Map(inner) = &e[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].pos, Pos { line: 3, col: 10 });
        assert_eq!(items[1].to_json(), serde_json::json!("y"));
    }

    #[test]
    fn a_mapping_in_a_sequence_starts_at_its_first_key() {
        let n = parse("tests:\n  - name: x\n    k: 1\n").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        let Value::Seq(items) = &e[0].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 2, col: 5 });
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.code, Code::DuplicateKey);
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(e.message.contains("1:1"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.code, Code::Syntax);
        assert!(e.pos.line >= 1);
    }

    #[test]
    fn aliases_and_depth_are_refused() {
        assert_eq!(
            parse("a: &x 1\nb: *x\n").unwrap_err().code,
            Code::InvalidValue
        );
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(parse(&deep).unwrap_err().code, Code::LimitExceeded);
    }

    #[test]
    fn json_conversion_follows_plain_vs_quoted() {
        let n = parse("a: 1\nb: '1'\nc: true\nd: 1.5\ne: ~\nf: 1e-5\ng: abc\n").unwrap();
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": 1, "b": "1", "c": true, "d": 1.5, "e": null, "f": 1e-5, "g": "abc"})
        );
    }
}
