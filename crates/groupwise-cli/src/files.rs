//! Files the command line writes beside run directories, shared by `sweep` (which writes them) and
//! `report` (which reads them): atomic writes and a sweep directory's manifest of runs.

use std::path::Path;

use anyhow::{Context, Result};

/// The list of a sweep's runs in its directory: `{"runs": [names...]}`.
pub const MANIFEST: &str = "sweep.json";

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    groupwise::atomic::write(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the manifest of the sweep directory `dir`: its runs' names in sweep order.
pub fn write_manifest(dir: &Path, names: &[&str]) -> Result<()> {
    let manifest = serde_json::json!({ "runs": names });
    atomic_write(&dir.join(MANIFEST), manifest.to_string().as_bytes())
}

/// The run names of a sweep directory's manifest, if it has one.
pub fn read_manifest(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["runs"]
        .as_array()?
        .iter()
        .map(|n| n.as_str().map(String::from))
        .collect()
}
