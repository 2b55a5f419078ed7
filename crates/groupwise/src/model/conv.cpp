// A narrow 3x3 convolution (stride 1 or 2, padding 1, no bias) for float32 NCHW tensors on the CPU,
// as a libtorch autograd function: the layers of a neuron group with few channels and the auxiliary
// classifiers' stride-2 convolutions (see `model/conv.rs`).
//
// Why: libtorch's CPU convolutions (oneDNN) are built for wide layers; with the 4-8 channels of a
// group's slice they run at a fraction of their speed on wide ones (`scripts/bench_conv.py`). Here
// one image at a time is copied into a zero-bordered buffer (at stride 2 with each row's even and
// odd columns apart) and every output row is computed directly: eight output columns per vector, up
// to four output channels at once, so each loaded input vector feeds as many multiply-adds as there
// are output channels in the block. On CPUs with AVX-512 the same eight-float code is built again for
// x86-64-v4 with blocks twice as large (its 32 vector registers hold 16 accumulators: four channels by
// a whole 32-column row, or eight channels by 16 columns), and a stride-1 convolution whose rows are
// whole 16-float vectors (16 or 32 columns) runs in 16-float vectors, eight channels by a 32-column
// row; every output value is summed in the same order either way (the same bits).
// The input gradient is the convolution of the output gradient with the kernel flipped and
// transposed (at stride 2, each parity of input row and column from the taps that reach it,
// interleaved), computed only for the input channels that want it (an auxiliary classifier's
// stop-gradient input wants its own group's slice); the weight gradient sums the
// products of output gradient and shifted input in vector lanes over four images at a time, then
// those parts in double in a fixed order. Images are split over libtorch's intra-op threads, and
// nothing depends on how: the result is the same for any thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using groupwise::load;
using groupwise::splat;
using groupwise::store;
using groupwise::v8;

// One image's planes in a zero border, laid out for a 3x3 convolution (padding 1) of stride 1 or 2,
// so that the input under each kernel column of eight consecutive output columns is one vector load.
// Stride 1: value (c, i, j) of a [channels, h, w] image at (c, i + 1, j + 1) of
// [channels, h + 2, row], `row` the output width rounded up to whole vectors plus the two border
// columns. Stride 2: each padded row (column X = j + 1) split into its even columns, X / 2 at
// [0, half), and its odd ones, at half + X / 2, so that output column j's kernel columns 0, 1, 2
// (padded columns 2j, 2j + 1, 2j + 2) are at j, half + j and j + 1. Either way a vector load at any
// output column chunk plus a kernel column's offset stays inside the row and reads zeros past the image.
struct Padded {
  int64_t channels, h, w, stride, ho, wo, half, row, plane;
  Padded(int64_t channels, int64_t h, int64_t w, int64_t stride = 1)
      : channels(channels),
        h(h),
        w(w),
        stride(stride),
        ho((h - 1) / stride + 1),
        wo((w - 1) / stride + 1),
        half(stride == 1 ? 0 : vector_width(wo) + 1),
        row(stride == 1 ? vector_width(w) + 2 : 2 * half),
        plane((h + 2) * row) {}
  // A width rounded up to whole vectors: the output columns computed per row.
  static int64_t vector_width(int64_t w) { return (w + 7) / 8 * 8; }
  int64_t size() const { return channels * plane; }
  // A zeroed buffer for `images` images, one after the other.
  std::vector<float> buffer(int64_t images = 1) const {
    return std::vector<float>(images * size(), 0.f);
  }
  // Copies image `src` ([channels, h, w]) inside the border of `buf`; the border stays zero.
  void fill(float* buf, const float* src) const;
};

// The offsets of the three kernel columns from an output column in a Padded row of stride S.
template <int S>
GW_INLINE void taps(const Padded& p, int64_t (&t)[3]) {
  t[0] = 0;
  t[1] = S == 1 ? 1 : p.half;
  t[2] = S == 1 ? 2 : 1;
}

