// Training-mode batch norm for float32 NCHW tensors on the CPU, as a libtorch autograd function.
//
// Why: libtorch's CPU kernel sums each channel's statistics in one scalar chain per channel: the forward
// pass of a [128, 16, 32, 32] batch norm took 6.2 ms on one thread (2.6 ms here), and libtorch's batch
// norm kernels were 12.9% of the samples of a `perf` of ResNet-32's end-to-end step (7.3% with these,
// before the ReLU was fused in). Here every (image, channel) plane is summed in 16 independent float
// lanes (GCC vectors: AVX2 where the CPU has it, chosen at load time) and planes are added in double;
// the arithmetic is PyTorch's (`aten/src/ATen/native/cpu/batch_norm_kernel.cpp`): the same statistics,
// running averages, output and gradients, summed in another order (within float rounding of it; the
// golden tests hold).
//
// The ReLU after a batch norm, and a residual block's shortcut added before it, run in the same
// passes (forward: one read of the input and the shortcut, one write; backward: the gate's gradient,
// which is the shortcut's, written once while the sums are taken). Without a shortcut, backward
// takes the ReLU's gate from its input recomputed as forward computed it (x * alpha + beta: the same
// bits) instead of from its output: one stream fewer to read in both passes, which pays where the
// cores compete for memory (see `model/batch_norm.rs`).
//
// Channels are split over libtorch's intra-op threads; each channel is summed by one thread in a
// fixed order, so the result does not depend on the thread count.
//
// Tried and not kept: prefetching, in each plane's loop, the same channel's plane of the next image
// (an image apart, past the page where the hardware's prefetcher stops). Forward and backward at
// ResNet-32's shapes, one thread, two interleaved runs on a 2-core AVX-512 VM: 0.80-1.12x the time
// without it, no shape consistently faster.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels.h"

#include <cmath>
#include <cstdint>
#include <string>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using groupwise::load;
using groupwise::splat;
using groupwise::store;
using groupwise::v8;
using groupwise::v8i;

inline double total(v8 a, v8 b) {
  double s = 0;
  for (int j = 0; j < 8; ++j) s += static_cast<double>(a[j]) + static_cast<double>(b[j]);
  return s;
}

// sum(x[i]) over one plane, in 16 lanes.
GW_CLONES double plane_sum(const float* x, int64_t len) {
  v8 a = {}, b = {};
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    a += load(x + i);
    b += load(x + i + 8);
  }
  double s = total(a, b);
  for (; i < len; ++i) s += x[i];
  return s;
}

// sum((x[i] - mean)^2) over one plane, in 16 lanes.
GW_CLONES double plane_sq(const float* x, int64_t len, float mean) {
  const v8 m = splat(mean);
  v8 a = {}, b = {};
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const v8 d = load(x + i) - m, e = load(x + i + 8) - m;
    a += d * d;
    b += e * e;
  }
  double s = total(a, b);
  for (; i < len; ++i) {
    const float d = x[i] - mean;
    s += d * d;
  }
  return s;
}

// v where not v <= 0, else 0: ReLU as libtorch computes it (NaN stays NaN).
inline v8 relu(v8 v) { return (v8)((v8i)v & ~(v <= v8{})); }

// g where not y <= 0, else 0: the gradient through a ReLU whose output is y (libtorch's rule).
inline v8 gate(v8 g, v8 y) { return (v8)((v8i)g & ~(y <= v8{})); }

// Where backward's ReLU gate comes from: no ReLU (kNone), the ReLU's output y (kOutput), or the
// ReLU's input recomputed from the batch norm's input x as the forward pass computed it,
// x * alpha + beta (kInput: the same bits, and one stream fewer to read where no residual was added).
enum GateFrom { kNone, kOutput, kInput };

// g at [i, i + 8), gated as G says.
template <int G>
GW_INLINE v8 gated_grad(const float* g, const float* y, const float* x, int64_t i, v8 alpha,
                        v8 beta) {
  if constexpr (G == kOutput) return gate(load(g + i), load(y + i));
  if constexpr (G == kInput) return gate(load(g + i), load(x + i) * alpha + beta);
  return load(g + i);
}

