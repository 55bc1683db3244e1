//! kill -9 in the middle of a 1,001-task run, five times, then resume: from the store, prove that
//! no task recorded as succeeded ran again, that every output is intact, and that the run
//! completes.
//!
//! Each task appends its item to a ledger (O_APPEND) before writing its output, so the ledger
//! records every execution. After each kill the test reads the store (as `nearby` left it) and
//! notes which instances it records as succeeded and how long the ledger is; no later ledger line
//! may name one of those instances.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Nearby;
use nearby_engine::store::{State, Store};

const N: usize = 1000;

fn pipeline() -> String {
    format!(
        r#"
name: kill9
tasks:
  work:
    uses: command
    foreach: {{range: {N}}}
    with:
      argv: [sh, -c, 'echo "$1" >> "$2"; sleep 0.01; echo "item $1" > "$3"', sh, "${{item}}", "{{dir}}/ledger", "${{outputs.o}}"]
    outputs: {{o: o.txt}}
  gather:
    uses: noop
    inputs: {{all: work.o}}
    outputs: {{list: list.txt}}
"#
    )
}

/// A small deterministic generator (no dependency): kill delays differ per round.
fn delays(seed: u64, n: usize) -> Vec<Duration> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(100 + x % 400)
        })
        .collect()
}

fn succeeded_in_store(workdir: &std::path::Path, run: &str) -> BTreeSet<String> {
    let store = Store::open(workdir).expect("the store opens after kill -9");
    store
        .instances(run)
        .expect("records decode after kill -9")
        .into_iter()
        .filter(|r| r.state == State::Succeeded)
        .map(|r| r.id)
        .collect()
}

fn ledger(n: &Nearby) -> Vec<String> {
    std::fs::read_to_string(n.path("ledger"))
        .unwrap_or_default()
        .lines()
        .map(|l| format!("work[{l}]"))
        .collect()
}

#[test]
fn kill_dash_nine_then_resume_never_redoes_finished_work() {
    let n = Nearby::new();
    let p = n.write("kill9.yaml", &pipeline());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill delays from seed {seed}");
    let mut run = String::new();
    // (ledger length at the kill, instances the store said had succeeded)
    let mut checkpoints: Vec<(usize, BTreeSet<String>)> = Vec::new();
    // Kill until five kills have landed in the middle of the run (at most 20 rounds). Each task
    // sleeps 10 ms, so a run lasts seconds even on a fast, idle machine.
    let mut mid_run_kills = 0;
    for (round, delay) in delays(seed, 20).into_iter().enumerate() {
        if mid_run_kills == 5 {
            break;
        }
        let mut cmd = if round == 0 {
            n.command(&["run", p.to_str().unwrap(), "-q", "-j", "2"])
        } else {
            n.command(&["resume", &run, "-q", "-j", "2"])
        };
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if round == 0 {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            run = line.trim().to_owned();
        }
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Tasks left running by the killed process finish their ledger line quickly.
        std::thread::sleep(Duration::from_millis(100));
        let done = succeeded_in_store(&n.workdir(), &run);
        eprintln!(
            "round {round}: killed after {delay:?}, {} recorded as succeeded",
            done.len()
        );
        if done.len() < N + 1 {
            mid_run_kills += 1;
        }
        checkpoints.push((ledger(&n).len(), done));
    }
    let last = n.run(&["resume", &run, "-q"]);
    assert_eq!(last.code, 0, "{}", last.stderr);

    let lines = ledger(&n);
    for (k, (at, done)) in checkpoints.iter().enumerate() {
        let again: Vec<&String> = lines[*at..]
            .iter()
            .filter(|id| done.contains(*id))
            .collect();
        assert!(
            again.is_empty(),
            "after kill {k}, tasks recorded as succeeded ran again: {again:?}"
        );
    }
    assert_eq!(
        mid_run_kills, 5,
        "fewer than five kills landed before the end of the run"
    );
    assert!(
        checkpoints.iter().any(|(_, d)| !d.is_empty()),
        "no kill happened after a task succeeded: the test proved nothing"
    );

    // The run completed, with every output intact.
    let store = Store::open(&n.workdir()).unwrap();
    let rec = store.get_run(&run).unwrap().unwrap();
    assert_eq!(rec.state, "succeeded");
    let instances = store.instances(&run).unwrap();
    assert_eq!(instances.len(), N + 1);
    let mut by_item: BTreeMap<String, usize> = BTreeMap::new();
    for i in &instances {
        assert!(i.state.is_done_ok(), "{} ended {:?}", i.id, i.state);
        nearby_engine::cache::check_outputs(&i.outputs).unwrap_or_else(|e| panic!("{}: {e}", i.id));
        if let Some(item) = &i.item {
            let text = std::fs::read_to_string(&i.outputs[0].path).unwrap();
            assert_eq!(text, format!("item {item}\n"));
            *by_item.entry(item.clone()).or_default() += 1;
        }
    }
    assert_eq!(by_item.len(), N);
    let gathered = std::fs::read_to_string(n.workdir().join("out/gather/list.txt")).unwrap();
    assert_eq!(
        gathered.lines().filter(|l| l.starts_with("all ")).count(),
        N
    );
    // Every item ran at least once; reruns happen only for work the store never recorded.
    let ran: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(ran.len(), N);
}
