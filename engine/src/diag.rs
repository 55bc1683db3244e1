//! Diagnostics: errors that point into what the user wrote.
//!
//! Every error found while loading or validating a pipeline becomes a [`Diagnostic`] with a
//! stable code, the file, the 1-based line and column, a message that says what was expected and
//! what was found, and an optional help line. They render like a compiler's:
//!
//! ```text
//! pipelines/night.yaml:12:11: error[unknown-task-kind]: unknown task kind `calibrat`
//!    |
//! 12 |     uses: calibrat
//!    |           ^^^^^^^^
//!    = help: did you mean `calibrate`?
//! ```

use std::fmt;
use std::sync::Arc;

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A source text the diagnostics can quote.
#[derive(Debug)]
pub struct Source {
    /// The path as the user gave it (printed verbatim).
    pub path: String,
    /// Shared with the caller that read it (a generated pipeline's text is megabytes).
    pub text: Arc<str>,
}

impl Source {
    pub fn new(path: impl Into<String>, text: impl Into<Arc<str>>) -> Arc<Source> {
        Arc::new(Source {
            path: path.into(),
            text: text.into(),
        })
    }

    fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// Where a diagnostic points: a file position with the length of the token, or the command line.
#[derive(Debug, Clone)]
pub enum Where {
    File {
        source: Arc<Source>,
        pos: Pos,
        len: u32,
    },
    /// An error in a command-line argument such as `--set key=value`.
    CommandLine(String),
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// A stable kebab-case code, listed in docs/pipeline-format.md.
    pub code: &'static str,
    pub at: Where,
    pub message: String,
    pub help: Option<String>,
    /// Secondary lines, e.g. each link of a cycle.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, at: Where, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            at,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The position used to sort diagnostics (file order, then line, then column).
    pub fn sort_key(&self) -> (String, Pos) {
        match &self.at {
            Where::File { source, pos, .. } => (source.path.clone(), *pos),
            Where::CommandLine(_) => (String::new(), Pos::default()),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Where::File { source, pos, len } => {
                writeln!(
                    f,
                    "{}:{}:{}: error[{}]: {}",
                    source.path, pos.line, pos.col, self.code, self.message
                )?;
                if let Some(text) = source.line(pos.line) {
                    let gutter = pos.line.to_string().len();
                    let pad = " ".repeat(gutter);
                    let indent: String = text
                        .chars()
                        .take(pos.col.saturating_sub(1) as usize)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    let width = (*len).max(1) as usize;
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{} | {}", pos.line, text)?;
                    writeln!(f, "{pad} | {indent}{}", "^".repeat(width))?;
                }
            }
            Where::CommandLine(arg) => {
                writeln!(f, "{arg}: error[{}]: {}", self.code, self.message)?;
            }
        }
        for note in &self.notes {
            writeln!(f, "   = note: {note}")?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "   = help: {help}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one validation pass, sorted by position.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|a| a.sort_key());
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\nerror: {} error{} found",
            n,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// Edit distance, for "did you mean" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .filter_map(|c| {
            let d = levenshtein(word, c);
            // A word that is the start of a name (`sleep` for `sleep_ms`) is a likely slip too.
            let prefix = word.len() >= 3 && (c.starts_with(word) || word.starts_with(c));
            (d <= limit || prefix).then_some((d, c))
        })
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("calibrate", "calibrat"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestion_only_for_close_words() {
        assert_eq!(
            did_you_mean("calibrat", ["calibrate", "extract"]).as_deref(),
            Some("did you mean `calibrate`?")
        );
        assert_eq!(did_you_mean("zzzzzzzz", ["calibrate", "extract"]), None);
        assert_eq!(
            did_you_mean("sleep", ["sleep_ms", "fail"]).as_deref(),
            Some("did you mean `sleep_ms`?")
        );
    }

    #[test]
    fn renders_caret_under_token() {
        let src = Source::new("p.yaml", "tasks:\n  a:\n    uses: calibrat\n");
        let d = Diagnostic::new(
            "unknown-task-kind",
            Where::File {
                source: src,
                pos: Pos { line: 3, col: 11 },
                len: 8,
            },
            "unknown task kind `calibrat`",
        )
        .help("did you mean `calibrate`?");
        assert_eq!(
            d.to_string(),
            "p.yaml:3:11: error[unknown-task-kind]: unknown task kind `calibrat`\n  |\n3 |     uses: calibrat\n  |           ^^^^^^^^\n   = help: did you mean `calibrate`?\n"
        );
    }
}
