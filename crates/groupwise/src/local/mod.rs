//! Local units: one per (module, group), plus the final module's columns and head.
//!
//! Every unit owns a `VarStore` (its parameters and BN statistics) and an [`Sgd`] (its momentum), so
//! stepping one unit can never touch another's state. Forward passes are pure; loss, backward and update
//! live in one `step` per unit. [`Network::train_step`] runs all units one after the other with exactly
//! the data exchange the parallel runtime uses (METHOD.md section 9): each unit receives the previous
//! module's full output, its module's other slices (detached) and other logits (detached).

pub mod loss;
pub mod optim;

use std::collections::BTreeMap;

use tch::{nn, Device, Tensor};

use crate::model::{Classifier1c2f, Column, Decoder};
use crate::plan::Plan;
pub use loss::{InfoPro, LossConfig};
pub use optim::{Sgd, SgdConfig};

/// Parameters and optimizer state of one node.
#[derive(Debug)]
pub struct Params {
    /// Name prefix of this node's tensors in checkpoints (`m{k}.g{g}.` or `head.`).
    pub prefix: String,
    /// Parameters and BN statistics.
    pub vs: nn::VarStore,
    /// Momentum buffers.
    pub opt: Sgd,
}

impl Params {
    fn new(prefix: String, device: Device, sgd: SgdConfig) -> Self {
        Params {
            prefix,
            vs: nn::VarStore::new(device),
            opt: Sgd::new(sgd),
        }
    }

    fn backward_and_step(&mut self, lr: f64) {
        self.opt.step(&self.vs, lr);
    }
}

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
struct Reconstruction {
    decoder: Decoder,
    weight: f64,
    mean: Tensor,
    std: Tensor,
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
    column: Column,
    aux: Classifier1c2f,
    /// `(group, start, len)` windows of the boundary's slices that the auxiliary classifier reads.
    windows: Vec<(i64, i64, i64)>,
    loss: LossConfig,
    /// Weight of the cross-entropy term (1, or InfoPro's `b_k`).
    ce_weight: f64,
    reconstruction: Option<Box<Reconstruction>>,
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
                if start == 0 && len == src.size()[1] {
                    src.shallow_clone()
                } else {
                    src.narrow(1, start, len)
                }
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            Tensor::cat(&parts, 1)
        }
    }

    /// `aux[k][g]` logits `[B, classes]`.
    pub fn forward_aux(&self, aux_input: &Tensor, train: bool) -> Tensor {
        self.aux.forward_t(aux_input, train)
    }

    /// The unit's local step: `CE(z_g, y) + lambda * L_div(z_g, others)` with the other groups' logits
    /// `peers` treated as constants (the entry at this group's index is ignored), plus InfoPro's
    /// weighted terms when configured (`aux_input` is what the classifier read, `images` the network
    /// input); backward through this unit only, one SGD update of this unit's parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        aux_input: &Tensor,
        logits: &Tensor,
        peers: &[Tensor],
        labels: &Tensor,
        images: &Tensor,
        lr: f64,
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
        self.params.backward_and_step(lr);
        UnitStats {
            cross_entropy: ce.double_value(&[]),
            diversity: div.double_value(&[]),
            correct: loss::correct(logits, labels),
            reconstruction: bce,
        }
    }

    /// Whether [`Unit::step`] reads the network input (InfoPro's reconstruction target); without it
    /// any tensor may be passed.
    pub fn needs_images(&self) -> bool {
        self.reconstruction.is_some()
    }

    /// Sets the map from network input back to `[0, 1]` pixels for the reconstruction target:
    /// `pixel = x * std + mean` per channel (one entry applies to every channel).
    fn set_pixel_scale(&mut self, mean: &[f32], std: &[f32]) {
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
    column: Column,
}

impl TailColumn {
    /// Group g's slice of the head's input. `[B, C_in, H, W] -> [B, C/G, H', W']`.
    pub fn forward(&self, input: &Tensor, train: bool) -> Tensor {
        self.column.forward_t(input, train)
    }

    /// One SGD update from the gradients already accumulated by a backward pass through the head.
    pub fn step(&mut self, lr: f64) {
        self.params.backward_and_step(lr);
    }
}

/// The final 1c2f head.
#[derive(Debug)]
pub struct Head {
    /// Parameters and optimizer state.
    pub params: Params,
    classifier: Classifier1c2f,
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
        self.params.backward_and_step(lr);
    }
}

