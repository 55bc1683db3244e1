//! Operations through the binary: backfill of nights with one failing night that is then rerun
//! alone, `nights`, run reports, webhooks on loopback, and `serve` with its schedules (on a fast
//! clock), data-arrival triggers, catch-up after downtime, and SIGKILL in the middle of a night.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, Nearby};

/// A night: simulate a small night (one CCD, two exposures), make master calibrations, and check
/// the night's observing log, which is missing for the "bad" night until someone restores it.
const NIGHT_PIPELINE: &str = r#"
name: night
params:
  night: {type: string, default: "2026-01-01"}
  logs: {type: string, default: "logs"}
tasks:
  simulate:
    uses: simulate
    with: {preset: small, n_ccds: 1, n_exposures: 2, n_asteroids: 2}
  masters:
    uses: masters
    inputs: {calib: simulate.calib}
  check:
    uses: command
    inputs: {bias: masters.bias}
    with:
      argv: [sh, -c, "test -f ${params.logs}/${params.night}.txt && echo ok > ${outputs.o}"]
    outputs: {o: ok.txt}
"#;

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn runs_of(n: &Nearby, night: &str) -> Vec<String> {
    let out = std::process::Command::new(bin())
        .args(["runs", "--workdir"])
        .arg(n.workdir().join("nights").join(night))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[test]
fn backfill_ten_nights_one_fails_then_rerun_alone() {
    let n = Nearby::new();
    let p = n.write("night.yaml", NIGHT_PIPELINE);
    let logs = n.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for d in 1..=10 {
        if d != 6 {
            std::fs::write(logs.join(format!("2026-01-{d:02}.txt")), "clear").unwrap();
        }
    }
    let logs_arg = format!("logs={}", logs.display());
    let r = n.run(&[
        "backfill",
        p.to_str().unwrap(),
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-10",
        "--parallel",
        "2",
        "--slots",
        "3",
        "--set",
        &logs_arg,
    ]);
    assert_eq!(r.code, 1, "one night fails: {}", r.stderr);
    assert!(
        r.stdout
            .contains("10 nights, 9 succeeded, 1 failed (2026-01-06"),
        "{}",
        r.stdout
    );

    let table = n.run(&["nights"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let rows: Vec<&str> = table.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 10, "{}", table.stdout);
    for row in &rows {
        let failed = row.starts_with("2026-01-06");
        assert_eq!(row.contains(" failed "), failed, "{row}");
        assert_eq!(row.contains(" succeeded "), !failed, "{row}");
    }

    // The observing log turns up; only that night is redone, and only its failed part.
    std::fs::write(logs.join("2026-01-06.txt"), "clear").unwrap();
    let again = n.run(&["rerun", "--night", "2026-01-06", "-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let status = n.output(&["status", "--json"]);
    assert!(
        !status.status.success(),
        "the top workdir has no runs of its own"
    );
    let night6 = std::process::Command::new(bin())
        .args(["status", "--json", "--workdir"])
        .arg(n.workdir().join("nights/2026-01-06"))
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&night6.stdout).unwrap();
    let states = common::states(&st);
    assert_eq!(states["simulate"], "cached");
    assert_eq!(states["masters"], "cached");
    assert_eq!(states["check"], "succeeded");
    assert_eq!(runs_of(&n, "2026-01-06").len(), 2);
    for d in [1, 5, 7, 10] {
        assert_eq!(
            runs_of(&n, &format!("2026-01-{d:02}")).len(),
            1,
            "night {d} was not rerun"
        );
    }
    // A second backfill of the same nights is all cache hits.
    let second = n.run(&[
        "backfill",
        p.to_str().unwrap(),
        "--from",
        "2026-01-05",
        "--to",
        "2026-01-07",
        "--set",
        &logs_arg,
    ]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.stderr.contains("0 ran, 3 cached"),
        "{}",
        second.stderr
    );
}

/// A one-shot HTTP server on 127.0.0.1 that collects POST bodies.
fn webhook_server() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                let _ = tx.send(v);
            }
        }
    });
    (url, rx)
}

