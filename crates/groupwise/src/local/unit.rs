//! The nodes' parts: [`Unit`] (a group's column of a module with its auxiliary classifier),
//! [`TailColumn`] (a group's column of the final module) and [`Head`].

use tch::Tensor;

use super::loss::{self, LossConfig};
use super::params::Params;
use crate::model::{Classifier1c2f, Column, Decoder};

/// Losses and accuracy of one unit on one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnitStats {
    /// `CE(z_g, y)`.
    pub cross_entropy: f64,
    /// `L_div` of its boundary (the same value for every group of the module).
    pub diversity: f64,
    /// Correct predictions of its classifier.
    pub correct: i64,
    /// InfoPro's reconstruction BCE (0 without InfoPro).
    pub reconstruction: f64,
}

/// InfoPro's part of a unit: its decoder, the BCE weight `a_k`, and the map from network input back to
/// `[0, 1]` pixels (`x * std + mean`, per channel, `[1, C, 1, 1]` each).
#[derive(Debug)]
pub(super) struct Reconstruction {
    pub(super) decoder: Decoder,
    pub(super) weight: f64,
    pub(super) mean: Tensor,
    pub(super) std: Tensor,
}

/// Unit (k, g): group g's column of module k and its auxiliary classifier `aux[k][g]`.
#[derive(Debug)]
pub struct Unit {
    /// Module index k.
    pub module: usize,
    /// Group index g.
    pub group: usize,
    /// Parameters and optimizer state.
    pub params: Params,
    pub(super) column: Column,
    pub(super) aux: Classifier1c2f,
    /// `(group, start, len)` windows of the boundary's slices that the auxiliary classifier reads.
    pub(super) windows: Vec<(i64, i64, i64)>,
    pub(super) loss: LossConfig,
    /// Weight of the cross-entropy term (1, or InfoPro's `b_k`).
    pub(super) ce_weight: f64,
    pub(super) reconstruction: Option<Box<Reconstruction>>,
}

/// Channels `[start, start + len)` of a slice: the slice itself when that is all of it, else a view.
fn window(src: &Tensor, start: i64, len: i64) -> Tensor {
    if start == 0 && len == src.size()[1] {
        src.shallow_clone()
    } else {
        src.narrow(1, start, len)
    }
}

impl Unit {
    /// Group g's slice of module k's output. `[B, C_in, H, W] -> [B, C/G, H', W']`.
    pub fn forward_trunk(&self, input: &Tensor, train: bool) -> Tensor {
        self.column.forward_t(input, train)
    }

