//! Docs that run: every complete YAML example in docs/*.md and README.md (a ```yaml block that
//! starts with `name:`) must pass `nearby validate`. A `<!-- args: ... -->` line right before a
//! block adds arguments (e.g. a required `--set`). Blocks with `imports:` are skipped (their
//! imported files are not part of the docs).

mod common;

use common::Nearby;

fn examples(text: &str) -> Vec<(usize, Vec<String>, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "```yaml" {
            let args = i
                .checked_sub(1)
                .and_then(|j| lines[j].trim().strip_prefix("<!-- args:"))
                .and_then(|a| a.strip_suffix("-->"))
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim() != "```" {
                end += 1;
            }
            let body = lines[start..end].join("\n");
            if body.starts_with("name:") && !body.contains("\nimports:") {
                out.push((start + 1, args, body));
            }
            i = end;
        }
        i += 1;
    }
    out
}

#[test]
fn every_yaml_example_in_the_docs_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let n = Nearby::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (line, args, body) in examples(&text) {
            let p = n.write(&format!("ex{checked}.yaml"), &body);
            let mut cmd = vec!["validate".to_owned(), p.display().to_string()];
            cmd.extend(args);
            let out = std::process::Command::new(common::bin())
                .args(&cmd)
                .output()
                .unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "{}:{line}:\n{}",
                    f.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} examples found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
