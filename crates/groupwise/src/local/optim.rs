//! SGD with (Nesterov) momentum and weight decay, with its state in the open so checkpoints carry it.
//!
//! Same update as `torch.optim.SGD(momentum=m, dampening=0, weight_decay=wd, nesterov=True)`:
//! `d = grad + wd*p; buf = d` on the first step, else `buf = m*buf + d`; `d = d + m*buf` (Nesterov) or
//! `d = buf`; `p -= lr*d`. libtorch's own optimizer hides its momentum buffers, which would make
//! `--resume` inexact, hence this small one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

/// Optimizer hyper-parameters (METHOD.md section 5).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum (0.9).
    pub momentum: f64,
    /// Weight decay on every parameter (1e-4).
    pub weight_decay: f64,
    /// Nesterov momentum (true).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// The paper's values.
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
        }
    }
}

/// Momentum buffers of one parameter set, keyed by parameter name.
#[derive(Debug, Default)]
pub struct Sgd {
    /// The hyper-parameters.
    pub config: SgdConfig,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// A fresh optimizer (no momentum yet).
    pub fn new(config: SgdConfig) -> Self {
        Sgd {
            config,
            buffers: BTreeMap::new(),
        }
    }

    /// One update of every trainable variable of `vs` that has a gradient, then clears the gradients.
    pub fn step(&mut self, vs: &VarStore, lr: f64) {
        let SgdConfig {
            momentum,
            weight_decay,
            nesterov,
        } = self.config;
        tch::no_grad(|| {
            for (name, mut p) in vs.variables() {
                if !p.requires_grad() {
                    continue;
                }
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let d = if weight_decay != 0.0 {
                    &grad + &p * weight_decay
                } else {
                    grad.copy()
                };
                let d = if momentum != 0.0 {
                    let buf = match self.buffers.get_mut(&name) {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                            buf
                        }
                        None => self.buffers.entry(name).or_insert(d.copy()),
                    };
                    if nesterov {
                        d + &*buf * momentum
                    } else {
                        buf.copy()
                    }
                } else {
                    d
                };
                let _ = p.g_add_(&(d * -lr));
                let _ = grad.detach().zero_();
            }
        });
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Replaces the momentum buffers (from a checkpoint).
    pub fn set_buffers(&mut self, buffers: BTreeMap<String, Tensor>) {
        self.buffers = buffers;
    }
}
