//! Extraction speed on a synthetic 1024 x 1024 star field (about 1000 stars), one thread and all
//! threads, plus the background alone.
//!
//! `CARGO_TARGET_DIR=/work/targets/extract cargo bench -p nearby-tasks --bench extract`
//! For the comparison with SExtractor on real frames see bench/extract_vs_sextractor.sh.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nearby_tasks::extract::{background, extract, ExtractConfig, Image};
use std::time::Duration;

const N: usize = 1024;

/// Gaussian stars (sigma 1.3 px) on a 32 px grid over a sky of 200 +- 10 ADU, deterministic.
fn field() -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut img = vec![0.0f64; N * N];
    let sig = 1.3f64;
    for gy in 0..N / 32 {
        for gx in 0..N / 32 {
            let (cx, cy) = (
                (gx * 32 + 16) as f64 + u() - 0.5,
                (gy * 32 + 16) as f64 + u() - 0.5,
            );
            let flux = 300.0 * (u() * 6.0).exp();
            for y in (cy as usize - 8)..(cy as usize + 9) {
                for x in (cx as usize - 8)..(cx as usize + 9) {
                    let r2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                    img[y * N + x] += flux / (2.0 * std::f64::consts::PI * sig * sig)
                        * (-r2 / (2.0 * sig * sig)).exp();
                }
            }
        }
    }
    img.iter()
        .map(|v| {
            // Irwin-Hall approximation of a unit Gaussian.
            let g: f64 = (0..12).map(|_| u()).sum::<f64>() - 6.0;
            (200.0 + v + 10.0 * g) as f32
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = field();
    let img = Image::new(&data, N, N);
    let cfg = ExtractConfig::default();
    let mut g = c.benchmark_group("extract");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes((N * N * 4) as u64));
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    g.bench_function("field_1024_1thread", |b| {
        b.iter(|| one.install(|| extract(black_box(&img), &cfg)))
    });
    g.bench_function("field_1024_all_threads", |b| {
        b.iter(|| extract(black_box(&img), &cfg))
    });
    g.bench_function("background_1024_1thread", |b| {
        b.iter(|| one.install(|| background(black_box(&img), &cfg)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
