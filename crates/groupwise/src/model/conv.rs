//! The network's bias-free convolutions, each run by the CPU kernel that is fastest for its shape.
//!
//! A neuron group's layers are narrow (4-8 channels for G=4 on ResNet-32's first stages), and
//! libtorch's CPU convolutions (oneDNN) run those at a fraction of their speed on wide layers
//! (`scripts/bench_conv.py`). So, by shape alone (every run of a config computes the same numbers):
//! - a 3x3 stride-1 convolution to at most [`NARROW`] output channels, or to at most [`OWN_WIDE`] on
//!   images of at least [`OWN_WIDE_PIXELS`] pixels, runs groupwise's own kernel (`conv.cpp`, a
//!   libtorch autograd function built by `build/groupwise.rs`) on float32 CPU tensors. Forward +
//!   backward at batch 128, ours / oneDNN on NCHW, 1 and 2 intra-op threads (`cargo run --release -p
//!   groupwise --example bench_conv_layers`): 4->4 at 32x32 0.30 / 0.33, 16->4 0.45 / 0.45, 16->16 at
//!   32x32 0.79 / 0.76, 8->8 at 8x8 0.79 / 0.71. With the kernel forced on for every shape (a scratch
//!   build), 16->16 at 16x16 gained only 13-15%, at 8x8 it lost (1.32 / 1.11), as did 32 and 64 channels
//!   at 8x8 (1.4-1.7); and with 16 channels also at 16x16, one of the float32 golden test's nudged runs
//!   of end-to-end landed on another branch of its step-2 knife edge (which libtorch's kernels reach too
//!   with other nudges), so the rule keeps 16 channels to 32x32;
//! - a 3x3 stride-2 convolution to at least [`OWN_STRIDED_PIXELS`] output pixels runs groupwise's
//!   kernel if it has at most [`OWN_STRIDED`] output channels, or if only one slice of its input
//!   wants a gradient (an auxiliary classifier on a stop-gradient input, [`Conv::forward_own_slice`]):
//!   the kernel's input gradient covers that slice alone. The same example, ours / libtorch's
//!   convolution (of the own slice concatenated with the detached rest, for a slice), 1 / 2 threads:
//!   4->8 at 32x32 0.28 / 0.31, 8->16 at 32x32 0.58 / 0.55, 16->32 at 16x16 0.82 / 0.84, 16->32 at
//!   32x32 0.70 / 0.72, its input gradient for 4 of the 16 channels 0.55 / 0.55, 32->64 at 16x16 for
//!   16 of 32 0.93 / 0.90. Against what ran before (`GROUPWISE_CONV=libtorch`: an own-slice backward
//!   on libtorch's convolution, `OwnSliceConv`), one thread, two runs: 16->32 at 32x32 for 4 channels
//!   15.4, 17.8 ms against 30.6, 28.3; 32->64 at 16x16 for 16 channels 19.8, 20.5 against 22.3, 23.9.
//!   With the kernel forced on 4x4 outputs (64->128 at 8x8) it took 1.6-2.7x libtorch's time;
//! - another narrow 3x3 convolution (stride 2 on small images, or any with `GROUPWISE_CONV=libtorch`)
//!   runs oneDNN on a channels-last copy of its input and hands back an NCHW copy of its output: with
//!   both copies, forward and backward, 0.55-0.85x the time of the NCHW convolution at batch 128 on
//!   one thread. Activations stay NCHW: batch norm on CPU vectorises over channels on channels-last
//!   tensors, which with 4-8 channels is several times slower;
//! - everything else runs oneDNN on NCHW.
//!
//! That is the rule on CPUs without AVX-512. With AVX-512 (or `GROUPWISE_CONV_RULE=avx512`), oneDNN
//! runs 16-float vectors and the 8-float kernel loses on the wider layers: on a 2-core AVX-512 VM
//! (2026-12-04, the same example, one thread) 3->16 at 32x32 1.24x oneDNN's time, 16->16 at 32x32
//! 1.14x, 16->32 stride 2 at 16x16 1.20x, 32->64 stride 2 at 16x16 for 16 of 32 channels 1.28x,
//! while 4-8 channels still won at 16x16 and 32x32 (0.24-0.73x; 8->8 at 8x8 1.06x, 0.88x on two
//! threads) as did stride 2 to 16 channels (0.37-0.73x) and 16->32 at 32x32 for a slice of 4 or 8
//! channels (0.66-0.70x). So there the kernel runs a 3x3 stride-1 convolution only to at most
//! [`NARROW`] channels, and a stride-2 one (given [`OWN_STRIDED_PIXELS`]) to at most [`OWN_WIDE`]
//! channels or for a slice of an input of at most [`OWN_WIDE`] channels. `scripts/bench_ab.sh
//! GROUPWISE_CONV_RULE avx2 avx512` there, with each configuration's default runtime, avx512 / avx2
//! over 2 rounds: end-to-end 0.95, 0.95, DGL K=4 0.99, 0.95, G=2 K=4 0.97, 0.96, G=4 K=4 0.98, 0.96
//! (one thread: 0.91-0.99). A first version of the kernel in 16-float vectors (AVX-512), in 16
//! registers' blocks, was slower than the 8-float one there (16->16 at 32x32: 41 against 27 ms).
//! What AVX-512 does give the 8-float kernel is 32 vector registers: under this table the kernel
//! runs its x86-64-v4 build with blocks of accumulators twice as large (the same sums in the same
//! order: the same bits). The example on the same VM (a scratch build running the kernel on every
//! shape), 32-register / 16-register blocks, one thread, two rounds: 4->4 at 32x32 0.80, 0.87;
//! 16->4 0.82, 0.94; 8->8 at 32x32 0.82, 0.85, at 8x8 0.94, 0.88; stride 2 8->16 at 32x32 0.92,
//! 0.95; 32->64 at 16x16 for 16 channels 0.89, 0.85 (still 1.12x oneDNN's time); 16->16 at 32x32
//! 0.78, 0.85 (two threads 0.84, 0.77: then 0.97x oneDNN's time alone, but end-to-end trained 1.03,
//! 1.05x longer with it on one thread, 1.00, 1.03x with its default runtime, so oneDNN keeps those
//! layers). `scripts/bench_ab.sh` of the builds before and after, two rounds, after / before: G=2
//! K=4 0.93, 0.93 on one thread, 0.95, 0.95 with its default runtime; G=4 K=4 0.97, 0.95 and 0.96,
//! 0.97. With those 32 registers, 16-float vectors pay where rows are whole ones: a stride-1
//! convolution on 16 or 32 columns (and the stride-1 input gradient, which is one) runs 8 channels
//! x a 32-column row in 16-float vectors (the same sums in the same order). The example, 16-float /
//! 8-float, one run each, one thread: 4->4 at 32x32 1.00, 16->4 0.93, 8->8 at 32x32 0.88, at 16x16
//! 0.83 (at stride 2 no gain, so not there; a 16-float weight gradient, 8 channels x 3 taps of
//! accumulators, made whole layers slower: 16->4 1.29, 1.35x, 8->8 at 32x32 1.33, 1.41x, so it
//! stays 8-float); `plan --profile` of G=4 K=4, two runs each, interleaved: the first module's
//! nodes from 0.46-0.48x to 0.48-0.50x of end-to-end's GMAC/s, the second's from 0.48-0.50x to
//! 0.49-0.52x; `scripts/bench_ab.sh GW_BIN old new` (two rounds, new / old): G=2 K=4 0.95, 0.97 on
//! one thread, 0.95, 0.96 with its default runtime; G=4 K=4 0.98, 0.98 and 0.95, 0.99. Two more
//! shapes of the table, tried again on that VM a session later (scratch builds, the same script,
//! two rounds each): the kernel on 16->16 at 8x8 (the fourth module's layers at G=4) trained G=4
//! K=4 1.07, 1.06x longer on one thread and 1.04, 1.03x with its default runtime; oneDNN on
//! channels-last copies for every 3x3 layer it runs (`scripts/bench_conv.py` gives 16->16 at 32x32
//! with both copies 0.83x the NCHW time in PyTorch) trained end-to-end 1.05, 1.01x longer on one
//! thread, 0.99, 1.01x with its default runtime. Neither is kept.
//!
//! The kernels compute the same function summed in another order (the golden tests against PyTorch
//! hold). `GROUPWISE_CONV=libtorch` runs libtorch's convolutions everywhere (for comparing;
//! `scripts/bench_ab.sh GROUPWISE_CONV libtorch own`).