    /// The auxiliary classifier's input: its windows of the module's slices, concatenated in group
    /// order. `own` (this group's slice) keeps its gradient; `slices[h]` for h != g are used as given
    /// (detached by the caller).
    pub fn aux_input(&self, own: &Tensor, slices: &[Tensor]) -> Tensor {
        let parts: Vec<Tensor> = self
            .windows
            .iter()
            .map(|&(h, start, len)| {
                let src = if h as usize == self.group {
                    own
                } else {
                    &slices[h as usize]
                };
                window(src, start, len)
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(&parts, 1)
        }
    }

    /// `aux[k][g]` logits `[B, classes]` from [`Unit::aux_input`] of `own` (this group's slice): only
    /// this group's window carries a gradient, so only its part of the input gradient is computed,
    /// straight into the window.
    pub fn forward_aux(&self, aux_input: &Tensor, own: &Tensor, train: bool) -> Tensor {
        let mut at = 0;
        for &(h, start, len) in &self.windows {
            if h as usize == self.group {
                let own = window(own, start, len);
                return self.aux.forward_own_slice_t(aux_input, &own, at, train);
            }
            at += len;
        }
        self.aux.forward_t(aux_input, train)
    }

    /// The unit's local loss: `CE(z_g, y) + lambda * L_div(z_g, others)` with the other groups' logits
    /// `peers` treated as constants (the entry at this group's index is ignored), plus InfoPro's
    /// weighted terms when configured (`aux_input` is what the classifier read, `images` the network
    /// input); backward through this unit only. [`Unit::update`] then applies the gradients.
    pub fn backward(
        &mut self,
        aux_input: &Tensor,
        logits: &Tensor,
        peers: &[Tensor],
        labels: &Tensor,
        images: &Tensor,
    ) -> UnitStats {
        let ce = loss::cross_entropy(logits, labels);
        let all: Vec<Tensor> = peers
            .iter()
            .enumerate()
            .map(|(h, z)| {
                if h == self.group {
                    logits.shallow_clone()
                } else {
                    z.detach()
                }
            })
            .collect();
        let div = loss::diversity(&all, labels, self.loss.temperature);
        let mut total = &ce * self.ce_weight + &div * self.loss.diversity_weight;
        let mut bce = 0.0;
        if let Some(r) = &self.reconstruction {
            let target = (images.to_device(aux_input.device()) * &r.std + &r.mean).clamp(0.0, 1.0);
            let rec = loss::reconstruction(&r.decoder.forward_t(aux_input, true), &target);
            bce = rec.double_value(&[]);
            total += rec * r.weight;
        }
        total.backward();
        UnitStats {
            cross_entropy: ce.double_value(&[]),
            diversity: div.double_value(&[]),
            correct: loss::correct(logits, labels),
            reconstruction: bce,
        }
    }

    /// One SGD update of this unit's parameters from the gradients of [`Unit::backward`].
    pub fn update(&mut self, lr: f64) {
        self.params.step(lr);
    }

    /// Whether [`Unit::backward`] reads the network input (InfoPro's reconstruction target); without it
    /// any tensor may be passed.
    pub fn needs_images(&self) -> bool {
        self.reconstruction.is_some()
    }

    /// Sets the map from network input back to `[0, 1]` pixels for the reconstruction target:
    /// `pixel = x * std + mean` per channel (one entry applies to every channel).
    pub(super) fn set_pixel_scale(&mut self, mean: &[f32], std: &[f32]) {
        if let Some(r) = &mut self.reconstruction {
            let device = r.mean.device();
            let shape = |v: &[f32]| Tensor::from_slice(v).view([1, -1, 1, 1]).to_device(device);
            r.mean = shape(mean);
            r.std = shape(std);
        }
    }
}

/// Group g's column over the positions after the last boundary, trained through the head.
#[derive(Debug)]
pub struct TailColumn {
    /// Group index g.
    pub group: usize,
    /// Parameters and optimizer state.
    pub params: Params,
    pub(super) column: Column,
}

impl TailColumn {
    /// Group g's slice of the head's input. `[B, C_in, H, W] -> [B, C/G, H', W']`.
    pub fn forward(&self, input: &Tensor, train: bool) -> Tensor {
        self.column.forward_t(input, train)
    }

    /// One SGD update from the gradients already accumulated by a backward pass through the head.
    pub fn step(&mut self, lr: f64) {
        self.params.step(lr);
    }
}

/// The final 1c2f head.
#[derive(Debug)]
pub struct Head {
    /// Parameters and optimizer state.
    pub params: Params,
    pub(super) classifier: Classifier1c2f,
}

impl Head {
    /// Head logits `[B, classes]` of the backbone's features.
    pub fn forward(&self, features: &Tensor, train: bool) -> Tensor {
        self.classifier.forward_t(features, train)
    }

    /// The head's loss `CE(z, y)` and its backward pass (into the head and whatever `logits` were
    /// computed from); the caller steps the nodes it reached. Returns (loss, correct).
    pub fn loss_backward(&self, logits: &Tensor, labels: &Tensor) -> (f64, i64) {
        let ce = loss::cross_entropy(logits, labels);
        ce.backward();
        (ce.double_value(&[]), loss::correct(logits, labels))
    }

    /// One SGD update of the head from its accumulated gradients.
    pub fn step(&mut self, lr: f64) {
        self.params.step(lr);
    }
}
