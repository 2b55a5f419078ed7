//! One worker thread's training loop over its nodes: receive, compute, send, step; the same code for
//! every transport.
//!
//! The step itself is the library's ([`step_units`], [`head_step`]), the one the sequential oracle
//! runs; a worker only supplies its [`Exchange`] over the [`Transport`], and the tail columns' gradient
//! messages (K=1 with G > 1), which have no sequential counterpart because autograd does it there.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cpu_time::ThreadTime;
use tch::{Device, Tensor};

use crate::local::{cat_channels, head_step, step_units, Exchange, Head, Phase, TailColumn, Unit};

use super::message::{Report, Span, Timing};
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

/// The nodes of one worker thread, grouped the way a step runs them: the units of each module held
/// here (one [`step_units`] call per module), then the final columns, then the head.
#[derive(Default)]
pub struct Held {
    modules: Vec<ModuleHere>,
    tails: Vec<(usize, TailColumn)>,
    head: Option<(usize, Head, Vec<TailColumn>)>,
}

/// The units of one module held by a worker, with their node ids.
struct ModuleHere {
    module: usize,
    ids: Vec<usize>,
    units: Vec<Unit>,
}

impl Held {
    /// Groups `nodes` (a worker's, in node order).
    pub fn new(nodes: Vec<(usize, NodeState)>) -> Held {
        let mut held = Held::default();
        for (id, state) in nodes {
            match state {
                NodeState::Unit(u) => match held.modules.last_mut() {
                    Some(m) if m.module == u.module => {
                        m.ids.push(id);
                        m.units.push(u);
                    }
                    _ => held.modules.push(ModuleHere {
                        module: u.module,
                        ids: vec![id],
                        units: vec![u],
                    }),
                },
                NodeState::Tail(t) => held.tails.push((id, t)),
                NodeState::Head { head, tail } => held.head = Some((id, head, tail)),
            }
        }
        held
    }

    /// The nodes back, by id.
    pub fn into_nodes(self) -> Vec<(usize, NodeState)> {
        let mut out: Vec<(usize, NodeState)> = Vec::new();
        for m in self.modules {
            out.extend(
                m.ids
                    .into_iter()
                    .zip(m.units.into_iter().map(NodeState::Unit)),
            );
        }
        out.extend(
            self.tails
                .into_iter()
                .map(|(id, t)| (id, NodeState::Tail(t))),
        );
        if let Some((id, head, tail)) = self.head {
            out.push((id, NodeState::Head { head, tail }));
        }
        out
    }

    /// Node ids held, in node order.
    pub fn ids(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self.modules.iter().flat_map(|m| m.ids.clone()).collect();
        out.extend(self.tails.iter().map(|(id, _)| *id));
        out.extend(self.head.as_ref().map(|(id, _, _)| *id));
        out
    }
}

/// Steps of a segment whose compute every node keeps, span by span, for the run's trace: the last
/// ones (a Gantt chart of the pipeline full shows 3 of them; one more keeps the steps still running at
/// the start of the window).
pub const TRACE_STEPS: usize = 4;

/// Where a worker's compute time is being counted: since when, on the wall and the thread CPU clocks.
struct Clock {
    wall: Instant,
    cpu: ThreadTime,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: ThreadTime::now(),
        }
    }
}

/// A worker thread: the nodes it runs (contiguous, in node order), the graph, the transport and the
/// device.
pub struct Worker<'a> {
    /// The node graph.
    pub topo: &'a Topology,
    /// How tensors move.
    pub transport: &'a dyn Transport,
    /// The nodes' device.
    pub device: Device,
    /// `(node, global step)`: fail there (fault injection, `--inject-fault`), when the node is here.
    pub fail_at: Option<(usize, usize)>,
    /// Time accounting per node held, by id.
    pub meters: BTreeMap<usize, Timing>,
    clock: Clock,
    /// An instant and the same moment in seconds since the Unix epoch: spans go on the wall clock
    /// that every process of the machine shares.
    anchor: (Instant, f64),
    /// The step being run.
    step: usize,
}

impl<'a> Worker<'a> {
    /// A worker for the nodes `ids`.
    pub fn new(
        ids: &[usize],
        topo: &'a Topology,
        transport: &'a dyn Transport,
        device: Device,
        fail_at: Option<(usize, usize)>,
    ) -> Self {
        Worker {
            topo,
            transport,
            device,
            fail_at: fail_at.filter(|(id, _)| ids.contains(id)),
            meters: ids.iter().map(|&id| (id, Timing::default())).collect(),
            clock: Clock::now(),
            anchor: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
            step: 0,
        }
    }

    fn unix_seconds(&self, t: Instant) -> f64 {
        self.anchor.1 + t.saturating_duration_since(self.anchor.0).as_secs_f64()
    }

