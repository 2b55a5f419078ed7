// What groupwise's CPU kernels (batch_norm.cpp, conv.cpp) share: eight-float GCC vectors, the
// per-CPU clones and the C entry points' error hand-over.

#pragma once

#include <cstdlib>
#include <cstring>

namespace groupwise {

// On x86-64 each kernel is built twice, for x86-64-v3 (AVX2 and FMA) and for the baseline, and the
// loader picks one for the CPU; elsewhere once, for the target.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// A kernel built for x86-64-v4 (AVX-512): 32 vector registers instead of 16, for larger blocks of
// accumulators, in eight-float vectors or, where rows are whole ones, sixteen-float vectors (v16).
// Called only where `wide_registers()`.
#define GW_WIDE __attribute__((target("arch=x86-64-v4")))
// Whether this CPU runs GW_WIDE kernels.
inline bool wide_registers() {
  static const bool has = __builtin_cpu_supports("x86-64-v4");
  return has;
}
#else
#define GW_CLONES
#define GW_WIDE
inline bool wide_registers() { return false; }
#endif

// Inlined into each clone that calls it (a kernel's inner loops, written once).
#define GW_INLINE __attribute__((always_inline)) inline

// Eight floats: one AVX2 register, two SSE ones in the default clone.
typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
// Sixteen floats: one AVX-512 register. Used only in GW_WIDE kernels.
typedef float v16 __attribute__((vector_size(64)));

// A vector of V's width (v8 or v16) loaded from p.
template <typename V>
GW_INLINE V load_as(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline v8 load(const float* p) { return load_as<v8>(p); }

// v (v8 or v16) stored at p.
template <typename V>
GW_INLINE void store(float* p, V v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// x in every lane: one broadcast (`v8{} + x` adds to zero first, which the compiler must keep for -0;
// `v8{x, x, ...}` builds the vector on the stack under target_clones).
inline v8 splat(float x) {
  const v8 v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}

// x in every lane of V (v8 or v16), one broadcast as `splat` does.
template <typename V>
GW_INLINE V splat_as(float x) {
  if constexpr (sizeof(V) == sizeof(v16)) {
    const v16 v = {x};
    return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  } else {
    return splat(x);
  }
}

// A malloc'd copy of `what`, for a C caller to free: how an entry point hands back an error.
inline char* copy_message(const char* what) {
  const size_t len = std::strlen(what) + 1;
  char* out = static_cast<char*>(std::malloc(len));
  if (out != nullptr) std::memcpy(out, what, len);
  return out;
}

}  // namespace groupwise