// Padded::fill for stride 1: `rows` rows of w floats from src into padded planes of h rows of `row`
// floats, in vectors (a call to memcpy per row of 8-32 floats costs more than the copy).
GW_CLONES void fill_rows(float* buf, const float* src, int64_t rows, int64_t h, int64_t w,
                         int64_t row) {
  for (int64_t r = 0; r < rows; ++r) {
    // Row i of channel c goes to padded row i + 1 of that channel's h + 2.
    float* dst = buf + (r / h * (h + 2) + r % h + 1) * row + 1;
    const float* s = src + r * w;
    int64_t j = 0;
    for (; j + 8 <= w; j += 8) store(dst + j, load(s + j));
    for (; j < w; ++j) dst[j] = s[j];
  }
}

// Padded::fill for stride 2: image column j is padded column j + 1, so even j go to the odd half
// (half + j / 2) and odd j to the even one ((j + 1) / 2).
GW_CLONES void fill_rows_split(float* buf, const float* src, int64_t rows, int64_t h, int64_t w,
                               int64_t row, int64_t half) {
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = buf + (r / h * (h + 2) + r % h + 1) * row;
    const float* s = src + r * w;
    int64_t j = 0;
    for (; j + 16 <= w; j += 16) {
      const v8 a = load(s + j), b = load(s + j + 8);
      store(dst + half + j / 2, __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14));
      store(dst + 1 + j / 2, __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15));
    }
    for (; j < w; ++j) dst[j % 2 == 0 ? half + j / 2 : (j + 1) / 2] = s[j];
  }
}

void Padded::fill(float* buf, const float* src) const {
  if (stride == 1) {
    fill_rows(buf, src, channels * h, h, w, row);
  } else {
    fill_rows_split(buf, src, channels * h, h, w, row, half);
  }
}

// Output channels [o0, o0 + OB) of one image, columns [j, j + L * NV) of row i, stride S, in vectors V
// (v8, or v16 in GW_WIDE kernels) of L floats:
// out(o, i, j') = sum over c, kh, kw of wt[(o * ci + c) * 9 + kh * 3 + kw]
//                 * in(c, S * i + kh - 1, S * j' + kw - 1).
template <typename V, int OB, int NV, int S>
GW_INLINE void conv_row_block(const float* in, const Padded& p, int64_t ci, const float* wt,
                              int64_t o0, float* out, int64_t i, int64_t j) {
  constexpr int L = sizeof(V) / sizeof(float);
  int64_t t[3];
  taps<S>(p, t);
  V acc[OB][NV] = {};
  for (int64_t c = 0; c < ci; ++c) {
    const float* base = in + c * p.plane + S * i * p.row + j;
    for (int kh = 0; kh < 3; ++kh) {
      const float* r = base + kh * p.row;
      V x[NV][3];
      for (int v = 0; v < NV; ++v)
        for (int kw = 0; kw < 3; ++kw) x[v][kw] = groupwise::load_as<V>(r + L * v + t[kw]);
      for (int o = 0; o < OB; ++o) {
        const float* k = wt + ((o0 + o) * ci + c) * 9 + kh * 3;
        for (int kw = 0; kw < 3; ++kw) {
          const V s = groupwise::splat_as<V>(k[kw]);
          for (int v = 0; v < NV; ++v) acc[o][v] += s * x[v][kw];
        }
      }
    }
  }
  const int64_t ho = p.ho, wo = p.wo;
  for (int o = 0; o < OB; ++o)
    for (int v = 0; v < NV; ++v) {
      const int64_t col = j + L * v;
      float* dst = out + ((o0 + o) * ho + i) * wo + col;
      if (col + L <= wo) {
        store(dst, acc[o][v]);
      } else {
        for (int64_t t = 0; t < wo - col; ++t) dst[t] = acc[o][v][t];
      }
    }
}

