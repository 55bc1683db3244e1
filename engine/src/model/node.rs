//! A YAML document as a tree of nodes that each remember where they were written.
//!
//! This is the only place that names the YAML crate (serde-saphyr). It rejects duplicate keys and
//! reports syntax errors with their position; everything above works on [`Node`]s.

use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::text::Text;
use crate::diag::{Diagnostic, Pos, Source, Where};

/// A YAML value with its position and the length of its source text (for the caret).
///
/// Small on purpose (40 bytes, strings of up to 22 bytes inline, collections in exact boxes):
/// a pipeline's whole tree is held while it loads, a million nodes for 100,000 tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    Seq(Box<[Node]>),
    Map(Box<[(Key, Node)]>),
}

/// A mapping key (always a string in pipelines) with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: Text,
    pub pos: Pos,
}

impl Value {
    /// What the user wrote, in words, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to plain JSON (positions dropped), e.g. for params handed to a task.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.as_str().into(),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.name.to_string(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// The token length to underline, from the source text (for scalars) or 1.
fn token_len(lines: &[&str], pos: Pos, value: &Value) -> u32 {
    let Some(line) = lines.get(pos.line.saturating_sub(1) as usize) else {
        return 1;
    };
    let rest: String = line
        .chars()
        .skip(pos.col.saturating_sub(1) as usize)
        .collect();
    if matches!(value, Value::Seq(_) | Value::Map(_)) {
        // A flow collection (`[1, 2]`, `{a: b}`) written on one line is underlined whole;
        // a block collection (or one spanning lines) gets a single caret.
        return flow_len(&rest).unwrap_or(1);
    }
    let n = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => rest[1..].find(q).map(|i| i + 2).unwrap_or(rest.len()),
        _ => {
            // A plain scalar ends at ` #`, or at `,`/`]`/`}` inside flow collections.
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                if matches!(c, ',' | ']' | '}') || rest[i..].starts_with(" #") {
                    end = i;
                    break;
                }
            }
            rest[..end].trim_end().chars().count()
        }
    };
    n.max(1) as u32
}

/// The length in characters of the flow collection that `rest` starts with, if it closes on
/// the same line. Quoted strings inside are skipped.
fn flow_len(rest: &str) -> Option<u32> {
    if !rest.starts_with(['[', '{']) {
        return None;
    }
    let mut depth = 0u32;
    let mut quote: Option<char> = None;
    for (i, c) in rest.chars().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i as u32 + 1);
                }
            }
            _ => {}
        }
    }
    None
}

