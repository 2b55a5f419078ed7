//! Layers of one neuron group: stem, BasicBlock, a column of them, and the 1c2f classifier.
//!
//! Parameter names (they are the checkpoint's tensor names after the unit prefix, see `checkpoint`):
//! `stem.conv.weight`, `stem.bn.{weight,bias,running_mean,running_var}`, `s{stage}.b{block}.conv1.weight`,
//! `...bn1.*`, `...conv2.weight`, `...bn2.*`, `...shortcut.conv.weight`, `...shortcut.bn.*`; a classifier
//! has `conv.weight`, `bn.*`, `fc1.{weight,bias}`, `fc2.{weight,bias}`.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::batch_norm::{batch_norm2d, BatchNorm};
use super::conv::{conv2d, Conv};
use super::{Arch, LayerKind, LayerSpec};

/// A bias-free convolution initialised as METHOD.md section 1 says: N(0, sqrt(2 / (k*k*C_out))), where
/// `C_out` is the output width of the *whole* layer (all groups), as in the reference.
fn conv(p: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, layer_out: i64) -> Conv {
    let stdev = (2.0 / (kernel * kernel * layer_out) as f64).sqrt();
    conv2d(p, cin, cout, kernel, stride, stdev)
}

/// A linear layer with weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn linear(p: nn::Path, fan_in: i64, fan_out: i64) -> nn::Linear {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let config = nn::LinearConfig {
        ws_init: init,
        bs_init: Some(init),
        bias: true,
    };
    nn::linear(p, fan_in, fan_out, config)
}

/// Group `g`'s slice of the stem: conv3x3 over all input channels to `w0/G` outputs, BN, ReLU.
#[derive(Debug)]
pub struct Stem {
    conv: Conv,
    bn: BatchNorm,
}

impl Stem {
    fn new(p: &nn::Path, spec: &LayerSpec, groups: i64) -> Self {
        let out = spec.out_channels / groups;
        Stem {
            conv: conv(p / "conv", spec.in_channels, out, 3, 1, spec.out_channels),
            bn: batch_norm2d(p / "bn", out),
        }
    }

    /// `[B, Cin, H, W] -> [B, w0/G, H, W]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_relu_t(&x.apply(&self.conv), train)
    }
}

/// Group `g`'s slice of a BasicBlock (METHOD.md sections 1 and 3).
#[derive(Debug)]
pub struct Block {
    conv1: Conv,
    bn1: BatchNorm,
    conv2: Conv,
    bn2: BatchNorm,
    shortcut: Option<(Conv, BatchNorm)>,
    /// `Some(offset)` when the block reads all groups' channels (dense first conv) and its identity
    /// shortcut must pick its own slice `[offset, offset + C/G)` of them.
    dense_offset: Option<i64>,
    width: i64,
}

impl Block {
    fn new(
        p: &nn::Path,
        spec: &LayerSpec,
        group: i64,
        groups: i64,
        dense: bool,
        stride: i64,
        shortcut_conv: bool,
    ) -> Self {
        let cout = spec.out_channels / groups;
        let cin = if dense {
            spec.in_channels
        } else {
            spec.in_channels / groups
        };
        let shortcut = shortcut_conv.then(|| {
            let q = p / "shortcut";
            (
                conv(&q / "conv", cin, cout, 1, stride, spec.out_channels),
                batch_norm2d(&q / "bn", cout),
            )
        });
        Block {
            conv1: conv(p / "conv1", cin, cout, 3, stride, spec.out_channels),
            bn1: batch_norm2d(p / "bn1", cout),
            conv2: conv(p / "conv2", cout, cout, 3, 1, spec.out_channels),
            bn2: batch_norm2d(p / "bn2", cout),
            shortcut,
            dense_offset: dense.then_some(group * cout),
            width: cout,
        }
    }

    /// `[B, Cin or Cin/G, H, W] -> [B, Cout/G, H', W']`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self.bn1.forward_relu_t(&x.apply(&self.conv1), train);
        let shortcut = match (&self.shortcut, self.dense_offset) {
            (Some((c, b)), _) => b.forward_t(&x.apply(c), train),
            (None, Some(offset)) => x.narrow(1, offset, self.width),
            (None, None) => x.shallow_clone(),
        };
        // relu(bn2(conv2(out)) + shortcut), one pass each way with groupwise's batch norm.
        self.bn2
            .forward_add_relu_t(&out.apply(&self.conv2), &shortcut, train)
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a handful per column, built once
enum Layer {
    Stem(Stem),
    Block(Block),
}

/// Group `g`'s column over a contiguous run of positions: the part of one module that one group owns.
///
/// Its first position reads the module's whole input (the stem reads the image; a block that follows a
/// boundary has dense first and shortcut convs); every later position reads only the group's own channels.
#[derive(Debug)]
pub struct Column {
    layers: Vec<Layer>,
}

impl Column {
    /// Builds group `group` of `groups` over positions `range` of `arch`, under path `p`.
    pub fn new(
        p: &nn::Path,
        arch: &Arch,
        range: std::ops::RangeInclusive<usize>,
        group: i64,
        groups: i64,
    ) -> Self {
        let specs = arch.layers();
        let first = *range.start();
        let layers = range
            .map(|pos| {
                let spec = &specs[pos];
                match spec.kind {
                    LayerKind::Stem => Layer::Stem(Stem::new(&(p / "stem"), spec, groups)),
                    LayerKind::Block {
                        stride,
                        shortcut_conv,
                    } => {
                        let (stage, block) = arch.stage_block(pos);
                        let q = p / format!("s{stage}") / format!("b{block}");
                        Layer::Block(Block::new(
                            &q,
                            spec,
                            group,
                            groups,
                            pos == first,
                            stride,
                            shortcut_conv,
                        ))
                    }
                }
            })
            .collect();
        Column { layers }
    }