// Output channels [o0, o0 + OB) of one image, every row, in blocks of up to NV vectors of columns.
template <typename V, int OB, int NV, int S>
GW_INLINE void conv_channels(const float* in, const Padded& p, int64_t ci, const float* wt,
                             int64_t o0, float* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int64_t wv = Padded::vector_width(p.wo);
  for (int64_t i = 0; i < p.ho; ++i) {
    int64_t j = 0;
    if constexpr (NV >= 4)
      for (; j + 4 * L <= wv; j += 4 * L)
        conv_row_block<V, OB, 4, S>(in, p, ci, wt, o0, out, i, j);
    if constexpr (NV >= 2)
      for (; j + 2 * L <= wv; j += 2 * L)
        conv_row_block<V, OB, 2, S>(in, p, ci, wt, o0, out, i, j);
    for (; j < wv; j += L) conv_row_block<V, OB, 1, S>(in, p, ci, wt, o0, out, i, j);
  }
}

// Output channels [o0, o0 + n) for n < OB, one block of n.
template <typename V, int OB, int NV, int S>
GW_INLINE void conv_rest(const float* in, const Padded& p, int64_t ci, const float* wt,
                         int64_t o0, int64_t n, float* out) {
  if constexpr (OB > 1) {
    if (n == OB - 1) {
      conv_channels<V, OB - 1, NV, S>(in, p, ci, wt, o0, out);
    } else {
      conv_rest<V, OB - 1, NV, S>(in, p, ci, wt, o0, n, out);
    }
  }
}

// Every output channel, OB at a time, and the rest in one block.
template <typename V, int OB, int NV, int S>
GW_INLINE void conv_blocks(const float* in, const Padded& p, const float* wt, int64_t co,
                           float* out) {
  const int64_t ci = p.channels;
  int64_t o0 = 0;
  for (; o0 + OB <= co; o0 += OB) conv_channels<V, OB, NV, S>(in, p, ci, wt, o0, out);
  conv_rest<V, OB, NV, S>(in, p, ci, wt, o0, co - o0, out);
}

// Blocks that fit R vector registers: with 16 (AVX2), 4 channels x 2 vectors of accumulators; with
// 32 (AVX-512), at stride 1 on rows of whole 16-float vectors 8 channels x 2 16-float vectors (a
// 32-column row at once), else in 8-float vectors 4 channels x 4 (a 32-column row) or 8 x 2.
template <int R, int S>
GW_INLINE void conv_image_stride(const float* in, const Padded& p, const float* wt, int64_t co,
                                 float* out) {
  if constexpr (R >= 32) {
    if constexpr (S == 1) {
      if (Padded::vector_width(p.wo) % 16 == 0) {
        conv_blocks<groupwise::v16, 8, 2, S>(in, p, wt, co, out);
        return;
      }
    }
    if (Padded::vector_width(p.wo) >= 32) {
      conv_blocks<v8, 4, 4, S>(in, p, wt, co, out);
    } else {
      conv_blocks<v8, 8, 2, S>(in, p, wt, co, out);
    }
  } else {
    conv_blocks<v8, 4, 2, S>(in, p, wt, co, out);
  }
}

template <int R>
GW_INLINE void conv_image_regs(const float* in, const Padded& p, const float* wt, int64_t co,
                               float* out) {
  if (p.stride == 1) {
    conv_image_stride<R, 1>(in, p, wt, co, out);
  } else {
    conv_image_stride<R, 2>(in, p, wt, co, out);
  }
}

// out ([co, p.ho, p.wo]) = the convolution of one padded image `in` (p.channels = ci) with wt
// ([co, ci, 3, 3]) at p's stride.
GW_CLONES void conv_image(const float* in, const Padded& p, const float* wt, int64_t co,
                          float* out) {
  conv_image_regs<16>(in, p, wt, co, out);
}

GW_WIDE void conv_image_wide(const float* in, const Padded& p, const float* wt, int64_t co,
                             float* out) {
  conv_image_regs<32>(in, p, wt, co, out);
}