    /// Counts the compute since the last charge as node `id`'s, in `phase`.
    fn charge(&mut self, id: usize, phase: Option<Phase>) {
        let now = Clock::now();
        let span = phase.map(|phase| Span {
            step: self.step,
            phase,
            start: self.unix_seconds(self.clock.wall),
            end: self.unix_seconds(now.wall),
        });
        let meter = self.meters.entry(id).or_default();
        meter.add_compute(phase, now.wall.duration_since(self.clock.wall));
        meter.cpu += now.cpu.duration_since(self.clock.cpu);
        meter.trace.extend(span);
        self.clock = now;
    }

    fn send(&mut self, from: usize, to: usize, kind: Kind, t: &Tensor) -> Result<(), Aborted> {
        self.charge(from, None);
        let start = Instant::now();
        let sent = self.transport.send(Channel::new(from, to, kind), t)?;
        let spent = start.elapsed();
        let meter = self.meters.entry(from).or_default();
        meter.wait += sent.blocked;
        meter.comm += spent.saturating_sub(sent.blocked);
        meter.bytes += sent.bytes;
        self.clock = Clock::now();
        Ok(())
    }

    fn recv(&mut self, from: usize, to: usize, kind: Kind) -> Result<Tensor, Aborted> {
        self.charge(to, None);
        let start = Instant::now();
        let t = self.transport.recv(Channel::new(from, to, kind))?;
        self.meters.entry(to).or_default().wait += start.elapsed();
        self.clock = Clock::now();
        Ok(if t.device() == self.device {
            t
        } else {
            t.to_device(self.device)
        })
    }

    /// The input of the nodes `ids` (they read the same producers, or the images): received on each
    /// node's channels, the first node's copy used (the others' are the same tensors).
    fn input(&mut self, ids: &[usize], work: &Work) -> Result<Tensor, Aborted> {
        let mut first = None;
        for &id in ids {
            let Some(sources) = self.topo.inputs(id) else {
                first.get_or_insert_with(|| work.images.to_device(self.device));
                continue;
            };
            let parts = sources
                .iter()
                .map(|&s| self.recv(s, id, Kind::Activation))
                .collect::<Result<Vec<_>, _>>()?;
            if first.is_none() {
                first = Some(cat_channels(&parts));
            }
        }
        Ok(first.unwrap_or_else(Tensor::new))
    }

    fn report(&mut self, id: usize, report: Report) -> Result<(), Aborted> {
        let collector = self.topo.collector();
        self.send(id, collector, Kind::Stats, &report.encode())
    }

    /// Trains the nodes on every `Work` of the feed, in order, until the feed closes; then sends each
    /// node's timings to the collector. An error names the node.
    pub fn run(&mut self, held: &mut Held, feed: &Receiver<Work>) -> Result<(), String> {
        let ids = held.ids();
        // Waiting for a batch is the worker's, counted on its first node.
        let first = ids.first().copied().unwrap_or(0);
        loop {
            let start = Instant::now();
            let Ok(work) = feed.recv() else { break };
            self.meters.entry(first).or_default().wait += start.elapsed();
            self.step = work.step;
            for meter in self.meters.values_mut() {
                meter.trace.retain(|s| s.step + TRACE_STEPS > work.step);
            }
            self.clock = Clock::now();
            if let Some((id, step)) = self.fail_at.filter(|f| f.1 == work.step) {
                return Err(format!(
                    "node {} failed at step {step}: injected fault (--inject-fault)",
                    self.topo.name(id)
                ));
            }
            self.step(held, &work).map_err(|Aborted(m)| m)?;
            for &id in &ids {
                self.meters.entry(id).or_default().steps += 1;
            }
        }
        let collector = self.topo.collector();
        for id in ids {
            let timing = self.meters.get(&id).cloned().unwrap_or_default().encode();
            self.send(id, collector, Kind::Timing, &timing)
                .map_err(|Aborted(m)| m)?;
        }
        Ok(())
    }

    /// One step of every node held, in node order; final columns in two halves around the head (their
    /// output out, the head, their gradient back), so a worker may hold both.
    fn step(&mut self, held: &mut Held, work: &Work) -> Result<(), Aborted> {
        let labels = work.labels.to_device(self.device);
        for m in &mut held.modules {
            let input = self.input(&m.ids, work)?;
            let mut exchange = Peers {
                worker: self,
                module: m.module,
            };
            let (stats, _) = step_units(
                &mut m.units,
                &input,
                &labels,
                &work.images,
                work.lr,
                &mut exchange,
            )?;
            for (&id, s) in m.ids.iter().zip(stats) {
                self.report(id, Report::Unit(s))?;
            }
        }
        let head = self.topo.head();
        let mut outputs = Vec::with_capacity(held.tails.len());
        for (id, tail) in &held.tails {
            let input = self.input(&[*id], work)?;
            let out = tail.forward(&input, true);
            self.charge(*id, Some(Phase::Trunk));
            self.send(*id, head, Kind::Activation, &out.detach())?;
            outputs.push(out);
        }
        if let Some((id, head, tail)) = &mut held.head {
            self.head_step(*id, head, tail, work, &labels)?;
        }
        for ((id, tail), out) in held.tails.iter_mut().zip(outputs) {
            let grad = self.recv(head, *id, Kind::Gradient)?;
            // d/dθ sum(out * grad) is exactly the vector-Jacobian product the head's loss sends back.
            (&out * &grad).sum(out.kind()).backward();
            self.charge(*id, Some(Phase::Backward));
            tail.step(work.lr);
            self.charge(*id, Some(Phase::Update));
        }
        Ok(())
    }

