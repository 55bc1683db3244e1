//! Inference speed of a CERES model on CPU: `cargo run --release -p nearby-ceres --example
//! ceres_bench -- [MODEL_DIR] [N]` scores N random stacks (default 4096) in batches of 256
//! and prints stacks per second. Without a model directory it times the default network
//! (4 exposures of 32x32, width 8, 3 stages of 1 block) with fresh weights: the speed does not
//! depend on the weights. bench/ceres.sh pins it to 2 cores.

use std::time::Instant;

use candle_core::Device;
use nearby_ceres::model::{load_model, Ceres, ModelConfig};
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = Device::Cpu;
    let net = match args.first().filter(|a| !a.is_empty() && *a != "-") {
        Some(dir) => match load_model(std::path::Path::new(dir), &dev) {
            Ok((n, _)) => n,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        None => {
            let c = ModelConfig {
                exposures: 4,
                cutout_px: 32,
                width: 8,
                stages: 3,
                blocks_per_stage: 1,
            };
            match Ceres::new(&c, &dev, 1) {
                Ok(net) => net,
                Err(e) => {
                    eprintln!("error: cannot build the default network: {e}");
                    std::process::exit(2);
                }
            }
        }
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let c = net.config.clone();
    let len = c.exposures * c.cutout_px * c.cutout_px;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..n * len).map(|_| r.random::<f32>() - 0.5).collect();
    let bs = 256;
    // Warm up once.
    let _ = net.scores(&x[..bs.min(n) * len], bs.min(n), &dev);
    let t0 = Instant::now();
    let mut total = 0.0f64;
    for start in (0..n).step_by(bs) {
        let k = bs.min(n - start);
        let s = match net.scores(&x[start * len..(start + k) * len], k, &dev) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: scoring stacks {start}..{}: {e}", start + k);
                std::process::exit(2);
            }
        };
        total += s.iter().map(|v| *v as f64).sum::<f64>();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "ceres inference: {} ({} threads): {n} stacks in {secs:.3} s = {:.0} stacks/s (mean score {:.3})",
        nearby_ceres::model::describe(&c),
        rayon::current_num_threads(),
        n as f64 / secs,
        total / n as f64
    );
}
