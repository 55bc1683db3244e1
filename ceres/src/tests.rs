//! Tests of the CERES crate. Run them in release (`cargo test --release -p nearby-ceres`):
//! candle is ~25x slower unoptimised. Each test keeps its network and data small.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use nearby_tasks::calibrate::task::Masters;
use nearby_tasks::simulate::task::Simulate;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value as J};

use crate::dataset::{self, Data};
use crate::kinds::{Classify, Cutouts, Dataset, Evaluate, Train};
use crate::model::{Ceres, ModelConfig};
use crate::night::{self, register, run_kind, Detection};
use crate::stack::{Label, Stack};
use crate::train::{self, TrainConfig};

fn params(v: J) -> Map<String, J> {
    v.as_object().cloned().unwrap_or_default()
}

fn small_config(exposures: usize, size: usize, width: usize) -> ModelConfig {
    ModelConfig {
        exposures,
        cutout_px: size,
        width,
        stages: 2,
        blocks_per_stage: 1,
        context_px: 0,
    }
}

fn stack(id: &str, night: &str, depth: usize, size: usize, label: Option<Label>) -> Stack {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(id.len() as u64);
    Stack {
        id: id.into(),
        night: night.into(),
        run: 1000005,
        ccd: "A5382".into(),
        number: 7,
        mjd_obs: 56849.01,
        x: 100.5,
        y: 200.25,
        size,
        depth,
        pixels: (0..depth * size * size)
            .map(|_| 100.0 + r.random::<f32>())
            .collect(),
        mjd: (0..depth).map(|k| 56849.0 + k as f64 * 0.001).collect(),
        shift: (0..depth).map(|k| (k as f64 * 0.5, -(k as f64))).collect(),
        line: Some(crate::lines::Line {
            members: 3,
            length_px: 41.5,
        }),
        label,
        kind: label.map_or("", Label::name).into(),
        label_source: "test".into(),
    }
}

