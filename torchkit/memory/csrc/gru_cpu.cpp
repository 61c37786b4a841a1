// Fused GRU recurrence for CPU training: one C++ loop over time for the forward and one for the
// backward, instead of PyTorch's per-step autograd graph (~10 autograd nodes per step).
//
// PyTorch's GRU (gate order r, z, n along the 3H axis):
//   gi_t = W_ih x_t + b_ih                          (computed outside, for all t at once)
//   hp_t = keep_t * h_{t-1}                          (keep_t = 0 where a new episode starts; h_{-1} = h0)
//   gh_t = W_hh hp_t + b_hh
//   r = σ(gi_r + gh_r),  z = σ(gi_z + gh_z),  n = tanh(gi_n + r * gh_n),  h_t = n + z (hp_t - n)
//
// Backward, with g the total gradient reaching h_t:
//   dn' = g (1 - z)(1 - n²),  dz' = g (hp - n) z (1 - z),  dr' = dn' gh_n r (1 - r)
//   dgi = [dr', dz', dn'],  dgh = [dr', dz', dn' r]
//   dhp = g z + dgh W_hh,  dh_{t-1} = keep_t dhp;  dW_hh = Σ_t dgh_tᵀ hp_t,  db_hh = Σ_t dgh_t
// Per step, the matrix product goes through ATen (MKL); the gates are one loop over [B,H] in packs
// of 16/8 floats (vec.h: σ and tanh from a polynomial exp, absolute error ~1e-7; float64: std::exp).
#include <ATen/ATen.h>

#include "vec.h"

#include <vector>

namespace memrl {
namespace {

// A [rows, cols] tensor over existing memory (no data allocation or copy).
inline at::Tensor view2d(void* p, int64_t rows, int64_t cols, const at::TensorOptions& o) {
  return at::from_blob(p, {rows, cols}, o);
}

}  // namespace

// Forward over [T,B,3H] input projections. Returns hs [T,B,H] and, when save is set, the gates
// rz [T,B,2H] (r then z), n [T,B,H], gh_n [T,B,H] and hp [T,B,H] for the backward.
std::vector<at::Tensor> gru_forward(at::Tensor gi, at::Tensor h0, at::Tensor w_hh, at::Tensor b_hh, at::Tensor keep,
                                    bool save) {
  TORCH_CHECK(gi.device().is_cpu(), "gru_cpu: tensors must be on the CPU");
  TORCH_CHECK(gi.dim() == 3 && gi.is_contiguous(), "gru_cpu: gi must be contiguous [T,B,3H]");
  const int64_t T = gi.size(0), B = gi.size(1), H = h0.size(1), BH = B * H;
  TORCH_CHECK(gi.size(2) == 3 * H && h0.size(0) == B, "gru_cpu: gi must be [T,B,3H] for h0 [B,H]");
  TORCH_CHECK(keep.numel() == 0 || keep.numel() == T * B, "gru_cpu: keep must be [T,B] or empty");
  const bool has_keep = keep.numel() > 0;
  auto opts = gi.options();
  h0 = h0.contiguous();
  b_hh = b_hh.contiguous();
  auto hs = at::empty({T, B, H}, opts);
  const int64_t Ts = save ? T : 0;  // gates and masked states are kept for the backward only
  auto rz_all = at::empty({Ts, B, 2 * H}, opts);
  auto n_all = at::empty({Ts, B, H}, opts);
  auto hn_all = at::empty({Ts, B, H}, opts);
  auto hp_all = at::empty({save ? T : 1, B, H}, opts);
  auto gh = at::empty({B, 3 * H}, opts);
  auto w_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "gru_forward", [&] {
    using S = scalar_t;
    const S* hprev = h0.data_ptr<S>();
    const S* q = gh.data_ptr<S>();
    const S* bh = b_hh.data_ptr<S>();
    for (int64_t t = 0; t < T; ++t) {
      // hp = keep ⊙ h_{t-1}: a copy when it is masked or saved, else h_{t-1} itself
      const S* hp = hprev;
      if (has_keep || save) {
        S* dst = hp_all.data_ptr<S>() + (save ? t : 0) * BH;
        const S* kp = has_keep ? keep.data_ptr<S>() + t * B : nullptr;
        for (int64_t b = 0; b < B; ++b) {
          const S k = has_keep ? kp[b] : S(1);
          for (int64_t j = 0; j < H; ++j) dst[b * H + j] = k * hprev[b * H + j];
        }
        hp = dst;
      }
      at::mm_out(gh, view2d(const_cast<S*>(hp), B, H, opts), w_t);  // gh = hp W_hhᵀ   [B,3H]
      S* h = hs.data_ptr<S>() + t * BH;
      const S* g = gi.data_ptr<S>() + t * 3 * BH;
      for (int64_t b = 0; b < B; ++b) {
        const S *gb = g + b * 3 * H, *qb = q + b * 3 * H, *hpb = hp + b * H;
        S* hb = h + b * H;
        S *rz = nullptr, *ns = nullptr, *hns = nullptr;
        if (save) {
          rz = rz_all.data_ptr<S>() + (t * B + b) * 2 * H;
          ns = n_all.data_ptr<S>() + t * BH + b * H;
          hns = hn_all.data_ptr<S>() + t * BH + b * H;
        }
        vec::for_row<S>(H, [&]<typename V>(int64_t j) {
          using vec::load;
          const V r = vec::sigmoid(load<V>(gb + j) + load<V>(qb + j) + load<V>(bh + j));
          const V z = vec::sigmoid(load<V>(gb + H + j) + load<V>(qb + H + j) + load<V>(bh + H + j));
          const V hn = load<V>(qb + 2 * H + j) + load<V>(bh + 2 * H + j);
          const V n = vec::tanh_(load<V>(gb + 2 * H + j) + r * hn);
          vec::store<V>(hb + j, n + z * (load<V>(hpb + j) - n));
          if (save) {
            vec::store<V>(rz + j, r);
            vec::store<V>(rz + H + j, z);
            vec::store<V>(ns + j, n);
            vec::store<V>(hns + j, hn);
          }
        });
      }
      hprev = h;
    }
  });
  if (save) return {hs, rz_all, n_all, hn_all, hp_all};
  return {hs};
}

