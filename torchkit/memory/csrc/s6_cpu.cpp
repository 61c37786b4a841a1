// S6's selective scan for CPU (torchkit/memory/s6.py): for every batch row b and inner channel e,
//
//   a_t = keep_t exp(Δ_t A_e),   h_t = a_t ⊙ h_{t-1} + Δ_t u_t B_t,   y_t = h_t · C_t
//
// with h_t, A_e, B_t, C_t of length N (d_state) and Δ_t, u_t, keep_t scalars. Each (b, e) pair is
// one independent recurrence whose N-long state stays in L1 while the loop runs over time; the
// rows b are spread over ATen's threads. Nothing is saved for backward but the inputs: the backward
// recomputes one (b, e) trajectory h_0..h_T and its decays a_t at a time into scratch (L2-sized at
// the episode lengths here) and runs the adjoint backwards, with G = dL/dh_t (total):
//
//   G = gh + gy_t C_t,   gC_t += gy_t h_t,   gB_t += Δ_t u_t G,   g(Δu)_t = G · B_t,
//   gX = G ⊙ h_{t-1} ⊙ a_t  (X = Δ_t A_e),   gA_e += Δ_t gX,   gΔ_t = g(Δu)_t u_t + gX · A_e,
//   gu_t = g(Δu)_t Δ_t,   gh <- G ⊙ a_t  (dL/dh_{t-1}),   and dL/dh_0 = gh at the end.
//
// gB_t and gC_t sum over the channels e of a row, which one thread runs in a fixed order, and gA
// is returned per row ([B,E,N], summed over b by the caller): results do not depend on the number
// of threads. The decay is computed as 2^(Δ · A log2 e) (decay2): one multiply per element, then a
// polynomial vectorised in float32; float64 takes the library's exp2.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "vec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace memrl {
namespace {

using namespace vec;

// exp(Δ A) from y = Δ · A log2(e) (the row A2 = A log2 e, precomputed): 2^y = 2^n · 2^r with
// n = round(y), |r| <= 1/2, 2^r by a degree-6 polynomial (relative error ~2e-7). y is clamped to
// [-126, 126] (Δ > 0 and A < 0 keep it <= 0; the bottom gives ~1e-38 instead of a denormal).
template <typename V> inline V decay2(V y) {
  if constexpr (std::is_same_v<V, double>) {
    return std::exp2(y);
  } else {
    y = y < -126.0f ? V{} - 126.0f : y;
    y = y > 126.0f ? V{} + 126.0f : y;
    const V s = y + kRoundMagic;
    const V n = s - kRoundMagic;
    const V r = y - n;
    const V r2 = r * r;
    // 2^r = Σ (r ln2)^k / k!, k <= 6 (Taylor; |r| <= 1/2: error < 3e-7 relative)
    const V p = (1.0f + 0.693147181f * r) + r2 * (0.240226507f + 0.0555041087f * r) +
                (r2 * r2) * (0.00961812911f + 0.00133335581f * r + 0.000154035304f * r2);
    return p * pow2_of_rounded(s);
  }
}

// One (b, e) recurrence's inputs: u, Δ strided by E over time; B, C [T,N]; keep [T] or nullptr.
template <typename S>
struct Chan {
  const S *u, *dt, *A, *A2, *Bm, *Cm, *keep;  // A2 = A log2(e)
  int64_t T, E, N;
};

// Runs the recurrence of one channel from h_in, writing h_t to out(t) (t = 1..T; out(0) = h_in is
// the caller's) and, if y is given, y_t to y[t·E].
// The backward's recomputation: h_1..h_T into H + t·N (H holds h_0) and a_1..a_T into As + (t-1)·N.
template <typename S>
inline void recompute_chan(const Chan<S>& c, S* H, S* As) {
  for (int64_t t = 0; t < c.T; ++t) {
    const S d = c.dt[t * c.E], x = d * c.u[t * c.E], kp = c.keep ? c.keep[t] : S(1);
    const S *Bt = c.Bm + t * c.N, *hp = H + t * c.N;
    S *hn = H + (t + 1) * c.N, *at = As + t * c.N;
    for_row<S>(c.N, [&]<typename V>(int64_t n) {
      const V a = kp * decay2(d * load<V>(c.A2 + n));
      store<V>(at + n, a);
      store<V>(hn + n, a * load<V>(hp + n) + x * load<V>(Bt + n));
    });
  }
}

template <typename S, typename Out>
inline void forward_chan(const Chan<S>& c, const S* h_in, Out out, S* y) {
  const S* hp = h_in;
  for (int64_t t = 0; t < c.T; ++t) {
    const S d = c.dt[t * c.E], x = d * c.u[t * c.E], kp = c.keep ? c.keep[t] : S(1);
    const S *Bt = c.Bm + t * c.N, *Ct = c.Cm + t * c.N;
    S* hn = out(t + 1);
    Sum<S> acc;
    for_row<S>(c.N, [&]<typename V>(int64_t n) {
      const V h = kp * decay2(d * load<V>(c.A2 + n)) * load<V>(hp + n) + x * load<V>(Bt + n);
      store<V>(hn + n, h);
      acc.add(h * load<V>(Ct + n));
    });
    if (y) y[t * c.E] = acc.value();
    hp = hn;
  }
}

template <typename S> std::vector<S> log2e_rows(const at::Tensor& A) {  // A log2(e), flat
  const S* a = A.data_ptr<S>();
  std::vector<S> out(A.numel());
  for (int64_t i = 0; i < A.numel(); ++i) out[i] = a[i] * static_cast<S>(1.4426950408889634);
  return out;
}

}  // namespace

