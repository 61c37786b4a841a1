// FFM's trace recurrence for CPU (torchkit/memory/ffm.py), in real arithmetic on (re, im) pairs:
//
//   S_t = keep_t γ ⊙ S_{t-1} + x_t 1_cᵀ          S [m,c] complex, γ [m,c], x_t [m] real
//
//   S_t.re = keep_t (γr S_{t-1}.re − γi S_{t-1}.im) + x_t,   S_t.im = keep_t (γr S_{t-1}.im + γi S_{t-1}.re)
//
// |γ| < 1, so the recurrence is stable in float32 (the closed form it replaces needs γ^-t, hence
// complex128). Every batch row is independent (rows spread over ATen's threads). The output holds
// every state, [B,T,m,c,2] with (re, im) interleaved, which the layer reads next (its `mix`), so
// the backward needs nothing more. With G = dL/dS_t (total) and P = S_{t-1}, going backwards:
//
//   gx_t = Σ_c G.re,   gγr += keep_t (G.re P.re + G.im P.im),   gγi += keep_t (G.im P.re − G.re P.im),
//   dL/dS_{t-1} += keep_t conj(γ) G,   and dL/dS_0-in = that carry at the end.
//
// gγ is returned per batch row ([B,m,c], the caller sums over b): no result depends on the
// number of threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace memrl {

// x [B,T,m], gamma_re / gamma_im [m,c], s0 [B,m,c,2], keep [B,T] or empty -> S [B,T,m,c,2].
at::Tensor ffm_forward(at::Tensor x, at::Tensor gre, at::Tensor gim, at::Tensor s0, at::Tensor keep) {
  TORCH_CHECK(x.dim() == 3 && gre.dim() == 2 && s0.dim() == 4, "ffm_cpu: need x [B,T,m], gamma [m,c], s0 [B,m,c,2]");
  const int64_t B = x.size(0), T = x.size(1), m = x.size(2), c = gre.size(1), K = m * c;
  for (const auto& z : {x, gre, gim, s0, keep}) {
    TORCH_CHECK(z.device().is_cpu() && z.is_contiguous(), "ffm_cpu: tensors must be contiguous and on the CPU");
    TORCH_CHECK(z.scalar_type() == x.scalar_type(), "ffm_cpu: all tensors must have x's dtype ", x.scalar_type(),
                ", got ", z.scalar_type());
  }
  TORCH_CHECK(gre.size(0) == m && gim.sizes() == gre.sizes(), "ffm_cpu: gamma must be [m,c] with m = ", m,
              ", got ", gre.sizes(), " and ", gim.sizes());
  TORCH_CHECK(s0.size(0) == B && s0.size(1) == m && s0.size(2) == c && s0.size(3) == 2,
              "ffm_cpu: s0 must be [B,m,c,2] = [", B, ",", m, ",", c, ",2], got ", s0.sizes());
  TORCH_CHECK(keep.numel() == 0 || (keep.dim() == 2 && keep.size(0) == B && keep.size(1) == T),
              "ffm_cpu: keep must be [B,T] or empty, got ", keep.sizes());
  const bool has_keep = keep.numel() > 0;
  auto S = at::empty({B, T, m, c, 2}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ffm_forward", [&] {
    using F = scalar_t;
    const F *__restrict__ gr = gre.data_ptr<F>(), *__restrict__ gi = gim.data_ptr<F>();
    const F *xs = x.data_ptr<F>(), *s0s = s0.data_ptr<F>(), *ks = has_keep ? keep.data_ptr<F>() : nullptr;
    F* Ss = S.data_ptr<F>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const F* prev = s0s + b * K * 2;
        for (int64_t t = 0; t < T; ++t) {
          const F kp = ks ? ks[b * T + t] : F(1);
          const F* __restrict__ xt = xs + (b * T + t) * m;
          const F* __restrict__ p = prev;
          F* __restrict__ out = Ss + (b * T + t) * K * 2;
          for (int64_t i = 0; i < m; ++i) {
            const F xi = xt[i];
            for (int64_t j = 0; j < c; ++j) {
              const int64_t k = i * c + j;
              const F pr = p[2 * k], pi = p[2 * k + 1];
              out[2 * k] = kp * (gr[k] * pr - gi[k] * pi) + xi;
              out[2 * k + 1] = kp * (gr[k] * pi + gi[k] * pr);
            }
          }
          prev = out;
        }
      }
    });
  });
  return S;
}

// gS [B,T,m,c,2] (dL/dS_t from everything but the recurrence), S: the forward's output.
// Returns gx [B,T,m], gγr and gγi per row [B,m,c], gs0 [B,m,c,2].
std::vector<at::Tensor> ffm_backward(at::Tensor gS, at::Tensor S, at::Tensor gre, at::Tensor gim, at::Tensor s0,
                                     at::Tensor keep) {
  const int64_t B = S.size(0), T = S.size(1), m = S.size(2), c = S.size(3), K = m * c;
  gS = gS.contiguous();
  TORCH_CHECK(gS.sizes() == S.sizes(), "ffm_cpu: gS must have S's shape");
  const bool has_keep = keep.numel() > 0;
  auto gx = at::empty({B, T, m}, S.options());
  auto ggr = at::empty({B, m, c}, S.options()), ggi = at::empty({B, m, c}, S.options());
  auto gs0 = at::empty_like(s0);
  AT_DISPATCH_FLOATING_TYPES(S.scalar_type(), "ffm_backward", [&] {
    using F = scalar_t;
    const F *__restrict__ gr = gre.data_ptr<F>(), *__restrict__ gi = gim.data_ptr<F>();
    const F *gSs = gS.data_ptr<F>(), *Ss = S.data_ptr<F>(), *s0s = s0.data_ptr<F>();
    const F* ks = has_keep ? keep.data_ptr<F>() : nullptr;
    F *gxs = gx.data_ptr<F>(), *ggrs = ggr.data_ptr<F>(), *ggis = ggi.data_ptr<F>(), *gs0s = gs0.data_ptr<F>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        F* __restrict__ carry = gs0s + b * K * 2;  // dL/dS_t through S_{t+1}; dL/dS_0-in at the end
        F *__restrict__ agr = ggrs + b * K, *__restrict__ agi = ggis + b * K;
        std::fill(carry, carry + 2 * K, F(0));
        std::fill(agr, agr + K, F(0));
        std::fill(agi, agi + K, F(0));
        for (int64_t t = T - 1; t >= 0; --t) {
          const F kp = ks ? ks[b * T + t] : F(1);
          const F* __restrict__ g = gSs + (b * T + t) * K * 2;
          const F* __restrict__ prev = t > 0 ? Ss + (b * T + t - 1) * K * 2 : s0s + b * K * 2;
          F* __restrict__ gxt = gxs + (b * T + t) * m;
          for (int64_t i = 0; i < m; ++i) {
            F sum = 0;
            for (int64_t j = 0; j < c; ++j) {
              const int64_t k = i * c + j;
              const F Gr = g[2 * k] + carry[2 * k], Gi = g[2 * k + 1] + carry[2 * k + 1];
              const F pr = prev[2 * k], pi = prev[2 * k + 1];
              sum += Gr;
              agr[k] += kp * (Gr * pr + Gi * pi);
              agi[k] += kp * (Gi * pr - Gr * pi);
              carry[2 * k] = kp * (gr[k] * Gr + gi[k] * Gi);
              carry[2 * k + 1] = kp * (gr[k] * Gi - gi[k] * Gr);
            }
            gxt[i] = sum;
          }
        }
      }
    });
  });
  return {gx, ggr, ggi, gs0};
}

}  // namespace memrl
