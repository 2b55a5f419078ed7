//! A simulator of the runtime's schedule: how long a training step takes when a plan's nodes run on N
//! workers, from each node's measured step ([`NodeCost`], `groupwise plan --profile`) and a model of
//! the links between workers ([`Link`]).
//!
//! The runtime is a Kahn process network: every worker runs a fixed program per step (receive,
//! compute, send, in the order `parallel::worker` runs them) over bounded FIFO channels. `program.rs`
//! writes a worker's program from the same [`Topology`] the runtime uses and `engine.rs`
//! ([`simulate`]) times it: each receive waits for its message to arrive, each send for room in its
//! channel (`--pipeline-depth`), each compute takes its node's measured seconds over the worker's
//! speed. Because the channels are FIFO and every operation blocks on one known event, the times are
//! determined whatever order the simulator evaluates the workers in, exactly like the runtime's
//! results.
//!
//! Workers have cores of their own unless [`Setup::cores`] says how many they share: then, while more
//! of them compute than there are cores for, each computes at its fair share (the kernel's scheduler
//! running a thread per node on fewer cores). What the model leaves out, on purpose: the load of the
//! other workers on shared caches and memory (it is in the costs when they were profiled with
//! `--copies`) and the cost of switching threads; a message costs its sender `bytes / bandwidth` and
//! arrives `latency` later; the data loader is never the bottleneck.

mod engine;
mod program;

use serde::{Deserialize, Serialize};

pub use crate::parallel::Interval;
pub use engine::{simulate, Prediction, WorkerLoad};
pub use program::{placement, Op, Wire};

use crate::parallel::{NodeProfile, Topology};

/// One node's step, in seconds, as `groupwise plan --profile` measures it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCost {
    /// The trunk's forward pass (and the node's other work before it sends its output: its input's
    /// concatenation).
    pub trunk: f64,
    /// The classifier's forward pass.
    pub classifier: f64,
    /// The losses and backward passes.
    pub backward: f64,
    /// The optimizer's update.
    pub update: f64,
    /// What the node's first steps in a new process take beyond its step: first-use costs (the
    /// profile's warm-up; not part of [`NodeCost::total`]), paid in a segment that starts cold.
    #[serde(default)]
    pub warmup: f64,
}

impl NodeCost {
    /// The costs of a profiled node: its work outside the four phases (its input's concatenation)
    /// counts as trunk; a profile written before the trunk was recorded apart counts the whole
    /// forward pass as trunk.
    pub fn from_profile(p: &NodeProfile) -> NodeCost {
        let phases = p.forward_seconds + p.backward_seconds + p.update_seconds;
        let other = (p.seconds_per_step - phases).max(0.0);
        let trunk = if p.trunk_seconds > 0.0 {
            p.trunk_seconds
        } else {
            p.forward_seconds
        };
        NodeCost {
            trunk: trunk + other,
            classifier: (p.forward_seconds - trunk).max(0.0),
            backward: p.backward_seconds,
            update: p.update_seconds,
            warmup: p.warmup_seconds,
        }
    }

    /// All of it.
    pub fn total(&self) -> f64 {
        self.trunk + self.classifier + self.backward + self.update
    }
}

/// A link between two workers: a message of `b` bytes keeps its sender busy `b / bandwidth` seconds
/// and arrives `latency` seconds after that.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Seconds from the end of a send to the message's arrival.
    pub latency: f64,
    /// Bytes per second the sender moves (infinite: a hand-over of a pointer).
    pub bandwidth: f64,
}

impl Link {
    /// Workers of one process: a message is the tensor itself, handed over in a queue.
    pub const IN_PROCESS: Link = Link {
        latency: 0.0,
        bandwidth: f64::INFINITY,
    };

    /// Seconds the sender spends on `bytes`.
    pub fn send_seconds(&self, bytes: u64) -> f64 {
        if bytes == 0 || self.bandwidth.is_infinite() {
            0.0
        } else {
            bytes as f64 / self.bandwidth
        }
    }