/// Per-batch statistics of a training step.
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// `units[k][g]`.
    pub units: Vec<Vec<UnitStats>>,
    /// Head cross-entropy.
    pub head_loss: f64,
    /// Head correct predictions.
    pub head_correct: i64,
    /// Batch size.
    pub batch: i64,
}

impl StepStats {
    /// `L_k = sum_g CE + lambda * L_div` of boundary k.
    pub fn module_loss(&self, k: usize, lambda: f64) -> f64 {
        let u = &self.units[k];
        u.iter().map(|s| s.cross_entropy).sum::<f64>() + lambda * u[0].diversity
    }
}

/// Logits of every classifier on one batch, for evaluation.
#[derive(Debug)]
pub struct Outputs {
    /// `aux[k][g]` logits, `[B, classes]` each.
    pub aux: Vec<Vec<Tensor>>,
    /// Head logits `[B, classes]`.
    pub head: Tensor,
}

/// All nodes of a plan, built on one device.
#[derive(Debug)]
pub struct Network {
    /// The plan it was built from.
    pub plan: Plan,
    /// `units[k][g]`.
    pub units: Vec<Vec<Unit>>,
    /// Columns of the final module (empty when the last boundary ends the backbone).
    pub tail: Vec<TailColumn>,
    /// The head.
    pub head: Head,
    /// Loss weights.
    pub loss: LossConfig,
}

impl Network {
    /// Builds and initialises every node in a fixed order (units by module then group, tail, head), so
    /// the same `tch::manual_seed` gives the same weights.
    pub fn new(plan: &Plan, loss: LossConfig, sgd: SgdConfig, device: Device) -> Self {
        let arch = &plan.arch;
        let g_count = plan.groups;
        let m = plan.boundary_count();
        let units = (0..m)
            .map(|k| {
                let (cin, hidden) = plan.aux_shape(k);
                let (rec_weight, ce_weight) = loss.infopro.map_or((0.0, 1.0), |i| i.weights(k, m));
                (0..g_count)
                    .map(|g| {
                        let params = Params::new(format!("m{k}.g{g}."), device, sgd);
                        let root = params.vs.root();
                        let column = Column::new(&root, arch, plan.module_positions(k), g, g_count);
                        let aux = Classifier1c2f::new(&(&root / "aux"), cin, hidden, arch.classes);
                        let reconstruction = loss.infopro.map(|i| {
                            Box::new(Reconstruction {
                                decoder: Decoder::new(
                                    &(&root / "decoder"),
                                    cin,
                                    i.decoder_width,
                                    arch.in_channels,
                                    arch.image_size,
                                ),
                                weight: rec_weight,
                                mean: Tensor::zeros([1, 1, 1, 1], (tch::Kind::Float, device)),
                                std: Tensor::ones([1, 1, 1, 1], (tch::Kind::Float, device)),
                            })
                        });
                        Unit {
                            module: k,
                            group: g as usize,
                            params,
                            column,
                            aux,
                            windows: plan.aux_windows(k, g),
                            loss,
                            ce_weight,
                            reconstruction,
                        }
                    })
                    .collect()
            })
            .collect();
        let k_tail = plan.boundary_count();
        let tail_range = plan.module_positions(k_tail);
        let tail = if tail_range.is_empty() {
            Vec::new()
        } else {
            (0..g_count)
                .map(|g| {
                    let params = Params::new(format!("m{k_tail}.g{g}."), device, sgd);
                    let column =
                        Column::new(&params.vs.root(), arch, tail_range.clone(), g, g_count);
                    TailColumn {
                        group: g as usize,
                        params,
                        column,
                    }
                })
                .collect()
        };
        let last = arch.layers()[arch.positions() - 1];
        let params = Params::new("head.".to_string(), device, sgd);
        let classifier = Classifier1c2f::new(
            &params.vs.root(),
            last.out_channels,
            arch.hidden_features(),
            arch.classes,
        );
        Network {
            plan: plan.clone(),
            units,
            tail,
            head: Head { params, classifier },
            loss,
        }
    }

    /// Tells InfoPro's decoders how to map the network input back to `[0, 1]` pixels (`x * std + mean`
    /// per channel, the inverse of the data's normalisation). Without it the input is taken as pixels.
    pub fn set_pixel_scale(&mut self, mean: &[f32], std: &[f32]) {
        for u in self.units.iter_mut().flatten() {
            u.set_pixel_scale(mean, std);
        }
    }

