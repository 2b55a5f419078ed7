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
//! - another narrow 3x3 convolution (stride 2) runs oneDNN on a channels-last copy of its input and
//!   hands back an NCHW copy of its output: with both copies, forward and backward, 0.55-0.85x the time
//!   of the NCHW convolution at batch 128 on one thread. Activations stay NCHW: batch norm on CPU
//!   vectorises over channels on channels-last tensors, which with 4-8 channels is several times slower;
//! - everything else runs oneDNN on NCHW.
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

/// How one convolution runs (chosen from its shape when it is built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// groupwise's 3x3 stride-1 kernel, where it applies (float32 on the CPU, see the module doc);
    /// oneDNN otherwise.
    Own,
    /// oneDNN on a channels-last copy of the input.
    ChannelsLast,
    /// oneDNN on the NCHW tensors.
    Native,
}

/// A bias-free convolution of the network.
#[derive(Debug)]
pub struct Conv {
    inner: nn::Conv2D,
    kernel: Kernel,
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
    let choice = match (kernel, stride) {
        (3, 1) if cout <= OWN_WIDE => Kernel::Own,
        (3, _) if cout <= NARROW => Kernel::ChannelsLast,
        _ => Kernel::Native,
    };
    Conv {
        inner: nn::conv2d(p, cin, cout, kernel, config),
        kernel: choice,
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

impl Conv {
    /// The weight, `[C_out, C_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.inner.ws
    }

    /// The convolution of `x`, whose input gradient is wanted only for channels
    /// `[start, start + len)`: the others are detached (an auxiliary classifier's stop-gradient input,
    /// where they are the other groups' slices). Computes only that part of the input gradient (zero
    /// elsewhere) instead of all of it; the output and the weight gradient are libtorch's, as in
    /// [`nn::Module::forward`]. Without a gradient to compute, the plain convolution.
    // A libtorch autograd function written in C++ is reached through its C entry point, hence `unsafe`.
    #[allow(unsafe_code)]
    pub fn forward_own_slice(&self, x: &Tensor, start: i64, len: i64) -> Tensor {
        if !x.requires_grad() || self.kernel != Kernel::Native || (start == 0 && len == x.size()[1])
        {
            return nn::Module::forward(self, x);
        }
        let w = &self.inner.ws;
        let (stride, padding) = (self.stride, self.padding);
        super::ffi::tensor("convolution", |error| {
            // SAFETY: both pointers are live tensors for the call; the kernel copies the handles it
            // keeps.
            unsafe {
                groupwise_conv_own_slice(x.as_ptr(), w.as_ptr(), start, len, stride, padding, error)
            }
        })
    }
}

impl nn::Module for Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let own = self.kernel == Kernel::Own
            && own_kernel()
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && size.len() == 4
            && (self.cout <= NARROW || size[2] * size[3] >= OWN_WIDE_PIXELS);
        if own {
            conv3x3_cpu(x, &self.inner.ws)
        } else if self.kernel != Kernel::Native && self.cout <= NARROW {
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
        weight: *const C_tensor,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
    fn groupwise_conv_own_slice(
        input: *const C_tensor,
        weight: *const C_tensor,
        start: i64,
        len: i64,
        stride: i64,
        padding: i64,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// The 3x3 stride-1 convolution of `x` with `w` by `conv.cpp`.
// A libtorch autograd function written in C++ is reached through its C entry point, hence `unsafe`.
#[allow(unsafe_code)]
fn conv3x3_cpu(x: &Tensor, w: &Tensor) -> Tensor {
    super::ffi::tensor("convolution", |error| {
        // SAFETY: both pointers are live tensors for the call; the kernel copies the handles it keeps.
        unsafe { groupwise_conv3x3(x.as_ptr(), w.as_ptr(), error) }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::assert_close;
    use super::*;

    /// The kernel against libtorch's convolution: output, input and weight gradients, on shapes with
    /// whole and partial vectors of columns, every output-channel block size, and 1x1 images.
    #[test]
    fn the_kernel_computes_what_libtorch_computes() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        for (n, cin, cout, size) in [
            (4, 4, 4, 32),
            (3, 16, 4, 28),
            (2, 3, 8, 7),
            (2, 5, 7, 14),
            (3, 2, 6, 16),
            (2, 4, 1, 9),
            (2, 3, 2, 1),
        ] {
            let x = Tensor::randn([n, cin, size, size], opts);
            let w = Tensor::randn([cout, cin, 3, 3], opts) * 0.3;
            let g = Tensor::randn([n, cout, size, size], opts);
            let run = |own: bool| {
                let x = x.copy().set_requires_grad(true);
                let w = w.copy().set_requires_grad(true);
                let y = if own {
                    conv3x3_cpu(&x, &w)
                } else {
                    x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                };
                (&y * &g).sum(Kind::Float).backward();
                (y.detach(), x.grad(), w.grad())
            };
            let (y1, dx1, dw1) = run(true);
            let (y2, dx2, dw2) = run(false);
            for (what, a, b) in [
                ("output", &y1, &y2),
                ("input gradient", &dx1, &dx2),
                ("weight gradient", &dw1, &dw2),
            ] {
                let what = format!("{n}x{cin}->{cout} at {size}: {what}");
                assert_close(a, b, 1e-5, &what);
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
        conv3x3_cpu(&x, &w).sum(Kind::Float).backward();
        let ours = w.grad().copy();
        let _ = w.grad().zero_();
        x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
            .sum(Kind::Float)
            .backward();
        let diff = (&ours - w.grad()).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{diff}");
        assert!(!x.grad().defined());
    }

    /// The own-slice convolution: the same output, weight gradient and own slice's input gradient as
    /// libtorch's convolution of the concatenation, for stride 1 and 2.
    #[test]
    fn the_own_slice_convolution_matches_libtorch() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        for (stride, own_at) in [(2, 1), (1, 0), (2, 3)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let conv = conv2d(vs.root() / "c", 16, 32, 3, stride, 0.1);
            assert_eq!(conv.kernel, Kernel::Native);
            let parts: Vec<Tensor> = (0..4).map(|_| Tensor::randn([3, 4, 9, 9], opts)).collect();
            let g = Tensor::randn(
                [3, 32, 9 / stride + 9 % stride, 9 / stride + 9 % stride],
                opts,
            );
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
                    conv.forward_own_slice(&x, 4 * own_at as i64, 4)
                } else {
                    nn::Module::forward(&conv, &x)
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
                assert_close(a, b, 1e-5, &format!("stride {stride}: {what}"));
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
            let y = conv3x3_cpu(&x, &w);
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
        let err = std::panic::catch_unwind(|| conv3x3_cpu(&x, &w)).unwrap_err();
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("weight must be"), "{text}");
    }
}
