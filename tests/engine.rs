//! The engine through the real binary: caching, retries, timeouts, partial failure, rerun,
//! cancellation, injection, status, logs and `cache explain`.

mod common;

use std::time::Duration;

use common::{instance, states, Nearby, Ran};

const NIGHT: &str = r#"
name: night
params:
  frames: {type: list, default: [a, b, c]}
  scale: 2
tasks:
  list:
    uses: command
    with:
      argv: [printf, "%s\n", "${params.frames}"]
      stdout: out
    outputs: {out: frames.txt}
  calibrate:
    uses: command
    foreach: {from: list.out}
    with:
      argv: [sh, -c, 'echo "$1 x $2" > "$3"', sh, "${item}", "${params.scale}", "${outputs.frame}"]
    outputs: {frame: frame.txt}
  extract:
    uses: noop
    foreach: {from: calibrate.frame}
    inputs: {frame: calibrate.frame}
    outputs: {catalog: cat.txt}
  report:
    uses: command
    inputs: {cats: extract.catalog}
    with:
      argv: [cat, "${inputs.cats}"]
      stdout: report
    outputs: {report: report.txt}
"#;

#[test]
fn second_run_has_nothing_to_do_and_plan_says_why() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT);
    let p = p.to_str().unwrap();
    let first = n.run(&["run", p, "-q"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let s = n.status(&first.run_id);
    assert_eq!(s["run"]["state"], "succeeded");
    let st = states(&s);
    assert_eq!(st.len(), 1 + 3 + 3 + 1, "{st:?}");
    assert!(st.values().all(|v| v == "succeeded"), "{st:?}");
    let report = std::fs::read_to_string(n.workdir().join("out/report/report.txt")).unwrap();
    assert_eq!(
        report.lines().filter(|l| l.contains("frame.txt")).count(),
        3,
        "{report}"
    );

    let second = n.run(&["run", p, "-q"]);
    assert_eq!(second.code, 0);
    assert!(states(&n.status(&second.run_id))
        .values()
        .all(|v| v == "cached"));

    let plan = n.output(&["plan", p]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("0 to run, 8 cached"), "{text}");

    // A changed param reruns what depends on it, and plan says why.
    let plan = n.output(&["plan", p, "--set", "scale=3"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("cached list "), "{text}");
    assert!(text.contains("run    calibrate[a]"), "{text}");
    assert!(text.contains("upstream `calibrate[a]` will run"), "{text}");
    let third = n.run(&["run", p, "-q", "--set", "scale=3"]);
    let st = states(&n.status(&third.run_id));
    assert_eq!(st["list"], "cached");
    assert_eq!(st["calibrate[b]"], "succeeded", "{st:?}");
    // extract's catalog lists its input's path, not its content: unchanged, so the report is
    // still valid (the cache cuts off at unchanged content).
    assert_eq!(st["extract[b]"], "succeeded");
    assert_eq!(st["report"], "cached");

    // cache explain names the param that changed.
    let ex = n.output(&["cache", "explain", &third.run_id, "calibrate[a]"]);
    let text = String::from_utf8_lossy(&ex.stdout);
    assert!(text.contains("param `argv` changed"), "{text}");
    assert!(text.contains("fingerprint: "), "{text}");
}

#[test]
fn a_changed_output_is_a_miss() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT);
    let p = p.to_str().unwrap();
    assert_eq!(n.run(&["run", p, "-q"]).code, 0);
    std::fs::write(n.workdir().join("out/calibrate/b/frame.txt"), "tampered\n").unwrap();
    let again = n.run(&["run", p, "-q"]);
    let s = n.status(&again.run_id);
    let st = states(&s);
    assert_eq!(st["calibrate[b]"], "succeeded", "{st:?}");
    assert_eq!(st["calibrate[a]"], "cached");
    assert!(
        instance(&s, "calibrate[b]")["cache"]
            .as_str()
            .unwrap()
            .contains("was changed"),
        "{s:#}"
    );
    assert_eq!(
        std::fs::read_to_string(n.workdir().join("out/calibrate/b/frame.txt")).unwrap(),
        "b x 2\n"
    );
}