#[test]
fn cube_round_trip_and_bad_cubes() {
    let dir = tempfile::tempdir().unwrap();
    let s = stack(
        "1000005_A5382_7",
        "2014-07-10",
        4,
        16,
        Some(Label::Asteroid),
    );
    let p = dir.path().join("s.fits");
    s.write(&p, &[]).unwrap();
    let back = Stack::read(&p).unwrap();
    assert_eq!(back, s);
    // Truncated: the error names the file.
    let bytes = std::fs::read(&p).unwrap();
    let cut = dir.path().join("cut.fits");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Stack::read(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.fits") && e.contains("truncated"), "{e}");
    // A bad LABEL names the key and what was expected.
    let mut c = s.to_cube();
    c.header.set("LABEL", "maybe", "");
    let bad = dir.path().join("bad.fits");
    nearby_tasks::fits::write_cube(&bad, &c.header, c.width, c.height, &c.data, &[]).unwrap();
    let e = Stack::read(&bad).unwrap_err().to_string();
    assert!(
        e.contains("LABEL") && e.contains("'asteroid' or 'artifact'"),
        "{e}"
    );
}

#[test]
fn registration_recovers_a_shift_among_outliers() {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let a: Vec<Detection> = (0..60)
        .map(|i| Detection {
            number: i,
            x: r.random_range(0.0..500.0),
            y: r.random_range(0.0..1000.0),
            flux: 1.0,
        })
        .collect();
    let mut b: Vec<Detection> = a
        .iter()
        .map(|d| Detection {
            x: d.x + 3.2 + r.random_range(-0.05..0.05),
            y: d.y - 1.7 + r.random_range(-0.05..0.05),
            ..*d
        })
        .collect();
    b.truncate(45);
    b.extend((0..30).map(|i| Detection {
        number: 100 + i,
        x: r.random_range(0.0..500.0),
        y: r.random_range(0.0..1000.0),
        flux: 1.0,
    }));
    let (dx, dy) = register(&a, &b, 20.0).unwrap();
    assert!(
        (dx - 3.2).abs() < 0.05 && (dy + 1.7).abs() < 0.05,
        "{dx} {dy}"
    );
    assert_eq!(
        register(&a[..2], &b[..2], 20.0),
        None,
        "two pairs are too few"
    );
}

#[test]
fn planes_are_registered_to_a_fraction_of_a_pixel() {
    use nearby_tasks::stack::resample::Plane;
    // A star (Gaussian, sigma 1.5 px) at 0-based (40.0, 50.0) in frame a and at
    // (40 + 3.4, 50 - 2.3) in frame b: b's cutout at the shift must match a's.
    let (w, h) = (100, 100);
    let frame = |cx: f64, cy: f64| -> Plane {
        let d: Vec<f32> = (0..w * h)
            .map(|k| {
                let (x, y) = ((k % w) as f64, (k / w) as f64);
                let r2 = (x - cx).powi(2) + (y - cy).powi(2);
                (10.0 + 1000.0 * (-r2 / (2.0 * 1.5f64.powi(2))).exp()) as f32
            })
            .collect();
        Plane::new(&d, None, w, h, 0.0)
    };
    let (a, b) = (frame(40.0, 50.0), frame(43.4, 47.7));
    // FITS (41, 51) is 0-based (40, 50).
    let origin = night::cutout_origin(41.0, 51.0, 16);
    assert_eq!(origin, (32, 42));
    let ca = night::cut_registered(&a, origin, (0.0, 0.0), 16);
    let cb = night::cut_registered(&b, origin, (3.4, -2.3), 16);
    let worst = ca
        .iter()
        .zip(&cb)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(worst < 15.0, "largest difference {worst} of a 1000 peak");
    // Cut at whole pixels (the old way) the same star is off by 0.4 and 0.3 px: 197 here.
    let whole = night::cut_registered(&b, origin, (3.0, -2.0), 16);
    let worst_whole = ca
        .iter()
        .zip(&whole)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(worst_whole > 150.0, "{worst_whole}");
    // Plane 0 is copied, not interpolated; off the frame is NaN.
    assert_eq!(ca[8 * 16 + 8], a.data[50 * w + 40]);
    let edge = night::cut_registered(&a, (-4, 0), (0.0, 0.0), 16);
    assert!(edge[0].is_nan() && edge[4].is_finite());
}

#[test]
fn context_channels_are_the_binned_surroundings() {
    // A 16-px stack of 2 planes: plane z's pixel (x, y) is 100 + x + 16 y (+ noise-free).
    let mut s = stack("ctx", "2014-07-10", 2, 16, None);
    for z in 0..2 {
        for k in 0..256 {
            s.pixels[z * 256 + k] = 100.0 + k as f32 + z as f32;
        }
    }
    // Without context: the central 8 px normalised on their own, one channel per plane.
    let plain = s.input(8, 2, 0).unwrap();
    assert_eq!(plain.len(), 2 * 64);
    // With 16 px of context: 4 channels; the centre normalised over the 16 px.
    let x = s.input(8, 2, 16).unwrap();
    assert_eq!(x.len(), 4 * 64);
    let mut full = s.pixels[..256].to_vec();
    crate::stack::normalise_plane(&mut full);
    // Channel 0 pixel (0, 0) is the 16-px plane's (4, 4).
    assert_eq!(x[0], full[4 * 16 + 4]);
    // Channel 2 (plane 0's context) pixel (1, 2) is the mean of 16-px pixels (2..4, 4..6).
    let want = (full[4 * 16 + 2] + full[4 * 16 + 3] + full[5 * 16 + 2] + full[5 * 16 + 3]) / 4.0;
    assert!((x[2 * 64 + 2 * 8 + 1] - want).abs() < 1e-6);
    // Too small a stack, or a context that is not a multiple of the input, gives none.
    assert!(s.input(8, 2, 32).is_none());
    assert!(s.input(6, 2, 16).is_none());
}

#[test]
fn model_cards_from_before_context_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let net = Ceres::new(&small_config(4, 16, 4), &dev, 1).unwrap();
    net.save(&dir.path().join("model.safetensors")).unwrap();
    // As written before `context_px` existed (the demo model of pipelines/ceres-model was).
    std::fs::write(
        dir.path().join("model.json"),
        r#"{"format": "nearby-ceres-model/1",
            "config": {"exposures": 4, "cutout_px": 16, "width": 4, "stages": 2,
                       "blocks_per_stage": 1},
            "threshold": 0.64, "recall_target": 0.95, "normalisation": "old",
            "trained_epochs": 11}"#,
    )
    .unwrap();
    let (back, card) = crate::model::load_model(dir.path(), &dev).unwrap();
    assert_eq!(card.config.context_px, 0);
    assert_eq!(back.config.channels(), 4);
    // A context that is not a multiple of the input is named.
    let bad = ModelConfig {
        context_px: 24,
        ..small_config(4, 16, 4)
    };
    assert_eq!(bad.problems()[0].0, "context_px");
}

