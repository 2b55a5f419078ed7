//! [`profile`]: every node's training step timed on this machine, in isolation (one worker thread
//! running the nodes in turn, a fixed number of libtorch intra-op threads, after warm-up): what
//! `groupwise plan --profile` prints and what placement can balance.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::Batch;
use crate::local::Network;
use crate::plan::NodeId;

use super::layout::Layout;
use super::runner::{run_in_process, Slots};
use super::segment::{NodeTiming, RuntimeError, Segment};
use super::settings::Runtime;

/// How to profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProfileSettings {
    /// Images per step.
    pub batch: i64,
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// libtorch intra-op threads of the worker.
    pub threads: usize,
}

/// One node's measured step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeProfile {
    /// The node.
    pub node: NodeId,
    /// Forward MACs per image (the plan's count).
    pub macs: u64,
    /// Seconds per step: all of its compute.
    pub seconds_per_step: f64,
    /// Of it: forward passes.
    pub forward_seconds: f64,
    /// Of the forward passes: the trunk's (the rest is the classifier's; 0 in profiles written before
    /// it was recorded).
    #[serde(default)]
    pub trunk_seconds: f64,
    /// Of it: losses and backward passes.
    pub backward_seconds: f64,
    /// Of it: the optimizer's update.
    pub update_seconds: f64,
    /// CPU seconds per step of the worker thread (below `seconds_per_step` when it waited for a core).
    pub cpu_seconds: f64,
    /// Training MACs per second: 3 x forward MACs x batch (forward, input and weight gradients) over
    /// the step time, in billions.
    pub gmacs_per_second: f64,
    /// Seconds its warm-up steps took beyond as many timed steps: first-use costs (oneDNN's kernels
    /// generated, memory the allocator maps for the first time, thread pools started), which a run
    /// pays in its first steps and the timed steps leave out; 0 without warm-up steps and in profiles
    /// written before it was recorded.
    #[serde(default)]
    pub warmup_seconds: f64,
}

impl NodeProfile {
    /// The profile from the node's timed steps `t` and its warm-up steps `warm`.
    fn new(
        node: NodeId,
        macs: u64,
        batch: i64,
        t: &NodeTiming,
        warm: Option<&NodeTiming>,
    ) -> NodeProfile {
        let per = |s: f64| s / t.steps.max(1) as f64;
        let seconds = per(t.compute_seconds);
        let warmup_seconds = warm.map_or(0.0, |w| {
            (w.compute_seconds - seconds * w.steps as f64).max(0.0)
        });
        NodeProfile {
            node,
            macs,
            seconds_per_step: seconds,
            forward_seconds: per(t.forward_seconds),
            trunk_seconds: per(t.trunk_seconds),
            backward_seconds: per(t.backward_seconds),
            update_seconds: per(t.update_seconds),
            cpu_seconds: per(t.cpu_seconds),
            gmacs_per_second: 3.0 * macs as f64 * batch as f64 / seconds.max(1e-12) / 1e9,
            warmup_seconds,
        }
    }
}

impl NodeProfile {
    /// The mean of the same node's profiles (copies timed at once: the node under the load of as many
    /// workers); `None` for none.
    pub fn mean(copies: &[NodeProfile]) -> Option<NodeProfile> {
        let first = copies.first()?;
        let n = copies.len() as f64;
        let mean = |f: fn(&NodeProfile) -> f64| copies.iter().map(f).sum::<f64>() / n;
        Some(NodeProfile {
            node: first.node,
            macs: first.macs,
            seconds_per_step: mean(|p| p.seconds_per_step),
            forward_seconds: mean(|p| p.forward_seconds),
            trunk_seconds: mean(|p| p.trunk_seconds),
            backward_seconds: mean(|p| p.backward_seconds),
            update_seconds: mean(|p| p.update_seconds),
            cpu_seconds: mean(|p| p.cpu_seconds),
            // Inversely proportional to the step time.
            gmacs_per_second: first.gmacs_per_second * first.seconds_per_step
                / mean(|p| p.seconds_per_step).max(1e-12),
            warmup_seconds: mean(|p| p.warmup_seconds),
        })
    }
}

/// Times every node of `net` (its runtime's nodes: [`super::Topology`]) on random images of the
/// network's input shape: `settings.warmup` steps, then `settings.steps` timed ones, through the
/// workers' own code on one worker thread (every exchange is a hand-over inside the thread). Trains
/// `net` on those images as a side effect.
pub fn profile(
    net: Network,
    device: Device,
    settings: ProfileSettings,
) -> Result<(Network, Vec<NodeProfile>), RuntimeError> {
    let runtime = Runtime {
        threads_per_worker: Some(settings.threads),
        worker_threads: Some(1),
        ..Runtime::default()
    };
    let layout = Layout::new(&net.plan, &runtime, device, 1, 0, 1)?;
    let arch = &net.plan.arch;
    let shape = [
        settings.batch,
        arch.in_channels,
        arch.image_size,
        arch.image_size,
    ];
    let classes = arch.classes;
    let batches = move || {
        Box::new((0..).map(move |index| Batch {
            images: Tensor::randn(shape, (Kind::Float, Device::Cpu)),
            labels: Tensor::randint(classes, [shape[0]], (Kind::Int64, Device::Cpu)),
            index,
        }))
    };
    let mut slots = Slots::split(net, &layout);
    let mut on_step = |_| ControlFlow::Continue(());
    // The warm-up segment's timings, then the timed one's.
    let mut timings: [Vec<NodeTiming>; 2] = Default::default();
    for (slot, (steps, done)) in [
        (settings.warmup, 0),
        (settings.steps.max(1), settings.warmup),
    ]
    .into_iter()
    .enumerate()
    {
        if steps == 0 {
            continue;
        }
        let segment = Segment {
            batches: batches(),
            steps,
            lr: 0.01,
            done,
            stop: None,
        };
        timings[slot] = run_in_process(&layout, &mut slots, segment, &mut on_step)?.timings;
    }
    let topo = &layout.topo;
    let [warm, timed] = &timings;
    let profiles = timed
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let (name, macs) = (topo.name(id), topo.macs(id));
            NodeProfile::new(name, macs, settings.batch, t, warm.get(id))
        })
        .collect();
    Ok((slots.join(), profiles))
}
