//! [`Network`]: every node of a plan in one process, the sequential oracle of the parallel runtime.

use std::collections::BTreeMap;

use tch::{Device, Tensor};

use super::loss::LossConfig;
use super::optim::SgdConfig;
use super::params::Params;
use super::step::{cat_channels, head_step, step_units, tail_forward, AllHere, StepStats};
use super::unit::{Head, Reconstruction, TailColumn, Unit};
use crate::model::{Classifier1c2f, Column, Decoder};
use crate::plan::{NodeId, Plan};

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
                        let params = Params::new(NodeId::column(k, g as usize), device, sgd);
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
                    let params = Params::new(NodeId::column(k_tail, g as usize), device, sgd);
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
        let params = Params::new(NodeId::Head, device, sgd);
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
    /// 9): module by module, [`step_units`] with every group held here, then [`head_step`].
    /// `images` `[B, C, H, W]`, `labels` `[B]` int64.
    pub fn train_step(&mut self, images: &Tensor, labels: &Tensor, lr: f64) -> StepStats {
        let mut input = images.shallow_clone();
        let mut stats = StepStats {
            batch: labels.size()[0],
            ..Default::default()
        };
        for units in &mut self.units {
            let Ok((unit_stats, slices)) =
                step_units(units, &input, labels, images, lr, &mut AllHere);
            stats.units.push(unit_stats);
            input = cat_channels(&slices);
        }
        (stats.head_loss, stats.head_correct) = head_step(
            &mut self.head,
            &mut self.tail,
            &input,
            labels,
            lr,
            &mut |_| {},
        );
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
                        .map(|(u, o)| u.forward_aux(&u.aux_input(o, &slices), o, false))
                        .collect(),
                );
                input = cat_channels(&slices);
            }
            let features = tail_forward(&self.tail, &input, false);
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