/// Outputs are recorded relative to the workdir's `out/` (store schema 5): a workdir moved as a
/// whole keeps the cache of tasks whose keys name no path in it, and the records name the
/// outputs where they now are. (A fan-out over output files, as in `NIGHT`, has their paths as
/// items: those instances run again.)
#[test]
fn a_workdir_moved_whole_keeps_its_cache() {
    let n = Nearby::new();
    let p = n.write(
        "moved.yaml",
        r#"
name: moved
params:
  frames: {type: list, default: [a, b, c]}
tasks:
  calibrate:
    uses: command
    foreach: "${params.frames}"
    with:
      argv: [sh, -c, 'echo "$1" > "$2"', sh, "${item}", "${outputs.frame}"]
    outputs: {frame: frame.txt}
  report:
    uses: command
    inputs: {frames: calibrate.frame}
    with: {argv: [cat, "${inputs.frames}"], stdout: report}
    outputs: {report: report.txt}
"#,
    );
    let p = p.to_str().unwrap();
    assert_eq!(n.run(&["run", p, "-q"]).code, 0);
    // The workdir moves to another temporary directory, and runs there.
    let elsewhere = Nearby::new();
    std::fs::rename(n.workdir(), elsewhere.workdir()).unwrap();
    let again = elsewhere.run(&["run", p, "-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains(" 0 ran, 4 cached"),
        "{}",
        again.stderr
    );
    let s = elsewhere.status(&again.run_id);
    let report = instance(&s, "report")["outputs"]["report"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = std::fs::canonicalize(elsewhere.workdir()).unwrap();
    assert_eq!(
        std::path::Path::new(&report),
        moved.join("out/report/report.txt")
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "a\nb\nc\n");
}

#[test]
fn retries_back_off_then_succeed() {
    let n = Nearby::new();
    let p = n.write(
        "retry.yaml",
        r#"
name: retry
tasks:
  flaky:
    uses: command
    retries: {count: 3, backoff_secs: 0.05, factor: 2}
    with:
      # Fails until it has been called three times.
      argv: [sh, -c, 'echo x >> {dir}/count; test $(wc -l < {dir}/count) -ge 3']
"#,
    );
    let r = n.run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("retry  flaky (attempt 1 failed"),
        "{}",
        r.stderr
    );
    let s = n.status(&r.run_id);
    assert_eq!(instance(&s, "flaky")["attempts"], 3);
    assert_eq!(instance(&s, "flaky")["state"], "succeeded");
}

#[test]
fn retries_run_out() {
    let n = Nearby::new();
    let p = n.write("r.yaml", "name: r\ntasks:\n  bad:\n    uses: command\n    retries: {count: 1, backoff_secs: 0.01}\n    with: {argv: ['false']}\n");
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1);
    let s = n.status(&r.run_id);
    assert_eq!(instance(&s, "bad")["attempts"], 2);
    assert_eq!(instance(&s, "bad")["error"], "`false` exited with status 1");
}

/// Whether a process exists and is not a zombie (an orphan may wait for a reaper here).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn timeout_kills_the_task_and_its_children() {
    let n = Nearby::new();
    let p = n.write(
        "t.yaml",
        r#"
name: t
tasks:
  slow:
    uses: command
    timeout_secs: 0.5
    with:
      argv: [sh, -c, 'sleep 60 & echo $! > {dir}/child.pid; wait']
  fine:
    uses: noop
"#,
    );
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let s = n.status(&r.run_id);
    assert_eq!(instance(&s, "slow")["state"], "failed");
    assert_eq!(instance(&s, "slow")["error"], "timed out after 0.5 s");
    assert_eq!(instance(&s, "fine")["state"], "succeeded");
    let pid: i32 = std::fs::read_to_string(n.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !alive(pid),
        "the task's child process {pid} survived the timeout"
    );
}

const BRANCHES: &str = r#"
name: branches
params:
  marker: {type: string, default: "{dir}/broken"}
