//! Per-node cost from the plan alone (METHOD.md section 8), never counted during a forward pass.
//!
//! Forward MACs for one image, with the reference's (ptflops) conventions: conv =
//! `k*k*(Cin/groups)*Cout*Hout*Wout`; linear = `in*out + out`; BN = `2*numel`; ReLU = `numel` per
//! application (twice per BasicBlock); pooling = `numel` of its input. A group's part of a grouped layer
//! is its narrow layer, so the per-group numbers below are exactly the section 8 formula divided by G.

use serde::Serialize;

use super::Plan;
use crate::model::{conv_out, LayerKind, LayerSpec};

/// MACs and parameters of a piece of network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Forward multiply-accumulates for one image.
    pub macs: u64,
    /// Trainable parameters.
    pub params: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            params: self.params + o.params,
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

fn conv(cin: i64, cout: i64, k: i64, out_size: i64) -> Cost {
    Cost {
        macs: (k * k * cin * cout * out_size * out_size) as u64,
        params: (k * k * cin * cout) as u64,
    }
}

fn bn(c: i64, size: i64) -> Cost {
    Cost {
        macs: (2 * c * size * size) as u64,
        params: (2 * c) as u64,
    }
}

fn relu(numel: i64) -> Cost {
    Cost {
        macs: numel as u64,
        params: 0,
    }
}

fn linear(fan_in: i64, fan_out: i64) -> Cost {
    Cost {
        macs: (fan_in * fan_out + fan_out) as u64,
        params: (fan_in * fan_out + fan_out) as u64,
    }
}

/// Cost of one group's slice of a position: `groups` = G, `dense_in` when it reads all input channels.
pub fn layer_cost(spec: &LayerSpec, groups: i64, dense_in: bool) -> Cost {
    let cout = spec.out_channels / groups;
    let s = spec.out_size;
    match spec.kind {
        LayerKind::Stem => conv(spec.in_channels, cout, 3, s) + bn(cout, s) + relu(cout * s * s),
        LayerKind::Block {
            shortcut_conv,
            stride: _,
        } => {
            let cin = if dense_in {
                spec.in_channels
            } else {
                spec.in_channels / groups
            };
            let main = conv(cin, cout, 3, s)
                + bn(cout, s)
                + relu(cout * s * s)
                + conv(cout, cout, 3, s)
                + bn(cout, s)
                + relu(cout * s * s);
            if shortcut_conv {
                main + conv(cin, cout, 1, s) + bn(cout, s)
            } else {
                main
            }
        }
    }
}

/// MACs of one group's slice of a position (see [`layer_cost`]).
pub fn layer_macs(spec: &LayerSpec, groups: i64, dense_in: bool) -> u64 {
    layer_cost(spec, groups, dense_in).macs
}

/// Cost of a 1c2f classifier over `cin` channels of `size x size` with hidden width `hidden`.
pub fn classifier_cost(cin: i64, size: i64, hidden: i64, classes: i64) -> Cost {
    let s = conv_out(size, 3, 2, 1);
    conv(cin, 2 * cin, 3, s)
        + bn(2 * cin, s)
        + relu(2 * cin * s * s)
        + Cost {
            macs: (2 * cin * s * s) as u64,
            params: 0,
        }
        + linear(2 * cin, hidden)
        + relu(hidden)
        + linear(hidden, classes)
}

/// Cost of InfoPro's decoder over `cin` channels, reconstructing `channels` x `size` x `size`:
/// upsampling (output numel), conv3x3 with bias to `width`, BN, ReLU, conv3x3 with bias to `channels`
/// (ptflops counts no sigmoid).
pub fn decoder_cost(cin: i64, width: i64, channels: i64, size: i64) -> Cost {
    let biased = |cin: i64, cout: i64| {
        conv(cin, cout, 3, size)
            + Cost {
                macs: (cout * size * size) as u64,
                params: cout as u64,
            }
    };
    Cost {
        macs: (cin * size * size) as u64,
        params: 0,
    } + biased(cin, width)
        + bn(width, size)
        + relu(width * size * size)
        + biased(width, channels)
}

/// What a node of the plan is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum NodeKind {
    /// `(module, group)` with its auxiliary classifier.
    Unit {
        /// Module index k.
        module: usize,
        /// Group index g.
        group: usize,
    },
    /// Group g's column of the final module (positions after the last boundary), trained through the head.
    TailColumn {
        /// Group index g.
        group: usize,
    },
    /// The final 1c2f head.
    Head,
}