use std::ffi::c_char;
use std::sync::OnceLock;

use tch::nn;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

/// Output channels up to which a 3x3 convolution counts as narrow.
pub const NARROW: i64 = 8;
/// Output channels up to which a 3x3 stride-1 convolution on large images runs groupwise's kernel.
pub const OWN_WIDE: i64 = 16;
/// Output pixels from which a convolution to [`OWN_WIDE`] channels runs groupwise's kernel (32x32:
/// below, the gain is small; see the module doc).
pub const OWN_WIDE_PIXELS: i64 = 1024;
/// Output channels up to which a 3x3 stride-2 convolution runs groupwise's kernel (with any number
/// when only one slice of its input wants a gradient), given [`OWN_STRIDED_PIXELS`].
pub const OWN_STRIDED: i64 = 32;
/// Output pixels from which a 3x3 stride-2 convolution runs groupwise's kernel (8x8: on 4x4 outputs
/// half of each vector would be wasted).
pub const OWN_STRIDED_PIXELS: i64 = 64;

/// How libtorch runs a convolution that groupwise's kernel does not (chosen from its shape when it is
/// built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Libtorch {
    /// oneDNN on a channels-last copy of the input.
    ChannelsLast,
    /// oneDNN on the NCHW tensors.
    Native,
}

