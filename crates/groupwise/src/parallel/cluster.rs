//! What the trainer drives: a [`Cluster`] of processes running the nodes; [`Local`] is this process
//! (the sequential path, or worker threads).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use tch::Device;

use crate::checkpoint::Progress;
use crate::local::Network;
use crate::plan::{NodeId, Plan};

use super::layout::{resolve_fault, Layout, NodeCosts};
use super::runner::{run_in_process, Slots};
use super::segment::{NodeTiming, OnStep, RuntimeError, Segment, SegmentEnd};
use super::settings::{Placement, Runtime, Workers};
use super::topology::Topology;

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
    /// Runs one segment of training steps (all of them, or fewer when the leader is asked to stop);
    /// on the leader `net` comes back with every node's state.
    fn run_segment(
        &mut self,
        net: Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> (Network, Result<SegmentEnd, RuntimeError>);
    /// `sequential`, `threads` or `mpi:<ranks>` (the `runtime` of `summary.json`).
    fn describe(&self) -> String;
    /// Where the nodes run, in words, once started (for the run's log).
    fn placement(&self) -> String;
    /// Ends every process of the job after `message` (an error on this one); a no-op in one process,
    /// where returning the error ends the job.
    fn abort_job(&self, _message: &str) {}
}

/// This process: the sequential path or worker threads.
pub struct Local {
    runtime: Runtime,
    layout: Option<Layout>,
    /// The sequential path's injected fault: the node's name and the global step.
    fault: Option<(NodeId, usize)>,
}

impl Local {
    /// Nodes of this process, run as `runtime` says.
    pub fn new(runtime: Runtime) -> Self {
        Local {
            runtime,
            layout: None,
            fault: None,
        }
    }
}

