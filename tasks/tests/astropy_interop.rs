//! Opens what the simulator writes with astropy (Debian's /usr/bin/python3 with
//! python3-astropy): multi-extension frames, plain and tile-compressed, their headers and WCS,
//! and the reference catalog; the TAN-SIP WCS the astrometry task writes. Skips, saying why,
//! where astropy is not installed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

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
    let params = params.as_object().unwrap().clone();
    let run = nearby_engine::task::run_alone(&Simulate, params, BTreeMap::new(), dir);
    run.result.unwrap();
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

/// A TAN-SIP WCS as the astrometry task writes it (distortion like the INT WFC's corrector, the
/// inverse fitted), with points from our pix_to_sky for astropy to agree with.
#[test]
fn astropy_reads_our_sip_wcs_and_agrees_with_pix_to_sky() {
    use nearby_tasks::astrometry::fit::fit_inverse;
    use nearby_tasks::fits::{write_headers, Header};
    use nearby_tasks::wcs::{Poly, Sip, TanWcs};
    if let Err(why) = astropy_available() {
        println!("skipped: {why}");
        return;
    }
    let (w, h) = (2048.0, 4100.0);
    let mut headers = Vec::new();
    let mut points = String::new();
    for (k, shift) in [(1, 0.0), (2, 1.0)] {
        let (mut a, mut b) = (Poly::zeros(3), Poly::zeros(3));
        a.set(2, 0, 2.1e-6 * (1.0 + shift));
        a.set(1, 1, -1.3e-6);
        a.set(3, 0, 2.4e-10);
        a.set(1, 2, 2.4e-10);
        b.set(0, 2, 1.7e-6);
        b.set(2, 1, 2.4e-10);
        b.set(0, 3, 2.4e-10 * (1.0 - shift));
        let mut wcs = TanWcs {
            crpix: [1024.5, 2050.5],
            crval: [287.1 + shift, -20.2],
            cd: [[-9.16e-5, 1.0e-7], [1.2e-7, 9.17e-5]],
            sip: Some(Sip {
                a,
                b,
                ap: None,
                bp: None,
            }),
        };
        let err = fit_inverse(&mut wcs, w, h, 5).unwrap();
        assert!(err < 1e-3, "inverse within {err} px");
        let mut hd = Header::new();
        hd.set("EXTNAME", format!("CCD{k}"), "");
        wcs.write(&mut hd);
        headers.push(hd);
        for i in 0..=8 {
            for j in 0..=8 {
                let (x, y) = (
                    1.0 + i as f64 * (w - 1.0) / 8.0,
                    1.0 + j as f64 * (h - 1.0) / 8.0,
                );
                let (ra, dec) = wcs.pix_to_sky(x, y);
                points.push_str(&format!("{k} {x} {y} {ra:.15} {dec:.15}\n"));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wcs.fits");
    write_headers(&file, &Header::new(), &headers).unwrap();
    let pts = dir.path().join("points.txt");
    std::fs::write(&pts, points).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/astropy_sip_check.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(&file)
        .arg(&pts)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("astropy SIP check OK"), "{text}");
}
