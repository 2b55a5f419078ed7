//! One node's training loop: receive, compute, send, step; the same code for every transport.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tch::{Device, Kind as DType, Tensor};

use crate::local::{cat_channels, Head, TailColumn, Unit};

use super::topology::Topology;
use super::transport::{Aborted, Channel, Kind, Transport};

/// The state a node owns (moved into its worker for a segment, returned at its end).
#[derive(Debug)]
pub enum NodeState {
    /// Unit (k, g).
    Unit(Unit),
    /// A final column trained through the head.
    Tail(TailColumn),
    /// The head, with the final module's column when it shares the head's node.
    Head {
        /// The head.
        head: Head,
        /// Final columns run inside this node (none, or the one column when G = 1).
        tail: Vec<TailColumn>,
    },
}

/// One training step's input for a node.
pub struct Work {
    /// `[B, C, H, W]` on the CPU (used by nodes that read the images).
    pub images: Tensor,
    /// `[B]` int64 on the CPU.
    pub labels: Tensor,
    /// Learning rate of the step.
    pub lr: f64,
    /// Global step number (1-based, counted over the whole run).
    pub step: usize,
}

/// Where a node's time went during a segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meter {
    /// Steps done.
    pub steps: usize,
    /// Whole time in steps.
    pub total: Duration,
    /// Time waiting: for inputs, peers, gradients, data, and for room in a full channel.
    pub wait: Duration,
    /// Time sending (serialising and handing over), without waits for room.
    pub comm: Duration,
    /// Payload bytes sent.
    pub bytes: u64,
}

impl Meter {
    /// Compute time: the rest of the step.
    pub fn compute(&self) -> Duration {
        self.total.saturating_sub(self.wait + self.comm)
    }

    /// As the `Timing` message's tensor: `[steps, compute, wait, comm, bytes]` (float64).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&[
            self.steps as f64,
            self.compute().as_secs_f64(),
            self.wait.as_secs_f64(),
            self.comm.as_secs_f64(),
            self.bytes as f64,
        ])
    }
}

/// A node's worker: its id, the graph, the transport and its device.
pub struct Worker<'a> {
    /// Node id.
    pub id: usize,
    /// The node graph.
    pub topo: &'a Topology,
    /// How tensors move.
    pub transport: &'a dyn Transport,
    /// The node's device.
    pub device: Device,
    /// Fail on this global step (the fault-injection hook, `GROUPWISE_FAULT`).
    pub fail_at: Option<usize>,
    /// Time accounting.
    pub meter: Meter,
}