impl Cluster for Local {
    fn start(&mut self, plan: &Plan, device: Device) -> Result<(), RuntimeError> {
        self.layout = match self.runtime.workers {
            Workers::Sequential => {
                self.runtime.validate(device)?;
                let topo = Topology::new(plan);
                self.fault = resolve_fault(&topo, self.runtime.fault)?
                    .map(|(id, step)| (topo.name(id), step));
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
    ) -> (Network, Result<SegmentEnd, RuntimeError>) {
        match &self.layout {
            None => {
                let mut net = net;
                let sequential = Sequential {
                    threads: self.runtime.threads_per_worker,
                    fault: self.fault,
                };
                let result = sequential.run(&mut net, segment, on_step);
                (net, result)
            }
            Some(layout) => {
                let layout = layout.clone();
                let mut slots = Slots::split(net, &layout);
                let result = self.run_threads(&mut slots, layout, segment, on_step);
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
            None => format!(
                "every node in turn in this thread (sequential), {} intra-op thread(s)",
                self.runtime
                    .threads_per_worker
                    .unwrap_or_else(|| tch::get_num_threads() as usize)
            ),
        }
    }
}

/// Steps of a run that measure its nodes for [`Placement::Measured`]: warm-up steps, then measured
/// ones, all on one worker thread (they train like any other step).
const CALIBRATION: (usize, usize) = (1, 3);

impl Local {
    /// One segment on worker threads; the run's first steps measure the nodes first when the
    /// placement asks for it, and the nodes are re-balanced over the workers by what they took.
    fn run_threads(
        &mut self,
        slots: &mut Slots,
        layout: Layout,
        mut segment: Segment,
        on_step: &mut OnStep,
    ) -> Result<SegmentEnd, RuntimeError> {
        let mut end = SegmentEnd::default();
        // Worth measuring only when some worker runs several nodes and there is more than one worker.
        let calibrate = self.runtime.placement == Placement::Measured
            && !layout.costs.seconds
            && (2..layout.local().len()).contains(&layout.worker_count());
        let mut layout = layout;
        if calibrate {
            let single = layout.single_worker();
            let (warm, measured) = CALIBRATION;
            let mut measurement = Vec::new();
            for (i, n) in [warm, measured].into_iter().enumerate() {
                // (a stop request may end these steps early: the layout then waits for the next segment)
                let n = n.min(segment.steps);
                if n == 0 {
                    continue;
                }
                let part = Segment {
                    batches: Box::new((&mut segment.batches).take(n)),
                    steps: n,
                    lr: segment.lr,
                    done: segment.done,
                    stop: segment.stop,
                };
                let part = run_in_process(&single, slots, part, on_step)?;
                segment.steps -= part.steps;
                segment.done += part.steps;
                let stopped = part.steps < n;
                if i == 1 && part.steps > 0 {
                    measurement = part.timings.clone();
                }
                merge(&mut end, part);
                if stopped {
                    return Ok(end);
                }
            }
            if !measurement.is_empty() {
                let per_node = measurement
                    .iter()
                    .map(|t| t.compute_seconds / t.steps.max(1) as f64)
                    .collect();
                let first = segment.done + 1 - measurement[0].steps;
                layout = layout.rebalanced(NodeCosts::seconds(
                    per_node,
                    format!(
                        "step time measured on one worker thread (steps {first}-{})",
                        segment.done
                    ),
                ));
                tracing::info!("placement: {}", layout.describe());
                self.layout = Some(layout.clone());
            }
        }
        if segment.steps > 0 {
            let rest = run_in_process(&layout, slots, segment, on_step)?;
            merge(&mut end, rest);
        }
        Ok(end)
    }
}

/// Adds the part `more` of a segment to `into`: its steps, and its timings node by node (the same
/// nodes in the same order, or `into` without any yet); the trace is the later part's (the segment's
/// last steps), unless it has none.
fn merge(into: &mut SegmentEnd, more: SegmentEnd) {
    into.steps += more.steps;
    if !more.trace.intervals.is_empty() {
        into.trace = more.trace;
    }
    if into.timings.is_empty() {
        into.timings = more.timings;
        return;
    }
    for (a, b) in into.timings.iter_mut().zip(more.timings) {
        a.add(&b);
    }
}

/// The sequential path: `Network::train_step` per batch in the calling thread (until a stop is
/// requested), with
/// `--threads-per-worker` (when given) as its intra-op threads for the segment and
/// `--inject-fault` failing as a worker would; one timing entry for the whole network.
struct Sequential {
    /// Intra-op threads of the one worker (`None`: the caller's, set by `--threads`).
    threads: Option<usize>,
    /// `(node, global step)` to fail at.
    fault: Option<(NodeId, usize)>,
}

impl Sequential {
    fn run(
        &self,
        net: &mut Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> Result<SegmentEnd, RuntimeError> {
        // The caller's threads come back after the segment (evaluation runs with `--threads`).
        let caller = tch::get_num_threads();
        if let Some(t) = self.threads {
            crate::device::set_intra_op_threads(t);
        }
        let result = self.steps(net, segment, on_step);
        crate::device::set_intra_op_threads(caller as usize);
        result
    }

    fn steps(
        &self,
        net: &mut Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> Result<SegmentEnd, RuntimeError> {
        let device = net.head.params.vs.device();
        let mut compute = 0.0;
        let mut wait = 0.0;
        let mut cpu = Duration::ZERO;
        let mut steps = 0;
        let mut batches = segment.batches.take(segment.steps);
        loop {
            if segment.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                break;
            }
            let t0 = Instant::now();
            let Some(batch) = batches.next() else { break };
            wait += t0.elapsed().as_secs_f64();
            let step = segment.done + steps + 1;
            if let Some((node, _)) = self.fault.filter(|f| f.1 == step) {
                return Err(RuntimeError::Failed(format!(
                    "node {node} failed at step {step}: injected fault (--inject-fault)"
                )));
            }
            let t1 = Instant::now();
            let c1 = ThreadTime::now();
            let x = batch.images.to_device(device);
            let y = batch.labels.to_device(device);
            let stats = net.train_step(&x, &y, segment.lr);
            compute += t1.elapsed().as_secs_f64();
            cpu += c1.elapsed();
            steps += 1;
            if on_step(stats) == ControlFlow::Break(()) {
                return Err(RuntimeError::Stopped);
            }
        }
        Ok(SegmentEnd {
            steps,
            timings: vec![NodeTiming {
                node: "all".into(),
                rank: 0,
                steps,
                compute_seconds: compute,
                cpu_seconds: cpu.as_secs_f64(),
                wait_seconds: wait,
                ..NodeTiming::default()
            }],
            trace: Default::default(),
        })
    }
}