/// A bias-free convolution of the network.
#[derive(Debug)]
pub struct Conv {
    inner: nn::Conv2D,
    /// Whether groupwise's kernel can run it (3x3, stride 1 or 2); [`Conv::runs_own`] decides per
    /// input.
    own: bool,
    libtorch: Libtorch,
    cout: i64,
    stride: i64,
    padding: i64,
}

/// A bias-free `kernel` x `kernel` convolution with padding `kernel / 2`, weights ~ N(0, `stdev`).
pub fn conv2d(p: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, stdev: f64) -> Conv {
    let config = nn::ConvConfig {
        stride,
        padding: kernel / 2,
        bias: false,
        ws_init: nn::Init::Randn { mean: 0.0, stdev },
        ..Default::default()
    };
    let libtorch = if kernel == 3 && stride != 1 && cout <= NARROW {
        Libtorch::ChannelsLast
    } else {
        Libtorch::Native
    };
    Conv {
        inner: nn::conv2d(p, cin, cout, kernel, config),
        own: kernel == 3 && (stride == 1 || stride == 2),
        libtorch,
        cout,
        stride,
        padding: kernel / 2,
    }
}

/// Whether narrow convolutions use groupwise's kernel (not when `GROUPWISE_CONV=libtorch`).
pub fn own_kernel() -> bool {
    static OWN: OnceLock<bool> = OnceLock::new();
    *OWN.get_or_init(|| std::env::var("GROUPWISE_CONV").as_deref() != Ok("libtorch"))
}

/// Which table of the module doc's rule picks the kernel: the CPU's, or `GROUPWISE_CONV_RULE`
/// (`avx2` or `avx512`, for comparing the two on one machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRule {
    /// CPUs without AVX-512: groupwise's kernel up to 16 output channels (32 at stride 2).
    Avx2,
    /// CPUs with AVX-512, where oneDNN's convolutions to 16 and more channels run 16-float vectors
    /// and outrun the kernel's 8-float ones: the kernel only for narrower layers, in blocks for 32
    /// vector registers (where the CPU has x86-64-v4).
    Avx512,
}

