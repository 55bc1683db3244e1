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

#[test]
fn the_schema_1_store_still_opens_and_reads() {
    let n = Nearby::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    copy_dir(&fixture.join("state"), &n.workdir().join("state"));

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