// u, dt [B,T,E]; A [E,N]; Bm, Cm [B,T,N]; h0 [B,E,N]; keep [B,T] or empty.
// Returns y [B,T,E] (y_t = h_t · C_t) and h_T [B,E,N].
std::vector<at::Tensor> s6_forward(at::Tensor u, at::Tensor dt, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                                   at::Tensor h0, at::Tensor keep) {
  TORCH_CHECK(u.dim() == 3 && A.dim() == 2 && Bm.dim() == 3 && h0.dim() == 3,
              "s6_cpu: need u, dt [B,T,E], A [E,N], B, C [B,T,N], h0 [B,E,N]");
  const int64_t Bn = u.size(0), T = u.size(1), E = u.size(2), N = A.size(1);
  for (const auto& z : {u, dt, A, Bm, Cm, h0, keep}) {
    TORCH_CHECK(z.device().is_cpu() && z.is_contiguous(), "s6_cpu: tensors must be contiguous and on the CPU");
    TORCH_CHECK(z.scalar_type() == u.scalar_type(), "s6_cpu: all tensors must have u's dtype ", u.scalar_type(),
                ", got ", z.scalar_type());
  }
  TORCH_CHECK(dt.sizes() == u.sizes(), "s6_cpu: dt must have u's shape ", u.sizes(), ", got ", dt.sizes());
  TORCH_CHECK(A.size(0) == E, "s6_cpu: A must be [E,N] with E = ", E, ", got ", A.sizes());
  for (const auto& z : {Bm, Cm})
    TORCH_CHECK(z.size(0) == Bn && z.size(1) == T && z.size(2) == N, "s6_cpu: B, C must be [B,T,N] = [", Bn, ",",
                T, ",", N, "], got ", z.sizes());
  TORCH_CHECK(h0.size(0) == Bn && h0.size(1) == E && h0.size(2) == N, "s6_cpu: h0 must be [B,E,N] = [", Bn, ",", E,
              ",", N, "], got ", h0.sizes());
  TORCH_CHECK(keep.numel() == 0 || (keep.dim() == 2 && keep.size(0) == Bn && keep.size(1) == T),
              "s6_cpu: keep must be [B,T] or empty, got ", keep.sizes());
  const bool has_keep = keep.numel() > 0;
  auto y = at::empty({Bn, T, E}, u.options());
  auto hT = at::empty({Bn, E, N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "s6_forward", [&] {
    using S = scalar_t;
    const std::vector<S> A2 = log2e_rows<S>(A);
    at::parallel_for(0, Bn, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t e = 0; e < E; ++e) {
          const int64_t o = b * T * E + e;
          Chan<S> c{u.data_ptr<S>() + o, dt.data_ptr<S>() + o, A.data_ptr<S>() + e * N, A2.data() + e * N,
                    Bm.data_ptr<S>() + b * T * N, Cm.data_ptr<S>() + b * T * N,
                    has_keep ? keep.data_ptr<S>() + b * T : nullptr, T, E, N};
          S* h = hT.data_ptr<S>() + (b * E + e) * N;
          std::memcpy(h, h0.data_ptr<S>() + (b * E + e) * N, N * sizeof(S));
          forward_chan(c, h, [h](int64_t) { return h; }, y.data_ptr<S>() + o);  // in place
        }
    });
  });
  return {y, hT};
}