struct RawValue(Value);

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as u32,
        col: s.referenced.column() as u32,
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue(Value::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue(Value::Null))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<RawValue, D2::Error> {
                RawValue::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawValue, E> {
                Ok(RawValue(Value::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<RawValue, E> {
                Ok(RawValue(Value::Int(i)))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<RawValue, E> {
                i64::try_from(u)
                    .map(|i| RawValue(Value::Int(i)))
                    .map_err(|_| E::custom(format!("integer {u} is too large")))
            }
            fn visit_f64<E>(self, x: f64) -> Result<RawValue, E> {
                Ok(RawValue(Value::Float(x)))
            }
            fn visit_str<E>(self, s: &str) -> Result<RawValue, E> {
                Ok(RawValue(Value::Str(Text::from(s))))
            }
            fn visit_string<E>(self, s: String) -> Result<RawValue, E> {
                Ok(RawValue(Value::Str(Text::from(s))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
                    items.push(spanned_to_node_unsourced(item));
                }
                // Exactly: a vector grown by pushes keeps room for 4, and a pipeline is mostly
                // small collections (a 100,000-task pipeline: 1.1 KB of nodes a task, not 0.6).
                Ok(RawValue(Value::Seq(items.into_boxed_slice())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Text>>()? {
                    let value = map.next_value::<Spanned<RawValue>>()?;
                    entries.push((
                        Key {
                            pos: pos_of(&key),
                            name: key.value,
                        },
                        spanned_to_node_unsourced(value),
                    ));
                }
                Ok(RawValue(Value::Map(entries.into_boxed_slice())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Builds a node whose `len` is filled in later (when the source text is at hand).
fn spanned_to_node_unsourced(s: Spanned<RawValue>) -> Node {
    let pos = pos_of(&s);
    Node {
        value: s.value.0,
        pos,
        len: 0,
    }
}

/// `lines` is the source split once (finding a line per node would be quadratic).
fn fill_lengths(node: &mut Node, lines: &[&str]) {
    node.len = token_len(lines, node.pos, &node.value);
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| fill_lengths(n, lines)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, n)| fill_lengths(n, lines)),
        _ => {}
    }
}

/// Parses one YAML document.
///
/// A syntax error ends parsing and is the one diagnostic returned as `Err`. Duplicate keys do not
/// stop it: each repeated key is reported (at the repeated key, with a note pointing at the first)
/// and dropped from the tree, so that loading goes on and finds the other errors too.
pub fn parse(source: &Arc<Source>) -> Result<(Node, Vec<Diagnostic>), Diagnostic> {
    // `PassThrough` hands repeated keys to our visitor, which keeps their positions; the crate's
    // own `Error` policy would stop at the first one and say less about it.
    // The default budget (250k nodes) guards against YAML bombs but stops a 100k-task
    // pipeline; alias and anchor limits stay at their defaults, so bombs are still refused.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        budget: serde_saphyr::budget! {
            max_nodes: 50_000_000,
            max_events: 100_000_000,
            max_total_scalar_bytes: 1 << 30,
        },
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(&source.text, options) {
        Ok(root) => {
            let mut node = spanned_to_node_unsourced(root);
            let lines: Vec<&str> = source.text.lines().collect();
            fill_lengths(&mut node, &lines);
            let mut diags = Vec::new();
            remove_duplicate_keys(&mut node, source, &mut diags);
            Ok((node, diags))
        }
        Err(e) => Err(yaml_error(source, &e)),
    }
}

/// Reports every key written twice in one mapping and keeps only its first entry.
fn remove_duplicate_keys(node: &mut Node, source: &Arc<Source>, diags: &mut Vec<Diagnostic>) {
    match &mut node.value {
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|n| remove_duplicate_keys(n, source, diags)),
        Value::Map(entries) => {
            let repeated = repeated_keys(entries);
            if !repeated.is_empty() {
                for &(i, first) in &repeated {
                    let k = &entries[i].0;
                    diags.push(
                        Diagnostic::new(
                            "duplicate-key",
                            Where::File {
                                source: source.clone(),
                                pos: k.pos,
                                len: k.name.chars().count().max(1) as u32,
                            },
                            format!("duplicate key `{}`", k.name),
                        )
                        .note(format!(
                            "first defined at {}:{}:{}",
                            source.path, first.line, first.col
                        ))
                        .help(
                            "each key may appear once in a mapping; remove or rename one of them",
                        ),
                    );
                }
                let mut is_repeat = vec![false; entries.len()];
                for &(i, _) in &repeated {
                    is_repeat[i] = true;
                }
                let mut kept = std::mem::take(entries).into_vec();
                let mut at = 0;
                kept.retain(|_| {
                    at += 1;
                    !is_repeat[at - 1]
                });
                *entries = kept.into_boxed_slice();
            }
            entries
                .iter_mut()
                .for_each(|(_, n)| remove_duplicate_keys(n, source, diags));
        }
        _ => {}
    }
}

/// The entries whose key an earlier entry has, each with where the key was first written, in
/// order. Nothing is copied: most mappings are small and are compared pairwise.
fn repeated_keys(entries: &[(Key, Node)]) -> Vec<(usize, Pos)> {
    let mut repeated = Vec::new();
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate() {
            if let Some((first, _)) = entries[..i].iter().find(|(f, _)| f.name == k.name) {
                repeated.push((i, first.pos));
            }
        }
    } else {
        let mut first: std::collections::HashMap<&str, Pos> = Default::default();
        for (i, (k, _)) in entries.iter().enumerate() {
            match first.get(k.name.as_str()) {
                Some(&at) => repeated.push((i, at)),
                None => {
                    first.insert(&k.name, k.pos);
                }
            }
        }
    }
    repeated
}

fn yaml_error(source: &Arc<Source>, e: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::MessageFormatter;

    let (line, col) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((1, 1));
    let mut pos = Pos {
        line: line.max(1),
        col: col.max(1),
    };
    // An error at the end of the file may sit on the line after the last one: show the end of
    // the last line instead, so that the caret has a line to point into.
    let lines: Vec<&str> = source.text.lines().collect();
    if pos.line as usize > lines.len() {
        if let Some(last) = lines.last() {
            pos = Pos {
                line: lines.len() as u32,
                col: last.chars().count() as u32 + 1,
            };
        }
    }
    // The crate's user-facing wording, without its own location suffix and snippet (ours are
    // shown instead), made into one line.
    let raw = serde_saphyr::UserMessageFormatter.format_message(e);
    let msg = strip_location_suffix(&one_line(&raw));
    let msg = if msg.is_empty() {
        "invalid YAML".to_owned()
    } else {
        msg
    };
    let lower = msg.to_lowercase();
    let line_text = lines.get(pos.line as usize - 1).copied().unwrap_or("");
    let mut help = None;
    if lower.contains("tab") {
        // The crate points after the tab; the tab itself is what to change.
        if let Some(i) = line_text.chars().position(|c| c == '\t') {
            pos.col = i as u32 + 1;
        }
        help = Some("indent with spaces: YAML does not allow tabs in indentation".to_owned());
    } else if lower.contains("did not find expected key") {
        help = Some(
            "check the indentation: the keys of one mapping start in the same column".to_owned(),
        );
    } else if lower.contains("mapping values are not allowed") {
        // Usually `key: a: b`, a value with `: ` in it.
        help = Some(
            "quote a value that contains `: ` (e.g. `\"a: b\"`), or check the indentation"
                .to_owned(),
        );
    }
    let mut d = Diagnostic::new(
        "yaml-syntax",
        Where::File {
            source: source.clone(),
            pos,
            len: 1,
        },
        msg,
    );
    // The parser often notices an unclosed `[` or `{` only lines later, at a token that is
    // fine in itself: say where the collection was opened.
    if let Some((open, bracket)) = unclosed_flow(&source.text, pos) {
        let (what, close) = if bracket == '[' {
            ("list", ']')
        } else {
            ("mapping", '}')
        };
        d = d.note(format!(
            "the {what} `{bracket}` opened at {}:{}:{} is not closed",
            source.path, open.line, open.col
        ));
        help = Some(format!("close the {what} with `{close}`"));
    }
    d.help_opt(help)
}

/// Control characters (a message may embed the offending text) become spaces; runs of
/// whitespace become one space.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn strip_location_suffix(msg: &str) -> String {
    // e.g. "error: line 3 column 5: duplicate key ..." or "... at line 3, column 5"
    let mut m = msg.trim_start_matches("error:").trim().to_string();
    if let Some(i) = m.find(" at line ") {
        m.truncate(i);
    }
    if m.starts_with("line ") {
        if let Some(i) = m.find(": ") {
            m = m[i + 2..].to_string();
        }
    }
    m
}

/// The innermost flow collection (`[` or `{`) still open just before `end`, found by a light
/// scan that skips quoted strings and comments. A bracket counts only where a value starts (at
/// the start of a line, or after `:`, `-`, `,`, `[` or `{`), so `a[0]` in a plain scalar is text.
fn unclosed_flow(text: &str, end: Pos) -> Option<(Pos, char)> {
    let mut open: Vec<(Pos, char)> = Vec::new();
    let mut quote: Option<char> = None;
    for (li, line) in text.lines().enumerate() {
        let lno = li as u32 + 1;
        if lno > end.line {
            break;
        }
        // The last non-blank character outside quotes, and the character just before `c`.
        let mut prev: Option<char> = None;
        let mut before: Option<char> = None;
        let mut escaped = false;
        for (ci, c) in line.chars().enumerate() {
            let raw_before = before.replace(c);
            let col = ci as u32 + 1;
            if lno == end.line && col >= end.col {
                break;
            }
            if let Some(q) = quote {
                if escaped {
                    escaped = false;
                } else if q == '"' && c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    prev = Some(c);
                }
                continue;
            }
            let value_start = matches!(prev, None | Some(':' | '-' | ',' | '[' | '{'));
            match c {
                '#' if matches!(raw_before, None | Some(' ' | '\t')) => break,
                '"' | '\'' if value_start => quote = Some(c),
                '[' | '{' if value_start => open.push((Pos { line: lno, col }, c)),
                ']' | '}' => {
                    open.pop();
                }
                _ => {}
            }
            if !c.is_whitespace() {
                prev = Some(c);
            }
        }
    }
    open.pop().filter(|(p, _)| *p != end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the doc of [`Node`] promises (a million nodes for 100,000 tasks).
    #[test]
    fn nodes_are_small() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
        assert_eq!(std::mem::size_of::<Node>(), 40);
        assert_eq!(std::mem::size_of::<Key>(), 32);
    }

    fn parse_str(s: &str) -> Result<Node, Diagnostic> {
        match parse(&Source::new("t.yaml", s)) {
            Ok((node, diags)) => match diags.into_iter().next() {
                Some(d) => Err(d),
                None => Ok(node),
            },
            Err(d) => Err(d),
        }
    }

    #[test]
    fn positions_are_kept_for_keys_and_values() {
        let n = parse_str("a: 1\nb:\n  - x\n  - \"y z\"\n").unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("expected a map")
        };
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a seq")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(items[1].len, 5);
        assert_eq!(items[1].value, Value::Str("y z".into()));
    }

    #[test]
    fn duplicate_keys_are_rejected_with_position() {
        let d = parse_str("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(d.code, "duplicate-key");
        let Where::File { pos, .. } = d.at else {
            panic!()
        };
        assert_eq!(pos.line, 3);
    }

    fn pos_of_diag(d: &Diagnostic) -> (Pos, u32) {
        let Where::File { pos, len, .. } = &d.at else {
            panic!("expected a file position")
        };
        (*pos, *len)
    }

    #[test]
    fn every_duplicate_key_is_reported_and_the_first_kept() {
        let (node, diags) =
            parse(&Source::new("t.yaml", "a: 1\nb:\n  x: 1\n  x: 2\na: 3\n")).unwrap();
        let found: Vec<_> = diags
            .iter()
            .map(|d| (d.code, d.message.as_str(), pos_of_diag(d)))
            .collect();
        assert_eq!(
            found,
            [
                // Outer mapping first (the walk order); the loader sorts them by position.
                (
                    "duplicate-key",
                    "duplicate key `a`",
                    (Pos { line: 5, col: 1 }, 1)
                ),
                (
                    "duplicate-key",
                    "duplicate key `x`",
                    (Pos { line: 4, col: 3 }, 1)
                ),
            ]
        );
        assert_eq!(diags[0].notes, ["first defined at t.yaml:1:1"]);
        let Value::Map(entries) = &node.value else {
            panic!("expected a map")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1.value, Value::Int(1));
    }

    /// A mapping of more than 16 keys is checked by a map instead of pairwise: the same
    /// reports, and a key written three times points at its first each time.
    #[test]
    fn duplicates_in_a_large_mapping_are_reported_and_the_first_kept() {
        let mut text: String = (0..20).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k3: a\nk3: b\n");
        let (node, diags) = parse(&Source::new("t.yaml", text)).unwrap();
        let found: Vec<_> = diags.iter().map(|d| pos_of_diag(d).0.line).collect();
        assert_eq!(found, [21, 22]);
        assert!(diags
            .iter()
            .all(|d| d.notes == ["first defined at t.yaml:4:1"]));
        let Value::Map(entries) = &node.value else {
            panic!("expected a map")
        };
        assert_eq!(entries.len(), 20);
        assert_eq!(entries[3].1.value, Value::Int(3));
    }

    #[test]
    fn syntax_error_message_is_one_clean_line() {
        let d = parse_str("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(d.code, "yaml-syntax");
        assert!(!d.message.contains('\n'), "{}", d.message);
        assert!(!d.message.contains("line "), "{}", d.message);
        assert!(!d.message.contains("column"), "{}", d.message);
    }

    #[test]
    fn unclosed_flow_list_is_pointed_at() {
        let d = parse_str("a:\n  b: [1, 2\n  c: 3\n").unwrap_err();
        assert_eq!(
            d.notes,
            ["the list `[` opened at t.yaml:2:6 is not closed"],
            "{d}"
        );
        assert_eq!(d.help.as_deref(), Some("close the list with `]`"));
        // Brackets inside quotes, comments and plain text do not count.
        let text = "a: \"[\" # [\nb: x[0]\nc: [1, 2]\nd: [\n";
        assert_eq!(unclosed_flow(text, Pos { line: 3, col: 1 }), None);
        assert_eq!(
            unclosed_flow(text, Pos { line: 5, col: 1 }),
            Some((Pos { line: 4, col: 4 }, '['))
        );
    }

    #[test]
    fn tab_error_points_at_the_tab() {
        let d = parse_str("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(pos_of_diag(&d).0, Pos { line: 2, col: 1 }, "{d}");
        assert!(d.help.as_deref().unwrap_or("").contains("spaces"));
    }

    #[test]
    fn error_at_end_of_file_points_into_the_last_line() {
        let d = parse_str("a: \"x\nb: 1").unwrap_err();
        let (pos, _) = pos_of_diag(&d);
        assert!(pos.line <= 2, "{d}");
        assert!(
            d.to_string().contains(" | "),
            "a source line is quoted: {d}"
        );
    }

    #[test]
    fn flow_collections_are_underlined_whole() {
        let n = parse_str("a: [1, \"]\", 3] # c\nb: {x: 1}\nc:\n  - 1\n").unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("expected a map")
        };
        let lens: Vec<u32> = entries.iter().map(|(_, v)| v.len).collect();
        assert_eq!(lens, [11, 6, 1]);
    }

    #[test]
    fn syntax_error_has_position() {
        let d = parse_str("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(d.code, "yaml-syntax");
    }
}
