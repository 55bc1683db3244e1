//! A training experiment on a `ceres_dataset` (whatever input it was built with: `cutout_px`,
//! `context_px`), to compare inputs on the same stacks in less time than the pipeline:
//!
//! `ceres_experiment DATASET WIDTH EPOCHS OUT [CAP]`
//!
//! trains the default-shaped network (3 stages of 1 block) of WIDTH channels as `ceres_train`
//! does (its defaults: AdamW, lr 0.003, batch 64, augmentation, early stopping). CAP keeps at most that many training stacks of each kind (evenly spaced), so the common
//! kinds (stars, hot pixels) do not swamp the rare ones and an epoch stays short on 2 cores.
//! Prints the test nights' asteroid recall at precision >= 0.90 and, at that threshold, the
//! stacks called asteroid by kind; writes OUT/scores.csv (id, kind, label, score).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use nearby_ceres::dataset::{load_split, read_manifest, Data};
use nearby_ceres::metrics;
use nearby_ceres::model::{Ceres, ModelConfig};
use nearby_ceres::train::{self, TrainConfig};

/// At most `cap` examples of each kind, evenly spaced through the split.
fn cap_kinds(d: &Data, kinds: &[&str], cap: usize) -> Data {
    let mut count = BTreeMap::<&str, usize>::new();
    for k in kinds {
        *count.entry(k).or_default() += 1;
    }
    let mut seen = BTreeMap::<&str, usize>::new();
    let keep: Vec<usize> = (0..d.n)
        .filter(|&i| {
            let n = count[kinds[i]];
            let j = seen.entry(kinds[i]).or_default();
            *j += 1;
            n <= cap || ((*j - 1) * cap) / n != (*j * cap) / n
        })
        .collect();
    let len = d.example_len;
    Data {
        inputs: keep
            .iter()
            .flat_map(|&i| d.inputs[i * len..(i + 1) * len].iter().copied())
            .collect(),
        labels: keep.iter().map(|&i| d.labels[i]).collect(),
        n: keep.len(),
        example_len: len,
        veto: keep
            .iter()
            .filter_map(|&i| d.veto.get(i).copied())
            .collect(),
    }
}

fn run() -> Result<(), String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 5 {
        return Err("usage: ceres_experiment DATASET WIDTH EPOCHS OUT [CAP]".into());
    }
    let num = |i: usize| -> Result<usize, String> {
        a[i].parse()
            .map_err(|_| format!("`{}` is not a count", a[i]))
    };
    let dir = Path::new(&a[0]);
    let (width, epochs, out) = (num(1)?, num(2)?, Path::new(&a[3]));
    let cap = if a.len() > 4 { num(4)? } else { usize::MAX };
    let m = read_manifest(dir)?;
    let get = |s: &str| load_split(dir, &m, s);
    let kinds = |s: &str| -> Vec<&str> {
        m.splits
            .get(s)
            .map(|x| x.examples.iter().map(|e| e.kind.as_str()).collect())
            .unwrap_or_default()
    };
    let tr = cap_kinds(&get("train")?, &kinds("train"), cap);
    let (va, te) = (get("validation")?, get("test")?);
    let cfg = ModelConfig {
        exposures: m.exposures,
        cutout_px: m.cutout_px,
        width,
        stages: 3,
        blocks_per_stage: 1,
        context_px: m.context_px,
    };
    eprintln!(
        "training {} on {} stacks",
        nearby_ceres::model::describe(&cfg),
        tr.n
    );
    let tc = TrainConfig {
        epochs,
        batch_size: 64,
        learning_rate: 0.003,
        weight_decay: 1e-4,
        warmup_epochs: 1,
        precision_floor: 0.9,
        recall_target: 0.95,
        patience: 6,
        seed: 1,
        augment: true,
        noise_sigma: 0.05,
        asteroid_weight: None,
    };
    let dev = Device::Cpu;
    let e = |e: candle_core::Error| e.to_string();
    let net = Ceres::new(&cfg, &dev, 1).map_err(e)?;
    let cancel = AtomicBool::new(false);
    let key = format!("{}-{width}-{epochs}-{cap}", dir.display());
    let done = train::train(
        &net,
        &tc,
        &tr,
        &va,
        &out.join("checkpoints"),
        &key,
        &cancel,
        &mut std::io::stderr(),
    )?;
    eprintln!("best epoch {}", done.state.best_epoch);
    let sc = train::score_all(&net, &te, &dev).map_err(e)?;
    let r = metrics::report(&sc, &te.labels, 0.5, 0.9);
    println!(
        "test: recall at P>=0.9 {:.3} (threshold {:.4}); at 0.5 P {:.3} R {:.3}",
        r.recall_at_floor, r.threshold_at_floor, r.asteroid.precision, r.asteroid.recall
    );
    let mut called = BTreeMap::<&str, (usize, usize)>::new();
    let mut csv = String::from("id,kind,label,score\n");
    let test = m
        .splits
        .get("test")
        .map(|s| s.examples.as_slice())
        .unwrap_or(&[]);
    for (i, ex) in test.iter().enumerate().take(sc.len()) {
        let c = called.entry(ex.kind.as_str()).or_default();
        c.0 += 1;
        c.1 += (sc[i] as f64 >= r.threshold_at_floor) as usize;
        csv += &format!("{},{},{},{}\n", ex.id, ex.kind, ex.label, sc[i]);
    }
    println!("(stacks, called asteroid) by kind at that threshold: {called:?}");
    let path = out.join("scores.csv");
    std::fs::write(&path, csv).map_err(|err| format!("{}: {err}", path.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