// The input gradient of a stride-2 convolution, input channels [c0, c0 + CB) of one image, row y,
// columns [2j, 2j + 16): dx(c, y, x) = sum over o and the kernel taps with y = 2i + kh - 1 and
// x = 2j' + kw - 1 of w[o, c, kh, kw] * dy(o, i, j'). An even row takes kh = 1 (i = y / 2), an odd
// one kh = 0 (i = y / 2 + 1) and kh = 2 (i = y / 2); an even column kw = 1 (j' = x / 2), an odd one
// kw = 0 (j' = x / 2 + 1) and kw = 2 (j' = x / 2). So eight even and eight odd columns come from two
// loads of a row of dy (padded `pd`, stride-1 layout), and are interleaved into 16 columns of dx
// ([.., h, w] at `out`). `wt` is the weight [co, ci, 3, 3].
template <int CB>
GW_INLINE void spread_grad_block(const float* dy, const Padded& pd, const float* wt, int64_t ci,
                                 int64_t c0, float* out, int64_t h, int64_t w, int64_t y,
                                 int64_t j) {
  const int64_t co = pd.channels, i = y / 2;
  int kh[2];
  int64_t rows[2];
  int taps;
  if (y % 2 == 0) {
    taps = 1;
    kh[0] = 1;
    rows[0] = i + 1;
  } else {
    taps = 2;
    kh[0] = 0;
    rows[0] = i + 2;
    kh[1] = 2;
    rows[1] = i + 1;
  }
  v8 even[CB] = {}, odd[CB] = {};
  for (int64_t o = 0; o < co; ++o)
    for (int t = 0; t < taps; ++t) {
      const float* r = dy + o * pd.plane + rows[t] * pd.row + 1 + j;
      const v8 a = load(r), b = load(r + 1);
      for (int c = 0; c < CB; ++c) {
        const float* k = wt + (o * ci + c0 + c) * 9 + kh[t] * 3;
        even[c] += splat(k[1]) * a;
        odd[c] += splat(k[2]) * a;
        odd[c] += splat(k[0]) * b;
      }
    }
  for (int c = 0; c < CB; ++c) {
    float* dst = out + ((c0 + c) * h + y) * w + 2 * j;
    const v8 lo = __builtin_shufflevector(even[c], odd[c], 0, 8, 1, 9, 2, 10, 3, 11);
    const v8 hi = __builtin_shufflevector(even[c], odd[c], 4, 12, 5, 13, 6, 14, 7, 15);
    if (2 * j + 16 <= w) {
      store(dst, lo);
      store(dst + 8, hi);
    } else {
      for (int64_t t = 0; t < w - 2 * j; ++t) dst[t] = t < 8 ? lo[t] : hi[t - 8];
    }
  }
}

template <int CB>
GW_INLINE void spread_grad_channels(const float* dy, const Padded& pd, const float* wt, int64_t ci,
                                    int64_t c0, float* out, int64_t h, int64_t w) {
  const int64_t wv = Padded::vector_width(pd.w);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t j = 0; j < wv; j += 8) spread_grad_block<CB>(dy, pd, wt, ci, c0, out, h, w, y, j);
}

// Input channels [c0, c0 + n) for n < CB, one block of n.
template <int CB>
GW_INLINE void spread_grad_rest(const float* dy, const Padded& pd, const float* wt, int64_t ci,
                                int64_t c0, int64_t n, float* out, int64_t h, int64_t w) {
  if constexpr (CB > 1) {
    if (n == CB - 1) {
      spread_grad_channels<CB - 1>(dy, pd, wt, ci, c0, out, h, w);
    } else {
      spread_grad_rest<CB - 1>(dy, pd, wt, ci, c0, n, out, h, w);
    }
  }
}

// Blocks of 4 input channels (2 x 4 vectors of accumulators) in 16 registers, of 8 in 32.
template <int R>
GW_INLINE void spread_grad_regs(const float* dy, const Padded& pd, const float* wt, int64_t ci,
                                int64_t start, int64_t len, float* out, int64_t h, int64_t w) {
  constexpr int CB = R >= 32 ? 8 : 4;
  const float* ws = wt + start * 9;
  int64_t c0 = 0;
  for (; c0 + CB <= len; c0 += CB) spread_grad_channels<CB>(dy, pd, ws, ci, c0, out, h, w);
  spread_grad_rest<CB>(dy, pd, ws, ci, c0, len - c0, out, h, w);
}

