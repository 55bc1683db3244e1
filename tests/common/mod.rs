//! A small builder that drives the real `nearby` binary in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Nearby {
    pub dir: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub run_id: String,
    pub stdout: String,
    pub stderr: String,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nearby")
}

impl Nearby {
    pub fn new() -> Nearby {
        Nearby {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn workdir(&self) -> PathBuf {
        self.path("work")
    }

    /// Writes a file under the temp dir; `{dir}` in the text becomes the temp dir's path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(
            &p,
            text.replace("{dir}", &self.dir.path().display().to_string()),
        )
        .unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .arg("--workdir")
            .arg(self.workdir())
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run nearby")
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let out = self.output(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "nearby panicked:\n{stderr}");
        Ran {
            code: out.status.code().unwrap_or(-1),
            run_id: stdout.lines().next().unwrap_or_default().trim().to_owned(),
            stdout,
            stderr,
        }
    }

    pub fn status(&self, run: &str) -> serde_json::Value {
        let out = self.output(&["status", run, "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }
}

/// Instance id -> state from `status --json`.
pub fn states(status: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn instance<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no instance {id} in {status:#}"))
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Runs pipelines/nightly.yaml (quietly) on a night's raw and calibration directories.
pub fn run_nightly(n: &Nearby, raw: &Path, calib: &Path) -> Ran {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/nightly.yaml");
    n.run(&[
        "run",
        pipeline.to_str().unwrap(),
        "-q",
        "--set",
        &format!("raw_dir={}", raw.display()),
        "--set",
        &format!("calib_dir={}", calib.display()),
    ])
}

/// DE421, fetched by `.ci/fetch-de421.sh` into `.cache/de421.bsp` (or named by NEARBY_SPK).
pub fn de421() -> PathBuf {
    let path = std::env::var_os("NEARBY_SPK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/de421.bsp"));
    assert!(
        path.exists(),
        "DE421 not found at {}: run .ci/fetch-de421.sh (16.8 MB from PyPI skyfield-data) or set NEARBY_SPK",
        path.display()
    );
    path
}
