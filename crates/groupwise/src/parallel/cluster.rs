//! What the trainer drives: a [`Cluster`] of processes running the nodes, and the [`Layout`] that
//! says where each node runs, decided once per run by one function for threads and MPI alike.

use std::ops::ControlFlow;
use std::time::Instant;

use tch::Device;

use crate::checkpoint::Progress;
use crate::local::Network;
use crate::plan::{balanced_boundaries, Plan};

use super::runner::{NodeRunner, Slots};
use super::transport::Mailboxes;
use super::{cores, NodeTiming, OnStep, Runtime, RuntimeError, Segment, Topology, Workers};

/// Where the nodes of a run execute: this process (sequentially or as threads), or MPI ranks.
///
/// The trainer calls [`Cluster::start`] once with the run's plan, then [`Cluster::run_segment`] per
/// epoch (or part of one); between segments the leader holds the whole network.
pub trait Cluster {
    /// Whether this process writes the run directory, evaluates and reports (rank 0).
    fn leader(&self) -> bool {
        true
    }
    /// The leader's `bytes` replace every other process's (the run's config, before anything is
    /// built).
    fn broadcast(&self, _bytes: &mut Vec<u8>) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// The leader's network state and progress reach every process (once it has loaded or
    /// initialised them).
    fn share_start(
        &self,
        _net: &mut Network,
        _progress: &mut Progress,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Decides where every node of `plan` runs (`device`: the run's device). Called once, before the
    /// first segment.
    fn start(&mut self, plan: &Plan, device: Device) -> Result<(), RuntimeError>;
    /// Runs one segment of training steps; on the leader `net` comes back with every node's state.
    fn run_segment(
        &mut self,
        net: Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> (Network, Result<Vec<NodeTiming>, RuntimeError>);
    /// `sequential`, `threads` or `mpi:<ranks>` (the `runtime` of `summary.json`).
    fn describe(&self) -> String;
    /// Where the nodes run, in words, once started (for the run's log).
    fn placement(&self) -> String;
    /// Ends every process of the job after `message` (an error on this one); a no-op in one process,
    /// where returning the error ends the job.
    fn abort_job(&self, _message: &str) {}
}

/// Where every node runs, for one run: its process (rank) and device, the intra-op threads of the
/// workers of this process, the pipeline depth and an injected fault.
#[derive(Debug)]
pub struct Layout {
    /// The node graph.
    pub topo: Topology,
    /// Rank of every node (all 0 in one process).
    pub ranks: Vec<usize>,
    /// Device of every node.
    pub devices: Vec<Device>,
    /// This process's rank.
    pub rank: usize,
    /// libtorch intra-op threads of each worker of this process.
    pub threads_per_worker: usize,
    /// Messages in flight per channel.
    pub depth: usize,
    /// `(node, global step)` to fail at (fault injection).
    pub fault: Option<(usize, usize)>,
}

impl Layout {
    /// The layout of `plan` over `processes` processes (1 for threads), this one being `rank`, with
    /// `processes_here` of them on this machine (they share its cores). Nodes in id order are cut into
    /// contiguous runs balancing forward MACs, one per process ([`balanced_boundaries`], the rule that
    /// also cuts plans); devices are given round-robin over `runtime.devices` (CUDA) in node order.
    pub fn new(
        plan: &Plan,
        runtime: &Runtime,
        base: Device,
        processes: usize,
        rank: usize,
        processes_here: usize,
    ) -> Result<Layout, RuntimeError> {
        runtime.validate(base)?;
        let topo = Topology::new(plan);
        let n = topo.len();
        if processes == 0 || processes > n {
            return Err(RuntimeError::Failed(format!(
                "{processes} MPI ranks but this plan has {n} nodes; run with 1 to {n} ranks \
                 (mpirun -np {n})"
            )));
        }
        let macs: Vec<f64> = (0..n).map(|id| topo.macs(id) as f64).collect();
        let ends = balanced_boundaries(&macs, processes);
        let ranks: Vec<usize> = (0..n)
            .map(|id| ends.iter().take_while(|&&end| end < id).count())
            .collect();
        let devices = (0..n)
            .map(|id| match runtime.devices.as_slice() {
                [] => base,
                list => Device::Cuda(list[id % list.len()]),
            })
            .collect();
        let here = ranks.iter().filter(|&&r| r == rank).count();
        let threads_per_worker = runtime
            .threads_per_worker
            .unwrap_or_else(|| default_threads_per_worker(here * processes_here.max(1)));
        let fault = match runtime.fault {
            None => None,
            Some(f) => Some((
                topo.find(f.node).ok_or_else(|| {
                    RuntimeError::Failed(format!(
                        "fault spec {f}: no node {} (nodes: {})",
                        f.node,
                        (0..n)
                            .map(|i| topo.name(i).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
                f.step,
            )),
        };
        Ok(Layout {
            topo,
            ranks,
            devices,
            rank,
            threads_per_worker,
            depth: runtime.pipeline_depth,
            fault,
        })
    }

    /// The nodes of this process.
    pub fn local(&self) -> Vec<usize> {
        (0..self.topo.len())
            .filter(|&id| self.ranks[id] == self.rank)
            .collect()
    }

    /// In words: which nodes run where, with how many threads.
    pub fn describe(&self) -> String {
        let processes = self.ranks.iter().max().map_or(1, |r| r + 1);
        let runs: Vec<String> = (0..processes)
            .map(|r| {
                let names: Vec<String> = (0..self.topo.len())
                    .filter(|&id| self.ranks[id] == r)
                    .map(|id| self.topo.name(id).to_string())
                    .collect();
                format!("rank {r}: {}", names.join(" "))
            })
            .collect();
        format!(
            "{} nodes as worker threads ({} intra-op thread(s) each, pipeline depth {}); {}",
            self.topo.len(),
            self.threads_per_worker,
            self.depth,
            runs.join("; ")
        )
    }
}

/// Default intra-op threads per worker: the cores shared by the workers of this machine.
pub fn default_threads_per_worker(workers_here: usize) -> usize {
    (cores() / workers_here.max(1)).max(1)
}

/// This process: the sequential path or one thread per node.
pub struct Local {
    runtime: Runtime,
    layout: Option<Layout>,
}

impl Local {
    /// Nodes of this process, run as `runtime` says.
    pub fn new(runtime: Runtime) -> Self {
        Local {
            runtime,
            layout: None,
        }
    }
}

impl Cluster for Local {
    fn start(&mut self, plan: &Plan, device: Device) -> Result<(), RuntimeError> {
        self.layout = match self.runtime.workers {
            Workers::Sequential => {
                self.runtime.validate(device)?;
                None
            }
            Workers::Threads => Some(Layout::new(plan, &self.runtime, device, 1, 0, 1)?),
        };
        Ok(())
    }

    fn run_segment(
        &mut self,
        net: Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> (Network, Result<Vec<NodeTiming>, RuntimeError>) {
        match &self.layout {
            None => {
                let mut net = net;
                let result = run_sequential(&mut net, segment, on_step);
                (net, result)
            }
            Some(layout) => {
                let mut slots = Slots::split(net, layout);
                let runner = NodeRunner {
                    layout,
                    leader: true,
                };
                let mailboxes = Mailboxes::new(layout.depth);
                let result = runner.run(&mut slots, &mailboxes, segment, on_step, None);
                (slots.join(), result)
            }
        }
    }

    fn describe(&self) -> String {
        match self.runtime.workers {
            Workers::Sequential => "sequential".into(),
            Workers::Threads => "threads".into(),
        }
    }

    fn placement(&self) -> String {
        match &self.layout {
            Some(layout) => layout.describe(),
            None => "every node in turn in this thread (sequential)".into(),
        }
    }
}

/// The sequential path: `Network::train_step` per batch; one timing entry for the whole network.
fn run_sequential(
    net: &mut Network,
    segment: Segment,
    on_step: &mut OnStep,
) -> Result<Vec<NodeTiming>, RuntimeError> {
    let device = net.head.params.vs.device();
    let mut compute = 0.0;
    let mut wait = 0.0;
    let mut steps = 0;
    let mut batches = segment.batches.take(segment.steps);
    loop {
        let t0 = Instant::now();
        let Some(batch) = batches.next() else { break };
        wait += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let x = batch.images.to_device(device);
        let y = batch.labels.to_device(device);
        let stats = net.train_step(&x, &y, segment.lr);
        compute += t1.elapsed().as_secs_f64();
        steps += 1;
        if on_step(stats) == ControlFlow::Break(()) {
            return Err(RuntimeError::Stopped);
        }
    }
    Ok(vec![NodeTiming {
        node: "all".into(),
        rank: 0,
        steps,
        compute_seconds: compute,
        wait_seconds: wait,
        comm_seconds: 0.0,
        bytes_sent: 0,
    }])
}
