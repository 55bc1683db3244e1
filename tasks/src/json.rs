//! The project's own JSON files (simulator truth, tracklets, observation lists) carry a
//! `format` tag such as `nearby-tracklets/1`. One reader for all of them: errors name the file,
//! the line and column of bad JSON, and the format expected.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads a tagged JSON file: `what` names the kind of file in errors, `format` is the tag it
/// must carry, `tag` reads the tag back from the parsed value.
pub fn load_tagged<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    format: &str,
    tag: impl Fn(&T) -> &str,
) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let value: T = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not {what}: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if tag(&value) != format {
        return Err(format!(
            "{}: format `{}`, expected `{format}`",
            path.display(),
            tag(&value)
        ));
    }
    Ok(value)
}
