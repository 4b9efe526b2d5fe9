//! The readers every section is built from: mappings with a fixed set of keys, mappings of
//! user-chosen names, scalars, whole numbers, lists of names and the policy's quantities
//! (ε, δ, durations), each reporting what is wrong at its position and returning `None`.

use crate::diag::{Code, Pos};
use crate::units::{self, Delta, Duration, Epsilon, UnitError};
use crate::yaml::{Node, Value};

use super::Ctx;

/// Most entries in any one named section (kinds, fields, releases, …).
pub const MAX_ENTRIES: usize = 10_000;

/// The known entries of a mapping, by key.
pub(super) struct Entries<'n> {
    pub(super) pos: Pos,
    what: String,
    items: Vec<(&'n str, &'n Node)>,
}

impl<'n> Entries<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.items.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// `did you mean `x`? ` when one candidate is within two edits of `word`, else nothing.
pub(super) fn suggest(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= 2 => format!("did you mean `{c}`? "),
        _ => String::new(),
    }
}

/// What to write instead of `word`, which is not among `names` (the names declared under
/// `section`): a suggestion and the list, or, when nothing is declared there, where to
/// declare it.
pub(super) fn one_of(word: &str, names: &[&str], section: &str) -> String {
    if names.is_empty() {
        format!("nothing is declared under {section} yet: declare `{word}` there first")
    } else {
        format!("{}use one of: {}", suggest(word, names), names.join(", "))
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How to read one kind of quantity, and what its valid range is.
struct Quantity<T> {
    /// The exact parser of `units`.
    parse: fn(&str) -> Result<T, UnitError>,
    /// `true` if a parsed value is in range.
    in_range: fn(&T) -> bool,
    /// `true` for a parse error that means "out of range" rather than "unreadable".
    range_error: fn(&UnitError) -> bool,
    /// The code, message and help of an out-of-range value, from `what` and the text.
    out_of_range: fn(&str, &str) -> (Code, String, String),
    /// The help of an unreadable value.
    unreadable_help: &'static str,
}

const EPSILON: Quantity<Epsilon> = Quantity {
    parse: units::parse_epsilon,
    in_range: |e| e.0 > 0,
    range_error: |e| matches!(e, UnitError::Negative(_)),
    out_of_range: |what, s| {
        (
            Code::EpsilonNotPositive,
            format!("{what} is `{s}`; ε must be greater than 0"),
            "set a positive ε such as 0.5 (real releases use about 0.45 to 2.6 per person-day)"
                .into(),
        )
    },
    unreadable_help: "write ε as a decimal such as 0.5 (at most 9 decimal places)",
};

const DELTA: Quantity<Delta> = Quantity {
    parse: units::parse_delta,
    in_range: |d| d.0 < units::DELTA_SCALE,
    range_error: |e| matches!(e, UnitError::Negative(_) | UnitError::TooLarge(_)),
    out_of_range: |what, s| {
        (
            Code::DeltaOutOfRange,
            format!("{what} is `{s}`; δ must be at least 0 and less than 1"),
            "set δ to a small probability such as 1e-6".into(),
        )
    },
    unreadable_help: "write δ as a decimal such as 1e-6 (finest 1e-18)",
};

const DURATION: Quantity<Duration> = Quantity {
    parse: Duration::parse,
    in_range: |d| d.0 > 0,
    range_error: |_| false,
    out_of_range: |what, _| {
        (
            Code::InvalidValue,
            format!("{what} is zero"),
            format!("give {what} a positive length such as 1h"),
        )
    },
    unreadable_help: "write a duration such as 30s, 15m, 1h, 1d or 1w",
};

impl Ctx {
    /// A mapping with a fixed set of keys. Unknown keys are reported (P002) and skipped.
    pub(super) fn fixed<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Entries<'n>> {
        let Value::Map(entries) = &node.value else {
            let found = if node.is_null() {
                format!("{what} is empty")
            } else {
                format!("{what} must be a mapping, found {}", node.shape())
            };
            self.err(
                node.pos,
                Code::WrongType,
                found,
                format!(
                    "write {what} as a mapping with keys: {}",
                    allowed.join(", ")
                ),
            );
            return None;
        };
        let mut items = Vec::new();
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default();
            if allowed.contains(&key) {
                items.push((key, v));
            } else {
                self.err(
                    k.pos,
                    Code::UnknownKey,
                    format!("unknown key `{key}` in {what}"),
                    format!(
                        "{}the keys allowed here are: {}",
                        suggest(key, allowed),
                        allowed.join(", ")
                    ),
                );
            }
        }
        Some(Entries {
            pos: node.pos,
            what: what.to_owned(),
            items,
        })
    }

    /// A mapping from user-chosen names to values.
    pub(super) fn named<'n>(&mut self, node: &'n Node, what: &str) -> Vec<(String, Pos, &'n Node)> {
        let Value::Map(entries) = &node.value else {
            if !node.is_null() {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a mapping of names, found {}", node.shape()),
                    format!("write {what} as `name: ...` entries"),
                );
            }
            return Vec::new();
        };
        if entries.len() > MAX_ENTRIES {
            self.err(
                node.pos,
                Code::LimitExceeded,
                format!(
                    "{what} has {} entries; the limit is {MAX_ENTRIES}",
                    entries.len()
                ),
                "split the policy",
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.as_scalar().unwrap_or_default();
            if !is_name(name) {
                self.err(
                    k.pos,
                    Code::InvalidValue,
                    format!("`{name}` is not a valid name in {what}"),
                    "use 1 to 64 letters, digits, `_` or `-`",
                );
                continue;
            }
            out.push((name.to_owned(), k.pos, v));
        }
        out
    }

    pub(super) fn required<'n>(
        &mut self,
        e: &Entries<'n>,
        key: &str,
        help: &str,
    ) -> Option<&'n Node> {
        let v = e.get(key);
        if v.is_none() {
            self.err(
                e.pos,
                Code::MissingKey,
                format!("{} has no `{key}`", e.what),
                format!("add `{key}:` ({help})"),
            );
        }
        v
    }

    pub(super) fn scalar<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node.as_scalar() {
            Some(s) if !node.is_null() => Some(s),
            _ => {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!(
                        "{what} must be a single value, found {}",
                        if node.is_null() {
                            "nothing"
                        } else {
                            node.shape()
                        }
                    ),
                    format!("write {what} as one value"),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        self.scalar(node, what).map(str::to_owned)
    }

    pub(super) fn uint(&mut self, node: &Node, what: &str) -> Option<u64> {
        let s = self.scalar(node, what)?;
        match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what} must be a whole number, found `{s}`"),
                    format!("write {what} as a whole number such as 10"),
                );
                None
            }
        }
    }

    /// One quantity: parsed exactly, or reported as out of range (its own code) or unreadable
    /// (P005).
    fn quantity<T>(&mut self, node: &Node, what: &str, q: &Quantity<T>) -> Option<T> {
        let s = self.scalar(node, what)?;
        let (code, message, help) = match (q.parse)(s) {
            Ok(v) if (q.in_range)(&v) => return Some(v),
            Ok(_) => (q.out_of_range)(what, s),
            Err(e) if (q.range_error)(&e) => (q.out_of_range)(what, s),
            Err(e) => (
                Code::InvalidValue,
                format!("{what}: {e}"),
                q.unreadable_help.to_owned(),
            ),
        };
        self.err(node.pos, code, message, help);
        None
    }

    /// A positive duration (`15m`).
    pub(super) fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.quantity(node, what, &DURATION)
    }

    /// ε > 0.
    pub(super) fn epsilon(&mut self, node: &Node, what: &str) -> Option<Epsilon> {
        self.quantity(node, what, &EPSILON)
    }

    /// 0 ≤ δ < 1.
    pub(super) fn delta(&mut self, node: &Node, what: &str) -> Option<Delta> {
        self.quantity(node, what, &DELTA)
    }

    pub(super) fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        let s = self.scalar(node, what)?;
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.err(
                    node.pos,
                    Code::InvalidValue,
                    format!("{what} must be a number, found `{s}`"),
                    format!("write {what} as a number such as 10 or 0.5"),
                );
                None
            }
        }
    }

    pub(super) fn name_list(&mut self, node: &Node, what: &str) -> Vec<(String, Pos)> {
        let Value::Seq(items) = &node.value else {
            if !node.is_null() {
                self.err(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a list, found {}", node.shape()),
                    format!("write {what} as a list: [a, b]"),
                );
            }
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|n| self.string(n, what).map(|s| (s, n.pos)))
            .collect()
    }
}