tasks:
  calibrate:
    uses: command
    foreach: [f1, f2, f3, f4]
    with:
      # f3 fails while the marker file exists.
      argv: [sh, -c, 'if [ "$1" = f3 ] && [ -e "$2" ]; then echo "bad frame $1" >&2; exit 3; fi; echo "$1" > "$3"', sh, "${item}", "${params.marker}", "${outputs.frame}"]
    outputs: {frame: frame.txt}
  extract:
    uses: noop
    foreach: {from: calibrate.frame}
    inputs: {frame: calibrate.frame}
    outputs: {cat: cat.txt}
  report:
    uses: noop
    partial_inputs: true
    inputs: {cats: extract.cat}
    outputs: {report: report.txt}
  summary:
    uses: noop
    inputs: {cats: extract.cat}
  other:
    uses: noop
    outputs: {x: x.txt}
"#;

#[test]
fn a_failed_branch_stops_only_its_dependents_and_rerun_failed_redoes_it() {
    let n = Nearby::new();
    n.write("broken", "");
    let p = n.write("b.yaml", BRANCHES);
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("FAILED calibrate[f3]: `sh` exited with status 3"),
        "{}",
        r.stderr
    );
    let st = states(&n.status(&r.run_id));
    assert_eq!(st["calibrate[f3]"], "failed");
    assert_eq!(st["extract[f3]"], "skipped");
    assert_eq!(st["summary"], "skipped");
    // partial_inputs: the report gathers the frames that made it.
    assert_eq!(st["report"], "succeeded");
    for f in ["f1", "f2", "f4"] {
        assert_eq!(st[&format!("calibrate[{f}]")], "succeeded");
        assert_eq!(st[&format!("extract[{f}]")], "succeeded");
    }
    assert_eq!(st["other"], "succeeded");
    let logs = n.output(&["logs", &r.run_id, "calibrate[f3]"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("bad frame f3"));

    // Fix the cause and rerun the failed part only.
    std::fs::remove_file(n.path("broken")).unwrap();
    let again = n.run(&["rerun", &r.run_id, "--failed", "-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let s = n.status(&again.run_id);
    assert_eq!(s["run"]["parent"], r.run_id.as_str());
    let st = states(&s);
    assert_eq!(st["calibrate[f3]"], "succeeded");
    assert_eq!(st["extract[f3]"], "succeeded");
    assert_eq!(st["summary"], "succeeded");
    assert_eq!(
        st["report"], "succeeded",
        "the report now has one more input"
    );
    for f in ["f1", "f2", "f4"] {
        assert_eq!(st[&format!("calibrate[{f}]")], "cached");
        assert_eq!(st[&format!("extract[{f}]")], "cached");
    }
    assert_eq!(st["other"], "cached");
}

#[test]
fn fail_fast_stops_the_night() {
    let n = Nearby::new();
    let p = n.write(
        "ff.yaml",
        "name: ff\ntasks:\n  bad:\n    uses: noop\n    with: {fail: true}\n  slow:\n    uses: noop\n    foreach: {range: 20}\n    with: {sleep_ms: 200}\n",
    );
    let r = n.run(&["run", p.to_str().unwrap(), "-q", "--fail-fast", "-j", "1"]);
    assert_eq!(r.code, 1);
    let st = states(&n.status(&r.run_id));
    assert_eq!(st["bad"], "failed");
    assert!(
        st.values().filter(|s| *s == "cancelled").count() >= 18,
        "{st:?}"
    );
}

#[test]
fn rerun_from_forces_the_task_and_everything_downstream() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT);
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0);
    let again = n.run(&["rerun", &r.run_id, "--from", "extract", "-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let st = states(&n.status(&again.run_id));
    assert_eq!(st["list"], "cached");
    assert_eq!(st["calibrate[a]"], "cached");
    assert_eq!(st["extract[a]"], "succeeded");
    assert_eq!(st["report"], "succeeded");
    let bad = n.run(&["rerun", &r.run_id, "--from", "extrat"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("did you mean `extract`?"),
        "{}",
        bad.stderr
    );
}

/// A run finds its cache entries in its pipeline's pack first. A pack can hold an entry that
/// a later run of another pipeline (or a run killed before it rewrote the pack) replaced: the
/// rerun must look past it into the cache, not run the task again.
#[test]
fn a_stale_cache_pack_is_looked_past() {
    let n = Nearby::new();
    // Outputs differ on every run (nanoseconds), so a replaced entry's outputs no longer check.
    let tasks = r#"
tasks:
  stamp:
    uses: command
    foreach: [a, b]
    with:
      argv: [sh, -c, 'date +%s%N > "$1"', sh, "${outputs.o}"]
    outputs: {o: o.txt}
  after:
    uses: noop
    inputs: {o: stamp.o}
    outputs: {o: after.txt}
"#;
    let first = n.write("first.yaml", &format!("name: first\n{tasks}"));
    let second = n.write("second.yaml", &format!("name: second\n{tasks}"));
    let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
    assert_eq!(n.run(&["run", first, "-q"]).code, 0);
    // The same tasks under another pipeline name: cached (same keys), with a pack of its own.
    let s = n.run(&["run", second, "-q"]);
    assert!(states(&n.status(&s.run_id)).values().all(|v| v == "cached"));
    // Re-making `stamp` replaces its entries (same keys, new outputs); `first`'s pack still
    // holds the old ones.
    let forced = n.run(&["rerun", &s.run_id, "--from", "stamp", "-q"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let again = n.run(&["run", first, "-q"]);
    let status = n.status(&again.run_id);
    let st = states(&status);
    assert!(st.values().all(|v| v == "cached"), "{st:?}");
    let why = instance(&status, "stamp[a]")["cache"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains(&forced.run_id), "{why}");
    // And that run rewrote `first`'s pack: the next one finds everything in it.
    let last = n.run(&["run", first, "-q"]);
    assert!(states(&n.status(&last.run_id))
        .values()
        .all(|v| v == "cached"));
}

#[test]
fn params_reach_programs_as_single_literal_arguments() {
    let n = Nearby::new();
    let p = n.write(
        "inj.yaml",
        r#"
name: inj
params:
  evil: "x; rm -rf {dir}/victim; $(touch {dir}/pwned) `touch {dir}/pwned2` && echo"
tasks:
  echo:
    uses: command
    foreach: ["${params.evil}", "a b | c > {dir}/redirected"]
    with:
      argv: [printf, "%s", "${item}"]
      stdout: out
    outputs: {out: out.txt}
"#,
    );
    n.write("victim/keep", "keep");
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = n.status(&r.run_id);
    let outs: Vec<String> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| std::fs::read_to_string(i["outputs"]["out"].as_str().unwrap()).unwrap())
        .collect();
    let evil = format!(
        "x; rm -rf {0}/victim; $(touch {0}/pwned) `touch {0}/pwned2` && echo",
        n.dir.path().display()
    );
    assert!(outs.contains(&evil), "{outs:?}");
    assert!(
        outs.contains(&format!("a b | c > {}/redirected", n.dir.path().display())),
        "{outs:?}"
    );
    assert!(n.path("victim/keep").exists());
    assert!(
        !n.path("pwned").exists() && !n.path("pwned2").exists() && !n.path("redirected").exists()
    );
}

/// The fields `status --json` promises for every instance.
fn assert_has_status_fields(i: &serde_json::Value) {
    for field in [
        "id",
        "kind",
        "state",
        "attempts",
        "started_at",
        "finished_at",
        "outputs",
    ] {
        assert!(
            i.get(field).is_some_and(|v| !v.is_null()),
            "{field} missing in {i:#}"
        );
    }
}

#[test]
fn status_json_lists_every_instance_with_its_fields() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT);
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    let s = n.status(&r.run_id);
    for i in s["instances"].as_array().unwrap() {
        assert_has_status_fields(i);
    }
    // Cached instances have the same fields.
    let again = n.run(&["run", p.to_str().unwrap(), "-q"]);
    let s2 = n.status(&again.run_id);
    for i in s2["instances"].as_array().unwrap() {
        assert_eq!(i["state"], "cached");
        assert_has_status_fields(i);
    }
    // Without RUN, status shows the latest run.
    let latest = n.output(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&latest.stdout).unwrap();
    assert_eq!(v["run"]["id"], again.run_id.as_str());
    let runs = n.output(&["runs"]);
    assert!(String::from_utf8_lossy(&runs.stdout).contains(&r.run_id));
    // The JSON-lines event log has one line per event.
    let events = std::fs::read_to_string(s["run"]["events"].as_str().unwrap()).unwrap();
    let first: serde_json::Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "run_started");
    assert!(events.lines().any(|l| l.contains("\"run_finished\"")));
}