/// The rule of this process (read once).
pub fn conv_rule() -> ConvRule {
    static RULE: OnceLock<ConvRule> = OnceLock::new();
    *RULE.get_or_init(|| match std::env::var("GROUPWISE_CONV_RULE").as_deref() {
        Ok("avx2") => ConvRule::Avx2,
        Ok("avx512") => ConvRule::Avx512,
        Ok(other) => {
            let detected = detected_rule();
            eprintln!(
                "groupwise: GROUPWISE_CONV_RULE={other:?} is neither avx2 nor avx512; using {}",
                if detected == ConvRule::Avx512 {
                    "avx512 (this CPU's)"
                } else {
                    "avx2 (this CPU's)"
                }
            );
            detected
        }
        Err(_) => detected_rule(),
    })
}

/// The rule for this CPU.
fn detected_rule() -> ConvRule {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return ConvRule::Avx512;
    }
    ConvRule::Avx2
}

impl Conv {
    /// The weight, `[C_out, C_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.inner.ws
    }

    /// The convolution of `x`, whose input gradient is wanted only for `own`: channels
    /// `[start, start + C_own)` of `x` (the same values; `x` is built from it, and its other
    /// channels are detached: an auxiliary classifier's stop-gradient input, where they are the other
    /// groups' slices). Computes own's gradient alone, straight into own's shape (nothing, not even
    /// zeros, for the other channels): by groupwise's kernel where the module doc's rule picks it,
    /// else around libtorch's convolution (whose output and weight gradient are then libtorch's, as
    /// in [`nn::Module::forward`]). Without a gradient to compute, or with `own` all of `x`, the
    /// plain convolution of `x`.
    // A libtorch autograd function written in C++ is reached through its C entry point, hence `unsafe`.
    #[allow(unsafe_code)]
    pub fn forward_own_slice(&self, x: &Tensor, own: &Tensor, start: i64) -> Tensor {
        if !own.requires_grad() || (start == 0 && own.size()[1] == x.size()[1]) {
            return nn::Module::forward(self, x);
        }
        if self.runs_own(x, true) {
            return conv3x3_cpu(&x.detach(), own, &self.inner.ws, self.stride, start);
        }
        if self.libtorch != Libtorch::Native {
            return nn::Module::forward(self, x);
        }
        let (x, w) = (x.detach(), &self.inner.ws);
        let (stride, padding) = (self.stride, self.padding);
        super::ffi::tensor("convolution", |error| {
            // SAFETY: the three pointers are live tensors for the call; the kernel copies the handles
            // it keeps.
            unsafe {
                groupwise_conv_own_slice(
                    x.as_ptr(),
                    own.as_ptr(),
                    w.as_ptr(),
                    start,
                    stride,
                    padding,
                    error,
                )
            }
        })
    }

    /// Whether groupwise's kernel computes this convolution of `x` (with the input gradient of one
    /// slice of its channels only: `slice`), by the rule of the module doc.
    fn runs_own(&self, x: &Tensor, slice: bool) -> bool {
        let size = x.size();
        if !(self.own
            && own_kernel()
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && size.len() == 4)
        {
            return false;
        }
        picks_own(
            conv_rule(),
            self.stride,
            size[1],
            self.cout,
            (size[2], size[3]),
            slice,
        )
    }
}

/// The module doc's rule under `rule`: whether groupwise's kernel runs a 3x3 convolution of `stride`
/// from `cin` to `cout` channels on `h` x `w` images (with the input gradient of one slice only:
/// `slice`).
fn picks_own(
    rule: ConvRule,
    stride: i64,
    cin: i64,
    cout: i64,
    (h, w): (i64, i64),
    slice: bool,
) -> bool {
    let avx512 = rule == ConvRule::Avx512;
    if stride == 1 {
        cout <= NARROW || (!avx512 && cout <= OWN_WIDE && h * w >= OWN_WIDE_PIXELS)
    } else {
        let pixels = ((h - 1) / 2 + 1) * ((w - 1) / 2 + 1);
        pixels >= OWN_STRIDED_PIXELS
            && if avx512 {
                cout <= OWN_WIDE || (slice && cin <= OWN_WIDE)
            } else {
                cout <= OWN_STRIDED || slice
            }
    }
}

