//! Batch norm of the network (gamma 1, beta 0, eps 1e-5, momentum 0.1: PyTorch's defaults).
//!
//! Training on float32 CPU tensors runs groupwise's own kernel (`batch_norm.cpp`, a libtorch autograd
//! function compiled by `build/groupwise.rs`): libtorch's CPU kernel sums each channel's statistics in
//! one scalar chain, and its batch norm was 12.9% of the samples of a `perf` of ResNet-32's end-to-end
//! step on one thread (`scripts/bench_batch_norm.sh` measures the two kernels run against run). The
//! ReLU that follows most batch norms runs in the same pass ([`BatchNorm::forward_relu_t`]), and so do
//! a residual block's shortcut add and ReLU ([`BatchNorm::forward_add_relu_t`]: 0.80x the time of
//! the batch norm, add and ReLU as three passes at ResNet-32's widest shape, 0.89-1.03x elsewhere, one
//! thread; `cargo run --release -p groupwise --example bench_block_end`). Without a shortcut, the
//! backward pass recomputes the ReLU's gate from the batch norm's input (the same bits) rather than
//! read its output: on a 2-core AVX-512 VM (`scripts/bench_ab.sh` of the builds before and after,
//! after / before) 0.96-0.99x the step time of end-to-end, G=2 K=4 and G=4 K=4 with their default
//! runtimes, where both cores stream memory, but 1.00-1.03x on one thread (median 1.02 of 10 runs).
//! The kernel computes what PyTorch's does (the same statistics, running averages, output and
//! gradients) summed in another order, deterministic for any intra-op thread count. Evaluation, other
//! devices and other dtypes use libtorch's. `GROUPWISE_BATCH_NORM=libtorch` uses libtorch's
//! everywhere (for comparing the two; `scripts/bench_batch_norm.sh`).

use std::ffi::c_char;
use std::sync::OnceLock;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

/// PyTorch's default momentum of the running averages.
const MOMENTUM: f64 = 0.1;
/// PyTorch's default epsilon under the square root.
const EPS: f64 = 1e-5;

/// A 2-D batch norm layer; its variables are tch's (`weight`, `bias`, `running_mean`,
/// `running_var`), so checkpoints are unchanged.
#[derive(Debug)]
pub struct BatchNorm {
    inner: nn::BatchNorm,
}

/// Batch norm over `channels` channels with gamma 1 and beta 0.
pub fn batch_norm2d(p: nn::Path, channels: i64) -> BatchNorm {
    // tch's default gamma init is U(0, 1), not PyTorch's 1: set both explicitly.
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        momentum: MOMENTUM,
        eps: EPS,
        ..Default::default()
    };
    BatchNorm {
        inner: nn::batch_norm2d(p, channels, config),
    }
}

/// Whether training on the CPU uses groupwise's kernel (not when `GROUPWISE_BATCH_NORM=libtorch`).
pub fn own_kernel() -> bool {
    static OWN: OnceLock<bool> = OnceLock::new();
    *OWN.get_or_init(|| std::env::var("GROUPWISE_BATCH_NORM").as_deref() != Ok("libtorch"))
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward(x, None, train, false)
    }
}

impl BatchNorm {
    /// `relu(batch_norm(x))`, in one pass with groupwise's kernel.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward(x, None, train, true)
    }

    /// `relu(batch_norm(x) + residual)` (a residual block's end), in one pass with groupwise's
    /// kernel; `residual` has `x`'s shape.
    pub fn forward_add_relu_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Tensor {
        self.forward(x, Some(residual), train, true)
    }

    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, train: bool, relu: bool) -> Tensor {
        let bn = &self.inner;
        let size = x.size();
        let fits = train
            && own_kernel()
            && x.device() == Device::Cpu
            && x.kind() == Kind::Float
            && size.len() == 4
            // One value per channel: libtorch's (its running variance becomes 0 / 0).
            && size[0] * size[2] * size[3] > 1
            && residual.is_none_or(|r| r.device() == Device::Cpu && r.kind() == Kind::Float);
        match (&bn.ws, &bn.bs) {
            (Some(w), Some(b)) if fits => {
                train_cpu(x, residual, [w, b, &bn.running_mean, &bn.running_var], relu)
            }
            _ => {
                let y = bn.forward_t(x, train);
                let y = match residual {
                    Some(r) => y + r,
                    None => y,
                };
                if relu {
                    y.relu()
                } else {
                    y
                }
            }
        }
    }
}