    /// Parses `LATENCY_US,GBPS` (microseconds, gigabytes per second), e.g. `50,1.25` for 10 Gbit/s
    /// Ethernet.
    pub fn parse(s: &str) -> Result<Link, String> {
        let bad = || {
            format!(
                "link '{s}': expected LATENCY_US,GBYTES_PER_S with a latency >= 0 and a bandwidth \
                 > 0, e.g. 50,1.25 for 10 Gbit/s Ethernet"
            )
        };
        let (lat, bw) = s.split_once(',').ok_or_else(bad)?;
        let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
        let bw: f64 = bw.trim().parse().map_err(|_| bad())?;
        if !(lat >= 0.0 && lat.is_finite() && bw > 0.0) {
            return Err(bad());
        }
        Ok(Link {
            latency: lat * 1e-6,
            bandwidth: bw * 1e9,
        })
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bandwidth.is_infinite() && self.latency == 0.0 {
            write!(f, "in-process hand-over")
        } else {
            write!(
                f,
                "{:.1} us + bytes / {:.2} GB/s",
                self.latency * 1e6,
                self.bandwidth / 1e9
            )
        }
    }
}

/// Where and how the nodes run: what [`simulate`] times.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The node graph.
    pub topo: Topology,
    /// Every node's step (by node id).
    pub costs: Vec<NodeCost>,
    /// The nodes of every worker, each contiguous and in node order ([`placement`]).
    pub workers: Vec<Vec<usize>>,
    /// The process of every worker (workers of one process talk over [`Link::IN_PROCESS`]).
    pub process: Vec<usize>,
    /// Every worker's speed relative to the machine the costs were measured on (1: the same).
    pub speed: Vec<f64>,
    /// The link between workers of different processes.
    pub link: Link,
    /// Messages in flight per channel (`--pipeline-depth`).
    pub depth: usize,
    /// Images per step (sets the bytes of every message).
    pub batch: u64,
    /// Steps simulated (a segment: the pipeline fills, runs and drains).
    pub steps: usize,
    /// Cores all the workers share (they run on one machine), or `None`: every worker has cores of
    /// its own. When more workers compute at once than there are cores for, each computes at its
    /// fair share (the default runtime's thread per node on a machine with fewer cores).
    pub cores: Option<usize>,
    /// Cores a computing worker keeps busy (its intra-op threads; counts only with `cores`).
    pub threads_per_worker: usize,
    /// Whether the segment starts cold (a new process's first epoch): each node's first trunk pass
    /// also takes its [`NodeCost::warmup`].
    pub cold: bool,
}

impl Setup {
    /// `processes` processes of `workers_per_process` worker threads each (the threads runtime: one
    /// process; MPI: a rank per process), the nodes cut as the runtime cuts them ([`placement`]) by
    /// `costs`' totals, every worker at speed 1, pipeline depth 2, batch 128, 24 steps.
    pub fn new(
        topo: Topology,
        costs: Vec<NodeCost>,
        processes: usize,
        workers_per_process: usize,
        link: Link,
    ) -> Setup {
        let totals: Vec<f64> = costs.iter().map(NodeCost::total).collect();
        Setup::placed_by(topo, costs, &totals, (processes, workers_per_process), link)
    }

    /// [`Setup::new`] with the nodes cut by `weights` (one per node: MACs, or the times a run was
    /// placed by) instead of the costs.
    pub fn placed_by(
        topo: Topology,
        costs: Vec<NodeCost>,
        weights: &[f64],
        (processes, workers_per_process): (usize, usize),
        link: Link,
    ) -> Setup {
        let workers = placement(&topo, weights, processes, workers_per_process)
            .into_iter()
            .map(|(nodes, process)| (process, nodes))
            .collect();
        Setup::placed(topo, costs, workers, link)
    }

    /// The nodes on the given workers (`(process, nodes)` each, as a run's [`Trace`] records
    /// them), every worker at speed 1 on cores of its own, pipeline depth 2, batch 128, 24 steps.
    ///
    /// [`Trace`]: crate::parallel::Trace
    pub fn placed(
        topo: Topology,
        costs: Vec<NodeCost>,
        workers: Vec<(usize, Vec<usize>)>,
        link: Link,
    ) -> Setup {
        let (process, workers): (Vec<usize>, Vec<Vec<usize>>) = workers.into_iter().unzip();
        let n = workers.len();
        Setup {
            topo,
            costs,
            workers,
            process,
            speed: vec![1.0; n],
            link,
            depth: 2,
            batch: 128,
            steps: 24,
            cores: None,
            threads_per_worker: 1,
            cold: false,
        }
    }

    /// The sequential schedule: every node in turn on one worker.
    pub fn sequential_seconds(&self) -> f64 {
        self.costs.iter().map(NodeCost::total).sum()
    }
}

#[cfg(test)]
mod tests;
