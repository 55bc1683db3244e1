//! Ephemeris speed: one object's position at one time, n-body vs two-body, over a month and a
//! year from the elements' epoch (the 14 Horizons test orbits in turn). Needs DE421
//! (`.ci/fetch-de421.sh`, or NEARBY_SPK). `cargo bench -p nearby-tasks --bench ephem`

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use nearby_tasks::ephem::{elements, observer, predict, Instant, Propagation, Spk};

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spk_path = std::env::var_os("NEARBY_SPK")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.cache/de421.bsp"));
    let spk = Spk::open(&spk_path)
        .unwrap_or_else(|e| panic!("{e}: run .ci/fetch-de421.sh or set NEARBY_SPK"));
    let text =
        std::fs::read_to_string(root.join("tests/data/ephem/horizons_objects.mpcorb")).unwrap();
    let objects = elements::parse_mpcorb("mpcorb", &text).elements;
    let site =
        observer::parse_obscodes("builtin", observer::BUILTIN_OBSCODES).unwrap()["950"].clone();
    let mut group = c.benchmark_group("ephem_one_object_one_time");
    group.sample_size(20);
    for (label, days, propagation) in [
        ("nbody_30d", 30.0, Propagation::NBody),
        ("nbody_365d", 365.0, Propagation::NBody),
        ("twobody_365d", 365.0, Propagation::TwoBody),
    ] {
        let mut i = 0;
        group.bench_function(label, |b| {
            b.iter(|| {
                let e = &objects[i % objects.len()];
                i += 1;
                let t = Instant::from_tdb_mjd(e.epoch_mjd + days);
                predict(&spk, e, &site, &[t], propagation).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
