//! `nearby`: the command line. Thin: parsing arguments and printing; the engine does the work.
//!
//! Exit codes: 0 success, 1 some task failed, 2 invalid input (pipeline, params, arguments),
//! 130 cancelled (Ctrl-C / SIGTERM).

mod alloc;
mod commands;
mod ephem;
mod ops;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "nearby",
    version,
    about = "A pipeline engine for asteroid surveys",
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Workdir {
    /// Where run state (sled store), outputs and logs live.
    #[arg(
        long,
        global = true,
        default_value = "nearby-work",
        env = "NEARBY_WORKDIR"
    )]
    pub workdir: PathBuf,
}

#[derive(Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline YAML file.
    pub pipeline: PathBuf,
    /// Override a pipeline param (repeatable): --set night=2011-03-01
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Clone)]
pub struct ExecArgs {
    /// CPU slots: at most this many cpus' worth of tasks run at once [default: cores].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Memory budget in MB for tasks that declare `resources.memory_mb` (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub memory_mb: u64,
    /// Stop the whole run at the first failure (default: only the failed task's dependents stop).
    #[arg(long)]
    pub fail_fast: bool,
    /// Print only failures and the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// POST the run's outcome as JSON to this URL when it ends (repeatable).
    #[arg(long, value_name = "URL")]
    pub notify: Vec<String>,
    /// POST the run's outcome to this URL only when it fails (repeatable).
    #[arg(long, value_name = "URL")]
    pub notify_failures: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline and report every error with file:line:col.
    Validate {
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Show what would run, what is cached, and why.
    Plan {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        w: Workdir,
    },
    /// Print the task graph.
    Graph {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Run a pipeline. Prints the run id on stdout.
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        w: Workdir,
        #[command(flatten)]
        x: ExecArgs,
    },
    /// Show the state of every task instance of a run (the latest if RUN is omitted).
    Status {
        run: Option<String>,
        #[command(flatten)]
        w: Workdir,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List runs.
    Runs {
        #[command(flatten)]
        w: Workdir,
    },
    /// Start a new run of a past run's pipeline and params: the failed part (default), or
    /// everything from a task on.
    Rerun {
        /// The run to redo (or use --night).
        #[arg(required_unless_present = "night")]
        run: Option<String>,
        /// Redo this night's latest run (in WORKDIR/nights/NIGHT, as `serve` and `backfill`
        /// lay nights out).
        #[arg(long, conflicts_with = "run")]
        night: Option<String>,
        #[command(flatten)]
        w: Workdir,
        /// Rerun failed, skipped and cancelled tasks and what depends on them (the default).
        #[arg(long, conflicts_with = "from")]
        failed: bool,
        /// Rerun this task and everything downstream of it, ignoring the cache.
        #[arg(long, value_name = "TASK")]
        from: Option<String>,
        #[command(flatten)]
        x: ExecArgs,
    },
    /// Continue a run that was killed or cancelled, under the same run id.
    Resume {
        run: String,
        #[command(flatten)]
        w: Workdir,
        #[command(flatten)]
        x: ExecArgs,
    },
    /// Print a task instance's log (all instances of a task if TASK is a task name).
    Logs {
        run: String,
        task: String,
        #[command(flatten)]
        w: Workdir,
    },
    /// Inspect or clean the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Run one task kind alone, outside a pipeline.
    Task {
        /// The task kind (see `nearby kinds`).
        kind: String,
        /// A param (repeatable): --with thresh_sigma=1.5
        #[arg(long = "with", value_name = "KEY=VALUE")]
        with: Vec<String>,
        /// An input (repeatable; a name given again adds a file): --input image=frame.fits
        #[arg(long = "input", value_name = "NAME=PATH")]
        input: Vec<String>,
        /// For kinds whose outputs the author declares: --output result=result.txt
        #[arg(long = "output", value_name = "NAME=PATH")]
        output: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Simulate a night (INT WFC geometry by default) with its truth: raw frames, biases, flats,
    /// a reference catalog and truth.json. Same as `nearby task simulate`.
    Simulate {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `small` (tests, demo) or `int_wfc` (4 CCDs of 2048x4100).
        #[arg(long, default_value = "int_wfc")]
        preset: String,
        #[arg(long)]
        n_fields: Option<u32>,
        #[arg(long)]
        n_exposures: Option<u32>,
        #[arg(long)]
        n_ccds: Option<u32>,
        #[arg(long)]
        n_asteroids: Option<u32>,
        #[arg(long)]
        exptime_secs: Option<f64>,
        /// UTC date of the evening, YYYY-MM-DD [default: 2014-07-10].
        #[arg(long)]
        night: Option<String>,
        /// Put in the known objects of this orbit file (MPCORB or JPL SBDB JSON) that fall on a
        /// CCD, where the offline ephemeris predicts them (needs --spk).
        #[arg(long)]
        known_orbits: Option<PathBuf>,
        /// JPL planetary ephemeris (SPK) for --known-orbits, e.g. de421.bsp.
        #[arg(long, env = "NEARBY_SPK")]
        spk: Option<PathBuf>,
        /// Point the first field at this object of --known-orbits (designation, number, name).
        #[arg(long)]
        target: Option<String>,
        /// Write tile-compressed (.fz) frames.
        #[arg(long)]
        compress: bool,
    },
    /// Predict where known asteroids and comets are, offline (like JPL Horizons): RA, Dec,
    /// rates, distances and V per object and time, from orbital elements and a JPL ephemeris.
    Ephem(ephem::EphemArgs),
    /// Cut the days --from..--to out of a JPL SPK file (records copied unchanged): a small
    /// planetary ephemeris for a demo or a machine without the whole file.
    SpkExcerpt(ephem::ExcerptArgs),
    /// List task kinds with their params and ports.
    Kinds,
    /// The nights under WORKDIR/nights: state, frames, sources, tracklets, failures.
    Nights {
        #[command(flatten)]
        w: Workdir,
    },
    /// Run a pipeline for every night from --from to --to, oldest first, each in its own
    /// WORKDIR/nights/NIGHT (nights already complete are cache hits).
    Backfill {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        w: Workdir,
        /// First night, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last night, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: String,
        /// Nights at once. Capped by the run slots (--slots) less the one kept for `serve`.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Run slots of this work directory (as `slots` in the serve configuration).
        #[arg(long, default_value_t = 2)]
        slots: usize,
        #[command(flatten)]
        x: ExecArgs,
    },
    /// Write a run's HTML report (the latest run if RUN is omitted) and print its path.
    Report {
        run: Option<String>,
        #[command(flatten)]
        w: Workdir,
        /// Where to write it [default: WORKDIR/logs/RUN/report.html].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The unattended service: cron schedules and data-arrival triggers start nightly runs
    /// (config/serve.yaml describes the configuration).
    Serve {
        /// The service configuration (YAML).
        #[arg(long, default_value = "config/serve.yaml")]
        config: PathBuf,
        #[command(flatten)]
        w: Workdir,
        /// Testing aid: start the service's clock at this UTC time (RFC 3339)...
        #[arg(long, hide = true)]
        clock_start: Option<String>,
        /// ...and run it this many times faster than real time.
        #[arg(long, hide = true, default_value_t = 1.0)]
        clock_speed: f64,
    },
    /// Run the built-in demo pipeline (pipelines/demo.yaml) on built-in data.
    Demo {
        #[command(flatten)]
        w: Workdir,
        #[command(flatten)]
        x: ExecArgs,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print a task instance's cache key parts and why it hit or missed.
    Explain {
        run: String,
        task: String,
        #[command(flatten)]
        w: Workdir,
    },
    /// Drop cache entries whose outputs are gone or changed, and leftover staging files.
    Gc {
        #[command(flatten)]
        w: Workdir,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of our output goes away
    // (`nearby status --json | head`); Rust's default turns that into a panic on the next print.
    // SAFETY: setting a signal's disposition to the default, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    alloc::running();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUST_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let code = match cli.command {
        Command::Validate { p } => commands::validate(&p),
        Command::Plan { p, w } => commands::plan(&p, &w),
        Command::Graph { p, format } => commands::graph(&p, format),
        Command::Run { p, w, x } => commands::run(&p, &w, &x),
        Command::Status { run, w, json } => commands::status(run.as_deref(), &w, json),
        Command::Runs { w } => commands::runs(&w),
        Command::Rerun {
            run,
            night,
            w,
            failed: _,
            from,
            x,
        } => match night {
            Some(n) => ops::rerun_night(&n, &w, from.as_deref(), &x),
            None => commands::rerun(run.as_deref().unwrap_or_default(), &w, from.as_deref(), &x),
        },
        Command::Resume { run, w, x } => commands::resume(&run, &w, &x),
        Command::Logs { run, task, w } => commands::logs(&run, &task, &w),
        Command::Cache {
            command: CacheCommand::Explain { run, task, w },
        } => commands::explain(&run, &task, &w),
        Command::Cache {
            command: CacheCommand::Gc { w, dry_run },
        } => commands::gc(&w, dry_run),
        Command::Task {
            kind,
            with,
            input,
            output,
            out,
        } => commands::task(&kind, &with, &input, &output, &out),
        Command::Simulate {
            out,
            seed,
            preset,
            n_fields,
            n_exposures,
            n_ccds,
            n_asteroids,
            exptime_secs,
            night,
            known_orbits,
            spk,
            target,
            compress,
        } => {
            let mut with = vec![format!("seed={seed}"), format!("preset={preset}")];
            let optional = [
                ("n_fields", n_fields.map(|v| v.to_string())),
                ("n_exposures", n_exposures.map(|v| v.to_string())),
                ("n_ccds", n_ccds.map(|v| v.to_string())),
                ("n_asteroids", n_asteroids.map(|v| v.to_string())),
                ("exptime_secs", exptime_secs.map(|v| v.to_string())),
                ("night", night),
                ("target", target),
            ];
            with.extend(
                optional
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))),
            );
            if compress {
                with.push("compress=true".into());
            }
            // The SPK only goes with an orbit file (NEARBY_SPK may be set for `ephem`).
            let inputs: Vec<String> = match known_orbits {
                Some(k) => std::iter::once(format!("known_orbits={}", k.display()))
                    .chain(spk.map(|s| format!("spk={}", s.display())))
                    .collect(),
                None => Vec::new(),
            };
            commands::task("simulate", &with, &inputs, &[], &out)
        }
        Command::Ephem(args) => ephem::ephem(&args),
        Command::SpkExcerpt(args) => ephem::excerpt(&args),
        Command::Kinds => commands::kinds(),
        Command::Nights { w } => ops::nights(&w),
        Command::Backfill {
            p,
            w,
            from,
            to,
            parallel,
            slots,
            x,
        } => ops::backfill(&p, &w, &from, &to, parallel, slots, &x),
        Command::Report { run, w, out } => ops::report(run.as_deref(), &w, out.as_deref()),
        Command::Serve {
            config,
            w,
            clock_start,
            clock_speed,
        } => ops::serve(&config, &w, clock_start.as_deref(), clock_speed),
        Command::Demo { w, x } => commands::demo(&w, &x),
    };
    ExitCode::from(code)
}
