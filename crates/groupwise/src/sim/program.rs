//! A worker's program for one training step: the receives, computes and sends of
//! `parallel::worker::Worker::step`, in its order, over the runtime's channels.

use crate::local::Phase;
use crate::parallel::{cut, Channel, Kind, Role, TailPlacement, Topology};

use super::NodeCost;

/// A FIFO link of the simulated runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wire {
    /// The feeder's batches to worker `w` (one per step).
    Feed(usize),
    /// A channel between two nodes.
    Link(Channel),
}

/// One operation of a worker's step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Node `node` computes `phase` for `seconds` (at speed 1).
    Compute {
        /// The node.
        node: usize,
        /// What it computes.
        phase: Phase,
        /// How long, at speed 1.
        seconds: f64,
    },
    /// A message of `bytes` onto `wire` (waits for room).
    Send {
        /// The link.
        wire: Wire,
        /// Its payload.
        bytes: u64,
    },
    /// The next message of `wire` (waits for it).
    Recv {
        /// The link.
        wire: Wire,
    },
}

/// The nodes of every worker and its process: `processes` contiguous runs of the nodes balancing
/// `costs` (one per node), each cut again into `workers_per_process` runs, by the rule the runtime
/// places nodes with ([`cut`]). At most one worker per node.
pub fn placement(
    topo: &Topology,
    costs: &[f64],
    processes: usize,
    workers_per_process: usize,
) -> Vec<(Vec<usize>, usize)> {
    let all: Vec<usize> = (0..topo.len()).collect();
    let ranks = cut(&all, costs, processes);
    let mut out = Vec::new();
    for rank in 0..=ranks.iter().copied().max().unwrap_or(0) {
        let ids: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&id| ranks[id] == rank)
            .collect();
        let workers = cut(&ids, costs, workers_per_process);
        for w in 0..=workers.iter().copied().max().unwrap_or(0) {
            let mine = ids
                .iter()
                .zip(&workers)
                .filter(|(_, &x)| x == w)
                .map(|(&id, _)| id)
                .collect();
            out.push((mine, rank));
        }
    }
    out
}

/// Builds worker programs for one step.
pub(super) struct Writer<'a> {
    pub topo: &'a Topology,
    pub costs: &'a [NodeCost],
    pub batch: u64,
}

impl Writer<'_> {
    fn send(&self, ops: &mut Vec<Op>, channel: Channel) {
        ops.push(Op::Send {
            wire: Wire::Link(channel),
            bytes: self.topo.message_bytes(channel, self.batch),
        });
    }

    fn recv(ops: &mut Vec<Op>, channel: Channel) {
        ops.push(Op::Recv {
            wire: Wire::Link(channel),
        });
    }

    fn compute(&self, ops: &mut Vec<Op>, node: usize, phase: Phase) {
        let c = &self.costs[node];
        let seconds = match phase {
            Phase::Trunk => c.trunk,
            Phase::Classifier => c.classifier,
            Phase::Backward => c.backward,
            Phase::Update => c.update,
        };
        ops.push(Op::Compute {
            node,
            phase,
            seconds,
        });
    }

    /// Every node's input messages, in `Worker::input`'s order.
    fn inputs(&self, ops: &mut Vec<Op>, ids: &[usize]) {
        for &id in ids {
            for s in self.topo.inputs(id).unwrap_or_default() {
                Self::recv(ops, Channel::new(s, id, Kind::Activation));
            }
        }
    }

    /// One step of worker `w`, which holds `ids` (contiguous, in node order).
    pub fn program(&self, w: usize, ids: &[usize]) -> Vec<Op> {
        let topo = self.topo;
        let mut ops = vec![Op::Recv {
            wire: Wire::Feed(w),
        }];
        let mut modules: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut tails = Vec::new();
        let mut head = None;
        for &id in ids {
            match topo.role(id) {
                Role::Unit { module, group } => match modules.last_mut() {
                    Some((m, groups)) if *m == module => groups.push(group),
                    _ => modules.push((module, vec![group])),
                },
                Role::Tail { .. } => tails.push(id),
                Role::Head => head = Some(id),
            }
        }
        for (k, own) in &modules {
            let k = *k;
            let units: Vec<usize> = own.iter().map(|&g| topo.unit(k, g)).collect();
            let here = |h: usize| own.contains(&h);
            self.inputs(&mut ops, &units);
            for &u in &units {
                self.compute(&mut ops, u, Phase::Trunk);
            }
            for &g in own {
                let from = topo.unit(k, g);
                for h in topo.slice_readers(k, g).into_iter().filter(|&h| !here(h)) {
                    self.send(&mut ops, Channel::new(from, topo.unit(k, h), Kind::Slice));
                }
                for c in topo.consumers(from) {
                    self.send(&mut ops, Channel::new(from, c, Kind::Activation));
                }
            }
            for h in (0..topo.groups).filter(|&h| !here(h)) {
                for &g in own.iter().filter(|&&g| topo.reads_slice(k, g, h)) {
                    let channel = Channel::new(topo.unit(k, h), topo.unit(k, g), Kind::Slice);
                    Self::recv(&mut ops, channel);
                }
            }
            for &u in &units {
                self.compute(&mut ops, u, Phase::Classifier);
            }
            for &g in own {
                for h in (0..topo.groups).filter(|&h| !here(h)) {
                    let channel = Channel::new(topo.unit(k, g), topo.unit(k, h), Kind::Logits);
                    self.send(&mut ops, channel);
                }
            }
            for h in (0..topo.groups).filter(|&h| !here(h)) {
                for &g in own {
                    let channel = Channel::new(topo.unit(k, h), topo.unit(k, g), Kind::Logits);
                    Self::recv(&mut ops, channel);
                }
            }
            for &u in &units {
                self.compute(&mut ops, u, Phase::Backward);
                self.compute(&mut ops, u, Phase::Update);
            }
        }
        let head_id = topo.head();
        for &t in &tails {
            self.inputs(&mut ops, &[t]);
            // A final column's forward pass is all trunk; whatever a cost puts elsewhere runs too.
            self.compute(&mut ops, t, Phase::Trunk);
            self.compute(&mut ops, t, Phase::Classifier);
            self.send(&mut ops, Channel::new(t, head_id, Kind::Activation));
        }
        if let Some(id) = head {
            self.inputs(&mut ops, &[id]);
            for phase in [
                Phase::Trunk,
                Phase::Classifier,
                Phase::Backward,
                Phase::Update,
            ] {
                self.compute(&mut ops, id, phase);
            }
            if topo.tail == TailPlacement::Separate {
                for s in topo.inputs(id).unwrap_or_default() {
                    self.send(&mut ops, Channel::new(id, s, Kind::Gradient));
                }
            }
        }
        for &t in &tails {
            Self::recv(&mut ops, Channel::new(head_id, t, Kind::Gradient));
            self.compute(&mut ops, t, Phase::Backward);
            self.compute(&mut ops, t, Phase::Update);
        }
        ops
    }
}