// out ([len, h, w]) = the input gradient of a stride-2 convolution for input channels
// [start, start + len) of one image, from its padded output gradient `dy` (stride-1 layout,
// pd.w = (w + 1) / 2 columns) and the weight `wt` ([co, ci, 3, 3]).
GW_CLONES void spread_grad_image(const float* dy, const Padded& pd, const float* wt, int64_t ci,
                                 int64_t start, int64_t len, float* out, int64_t h, int64_t w) {
  spread_grad_regs<16>(dy, pd, wt, ci, start, len, out, h, w);
}

GW_WIDE void spread_grad_image_wide(const float* dy, const Padded& pd, const float* wt,
                                    int64_t ci, int64_t start, int64_t len, float* out, int64_t h,
                                    int64_t w) {
  spread_grad_regs<32>(dy, pd, wt, ci, start, len, out, h, w);
}

// Images whose weight gradients are summed together in vector lanes before the lanes are added up:
// fixed, so that the sum does not depend on how images are split over threads.
constexpr int64_t kImagesPerPart = 4;

inline double lanes(v8 a) {
  float s = 0;
  for (int t = 0; t < 4; ++t) s += a[t] + a[t + 4];
  return s;
}

// Adds to part ([co, ci, 3, 3], double) the weight gradient of `images` padded images for output
// channels [o0, o0 + OB): the sums over their output pixels of
// dy(o, i, j) * x(c, S * i + kh - 1, S * j + kw - 1), from the padded inputs `x` (stride S) and the
// padded output gradients `dy` (stride 1, zero past the image, so whole vectors can be summed), one
// image after the other in each buffer.
template <int OB, int S>
GW_INLINE void weight_channels(const float* x, const Padded& px, const float* dy,
                               const Padded& pd, int64_t images, int64_t o0, double* part) {
  const int64_t ci = px.channels, wv = Padded::vector_width(px.wo);
  int64_t t[3];
  taps<S>(px, t);
  for (int64_t c = 0; c < ci; ++c)
    for (int kh = 0; kh < 3; ++kh) {
      v8 acc[OB][3] = {};
      for (int64_t b = 0; b < images; ++b)
        for (int64_t i = 0; i < px.ho; ++i) {
          const float* r = x + b * px.size() + c * px.plane + (S * i + kh) * px.row;
          const float* g = dy + b * pd.size() + o0 * pd.plane + (i + 1) * pd.row + 1;
          for (int64_t j = 0; j < wv; j += 8) {
            const v8 x0 = load(r + j + t[0]), x1 = load(r + j + t[1]), x2 = load(r + j + t[2]);
            for (int o = 0; o < OB; ++o) {
              const v8 go = load(g + o * pd.plane + j);
              acc[o][0] += go * x0;
              acc[o][1] += go * x1;
              acc[o][2] += go * x2;
            }
          }
        }
      for (int o = 0; o < OB; ++o)
        for (int kw = 0; kw < 3; ++kw)
          part[((o0 + o) * ci + c) * 9 + kh * 3 + kw] += lanes(acc[o][kw]);
    }
}

// Output channels [o0, o0 + n) for n < OB, one block of n.
template <int OB, int S>
GW_INLINE void weight_rest(const float* x, const Padded& px, const float* dy, const Padded& pd,
                           int64_t images, int64_t o0, int64_t n, double* part) {
  if constexpr (OB > 1) {
    if (n == OB - 1) {
      weight_channels<OB - 1, S>(x, px, dy, pd, images, o0, part);
    } else {
      weight_rest<OB - 1, S>(x, px, dy, pd, images, o0, n, part);
    }
  }
}

// Blocks of 4 output channels (4 x 3 vectors of accumulators) in 16 registers, of 8 in 32.
template <int R, int S>
GW_INLINE void weight_images_stride(const float* x, const Padded& px, const float* dy,
                                    const Padded& pd, int64_t images, double* part) {
  constexpr int OB = R >= 32 ? 8 : 4;
  const int64_t co = pd.channels;
  int64_t o0 = 0;
  for (; o0 + OB <= co; o0 += OB) weight_channels<OB, S>(x, px, dy, pd, images, o0, part);
  weight_rest<OB, S>(x, px, dy, pd, images, o0, co - o0, part);
}

