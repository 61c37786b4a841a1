// Fused SHM recurrence for CPU (see torchkit/memory/scan.py for the equations):
//
//   C_t = keep_t (1 + tanh(θ_t ⊗ vc_t)),  P_t = C_t ⊙ M_{t-1} + ev_t ⊗ k_t,  M_t = clamp(P_t),  h_t = M_t q_t
//
// Every batch row is independent: its H×H state stays in L1 while the loop runs over time, and the
// rows are spread over ATen's threads. The forward keeps the state transposed, Mᵀ, whose update is
// the same with the roles of (θ, vc) and of (ev, k) swapped; then h = M q = Σ_j q_j (row j of Mᵀ)
// sums whole rows, with no sum across a pack's lanes. It saves the state every `chunk` steps; the
// backward recomputes a chunk's states from its saved start, then runs the adjoint backwards:
//
//   G = D + dh_t ⊗ q_t  (dL/dM_t),  dq_t = M_tᵀ dh_t,  g = mask_t ⊙ G  (dL/dP_t),
//   dev_t = g k_t,  dk_t = gᵀ ev_t,  dX = g ⊙ M_{t-1} ⊙ keep_t tanh'(X),  dθ_t = dX vc_t,
//   dvc_t = dXᵀ θ_t,  D ← C_t ⊙ g  (dL/dM_{t-1}),  and dM_0 = D at the end.
//
// 1 + tanh(x) = 2σ(2x) = 2 / (1 + e) with e = exp(−2x), and tanh'(x) = 4e / (1 + e)²: no cancellation
// near C = 0 or C = 2. In float32, exp is a polynomial written in plain arithmetic on packs of
// floats (vec.h), so the inner loops vectorise; its argument is clamped to ±87, so at the ends C is
// 2 exactly, or ~3e-38 where tanh would give exactly 0. float64 uses e = exp(−2|x|) ∈ (0, 1], which
// underflows to exact zeros.
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

// C = 1 + tanh(x) = 2σ(2x) and (with dC) tanh'(x) = 1 - tanh(x)².
template <typename V> inline V gate(V x, V* dC = nullptr) {
  if constexpr (std::is_same_v<V, double>) {  // e = exp(-2|x|) ∈ (0, 1]
    const V e = std::exp(-2 * std::abs(x));
    const V r = 1 / (1 + e);
    if (dC) *dC = 4 * e * r * r;
    return 2 * (x >= 0 ? r : e * r);
  } else {  // e = exp(-2x) ∈ [~1e-38, ~6e37]: no select on the sign (fewer instructions)
    const V e = exp_clamped(-2 * x);
    const V r = 1 / (1 + e);
    if (dC) *dC = (4 * r) * (e * r);  // e r <= 1: no overflow
    return 2 * r;
  }
}

// Pointers to one batch row's [T,H] inputs.
template <typename S>
struct Row {
  const S *th, *vc, *ev, *k, *q, *keep;  // keep: [T] or nullptr
};

// Gates of one step for one batch row: C = keep (1 + tanh X) and, with DERIV, dC = keep tanh'(X)
// for X = a ⊗ b (θ ⊗ vc, or vc ⊗ θ for the transposed state), each [H·H]. A pass of its own, apart
// from the state update, over X laid out flat: its entries are independent, so it runs in the
// widest packs whatever H is, and the out-of-order core overlaps their long exp → divide chains.
template <typename S, bool DERIV>
inline void gates(const S* a, const S* b, const S* keep, int64_t t, int64_t H, S* C, S* dC) {
  const S kp = keep ? keep[t] : S(1);
  for (int64_t i = 0; i < H; ++i) {  // X = a ⊗ b, flat
    const S ai = a[i];
    for_row<S, false>(H, [&]<typename V>(int64_t j) { store<V>(C + i * H + j, ai * load<V>(b + j)); });
  }
  for_row<S>(H * H, [&]<typename V>(int64_t f) {  // the expensive pass: wide packs over all H·H
    V d;
    const V c = gate(load<V>(C + f), DERIV ? &d : nullptr);
    store<V>(C + f, kp * c);
    if constexpr (DERIV) store<V>(dC + f, kp * d);
  });
}

// The backward's gates for X = θ ⊗ vc: C and, in float64 only, dC. float32 takes keep·tanh'(X) =
// C (2 − C) from C in the adjoint instead (keep ∈ {0, 1}), as the eager backend does: one [H·H]
// array fewer to write and read back; its absolute error (~2e-7) is float32's resolution of C.
template <typename S> constexpr bool kSavesDC = std::is_same_v<S, double>;
template <typename S>
inline void gates(const Row<S>& x, int64_t t, int64_t H, S* C, S* dC) {
  gates<S, kSavesDC<S>>(x.th + t * H, x.vc + t * H, x.keep, t, H, C, dC);
}

