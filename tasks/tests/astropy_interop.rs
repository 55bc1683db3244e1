//! Opens what the simulator writes with astropy (Debian's /usr/bin/python3 with
//! python3-astropy): multi-extension frames, plain and tile-compressed, their headers and WCS,
//! and the reference catalog. Skips, saying why, where astropy is not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use nearby_engine::task::{Invocation, TaskKind};
use nearby_tasks::simulate::task::Simulate;
use serde_json::json;

const PYTHON: &str = "/usr/bin/python3";

fn astropy_available() -> Result<(), String> {
    match Command::new(PYTHON).args(["-c", "import astropy"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{PYTHON} has no astropy (apt-get install python3-astropy): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {PYTHON}: {e}")),
    }
}

fn simulate(dir: &Path, params: serde_json::Value) {
    let kind = Simulate;
    let params = nearby_engine::task::with_defaults(&kind, params.as_object().unwrap().clone());
    assert!(kind.validate(&params).is_empty());
    let outputs: BTreeMap<String, PathBuf> = [
        ("raw", "raw"),
        ("calib", "calib"),
        ("refcat", "refcat.fits"),
        ("truth", "truth.json"),
        ("frames", "frames.txt"),
    ]
    .into_iter()
    .map(|(n, f)| (n.to_owned(), dir.join(f)))
    .collect();
    let inputs = BTreeMap::new();
    let cancel = AtomicBool::new(false);
    let inv = Invocation {
        id: "simulate",
        params: &params,
        inputs: &inputs,
        outputs: &outputs,
        out_dir: dir,
        item: None,
        cancel: &cancel,
    };
    kind.run(&inv, &mut std::io::sink()).unwrap();
}

fn check(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/astropy_check.py");
    let out = Command::new(PYTHON).arg(&script).arg(dir).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("astropy check OK"), "{text}");
}

#[test]
fn astropy_reads_simulated_frames_wcs_and_refcat() {
    if let Err(why) = astropy_available() {
        println!("skipped: {why}");
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    simulate(
        plain.path(),
        json!({"preset": "small", "seed": 3, "n_ccds": 4}),
    );
    check(plain.path());
    let packed = tempfile::tempdir().unwrap();
    simulate(
        packed.path(),
        json!({"preset": "small", "seed": 4, "n_ccds": 3, "compress": true}),
    );
    check(packed.path());
}
