// Python bindings of memrl's CPU kernels (one extension module, built by torchkit/memory/native.py).
#include <torch/extension.h>

#include <vector>

namespace memrl {
std::vector<at::Tensor> gru_forward(at::Tensor gi, at::Tensor h0, at::Tensor w_hh, at::Tensor b_hh, at::Tensor keep,
                                    bool save);
std::vector<at::Tensor> gru_backward(at::Tensor dhs, at::Tensor w_hh, at::Tensor keep, at::Tensor rz_all,
                                     at::Tensor n_all, at::Tensor hn_all, at::Tensor hp_all);
std::vector<at::Tensor> shm_forward(at::Tensor th, at::Tensor vc, at::Tensor ev, at::Tensor k, at::Tensor q,
                                    at::Tensor keep, at::Tensor M0, double clamp, int64_t chunk, bool save);
std::vector<at::Tensor> shm_backward(at::Tensor th, at::Tensor vc, at::Tensor ev, at::Tensor k, at::Tensor q,
                                     at::Tensor keep, at::Tensor starts, at::Tensor dh, at::Tensor dMT,
                                     double clamp, int64_t chunk);
std::vector<at::Tensor> shm_inputs_forward(at::Tensor Z, at::Tensor b_s, double eps);
std::vector<at::Tensor> s6_forward(at::Tensor u, at::Tensor dt, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                                   at::Tensor h0, at::Tensor keep);
std::vector<at::Tensor> s6_backward(at::Tensor u, at::Tensor dt, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                                    at::Tensor h0, at::Tensor keep, at::Tensor gy, at::Tensor ghT);
at::Tensor ffm_forward(at::Tensor x, at::Tensor gre, at::Tensor gim, at::Tensor s0, at::Tensor keep);
std::vector<at::Tensor> ffm_backward(at::Tensor gS, at::Tensor S, at::Tensor gre, at::Tensor gim, at::Tensor s0,
                                     at::Tensor keep);
at::Tensor dropout_mask(at::Tensor like, double p, int64_t seed);
at::Tensor shm_inputs_backward(at::Tensor Z, at::Tensor dvc, at::Tensor dev, at::Tensor dk, at::Tensor dq,
                               at::Tensor ds, double eps);
}  // namespace memrl

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gru_forward", &memrl::gru_forward, "fused GRU recurrence forward (CPU)");
  m.def("gru_backward", &memrl::gru_backward, "fused GRU recurrence backward (CPU)");
  m.def("shm_forward", &memrl::shm_forward, "fused SHM recurrence forward (CPU)");
  m.def("shm_backward", &memrl::shm_backward, "fused SHM recurrence backward (CPU)");
  m.def("s6_forward", &memrl::s6_forward, "S6 selective scan forward (CPU)");
  m.def("s6_backward", &memrl::s6_backward, "S6 selective scan backward (CPU)");
  m.def("ffm_forward", &memrl::ffm_forward, "FFM trace recurrence forward (CPU)");
  m.def("ffm_backward", &memrl::ffm_backward, "FFM trace recurrence backward (CPU)");
  m.def("dropout_mask", &memrl::dropout_mask, "dropout mask from a counter hash (CPU)");
  m.def("shm_inputs_forward", &memrl::shm_inputs_forward, "SHM's per-step inputs from its projection (CPU)");
  m.def("shm_inputs_backward", &memrl::shm_inputs_backward, "backward of shm_inputs_forward (CPU)");
}
