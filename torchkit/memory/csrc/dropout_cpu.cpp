// Dropout masks for CPU training (GPT-2's attention, residual and embedding dropout): torch's CPU
// bernoulli_ draws one number at a time (~4x the cost of the attention it masks at T ~ 100); this
// hashes (seed, element index) instead, which vectorises.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

namespace memrl {

namespace {
// lowbias32 (C. Wellons' integer hash): a bijection of 32-bit words with little bias; 32-bit
// multiplies, so the loop below vectorises.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
}  // namespace

// A dropout mask like `like`: 0 with probability p, else 1 / (1 − p). Element i's uniform 32-bit
// number is mix32(mix32(i ^ seed_lo) + seed_hi): a function of (seed, i) only, so the mask does not
// depend on threads; the caller draws the seed from torch's generator (torch.manual_seed holds).
at::Tensor dropout_mask(at::Tensor like, double p, int64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout_mask: p must be in [0, 1), got ", p);
  TORCH_CHECK(like.numel() <= (int64_t(1) << 32), "dropout_mask: at most 2^32 elements, got ", like.numel());
  auto out = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  const uint64_t threshold = static_cast<uint64_t>(p * 4294967296.0);  // drop where u < threshold
  const uint32_t lo = static_cast<uint32_t>(static_cast<uint64_t>(seed)),
                 hi = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "dropout_mask", [&] {
    using F = scalar_t;
    const F scale = static_cast<F>(1.0 / (1.0 - p));
    F* __restrict__ o = out.data_ptr<F>();
    at::parallel_for(0, out.numel(), 1 << 16, [&](int64_t i0, int64_t i1) {
      const uint32_t n = static_cast<uint32_t>(i1 - i0), first = static_cast<uint32_t>(i0);
      F* __restrict__ oo = o + i0;
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t u = mix32(mix32((first + i) ^ lo) + hi);
        oo[i] = static_cast<uint64_t>(u) >= threshold ? scale : F(0);
      }
    });
  });
  return out;
}

}  // namespace memrl
