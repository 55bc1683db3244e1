//! Linking speed at the load: 10^4 transient candidates in one field and CCD (an INT WFC
//! CCD, 676" x 1353", 5 exposures 2.77 min apart, 120 s each): random noise detections (round,
//! near the detection limit, 0.3" errors) plus 100 linear movers (rates log-uniform 0.3 to
//! 60 "/min, trails as long as the motion during the exposure). Prints completeness (movers with
//! >= 3 detections that one pure tracklet holds) and purity once, then times `link`.
//!
//! `cargo bench -p nearby-tasks --bench link`

use criterion::{criterion_group, criterion_main, Criterion};
use nearby_tasks::link::{link, Detection, Exposure, LinkConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const WIDTH: f64 = 676.0;
const HEIGHT: f64 = 1353.0;

/// Detections, and which mover each belongs to (None for noise).
fn scene(n_total: usize, n_movers: usize) -> (Vec<Exposure>, Vec<Detection>, Vec<Option<usize>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(2014);
    let exps: Vec<Exposure> = (0..5)
        .map(|e| Exposure {
            t_min: 2.77 * e as f64,
            exptime_min: 2.0,
        })
        .collect();
    let (mut dets, mut truth) = (Vec::new(), Vec::new());
    for m in 0..n_movers {
        let rate = 0.3 * 200f64.powf(rng.random::<f64>());
        let pa: f64 = rng.random_range(0.0..360.0);
        let (x0, y0) = (rng.random_range(0.0..WIDTH), rng.random_range(0.0..HEIGHT));
        let mag = rng.random_range(18.0..22.0);
        let sigma = 0.1 + 0.1 * (mag - 18.0);
        let n = Normal::new(0.0, sigma).expect("finite sigma");
        for (e, x) in exps.iter().enumerate() {
            let (s, c) = pa.to_radians().sin_cos();
            let (xi, eta) = (
                x0 + rate * x.t_min * s + n.sample(&mut rng),
                y0 + rate * x.t_min * c + n.sample(&mut rng),
            );
            if (0.0..WIDTH).contains(&xi) && (0.0..HEIGHT).contains(&eta) {
                dets.push(Detection {
                    exposure: e,
                    xi,
                    eta,
                    sigma_arcsec: sigma,
                    mag: mag + 0.1 * n.sample(&mut rng) / sigma,
                    magerr: 0.1,
                    trail_arcsec: rate * x.exptime_min,
                    axis_pa_deg: pa.rem_euclid(180.0),
                    truncated: false,
                });
                truth.push(Some(m));
            }
        }
    }
    while dets.len() < n_total {
        dets.push(Detection {
            exposure: rng.random_range(0..exps.len()),
            xi: rng.random_range(0.0..WIDTH),
            eta: rng.random_range(0.0..HEIGHT),
            sigma_arcsec: 0.3,
            mag: rng.random_range(21.5..23.0),
            magerr: 0.25,
            trail_arcsec: rng.random_range(0.0..1.5),
            axis_pa_deg: rng.random_range(0.0..180.0),
            truncated: false,
        });
        truth.push(None);
    }
    (exps, dets, truth)
}

fn bench(c: &mut Criterion) {
    let (exps, dets, truth) = scene(10_000, 100);
    let cfg = LinkConfig::default();
    let found = link(&exps, &dets, &cfg);
    let mut count = [0usize; 100];
    for m in truth.iter().flatten() {
        count[*m] += 1;
    }
    let mut hit = [false; 100];
    let mut pure = 0;
    for t in &found {
        let first = truth[t.detections[0]];
        if first.is_some() && t.detections.iter().all(|&i| truth[i] == first) {
            pure += 1;
            hit[first.unwrap_or(0)] = true;
        }
    }
    let linkable = (0..100).filter(|&m| count[m] >= 3).count();
    let linked = (0..100).filter(|&m| count[m] >= 3 && hit[m]).count();
    eprintln!(
        "10^4 candidates: completeness {linked}/{linkable}, purity {pure}/{} tracklets",
        found.len()
    );
    c.bench_function("link 10^4 candidates (5 exposures, one CCD)", |b| {
        b.iter(|| link(&exps, &dets, &cfg))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