extern "C" {
    fn groupwise_batch_norm_train(
        input: *const C_tensor,
        weight: *const C_tensor,
        bias: *const C_tensor,
        residual: *const C_tensor,
        running_mean: *const C_tensor,
        running_var: *const C_tensor,
        momentum: f64,
        eps: f64,
        relu_after: i32,
        error: *mut *mut c_char,
    ) -> *mut C_tensor;
}

/// Training-mode batch norm of `x` by `batch_norm.cpp` with weight, bias, running mean and running
/// variance (updated in place), plus `residual` when given, and a ReLU after it when `relu`.
// A libtorch autograd function written in C++ is reached through its C entry point, hence `unsafe`.
#[allow(unsafe_code)]
fn train_cpu(
    x: &Tensor,
    residual: Option<&Tensor>,
    [w, b, mean, var]: [&Tensor; 4],
    relu: bool,
) -> Tensor {
    let residual = residual.map_or(std::ptr::null(), |r| r.as_ptr());
    super::ffi::tensor("batch norm", |error| {
        // SAFETY: every pointer is a live tensor for the call, or null for no residual; the kernel
        // copies the handles it keeps.
        unsafe {
            groupwise_batch_norm_train(
                x.as_ptr(),
                w.as_ptr(),
                b.as_ptr(),
                residual,
                mean.as_ptr(),
                var.as_ptr(),
                MOMENTUM,
                EPS,
                i32::from(relu),
                error,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::assert_close;
    use super::*;

    /// How a batch norm ends: alone, with a ReLU, with a residual added and a ReLU.
    #[derive(Clone, Copy)]
    enum End {
        None,
        Relu,
        AddRelu,
    }

    /// The kernel against libtorch's: output, running statistics and every gradient.
    #[test]
    fn the_kernel_computes_what_libtorch_computes() {
        tch::manual_seed(3);
        for shape in [[8i64, 4, 5, 7], [3, 16, 32, 32], [2, 3, 1, 1]] {
            let vs = nn::VarStore::new(Device::Cpu);
            let mut ours = batch_norm2d(vs.root() / "a", shape[1]);
            let mut theirs = batch_norm2d(vs.root() / "b", shape[1]);
            let opts = (Kind::Float, Device::Cpu);
            for bn in [&mut ours, &mut theirs] {
                tch::no_grad(|| {
                    let c = shape[1];
                    let w = bn.inner.ws.as_mut().unwrap();
                    w.copy_(&Tensor::linspace(0.5, 1.5, c, opts));
                    let b = bn.inner.bs.as_mut().unwrap();
                    b.copy_(&Tensor::linspace(-0.2, 0.3, c, opts));
                });
            }
            let x = (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 3.0 + 1.5)
                .set_requires_grad(true);
            let g = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            // A residual read through a strided view (a block's channel slice).
            let wide = Tensor::randn([shape[0], 2 * shape[1], shape[2], shape[3]], opts);
            let run = |bn: &BatchNorm, own: bool, end: End| {
                let x = x.detach().copy().set_requires_grad(true);
                let r = wide.copy().set_requires_grad(true);
                let slice = r.narrow(1, shape[1], shape[1]);
                let y = match (own, end) {
                    (true, End::None) => bn.forward_t(&x, true),
                    (true, End::Relu) => bn.forward_relu_t(&x, true),
                    (true, End::AddRelu) => bn.forward_add_relu_t(&x, &slice, true),
                    (false, End::None) => bn.inner.forward_t(&x, true),
                    (false, End::Relu) => bn.inner.forward_t(&x, true).relu(),
                    (false, End::AddRelu) => (bn.inner.forward_t(&x, true) + &slice).relu(),
                };
                (&y * &g).sum(Kind::Float).backward();
                let w = bn.inner.ws.as_ref().unwrap().grad();
                let b = bn.inner.bs.as_ref().unwrap().grad();
                let dr = match end {
                    End::AddRelu => r.grad(),
                    _ => wide.zeros_like(),
                };
                (y.detach(), x.grad(), w, b, dr)
            };
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                assert_close(a, b, 2e-5, &format!("{shape:?} {what}"));
            };
            // Batch norm alone, with its ReLU, then with a residual added before the ReLU
            // (gradients accumulate: the weights' sums).
            for end in [End::None, End::Relu, End::AddRelu] {
                let (y1, dx1, dw1, db1, dr1) = run(&ours, true, end);
                let (y2, dx2, dw2, db2, dr2) = run(&theirs, false, end);
                close(&y1, &y2, "output");
                close(&dx1, &dx2, "input gradient");
                close(&dw1, &dw2, "weight gradient");
                close(&db1, &db2, "bias gradient");
                close(&dr1, &dr2, "residual gradient");
                let (m1, m2) = (&ours.inner.running_mean, &theirs.inner.running_mean);
                close(m1, m2, "running mean");
                let (v1, v2) = (&ours.inner.running_var, &theirs.inner.running_var);
                close(v1, v2, "running var");
            }
        }
    }

    /// The ReLU's gate in backward, recomputed from the input where no residual was added, is the
    /// forward pass's own: the gradient through batch norm + ReLU is, bit for bit, the batch norm's
    /// gradient of the upstream gradient zeroed where the output is.
    #[test]
    fn the_relu_gate_in_backward_is_the_forward_output() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([6, 5, 16, 16], opts) * 2.0 + 0.3;
        let g = Tensor::randn([6, 5, 16, 16], opts);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut bn = batch_norm2d(vs.root(), 5);
        tch::no_grad(|| {
            let b = bn.inner.bs.as_mut().unwrap();
            b.copy_(&Tensor::linspace(-0.5, 0.5, 5, opts));
        });
        // Batch norm + ReLU, the backward pass of g.
        let x1 = x.copy().set_requires_grad(true);
        let y = bn.forward_relu_t(&x1, true);
        (&y * &g).sum(Kind::Float).backward();
        // Batch norm alone, the backward pass of g zeroed where that output is.
        let masked = g.where_self(&y.gt(0.0), &g.zeros_like());
        let x2 = x.copy().set_requires_grad(true);
        (bn.forward_t(&x2, true) * &masked)
            .sum(Kind::Float)
            .backward();
        assert!(x1.grad().equal(&x2.grad()));
    }

    /// Channels are split over the intra-op threads: the output, the running statistics and every
    /// gradient are the same bits on one thread and on three.
    #[test]
    fn the_kernel_gives_the_same_bits_on_any_thread_count() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([6, 7, 9, 9], opts) * 2.0 + 0.5;
        let g = Tensor::randn([6, 7, 9, 9], opts);
        let r = Tensor::randn([6, 7, 9, 9], opts);
        let run = |threads: usize| {
            crate::device::set_intra_op_threads(threads);
            let vs = nn::VarStore::new(Device::Cpu);
            let bn = batch_norm2d(vs.root(), 7);
            let x = x.copy().set_requires_grad(true);
            let r = r.copy().set_requires_grad(true);
            let y = bn.forward_relu_t(&x, true);
            let z = bn.forward_add_relu_t(&x, &r, true);
            (&y * &g + &z * &g).sum(Kind::Float).backward();
            let w = bn.inner.ws.as_ref().unwrap().grad();
            let b = bn.inner.bs.as_ref().unwrap().grad();
            let stats = [bn.inner.running_mean.copy(), bn.inner.running_var.copy()];
            [
                y.detach(),
                z.detach(),
                x.grad(),
                r.grad(),
                w,
                b,
                stats[0].shallow_clone(),
                stats[1].shallow_clone(),
            ]
        };
        let (one, three) = (run(1), run(3));
        for (a, b) in one.iter().zip(&three) {
            assert!(a.equal(b));
        }
    }
}
