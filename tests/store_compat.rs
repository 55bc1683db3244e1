//! Old state must keep loading: a store written by schema 1 (tests/fixtures/store-v1) opens (and
//! migrates: cache entries move to schema 3's task keys), its records decode, the CLI reads it, and new runs can be added to it.

mod common;

use common::Nearby;

const OLD_RUNS: [&str; 2] = ["20261127-152143-713-de76", "20261127-152143-793-5280"];

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A temporary workdir holding a copy of `tests/fixtures/NAME/state`, and the fixture's path.
fn with_fixture(name: &str) -> (Nearby, std::path::PathBuf) {
    let n = Nearby::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy_dir(&fixture.join("state"), &n.workdir().join("state"));
    (n, fixture)
}

#[test]
fn the_schema_1_store_still_opens_and_reads() {
    let (n, fixture) = with_fixture("store-v1");

    let store = nearby_engine::store::Store::open(&n.workdir()).expect("schema 1 store opens");
    assert_eq!(
        store.schema().unwrap(),
        nearby_engine::store::SCHEMA,
        "opening migrates schema 1 to the current schema"
    );
    let runs = store.runs().expect("run records decode");
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        OLD_RUNS
    );
    assert_eq!(runs[0].counts["succeeded"], 5);
    let instances = store
        .instances(OLD_RUNS[1])
        .expect("instance records decode");
    assert_eq!(instances.len(), 7);
    assert_eq!(
        store.cache_entries().expect("cache entries decode").len(),
        5
    );
    drop(store);

    let listed = n.run(&["runs"]);
    assert_eq!(listed.code, 0);
    assert!(listed.stdout.contains(OLD_RUNS[0]) && listed.stdout.contains(OLD_RUNS[1]));
    let status = n.status(OLD_RUNS[0]);
    assert_eq!(
        common::instance(&status, "calibrate[f3]")["state"],
        "failed"
    );
    assert_eq!(common::instance(&status, "extract[f3]")["state"], "skipped");
    let explain = n.run(&["cache", "explain", OLD_RUNS[1], "calibrate"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);
    assert!(
        explain
            .stdout
            .contains("since run 20261127-152143-713-de76: key unchanged"),
        "{}",
        explain.stdout
    );

    // The old store takes new runs (the old outputs are not on this machine: cache misses).
    let p = n.write(
        "fixture.yaml",
        &std::fs::read_to_string(fixture.join("fixture.yaml")).unwrap(),
    );
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1, "f3 fails by design: {}", r.stderr);
    assert_eq!(n.run(&["runs"]).stdout.lines().count(), 4);
}

/// Schema 4 wrote outputs as text; schema 5 packs them (raw hash, path relative to `out/`). The
/// old text must read back exactly, and the new runs beside it must too.
#[test]
fn the_schema_4_store_still_opens_and_its_outputs_read_back_as_written() {
    let runs = ["20261128-121023-941-9703", "20261128-121023-979-3153"];
    an_old_store_reads_back("store-v4", runs, Some("/tmp/fx4/w/out/"));
}

/// Schema 5 wrote record groups as they are; schema 6 compresses them. Its outputs are named
/// relative to the workdir's `out/`: they read back under the workdir it is in now.
#[test]
fn the_schema_5_store_still_opens_and_its_records_read_back_as_written() {
    let runs = ["20261128-134857-254-26ec", "20261128-134857-284-e56c"];
    an_old_store_reads_back("store-v5", runs, None);
}

/// The store `name`, written by two runs of its `fixture.yaml`, opens, reads back as written,
/// and takes new runs that read back too. `old_out`: where its outputs were recorded when they
/// were recorded as absolute paths.
fn an_old_store_reads_back(name: &str, old_runs: [&str; 2], old_out: Option<&str>) {
    let (n, fixture) = with_fixture(name);
    let here = std::path::absolute(n.workdir().join("out")).unwrap();
    let old_out = old_out.map_or_else(|| format!("{}/", here.display()), str::to_owned);
    let old_out = old_out.as_str();

    let store = nearby_engine::store::Store::open(&n.workdir()).expect("old store opens");
    assert_eq!(store.schema().unwrap(), nearby_engine::store::SCHEMA);
    let runs = store.runs().expect("run records decode");
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        old_runs
    );
    let entries = store.cache_entries().expect("cache entries decode");
    assert_eq!(entries.len(), 5);
    for e in &entries {
        for o in &e.outputs {
            assert!(o.path.starts_with(old_out), "{}", o.path);
            assert_eq!(o.hash.to_string().len(), 64);
        }
    }
    // The cached instances of the second run name their outputs as the first run recorded them.
    let records = store
        .instances(old_runs[1])
        .expect("instance records decode");
    let f1 = records.iter().find(|r| r.id == "calibrate[f1]").unwrap();
    assert_eq!(f1.state, nearby_engine::store::State::Cached);
    assert_eq!(
        f1.outputs[0].path,
        format!("{old_out}calibrate/f1/frame.txt")
    );
    // blake3 of "f1\n", the file the command wrote.
    assert_eq!(
        f1.outputs[0].hash.to_string(),
        blake3::hash(b"f1\n").to_hex().as_str()
    );
    drop(store);
    let status = n.status(old_runs[1]);
    assert_eq!(
        common::instance(&status, "calibrate[f1]")["outputs"]["frame"],
        format!("{old_out}calibrate/f1/frame.txt").as_str()
    );
    let explain = n.run(&["cache", "explain", old_runs[1], "calibrate"]);
    assert_eq!(explain.code, 0, "{}", explain.stderr);

    // New runs (the old outputs are not here: misses, then hits) record packed outputs that
    // read back as absolute paths under this workdir.
    let p = n.write(
        "fixture.yaml",
        &std::fs::read_to_string(fixture.join("fixture.yaml")).unwrap(),
    );
    let first = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(first.code, 1, "f3 fails by design: {}", first.stderr);
    let second = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert!(
        second.stderr.contains("0 ran, 5 cached"),
        "{}",
        second.stderr
    );
    let run = second.stdout.trim().to_owned();
    let workdir = std::fs::canonicalize(n.workdir()).unwrap();
    let store = nearby_engine::store::Store::open(&workdir).unwrap();
    let records = store.instances(&run).unwrap();
    let f2 = records.iter().find(|r| r.id == "calibrate[f2]").unwrap();
    assert_eq!(f2.state, nearby_engine::store::State::Cached);
    let path = std::path::Path::new(&f2.outputs[0].path);
    assert_eq!(path, workdir.join("out/calibrate/f2/frame.txt"));
    assert_eq!(std::fs::read_to_string(path).unwrap(), "f2\n");
    assert_eq!(
        f2.outputs[0].hash.to_string(),
        blake3::hash(b"f2\n").to_hex().as_str()
    );
    // The first run's 5 entries (which replaced the old ones with the same keys).
    let entries = store.cache_entries().unwrap();
    let made: Vec<_> = entries
        .iter()
        .filter(|e| e.run == first.stdout.trim())
        .collect();
    assert_eq!(made.len(), 5);
    for o in made.iter().flat_map(|e| &e.outputs) {
        assert!(std::path::Path::new(&o.path).starts_with(workdir.join("out")));
        assert_eq!(
            o.hash.to_string(),
            blake3::hash(&std::fs::read(&o.path).unwrap())
                .to_hex()
                .as_str()
        );
    }
    drop(store);
    assert_eq!(n.run(&["runs"]).stdout.lines().count(), 5);
}
