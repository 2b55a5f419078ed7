//! What the trainer drives: a [`Cluster`] of processes running the nodes; [`Local`] is this process
//! (the sequential path, or every node as a thread).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tch::Device;

use crate::checkpoint::Progress;
use crate::local::Network;
use crate::plan::Plan;

use super::layout::Layout;
use super::runner::{NodeRunner, Slots};
use super::segment::{NodeTiming, OnStep, RuntimeError, Segment, SegmentEnd};
use super::settings::{Runtime, Workers};
use super::transport::Mailboxes;

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
    ) -> (Network, Result<SegmentEnd, RuntimeError>) {
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

/// The sequential path: `Network::train_step` per batch (until a stop is requested); one timing
/// entry for the whole network.
fn run_sequential(
    net: &mut Network,
    segment: Segment,
    on_step: &mut OnStep,
) -> Result<SegmentEnd, RuntimeError> {
    let device = net.head.params.vs.device();
    let mut compute = 0.0;
    let mut wait = 0.0;
    let mut steps = 0;
    let mut batches = segment.batches.take(segment.steps);
    loop {
        if segment.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            break;
        }
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
    Ok(SegmentEnd {
        steps,
        timings: vec![NodeTiming {
            node: "all".into(),
            rank: 0,
            steps,
            compute_seconds: compute,
            wait_seconds: wait,
            comm_seconds: 0.0,
            bytes_sent: 0,
        }],
    })
}