// Backward from the inputs; gy [B,T,E], ghT [B,E,N]. Returns gu, gdt [B,T,E], gA per row [B,E,N]
// (the caller sums over b), gB, gC [B,T,N] and gh0 [B,E,N].
std::vector<at::Tensor> s6_backward(at::Tensor u, at::Tensor dt, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                                    at::Tensor h0, at::Tensor keep, at::Tensor gy, at::Tensor ghT) {
  const int64_t Bn = u.size(0), T = u.size(1), E = u.size(2), N = A.size(1);
  gy = gy.contiguous();
  ghT = ghT.contiguous();
  TORCH_CHECK(gy.sizes() == u.sizes() && ghT.sizes() == h0.sizes(), "s6_cpu: gradients must match y and h_T");
  const bool has_keep = keep.numel() > 0;
  auto gu = at::empty_like(u), gdt = at::empty_like(u), gA = at::empty({Bn, E, N}, u.options());
  auto gB = at::zeros_like(Bm), gC = at::zeros_like(Cm), gh0 = at::empty_like(h0);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "s6_backward", [&] {
    using S = scalar_t;
    const std::vector<S> A2 = log2e_rows<S>(A);
    at::parallel_for(0, Bn, 1, [&](int64_t b0, int64_t b1) {
      std::vector<S> Hs((T + 1) * N), As(T * N);  // h_0..h_T and a_1..a_T of one channel
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t e = 0; e < E; ++e) {
          const int64_t o = b * T * E + e, row = (b * E + e) * N;
          Chan<S> c{u.data_ptr<S>() + o, dt.data_ptr<S>() + o, A.data_ptr<S>() + e * N, A2.data() + e * N,
                    Bm.data_ptr<S>() + b * T * N, Cm.data_ptr<S>() + b * T * N,
                    has_keep ? keep.data_ptr<S>() + b * T : nullptr, T, E, N};
          S* H = Hs.data();
          std::memcpy(H, h0.data_ptr<S>() + row, N * sizeof(S));
          recompute_chan(c, H, As.data());
          S* gh = gh0.data_ptr<S>() + row;  // dL/dh_t, running; dL/dh_0 at the end
          S* gAe = gA.data_ptr<S>() + row;
          std::memcpy(gh, ghT.data_ptr<S>() + row, N * sizeof(S));
          std::fill(gAe, gAe + N, S(0));
          const S* gyb = gy.data_ptr<S>() + o;
          S *gub = gu.data_ptr<S>() + o, *gdtb = gdt.data_ptr<S>() + o;
          for (int64_t t = T - 1; t >= 0; --t) {
            const S d = c.dt[t * E], ut = c.u[t * E], x = d * ut, g = gyb[t * E];
            const S *Bt = c.Bm + t * N, *Ct = c.Cm + t * N, *hp = H + t * N, *ht = H + (t + 1) * N;
            S *gBt = gB.data_ptr<S>() + (b * T + t) * N, *gCt = gC.data_ptr<S>() + (b * T + t) * N;
            Sum<S> sdtu, sx;
            for_row<S>(N, [&]<typename V>(int64_t n) {
              const V An = load<V>(c.A + n);
              const V a = load<V>(As.data() + t * N + n);
              const V G = load<V>(gh + n) + g * load<V>(Ct + n);          // dL/dh_t
              store<V>(gCt + n, load<V>(gCt + n) + g * load<V>(ht + n));
              store<V>(gBt + n, load<V>(gBt + n) + x * G);
              sdtu.add(G * load<V>(Bt + n));
              const V gX = G * load<V>(hp + n) * a;                        // dL/d(Δ_t A)
              store<V>(gAe + n, load<V>(gAe + n) + d * gX);
              sx.add(gX * An);
              store<V>(gh + n, G * a);                                     // dL/dh_{t-1}
            });
            const S gdtu = sdtu.value();
            gub[t * E] = gdtu * d;
            gdtb[t * E] = gdtu * ut + sx.value();
          }
        }
    });
  });
  return {gu, gdt, gA, gB, gC, gh0};
}

}  // namespace memrl