#[test]
fn an_early_stopped_training_run_again_does_not_go_on() {
    let stacks = toy_stacks(80, 4, 8);
    let (tr, va) = stacks.split_at(60);
    let (tr, va) = (data_of(tr, 8), data_of(va, 8));
    let cfg = small_config(4, 8, 2);
    // Learning rate 0: no epoch is ever better than the first, so with patience 2 the
    // training stops after epoch 3 of 10.
    let tcfg = TrainConfig {
        learning_rate: 0.0,
        patience: 2,
        augment: false,
        ..toy_train_config(10)
    };
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let no = AtomicBool::new(false);
    let net = Ceres::new(&cfg, &dev, 1).unwrap();
    let first = train::train(&net, &tcfg, &tr, &va, dir.path(), "k", &no, &mut Vec::new()).unwrap();
    assert_eq!((first.state.epochs_done, first.state.best_epoch), (3, 1));
    let again = Ceres::new(&cfg, &dev, 2).unwrap();
    let second = train::train(
        &again,
        &tcfg,
        &tr,
        &va,
        dir.path(),
        "k",
        &no,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(second.resumed_from, 3);
    assert_eq!(
        second.state.epochs_done, 3,
        "trained on after its early stop"
    );
    // And it hands back the best epoch's weights.
    let (a, b) = (
        train::score_all(&net, &va, &dev).unwrap(),
        train::score_all(&again, &va, &dev).unwrap(),
    );
    assert_eq!(a, b);
}

#[test]
fn night_of_keeps_one_date_across_midnight() {
    // 2014-07-10 is MJD 56848.
    assert_eq!(night::night_of(56848.0 + 21.0 / 24.0), "2014-07-10");
    assert_eq!(night::night_of(56849.0 + 5.0 / 24.0), "2014-07-10");
    assert_eq!(night::night_of(56849.0 + 20.0 / 24.0), "2014-07-11");
}

/// Simulates a small night with the simulate and masters kinds and cuts its detections with
/// `ceres_cutouts` from the raw frames, labelled by the truth.
fn simulated_night(root: &Path, seed: u64, date: &str) -> (PathBuf, PathBuf) {
    let mut log = Vec::new();
    let sim = run_kind(
        &Simulate,
        params(json!({"preset": "small", "seed": seed, "night": date, "n_asteroids": 20})),
        &[],
        &root.join("simulate"),
        &mut log,
    )
    .unwrap();
    let masters = run_kind(
        &Masters,
        Map::new(),
        &[("calib", vec![sim["calib"].clone()])],
        &root.join("masters"),
        &mut log,
    )
    .unwrap();
    let cut = run_kind(
        &Cutouts,
        params(json!({"cutout_px": 32})),
        &[
            ("raw", vec![sim["raw"].clone()]),
            ("bias", vec![masters["bias"].clone()]),
            ("flat", vec![masters["flat"].clone()]),
            ("truth", vec![sim["truth"].clone()]),
        ],
        &root.join("cutouts"),
        &mut log,
    )
    .unwrap();
    (cut["cutouts"].clone(), sim["truth"].clone())
}

#[test]
fn simulated_night_gives_labelled_stacks_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (cutouts, truth_path) = simulated_night(dir.path(), 5, "2014-07-12");
    let files: Vec<PathBuf> = std::fs::read_dir(&cutouts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let stacks: Vec<Stack> = files.iter().map(|f| Stack::read(f).unwrap()).collect();
    assert!(stacks.len() > 100, "{} stacks", stacks.len());
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for s in &stacks {
        assert_eq!(s.depth, 4);
        assert_eq!(s.size, 32);
        assert_eq!(s.night, "2014-07-12");
        assert_eq!(s.label_source, crate::truth::SOURCE);
        *kinds.entry(s.kind.clone()).or_default() += 1;
        // Plane 0 is cut at the detection itself: its centre stands above the plane's median.
        let p0 = &s.pixels[..32 * 32];
        let mut v: Vec<f32> = p0.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f32::total_cmp);
        let centre = p0[16 * 32 + 16]
            .max(p0[15 * 32 + 15])
            .max(p0[15 * 32 + 16])
            .max(p0[16 * 32 + 15]);
        let med = v[v.len() / 2];
        assert!(centre > med, "{}: centre {centre} <= median {med}", s.id);
    }
    // Asteroids found are the truth's: every asteroid stack lies on a truth trail.
    let truth = nearby_tasks::simulate::Truth::load(&truth_path).unwrap();
    let n_ast = kinds.get("asteroid").copied().unwrap_or(0);
    assert!(n_ast >= 20, "asteroid stacks: {kinds:?}");
    assert!(kinds.get("star").copied().unwrap_or(0) > 20, "{kinds:?}");
    assert!(kinds.len() >= 4, "kinds seen: {kinds:?}");
    assert!(truth.asteroids.len() >= 20);
    // The registration shifts are the pointing jitter: a few pixels, not more.
    for s in &stacks {
        for (dx, dy) in &s.shift {
            assert!(dx.hypot(*dy) < 20.0, "{}: shift {dx} {dy}", s.id);
        }
    }
}

/// A learnable toy problem: a blob in plane 0 only ("asteroid") or in every plane ("star"),
/// split across `nights` nights.
fn toy_stacks(n: usize, nights: usize, size: usize) -> Vec<Stack> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    (0..n)
        .map(|i| {
            let ast = i % 4 == 0;
            let mut s = stack(
                &format!("toy{i}"),
                &format!("2014-07-{:02}", 10 + i % nights),
                4,
                size,
                None,
            );
            for z in 0..4 {
                for p in 0..size * size {
                    s.pixels[z * size * size + p] = 100.0 + 5.0 * r.random::<f32>();
                }
                if z == 0 || !ast {
                    let (cx, cy) = (
                        size as f32 / 2.0 + r.random_range(-1.0..1.0),
                        size as f32 / 2.0,
                    );
                    for y in 0..size {
                        for x in 0..size {
                            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                            s.pixels[z * size * size + y * size + x] += 60.0 * (-d2 / 4.0).exp();
                        }
                    }
                }
            }
            s.label = Some(if ast {
                Label::Asteroid
            } else {
                Label::Artifact
            });
            s.kind = if ast { "asteroid" } else { "star" }.into();
            s
        })
        .collect()
}

fn toy_train_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        learning_rate: 0.01,
        weight_decay: 1e-4,
        warmup_epochs: 1,
        precision_floor: 0.9,
        recall_target: 0.95,
        patience: 10,
        seed: 7,
        augment: true,
        noise_sigma: 0.05,
        asteroid_weight: None,
    }
}

fn toy_build() -> dataset::BuildConfig {
    dataset::BuildConfig {
        exposures: 4,
        cutout_px: 12,
        context_px: 0,
        validation_fraction: 0.2,
        test_fraction: 0.2,
        seed: 1,
    }
}

