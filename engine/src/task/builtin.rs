//! The engine's own task kinds: `command` (an external program) and `noop` (tests, benchmarks).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as J};

use super::{Action, Invocation, PType, ParamSpec, Ports, ProcessSpec, TaskError, TaskKind};

pub fn kinds() -> Vec<Arc<dyn TaskKind>> {
    vec![Arc::new(Command), Arc::new(Noop)]
}

/// Runs a program from an argv array. Arguments are never joined into a shell string: a param
/// holding `; rm -rf /` reaches the program as one literal argument.
pub struct Command;

const COMMAND_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "argv",
        ty: PType::StrList,
        required: true,
        default: None,
        doc: "The program and its arguments, one list item each; templates allowed. \
              `${inputs.NAME}` alone in an item expands to one item per input file.",
    },
    ParamSpec {
        name: "env",
        ty: PType::StrMap,
        required: false,
        default: None,
        doc: "Extra environment variables (templates allowed).",
    },
    ParamSpec {
        name: "stdout",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "Name of a declared output that receives the program's standard output.",
    },
];

impl TaskKind for Command {
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Run an external program with a templated argv; outputs are the files it declares."
    }
    fn params(&self) -> &'static [ParamSpec] {
        COMMAND_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Declared
    }
    fn outputs(&self) -> Ports {
        Ports::Declared
    }
    fn validate(&self, params: &Map<String, J>) -> Vec<(&'static str, String)> {
        match params.get("argv").and_then(J::as_array) {
            Some(a) if a.is_empty() => {
                vec![(
                    "argv",
                    "the list is empty: give at least the program".into(),
                )]
            }
            _ => Vec::new(),
        }
    }
    fn action(&self, inv: &Invocation) -> Result<Action, TaskError> {
        let argv: Vec<String> = inv
            .params
            .get("argv")
            .and_then(J::as_array)
            .map(|a| a.iter().map(json_to_arg).collect())
            .unwrap_or_default();
        if argv.is_empty() {
            return Err(TaskError::Failed("argv is empty".into()));
        }
        let env = inv
            .params
            .get("env")
            .and_then(J::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), json_to_arg(v))).collect())
            .unwrap_or_default();
        let stdout = match inv.str("stdout") {
            Some(name) => Some(inv.output(name)?.to_path_buf()),
            None => None,
        };
        Ok(Action::Process(ProcessSpec {
            argv,
            env,
            cwd: inv.out_dir.to_path_buf(),
            stdout,
        }))
    }
    fn run(&self, _inv: &Invocation, _log: &mut dyn Write) -> Result<(), TaskError> {
        Err(TaskError::Failed(
            "`command` runs as a process, not in-process".into(),
        ))
    }
}

fn json_to_arg(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Does nothing, or sleeps, or fails on purpose; writes a small file for each declared output.
/// The engine's own tests and benchmarks use it as a mock task with real connections.
pub struct Noop;

const NOOP_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "sleep_ms",
        ty: PType::Int,
        required: false,
        default: Some("0"),
        doc: "Sleep this long (milliseconds) before finishing.",
    },
    ParamSpec {
        name: "fail",
        ty: PType::Bool,
        required: false,
        default: Some("false"),
        doc: "Fail instead of succeeding (to test failure handling).",
    },
    ParamSpec {
        name: "fail_item",
        ty: PType::Str,
        required: false,
        default: None,
        doc: "Fail only the fan-out instance whose item equals this.",
    },
    ParamSpec {
        name: "message",
        ty: PType::Str,
        required: false,
        default: Some("\"\""),
        doc: "Text written into each declared output (and the log).",
    },
];

impl TaskKind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Do nothing (optionally sleep or fail); for tests and benchmarks."
    }
    fn params(&self) -> &'static [ParamSpec] {
        NOOP_PARAMS
    }
    fn inputs(&self) -> Ports {
        Ports::Declared
    }
    fn outputs(&self) -> Ports {
        Ports::Declared
    }
    fn inline(&self, params: &Map<String, J>) -> bool {
        params.get("sleep_ms").and_then(J::as_i64).unwrap_or(0) == 0
    }
    fn run(&self, inv: &Invocation, log: &mut dyn Write) -> Result<(), TaskError> {
        let sleep = inv.int("sleep_ms").unwrap_or(0).max(0) as u64;
        if sleep > 0 {
            let until = Instant::now() + Duration::from_millis(sleep);
            while Instant::now() < until {
                if inv.cancel.load(Ordering::Relaxed) {
                    return Err(TaskError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(sleep.min(20)));
            }
        }
        let fail_item = inv.str("fail_item").filter(|s| !s.is_empty());
        if inv.bool("fail").unwrap_or(false) || (fail_item.is_some() && fail_item == inv.item) {
            return Err(TaskError::Failed(format!(
                "{} failed on purpose (noop fail)",
                inv.id
            )));
        }
        let message = inv.str("message").unwrap_or("");
        if !message.is_empty() {
            writeln!(log, "{message}")?;
        }
        for path in inv.outputs.values() {
            // Streamed: a gather's body lists every input (megabytes at 100k inputs).
            let mut body = std::io::BufWriter::new(std::fs::File::create(path)?);
            if message.is_empty() {
                writeln!(body, "{}", inv.id)?;
            } else {
                writeln!(body, "{message}")?;
            }
            for (name, paths) in inv.inputs {
                for p in paths {
                    writeln!(body, "{name} {}", p.display())?;
                }
            }
            body.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(())
    }
}
