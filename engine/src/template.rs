//! `${...}` templates in task params and output paths.
//!
//! Names: `${params.NAME}`, `${item}` (the fan-out item), `${inputs.NAME}`, `${outputs.NAME}`,
//! `${out_dir}` (the task's output directory). `$${` writes a literal `${`. Templates are resolved
//! in two steps: params and item when a task instance is created (these take part in the cache
//! key), input and output paths when it runs (the key uses input contents instead).

/// One reference inside a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Param(String),
    Item,
    Input(String),
    Output(String),
    OutDir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    /// A reference with its character offset in the string and its length (for diagnostics).
    Ref {
        r: Ref,
        offset: u32,
        len: u32,
    },
}

/// A template error with the character offset where it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: u32,
    pub len: u32,
    pub message: String,
}

pub fn parse(s: &str) -> Result<Vec<Segment>, TemplateError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
            text.push_str("${");
            i += 3;
            continue;
        }
        if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i..].iter().position(|&c| c == '}') else {
                return Err(TemplateError {
                    offset: i as u32,
                    len: (chars.len() - i) as u32,
                    message: "unclosed `${`".into(),
                });
            };
            let inner: String = chars[i + 2..i + close].iter().collect();
            let len = (close + 1) as u32;
            let r = parse_ref(inner.trim()).map_err(|message| TemplateError {
                offset: i as u32,
                len,
                message,
            })?;
            if !text.is_empty() {
                out.push(Segment::Text(std::mem::take(&mut text)));
            }
            out.push(Segment::Ref {
                r,
                offset: i as u32,
                len,
            });
            i += close + 1;
            continue;
        }
        text.push(chars[i]);
        i += 1;
    }
    if !text.is_empty() {
        out.push(Segment::Text(text));
    }
    Ok(out)
}

fn parse_ref(inner: &str) -> Result<Ref, String> {
    match inner.split_once('.') {
        None if inner == "item" => Ok(Ref::Item),
        None if inner == "out_dir" => Ok(Ref::OutDir),
        Some(("params", n)) if !n.is_empty() => Ok(Ref::Param(n.into())),
        Some(("inputs", n)) if !n.is_empty() => Ok(Ref::Input(n.into())),
        Some(("outputs", n)) if !n.is_empty() => Ok(Ref::Output(n.into())),
        _ => Err(format!(
            "unknown template `${{{inner}}}`: expected `${{params.NAME}}`, `${{item}}`, `${{inputs.NAME}}`, `${{outputs.NAME}}` or `${{out_dir}}`"
        )),
    }
}

/// Values to substitute. A reference that returns `None` is left as written (resolved later).
pub trait Scope {
    fn lookup(&self, r: &Ref) -> Option<Vec<String>>;
}

/// Substitutes what `scope` knows; multi-valued references (a gathered input) are joined by
/// spaces inside a larger string.
pub fn render(s: &str, scope: &dyn Scope) -> String {
    // Most strings (file names, plain params) hold no template: nothing to parse.
    if !s.contains('$') {
        return s.to_owned();
    }
    render_list(s, scope).join(" ")
}

/// Like [`render`], but a string that is exactly one multi-valued reference becomes several
/// values (used for argv arrays, so `${inputs.frames}` gives one argument per file).
pub fn render_list(s: &str, scope: &dyn Scope) -> Vec<String> {
    if !s.contains('$') {
        return vec![s.to_owned()];
    }
    let Ok(segments) = parse(s) else {
        return vec![s.to_owned()];
    };
    if let [Segment::Ref { r, .. }] = segments.as_slice() {
        if let Some(values) = scope.lookup(r) {
            return values;
        }
    }
    let mut out = String::new();
    for seg in &segments {
        match seg {
            Segment::Text(t) => out.push_str(&t.replace("${", "$${")),
            Segment::Ref { r, .. } => match scope.lookup(r) {
                Some(v) => out.push_str(&v.join(" ").replace("${", "$${")),
                None => out.push_str(&write_ref(r)),
            },
        }
    }
    vec![unescape_if_final(&out)]
}