#[test]
fn dataset_splits_by_night_and_reports_the_balance() {
    let dir = tempfile::tempdir().unwrap();
    let mut stacks = toy_stacks(120, 6, 16);
    stacks.push(stack("unlabelled", "2014-07-10", 4, 16, None));
    stacks.push(stack("thin", "2014-07-10", 2, 16, Some(Label::Artifact)));
    let (m, skipped) =
        dataset::build(&stacks, &[], &BTreeSet::new(), toy_build(), dir.path()).unwrap();
    assert_eq!(skipped, 2, "the unlabelled stack and the 2-exposure one");
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut total = 0;
    for (split, s) in &m.splits {
        assert!(!s.nights.is_empty(), "{split} has no night");
        for ex in &s.examples {
            assert!(s.nights.contains(&ex.night));
            if let Some(other) = seen.insert(ex.night.clone(), split.clone()) {
                assert_eq!(&other, split, "night {} in two splits", ex.night);
            }
        }
        assert_eq!(s.balance.asteroid + s.balance.artifact, s.examples.len());
        total += s.examples.len();
        let d = dataset::load_split(dir.path(), &m, split).unwrap();
        assert_eq!(d.n, s.examples.len());
        assert_eq!(
            d.labels.iter().filter(|l| **l == 1).count(),
            s.balance.asteroid
        );
    }
    assert_eq!(total, 120);
    let e = dataset::build(
        &toy_stacks(10, 2, 16),
        &[],
        &BTreeSet::new(),
        toy_build(),
        dir.path(),
    )
    .unwrap_err();
    assert!(e.contains("at least 3"), "{e}");
}

#[test]
fn train_only_nights_go_to_training_and_leave_the_split_of_the_others() {
    let (plain, extra) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stacks = toy_stacks(120, 6, 16);
    let (m0, _) =
        dataset::build(&stacks, &[], &BTreeSet::new(), toy_build(), plain.path()).unwrap();
    let mut more = stacks.clone();
    for i in 0..8 {
        let label = if i % 2 == 0 {
            Label::Asteroid
        } else {
            Label::Artifact
        };
        more.push(stack(&format!("sat{i}"), "2014-09-01", 4, 16, Some(label)));
    }
    let only = BTreeSet::from(["2014-09-01".to_owned()]);
    let (m, skipped) = dataset::build(&more, &[], &only, toy_build(), extra.path()).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(m.train_only_nights, ["2014-09-01"]);
    let train = &m.splits["train"];
    assert!(train.nights.contains(&"2014-09-01".to_owned()));
    assert_eq!(train.examples.len(), m0.splits["train"].examples.len() + 8);
    for split in ["validation", "test"] {
        assert_eq!(m.splits[split], m0.splits[split], "{split} changed");
    }
}

fn data_of(stacks: &[Stack], size: usize) -> Data {
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for s in stacks {
        inputs.extend(s.input(size, 4, 0).unwrap());
        labels.push(s.label.unwrap() as u8);
    }
    Data {
        inputs,
        labels,
        n: stacks.len(),
        example_len: 4 * size * size,
        veto: Vec::new(),
    }
}

