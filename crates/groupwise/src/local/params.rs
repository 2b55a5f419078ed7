//! [`Params`]: what one node owns of the network's state.

use tch::{nn, Device};

use super::optim::{Sgd, SgdConfig};
use crate::plan::NodeId;

/// Parameters and optimizer state of one node.
#[derive(Debug)]
pub struct Params {
    /// The node these belong to.
    pub node: NodeId,
    /// Name prefix of this node's tensors in checkpoints (`m{k}.g{g}.` or `head.`).
    pub prefix: String,
    /// Parameters and BN statistics.
    pub vs: nn::VarStore,
    /// Momentum buffers.
    pub opt: Sgd,
}

impl Params {
    pub(super) fn new(node: NodeId, device: Device, sgd: SgdConfig) -> Self {
        Params {
            node,
            prefix: node.prefix(),
            vs: nn::VarStore::new(device),
            opt: Sgd::new(sgd),
        }
    }

    pub(super) fn step(&mut self, lr: f64) {
        self.opt.step(&self.vs, lr);
    }
}
