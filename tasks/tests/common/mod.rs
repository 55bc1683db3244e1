//! Helpers shared by the integration tests of the task kinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nearby_engine::task::TaskKind;
use serde_json::Value;

/// Runs one task kind alone into `dir` (as `nearby task` does) and returns its log; a failed
/// run fails the test with the task's error and log.
pub fn run_task(
    kind: &dyn TaskKind,
    params: Value,
    inputs: BTreeMap<String, Vec<PathBuf>>,
    dir: &Path,
) -> String {
    let params = params.as_object().cloned().unwrap_or_default();
    let run = nearby_engine::task::run_alone(kind, params, inputs, dir);
    run.result
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", kind.name(), run.log));
    run.log
}