#[test]
fn training_learns_a_toy_problem_and_resumes_after_a_kill() {
    let stacks = toy_stacks(240, 4, 16);
    let (tr, va) = stacks.split_at(180);
    let (tr, va) = (data_of(tr, 16), data_of(va, 16));
    let cfg = small_config(4, 16, 4);
    let tcfg = toy_train_config(4);
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let no = AtomicBool::new(false);

    let full = Ceres::new(&cfg, &dev, 1).unwrap();
    let init = dir.path().join("init.safetensors");
    full.save(&init).unwrap();
    let done = train::train(
        &full,
        &tcfg,
        &tr,
        &va,
        &dir.path().join("a"),
        "k",
        &no,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(done.state.history.len(), 4);
    assert!(
        done.state.best_recall > 0.9,
        "validation recall at P >= 0.9: {:?}",
        done.state
            .history
            .iter()
            .map(|h| h.validation.recall_at_floor)
            .collect::<Vec<_>>()
    );
    let s_full = train::score_all(&full, &va, &dev).unwrap();

    // Killed during epoch 3: the cancel flag is raised when epoch 2's line is logged.
    struct Killer<'a>(&'a AtomicBool, String);
    impl std::io::Write for Killer<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.push_str(&String::from_utf8_lossy(b));
            if self.1.contains("epoch 2:") {
                self.0.store(true, Ordering::Relaxed);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let kill = AtomicBool::new(false);
    let killed = Ceres::new(&cfg, &dev, 1).unwrap();
    killed.load_weights(&init, false).unwrap();
    let ck = dir.path().join("b");
    let e = train::train(
        &killed,
        &tcfg,
        &tr,
        &va,
        &ck,
        "k",
        &kill,
        &mut Killer(&kill, String::new()),
    );
    assert!(e.is_err(), "the killed training must not finish");
    let resumed = Ceres::new(&cfg, &dev, 1).unwrap();
    let done2 = train::train(&resumed, &tcfg, &tr, &va, &ck, "k", &no, &mut Vec::new()).unwrap();
    assert_eq!(done2.resumed_from, 2);
    assert_eq!(done2.state.history.len(), 4);
    let s_res = train::score_all(&resumed, &va, &dev).unwrap();
    for (a, b) in s_full.iter().zip(&s_res) {
        assert!((a - b).abs() < 1e-4, "resumed training differs: {a} vs {b}");
    }
    // The plot of the history is a PNG.
    let png = dir.path().join("m.png");
    crate::plot::write(&done.state.history, &png).unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_weights_and_mismatched_shapes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let net = Ceres::new(&small_config(4, 16, 4), &dev, 1).unwrap();
    let good = dir.path().join("w.safetensors");
    net.save(&good).unwrap();
    // Corrupt: truncated.
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.path().join("corrupt.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let e = net.load_weights(&bad, false).unwrap_err();
    assert!(
        e.contains("corrupt.safetensors") && e.contains("not a readable safetensors file"),
        "{e}"
    );
    // Garbage.
    std::fs::write(&bad, b"this is not a tensor file").unwrap();
    let e = net.load_weights(&bad, false).unwrap_err();
    assert!(e.contains("not a readable safetensors file"), "{e}");
    // Weights of a wider network: the tensor, both shapes and the reason.
    let wide = Ceres::new(&small_config(4, 16, 8), &dev, 1).unwrap();
    let e = wide.load_weights(&good, false).unwrap_err();
    assert!(
        e.contains("has shape [4, 4, 3, 3]") || e.contains("has shape"),
        "{e}"
    );
    assert!(e.contains("different input or network shape"), "{e}");
    // Weights for 3 exposures into a 4-exposure model.
    let three = Ceres::new(&small_config(3, 16, 4), &dev, 1).unwrap();
    let p3 = dir.path().join("three.safetensors");
    three.save(&p3).unwrap();
    let e = net.load_weights(&p3, false).unwrap_err();
    assert!(
        e.contains("stem.weight") && e.contains("[4, 3, 3, 3]"),
        "{e}"
    );
    // Partial loading (pretrained) takes what matches and says what it left.
    let skipped = net.load_weights(&p3, true).unwrap();
    assert_eq!(skipped, vec!["stem.weight".to_string()]);
}

/// The kinds end to end on three toy nights and one simulated: dataset, train, evaluate, and
/// classify refusing cutouts of the wrong shape.
#[test]
fn kinds_dataset_train_evaluate_classify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cut = root.join("cubes");
    std::fs::create_dir_all(&cut).unwrap();
    for s in toy_stacks(150, 3, 32) {
        s.write(&cut.join(format!("{}.fits", s.id)), &[]).unwrap();
    }
    std::fs::write(cut.join("broken.fits"), b"SIMPLE  =  garbage").unwrap();
    let labels = root.join("labels.csv");
    std::fs::write(
        &labels,
        "id,label,kind,source\ntoy1,asteroid,asteroid,MPC report\n",
    )
    .unwrap();
    let mut log = Vec::new();
    let ds = run_kind(
        &Dataset,
        params(json!({"cutout_px": 16, "context_px": 32, "validation_fraction": 0.34, "test_fraction": 0.34})),
        &[("cutouts", vec![cut.clone()]), ("labels", vec![labels])],
        &root.join("dataset"),
        &mut log,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(
        text.contains("1 unreadable") && text.contains("broken.fits"),
        "{text}"
    );
    let m = dataset::read_manifest(&ds["dataset"]).unwrap();
    let relabelled = m
        .splits
        .values()
        .flat_map(|s| &s.examples)
        .find(|e| e.id == "toy1")
        .unwrap();
    assert_eq!(
        (relabelled.label.as_str(), relabelled.label_source.as_str()),
        ("asteroid", "MPC report")
    );
    assert_eq!((m.cutout_px, m.context_px, m.channels()), (16, 32, 8));

    let tr = run_kind(
        &Train,
        params(json!({"width": 4, "stages": 2, "epochs": 3, "batch_size": 32, "learning_rate": 0.01, "checkpoint_dir": root.join("ck").display().to_string()})),
        &[("dataset", vec![ds["dataset"].clone()])],
        &root.join("train"),
        &mut log,
    )
    .unwrap();
    let metrics: J =
        serde_json::from_str(&std::fs::read_to_string(&tr["metrics"]).unwrap()).unwrap();
    assert_eq!(metrics["epochs"].as_array().unwrap().len(), 3);
    assert!(metrics["epochs"][0]["validation"]["confusion"].is_array());
    // The model card carries the input the network was trained on.
    let (_, card) = crate::model::load_model(&tr["model"], &Device::Cpu).unwrap();
    assert_eq!((card.config.cutout_px, card.config.context_px), (16, 32));
    let ev = run_kind(
        &Evaluate,
        Map::new(),
        &[
            ("model", vec![tr["model"].clone()]),
            ("dataset", vec![ds["dataset"].clone()]),
        ],
        &root.join("evaluate"),
        &mut log,
    )
    .unwrap();
    let r: J = serde_json::from_str(&std::fs::read_to_string(&ev["report"]).unwrap()).unwrap();
    assert!(
        r["metrics"]["asteroid"]["recall"].as_f64().unwrap() > 0.8,
        "{r}"
    );
    // The honest number for the precision floor: the validation's threshold on the test.
    let (_, card) = crate::model::load_model(&tr["model"], &Device::Cpu).unwrap();
    let at = &r["at_validation_floor_threshold"];
    assert_eq!(at["threshold"].as_f64(), card.threshold_at_floor);
    assert!(at["recall"].as_f64().unwrap() <= 1.0, "{r}");

    let cl = run_kind(
        &Classify,
        Map::new(),
        &[
            ("model", vec![tr["model"].clone()]),
            (
                "cutouts",
                vec![cut.join("toy0.fits"), cut.join("toy1.fits")],
            ),
        ],
        &root.join("classify"),
        &mut log,
    )
    .unwrap();
    let csv = std::fs::read_to_string(&cl["scores"]).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Cutouts of 3 exposures for a 4-exposure model.
    let thin = root.join("thin.fits");
    stack("thin", "2014-07-10", 3, 32, None)
        .write(&thin, &[])
        .unwrap();
    let e = run_kind(
        &Classify,
        Map::new(),
        &[
            ("model", vec![tr["model"].clone()]),
            ("cutouts", vec![thin]),
        ],
        &root.join("c2"),
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("thin.fits") && e.contains("3 exposures") && e.contains("needs 4"),
        "{e}"
    );
    // Cutouts large enough for the model's 16 px but not for its 32 px of context.
    let small = root.join("small.fits");
    stack("small", "2014-07-10", 4, 16, None)
        .write(&small, &[])
        .unwrap();
    let e = run_kind(
        &Classify,
        Map::new(),
        &[
            ("model", vec![tr["model"].clone()]),
            ("cutouts", vec![small]),
        ],
        &root.join("c4"),
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("small.fits")
            && e.contains("16x16 px")
            && e.contains("at least 32x32 px")
            && e.contains("cutout_px >= 32"),
        "{e}"
    );
    // A corrupt model file.
    let broken = root.join("broken-model");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(tr["model"].join("model.json"), broken.join("model.json")).unwrap();
    std::fs::write(
        broken.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    )
    .unwrap();
    let e = run_kind(
        &Classify,
        Map::new(),
        &[
            ("model", vec![broken]),
            ("cutouts", vec![cut.join("toy0.fits")]),
        ],
        &root.join("c3"),
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("not a readable safetensors file"),
        "{e}"
    );
}

/// Issue 6, the satellite-line veto: stacks whose detection is in a long run of transients on
/// one line are artifacts whatever the network says. `ceres_evaluate` counts vetoed asteroids
/// as missed and reports what the veto took by kind; `ceres_classify` writes the reason; a
/// manifest without the line columns still loads (no veto, said in the log) and a garbled one
/// is an error naming the file.
#[test]
fn satellite_line_veto_in_evaluate_and_classify() {
    use crate::lines::Line;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cut = root.join("cubes");
    std::fs::create_dir_all(&cut).unwrap();
    // A trail's piece: 60 transients over 800 px. An asteroid's own pieces: 60 over 100 px,
    // too short for a satellite (the veto wants >= 400 px by default).
    let trail = Line {
        members: 60,
        length_px: 800.0,
    };
    let own = Line {
        members: 60,
        length_px: 100.0,
    };
    for (i, mut s) in toy_stacks(120, 3, 32).into_iter().enumerate() {
        // Every night has some of each (stack i is on night i % 3).
        if i % 4 == 1 && (i / 4) % 2 == 0 {
            s.kind = "satellite".into();
            s.line = Some(trail);
        }
        if i % 4 == 0 {
            // Asteroids: some on a trail's line by chance, the others trailed in pieces.
            s.line = Some(if (i / 12) % 2 == 0 { trail } else { own });
        }
        s.write(&cut.join(format!("{}.fits", s.id)), &[]).unwrap();
    }
    let mut log = Vec::new();
    let ds = run_kind(
        &Dataset,
        params(json!({"cutout_px": 16, "context_px": 0, "validation_fraction": 0.34, "test_fraction": 0.34})),
        &[("cutouts", vec![cut.clone()])],
        &root.join("dataset"),
        &mut log,
    )
    .unwrap();
    let tr = run_kind(
        &Train,
        params(json!({"width": 4, "stages": 2, "epochs": 1, "batch_size": 32, "checkpoint_dir": root.join("ck").display().to_string()})),
        &[("dataset", vec![ds["dataset"].clone()])],
        &root.join("train"),
        &mut log,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&log).to_string();
    assert!(
        text.contains(
            "with the satellite-line veto (>= 10 transients in a run >= 400 px along a line): calls"
        ),
        "{text}"
    );
    let (_, card) = crate::model::load_model(&tr["model"], &Device::Cpu).unwrap();
    assert_eq!(card.satellite_line, Some((10, 400.0)));
    // What the test split holds: the veto's stacks by kind, asteroids and artifacts.
    let m = dataset::read_manifest(&ds["dataset"]).unwrap();
    let test = &m.splits["test"].examples;
    let on_trail = |kind: &str| {
        test.iter()
            .filter(|e| e.kind == kind && e.line_length_px == Some(800.0))
            .count()
    };
    let (sat, ast) = (on_trail("satellite"), on_trail("asteroid"));
    assert!(
        sat > 0 && ast > 0,
        "{sat} satellites, {ast} asteroids on a trail"
    );
    let asteroids = test.iter().filter(|e| e.label == "asteroid").count();
    let artifacts = test.len() - asteroids;
    // Threshold 0: the network calls every stack an asteroid, so the veto alone decides.
    let evaluate = |dataset: &Path, p: J, out: &str, log: &mut Vec<u8>| {
        let ev = run_kind(
            &Evaluate,
            params(p),
            &[
                ("model", vec![tr["model"].clone()]),
                ("dataset", vec![dataset.to_path_buf()]),
            ],
            &root.join(out),
            log,
        )?;
        Ok::<J, nearby_engine::task::TaskError>(
            serde_json::from_str(&std::fs::read_to_string(&ev["report"]).unwrap()).unwrap(),
        )
    };
    let r = evaluate(&ds["dataset"], json!({"threshold": 0.0}), "e1", &mut log).unwrap();
    assert_eq!(
        r["metrics"]["confusion"],
        json!([[sat, artifacts - sat], [ast, asteroids - ast]]),
        "{r}"
    );
    assert_eq!(
        r["without_veto"]["confusion"],
        json!([[0, artifacts], [0, asteroids]])
    );
    // The vetoed asteroids are missed: the recall is over every asteroid.
    assert_eq!(r["metrics"]["asteroid"]["support"], json!(asteroids));
    let recall = r["metrics"]["asteroid"]["recall"].as_f64().unwrap();
    assert!((recall - (asteroids - ast) as f64 / asteroids as f64).abs() < 1e-12);
    assert_eq!(
        r["vetoed_by_kind"],
        json!({"asteroid": {"stacks": ast, "network_called_asteroid": ast},
               "satellite": {"stacks": sat, "network_called_asteroid": sat}})
    );
    assert_eq!(r["stacks_with_line_count"], json!(test.len()));
    // Turned off, or the run too short for a satellite: nothing vetoed.
    for (p, name) in [
        (json!({"threshold": 0.0, "satellite_line_min": 0}), "e2"),
        (json!({"threshold": 0.0, "satellite_line_px": 900}), "e3"),
    ] {
        let r = evaluate(&ds["dataset"], p, name, &mut log).unwrap();
        assert_eq!(r["vetoed_by_kind"], json!({}), "{name}");
        assert_eq!(r["metrics"]["confusion"], r["without_veto"]["confusion"]);
    }
    // A dataset built before the line columns: loads, no veto, and the log says so.
    let old = root.join("old-dataset");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["train", "validation", "test"] {
        let name = format!("{f}.safetensors");
        std::fs::copy(ds["dataset"].join(&name), old.join(&name)).unwrap();
    }
    let mut manifest: J = serde_json::from_str(
        &std::fs::read_to_string(ds["dataset"].join("manifest.json")).unwrap(),
    )
    .unwrap();
    for split in manifest["splits"].as_object_mut().unwrap().values_mut() {
        for e in split["examples"].as_array_mut().unwrap() {
            let e = e.as_object_mut().unwrap();
            e.remove("line_count");
            e.remove("line_length_px");
        }
    }
    std::fs::write(old.join("manifest.json"), manifest.to_string()).unwrap();
    let mut old_log = Vec::new();
    let r = evaluate(&old, json!({"threshold": 0.0}), "e4", &mut old_log).unwrap();
    assert_eq!(r["vetoed_by_kind"], json!({}));
    assert_eq!(r["stacks_with_line_count"], json!(0));
    let text = String::from_utf8_lossy(&old_log).to_string();
    assert!(
        text.contains(&format!(
            "{} of {} test stacks have no satellite-line count",
            test.len(),
            test.len()
        )),
        "{text}"
    );
    // A garbled line column: the error names the manifest and the place.
    manifest["splits"]["test"]["examples"][0]["line_count"] = json!("many");
    std::fs::write(old.join("manifest.json"), manifest.to_string()).unwrap();
    let e = evaluate(&old, json!({}), "e5", &mut log)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("manifest.json")
            && e.contains("not a CERES dataset manifest")
            && e.contains("\"many\""),
        "{e}"
    );

    // classify: the reason per stack, and the veto over the score.
    let mut on = stack("on-trail", "2014-07-10", 4, 32, None);
    on.line = Some(trail);
    let mut off = stack("off-trail", "2014-07-10", 4, 32, None);
    off.line = None;
    // A cube with LINEDETS but no LINELEN is garbled: skipped, named in the log.
    let mut garbled = on.to_cube();
    garbled.header.remove("LINELEN");
    let g = root.join("garbled.fits");
    nearby_tasks::fits::write_cube(&g, &garbled.header, 32, 32, &garbled.data, &[]).unwrap();
    let (a, b) = (root.join("on.fits"), root.join("off.fits"));
    on.write(&a, &[]).unwrap();
    off.write(&b, &[]).unwrap();
    let mut cl_log = Vec::new();
    let cl = run_kind(
        &Classify,
        params(json!({"threshold": 0.0})),
        &[
            ("model", vec![tr["model"].clone()]),
            ("cutouts", vec![a, b, g]),
        ],
        &root.join("classify"),
        &mut cl_log,
    )
    .unwrap();
    let csv = std::fs::read_to_string(&cl["scores"]).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "id,run,ccd,number,x,y,score,line_count,line_length_px,reason,asteroid"
    );
    assert!(
        rows[1].starts_with("on-trail,") && rows[1].ends_with(",60,800.0,satellite_line,0"),
        "{csv}"
    );
    assert!(
        rows[2].starts_with("off-trail,") && rows[2].ends_with(",,,network,1"),
        "{csv}"
    );
    assert_eq!(rows.len(), 3, "{csv}");
    let text = String::from_utf8_lossy(&cl_log).to_string();
    assert!(
        text.contains("garbled.fits")
            && text.contains("LINEDETS")
            && text.contains("both or neither"),
        "{text}"
    );
    assert!(
        text.contains("1 of 2 stacks have no satellite-line count")
            && text.contains("called 1 stacks artifacts, 1 of them scored asteroid"),
        "{text}"
    );
}