fn write_ref(r: &Ref) -> String {
    match r {
        Ref::Param(n) => format!("${{params.{n}}}"),
        Ref::Item => "${item}".into(),
        Ref::Input(n) => format!("${{inputs.{n}}}"),
        Ref::Output(n) => format!("${{outputs.{n}}}"),
        Ref::OutDir => "${out_dir}".into(),
    }
}

/// Once no reference is left, `$${` escapes become plain `${`.
fn unescape_if_final(s: &str) -> String {
    match parse(s) {
        Ok(segs) if segs.iter().all(|x| matches!(x, Segment::Text(_))) => segs
            .into_iter()
            .map(|x| match x {
                Segment::Text(t) => t,
                Segment::Ref { .. } => String::new(),
            })
            .collect(),
        _ => s.to_owned(),
    }
}

/// Applies `render_list` to every string in a JSON value (arrays splice multi-valued refs).
pub fn render_json(v: &serde_json::Value, scope: &dyn Scope) -> serde_json::Value {
    use serde_json::Value as J;
    if !has_dollar(v) {
        return v.clone();
    }
    match v {
        J::String(s) => J::String(render(s, scope)),
        J::Array(items) => J::Array(
            items
                .iter()
                .flat_map(|item| match item {
                    J::String(s) => render_list(s, scope).into_iter().map(J::String).collect(),
                    other => vec![render_json(other, scope)],
                })
                .collect(),
        ),
        J::Object(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), render_json(v, scope)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// [`render_json`] of an object's values.
pub fn render_map(
    m: &serde_json::Map<String, serde_json::Value>,
    scope: &dyn Scope,
) -> serde_json::Map<String, serde_json::Value> {
    if !m.values().any(has_dollar) {
        return m.clone();
    }
    m.iter()
        .map(|(k, v)| (k.clone(), render_json(v, scope)))
        .collect()
}

/// Whether any string of a JSON value (keys aside) holds a `$`, i.e. may hold a template.
fn has_dollar(v: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match v {
        J::String(s) => s.contains('$'),
        J::Array(items) => items.iter().any(has_dollar),
        J::Object(m) => m.values().any(has_dollar),
        _ => false,
    }
}

/// Every reference in every string of a JSON value.
pub fn refs_in_json(v: &serde_json::Value, out: &mut Vec<Ref>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(segs) = parse(s) {
                out.extend(segs.into_iter().filter_map(|x| match x {
                    Segment::Ref { r, .. } => Some(r),
                    Segment::Text(_) => None,
                }));
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| refs_in_json(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|i| refs_in_json(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S;
    impl Scope for S {
        fn lookup(&self, r: &Ref) -> Option<Vec<String>> {
            match r {
                Ref::Param(n) if n == "n" => Some(vec!["3".into()]),
                Ref::Input(n) if n == "frames" => Some(vec!["a.fits".into(), "b.fits".into()]),
                Ref::Item => Some(vec!["x; rm -rf /".into()]),
                _ => None,
            }
        }
    }

    #[test]
    fn parses_refs_with_offsets() {
        let segs = parse("a ${params.n} b").unwrap();
        assert_eq!(
            segs[1],
            Segment::Ref {
                r: Ref::Param("n".into()),
                offset: 2,
                len: 11
            }
        );
        assert_eq!(parse("${nope}").unwrap_err().offset, 0);
        assert_eq!(parse("x ${params.n").unwrap_err().message, "unclosed `${`");
    }

    #[test]
    fn renders_known_and_keeps_unknown() {
        assert_eq!(
            render("n=${params.n} o=${outputs.x}", &S),
            "n=3 o=${outputs.x}"
        );
        assert_eq!(render("$${literal} ${params.n}", &S), "${literal} 3");
        assert_eq!(render_list("${inputs.frames}", &S), ["a.fits", "b.fits"]);
        assert_eq!(render("--in=${inputs.frames}", &S), "--in=a.fits b.fits");
        // An item with shell syntax stays one literal value.
        assert_eq!(render_list("${item}", &S), ["x; rm -rf /"]);
    }

    #[test]
    fn json_arrays_splice_lists() {
        let v = serde_json::json!(["prog", "${inputs.frames}", "-n", "${params.n}"]);
        assert_eq!(
            render_json(&v, &S),
            serde_json::json!(["prog", "a.fits", "b.fits", "-n", "3"])
        );
    }
}