#[test]
fn ctrl_c_cancels_cleanly_and_resume_finishes() {
    let n = Nearby::new();
    let p = n.write(
        "slow.yaml",
        r#"
name: slow
tasks:
  work:
    uses: command
    foreach: {range: 6}
    with:
      argv: [sh, -c, 'sleep 1; echo done > "$1"', sh, "${outputs.o}"]
    outputs: {o: o.txt}
"#,
    );
    let child = n
        .command(&["run", p.to_str().unwrap(), "-q", "-j", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: sends SIGINT to the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let s = n.status(&run);
    assert_eq!(s["run"]["state"], "cancelled");
    let st = states(&s);
    assert!(st.values().any(|v| v == "succeeded"), "{st:?}");
    assert!(st.values().any(|v| v == "cancelled"), "{st:?}");
    let resumed = n.run(&["resume", &run, "-q"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let s2 = n.status(&run);
    assert_eq!(s2["run"]["state"], "succeeded");
    for (id, state) in &st {
        if state == "succeeded" {
            // Finished before the cancel: kept, not run again.
            assert_eq!(instance(&s2, id)["state"], "succeeded");
            assert_eq!(
                instance(&s2, id)["finished_at"],
                instance(&s, id)["finished_at"]
            );
        }
    }
}

#[test]
fn one_task_kind_alone() {
    let n = Nearby::new();
    let out = n.path("single");
    let r = std::process::Command::new(common::bin())
        .args([
            "task",
            "noop",
            "--with",
            "message=hello",
            "--output",
            "note=note.txt",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("note.txt")).unwrap(),
        "hello\n"
    );
    let bad = std::process::Command::new(common::bin())
        .args(["task", "noop", "--with", "mesage=x", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `message`?"));
}

#[test]
fn bad_command_lines_exit_2_without_panicking() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT);
    let p = p.to_str().unwrap();
    let r = n.run(&["run", p, "--set", "scael=3"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("--set scael=3: error[unknown-param]: the pipeline has no param `scael`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("did you mean `scale`?"), "{}", r.stderr);
    let r = n.run(&["run", p, "--set", "scale=big"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("expected an integer, found `big`"),
        "{}",
        r.stderr
    );
    let r = n.run(&["status"]);
    assert_eq!(r.code, 2);
    let r = n.run(&["run", "missing.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read pipeline missing.yaml"),
        "{}",
        r.stderr
    );
}

/// Regression: a 100k-task chain overflowed the stack (recursive SCC search) and the YAML
/// reader's default node budget refused it; planning it was quadratic in three places.
#[test]
fn regression_a_100k_task_chain_validates() {
    let n = Nearby::new();
    let mut yaml =
        String::from("name: chain\ntasks:\n  t0:\n    uses: noop\n    outputs: {o: o.txt}\n");
    for i in 1..100_000 {
        yaml.push_str(&format!(
            "  t{i}:\n    uses: noop\n    inputs: {{x: t{}.o}}\n    outputs: {{o: o.txt}}\n",
            i - 1
        ));
    }
    let p = n.write("chain.yaml", &yaml);
    let out = std::process::Command::new(common::bin())
        .args(["validate", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("100000 tasks"));
}

/// Regression: when the task that lists a fan-out's items fails, the fan-out (a placeholder) and
/// the fan-outs paired with it are skipped; they used to run with no inputs.
#[test]
fn regression_a_failed_list_skips_the_fan_outs_built_on_it() {
    let n = Nearby::new();
    let p = n.write(
        "list.yaml",
        r#"
name: failing-list
tasks:
  list:
    uses: command
    with: {argv: ['false'], stdout: items}
    outputs: {items: items.txt}
  each:
    uses: noop
    foreach: {from: list.items}
    outputs: {o: o.txt}
  paired:
    uses: noop
    foreach: {from: each.o}
    inputs: {x: each.o}
  gather:
    uses: noop
    inputs: {all: paired.x}
"#
        .replace("paired.x", "each.o")
        .as_str(),
    );
    let r = n.run(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let st = states(&n.status(&r.run_id));
    assert_eq!(st["list"], "failed");
    assert_eq!(st["each"], "skipped", "{st:?}");
    assert_eq!(st["paired"], "skipped", "{st:?}");
    assert_eq!(st["gather"], "skipped", "{st:?}");
}

/// Regression: `nearby status --json | head` panicked ("failed printing to stdout: Broken pipe")
/// when the reader went away. It must stop quietly, as other Unix tools do.
#[test]
fn regression_a_closed_pipe_stops_status_quietly() {
    use std::io::Read;
    let n = Nearby::new();
    let p = n.write(
        "wide.yaml",
        "name: wide\ntasks:\n  fan:\n    uses: noop\n    foreach: {range: 2000}\n",
    );
    assert_eq!(n.run(&["run", p.to_str().unwrap(), "-q"]).code, 0);
    let mut child = n
        .command(&["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reading end is dropped here.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(status.code(), Some(101), "{stderr}");
}

/// `run` keeps the compiled pipeline in the workdir; any change to the pipeline, to a file it
/// imports or to a `--set` value must be compiled again, with its diagnostics.
#[test]
fn the_kept_plan_follows_every_change_to_the_pipeline_and_its_imports() {
    let n = Nearby::new();
    n.write(
        "shared.yaml",
        "name: shared\ntasks:\n  first:\n    uses: noop\n    outputs: {o: first.txt}\n",
    );
    let p = n.write(
        "night.yaml",
        "name: night\nimports: [shared.yaml]\nparams:\n  n: {type: list, default: [a, b]}\n\
         tasks:\n  fan:\n    uses: noop\n    foreach: \"${params.n}\"\n    inputs: {f: first.o}\n",
    );
    let p = p.to_str().unwrap();
    let ids = |r: &Ran| -> Vec<String> { states(&n.status(&r.run_id)).into_keys().collect() };

    let first = n.run(&["run", p, "-q"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(ids(&first), ["fan[a]", "fan[b]", "first"]);
    // The same files again: the kept plan, and nothing to do.
    let reused = |args: &[&str]| {
        let out = n
            .command(args)
            .env("RUST_LOG", "nearby=debug")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).contains("compiled plan reused")
    };
    assert!(reused(&["run", p, "-q"]));
    let again = n.run(&["run", p, "-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(states(&n.status(&again.run_id))
        .values()
        .all(|s| s == "cached"));
    assert!(reused(&["plan", p]));

    // A --set value is part of the key.
    let set = n.run(&["run", p, "-q", "--set", "n=a,b,c"]);
    assert_eq!(ids(&set), ["fan[a]", "fan[b]", "fan[c]", "first"]);

    // An edited import: a new task appears.
    n.write(
        "shared.yaml",
        "name: shared\ntasks:\n  first:\n    uses: noop\n    outputs: {o: first.txt}\n  \
         second:\n    uses: noop\n",
    );
    let import = n.run(&["run", p, "-q"]);
    assert_eq!(ids(&import), ["fan[a]", "fan[b]", "first", "second"]);
    assert!(reused(&["run", p, "-q"]));

    // An edited pipeline that is now invalid: the error, with its position, and exit code 2.
    n.write(
        "night.yaml",
        "name: night\nimports: [shared.yaml]\ntasks:\n  fan:\n    uses: nop\n",
    );
    let bad = n.run(&["run", p, "-q"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("night.yaml:5:11: error[unknown-task-kind]"),
        "{}",
        bad.stderr
    );
}