/// Largest difference between two tensors of the same shape, relative to the larger of 1 and
/// the largest magnitude in `want`.
fn rel_diff(got: &candle_core::Tensor, want: &candle_core::Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
    g.iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn random_tensor(r: &mut rand_chacha::ChaCha8Rng, dims: &[usize]) -> candle_core::Tensor {
    let n = dims.iter().product::<usize>();
    let v: Vec<f32> = (0..n).map(|_| r.random::<f32>() - 0.5).collect();
    candle_core::Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// The CPU convolutions (`conv::conv3x3`: im2col and gemm, with their own backward) give what
/// candle's `conv2d` gives, outputs and gradients of input, kernel and bias, to float
/// rounding: strides 1 and 2, odd and tiny planes, with and without the fused ReLU.
#[test]
fn im2col_convolutions_equal_candle_conv2d_with_gradients() {
    use candle_core::Var;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    // (stacks, channels in, channels out, height, width, stride, relu); with stride 2 the
    // sides have the same parity (candle's conv2d backward takes its output padding from the
    // height alone).
    let cases = [
        (3, 2, 5, 7, 4, 1, true),
        (5, 3, 4, 9, 7, 2, false),
        (6, 3, 4, 8, 6, 2, true),
        (2, 1, 1, 1, 1, 1, true),
        (4, 2, 3, 3, 1, 1, false),
        (3, 2, 3, 1, 6, 1, true),
        (3, 2, 2, 2, 4, 2, false),
        (9, 8, 16, 16, 16, 2, true),
        (7, 8, 8, 32, 32, 1, false),
    ];
    for (n, cin, cout, h, w, stride, relu) in cases {
        let what = format!("{n}x{cin}x{h}x{w} -> {cout}, stride {stride}, relu {relu}");
        let x = Var::from_tensor(&random_tensor(&mut r, &[n, cin, h, w])).unwrap();
        let k = Var::from_tensor(&random_tensor(&mut r, &[cout, cin, 3, 3])).unwrap();
        let b = Var::from_tensor(&random_tensor(&mut r, &[cout])).unwrap();
        let fast = crate::conv::conv3x3(&x, &k, &b, stride, relu).unwrap();
        let mut slow = x
            .conv2d(&k, 1, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        if relu {
            slow = slow.relu().unwrap();
        }
        assert!(rel_diff(&fast, &slow) < 1e-6, "{what}: outputs differ");
        let probe = random_tensor(&mut r, slow.dims());
        let gf = (&fast * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (&slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("input", &x), ("kernel", &k), ("bias", &b)] {
            let (f, s) = (gf.get(v).unwrap(), gs.get(v).unwrap());
            let d = rel_diff(f, s);
            assert!(d < 1e-5, "{what}: gradients of the {name} differ by {d}");
        }
    }
}

/// The whole network with the CPU convolutions equals the one with candle's `conv2d`: logits
/// and the gradients of every weight, on random weights (second convs of blocks not zero) and
/// inputs with context channels.
#[test]
fn network_forward_and_gradients_equal_with_either_convolution() {
    let dev = Device::Cpu;
    let cfg = ModelConfig {
        context_px: 32,
        ..small_config(3, 16, 4)
    };
    let net = Ceres::new(&cfg, &dev, 5).unwrap();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for (_, var) in net.vars() {
        let t = random_tensor(&mut r, var.as_tensor().dims());
        var.set(&(t * 0.5).unwrap()).unwrap();
    }
    let x = random_tensor(&mut r, &[6, cfg.channels(), 16, 16]);
    let fast = net.forward_with(&x, true).unwrap();
    let slow = net.forward_with(&x, false).unwrap();
    assert!(rel_diff(&fast, &slow) < 1e-6, "{fast} vs {slow}");
    let gf = fast.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let gs = slow.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for (name, var) in net.vars() {
        let d = rel_diff(gf.get(&var).unwrap(), gs.get(&var).unwrap());
        assert!(d < 1e-5, "gradient of {name} differs by {d}");
    }
}

/// The CPU convolutions' gradients are the same bits with 1 and 3 threads (the kernel and bias
/// gradients are summed over fixed groups of stacks, in order), so a training run does not
/// depend on the machine's core count.
#[test]
fn convolution_gradients_do_not_depend_on_the_thread_count() {
    use candle_core::Var;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let x = Var::from_tensor(&random_tensor(&mut r, &[23, 4, 12, 12])).unwrap();
    let k = Var::from_tensor(&random_tensor(&mut r, &[6, 4, 3, 3])).unwrap();
    let b = Var::from_tensor(&random_tensor(&mut r, &[6])).unwrap();
    let probe = random_tensor(&mut r, &[23, 6, 12, 12]);
    let grads = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = crate::conv::conv3x3(&x, &k, &b, 1, true).unwrap();
            let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            [&x, &k, &b].map(|v| {
                g.get(v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
        })
    };
    assert_eq!(grads(1), grads(3));
}
