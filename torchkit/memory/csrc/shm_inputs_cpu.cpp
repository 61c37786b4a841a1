// The SHM layer's per-step inputs from its one projection GEMM (torchkit/memory/shm.py), for CPU.
//
// Z = x̂ Wᵀ has the columns [z_k | z_q | v | vc | z_s | z_η] (H each, z_η one) per row; then
//
//   k = sumnorm(ReLU(z_k)),  q = sumnorm(ReLU(z_q)),  sumnorm(r) = r / (eps + Σ_j r_j)
//   ev = σ(z_η) v,  vc,  s = z_s + b_s                                   (each [N,H], contiguous)
//
// in one pass over the rows, in place of a dozen elementwise ATen ops on strided views. The backward
// writes dL/dZ in one pass too:
//
//   dz_k,j = [z_k,j > 0] (dk_j − Σ_i dk_i k_i) / (eps + Σ_i r_i)    (and the same for q)
//   dv = σ(z_η) dev,  dz_η = σ(z_η)(1 − σ(z_η)) Σ_j dev_j v_j,  dvc,  dz_s = ds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace memrl {
namespace {

constexpr int64_t kGrain = 256;  // rows per ATen task

// Column blocks of one row of Z.
enum Block { kKey = 0, kQuery = 1, kValue = 2, kVc = 3, kShortcut = 4, kEta = 5 };

template <typename S> inline S sigmoid(S x) { return S(1) / (S(1) + std::exp(-x)); }

// Σ_j term(j) for j < H, in 8 independent partial sums: a single running sum would wait on the
// add latency at every term (these rows are short, H = 24, and this loop is what the pass costs).
template <typename S, typename F> inline S sum_over(int64_t H, F term) {
  S acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= H; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] += term(j + l);
  for (; j < H; ++j) acc[0] += term(j);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename S> inline S relu(S x) { return x > 0 ? x : S(0); }

// r = ReLU(z) / (eps + Σ ReLU(z)) for one row of H.
template <typename S> inline void sumnorm_relu(const S* z, S* out, int64_t H, S eps) {
  const S sum = sum_over<S>(H, [&](int64_t j) { return out[j] = relu(z[j]); });
  const S inv = S(1) / (eps + sum);  // one division per row, not H
  for (int64_t j = 0; j < H; ++j) out[j] *= inv;
}

// dz = [z > 0] (dr − Σ_i dr_i r_i) / (eps + Σ ReLU(z)), with r = sumnorm_relu(z) recomputed.
template <typename S> inline void sumnorm_relu_backward(const S* z, const S* dr, S* dz, int64_t H, S eps) {
  const S inv = S(1) / (eps + sum_over<S>(H, [&](int64_t j) { return relu(z[j]); }));
  const S dot = inv * sum_over<S>(H, [&](int64_t j) { return dr[j] * relu(z[j]); });  // Σ_i dr_i r_i
  for (int64_t j = 0; j < H; ++j) dz[j] = z[j] > 0 ? (dr[j] - dot) * inv : S(0);
}

void check_z(const at::Tensor& Z, int64_t H) {
  TORCH_CHECK(Z.dim() == 2 && Z.size(1) == 5 * H + 1, "shm_inputs: Z must be [N, 5H+1] = [N, ", 5 * H + 1,
              "], got ", Z.sizes());
  TORCH_CHECK(Z.device().is_cpu() && Z.is_contiguous(), "shm_inputs: Z must be contiguous and on the CPU");
}

}  // namespace

// Z [N,5H+1], b_s [H] -> vc, ev, k, q, s, each [N,H].
std::vector<at::Tensor> shm_inputs_forward(at::Tensor Z, at::Tensor b_s, double eps) {
  TORCH_CHECK(b_s.dim() == 1, "shm_inputs: the shortcut bias must be [H], got ", b_s.sizes());
  const int64_t H = b_s.size(0), N = Z.size(0), W = 5 * H + 1;
  check_z(Z, H);
  b_s = b_s.to(Z.scalar_type()).contiguous();
  std::vector<at::Tensor> out;
  for (int i = 0; i < 5; ++i) out.push_back(at::empty({N, H}, Z.options()));
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "shm_inputs_forward", [&] {
    const scalar_t* z = Z.data_ptr<scalar_t>();
    const scalar_t* bs = b_s.data_ptr<scalar_t>();
    scalar_t *vc = out[0].data_ptr<scalar_t>(), *ev = out[1].data_ptr<scalar_t>(),
             *k = out[2].data_ptr<scalar_t>(), *q = out[3].data_ptr<scalar_t>(), *s = out[4].data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* zr = z + n * W;
        const int64_t o = n * H;
        sumnorm_relu(zr + kKey * H, k + o, H, e);
        sumnorm_relu(zr + kQuery * H, q + o, H, e);
        const scalar_t g = sigmoid(zr[kEta * H]);
        for (int64_t j = 0; j < H; ++j) {
          ev[o + j] = g * zr[kValue * H + j];
          vc[o + j] = zr[kVc * H + j];
          s[o + j] = zr[kShortcut * H + j] + bs[j];
        }
      }
    });
  });
  return out;
}

// Z [N,5H+1] and the gradients of vc, ev, k, q, s [N,H] -> dL/dZ [N,5H+1].
at::Tensor shm_inputs_backward(at::Tensor Z, at::Tensor dvc, at::Tensor dev, at::Tensor dk, at::Tensor dq,
                               at::Tensor ds, double eps) {
  const int64_t H = dvc.size(-1), N = Z.size(0), W = 5 * H + 1;
  check_z(Z, H);
  std::vector<at::Tensor> grads{dvc, dev, dk, dq, ds};
  for (auto& g : grads) {
    TORCH_CHECK(g.dim() == 2 && g.size(0) == N && g.size(1) == H, "shm_inputs: gradients must be [N,H] = [", N,
                ",", H, "], got ", g.sizes());
    g = g.to(Z.scalar_type()).contiguous();
  }
  at::Tensor dZ = at::empty({N, W}, Z.options());
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "shm_inputs_backward", [&] {
    const scalar_t* z = Z.data_ptr<scalar_t>();
    const scalar_t *gvc = grads[0].data_ptr<scalar_t>(), *gev = grads[1].data_ptr<scalar_t>(),
                   *gk = grads[2].data_ptr<scalar_t>(), *gq = grads[3].data_ptr<scalar_t>(),
                   *gs = grads[4].data_ptr<scalar_t>();
    scalar_t* dz = dZ.data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* zr = z + n * W;
        scalar_t* dr = dz + n * W;
        const int64_t o = n * H;
        sumnorm_relu_backward(zr + kKey * H, gk + o, dr + kKey * H, H, e);
        sumnorm_relu_backward(zr + kQuery * H, gq + o, dr + kQuery * H, H, e);
        const scalar_t g = sigmoid(zr[kEta * H]);
        const scalar_t dot = sum_over<scalar_t>(H, [&](int64_t j) { return gev[o + j] * zr[kValue * H + j]; });
        for (int64_t j = 0; j < H; ++j) {
          dr[kValue * H + j] = g * gev[o + j];
          dr[kVc * H + j] = gvc[o + j];
          dr[kShortcut * H + j] = gs[o + j];
        }
        dr[kEta * H] = g * (1 - g) * dot;
      }
    });
  });
  return dZ;
}

}  // namespace memrl