template <int R>
GW_INLINE void weight_images_regs(const float* x, const Padded& px, const float* dy,
                                  const Padded& pd, int64_t images, double* part) {
  if (px.stride == 1) {
    weight_images_stride<R, 1>(x, px, dy, pd, images, part);
  } else {
    weight_images_stride<R, 2>(x, px, dy, pd, images, part);
  }
}

GW_CLONES void weight_images(const float* x, const Padded& px, const float* dy, const Padded& pd,
                             int64_t images, double* part) {
  weight_images_regs<16>(x, px, dy, pd, images, part);
}

GW_WIDE void weight_images_wide(const float* x, const Padded& px, const float* dy,
                                const Padded& pd, int64_t images, double* part) {
  weight_images_regs<32>(x, px, dy, pd, images, part);
}

// The kernels of one register budget: the CPU's widest, or the 16-register ones where asked.
struct Kernels {
  void (*conv)(const float*, const Padded&, const float*, int64_t, float*);
  void (*spread_grad)(const float*, const Padded&, const float*, int64_t, int64_t, int64_t, float*,
                      int64_t, int64_t);
  void (*weight)(const float*, const Padded&, const float*, const Padded&, int64_t, double*);
};

const Kernels& kernels(bool wide) {
  static const Kernels narrow{conv_image, spread_grad_image, weight_images};
  static const Kernels wider{conv_image_wide, spread_grad_image_wide, weight_images_wide};
  return wide && groupwise::wide_registers() ? wider : narrow;
}

// `own`: the input's channels [start, start + own.size(1)), the part that wants a gradient.
void check_own(const char* what, const at::Tensor& x, const at::Tensor& own, int64_t start) {
  TORCH_CHECK(x.dim() == 4 && own.dim() == 4 && own.size(0) == x.size(0) &&
                  own.size(2) == x.size(2) && own.size(3) == x.size(3),
              what, ": the part that wants a gradient must be channels of the input [N, C, H, W] ",
              x.sizes(), ", got ", own.sizes());
  TORCH_CHECK(start >= 0 && own.size(1) > 0 && start + own.size(1) <= x.size(1), what,
              ": input gradient channels [", start, ", ", start + own.size(1), ") outside ",
              x.size(1));
}

void check(const at::Tensor& x, const at::Tensor& own, const at::Tensor& w, int64_t stride,
           int64_t start) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "narrow convolution: input must be a float32 CPU tensor [N, C, H, W], got ",
              x.sizes(), " ", x.scalar_type(), " on ", x.device());
  TORCH_CHECK(w.dim() == 4 && w.size(1) == x.size(1) && w.size(2) == 3 && w.size(3) == 3 &&
                  w.scalar_type() == at::kFloat && w.device().is_cpu(),
              "narrow convolution: weight must be a float32 CPU tensor [C_out, ", x.size(1),
              ", 3, 3], got ", w.sizes());
  TORCH_CHECK(stride == 1 || stride == 2, "narrow convolution: stride 1 or 2, got ", stride);
  check_own("narrow convolution", x, own, start);
}

