//! Golden tests for what pipeline authors read: every invalid pipeline under `tests/invalid/`
//! must make `nearby validate` exit with code 2 and print exactly the diagnostics stored next to
//! it in `NN-name.stderr`; every valid pipeline (`pipelines/*.yaml`, `tests/valid/*.yaml`) must
//! validate.
//!
//! A case may start with `# args: --set key=value ...`: those words are added to the command
//! line. Then comes a `# what this case checks` comment. Files under `tests/invalid/imports/`
//! are imported by cases and are not cases themselves.
//!
//! After changing a message on purpose, rewrite the snapshots and review the diff:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test --test diagnostics
//! git diff tests/invalid
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root: the binary runs there, so diagnostics show `tests/invalid/...` paths.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yaml` files directly in `dir` (relative to the root), sorted.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| Path::new(dir).join(p.file_name().expect("file name")))
        .collect();
    files.sort();
    files
}

/// Extra command-line words from a first line `# args: ...`.
fn extra_args(text: &str) -> Vec<String> {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# args:"))
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Runs `nearby validate FILE ARGS...` in the repository root.
fn validate(rel: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nearby"))
        .arg("validate")
        .arg(rel)
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run nearby: {e}"))
}

fn panicked(stderr: &str) -> bool {
    stderr.contains("panicked at") || stderr.contains("RUST_BACKTRACE")
}

/// A line diff (longest common subsequence): `-` lines are expected, `+` lines are what came.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "   {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, " - {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, " + {}", b[j]);
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        let _ = writeln!(out, " (the two differ in a final newline)");
    }
    out
}

#[test]
fn invalid_pipelines_print_exact_diagnostics() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v != "0" && !v.is_empty());
    let cases = yaml_files("tests/invalid");
    assert!(
        cases.len() >= 30,
        "expected at least 30 cases in tests/invalid, found {}",
        cases.len()
    );
    let mut failures: Vec<String> = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(root().join(case)).expect("read case");
        let args = extra_args(&text);
        let described = text
            .lines()
            .find(|l| !l.starts_with("# args:"))
            .is_some_and(|l| l.starts_with("# ") && l.len() > 2);
        if !described {
            failures.push(format!(
                "{}: must start with a `# what this case checks` comment (after an optional `# args:` line)",
                case.display()
            ));
        }
        let out = validate(case, &args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if panicked(&stderr) {
            failures.push(format!("{}: nearby panicked:\n{stderr}", case.display()));
            continue;
        }
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{}: expected exit code 2, got {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                case.display(),
                out.status.code()
            ));
        }
        if !stdout.is_empty() {
            failures.push(format!(
                "{}: expected nothing on stdout, got:\n{stdout}",
                case.display()
            ));
        }
        let snapshot = root().join(case.with_extension("stderr"));
        if update {
            std::fs::write(&snapshot, &stderr).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{}: stderr differs from {} (- expected, + actual):\n{}",
                case.display(),
                case.with_extension("stderr").display(),
                diff(&expected, &stderr)
            )),
            Err(_) => failures.push(format!(
                "{}: no snapshot {}; stderr was:\n{stderr}",
                case.display(),
                case.with_extension("stderr").display()
            )),
        }
    }
    // A snapshot whose case was renamed or removed would otherwise linger unnoticed.
    for entry in std::fs::read_dir(root().join("tests/invalid")).expect("list tests/invalid") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|x| x == "stderr") && !path.with_extension("yaml").exists()
        {
            failures.push(format!(
                "{}: snapshot without a case (remove it)",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid-pipeline cases failed (after an intended change, rerun with UPDATE_SNAPSHOTS=1 and review the diff):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_pipelines_validate() {
    let mut files = yaml_files("pipelines");
    let valid = yaml_files("tests/valid");
    assert!(
        !valid.is_empty(),
        "expected valid examples under tests/valid"
    );
    files.extend(valid);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).expect("read pipeline");
        let out = validate(file, &extra_args(&text));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || panicked(&stderr) {
            failures.push(format!(
                "{}: expected `nearby validate` to succeed, got exit code {:?}:\n{stderr}",
                file.display(),
                out.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid pipelines failed to validate:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "   a\n - b\n + x\n   c\n");
    assert_eq!(diff("a\n", "a\n"), "   a\n");
}