/// One node of the plan: its layers (as `(stage, block)` positions), its trunk and classifier costs.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// Which node.
    #[serde(flatten)]
    pub kind: NodeKind,
    /// `(stage, block)` of every backbone position it computes; `(0, 0)` is the stem.
    pub layers: Vec<(usize, usize)>,
    /// Its backbone layers.
    pub trunk: Cost,
    /// Its classifier (auxiliary or head); zero for a tail column.
    pub classifier: Cost,
}

impl Node {
    /// Trunk plus classifier.
    pub fn total(&self) -> Cost {
        self.trunk + self.classifier
    }
}

impl Plan {
    /// Trunk cost of one group's column over module `k`'s positions.
    fn column_cost(&self, k: usize) -> Cost {
        let specs = self.arch.layers();
        let range = self.module_positions(k);
        let first = *range.start();
        range
            .map(|p| layer_cost(&specs[p], self.groups, p == first))
            .sum()
    }

    /// Cost of `aux[k][g]`, with its InfoPro decoder when the plan has one.
    pub fn aux_cost(&self, k: usize) -> Cost {
        let (cin, hidden) = self.aux_shape(k);
        let clf = classifier_cost(cin, self.boundary_size(k), hidden, self.arch.classes);
        match self.decoder_width {
            Some(w) => clf + decoder_cost(cin, w, self.arch.in_channels, self.arch.image_size),
            None => clf,
        }
    }

    /// Cost of the final head.
    pub fn head_cost(&self) -> Cost {
        let last = self.arch.layers()[self.arch.positions() - 1];
        classifier_cost(
            last.out_channels,
            last.out_size,
            self.arch.hidden_features(),
            self.arch.classes,
        )
    }

    /// Every node that trains: the K x G units, the tail columns (when positions follow the last
    /// boundary), and the head.
    pub fn nodes(&self) -> Vec<Node> {
        let mut out = Vec::new();
        let names = |k: usize| -> Vec<(usize, usize)> {
            self.module_positions(k)
                .map(|p| self.arch.stage_block(p))
                .collect()
        };
        for k in 0..self.boundary_count() {
            for g in 0..self.groups as usize {
                out.push(Node {
                    kind: NodeKind::Unit {
                        module: k,
                        group: g,
                    },
                    layers: names(k),
                    trunk: self.column_cost(k),
                    classifier: self.aux_cost(k),
                });
            }
        }
        let tail = self.boundary_count();
        if !self.module_positions(tail).is_empty() {
            for g in 0..self.groups as usize {
                out.push(Node {
                    kind: NodeKind::TailColumn { group: g },
                    layers: names(tail),
                    trunk: self.column_cost(tail),
                    classifier: Cost::default(),
                });
            }
        }
        out.push(Node {
            kind: NodeKind::Head,
            layers: vec![],
            trunk: Cost::default(),
            classifier: self.head_cost(),
        });
        out
    }

    /// Largest per-node forward MACs with the paper's figure conventions (METHOD.md section 8): with
    /// K=1 the head is added to each group node (end-to-end, G=1, counts the backbone alone); with G=1
    /// the last module carries no auxiliary classifier; the head of a K>1 plan is not a node of the figure.
    pub fn figure_max_node_macs(&self) -> u64 {
        let k_count = self.boundary_count();
        if k_count == 0 {
            let column = self.column_cost(0).macs;
            return if self.groups == 1 {
                column
            } else {
                column + self.head_cost().macs
            };
        }
        (0..k_count)
            .map(|k| {
                let aux = if self.groups == 1 && k + 1 == k_count {
                    0
                } else {
                    self.aux_cost(k).macs
                };
                self.column_cost(k).macs + aux
            })
            .max()
            .unwrap_or(0)
    }

    /// Forward MACs of inference: the whole backbone (all groups) plus the head.
    pub fn inference_macs(&self) -> u64 {
        let g = self.groups as u64;
        let trunk: u64 = (0..=self.boundary_count())
            .map(|k| self.column_cost(k).macs * g)
            .sum();
        trunk + self.head_cost().macs
    }

    /// Total trainable parameters of all nodes.
    pub fn total_params(&self) -> u64 {
        self.nodes().iter().map(|n| n.total().params).sum()
    }
}