// Forward step for one batch row on the transposed state Mt = Mᵀ, given its transposed gates Ct:
// row j of Mt <- clamp(Ct_j ⊙ Mt_j + k_j ev) in place, and h = M q = Σ_j q_j Mt_j.
template <typename S, bool CLAMP>
inline void step_transposed(const Row<S>& x, int64_t t, int64_t H, S clamp, const S* Ct, S* Mt, S* h) {
  const S *ev = x.ev + t * H, *k = x.k + t * H, *q = x.q + t * H;
  std::fill(h, h + H, S(0));
  for (int64_t j = 0; j < H; ++j) {
    const S kj = k[j], qj = q[j];
    const S* cj = Ct + j * H;
    S* mj = Mt + j * H;
    for_row<S, false>(H, [&]<typename V>(int64_t i) {
      V p = load<V>(cj + i) * load<V>(mj + i) + kj * load<V>(ev + i);
      if constexpr (CLAMP) p = clamp_to(p, clamp);
      store<V>(mj + i, p);
      store<V>(h + i, load<V>(h + i) + qj * p);
    });
  }
}

// Backward's recomputation step for one batch row (state not transposed): M_out <- clamp(C ⊙ M_in +
// ev ⊗ k) and, with CLAMP, mask (H×H) = 1 where |P| <= clamp (where the clamp passes gradient, as
// torch.clamp). CLAMP is a template flag: the inner loop has no branches.
template <typename S, bool CLAMP>
inline void step(const Row<S>& x, int64_t t, int64_t H, S clamp, const S* C, const S* M_in, S* M_out, S* mask) {
  const S *ev = x.ev + t * H, *k = x.k + t * H;
  for (int64_t i = 0; i < H; ++i) {
    const S e = ev[i];
    const S *mi = M_in + i * H, *ci = C + i * H;
    S* mo = M_out + i * H;
    for_row<S, false>(H, [&]<typename V>(int64_t j) {
      V p = load<V>(ci + j) * load<V>(mi + j) + e * load<V>(k + j);
      if constexpr (CLAMP) {
        store<V>(mask + i * H + j, (p < 0 ? -p : p) <= clamp ? V{} + 1 : V{});
        p = clamp_to(p, clamp);
      }
      store<V>(mo + j, p);
    });
  }
}

template <typename S>
inline void transpose(const S* A, S* At, int64_t H) {  // At = Aᵀ for H×H
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < H; ++j) At[j * H + i] = A[i * H + j];
}

// Pointers to one batch row's [T,H] input gradients.
template <typename S>
struct Grads {
  S *th, *vc, *ev, *k, *q;
};

