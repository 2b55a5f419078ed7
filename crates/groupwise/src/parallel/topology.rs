//! The nodes of a plan and who sends what to whom (METHOD.md section 9).
//!
//! Node ids: units `(k, g)` are `k * G + g` (module-major), then the final module's columns when they
//! are nodes of their own (a plan whose last boundary does not end the backbone, with G > 1: K=1 GN-DGL),
//! then the head. With G = 1 such a final column is part of the head's node (one end-to-end module, no
//! gradient crossing nodes). The collector of step statistics is the pseudo-node `len()`.

use crate::plan::{NodeId, Plan};

use super::transport::{Channel, Kind};

/// What a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Unit (k, g): a group's column of module k and its auxiliary classifier.
    Unit {
        /// Module k.
        module: usize,
        /// Group g.
        group: usize,
    },
    /// Group g's column of the final module, trained through the head (gradient from the head node).
    Tail {
        /// Group g.
        group: usize,
    },
    /// The head (and, with G = 1, the final module's column).
    Head,
}

/// Where the final module's columns run (a plan whose last boundary does not end the backbone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailPlacement {
    /// The last boundary ends the backbone: there are no final columns.
    None,
    /// G = 1: the one column runs in the head's node (one end-to-end module, no gradient crosses nodes).
    InHead,
    /// G > 1: every column is a node of its own; the head sends it the gradient of its slice.
    Separate,
}

/// The node graph of a plan.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Boundaries (modules with auxiliary classifiers).
    pub boundaries: usize,
    /// Groups G.
    pub groups: usize,
    /// Where the final module's columns run.
    pub tail: TailPlacement,
    /// `reads[k][g][h]`: aux[k][g] reads part of group h's slice.
    reads: Vec<Vec<Vec<bool>>>,
    /// Forward MACs per image of every node.
    macs: Vec<u64>,
    /// Elements per image of every node's output slice (a unit's or final column's; the head's: 0).
    out_elems: Vec<u64>,
    /// Classes (elements per image of a logits message).
    classes: u64,
}