// Backward. dhs [T,B,H]: gradient of every output (the final state is hs[T-1], so its gradient
// arrives through dhs). Returns dgi [T,B,3H], dh0 [B,H], dW_hh [3H,H], db_hh [3H].
std::vector<at::Tensor> gru_backward(at::Tensor dhs, at::Tensor w_hh, at::Tensor keep,
                                        at::Tensor rz_all, at::Tensor n_all, at::Tensor hn_all,
                                        at::Tensor hp_all) {
  const int64_t T = n_all.size(0), B = n_all.size(1), H = n_all.size(2), BH = B * H;
  const bool has_keep = keep.numel() > 0;
  auto opts = n_all.options();
  dhs = dhs.contiguous();
  w_hh = w_hh.contiguous();
  auto dgi = at::empty({T, B, 3 * H}, opts);
  auto dgh = at::empty({T, B, 3 * H}, opts);
  auto dh = at::zeros({B, H}, opts);   // gradient reaching h_t from later steps
  auto dhp = at::empty({B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(n_all.scalar_type(), "gru_backward", [&] {
    using S = scalar_t;
    S* __restrict__ d = dh.data_ptr<S>();
    S* __restrict__ dp = dhp.data_ptr<S>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const S* __restrict__ dout = dhs.data_ptr<S>() + t * BH;
      const S* __restrict__ rz = rz_all.data_ptr<S>() + t * 2 * BH;
      const S* __restrict__ ns = n_all.data_ptr<S>() + t * BH;
      const S* __restrict__ hns = hn_all.data_ptr<S>() + t * BH;
      const S* __restrict__ hp = hp_all.data_ptr<S>() + t * BH;
      S* __restrict__ dgit = dgi.data_ptr<S>() + t * 3 * BH;
      S* __restrict__ dght = dgh.data_ptr<S>() + t * 3 * BH;
      for (int64_t b = 0; b < B; ++b) {
        const S* r = rz + b * 2 * H;
        const S* z = r + H;
        const S *db = d + b * H, *ob = dout + b * H, *nb = ns + b * H, *hnb = hns + b * H, *hpb = hp + b * H;
        S* gi_b = dgit + b * 3 * H;
        S* gh_b = dght + b * 3 * H;
        S* dpb = dp + b * H;
        vec::for_row<S>(H, [&]<typename V>(int64_t j) {
          using vec::load;
          using vec::store;
          const V g = load<V>(db + j) + load<V>(ob + j);
          const V n = load<V>(nb + j), zj = load<V>(z + j), rj = load<V>(r + j);
          const V dn = g * (1 - zj) * (1 - n * n);
          const V dz = g * (load<V>(hpb + j) - n) * zj * (1 - zj);
          const V dr = dn * load<V>(hnb + j) * rj * (1 - rj);
          store<V>(gi_b + j, dr);
          store<V>(gi_b + H + j, dz);
          store<V>(gi_b + 2 * H + j, dn);
          store<V>(gh_b + j, dr);
          store<V>(gh_b + H + j, dz);
          store<V>(gh_b + 2 * H + j, dn * rj);
          store<V>(dpb + j, g * zj);
        });
      }
      at::addmm_out(dhp, dhp, view2d(dght, B, 3 * H, opts), w_hh);  // dhp += dgh_t W_hh   [B,H]
      const S* kp = has_keep ? keep.data_ptr<S>() + t * B : nullptr;
      for (int64_t b = 0; b < B; ++b) {
        const S k = has_keep ? kp[b] : S(1);
        for (int64_t j = 0; j < H; ++j) d[b * H + j] = k * dp[b * H + j];
      }
    }
  });
  auto dgh2 = dgh.view({T * B, 3 * H});
  auto dw = at::mm(dgh2.t(), hp_all.view({T * B, H}));  // [3H,H]
  auto db = dgh2.sum(0);
  return {dgi, dh, dw, db};
}

}  // namespace memrl
