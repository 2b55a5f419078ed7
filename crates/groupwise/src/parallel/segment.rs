//! One segment of training steps: its batches ([`Segment`]), the leader's per-step callback
//! ([`OnStep`]), how it ended ([`SegmentEnd`]), what it measures per node ([`NodeTiming`]) and why it
//! fails ([`RuntimeError`]).

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::transport::Aborted;
use crate::checkpoint::CheckpointError;
use crate::data::Batch;
use crate::local::{Phase, StepStats};

/// Where one node's time went during a segment (a `metrics.jsonl` entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// Node name (`m{k}.g{g}`, `head`, or `all` for the sequential path).
    pub node: String,
    /// MPI rank (0 for threads).
    pub rank: usize,
    /// Steps it ran.
    pub steps: usize,
    /// Seconds computing (forward, backward, update), wall clock.
    pub compute_seconds: f64,
    /// CPU seconds of its worker thread while computing (intra-op helper threads not included);
    /// below `compute_seconds` when the thread waited for a core.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Of `compute_seconds`: forward passes (trunk and classifier).
    #[serde(default)]
    pub forward_seconds: f64,
    /// Of `forward_seconds`: the trunk's (the column's layers; the rest is the classifier's).
    #[serde(default)]
    pub trunk_seconds: f64,
    /// Of `compute_seconds`: losses and backward passes.
    #[serde(default)]
    pub backward_seconds: f64,
    /// Of `compute_seconds`: optimizer updates.
    #[serde(default)]
    pub update_seconds: f64,
    /// Seconds waiting for inputs, peers, gradients, data or room in a full channel.
    pub wait_seconds: f64,
    /// Seconds sending (copying and handing messages over).
    pub comm_seconds: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

impl NodeTiming {
    /// Adds another segment's (or part's) time of the same node.
    pub fn add(&mut self, other: &NodeTiming) {
        self.steps += other.steps;
        self.compute_seconds += other.compute_seconds;
        self.cpu_seconds += other.cpu_seconds;
        self.forward_seconds += other.forward_seconds;
        self.trunk_seconds += other.trunk_seconds;
        self.backward_seconds += other.backward_seconds;
        self.update_seconds += other.update_seconds;
        self.wait_seconds += other.wait_seconds;
        self.comm_seconds += other.comm_seconds;
        self.bytes_sent += other.bytes_sent;
    }
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
    /// A request to end the segment early, read by the leader before it feeds each step: once it is
    /// set no further step starts, the steps already started finish on every node, and the segment
    /// ends with fewer steps ([`SegmentEnd::steps`]). Other processes ignore theirs and follow the
    /// leader's decision, so every node stops after the same step.
    pub stop: Option<&'a AtomicBool>,
}

/// One stretch of a node's compute on a worker's timeline: a real run's trace ([`SegmentEnd::trace`])
/// or the simulator's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The worker, counted over every process in rank order ([`super::Layout::all_workers`]).
    pub worker: usize,
    /// The node.
    pub node: usize,
    /// What it computed.
    pub phase: Phase,
    /// The step (1-based).
    pub step: usize,
    /// Seconds from the start of the timeline.
    pub start: f64,
    /// Seconds from the start of the timeline.
    pub end: f64,
}

/// How a segment ended.
#[derive(Debug, Default)]
pub struct SegmentEnd {
    /// Steps every node ran: `Segment::steps`, or fewer when the leader was asked to stop.
    pub steps: usize,
    /// Every node's timings (on the leader; empty on other processes).
    pub timings: Vec<NodeTiming>,
    /// The compute of the segment's last steps (on the leader; empty on other processes and on the
    /// sequential path); when the segment began with steps measuring the nodes on one worker, of the
    /// steps after them.
    pub trace: Trace,
}

/// Every node's compute in the last [`super::TRACE_STEPS`] steps of a segment, phase by phase, and
/// where the nodes ran: a real run's timeline, comparable with the simulator's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Every worker thread (its process, its nodes in node order), over every process in rank order:
    /// the rows of `intervals`.
    pub workers: Vec<(usize, Vec<usize>)>,
    /// libtorch intra-op threads of each worker (of the leader's process).
    pub threads_per_worker: usize,
    /// Messages in flight per channel.
    pub depth: usize,
    /// The compute, in seconds from the start of the first interval, in order of start.
    pub intervals: Vec<Interval>,
}

/// Per-step callback of the leader: statistics of each step, in order; `Break` stops the segment
/// (which then ends with [`RuntimeError::Stopped`]).
pub type OnStep<'a> = dyn FnMut(StepStats) -> ControlFlow<()> + 'a;
