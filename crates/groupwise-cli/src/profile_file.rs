//! The file `groupwise plan --profile --json` writes and `--placement FILE` reads: every node's
//! measured step ([`NodeProfile`]) with the settings it was measured under.

use std::path::Path;

use serde::{Deserialize, Serialize};

use groupwise::parallel::{NodeProfile, Placement};
use groupwise::plan::AuxInput;

/// A profile of one plan on one machine.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileFile {
    /// The plan, as `--plan` takes it.
    pub plan: String,
    /// Groups G.
    pub groups: i64,
    /// What the auxiliary classifiers read (absent in profiles written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_input: Option<AuxInput>,
    /// Images per step.
    pub batch: i64,
    /// libtorch intra-op threads of the worker.
    pub threads: usize,
    /// Timed steps (after warm-up).
    pub steps: usize,
    /// Copies timed at once (`--copies`; 1: every node alone).
    #[serde(default = "one")]
    pub copies: usize,
    /// Every node of the runtime, in node order.
    pub nodes: Vec<NodeProfile>,
    /// The end-to-end network (one node: its whole step) measured in the same run, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<NodeProfile>,
}

fn one() -> usize {
    1
}

/// The profile at `path`; the message names `flag`, the file and what is wrong with it.
pub fn load(path: &Path, flag: &str) -> Result<ProfileFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{flag} {}: {e} (expected a file written by `groupwise plan --profile --json`)",
            path.display()
        )
    })?;
    let file: ProfileFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{flag} {}: not a profile written by `groupwise plan --profile --json`: {e}",
            path.display()
        )
    })?;
    if file.nodes.is_empty() {
        return Err(format!(
            "{flag} {}: the profile has no nodes",
            path.display()
        ));
    }
    Ok(file)
}

/// The placement that balances the nodes of the profile at `path` by their seconds per step.
pub fn read(path: &Path) -> Result<Placement, String> {
    let file = load(path, "--placement")
        .map_err(|e| format!("{e}; --placement also takes `measured` or `macs`"))?;
    Ok(Placement::Given(
        file.nodes
            .iter()
            .map(|n| (n.node, n.seconds_per_step))
            .collect(),
    ))
}
