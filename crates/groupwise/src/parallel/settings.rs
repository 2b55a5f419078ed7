//! How the nodes run ([`Runtime`]): settings that never change what is computed, so they may change
//! between resumes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::plan::NodeId;

/// How the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Workers {
    /// One node after the other in the calling thread (the reference schedule).
    Sequential,
    /// One pipelined worker thread per node.
    #[default]
    Threads,
}

/// A fault to inject, for tests of the failure path: node `node` fails when it reaches global step
/// `step` (1-based). Written `<node>@<step>`, e.g. `m1.g0@5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The node that fails.
    pub node: NodeId,
    /// The global step at which it fails.
    pub step: usize,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = || format!("fault spec '{spec}': expected <node>@<step>, e.g. m0.g1@3");
        let (node, step) = spec.split_once('@').ok_or_else(bad)?;
        Ok(Fault {
            node: node
                .parse()
                .map_err(|e| format!("fault spec '{spec}': {e}"))?,
            step: step.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node, self.step)
    }
}

/// Runtime settings: how to run, not what to compute (they may change between resumes).
#[derive(Clone, Debug, PartialEq)]
pub struct Runtime {
    /// Sequential or pipelined workers.
    pub workers: Workers,
    /// libtorch intra-op threads per worker (`None`: cores / workers, at least 1).
    pub threads_per_worker: Option<usize>,
    /// Messages in flight per channel (back-pressure); 2 is double buffering.
    pub pipeline_depth: usize,
    /// Devices that nodes are placed on, round-robin in node order (empty: the run's device).
    pub devices: Vec<usize>,
    /// A node to fail on purpose (tests of the failure path).
    pub fault: Option<Fault>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: Workers::Threads,
            threads_per_worker: None,
            pipeline_depth: 2,
            devices: Vec::new(),
            fault: None,
        }
    }
}

impl Runtime {
    /// The sequential path.
    pub fn sequential() -> Self {
        Runtime {
            workers: Workers::Sequential,
            ..Runtime::default()
        }
    }
}