// The 3x3 convolution, padding 1, no bias, of stride 1 or 2, of `input`, whose input gradient is
// computed for `own` only: channels [start, start + len) of it (the same values), handed back as
// own's gradient ([N, len, H, W]; `input` gets none). For a layer of the network `own` is the input
// itself; for an auxiliary classifier's stop-gradient input it is the group's slice, and `input` the
// detached concatenation: no gradient of the other groups' channels is written, not even zeros.
// `wide`: the kernels in 32 registers where the CPU has them (the same sums in the same order: the
// same bits).
struct NarrowConv : public torch::autograd::Function<NarrowConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& own,
                            const at::Tensor& weight, int64_t stride, int64_t start, bool wide) {
    check(input, own, weight, stride, start);
    const int64_t len = own.size(1);
    const Kernels& k = kernels(wide);
    at::Tensor x = input.contiguous(), w = weight.contiguous();
    const int64_t n = x.size(0), ci = x.size(1), h = x.size(2), wd = x.size(3), co = w.size(0);
    const Padded p(ci, h, wd, stride);
    at::Tensor y = at::empty({n, co, p.ho, p.wo}, x.options());
    const float* xp = x.const_data_ptr<float>();
    const float* wp = w.const_data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> buf = p.buffer();
      for (int64_t b = begin; b < end; ++b) {
        p.fill(buf.data(), xp + b * ci * h * wd);
        k.conv(buf.data(), p, wp, co, yp + b * co * p.ho * p.wo);
      }
    });
    ctx->save_for_backward({x, w});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["start"] = start;
    ctx->saved_data["len"] = len;
    ctx->saved_data["wide"] = wide;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const int64_t stride = ctx->saved_data["stride"].toInt();
    const int64_t start = ctx->saved_data["start"].toInt(), len = ctx->saved_data["len"].toInt();
    const bool need_input = ctx->needs_input_grad(1), need_weight = ctx->needs_input_grad(2);
    const Kernels& kern = kernels(ctx->saved_data["wide"].toBool());
    at::Tensor g = grads[0].contiguous();
    const int64_t n = x.size(0), ci = x.size(1), h = x.size(2), wd = x.size(3), co = w.size(0);
    // px: the input at the convolution's stride; pd: the output gradient (stride-1 layout).
    const Padded px(ci, h, wd, stride), pd(co, px.ho, px.wo);
    const int64_t in_size = ci * h * wd, out_size = co * px.ho * px.wo, own_size = len * h * wd;
    // At stride 1 the input gradient convolves the output gradient with
    // wf[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw] (rows [start, start + len) of it).
    at::Tensor flipped = stride == 1 ? w.flip({2, 3}).transpose(0, 1).contiguous() : at::Tensor();
    // Every channel of it written by the kernels below, each image whole.
    at::Tensor dx = need_input ? at::empty({n, len, h, wd}, x.options()) : at::Tensor();
    const int64_t parts = (n + kImagesPerPart - 1) / kImagesPerPart;
    at::Tensor part =
        need_weight ? at::zeros({parts, co * ci * 9}, x.options().dtype(at::kDouble)) : at::Tensor();
    const float* xp = x.const_data_ptr<float>();
    const float* wp = w.const_data_ptr<float>();
    const float* gp = g.const_data_ptr<float>();
    const float* fp = stride == 1 ? flipped.const_data_ptr<float>() + start * co * 9 : nullptr;
    float* dxp = need_input ? dx.data_ptr<float>() : nullptr;
    double* pp = need_weight ? part.data_ptr<double>() : nullptr;
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> gbuf = pd.buffer(kImagesPerPart);
      std::vector<float> xbuf = px.buffer(need_weight ? kImagesPerPart : 0);
      for (int64_t part_index = begin; part_index < end; ++part_index) {
        const int64_t first = part_index * kImagesPerPart;
        const int64_t images = std::min(kImagesPerPart, n - first);
        for (int64_t k = 0; k < images; ++k) {
          const int64_t b = first + k;
          float* gk = gbuf.data() + k * pd.size();
          pd.fill(gk, gp + b * out_size);
          if (need_input && stride == 1) {
            kern.conv(gk, pd, fp, len, dxp + b * own_size);
          } else if (need_input) {
            kern.spread_grad(gk, pd, wp, ci, start, len, dxp + b * own_size, h, wd);
          }
          if (need_weight) px.fill(xbuf.data() + k * px.size(), xp + b * in_size);
        }
        if (need_weight)
          kern.weight(xbuf.data(), px, gbuf.data(), pd, images, pp + part_index * co * ci * 9);
      }
    });
    at::Tensor dw;
    if (need_weight) {
      // Parts added in order, whatever the threads did.
      const int64_t k = co * ci * 9;
      std::vector<double> sum(k, 0.0);
      for (int64_t b = 0; b < parts; ++b)
        for (int64_t t = 0; t < k; ++t) sum[t] += pp[b * k + t];
      dw = at::empty_like(w);
      float* dwp = dw.data_ptr<float>();
      for (int64_t t = 0; t < k; ++t) dwp[t] = static_cast<float>(sum[t]);
    }
    return {at::Tensor(), dx, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// A convolution of `input` whose input gradient is wanted for `own` only, channels
// [start, start + len) of it: an auxiliary classifier's stop-gradient input, where `input` is the
// detached concatenation of the groups' slices and `own` this group's. The weight gradient is
// libtorch's; own's gradient convolves back through its part of the weight only (libtorch would
// compute every channel's and the concatenation would drop the rest), and nothing is written for the
// other channels.
struct OwnSliceConv : public torch::autograd::Function<OwnSliceConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& own,
                            const at::Tensor& weight, int64_t start, int64_t stride,
                            int64_t padding) {
    TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && weight.size(1) == input.size(1),
                "own-slice convolution: input [N, C, H, W] and weight [C_out, C, k, k] expected, got ",
                input.sizes(), " and ", weight.sizes());
    check_own("own-slice convolution", input, own, start);
    const int64_t len = own.size(1);
    ctx->save_for_backward({input, weight});
    ctx->saved_data["start"] = start;
    ctx->saved_data["len"] = len;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    return at::convolution(input, weight, {}, {stride, stride}, {padding, padding}, {1, 1}, false,
                           {0, 0}, 1);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const int64_t start = ctx->saved_data["start"].toInt(), len = ctx->saved_data["len"].toInt();
    const int64_t stride = ctx->saved_data["stride"].toInt();
    const int64_t padding = ctx->saved_data["padding"].toInt();
    const at::Tensor& g = grads[0];
    const std::vector<int64_t> strides{stride, stride}, pads{padding, padding}, dilation{1, 1},
        out_pad{0, 0};
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(2)) {
      dw = std::get<1>(at::convolution_backward(g, x, w, std::nullopt, strides, pads, dilation,
                                                false, out_pad, 1, {false, true, false}));
    }
    if (ctx->needs_input_grad(1)) {
      dx = std::get<0>(at::convolution_backward(g, x.narrow(1, start, len), w.narrow(1, start, len),
                                                std::nullopt, strides, pads, dilation, false,
                                                out_pad, 1, {true, false, false}));
    }
    return {at::Tensor(), dx, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// The 3x3 convolution (padding 1, no bias) of `input` ([N, C_in, H, W], float32, CPU) with `weight`
// ([C_out, C_in, 3, 3]) at `stride` (1 or 2), differentiable in `weight` and in `own` (the input's
// channels [start, start + C_own), the same values; the input itself for a layer of the network),
// whose gradient alone is computed; `wide` nonzero: by the kernels in 32 vector registers where the
// CPU has AVX-512 (the same bits). On success returns a new tensor (owned by the caller, as tch's
// `Tensor::from_ptr` takes it) and sets *error to null; on failure returns null and sets *error to a
// malloc'd message for the caller to free.
extern "C" at::Tensor* groupwise_conv3x3(const at::Tensor* input, const at::Tensor* own,
                                         const at::Tensor* weight, int64_t stride, int64_t start,
                                         int wide, char** error) {
  *error = nullptr;
  try {
    return new at::Tensor(NarrowConv::apply(*input, *own, *weight, stride, start, wide != 0));
  } catch (const std::exception& e) {
    *error = groupwise::copy_message(e.what());
  } catch (...) {
    *error = groupwise::copy_message("unknown C++ exception in groupwise_conv3x3");
  }
  return nullptr;
}

// The convolution of `input` ([N, C, H, W]) with `weight` ([C_out, C, k, k]; stride and padding
// given, no bias), differentiable in `weight` and in `own` (the input's channels
// [start, start + C_own), the same values), whose gradient alone is computed. Returns and reports
// errors like `groupwise_conv3x3`.
extern "C" at::Tensor* groupwise_conv_own_slice(const at::Tensor* input, const at::Tensor* own,
                                                const at::Tensor* weight, int64_t start,
                                                int64_t stride, int64_t padding, char** error) {
  *error = nullptr;
  try {
    return new at::Tensor(OwnSliceConv::apply(*input, *own, *weight, start, stride, padding));
  } catch (const std::exception& e) {
    *error = groupwise::copy_message(e.what());
  } catch (...) {
    *error = groupwise::copy_message("unknown C++ exception in groupwise_conv_own_slice");
  }
  return nullptr;
}