// g[i], gated as G says.
template <int G>
GW_INLINE float gated_grad_at(const float* g, const float* y, const float* x, int64_t i,
                              float alpha, float beta) {
  if constexpr (G == kOutput) return y[i] <= 0.f ? 0.f : g[i];
  if constexpr (G == kInput) return x[i] * alpha + beta <= 0.f ? 0.f : g[i];
  return g[i];
}

// Adds sum(g) and sum(g * (x - mean)) over one plane, in 16 lanes each, g gated as G says first,
// and the gated g stored in `gated` when that is not null.
template <int G>
GW_INLINE void grad_sums(const float* g, const float* y, const float* x, int64_t len, float mean,
                         float alpha, float beta, float* gated, double* sum_g, double* dot) {
  const v8 m = splat(mean), al = splat(alpha), be = splat(beta);
  v8 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    const v8 g0 = gated_grad<G>(g, y, x, i, al, be), g1 = gated_grad<G>(g, y, x, i + 8, al, be);
    // (Loop-invariant: unswitched by the compiler at -O3.)
    if (gated != nullptr) {
      store(gated + i, g0);
      store(gated + i + 8, g1);
    }
    a0 += g0;
    a1 += g1;
    b0 += g0 * (load(x + i) - m);
    b1 += g1 * (load(x + i + 8) - m);
  }
  double sa = total(a0, a1), sb = total(b0, b1);
  for (; i < len; ++i) {
    const float gi = gated_grad_at<G>(g, y, x, i, alpha, beta);
    if (gated != nullptr) gated[i] = gi;
    sa += gi;
    sb += gi * (x[i] - mean);
  }
  *sum_g += sa;
  *dot += sb;
}

// grad_sums with the gate's source picked at run time: y when `from` is kOutput, alpha and beta
// (the forward pass's) when kInput.
GW_CLONES void plane_grad_sums(GateFrom from, const float* g, const float* y, const float* x,
                               int64_t len, float mean, float alpha, float beta, float* gated,
                               double* sum_g, double* dot) {
  switch (from) {
    case kOutput: grad_sums<kOutput>(g, y, x, len, mean, alpha, beta, gated, sum_g, dot); break;
    case kInput: grad_sums<kInput>(g, y, x, len, mean, alpha, beta, gated, sum_g, dot); break;
    default: grad_sums<kNone>(g, y, x, len, mean, alpha, beta, gated, sum_g, dot); break;
  }
}

// y = x * alpha + beta over one plane, plus r when it is not null, then ReLU when `relu_after`.
GW_CLONES void plane_affine(float* y, const float* x, const float* r, int64_t len, float alpha,
                            float beta, bool relu_after) {
  const v8 a = splat(alpha), b = splat(beta);
  int64_t i = 0;
  // (The loop-invariant tests are unswitched by the compiler at -O3.)
  for (; i + 8 <= len; i += 8) {
    v8 v = load(x + i) * a + b;
    if (r != nullptr) v += load(r + i);
    store(y + i, relu_after ? relu(v) : v);
  }
  for (; i < len; ++i) {
    float v = x[i] * alpha + beta;
    if (r != nullptr) v += r[i];
    y[i] = (relu_after && v <= 0.f) ? 0.f : v;
  }
}

// dx = (g - grad_mean - (x - mean) * k) * a over one plane, g gated as G says first.
template <int G>
GW_INLINE void input_grad(float* dx, const float* g, const float* y, const float* x, int64_t len,
                          float mean, float grad_mean, float k, float a, float alpha, float beta) {
  const v8 m = splat(mean), gm = splat(grad_mean), kk = splat(k), aa = splat(a);
  const v8 al = splat(alpha), be = splat(beta);
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const v8 gi = gated_grad<G>(g, y, x, i, al, be);
    store(dx + i, (gi - gm - (load(x + i) - m) * kk) * aa);
  }
  for (; i < len; ++i) {
    const float gi = gated_grad_at<G>(g, y, x, i, alpha, beta);
    dx[i] = (gi - grad_mean - (x[i] - mean) * k) * a;
  }
}