impl nn::Module for Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        if self.runs_own(x, false) {
            conv3x3_cpu(x, x, &self.inner.ws, self.stride, 0)
        } else if self.libtorch == Libtorch::ChannelsLast {
            // NHWC strides on the same logical tensor: libtorch's convolution follows the input's
            // layout.
            let nhwc = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
            nhwc.apply(&self.inner).contiguous()
        } else {
            x.apply(&self.inner)
        }
    }
}

extern "C" {
    fn groupwise_conv3x3(
        input: *const C_tensor,
        own: *const C_tensor,
        weight: *const C_tensor,
        stride: i64,
        start: i64,
        wide: std::ffi::c_int,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn groupwise_conv_own_slice(
        input: *const C_tensor,
        own: *const C_tensor,
        weight: *const C_tensor,
        start: i64,
        stride: i64,
        padding: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// The 3x3 convolution (padding 1) of `x` with `w` at `stride` (1 or 2) by `conv.cpp`, with the input
/// gradient computed for `own` only, channels `[start, start + C_own)` of `x` (the same values; `x`
/// itself for a layer of the network), in the blocks of this process's [`conv_rule`].
fn conv3x3_cpu(x: &Tensor, own: &Tensor, w: &Tensor, stride: i64, start: i64) -> Tensor {
    conv3x3_blocks(x, own, w, stride, start, conv_rule())
}

/// [`conv3x3_cpu`] in the register blocks of `rule`'s table: with [`ConvRule::Avx512`], 32 vector
/// registers' worth where the CPU has them (x86-64-v4), else 16 (the same bits either way).
// A libtorch autograd function written in C++ is reached through its C entry point, hence `unsafe`.
#[allow(unsafe_code)]
fn conv3x3_blocks(
    x: &Tensor,
    own: &Tensor,
    w: &Tensor,
    stride: i64,
    start: i64,
    rule: ConvRule,
) -> Tensor {
    let wide = std::ffi::c_int::from(rule == ConvRule::Avx512);
    super::ffi::tensor("convolution", |error| {
        // SAFETY: the three pointers are live tensors for the call; the kernel copies the handles it
        // keeps.
        unsafe {
            groupwise_conv3x3(
                x.as_ptr(),
                own.as_ptr(),
                w.as_ptr(),
                stride,
                start,
                wide,
                error,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::assert_close;
    use super::*;

    /// Both tables of the rule on the layers they were measured on (the module doc).
    #[test]
    fn the_rule_keeps_wide_layers_for_onednn_on_avx512() {
        use ConvRule::{Avx2, Avx512};
        // (stride, cin, cout, size, slice, AVX2 table, AVX-512 table)
        let layers = [
            (1, 4, 4, 32, false, true, true),
            (1, 16, 4, 32, false, true, true),
            (1, 8, 8, 8, false, true, true),
            (1, 3, 16, 32, false, true, false),
            (1, 16, 16, 32, false, true, false),
            (1, 16, 16, 16, false, false, false),
            (2, 4, 8, 32, false, true, true),
            (2, 8, 16, 16, false, true, true),
            (2, 16, 32, 16, false, true, false),
            (2, 16, 32, 32, true, true, true),
            (2, 32, 64, 16, true, true, false),
            (2, 64, 128, 8, true, false, false),
            (2, 8, 16, 8, false, false, false),
        ];
        for (stride, cin, cout, size, slice, avx2, avx512) in layers {
            let shape = (size, size);
            let what = format!("{cin}->{cout} at {size}x{size}, stride {stride}, slice {slice}");
            assert_eq!(
                picks_own(Avx2, stride, cin, cout, shape, slice),
                avx2,
                "AVX2: {what}"
            );
            assert_eq!(
                picks_own(Avx512, stride, cin, cout, shape, slice),
                avx512,
                "AVX-512: {what}"
            );
        }
    }

    /// The kernel against libtorch's convolution at stride 1 and 2: output, input and weight
    /// gradients, on shapes with whole and partial vectors of columns, odd sizes, every output-channel
    /// block size and 1x1 images; and the input gradient of one run of channels only, between
    /// detached ones. Its blocks for 32 registers (AVX-512's table, where the CPU has x86-64-v4; elsewhere
    /// both runs take the 16-register ones) give the same bits as those for 16.
    #[test]
    fn the_kernel_computes_what_libtorch_computes() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        for stride in [1, 2] {
            for (n, cin, cout, size, start, len) in [
                (4, 4, 4, 32, 0, 4),
                (3, 16, 4, 28, 0, 16),
                (2, 3, 8, 7, 0, 3),
                (2, 5, 7, 14, 0, 5),
                (3, 2, 6, 16, 0, 2),
                (2, 4, 1, 9, 0, 4),
                (2, 3, 2, 1, 0, 3),
                (2, 16, 32, 33, 0, 16),
                (3, 8, 16, 15, 4, 4),
                (2, 6, 5, 10, 1, 2),
            ] {
                let x = Tensor::randn([n, cin, size, size], opts);
                let w = Tensor::randn([cout, cin, 3, 3], opts) * 0.3;
                let out = (size - 1) / stride + 1;
                let g = Tensor::randn([n, cout, out, out], opts);
                // The kernel in the blocks of a rule's table, or libtorch, on the input built from
                // the part that wants a gradient (all of it, or between detached channels).
                let run = |kernel: Option<ConvRule>| {
                    let own = x.narrow(1, start, len).copy().set_requires_grad(true);
                    let w = w.copy().set_requires_grad(true);
                    let input = if len == cin {
                        own.shallow_clone()
                    } else {
                        let after = x.narrow(1, start + len, cin - start - len);
                        Tensor::cat(&[&x.narrow(1, 0, start), &own, &after], 1)
                    };
                    let y = match kernel {
                        Some(rule) => conv3x3_blocks(&input, &own, &w, stride, start, rule),
                        None => input.conv2d(&w, None::<Tensor>, [stride; 2], [1, 1], [1, 1], 1),
                    };
                    (&y * &g).sum(Kind::Float).backward();
                    (y.detach(), own.grad(), w.grad())
                };
                let (y1, dx1, dw1) = run(Some(ConvRule::Avx2));
                let (y2, dx2, dw2) = run(None);
                let (y3, dx3, dw3) = run(Some(ConvRule::Avx512));
                let shape = format!("{n}x{cin}->{cout} at {size}, stride {stride}");
                for (what, a, b) in [
                    ("output", &y1, &y3),
                    ("input gradient", &dx1, &dx3),
                    ("weight gradient", &dw1, &dw3),
                ] {
                    assert!(a.equal(b), "{shape}: {what} in 16 and 32 registers");
                }
                for (what, a, b) in [
                    ("output", &y1, &y2),
                    ("input gradient", &dx1, &dx2),
                    ("weight gradient", &dw1, &dw2),
                ] {
                    assert_close(a, b, 1e-5, &format!("{shape}: {what}"));
                }
            }
        }
    }

    /// No input gradient is computed where none is wanted (a module's detached input), and the
    /// weight gradient is the same.
    #[test]
    fn a_detached_input_gets_only_the_weight_gradient() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([2, 3, 6, 6], opts);
        let w = Tensor::randn([4, 3, 3, 3], opts).set_requires_grad(true);
        conv3x3_cpu(&x, &x, &w, 1, 0).sum(Kind::Float).backward();
        let ours = w.grad().copy();
        let _ = w.grad().zero_();
        x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
            .sum(Kind::Float)
            .backward();
        let diff = (&ours - w.grad()).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{diff}");
        assert!(!x.grad().defined());
    }

    /// The own-slice convolution, by groupwise's kernel and by libtorch's: the same output, weight
    /// gradient and own slice's input gradient as libtorch's convolution of the concatenation, for
    /// stride 1 and 2.
    #[test]
    fn the_own_slice_convolution_matches_libtorch() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let cases = [(2, 1), (1, 0), (2, 3)];
        for (own, (stride, own_at)) in [true, false]
            .into_iter()
            .flat_map(|k| cases.map(|c| (k, c)))
        {
            let vs = nn::VarStore::new(Device::Cpu);
            let mut conv = conv2d(vs.root() / "c", 16, 32, 3, stride, 0.1);
            conv.own = own;
            // 32x32: large enough for groupwise's kernel at stride 2 (the module doc's rule).
            let parts: Vec<Tensor> = (0..4)
                .map(|_| Tensor::randn([2, 4, 32, 32], opts))
                .collect();
            let out = (32 - 1) / stride + 1;
            let g = Tensor::randn([2, 32, out, out], opts);
            assert_eq!(conv.runs_own(&parts[0], true), own && stride == 2);
            let run = |own_slice: bool| {
                let own = parts[own_at].copy().set_requires_grad(true);
                let all: Vec<Tensor> = (0..4)
                    .map(|h| {
                        if h == own_at {
                            own.shallow_clone()
                        } else {
                            parts[h].shallow_clone()
                        }
                    })
                    .collect();
                let x = Tensor::cat(&all, 1);
                let y = if own_slice {
                    conv.forward_own_slice(&x, &own, 4 * own_at as i64)
                } else {
                    x.conv2d(
                        conv.weight(),
                        None::<Tensor>,
                        [stride; 2],
                        [1, 1],
                        [1, 1],
                        1,
                    )
                };
                (&y * &g).sum(Kind::Float).backward();
                let dw = conv.inner.ws.grad().copy();
                let _ = conv.inner.ws.grad().zero_();
                (y.detach(), own.grad(), dw)
            };
            let (y1, dx1, dw1) = run(true);
            let (y2, dx2, dw2) = run(false);
            for (what, a, b) in [
                ("output", &y1, &y2),
                ("own gradient", &dx1, &dx2),
                ("weight gradient", &dw1, &dw2),
            ] {
                assert_close(
                    a,
                    b,
                    1e-5,
                    &format!("own kernel {own}, stride {stride}: {what}"),
                );
            }
        }
    }

    /// The kernel splits images over the intra-op threads: the output and both gradients are the same
    /// bits on one thread and on three.
    #[test]
    fn the_kernel_gives_the_same_bits_on_any_thread_count() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([9, 5, 12, 12], opts);
        let w = Tensor::randn([6, 5, 3, 3], opts);
        let g = Tensor::randn([9, 6, 12, 12], opts);
        let run = |threads: usize| {
            crate::device::set_intra_op_threads(threads);
            let x = x.copy().set_requires_grad(true);
            let w = w.copy().set_requires_grad(true);
            let y = conv3x3_cpu(&x, &x, &w, 1, 0) + conv3x3_cpu(&x, &x, &w, 2, 0).sum(Kind::Float);
            (&y * &g).sum(Kind::Float).backward();
            [y.detach(), x.grad(), w.grad()]
        };
        let (one, three) = (run(1), run(3));
        for (a, b) in one.iter().zip(&three) {
            assert!(a.equal(b));
        }
    }

    /// A wrong shape is libtorch's kind of error, not a crash.
    #[test]
    fn a_wrong_weight_is_an_error() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([1, 3, 4, 4], opts);
        let w = Tensor::randn([4, 2, 3, 3], opts);
        let err = std::panic::catch_unwind(|| conv3x3_cpu(&x, &x, &w, 1, 0)).unwrap_err();
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("weight must be"), "{text}");
    }
}
