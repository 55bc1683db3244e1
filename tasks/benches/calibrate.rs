//! Calibration throughput in bytes of raw `f32` pixels per second.
//!
//! `CARGO_TARGET_DIR=/work/targets/extract cargo bench -p nearby-tasks --bench calibrate`
//! Criterion prints `thrpt` in MiB/s or GiB/s of raw pixels (4 bytes each); the target is
//! >= 500 MB/s for overscan + apply on a 2k x 4k frame.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nearby_tasks::calibrate::{self, Combine, Detector, OverscanOptions, RowScratch, RowStats};
use nearby_tasks::fits::Pixels;
use rayon::prelude::*;
use std::time::Duration;

const W: usize = 2080; // 2048 data columns + 32 overscan
const H: usize = 4100;

fn frame(seed: u32, level: f32) -> Vec<f32> {
    // Cheap deterministic texture (an LCG): the kernels do not branch on the values.
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..W * H)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            level + (s >> 20) as f32 * 0.01
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let raw = frame(1, 1000.0);
    let biassec = calibrate::parse_section("[2049:2080,1:4100]").unwrap();
    let trimsec = calibrate::parse_section("[1:2048,1:4100]").unwrap();
    let (tw, th) = (trimsec.width(), trimsec.height());
    let bias = vec![0.5f32; tw * th];
    let flat: Vec<f32> = (0..tw * th)
        .map(|i| 0.9 + 0.2 * ((i % tw) as f32 / tw as f32))
        .collect();
    let det = Detector::new(1.5, 5.0, 60_000.0);

    let mut g = c.benchmark_group("calibrate");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes((W * H * 4) as u64));
    g.bench_function("overscan_2080x4100", |b| {
        b.iter(|| {
            calibrate::overscan_correct(
                black_box(&raw),
                W,
                H,
                biassec,
                trimsec,
                OverscanOptions::default(),
            )
            .unwrap()
        })
    });
    let (trimmed, _, _) =
        calibrate::overscan_correct(&raw, W, H, biassec, trimsec, OverscanOptions::default())
            .unwrap();
    g.throughput(Throughput::Bytes((tw * th * 4) as u64));
    g.bench_function("apply_2048x4100", |b| {
        b.iter(|| calibrate::apply(black_box(&trimmed), &bias, &flat, &det, None).unwrap())
    });
    let mut reused = calibrate::Calibrated {
        science: Vec::new(),
        weight: Vec::new(),
        mask: Vec::new(),
    };
    g.bench_function("apply_into_reused_2048x4100", |b| {
        b.iter(|| {
            calibrate::apply_into(black_box(&trimmed), &bias, &flat, &det, None, &mut reused)
                .unwrap()
        })
    });
    g.throughput(Throughput::Bytes((W * H * 4) as u64));
    g.bench_function("overscan_then_apply_2080x4100", |b| {
        b.iter(|| {
            let (t, _, _) = calibrate::overscan_correct(
                black_box(&raw),
                W,
                H,
                biassec,
                trimsec,
                OverscanOptions::default(),
            )
            .unwrap();
            calibrate::apply(&t, &bias, &flat, &det, None).unwrap()
        })
    });
    let mut trimmed2 = Vec::new();
    g.bench_function("overscan_then_apply_reused_2080x4100", |b| {
        b.iter(|| {
            calibrate::overscan_correct_into(
                black_box(&raw),
                W,
                H,
                biassec,
                trimsec,
                OverscanOptions::default(),
                &mut trimmed2,
            )
            .unwrap();
            calibrate::apply_into(&trimmed2, &bias, &flat, &det, None, &mut reused).unwrap()
        })
    });
    // What the calibrate task runs: overscan levels, then one pass over blocks of 32 rows from
    // the pixels as FITS stores them (raw int16 + BZERO, masters float32, big-endian) into
    // block buffers of stored float32 reused by each thread.
    let stored_raw: Vec<u8> = raw
        .iter()
        .flat_map(|v| ((*v as u16 ^ 0x8000) as i16).to_be_bytes())
        .collect();
    let stored = |v: &[f32]| v.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    let (stored_bias, stored_flat) = (stored(&bias), stored(&flat));
    fn pixels(bytes: &[u8], bitpix: i64, bzero: f64) -> Pixels<'_> {
        Pixels::Stored {
            bytes,
            bitpix,
            bscale: 1.0,
            bzero,
        }
    }
    g.bench_function("single_pass_stored_2080x4100", |b| {
        b.iter(|| {
            let raw = pixels(black_box(&stored_raw), 16, 32768.0);
            let levels = calibrate::overscan_levels(
                &raw,
                W,
                H,
                biassec,
                trimsec,
                OverscanOptions::default(),
            )
            .unwrap();
            let ccd = calibrate::Ccd::new(
                raw,
                W,
                trimsec,
                &levels,
                pixels(&stored_bias, -32, 0.0),
                pixels(&stored_flat, -32, 0.0),
                None,
            )
            .unwrap();
            (0..th.div_ceil(32))
                .into_par_iter()
                .map_init(
                    || {
                        (
                            RowScratch::default(),
                            vec![0u8; 4 * 32 * tw],
                            vec![0u8; 4 * 32 * tw],
                        )
                    },
                    |(s, sci, wt), k| {
                        let rows = k * 32..((k + 1) * 32).min(th);
                        let n = 4 * rows.len() * tw;
                        ccd.calibrate_rows(&det, rows, s, &mut sci[..n], &mut wt[..n])
                    },
                )
                .reduce(|| RowStats::NONE, RowStats::merge)
        })
    });
    g.finish();

    // Master frames: 9 frames of 1024 x 1024, throughput in input bytes.
    let n = 1024 * 1024;
    let stack: Vec<Vec<f32>> = (0..9).map(|k| frame(k + 7, 300.0)[..n].to_vec()).collect();
    let refs: Vec<&[f32]> = stack.iter().map(|f| f.as_slice()).collect();
    let mut g = c.benchmark_group("combine");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes((9 * n * 4) as u64));
    g.bench_function("median_9x1Mpix", |b| {
        b.iter(|| calibrate::combine(black_box(&refs), Combine::Median).unwrap())
    });
    g.bench_function("sigclip_9x1Mpix", |b| {
        b.iter(|| {
            calibrate::combine(black_box(&refs), Combine::SigmaClippedMean { sigma: 3.0 }).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