// One batch row's backward. starts [n,H,H]: the saved chunk states; D [H,H]: dL/dM_T in, dL/dM_0
// out. Scratch for a chunk: its recomputed states Ms [(chunk+1)·H·H], and per step its gates
// Cs, dCs (float64 only) and (with CLAMP) clamp masks [chunk·H·H].
template <typename S, bool CLAMP>
void backward_row(const Row<S>& x, const Grads<S>& d, const S* dh, const S* starts, S* __restrict__ D, int64_t T,
                  int64_t H, int64_t chunk, S clamp, S* Ms, S* Cs, S* dCs, S* masks) {
  const int64_t HH = H * H, n = (T + chunk - 1) / chunk;
  for (int64_t ci = n - 1; ci >= 0; --ci) {
    const int64_t a = ci * chunk, L = std::min(chunk, T - a);
    std::memcpy(Ms, starts + ci * HH, HH * sizeof(S));
    for (int64_t s = 0; s < L; ++s) {  // recompute the gates, M_a..M_{a+L} and the clamp masks
      gates(x, a + s, H, Cs + s * HH, kSavesDC<S> ? dCs + s * HH : nullptr);
      step<S, CLAMP>(x, a + s, H, clamp, Cs + s * HH, Ms + s * HH, Ms + (s + 1) * HH, CLAMP ? masks + s * HH : nullptr);
    }
    for (int64_t s = L - 1; s >= 0; --s) {
      const int64_t t = a + s;
      const S* Mt = Ms + (s + 1) * HH;
      const S* Mp = Ms + s * HH;
      const S* mask = CLAMP ? masks + s * HH : nullptr;
      const S* Ct = Cs + s * HH;
      const S* dCt = kSavesDC<S> ? dCs + s * HH : nullptr;
      const S *tht = x.th + t * H, *vct = x.vc + t * H, *evt = x.ev + t * H, *kt = x.k + t * H,
              *qt = x.q + t * H, *dht = dh + t * H;
      S *dqt = d.q + t * H, *dkt = d.k + t * H, *dvct = d.vc + t * H;
      std::fill(dqt, dqt + H, S(0));
      std::fill(dkt, dkt + H, S(0));
      std::fill(dvct, dvct + H, S(0));
      for (int64_t i = 0; i < H; ++i) {
        const S th_i = tht[i], ev_i = evt[i], dh_i = dht[i];
        const S *ci = Ct + i * H, *dci = kSavesDC<S> ? dCt + i * H : nullptr;
        S* Di = D + i * H;
        const S* mt = Mt + i * H;
        const S* mp = Mp + i * H;
        Sum<S> dev_i, dth_i;
        for_row<S, false>(H, [&]<typename V>(int64_t j) {
          V gr = load<V>(Di + j) + dh_i * load<V>(qt + j);           // dL/dM_t
          store<V>(dqt + j, load<V>(dqt + j) + load<V>(mt + j) * dh_i);
          if constexpr (CLAMP) gr = gr * load<V>(mask + i * H + j);  // dL/dP_t
          dev_i.add(gr * load<V>(kt + j));
          store<V>(dkt + j, load<V>(dkt + j) + gr * ev_i);
          const V c = load<V>(ci + j);
          V dc;                                                        // keep tanh'(X)
          if constexpr (kSavesDC<S>) dc = load<V>(dci + j);
          else dc = c * (2 - c);
          const V dX = gr * load<V>(mp + j) * dc;                      // dL/dX
          dth_i.add(dX * load<V>(vct + j));
          store<V>(dvct + j, load<V>(dvct + j) + dX * th_i);
          store<V>(Di + j, c * gr);                                    // dL/dM_{t-1}
        });
        d.ev[t * H + i] = dev_i.value();
        d.th[t * H + i] = dth_i.value();
      }
    }
  }
}

// One batch row's forward: M [H,H] holds M_0 in and M_T out; h [T,H]; starts [n,H,H] (not
// transposed) or nullptr; Mt and Ct [H,H]: scratch for the transposed state and gates.
template <typename S, bool CLAMP>
void forward_row(const Row<S>& x, S* M, S* Mt, S* Ct, S* h, S* starts, int64_t T, int64_t H, int64_t chunk,
                 S clamp) {
  const int64_t HH = H * H;
  transpose(M, Mt, H);
  for (int64_t t = 0; t < T; ++t) {
    if (starts && t % chunk == 0) transpose(Mt, starts + (t / chunk) * HH, H);
    gates<S, false>(x.vc + t * H, x.th + t * H, x.keep, t, H, Ct, nullptr);  // Xᵀ = vc ⊗ θ
    step_transposed<S, CLAMP>(x, t, H, clamp, Ct, Mt, h + t * H);
  }
  transpose(Mt, M, H);
}

}  // namespace