// input_grad with the gate's source picked at run time, as in plane_grad_sums.
GW_CLONES void plane_input_grad(GateFrom from, float* dx, const float* g, const float* y,
                                const float* x, int64_t len, float mean, float grad_mean, float k,
                                float a, float alpha, float beta) {
  switch (from) {
    case kOutput: input_grad<kOutput>(dx, g, y, x, len, mean, grad_mean, k, a, alpha, beta); break;
    case kInput: input_grad<kInput>(dx, g, y, x, len, mean, grad_mean, k, a, alpha, beta); break;
    default: input_grad<kNone>(dx, g, y, x, len, mean, grad_mean, k, a, alpha, beta); break;
  }
}

// How an [N, C, ...] contiguous tensor splits into (image, channel) planes.
struct Planes {
  int64_t n, channels, plane;
  explicit Planes(const at::Tensor& x)
      : n(x.size(0)), channels(x.size(1)), plane(x.numel() / (x.size(0) * x.size(1))) {}
  // Values per channel over the batch.
  int64_t count() const { return n * plane; }
  // Offset of image i's plane of channel c.
  int64_t at(int64_t i, int64_t c) const { return (i * channels + c) * plane; }
};

struct FastBatchNorm : public torch::autograd::Function<FastBatchNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias,
                            const at::Tensor& residual, bool add_residual,
                            at::Tensor running_mean, at::Tensor running_var, double momentum,
                            double eps, bool relu_after) {
    at::Tensor x = input.contiguous();
    at::Tensor r;
    if (add_residual) {
      TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type() &&
                      residual.device() == x.device(),
                  "the residual ", residual.sizes(), " does not match the batch norm's input ",
                  x.sizes());
      r = residual.contiguous();
    }
    const Planes p(x);
    const int64_t n = p.n, channels = p.channels, plane = p.plane, count = p.count();
    at::Tensor y = at::empty_like(x);
    at::Tensor mean = at::empty({channels}, x.options());
    at::Tensor invstd = at::empty({channels}, x.options());
    // Each channel's alpha and beta (y = x * alpha + beta before the residual and the ReLU).
    at::Tensor affine = at::empty({channels, 2}, x.options());
    at::Tensor w = weight.contiguous(), b = bias.contiguous();
    const float* xp = x.const_data_ptr<float>();
    const float* rp = r.defined() ? r.const_data_ptr<float>() : nullptr;
    float* yp = y.data_ptr<float>();
    float* mp = mean.data_ptr<float>();
    float* ip = invstd.data_ptr<float>();
    float* ap = affine.data_ptr<float>();
    const float* wp = w.const_data_ptr<float>();
    const float* bp = b.const_data_ptr<float>();
    float* rmp = running_mean.data_ptr<float>();
    float* rvp = running_var.data_ptr<float>();
    at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += plane_sum(xp + p.at(i, c), plane);
        const float m = static_cast<float>(sum / count);
        double var_sum = 0;
        for (int64_t i = 0; i < n; ++i) var_sum += plane_sq(xp + p.at(i, c), plane, m);
        const double inv = 1.0 / std::sqrt(var_sum / count + eps);
        mp[c] = m;
        ip[c] = static_cast<float>(inv);
        // PyTorch's running averages: the unbiased variance, momentum on the new value.
        const double unbiased = count > 1 ? var_sum / (count - 1) : var_sum;
        rmp[c] = static_cast<float>(momentum * m + (1 - momentum) * rmp[c]);
        rvp[c] = static_cast<float>(momentum * unbiased + (1 - momentum) * rvp[c]);
        const float alpha = ip[c] * wp[c];
        const float beta = bp[c] - m * alpha;
        ap[2 * c] = alpha;
        ap[2 * c + 1] = beta;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = p.at(i, c);
          plane_affine(yp + at, xp + at, rp == nullptr ? nullptr : rp + at, plane, alpha, beta,
                       relu_after);
        }
      }
    });
    // The ReLU's gate in backward: without a residual, recomputed from x and the alpha and beta
    // used here; with one, read from the output (a ReLU of its own would keep it too), the residual
    // itself not being needed there.
    const bool gate_from_input = relu_after && !add_residual;
    ctx->save_for_backward({x, w, mean, invstd, relu_after && add_residual ? y : at::Tensor(),
                            gate_from_input ? affine : at::Tensor()});
    ctx->saved_data["residual"] = add_residual;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor& mean = saved[2];
    const at::Tensor& invstd = saved[3];
    const at::Tensor& out = saved[4];
    const at::Tensor& affine = saved[5];
    const GateFrom from = out.defined() ? kOutput : affine.defined() ? kInput : kNone;
    at::Tensor g = grads[0].contiguous();
    const bool residual = ctx->saved_data["residual"].toBool();
    const Planes p(x);
    const int64_t n = p.n, channels = p.channels, plane = p.plane, count = p.count();
    at::Tensor dx = at::empty_like(x);
    at::Tensor dw = at::empty({channels}, x.options());
    at::Tensor db = at::empty({channels}, x.options());
    // The residual's gradient: g, gated by the ReLU when there is one (computed with the sums and
    // then read in place of g and the gate).
    at::Tensor dr;
    if (residual) dr = out.defined() ? at::empty_like(x) : g;
    float* gated = residual && out.defined() ? dr.data_ptr<float>() : nullptr;
    const float* xp = x.const_data_ptr<float>();
    const float* gp = g.const_data_ptr<float>();
    const float* wp = w.const_data_ptr<float>();
    const float* mp = mean.const_data_ptr<float>();
    const float* ip = invstd.const_data_ptr<float>();
    const float* op = out.defined() ? out.const_data_ptr<float>() : nullptr;
    const float* ap = affine.defined() ? affine.const_data_ptr<float>() : nullptr;
    float* dxp = dx.data_ptr<float>();
    float* dwp = dw.data_ptr<float>();
    float* dbp = db.data_ptr<float>();
    at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const float alpha = ap == nullptr ? 0.f : ap[2 * c];
        const float beta = ap == nullptr ? 0.f : ap[2 * c + 1];
        double sum = 0, dot = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = p.at(i, c);
          plane_grad_sums(from, gp + at, op == nullptr ? nullptr : op + at, xp + at, plane, mp[c],
                          alpha, beta, gated == nullptr ? nullptr : gated + at, &sum, &dot);
        }
        const double inv = ip[c];
        const float k = static_cast<float>(dot * inv * inv / count);
        const float grad_mean = static_cast<float>(sum / count);
        const float a = static_cast<float>(inv * wp[c]);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = p.at(i, c);
          if (gated != nullptr) {
            plane_input_grad(kNone, dxp + at, gated + at, nullptr, xp + at, plane, mp[c],
                             grad_mean, k, a, alpha, beta);
          } else {
            plane_input_grad(from, dxp + at, gp + at, op == nullptr ? nullptr : op + at, xp + at,
                             plane, mp[c], grad_mean, k, a, alpha, beta);
          }
        }
        dwp[c] = static_cast<float>(dot * inv);
        dbp[c] = static_cast<float>(sum);
      }
    });
    return {dx,          dw,          db,          dr,          at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// Training-mode batch norm of `input` ([N, C, ...], float32, CPU) with `weight` and `bias` ([C],
// requiring grad) and the running statistics updated in place, plus `residual` (input's shape) when
// it is not null, followed by a ReLU when `relu_after` (one pass instead of three, forward and
// backward). On success returns a new tensor
// (owned by the caller, as tch's `Tensor::from_ptr` takes it) and sets *error to null; on failure
// returns null and sets *error to a malloc'd message for the caller to free.
extern "C" at::Tensor* groupwise_batch_norm_train(const at::Tensor* input, const at::Tensor* weight,
                                                  const at::Tensor* bias,
                                                  const at::Tensor* residual,
                                                  const at::Tensor* running_mean,
                                                  const at::Tensor* running_var, double momentum,
                                                  double eps, int relu_after, char** error) {
  *error = nullptr;
  try {
    // Autograd functions take defined tensors only: without a residual, an empty stand-in.
    const at::Tensor none = residual ? at::Tensor() : at::empty({0}, input->options());
    at::Tensor y = FastBatchNorm::apply(*input, *weight, *bias, residual ? *residual : none,
                                        residual != nullptr, *running_mean, *running_var,
                                        momentum, eps, relu_after != 0);
    return new at::Tensor(std::move(y));
  } catch (const std::exception& e) {
    *error = groupwise::copy_message(e.what());
  } catch (...) {
    *error = groupwise::copy_message("unknown C++ exception in groupwise_batch_norm_train");
  }
  return nullptr;
}