    /// Every node's parameters, in build order.
    pub fn params(&self) -> Vec<&Params> {
        self.units
            .iter()
            .flatten()
            .map(|u| &u.params)
            .chain(self.tail.iter().map(|t| &t.params))
            .chain(std::iter::once(&self.head.params))
            .collect()
    }

    /// Every node's parameters, mutably, in build order.
    pub fn params_mut(&mut self) -> Vec<&mut Params> {
        self.units
            .iter_mut()
            .flatten()
            .map(|u| &mut u.params)
            .chain(self.tail.iter_mut().map(|t| &mut t.params))
            .chain(std::iter::once(&mut self.head.params))
            .collect()
    }

    /// One training step on a batch, every unit in turn (the sequential schedule of METHOD.md section
    /// 9). `images` `[B, C, H, W]`, `labels` `[B]` int64.
    pub fn train_step(&mut self, images: &Tensor, labels: &Tensor, lr: f64) -> StepStats {
        let mut input = images.shallow_clone();
        let mut stats = StepStats {
            batch: labels.size()[0],
            ..Default::default()
        };
        for units in &mut self.units {
            // Every group's slice of the boundary output; each keeps its graph for its own unit.
            let own: Vec<Tensor> = units
                .iter()
                .map(|u| u.forward_trunk(&input, true))
                .collect();
            let slices: Vec<Tensor> = own.iter().map(Tensor::detach).collect();
            let aux_inputs: Vec<Tensor> = units
                .iter()
                .zip(&own)
                .map(|(u, o)| u.aux_input(o, &slices))
                .collect();
            let logits: Vec<Tensor> = units
                .iter()
                .zip(&aux_inputs)
                .map(|(u, x)| u.forward_aux(x, true))
                .collect();
            let peers: Vec<Tensor> = logits.iter().map(Tensor::detach).collect();
            stats.units.push(
                units
                    .iter_mut()
                    .zip(aux_inputs.iter().zip(&logits))
                    .map(|(u, (x, z))| u.step(x, z, &peers, labels, images, lr))
                    .collect(),
            );
            input = cat_channels(&slices);
        }
        let features = self.forward_tail(input, true);
        let z = self.head.forward(&features, true);
        (stats.head_loss, stats.head_correct) = self.head.loss_backward(&z, labels);
        for t in &mut self.tail {
            t.step(lr);
        }
        self.head.step(lr);
        stats
    }

    /// Logits of every classifier, in evaluation mode (BN running statistics, no gradient).
    pub fn forward_eval(&self, images: &Tensor) -> Outputs {
        tch::no_grad(|| {
            let mut input = images.shallow_clone();
            let mut aux = Vec::with_capacity(self.units.len());
            for units in &self.units {
                let slices: Vec<Tensor> = units
                    .iter()
                    .map(|u| u.forward_trunk(&input, false))
                    .collect();
                aux.push(
                    units
                        .iter()
                        .zip(&slices)
                        .map(|(u, o)| u.forward_aux(&u.aux_input(o, &slices), false))
                        .collect(),
                );
                input = cat_channels(&slices);
            }
            let features = self.forward_tail(input, false);
            Outputs {
                aux,
                head: self.head.forward(&features, false),
            }
        })
    }

    /// Every tensor of the network (parameters, BN statistics, momentum buffers), by checkpoint name:
    /// `<prefix><param>` and `momentum.<prefix><param>`.
    pub fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for p in self.params() {
            for (name, t) in p.vs.variables() {
                out.insert(format!("{}{name}", p.prefix), t);
            }
            for (name, t) in p.opt.buffers() {
                out.insert(format!("momentum.{}{name}", p.prefix), t.shallow_clone());
            }
        }
        out
    }
}

impl Network {
    /// The head's input: the final module's columns over the last boundary output, concatenated (the
    /// boundary output itself when the last boundary ends the backbone).
    fn forward_tail(&self, input: Tensor, train: bool) -> Tensor {
        if self.tail.is_empty() {
            return input;
        }
        let cols: Vec<Tensor> = self.tail.iter().map(|t| t.forward(&input, train)).collect();
        cat_channels(&cols)
    }
}

/// Concatenates group slices along channels (no copy for a single slice).
pub fn cat_channels(parts: &[Tensor]) -> Tensor {
    if parts.len() == 1 {
        parts[0].shallow_clone()
    } else {
        Tensor::cat(parts, 1)
    }
}