    /// True when the column has no layer (a final module that is only the head).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The column's own output channels, `[B, C/G, H, W]`, from the module input `[B, C_in, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.layers {
            h = match layer {
                Layer::Stem(s) => s.forward_t(&h, train),
                Layer::Block(b) => b.forward_t(&h, train),
            };
        }
        h
    }
}

/// The "1c2f" classifier of METHOD.md section 1: conv3x3 stride 2 `C -> 2C`, BN, ReLU, global average
/// pool, Linear `2C -> F`, ReLU, Linear `F -> classes`. Used for the head and every auxiliary classifier.
#[derive(Debug)]
pub struct Classifier1c2f {
    conv: Conv,
    bn: BatchNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Classifier1c2f {
    /// A classifier over `cin` channels with hidden width `hidden`.
    pub fn new(p: &nn::Path, cin: i64, hidden: i64, classes: i64) -> Self {
        Classifier1c2f {
            conv: conv(p / "conv", cin, 2 * cin, 3, 2, 2 * cin),
            bn: batch_norm2d(p / "bn", 2 * cin),
            fc1: linear(p / "fc1", 2 * cin, hidden),
            fc2: linear(p / "fc2", hidden, classes),
        }
    }

    /// `[B, C, H, W] -> [B, classes]` logits.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_own_slice_t(x, x, 0, train)
    }

    /// [`Classifier1c2f::forward_t`] of an input built from `own`, its channels
    /// `[start, start + C_own)`, and detached others (the other groups' slices of a stop-gradient
    /// input): the backward pass computes own's input gradient only ([`Conv::forward_own_slice`]).
    pub fn forward_own_slice_t(&self, x: &Tensor, own: &Tensor, start: i64, train: bool) -> Tensor {
        let h = self.conv.forward_own_slice(x, own, start);
        let h = self.bn.forward_relu_t(&h, train);
        let h = h.mean_dim(&[2i64, 3][..], false, h.kind());
        h.apply(&self.fc1).relu().apply(&self.fc2)
    }
}

/// InfoPro's decoder (Wang et al., ICLR 2021, as in the reference): bilinear upsampling of the features
/// to the image size (corners aligned), conv3x3 `C -> width` with bias, BN, ReLU, conv3x3
/// `width -> image channels` with bias, sigmoid: a reconstruction of the input image in `[0, 1]`.
/// Convolution weights are initialised like the backbone's (the reference's init loop covers every
/// `Conv2d`), biases with PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
#[derive(Debug)]
pub struct Decoder {
    conv1: nn::Conv2D,
    bn: BatchNorm,
    conv2: nn::Conv2D,
    image_size: i64,
}

impl Decoder {
    /// A decoder from `cin` channels through `width` hidden channels to `image_channels` channels of
    /// `image_size` x `image_size`.
    pub fn new(p: &nn::Path, cin: i64, width: i64, image_channels: i64, image_size: i64) -> Self {
        let conv_bias = |p: nn::Path, cin: i64, cout: i64| {
            let bound = 1.0 / ((9 * cin) as f64).sqrt();
            let config = nn::ConvConfig {
                padding: 1,
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: (2.0 / (9 * cout) as f64).sqrt(),
                },
                bs_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                ..Default::default()
            };
            nn::conv2d(p, cin, cout, 3, config)
        };
        Decoder {
            conv1: conv_bias(p / "conv1", cin, width),
            bn: batch_norm2d(p / "bn", width),
            conv2: conv_bias(p / "conv2", width, image_channels),
            image_size,
        }
    }

    /// `[B, C, h, w] -> [B, image channels, S, S]`, values in `(0, 1)`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let s = self.image_size;
        let up = features.upsample_bilinear2d([s, s], true, None, None);
        let h = self.bn.forward_relu_t(&up.apply(&self.conv1), train);
        h.apply(&self.conv2).sigmoid()
    }
}