impl Worker<'_> {
    fn send(&mut self, to: usize, kind: Kind, t: &Tensor) -> Result<(), Aborted> {
        let start = Instant::now();
        let sent = self.transport.send(Channel::new(self.id, to, kind), t)?;
        let spent = start.elapsed();
        self.meter.wait += sent.blocked;
        self.meter.comm += spent.saturating_sub(sent.blocked);
        self.meter.bytes += sent.bytes;
        Ok(())
    }

    fn recv(&mut self, from: usize, kind: Kind) -> Result<Tensor, Aborted> {
        let start = Instant::now();
        let t = self.transport.recv(Channel::new(from, self.id, kind))?;
        self.meter.wait += start.elapsed();
        Ok(if t.device() == self.device {
            t
        } else {
            t.to_device(self.device)
        })
    }

    /// The node's full input for this step.
    fn input(&mut self, work: &Work) -> Result<Tensor, Aborted> {
        match self.topo.inputs(self.id) {
            None => Ok(work.images.to_device(self.device)),
            Some(sources) => {
                let parts = sources
                    .iter()
                    .map(|&s| self.recv(s, Kind::Activation))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(cat_channels(&parts))
            }
        }
    }

    fn report(&mut self, values: &[f64]) -> Result<(), Aborted> {
        let collector = self.topo.collector();
        self.send(collector, Kind::Stats, &Tensor::from_slice(values))
    }

    /// Trains the node on every `Work` of the feed, in order, until the feed closes; then sends its
    /// timings to the collector. An error names the node.
    pub fn run(&mut self, node: &mut NodeState, feed: &Receiver<Work>) -> Result<(), String> {
        let name = self.topo.name(self.id);
        loop {
            // A step's time starts with waiting for its batch.
            let start = Instant::now();
            let Ok(work) = feed.recv() else { break };
            self.meter.wait += start.elapsed();
            if self.fail_at == Some(work.step) {
                return Err(format!(
                    "node {name} failed at step {}: injected fault (GROUPWISE_FAULT)",
                    work.step
                ));
            }
            let result = match node {
                NodeState::Unit(unit) => self.unit_step(unit, &work),
                NodeState::Tail(tail) => self.tail_step(tail, &work),
                NodeState::Head { head, tail } => self.head_step(head, tail, &work),
            };
            result.map_err(|Aborted(m)| m)?;
            self.meter.total += start.elapsed();
            self.meter.steps += 1;
        }
        let collector = self.topo.collector();
        let timing = self.meter.to_tensor();
        self.send(collector, Kind::Timing, &timing)
            .map_err(|Aborted(m)| m)
    }

    fn unit_step(&mut self, unit: &mut Unit, work: &Work) -> Result<(), Aborted> {
        let (k, g) = (unit.module, unit.group);
        let groups = self.topo.groups;
        let input = self.input(work)?;
        let own = unit.forward_trunk(&input, true);
        let slice = own.detach();
        // Peers first: they are at this same step, the next module may be behind.
        for h in self.topo.slice_readers(k, g) {
            self.send(self.topo.unit(k, h), Kind::Slice, &slice)?;
        }
        for c in self.topo.consumers(self.id) {
            self.send(c, Kind::Activation, &slice)?;
        }
        let mut slices = Vec::with_capacity(groups);
        for h in 0..groups {
            slices.push(if h == g {
                slice.shallow_clone()
            } else if self.topo.reads_slice(k, g, h) {
                self.recv(self.topo.unit(k, h), Kind::Slice)?
            } else {
                Tensor::new()
            });
        }
        let aux_input = unit.aux_input(&own, &slices);
        let logits = unit.forward_aux(&aux_input, true);
        let mut peers = Vec::with_capacity(groups);
        if groups > 1 {
            let detached = logits.detach();
            for h in (0..groups).filter(|&h| h != g) {
                self.send(self.topo.unit(k, h), Kind::Logits, &detached)?;
            }
            for h in 0..groups {
                peers.push(if h == g {
                    detached.shallow_clone()
                } else {
                    self.recv(self.topo.unit(k, h), Kind::Logits)?
                });
            }
        } else {
            peers.push(logits.detach());
        }
        let labels = work.labels.to_device(self.device);
        // Only InfoPro's decoders read the images outside the first module.
        let images = if unit.needs_images() {
            work.images.to_device(self.device)
        } else {
            Tensor::new()
        };
        let s = unit.step(&aux_input, &logits, &peers, &labels, &images, work.lr);
        self.report(&[
            s.cross_entropy,
            s.diversity,
            s.correct as f64,
            s.reconstruction,
        ])
    }

    fn tail_step(&mut self, tail: &mut TailColumn, work: &Work) -> Result<(), Aborted> {
        let input = self.input(work)?;
        let out = tail.forward(&input, true);
        let head = self.topo.head();
        self.send(head, Kind::Activation, &out.detach())?;
        let grad = self.recv(head, Kind::Gradient)?;
        // d/dθ sum(out * grad) is exactly the vector-Jacobian product the head's loss sends back.
        (&out * &grad).sum(out.kind()).backward();
        tail.step(work.lr);
        Ok(())
    }

    fn head_step(
        &mut self,
        head: &mut Head,
        tail: &mut [TailColumn],
        work: &Work,
    ) -> Result<(), Aborted> {
        let labels = work.labels.to_device(self.device);
        let (loss, correct) = if self.topo.separate_tail {
            let sources = self.topo.inputs(self.id).unwrap_or_default();
            let parts = sources
                .iter()
                .map(|&s| {
                    Ok(self
                        .recv(s, Kind::Activation)?
                        .detach()
                        .set_requires_grad(true))
                })
                .collect::<Result<Vec<_>, Aborted>>()?;
            let z = head.forward(&cat_channels(&parts), true);
            let out = head.loss_backward(&z, &labels);
            for (&s, p) in sources.iter().zip(&parts) {
                self.send(s, Kind::Gradient, &p.grad())?;
            }
            out
        } else {
            let input = self.input(work)?;
            let features = match tail.first() {
                Some(column) => column.forward(&input, true),
                None => input,
            };
            let z = head.forward(&features, true);
            head.loss_backward(&z, &labels)
        };
        for column in tail.iter_mut() {
            column.step(work.lr);
        }
        head.step(work.lr);
        self.report(&[loss, correct as f64, labels.size()[0] as f64])
    }
}

/// Parses a fault-injection spec `<node>@<step>` (e.g. `m1.g0@5`): that node fails when it reaches that
/// global step. A testing hook for the failure path (the CLI reads it from `GROUPWISE_FAULT`).
pub fn parse_fault(spec: &str, topo: &Topology) -> Result<(usize, usize), String> {
    let bad = || format!("fault spec {spec}: expected <node>@<step>, e.g. m0.g1@3");
    let (name, step) = spec.split_once('@').ok_or_else(bad)?;
    let step: usize = step.parse().map_err(|_| bad())?;
    let id = topo.find(name).ok_or_else(|| {
        format!(
            "fault spec {spec}: no node {name} (nodes: {})",
            (0..topo.len())
                .map(|i| topo.name(i))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok((id, step))
}

/// Float64 statistics vector of a `Stats` message.
pub fn stats_values(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(DType::Double).to_device(Device::Cpu);
    Vec::<f64>::try_from(&t).unwrap_or_default()
}