// th, vc, ev, k, q [B,T,H], keep [B,T] or empty, M0 [B,H,H]. Returns h [B,T,H], M_T [B,H,H] and,
// when save is set, the states entering every chunk, starts [B,n,H,H] (n = ceil(T / chunk)).
std::vector<at::Tensor> shm_forward(at::Tensor th, at::Tensor vc, at::Tensor ev, at::Tensor k, at::Tensor q,
                                    at::Tensor keep, at::Tensor M0, double clamp, int64_t chunk, bool save) {
  TORCH_CHECK(th.dim() == 3, "shm_cpu: inputs must be [B,T,H], got θ of shape ", th.sizes());
  for (const auto& x : {th, vc, ev, k, q, keep, M0}) {
    TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "shm_cpu: tensors must be contiguous and on the CPU");
    TORCH_CHECK(x.scalar_type() == th.scalar_type(), "shm_cpu: all tensors must have θ's dtype ",
                th.scalar_type(), ", got ", x.scalar_type());
  }
  for (const auto& x : {vc, ev, k, q})
    TORCH_CHECK(x.sizes() == th.sizes(), "shm_cpu: θ, vc, ev, k, q must have one shape [B,T,H]; got ", th.sizes(),
                " and ", x.sizes());
  const int64_t B = th.size(0), T = th.size(1), H = th.size(2), HH = H * H;
  TORCH_CHECK(M0.dim() == 3 && M0.size(0) == B && M0.size(1) == H && M0.size(2) == H,
              "shm_cpu: M0 must be [B,H,H] = [", B, ",", H, ",", H, "], got ", M0.sizes());
  TORCH_CHECK(keep.numel() == 0 || (keep.dim() == 2 && keep.size(0) == B && keep.size(1) == T),
              "shm_cpu: keep must be [B,T] or empty, got ", keep.sizes());
  TORCH_CHECK(chunk >= 1, "shm_cpu: chunk must be >= 1");
  const int64_t n = T > 0 ? (T + chunk - 1) / chunk : 0;
  const bool has_keep = keep.numel() > 0, has_clamp = clamp > 0;
  auto h = at::empty({B, T, H}, th.options());
  auto MT = M0.contiguous().clone();
  auto starts = at::empty({save ? B : 0, n, H, H}, th.options());
  AT_DISPATCH_FLOATING_TYPES(th.scalar_type(), "shm_forward", [&] {
    using S = scalar_t;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<S> Mt(HH), Ct(HH);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t o = b * T * H;
        Row<S> x{th.data_ptr<S>() + o, vc.data_ptr<S>() + o, ev.data_ptr<S>() + o, k.data_ptr<S>() + o,
                 q.data_ptr<S>() + o, has_keep ? keep.data_ptr<S>() + b * T : nullptr};
        S* st = save ? starts.data_ptr<S>() + b * n * HH : nullptr;
        if (has_clamp)
          forward_row<S, true>(x, MT.data_ptr<S>() + b * HH, Mt.data(), Ct.data(), h.data_ptr<S>() + o, st, T, H, chunk,
                               static_cast<S>(clamp));
        else
          forward_row<S, false>(x, MT.data_ptr<S>() + b * HH, Mt.data(), Ct.data(), h.data_ptr<S>() + o, st, T, H, chunk,
                                S(0));
      }
    });
  });
  return {h, MT, starts};
}

// Backward from the saved inputs and chunk starts; dh [B,T,H], dMT [B,H,H]. Returns dθ, dvc, dev,
// dk, dq [B,T,H] and dM0 [B,H,H].
std::vector<at::Tensor> shm_backward(at::Tensor th, at::Tensor vc, at::Tensor ev, at::Tensor k, at::Tensor q,
                                     at::Tensor keep, at::Tensor starts, at::Tensor dh, at::Tensor dMT,
                                     double clamp, int64_t chunk) {
  const int64_t B = th.size(0), T = th.size(1), H = th.size(2), HH = H * H;
  const int64_t n = starts.size(1);
  const bool has_keep = keep.numel() > 0, has_clamp = clamp > 0;
  dh = dh.contiguous();
  auto D_all = dMT.contiguous().clone();  // running dL/dM_t per row; dM0 at the end
  std::vector<at::Tensor> g;
  for (int i = 0; i < 5; ++i) g.push_back(at::empty({B, T, H}, th.options()));
  AT_DISPATCH_FLOATING_TYPES(th.scalar_type(), "shm_backward", [&] {
    using S = scalar_t;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<S> Ms((chunk + 1) * HH), Cs(chunk * HH), dCs(kSavesDC<S> ? chunk * HH : 0), masks(has_clamp ? chunk * HH : 0);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t o = b * T * H;
        Row<S> x{th.data_ptr<S>() + o, vc.data_ptr<S>() + o, ev.data_ptr<S>() + o, k.data_ptr<S>() + o,
                 q.data_ptr<S>() + o, has_keep ? keep.data_ptr<S>() + b * T : nullptr};
        Grads<S> d{g[0].data_ptr<S>() + o, g[1].data_ptr<S>() + o, g[2].data_ptr<S>() + o,
                   g[3].data_ptr<S>() + o, g[4].data_ptr<S>() + o};
        const S* st = starts.data_ptr<S>() + b * n * HH;
        S* D = D_all.data_ptr<S>() + b * HH;
        if (has_clamp)
          backward_row<S, true>(x, d, dh.data_ptr<S>() + o, st, D, T, H, chunk, static_cast<S>(clamp), Ms.data(),
                                Cs.data(), dCs.data(), masks.data());
        else
          backward_row<S, false>(x, d, dh.data_ptr<S>() + o, st, D, T, H, chunk, S(0), Ms.data(), Cs.data(),
                                 dCs.data(), masks.data());
      }
    });
  });
  return {g[0], g[1], g[2], g[3], g[4], D_all};
}

}  // namespace memrl