#[test]
fn runs_write_an_html_report_and_post_webhooks() {
    let n = Nearby::new();
    let (url, rx) = webhook_server();
    let p = n.write(
        "p.yaml",
        "name: two\ntasks:\n  good:\n    uses: command\n    with: {argv: [sh, -c, \"echo fine > ${outputs.o}\"]}\n    outputs: {o: o.txt}\n  bad:\n    uses: command\n    with: {argv: [sh, -c, \"echo 'the flat is missing' >&2; exit 3\"]}\n",
    );
    let r = n.run(&["run", p.to_str().unwrap(), "-q", "--notify-failures", &url]);
    assert_eq!(r.code, 1);
    let hook = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a failure webhook");
    assert_eq!(hook["event"], "run.failed");
    assert_eq!(hook["summary"]["run"], r.run_id.as_str());
    assert_eq!(hook["summary"]["counts"]["failed"], 1);
    assert_eq!(hook["summary"]["failures"][0]["id"], "bad");
    let report = hook["report"].as_str().unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    assert!(
        html.contains("<h3>bad</h3>") && html.contains("the flat is missing"),
        "{html}"
    );
    assert!(html.contains("<td>good</td>"));

    // Success: only --notify hooks hear about it.
    let ok = n.write("ok.yaml", "name: ok\ntasks:\n  t:\n    uses: noop\n");
    let (url2, rx2) = webhook_server();
    let r2 = n.run(&[
        "run",
        ok.to_str().unwrap(),
        "-q",
        "--notify",
        &url2,
        "--notify-failures",
        &url,
    ]);
    assert_eq!(r2.code, 0);
    assert_eq!(
        rx2.recv_timeout(Duration::from_secs(20)).unwrap()["event"],
        "run.succeeded"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "failure hook stayed quiet"
    );
    let rep = n.run(&["report", &r.run_id]);
    assert_eq!(rep.code, 0);
    assert!(Path::new(rep.stdout.trim()).exists());
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(n: &Nearby, config: &Path, clock_start: &str, speed: &str) -> Service {
    let log = std::fs::File::create(n.path(&format!("serve-{}.log", clock_start.replace(':', ""))))
        .unwrap();
    Service(
        n.command(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--clock-start",
            clock_start,
            "--clock-speed",
            speed,
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap(),
    )
}

fn night_state(n: &Nearby, night: &str) -> Option<String> {
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--workdir"])
        .arg(n.workdir().join("nights").join(night))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["run"]["state"].as_str().map(str::to_owned)
}

fn terminate(s: &mut Service) {
    unsafe { libc::kill(s.0.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while s.0.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn schedules_fire_on_a_fast_clock_and_missed_nights_run_once_in_order() {
    let n = Nearby::new();
    n.write("pipelines/p.yaml", "name: nightly\nparams:\n  night: {type: string}\ntasks:\n  t:\n    uses: command\n    with: {argv: [sh, -c, \"echo ${params.night} > ${outputs.o}\"]}\n    outputs: {o: night.txt}\n");
    let config = n.write(
        "serve.yaml",
        "schedules:\n  - name: nightly\n    pipeline: pipelines/p.yaml\n    cron: \"0 8 * * *\"\n    catch_up: all\n",
    );
    // 07:59:30, 120x: 08:00 comes a quarter of a second later.
    let mut s = serve(&n, &config, "2026-11-27T07:59:30Z", "120");
    wait_for("the night of the 26th", Duration::from_secs(60), || {
        night_state(&n, "2026-11-26").as_deref() == Some("succeeded")
    });
    terminate(&mut s);
    drop(s);
    // Down for three days: the 27th, 28th and 29th run once each, oldest first.
    let mut s = serve(&n, &config, "2026-11-30T09:00:00Z", "1");
    wait_for("three missed nights", Duration::from_secs(60), || {
        ["2026-11-27", "2026-11-28", "2026-11-29"]
            .iter()
            .all(|d| night_state(&n, d).as_deref() == Some("succeeded"))
    });
    terminate(&mut s);
    let nights = n.run(&["nights"]);
    assert_eq!(nights.stdout.lines().count(), 5, "{}", nights.stdout);
    for d in ["2026-11-27", "2026-11-28", "2026-11-29"] {
        assert_eq!(runs_of(&n, d).len(), 1, "night {d} ran once");
    }
    let mut starts: Vec<String> = ["2026-11-27", "2026-11-28", "2026-11-29"]
        .iter()
        .map(|d| runs_of(&n, d)[0].clone())
        .collect();
    let sorted = {
        let mut s = starts.clone();
        s.sort();
        s
    };
    assert_eq!(starts, sorted, "missed nights ran oldest first");
    starts.clear();
}

#[test]
fn data_arrival_starts_a_night_and_a_killed_service_resumes_it() {
    let n = Nearby::new();
    let ran = n.path("ran.txt");
    // 30 steps, one at a time, each recording that it ran.
    let mut p = String::from(
        "name: arrival\nparams:\n  night: {type: string}\n  raw: {type: string}\ntasks:\n",
    );
    for i in 0..30 {
        p.push_str(&format!(
            "  s{i}:\n    uses: command\n    with: {{argv: [sh, -c, \"ls ${{params.raw}} > ${{outputs.o}}; echo s{i} >> {}; sleep 0.15\"]}}\n    outputs: {{o: o.txt}}\n",
            ran.display()
        ));
    }
    n.write("pipelines/arrival.yaml", &p);
    std::fs::write(
        n.path("serve.yaml"),
        "triggers:\n  - name: arrival\n    pipeline: pipelines/arrival.yaml\n    watch: incoming\n    complete: {marker: DONE}\n    set: {raw: \"{dir}\"}\n",
    )
    .unwrap();
    let config = n.path("serve.yaml");
    let mut s = serve(&n, &config, "2026-11-28T02:00:00Z", "1");
    std::thread::sleep(Duration::from_millis(500));
    let night = n.path("incoming/20261127");
    std::fs::create_dir_all(&night).unwrap();
    std::fs::write(night.join("r1.fits"), "frame").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        night_state(&n, "2026-11-27").is_none(),
        "no run before the marker"
    );
    std::fs::write(night.join("DONE"), "").unwrap();
    wait_for("ten steps of the night", Duration::from_secs(60), || {
        std::fs::read_to_string(&ran)
            .map(|t| t.lines().count() >= 10)
            .unwrap_or(false)
    });
    // SIGKILL: the service and its run die at once.
    s.0.kill().unwrap();
    s.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(before.len() < 30, "killed mid-night");
    // What the night's store says had succeeded when the service died.
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--workdir"])
        .arg(n.workdir().join("nights/2026-11-27"))
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recorded: Vec<String> = common::states(&st)
        .into_iter()
        .filter(|(_, s)| s == "succeeded")
        .map(|(id, _)| id)
        .collect();
    assert!(
        !recorded.is_empty(),
        "some steps were recorded before the kill"
    );
    let _s = serve(&n, &config, "2026-11-28T03:00:00Z", "1");
    wait_for("the resumed night", Duration::from_secs(90), || {
        night_state(&n, "2026-11-27").as_deref() == Some("succeeded")
    });
    let after: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for l in &after {
        *counts.entry(l.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 30, "every step ran");
    // Steps recorded as succeeded never run again. (Steps running at the kill, or finished in
    // the last moments before it, whose records were not yet on disk, run again.)
    for id in &recorded {
        assert_eq!(counts[id], 1, "{id} had succeeded and ran again");
    }
    assert_eq!(runs_of(&n, "2026-11-27").len(), 1, "resumed, not restarted");
    let o = std::fs::read_to_string(n.workdir().join("nights/2026-11-27/out/s0/o.txt")).unwrap();
    assert!(
        o.contains("r1.fits"),
        "the trigger passed the night's directory: {o}"
    );
}

#[test]
fn a_quiet_period_completes_a_night_and_sigterm_leaves_it_to_resume() {
    let n = Nearby::new();
    let mut p = String::from(
        "name: quiet\nparams:\n  night: {type: string}\n  raw: {type: string}\ntasks:\n",
    );
    for i in 0..20 {
        p.push_str(&format!(
            "  s{i}:\n    uses: command\n    with: {{argv: [sh, -c, \"ls ${{params.raw}} > ${{outputs.o}}; sleep 0.1\"]}}\n    outputs: {{o: o.txt}}\n"
        ));
    }
    n.write("pipelines/quiet.yaml", &p);
    std::fs::write(
        n.path("serve.yaml"),
        "triggers:\n  - name: quiet\n    pipeline: pipelines/quiet.yaml\n    watch: incoming\n    complete: {quiet_secs: 1}\n    set: {raw: \"{dir}\"}\n",
    )
    .unwrap();
    let config = n.path("serve.yaml");
    let mut s = serve(&n, &config, "2026-11-28T02:00:00Z", "1");
    std::thread::sleep(Duration::from_millis(500));
    let night = n.path("incoming/2026-11-27");
    std::fs::create_dir_all(&night).unwrap();
    std::fs::write(night.join("r1.fits"), "frame").unwrap();
    // Quiet for a second: the night starts; SIGTERM in the middle cancels it cleanly.
    let out = n.workdir().join("nights/2026-11-27/out");
    wait_for("the first steps", Duration::from_secs(60), || {
        out.join("s2/o.txt").exists()
    });
    terminate(&mut s);
    drop(s);
    let state = night_state(&n, "2026-11-27");
    assert_eq!(
        state.as_deref(),
        Some("cancelled"),
        "SIGTERM records the run as cancelled"
    );
    // The next start resumes it under the same run id.
    let _s = serve(&n, &config, "2026-11-28T03:00:00Z", "1");
    wait_for("the resumed night", Duration::from_secs(60), || {
        night_state(&n, "2026-11-27").as_deref() == Some("succeeded")
    });
    assert_eq!(runs_of(&n, "2026-11-27").len(), 1, "resumed, not restarted");
}
