// Small vector toolkit for memrl's CPU kernels: loops over rows of floats in packs of 16 (built with
// AVX-512: one register), then 8 (one AVX2 register, or two SSE ones), then a scalar tail, through
// GCC/Clang vector extensions. Every helper works on a pack V or a scalar alike, so each loop body
// is written once, as a template lambda over V. Plain arithmetic only (exp included).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace memrl {
namespace vec {

constexpr int64_t W = 8;
typedef float f8 __attribute__((vector_size(W * sizeof(float))));
typedef int32_t i8 __attribute__((vector_size(W * sizeof(int32_t))));
typedef float f16 __attribute__((vector_size(2 * W * sizeof(float))));
typedef int32_t i16 __attribute__((vector_size(2 * W * sizeof(int32_t))));
typedef float f4 __attribute__((vector_size(4 * sizeof(float))));  // half an f8, for lane sums
#if defined(__AVX512F__)
constexpr bool kWide = true;   // 16-float packs first
#else
constexpr bool kWide = false;  // (without AVX-512 a 16-float pack would be split, often into scalars)
#endif

template <typename V> struct Lanes { using S = V; using I = int32_t; };
template <> struct Lanes<f8> { using S = float; using I = i8; };
template <> struct Lanes<f16> { using S = float; using I = i16; };

template <typename V> inline V load(const typename Lanes<V>::S* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V> inline void store(typename Lanes<V>::S* p, V v) { std::memcpy(p, &v, sizeof(V)); }
// A running sum fed packs and scalars: packs accumulate lane-wise and are summed across lanes once,
// by halving (a shuffle and an add per halving instead of a serial chain of lane-by-lane adds).
template <typename S> struct Sum {
  f16 wide{};
  f8 pack{};
  S tail = 0;
  template <typename V> void add(V v) {
    if constexpr (std::is_same_v<V, f16>) wide += v;
    else if constexpr (std::is_same_v<V, f8>) pack += v;
    else tail += v;
  }
  S value() const {
    if constexpr (std::is_same_v<S, float>) {
      f8 v = pack;
      if constexpr (kWide)
        v += __builtin_shufflevector(wide, wide, 0, 1, 2, 3, 4, 5, 6, 7) +
             __builtin_shufflevector(wide, wide, 8, 9, 10, 11, 12, 13, 14, 15);
      f4 h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
      h += __builtin_shufflevector(h, h, 2, 3, 0, 1);
      h += __builtin_shufflevector(h, h, 1, 0, 3, 2);
      return tail + h[0];
    } else {
      return tail;
    }
  }
};

// exp(y) in float for y in [-87, 87] (arguments outside are clamped to it, so the result stays a
// normal float: ~1e-38 at the bottom, ~6e37 at the top): y = n ln2 + r with |r| <= ln2/2 (ln2 split
// in two for exactness), exp(r) by the polynomial of Cephes' expf (relative error ~1e-7) evaluated
// in Estrin's scheme, times 2^n from the exponent bits. n = round(y / ln2) by adding and
// subtracting 1.5·2^23, whose low mantissa bits then hold n as an integer. Short dependency chains
// matter here: the loops are latency-bound.
// 2^n from s = n + 1.5·2^23 (n an integer in [-126, 127], rounded into s's low mantissa bits by
// adding the magic constant): n's bits, re-biased, become the exponent field of a float.
constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23
template <typename V> inline V pow2_of_rounded(V s) {
  using I = typename Lanes<V>::I;
  I bits;
  if constexpr (std::is_same_v<V, float>) {
    float m = kRoundMagic;
    int32_t sb, mb;
    std::memcpy(&sb, &s, 4);
    std::memcpy(&mb, &m, 4);
    bits = (sb - mb + 127) << 23;
  } else {
    bits = (reinterpret_cast<I>(s) - reinterpret_cast<I>(V{} + kRoundMagic) + 127) << 23;
  }
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return scale;
}

template <typename V> inline V exp_in_range(V y) {
  const V s = y * 1.44269504088896341f + kRoundMagic;
  const V n = s - kRoundMagic;
  const V r = (y - n * 0.693359375f) + n * 2.12194440e-4f;
  const V r2 = r * r, r4 = r2 * r2;
  const V p = (5.0000001201e-1f + 1.6666665459e-1f * r) + r2 * (4.1665795894e-2f + 8.3334519073e-3f * r) +
              r4 * (1.3981999507e-3f + 1.9875691500e-4f * r);
  return (r2 * p + r + 1.0f) * pow2_of_rounded(s);
}
template <typename V> inline V exp_clamped(V y) {
  y = y < -87.0f ? V{} - 87.0f : y;
  return exp_in_range(y > 87.0f ? V{} + 87.0f : y);
}
// exp(y) for y <= 0 (one comparison fewer than exp_clamped).
template <typename V> inline V exp_nonpositive(V y) { return exp_in_range(y < -87.0f ? V{} - 87.0f : y); }
template <> inline double exp_nonpositive<double>(double y) { return std::exp(y); }

// σ(x) = 1 / (1 + exp(-x)) and tanh(x) = 2σ(2x) - 1 from e = exp(-|x|) (exp of a non-positive
// argument only: no overflow). Absolute error ~1e-7 in float.
template <typename V> inline V sigmoid(V x) {
  const V e = exp_nonpositive(x < 0 ? x : -x);
  const V r = 1 / (1 + e);
  return x >= 0 ? r : e * r;
}
template <typename V> inline V tanh_(V x) {
  const V e = exp_nonpositive(-2 * (x < 0 ? -x : x));
  const V t = (1 - e) / (1 + e);
  return x >= 0 ? t : -t;
}

template <typename V, typename S> inline V clamp_to(V p, S c) {
  p = p < -c ? V{} - c : p;
  return p > c ? V{} + c : p;
}

// Runs body.template operator()<V>(j) over j = 0..H-1: packs of 16 floats (AVX-512 builds, unless
// WIDE is false), of 8, then scalars. double runs scalar (it is the dtype of checks, not training).
template <typename S, bool WIDE = true, typename F> inline void for_row(int64_t H, F&& body) {
  int64_t j = 0;
  if constexpr (std::is_same_v<S, float>) {
    if constexpr (kWide && WIDE)
      for (; j + 2 * W <= H; j += 2 * W) body.template operator()<f16>(j);
    for (; j + W <= H; j += W) body.template operator()<f8>(j);
  }
  for (; j < H; ++j) body.template operator()<S>(j);
}

}  // namespace vec
}  // namespace memrl
