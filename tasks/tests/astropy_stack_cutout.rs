//! Opens what `stack` and `cutout` write with astropy (Debian's /usr/bin/python3 with
//! python3-astropy): the stack's TAN WCS against nearby's, and every cutout plane's WCS against
//! its parent frame's (tests/interop/astropy_stack_cutout_check.py). Skips, saying why, where
//! astropy is not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nearby_engine::task::TaskKind;
use nearby_tasks::fits::{write_mef, Header, Image, Pixel};
use nearby_tasks::wcs::TanWcs;
use serde_json::json;

const PYTHON: &str = "/usr/bin/python3";

fn run(
    kind: &dyn TaskKind,
    inputs: &[(&str, Vec<PathBuf>)],
    params: serde_json::Value,
    out: &Path,
) {
    let inputs: BTreeMap<String, Vec<PathBuf>> = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let params = params.as_object().unwrap().clone();
    let run = nearby_engine::task::run_alone(kind, params, inputs, out);
    if let Err(e) = run.result {
        panic!("{e}\n{}", run.log);
    }
}

#[test]
fn astropy_reads_stack_and_cutout_wcs() {
    match Command::new(PYTHON).args(["-c", "import astropy"]).output() {
        Ok(o) if o.status.success() => {}
        _ => {
            println!("skipped: {PYTHON} has no astropy (apt-get install python3-astropy)");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Three exposures of two rotated CCDs, dithered, with a smooth pattern and a few peaks.
    let (w, h) = (180, 150);
    let mut frames = Vec::new();
    for k in 0..3 {
        let ccds: Vec<Image> = (0..2)
            .map(|c| {
                let data = (0..w * h)
                    .map(|i| {
                        let (x, y) = ((i % w) as f32, (i / w) as f32);
                        100.0 + 0.1 * x + 0.05 * y + if i % 997 == 0 { 5000.0 } else { 0.0 }
                    })
                    .collect();
                let mut im = Image::new(w, h, data);
                let (s, co) = (0.7f64.to_radians().sin(), 0.7f64.to_radians().cos());
                let sc = 0.33 / 3600.0;
                let wcs = TanWcs {
                    crpix: [
                        90.0 + 4.2 * k as f64 - 185.0 * c as f64,
                        75.0 - 3.1 * k as f64,
                    ],
                    crval: [287.25, -20.5],
                    cd: [[-sc * co, sc * s], [sc * s, sc * co]],
                    sip: None,
                };
                wcs.write(&mut im.header);
                im.header.set("EXTNAME", format!("CCD{}", c + 1), "");
                im
            })
            .collect();
        let mut primary = Header::new();
        // MJD 57000 is 2014-12-09T00:00:00; exposures 172.8 s apart.
        let secs = 172.8 * k as f64;
        let date = format!(
            "2014-12-09T00:{:02}:{:06.3}",
            (secs / 60.0) as u32,
            secs % 60.0
        );
        primary
            .set("DATE-OBS", date.as_str(), "")
            .set("MJD-OBS", 57000.0 + 0.002 * k as f64, "")
            .set("EXPTIME", 60.0, "");
        let f = d.join(format!("exp{k}.fits"));
        write_mef(&f, &primary, &ccds, Pixel::F32).unwrap();
        frames.push(f);
    }
    run(
        &nearby_tasks::stack::task::Stack,
        &[("images", frames.clone())],
        json!({}),
        &d.join("stack"),
    );
    let stack = nearby_tasks::fits::read_image(&d.join("stack/stack.fits"), 0).unwrap();
    let sw = TanWcs::from_header(&stack.header).unwrap();
    let pixels: Vec<_> = [
        (1.0, 1.0),
        (100.5, 60.25),
        (stack.width as f64, stack.height as f64),
    ]
    .iter()
    .map(|&(x, y)| {
        let (ra, dec) = sw.pix_to_sky(x, y);
        json!([x, y, ra, dec])
    })
    .collect();
    // Targets: one well inside CCD1, one at CCD2's edge.
    let p = TanWcs::from_header(
        &nearby_tasks::fits::read_image(&frames[0], 1)
            .unwrap()
            .header,
    )
    .unwrap();
    let (ra1, dec1) = p.pix_to_sky(90.0, 75.0);
    let (ra2, dec2) = p.pix_to_sky(280.0, 20.0);
    let targets = d.join("targets.json");
    std::fs::write(
        &targets,
        json!([{"id": "in", "ra": ra1, "dec": dec1}, {"id": "edge", "ra": ra2, "dec": dec2}])
            .to_string(),
    )
    .unwrap();
    run(
        &nearby_tasks::cutout::task::Cutout,
        &[("targets", vec![targets]), ("frames", frames.clone())],
        json!({"size_px": 64}),
        &d.join("cutout"),
    );
    std::fs::write(
        d.join("expected.json"),
        json!({"stack_pixels": pixels, "frames": frames}).to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop/astropy_stack_cutout_check.py");
    let out = Command::new(PYTHON).arg(&script).arg(d).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success() && text.contains("astropy check OK: stack WCS, 6 cutout planes"),
        "{text}"
    );
}
