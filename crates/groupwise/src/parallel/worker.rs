//! One node's training loop: receive, compute, send, step; the same code for every transport.
//!
//! The step itself is the library's ([`step_units`], [`head_step`]), the one the sequential oracle
//! runs; a worker only supplies its [`Exchange`] over the [`Transport`], and the tail columns' gradient
//! messages (K=1 with G > 1), which have no sequential counterpart because autograd does it there.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use tch::{Device, Tensor};

use crate::local::{cat_channels, head_step, step_units, Exchange, Head, TailColumn, Unit};

use super::message::{Report, Timing};
use super::topology::{TailPlacement, Topology};
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
    /// Fail on this global step (fault injection, `--inject-fault`).
    pub fail_at: Option<usize>,
    /// Time accounting.
    pub meter: Timing,
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

    fn report(&mut self, report: Report) -> Result<(), Aborted> {
        let collector = self.topo.collector();
        self.send(collector, Kind::Stats, &report.encode())
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
                    "node {name} failed at step {}: injected fault (--inject-fault)",
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
        let timing = self.meter.encode();
        self.send(collector, Kind::Timing, &timing)
            .map_err(|Aborted(m)| m)
    }

    fn unit_step(&mut self, unit: &mut Unit, work: &Work) -> Result<(), Aborted> {
        let module = unit.module;
        let input = self.input(work)?;
        let labels = work.labels.to_device(self.device);
        let mut exchange = Peers {
            worker: self,
            module,
        };
        let (stats, _) = step_units(
            std::slice::from_mut(unit),
            &input,
            &labels,
            &work.images,
            work.lr,
            &mut exchange,
        )?;
        self.report(Report::Unit(stats[0]))
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
        let (loss, correct) = if self.topo.tail == TailPlacement::Separate {
            // The columns are other nodes: their outputs are leaves here, and each gets back the
            // gradient of its slice.
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
            let out = head_step(head, tail, &cat_channels(&parts), &labels, work.lr);
            for (&s, p) in sources.iter().zip(&parts) {
                self.send(s, Kind::Gradient, &p.grad())?;
            }
            out
        } else {
            let input = self.input(work)?;
            head_step(head, tail, &input, &labels, work.lr)
        };
        self.report(Report::Head {
            loss,
            correct,
            batch: labels.size()[0],
        })
    }
}

/// A unit's [`Exchange`] over the transport: its slice to the groups whose auxiliary classifiers read
/// it and to the next module, its logits to every other group of its module.
struct Peers<'w, 'a> {
    worker: &'w mut Worker<'a>,
    module: usize,
}

impl Exchange for Peers<'_, '_> {
    type Error = Aborted;

    fn slices(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Aborted> {
        let w = &mut *self.worker;
        let (topo, k) = (w.topo, self.module);
        for (g, slice) in own {
            // Peers first: they are at this same step, the next module may be behind.
            for h in topo.slice_readers(k, *g) {
                w.send(topo.unit(k, h), Kind::Slice, slice)?;
            }
            for c in topo.consumers(topo.unit(k, *g)) {
                w.send(c, Kind::Activation, slice)?;
            }
        }
        (0..topo.groups)
            .map(|h| match own.iter().find(|(g, _)| *g == h) {
                Some((_, slice)) => Ok(slice.shallow_clone()),
                None if own.iter().any(|(g, _)| topo.reads_slice(k, *g, h)) => {
                    w.recv(topo.unit(k, h), Kind::Slice)
                }
                None => Ok(Tensor::new()),
            })
            .collect()
    }

    fn logits(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Aborted> {
        let w = &mut *self.worker;
        let (topo, k) = (w.topo, self.module);
        for (_, logits) in own {
            for h in (0..topo.groups).filter(|h| own.iter().all(|(o, _)| o != h)) {
                w.send(topo.unit(k, h), Kind::Logits, logits)?;
            }
        }
        (0..topo.groups)
            .map(|h| match own.iter().find(|(g, _)| *g == h) {
                Some((_, z)) => Ok(z.shallow_clone()),
                None => w.recv(topo.unit(k, h), Kind::Logits),
            })
            .collect()
    }
}