    fn head_step(
        &mut self,
        id: usize,
        head: &mut Head,
        tail: &mut [TailColumn],
        work: &Work,
        labels: &Tensor,
    ) -> Result<(), Aborted> {
        let (loss, correct) = if self.topo.tail == TailPlacement::Separate {
            // The columns are other nodes: their outputs are leaves here, and each gets back the
            // gradient of its slice.
            let sources = self.topo.inputs(id).unwrap_or_default();
            let parts = sources
                .iter()
                .map(|&s| {
                    Ok(self
                        .recv(s, id, Kind::Activation)?
                        .detach()
                        .set_requires_grad(true))
                })
                .collect::<Result<Vec<_>, Aborted>>()?;
            let out = head_step(
                head,
                tail,
                &cat_channels(&parts),
                labels,
                work.lr,
                &mut |p| self.charge(id, Some(p)),
            );
            for (&s, p) in sources.iter().zip(&parts) {
                self.send(id, s, Kind::Gradient, &p.grad())?;
            }
            out
        } else {
            let input = self.input(&[id], work)?;
            head_step(head, tail, &input, labels, work.lr, &mut |p| {
                self.charge(id, Some(p))
            })
        };
        self.report(
            id,
            Report::Head {
                loss,
                correct,
                batch: labels.size()[0],
            },
        )
    }
}

/// The [`Exchange`] of a worker's units of one module over the transport: each slice to the groups
/// held elsewhere whose auxiliary classifiers read it and to the next module, each unit's logits to
/// every group held elsewhere; what the units held here hand each other never leaves the thread.
struct Peers<'w, 'a> {
    worker: &'w mut Worker<'a>,
    module: usize,
}

impl Exchange for Peers<'_, '_> {
    type Error = Aborted;

    fn slices(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Aborted> {
        let w = &mut *self.worker;
        let (topo, k) = (w.topo, self.module);
        let here = |h: usize| own.iter().any(|(g, _)| *g == h);
        for (g, slice) in own {
            let from = topo.unit(k, *g);
            // Peers first: they are at this same step, the next module may be behind.
            for h in topo.slice_readers(k, *g).into_iter().filter(|&h| !here(h)) {
                w.send(from, topo.unit(k, h), Kind::Slice, slice)?;
            }
            for c in topo.consumers(from) {
                w.send(from, c, Kind::Activation, slice)?;
            }
        }
        // Group h sent its slice to each unit here that reads it: take every copy, use the first.
        (0..topo.groups)
            .map(|h| match own.iter().find(|(g, _)| *g == h) {
                Some((_, slice)) => Ok(slice.shallow_clone()),
                None => {
                    let mut got = Tensor::new();
                    for (g, _) in own.iter().filter(|(g, _)| topo.reads_slice(k, *g, h)) {
                        let t = w.recv(topo.unit(k, h), topo.unit(k, *g), Kind::Slice)?;
                        if !got.defined() {
                            got = t;
                        }
                    }
                    Ok(got)
                }
            })
            .collect()
    }

    fn logits(&mut self, own: &[(usize, Tensor)]) -> Result<Vec<Tensor>, Aborted> {
        let w = &mut *self.worker;
        let (topo, k) = (w.topo, self.module);
        for (g, logits) in own {
            for h in (0..topo.groups).filter(|h| own.iter().all(|(o, _)| o != h)) {
                w.send(topo.unit(k, *g), topo.unit(k, h), Kind::Logits, logits)?;
            }
        }
        // Group h sent its logits to each unit here: take every copy, use the first.
        (0..topo.groups)
            .map(|h| match own.iter().find(|(g, _)| *g == h) {
                Some((_, z)) => Ok(z.shallow_clone()),
                None => {
                    let mut got = Tensor::new();
                    for (g, _) in own {
                        let t = w.recv(topo.unit(k, h), topo.unit(k, *g), Kind::Logits)?;
                        if !got.defined() {
                            got = t;
                        }
                    }
                    Ok(got)
                }
            })
            .collect()
    }

    fn mark(&mut self, group: usize, phase: Phase) {
        let id = self.worker.topo.unit(self.module, group);
        self.worker.charge(id, Some(phase));
    }
}
