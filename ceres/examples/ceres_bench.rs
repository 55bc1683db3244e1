//! Speed of a CERES model on CPU, inference and training, for `bench/ceres.sh`:
//!
//! `ceres_bench [MODEL_DIR|-] [N] [--input FILE] [--train-steps K] [--batch B] [--dump DIR]`
//!
//! scores N stacks (default 4096) in batches of 256 and prints stacks per second, then times K
//! training steps (default 20; forward, weighted BCE, backward, AdamW) on batches of B
//! (default 64). Without a model directory it times the default network (4 exposures of
//! 32x32 with 64x64 px of context, width 8, 3 stages of 1 block) with fresh weights: the speed
//! does not depend on the weights. The stacks are read from FILE (little-endian f32, N x
//! channels x side x side) or
//! drawn at random (seed 1). With `--dump DIR` it writes the weights it scored with
//! (`DIR/weights.safetensors`), the inputs (`DIR/inputs.f32`) and the scores
//! (`DIR/scores.f32`), so that `bench/ceres_torch.py` runs the very same network on the very
//! same stacks and checks that the scores agree. Threads: RAYON_NUM_THREADS.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use nearby_ceres::model::{load_model, Ceres, ModelConfig};
use nearby_ceres::train::{self, Adam};
use rand::{Rng, SeedableRng};

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("error: {what}");
    std::process::exit(2);
}

struct Args {
    model: Option<PathBuf>,
    n: usize,
    input: Option<PathBuf>,
    train_steps: usize,
    batch: usize,
    dump: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        model: None,
        n: 4096,
        input: None,
        train_steps: 20,
        batch: 64,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    let mut positional = 0;
    while let Some(s) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| fail(format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| fail(format!("{name}: `{v}` is not a count")))
        };
        match s.as_str() {
            "--input" => a.input = Some(value("--input").into()),
            "--dump" => a.dump = Some(value("--dump").into()),
            "--train-steps" => a.train_steps = number("--train-steps", value("--train-steps")),
            "--batch" => a.batch = number("--batch", value("--batch")).max(1),
            _ if positional == 0 => {
                positional += 1;
                if !s.is_empty() && s != "-" {
                    a.model = Some(s.into());
                }
            }
            _ if positional == 1 => {
                positional += 1;
                a.n = number("N", s).max(1);
            }
            _ => fail(format!("unexpected argument `{s}`")),
        }
    }
    a
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
}

fn main() {
    let a = args();
    let dev = Device::Cpu;
    let net = match &a.model {
        Some(dir) => load_model(dir, &dev).unwrap_or_else(|e| fail(e)).0,
        None => {
            let c = ModelConfig {
                exposures: 4,
                cutout_px: 32,
                width: 8,
                stages: 3,
                blocks_per_stage: 1,
                context_px: 64,
            };
            Ceres::new(&c, &dev, 1)
                .unwrap_or_else(|e| fail(format!("cannot build the default network: {e}")))
        }
    };
    let c = net.config.clone();
    let len = c.channels() * c.cutout_px * c.cutout_px;
    let x: Vec<f32> = match &a.input {
        Some(p) => {
            let b = std::fs::read(p).unwrap_or_else(|e| fail(format!("{}: {e}", p.display())));
            if b.len() != a.n * len * 4 {
                fail(format!(
                    "{}: {} bytes, expected {} stacks of {len} f32 = {}",
                    p.display(),
                    b.len(),
                    a.n,
                    a.n * len * 4
                ));
            }
            b.chunks_exact(4)
                .map(|q| f32::from_le_bytes([q[0], q[1], q[2], q[3]]))
                .collect()
        }
        None => {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            (0..a.n * len).map(|_| r.random::<f32>() - 0.5).collect()
        }
    };
    let threads = rayon::current_num_threads();
    let n = a.n;
    let bs = 256;
    // Warm up once.
    let _ = net.scores(&x[..bs.min(n) * len], bs.min(n), &dev);
    let t0 = Instant::now();
    let mut scores = Vec::with_capacity(n);
    for start in (0..n).step_by(bs) {
        let k = bs.min(n - start);
        match net.scores(&x[start * len..(start + k) * len], k, &dev) {
            Ok(s) => scores.extend(s),
            Err(e) => fail(format!("scoring stacks {start}..{}: {e}", start + k)),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "candle inference: {} ({threads} threads): {n} stacks in {secs:.3} s = {:.0} stacks/s (mean score {:.3})",
        nearby_ceres::model::describe(&c),
        n as f64 / secs,
        scores.iter().map(|v| *v as f64).sum::<f64>() / n as f64
    );
    if let Some(d) = &a.dump {
        std::fs::create_dir_all(d).unwrap_or_else(|e| fail(format!("{}: {e}", d.display())));
        net.save(&d.join("weights.safetensors"))
            .unwrap_or_else(|e| fail(e));
        write_f32(&d.join("inputs.f32"), &x);
        write_f32(&d.join("scores.f32"), &scores);
    }
    if a.train_steps == 0 {
        return;
    }
    // Training steps on the first batches of the same stacks, half labelled asteroids.
    let b = a.batch.min(n);
    let s = c.cutout_px;
    let vars = net.vars();
    let mut adam = Adam::new(&vars).unwrap_or_else(|e| fail(e));
    let xt = Tensor::from_slice(&x[..b * len], (b, c.channels(), s, s), &dev)
        .unwrap_or_else(|e| fail(e));
    let y: Vec<f32> = (0..b).map(|i| (i % 2) as f32).collect();
    let yt = Tensor::from_vec(y, b, &dev).unwrap_or_else(|e| fail(e));
    let wt = Tensor::ones(b, candle_core::DType::F32, &dev).unwrap_or_else(|e| fail(e));
    let run = |adam: &mut Adam, t: u64| {
        train::step(&net, &vars, adam, &xt, &yt, &wt, 1e-3, 1e-4, t).unwrap_or_else(|e| fail(e))
    };
    run(&mut adam, 1);
    let t0 = Instant::now();
    let mut last = 0.0;
    for t in 0..a.train_steps {
        last = run(&mut adam, t as u64 + 2);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "candle training: {} steps of {b} stacks ({threads} threads) in {secs:.3} s = {:.0} stacks/s, {:.1} ms/step (last loss {last:.4})",
        a.train_steps,
        (a.train_steps * b) as f64 / secs,
        secs * 1e3 / a.train_steps as f64
    );
}