impl Topology {
    /// The nodes of `plan`.
    pub fn new(plan: &Plan) -> Self {
        let boundaries = plan.boundary_count();
        let groups = plan.groups as usize;
        let has_tail = !plan.module_positions(boundaries).is_empty();
        let reads = (0..boundaries)
            .map(|k| {
                (0..groups)
                    .map(|g| {
                        let windows = plan.aux_windows(k, g as i64);
                        (0..groups)
                            .map(|h| windows.iter().any(|w| w.0 as usize == h))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let tail = match (has_tail, groups) {
            (false, _) => TailPlacement::None,
            (true, 1) => TailPlacement::InHead,
            (true, _) => TailPlacement::Separate,
        };
        let mut macs: Vec<u64> = plan.nodes().iter().map(|n| n.total().macs).collect();
        if tail == TailPlacement::InHead {
            // The column and the head are one node.
            let head = macs.pop().unwrap_or(0);
            if let Some(last) = macs.last_mut() {
                *last += head;
            }
        }
        let g = groups as i64;
        let slice = |channels: i64, size: i64| (channels / g * size * size) as u64;
        let mut out_elems: Vec<u64> = (0..boundaries)
            .flat_map(|k| {
                let elems = slice(plan.boundary_channels(k), plan.boundary_size(k));
                std::iter::repeat_n(elems, groups)
            })
            .collect();
        if let (TailPlacement::Separate, Some(last)) = (tail, plan.arch.layers().last()) {
            let elems = slice(last.out_channels, last.out_size);
            out_elems.extend(std::iter::repeat_n(elems, groups));
        }
        out_elems.push(0);
        Topology {
            boundaries,
            groups,
            tail,
            reads,
            macs,
            out_elems,
            classes: plan.arch.classes as u64,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.boundaries * self.groups + self.tail_nodes() + 1
    }

    /// Number of final columns that are nodes of their own.
    fn tail_nodes(&self) -> usize {
        match self.tail {
            TailPlacement::Separate => self.groups,
            TailPlacement::None | TailPlacement::InHead => 0,
        }
    }

    /// Never true: every plan has a head.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The collector pseudo-node (receives statistics and timings; lives with the leader).
    pub fn collector(&self) -> usize {
        self.len()
    }

    /// Node of unit (k, g).
    pub fn unit(&self, k: usize, g: usize) -> usize {
        k * self.groups + g
    }

    /// Node of final column g (only with [`TailPlacement::Separate`]).
    pub fn tail(&self, g: usize) -> usize {
        self.boundaries * self.groups + g
    }

    /// The head's node.
    pub fn head(&self) -> usize {
        self.len() - 1
    }

    /// What node `id` runs.
    pub fn role(&self, id: usize) -> Role {
        let units = self.boundaries * self.groups;
        if id < units {
            Role::Unit {
                module: id / self.groups,
                group: id % self.groups,
            }
        } else if id == self.head() {
            Role::Head
        } else {
            Role::Tail { group: id - units }
        }
    }

    /// Node `id`'s name (as in checkpoints and metrics).
    pub fn name(&self, id: usize) -> NodeId {
        match self.role(id) {
            Role::Unit { module, group } => NodeId::column(module, group),
            Role::Tail { group } => NodeId::column(self.boundaries, group),
            Role::Head => NodeId::Head,
        }
    }

    /// The node of this name.
    pub fn find(&self, name: NodeId) -> Option<usize> {
        (0..self.len()).find(|&id| self.name(id) == name)
    }

    /// Every node whose tensors node `id` holds (itself, and the final column when it runs in the
    /// head's node).
    pub fn held_by(&self, id: usize) -> Vec<NodeId> {
        let mut out = vec![self.name(id)];
        if self.role(id) == Role::Head && self.tail == TailPlacement::InHead {
            out.push(NodeId::column(self.boundaries, 0));
        }
        out
    }

    /// Forward MACs per image of node `id` (what placement balances).
    pub fn macs(&self, id: usize) -> u64 {
        self.macs[id]
    }

    /// Bytes a message on `channel` carries in a step of `batch` images (float32): a node's output slice
    /// (to the next module, to a peer's auxiliary classifier, or the head's gradient of it back to a
    /// final column), or a unit's logits; statistics and timings count as nothing.
    pub fn message_bytes(&self, channel: Channel, batch: u64) -> u64 {
        let elems = match channel.kind {
            Kind::Activation | Kind::Slice => self.out_elems[channel.src],
            Kind::Gradient => self.out_elems[channel.dst],
            Kind::Logits => self.classes,
            Kind::Stats | Kind::Timing | Kind::Feed => 0,
        };
        4 * elems * batch
    }

    /// The producers of node `id`'s input, in group order (`None`: the input is the images).
    pub fn inputs(&self, id: usize) -> Option<Vec<usize>> {
        let last_boundary = |s: &Self| -> Option<Vec<usize>> {
            (s.boundaries > 0).then(|| (0..s.groups).map(|h| s.unit(s.boundaries - 1, h)).collect())
        };
        match self.role(id) {
            Role::Unit { module: 0, .. } => None,
            Role::Unit { module, .. } => {
                Some((0..self.groups).map(|h| self.unit(module - 1, h)).collect())
            }
            Role::Tail { .. } => last_boundary(self),
            Role::Head if self.tail == TailPlacement::Separate => {
                Some((0..self.groups).map(|h| self.tail(h)).collect())
            }
            Role::Head => last_boundary(self),
        }
    }

    /// Whether node `id` consumes the images (and not another node's output).
    pub fn reads_images(&self, id: usize) -> bool {
        self.inputs(id).is_none()
    }

    /// The nodes that receive node `id`'s output as (part of) their input.
    pub fn consumers(&self, id: usize) -> Vec<usize> {
        (0..self.len())
            .filter(|&c| self.inputs(c).is_some_and(|i| i.contains(&id)))
            .collect()
    }

    /// Whether `aux[k][g]` reads part of group h's slice.
    pub fn reads_slice(&self, k: usize, g: usize, h: usize) -> bool {
        self.reads[k][g][h]
    }

    /// The groups of unit (k, g)'s module that read its slice.
    pub fn slice_readers(&self, k: usize, g: usize) -> Vec<usize> {
        (0..self.groups)
            .filter(|&h| h != g && self.reads_slice(k, h, g))
            .collect()
    }

    /// Nodes that report per-step statistics to the collector (units and head).
    pub fn reporters(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&id| !matches!(self.role(id), Role::Tail { .. }))
            .collect()
    }

    /// Every channel of a training step, in a fixed order (MPI tags are indices into it).
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        for id in 0..self.len() {
            for c in self.consumers(id) {
                out.push(Channel::new(id, c, Kind::Activation));
            }
            if let Role::Unit { module, group } = self.role(id) {
                for h in self.slice_readers(module, group) {
                    out.push(Channel::new(id, self.unit(module, h), Kind::Slice));
                }
                if self.groups > 1 {
                    for h in (0..self.groups).filter(|&h| h != group) {
                        out.push(Channel::new(id, self.unit(module, h), Kind::Logits));
                    }
                }
            }
            if let Role::Tail { .. } = self.role(id) {
                out.push(Channel::new(self.head(), id, Kind::Gradient));
            }
            out.push(Channel::new(id, self.collector(), Kind::Stats));
            out.push(Channel::new(id, self.collector(), Kind::Timing));
        }
        out
    }
}
