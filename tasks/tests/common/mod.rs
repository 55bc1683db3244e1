//! Helpers shared by the integration tests of the task kinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nearby_engine::task::TaskKind;
use nearby_tasks::extract::task::Extract;
use nearby_tasks::fits::{write_image, Image, Pixel};
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

/// Writes `image` (its WCS already removed by the caller) to `dir/stripped.fits` and extracts
/// it with the `extract` kind's defaults into `dir/extract`. Returns the frame and the catalog.
pub fn extract_stripped(image: &Image, dir: &Path) -> (PathBuf, PathBuf) {
    let stripped = dir.join("stripped.fits");
    write_image(&stripped, image, Pixel::F32).unwrap();
    let ext = dir.join("extract");
    std::fs::create_dir_all(&ext).unwrap();
    run_task(
        &Extract,
        serde_json::json!({}),
        [("image".to_string(), vec![stripped.clone()])].into(),
        &ext,
    );
    (stripped, ext.join("catalog.fits"))
}
