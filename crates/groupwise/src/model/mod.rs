//! The backbone of METHOD.md section 1, cut into per-group columns.
//!
//! A CIFAR ResNet-(6n+2) is a sequence of *positions*: position 0 is the stem, positions `1..=3n` are the
//! BasicBlocks of the three stages. [`Arch`] describes the whole network; [`LayerSpec`] describes one
//! position with its channel counts and spatial sizes, which is all the cost model (`plan::cost`) needs.
//!
//! Neuron groups (section 3) are built as narrow layers rather than as one grouped convolution: group `g`
//! owns output channels `[g*C/G, (g+1)*C/G)` of every layer, so its part of a grouped conv is a conv from
//! its own `C/G` input channels to its own `C/G` outputs, and its part of a dense conv is a conv from all
//! `C` inputs to its `C/G` outputs. The two are the same function (the golden tests check this against
//! PyTorch's `groups=G` convolutions), and the narrow form lets every group own its parameters outright.

mod batch_norm;
mod conv;
mod ffi;
mod layers;

#[cfg(test)]
mod test_util;

pub use batch_norm::{batch_norm2d, own_kernel as own_batch_norm_kernel, BatchNorm};
pub use conv::{conv2d, own_kernel as own_conv_kernel, Conv};
pub use layers::{Block, Classifier1c2f, Column, Decoder, Stem};

use serde::{Deserialize, Serialize};

/// The architecture: depth, widths, input and output shapes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// BasicBlocks per stage (`n` in ResNet-(6n+2)): 5 gives ResNet-32.
    pub blocks_per_stage: usize,
    /// `[w0, w1, w2, w3]`: stem width and the widths of the three stages.
    pub widths: [i64; 4],
    /// Input channels: 1 for (Fashion-)MNIST, 3 for CIFAR and ImageNet32.
    pub in_channels: i64,
    /// Input height and width (square images).
    pub image_size: i64,
    /// Number of classes.
    pub classes: i64,
}

/// What sits at one position of the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// conv3x3 `in_channels -> out_channels`, BN, ReLU.
    Stem,
    /// A BasicBlock; `shortcut_conv` is true when it has a 1x1 conv + BN shortcut.
    Block {
        /// Stride of the first conv (and of the shortcut).
        stride: i64,
        /// Whether the shortcut is a 1x1 conv + BN (stride 2 or width change) instead of the identity.
        shortcut_conv: bool,
    },
}

/// One position of the backbone with its shapes (for the full, ungrouped network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// Stem or block.
    pub kind: LayerKind,
    /// Channels entering the position.
    pub in_channels: i64,
    /// Channels leaving the position.
    pub out_channels: i64,
    /// Spatial size (height = width) entering the position.
    pub in_size: i64,
    /// Spatial size leaving the position.
    pub out_size: i64,
}

impl Arch {
    /// The paper's ResNet-32 (`widths` 16,16,32,64) for an input shape and class count.
    pub fn resnet32(in_channels: i64, image_size: i64, classes: i64) -> Self {
        Arch {
            blocks_per_stage: 5,
            widths: [16, 16, 32, 64],
            in_channels,
            image_size,
            classes,
        }
    }

    /// Depth in the ResNet-(6n+2) naming.
    pub fn depth(&self) -> usize {
        6 * self.blocks_per_stage + 2
    }

    /// Number of positions: the stem plus every block.
    pub fn positions(&self) -> usize {
        1 + 3 * self.blocks_per_stage
    }

    /// Position index of `(stage, block)`; `(0, 0)` is the stem. `None` when out of range.
    pub fn position(&self, stage: usize, block: usize) -> Option<usize> {
        match stage {
            0 if block == 0 => Some(0),
            1..=3 if block < self.blocks_per_stage => {
                Some(1 + (stage - 1) * self.blocks_per_stage + block)
            }
            _ => None,
        }
    }

    /// `(stage, block)` of a position index.
    pub fn stage_block(&self, position: usize) -> (usize, usize) {
        if position == 0 {
            (0, 0)
        } else {
            let i = position - 1;
            (1 + i / self.blocks_per_stage, i % self.blocks_per_stage)
        }
    }

    /// Shapes of every position, in order.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let mut out = Vec::with_capacity(self.positions());
        let mut size = self.image_size;
        out.push(LayerSpec {
            kind: LayerKind::Stem,
            in_channels: self.in_channels,
            out_channels: self.widths[0],
            in_size: size,
            out_size: size,
        });
        let mut channels = self.widths[0];
        for stage in 1..=3 {
            for block in 0..self.blocks_per_stage {
                let stride = if stage > 1 && block == 0 { 2 } else { 1 };
                let width = self.widths[stage];
                let out_size = conv_out(size, 3, stride, 1);
                out.push(LayerSpec {
                    kind: LayerKind::Block {
                        stride,
                        shortcut_conv: stride != 1 || width != channels,
                    },
                    in_channels: channels,
                    out_channels: width,
                    in_size: size,
                    out_size,
                });
                channels = width;
                size = out_size;
            }
        }
        out
    }

    /// Width `F` of the hidden linear layer of a full-width 1c2f classifier: `128 * w0 / 16`.
    pub fn hidden_features(&self) -> i64 {
        128 * self.widths[0] / 16
    }
}

/// Output size of a convolution along one axis.
pub fn conv_out(size: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    (size + 2 * padding - kernel) / stride + 1
}
