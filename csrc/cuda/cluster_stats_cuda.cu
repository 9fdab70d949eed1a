// CUDA kernel of kohonen_vq::cluster_stats: each element of x is added to its code's row with
// a float64 atomicAdd (counts with a 64-bit integer atomicAdd), then the totals are rounded to float32.
// The order of the atomic additions varies from run to run, so GPU sums are not bit-reproducible (the
// CPU path's are); accumulating in float64 keeps them within float32 rounding of the CPU result.
// Counts are exact. Rows whose index lies outside [0, K) are skipped by the kernels, so no write leaves the
// outputs even when the caller turned the (synchronising) range check off.
// Large batches of a small codebook (the common VQ-VAE case) would funnel many atomics onto the same few
// K x D addresses: there each block first sums its rows in shared memory (fp32 partial sums of a few rows
// per code) and then adds each non-zero partial to the float64 totals once.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/cluster_stats_kernels.cuh"
#include "cuda/cuda_utils.cuh"

namespace kvq::cuda {
namespace {

// Shared-memory bytes of the privatised kernel, or 0 when it does not pay: the K x D partials must fit
// in one block's shared memory, and each block should see at least 2 rows per code on average: a block's
// flush costs K x D global atomics, adding its rows directly (rows / K) x K x D. At the VQ-VAE-2 bottom shape
// (N = 262144, K = 512) an H100's 132 blocks see 3.9 rows per code. (Chosen by that count, not yet timed.)
size_t private_shared_bytes(int64_t N, int64_t K, int64_t D, int blocks) {
  int device = 0, optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const int64_t bytes = (K * D + K) * int64_t{4};
  return bytes <= optin && N >= int64_t{2} * blocks * K ? static_cast<size_t>(bytes) : 0;
}

std::tuple<at::Tensor, at::Tensor> cluster_stats_cuda(const at::Tensor& x, const at::Tensor& indices,
                                                      int64_t num_codes, bool check_range) {
  check_cluster_stats_args(x, indices, num_codes);
  const int64_t N = x.size(0), D = x.size(1), K = num_codes;
  const c10::cuda::CUDAGuard guard(x.device());
  if (N == 0) return {at::zeros({K, D}, x.options().dtype(at::kFloat)), at::zeros({K}, x.options().dtype(at::kFloat))};
  // Reads min and max back: a device synchronisation.
  if (check_range) check_indices_in_range(indices, K, "cluster_stats");

  // The float64 sums (K x D) and the 64-bit counts (K) in one buffer, zeroed by one kernel (0.0 and 0 share
  // their bits).
  const at::Tensor totals64 = at::zeros({K * D + K}, x.options().dtype(at::kDouble));
  double* psums64 = totals64.data_ptr<double>();
  auto* pcounts64 = reinterpret_cast<unsigned long long*>(psums64 + K * D);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int private_blocks = sm_count();
  const size_t shared_bytes = private_shared_bytes(N, K, D, private_blocks);
  KVQ_DISPATCH_FLOAT_INPUTS(x.scalar_type(), "kohonen_vq_cluster_stats_cuda", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "kohonen_vq_cluster_stats_cuda_index", [&] {
      if (shared_bytes > 0) {
        const auto kernel = accumulate_private_kernel<scalar_t, index_t>;
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared_bytes)));
        kernel<<<private_blocks, kPrivateThreads, shared_bytes, stream>>>(
            px, N, D, x.stride(0), x.stride(1), indices.const_data_ptr<index_t>(), indices.stride(0), K, psums64,
            pcounts64);
      } else {
        accumulate_kernel<scalar_t, index_t><<<grid_stride_blocks(N * kWarp), kBlock, 0, stream>>>(
            px, N, D, x.stride(0), x.stride(1), indices.const_data_ptr<index_t>(), indices.stride(0), K, psums64,
            pcounts64);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  at::Tensor sums = at::empty({K, D}, x.options().dtype(at::kFloat));
  at::Tensor counts = at::empty({K}, x.options().dtype(at::kFloat));
  round_kernel<<<grid_stride_blocks(K * D), kBlock, 0, stream>>>(psums64, pcounts64, K, D, sums.data_ptr<float>(),
                                                                 counts.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {sums, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CUDA, m) { m.impl("cluster_stats", &cluster_stats_cuda); }

}  // namespace kvq::cuda
