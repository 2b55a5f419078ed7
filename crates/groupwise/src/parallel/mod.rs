//! The parallel runtime: every node of a plan as a pipelined worker (METHOD.md section 9).
//!
//! A run is cut into segments (an epoch, or up to `--max-steps`). For a segment each node's state moves
//! into a worker thread; node (k, g) works on batch t+1 while module k+1 works on batch t, linked by
//! bounded FIFO channels ([`transport`]); at the end of the segment the pipeline drains and the nodes
//! return to the [`Network`](crate::local::Network), which is then evaluated and checkpointed exactly as in the sequential path.
//! Workers are the same code for every [`Transport`]: threads of one process ([`Mailboxes`]) or MPI
//! ranks (`mpi`, cargo feature `mpi`).
//!
//! The schedule computes what the sequential path computes (module k+1 sees batch t through module k's
//! weights before their step t in both), so results match to float tolerance; tests check it.
//!
//! Map: [`Cluster`] (what the trainer drives: [`Local`] here, `mpi::MpiCluster`), [`Layout`] (where
//! every node runs, decided once per run for threads and MPI alike), [`runner`] (one segment on this
//! process's nodes: feeder, workers, collector), [`worker`] (one node's loop), [`message`] (what
//! reaches the collector), [`topology`] (who sends what to whom), [`transport`] (how). A new transport
//! implements [`Transport`] and a [`Cluster`] that builds a [`Layout`] and calls [`NodeRunner::run`].
//! The runtime depends on the plan, the local units and the data, never on the trainer.

mod cluster;
pub mod message;
// MPI handles are raw C handles shared by one thread at a time, and posted sends own leaked buffers
// until they complete: the module's `unsafe` blocks say why each one holds.
#[cfg(feature = "mpi")]
#[allow(unsafe_code)]
pub mod mpi;
pub mod runner;
pub mod topology;
pub mod transport;
pub mod worker;

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointError;
use crate::data::Batch;
use crate::local::StepStats;
use crate::plan::NodeId;
pub use cluster::{default_threads_per_worker, Cluster, Layout, Local};
pub use runner::{NodeRunner, Slots};
pub use topology::{Role, TailPlacement, Topology};
pub use transport::{Aborted, Channel, Kind, Mailboxes, Transport};
pub use worker::{NodeState, Work};

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

/// Where one node's time went during a segment (a `metrics.jsonl` entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// Node name (`m{k}.g{g}`, `head`, or `all` for the sequential path).
    pub node: String,
    /// MPI rank (0 for threads).
    pub rank: usize,
    /// Steps it ran.
    pub steps: usize,
    /// Seconds computing (forward, backward, update).
    pub compute_seconds: f64,
    /// Seconds waiting for inputs, peers, gradients, data or room in a full channel.
    pub wait_seconds: f64,
    /// Seconds sending (copying and handing messages over).
    pub comm_seconds: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

/// Why a segment or the runtime's set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A node failed, or the runtime cannot run this plan here (the message names the node or the
    /// setting).
    #[error("{0}")]
    Failed(String),
    /// The leader's step callback stopped the segment (the callback knows why).
    #[error("the run was stopped after a step")]
    Stopped,
    /// State sent between processes does not fit the network.
    #[error(transparent)]
    State(#[from] CheckpointError),
}

impl From<Aborted> for RuntimeError {
    fn from(Aborted(message): Aborted) -> Self {
        RuntimeError::Failed(message)
    }
}

/// The batches of one segment.
pub struct Segment<'a> {
    /// Batches in order (at least `steps` of them).
    pub batches: Box<dyn Iterator<Item = Batch> + Send + 'a>,
    /// Steps to run.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Steps done before this segment (the first step is `done + 1`).
    pub done: usize,
}

/// Per-step callback of the leader: statistics of each step, in order; `Break` stops the segment
/// (which then ends with [`RuntimeError::Stopped`]).
pub type OnStep<'a> = dyn FnMut(StepStats) -> ControlFlow<()> + 'a;
