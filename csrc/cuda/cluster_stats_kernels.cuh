// Kernels of the CUDA cluster_stats (launched by cluster_stats_cuda.cu): per-row float64 atomics, the
// shared-memory partial sums for large batches of a small codebook, and the rounding to float32.
#pragma once
#include <cstdint>

#include "cuda/device_runtime.cuh"

namespace kvq::cuda {
namespace {

constexpr int kWarp = 32;

// One warp per row: the row's index is read once and the lanes add its components, coalesced.
template <typename scalar_t, typename index_t>
__global__ void accumulate_kernel(const scalar_t* __restrict__ x, int64_t N, int64_t D, int64_t sx0, int64_t sx1,
                                  const index_t* __restrict__ indices, int64_t si, int64_t K,
                                  double* __restrict__ sums, unsigned long long* __restrict__ counts) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t row = thread_index() / kWarp; row < N; row += thread_count() / kWarp) {
    const int64_t k = static_cast<int64_t>(indices[row * si]);
    if (k < 0 || k >= K) continue;
    for (int64_t d = lane; d < D; d += kWarp) {
      atomicAdd(sums + k * D + d, static_cast<double>(static_cast<float>(x[row * sx0 + d * sx1])));
    }
    if (lane == 0) atomicAdd(counts + k, 1ull);
  }
}

constexpr int kPrivateThreads = 1024;
constexpr int kPrivateRows = 4;  // rows a warp reads before it adds them, so the loads overlap

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kPrivateThreads)
    accumulate_private_kernel(const scalar_t* __restrict__ x, int64_t N, int64_t D, int64_t sx0, int64_t sx1,
                              const index_t* __restrict__ indices, int64_t si, int64_t K, double* __restrict__ sums,
                              unsigned long long* __restrict__ counts) {
  KVQ_DYNAMIC_SHARED(float, shared);
  float* part = shared;                                                 // K x D partial sums
  auto* part_counts = reinterpret_cast<unsigned int*>(shared + K * D);  // K partial counts
  for (int64_t e = threadIdx.x; e < K * D + K; e += blockDim.x) shared[e] = 0.f;  // 0.f and 0u: same bits
  __syncthreads();
  const int lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  const int64_t first = (int64_t{blockIdx.x} * warps + threadIdx.x / kWarp) * kPrivateRows;
  const int64_t step = int64_t{gridDim.x} * warps * kPrivateRows;
  for (int64_t row0 = first; row0 < N; row0 += step) {
    int64_t k[kPrivateRows];  // -1 for rows past N and for out-of-range indices: those rows are left out
#pragma unroll
    for (int r = 0; r < kPrivateRows; ++r) {
      k[r] = row0 + r < N ? static_cast<int64_t>(indices[(row0 + r) * si]) : -1;
      if (k[r] >= K) k[r] = -1;
    }
    for (int64_t d = lane; d < D; d += kWarp) {
      float v[kPrivateRows];
#pragma unroll
      for (int r = 0; r < kPrivateRows; ++r) v[r] = k[r] >= 0 ? static_cast<float>(x[(row0 + r) * sx0 + d * sx1]) : 0.f;
#pragma unroll
      for (int r = 0; r < kPrivateRows; ++r)
        if (k[r] >= 0) atomicAdd(part + k[r] * D + d, v[r]);
    }
#pragma unroll
    for (int r = 0; r < kPrivateRows; ++r)
      if (lane == r && k[r] >= 0) atomicAdd(part_counts + k[r], 1u);
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < K * D; e += blockDim.x)
    if (part[e] != 0.f) atomicAdd(sums + e, static_cast<double>(part[e]));
  for (int64_t e = threadIdx.x; e < K; e += blockDim.x)
    if (part_counts[e] != 0u) atomicAdd(counts + e, static_cast<unsigned long long>(part_counts[e]));
}

__global__ void round_kernel(const double* __restrict__ sums64, const unsigned long long* __restrict__ counts64,
                             int64_t K, int64_t D, float* __restrict__ sums, float* __restrict__ counts) {
  for (int64_t e = thread_index(); e < K * D; e += thread_count()) {
    sums[e] = static_cast<float>(sums64[e]);
    if (e < K) counts[e] = static_cast<float>(counts64[e]);
  }
}

}  // namespace
}  // namespace kvq::cuda
