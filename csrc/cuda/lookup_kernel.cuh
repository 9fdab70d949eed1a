// Kernel of the CUDA lookup (launched by lookup_cuda.cu).
#pragma once
#include <cstdint>
#include <limits>

#include "cuda/device_runtime.cuh"

namespace kvq::cuda {
namespace {

template <typename scalar_t, typename index_t>
__global__ void lookup_kernel(const scalar_t* __restrict__ codebook, int64_t K, int64_t D, int64_t s0, int64_t s1,
                              const index_t* __restrict__ indices, int64_t si, int64_t N,
                              scalar_t* __restrict__ out) {
  for (int64_t e = thread_index(); e < N * D; e += thread_count()) {
    const int64_t row = e / D, d = e - row * D;
    const int64_t k = static_cast<int64_t>(indices[row * si]);
    out[e] = (k >= 0 && k < K) ? codebook[k * s0 + d * s1]
                               : static_cast<scalar_t>(std::numeric_limits<float>::quiet_NaN());
  }
}

}  // namespace
}  // namespace kvq::cuda
