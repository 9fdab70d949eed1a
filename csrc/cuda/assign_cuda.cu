// CUDA kernel of kohonen_vq::assign: a fused, tiled fp32 "distance + argmin" that never forms N x K.
// Each block takes 128 rows x a range of 128-code tiles; each thread accumulates an 8 x 8 micro-tile of
// dot products x.w in registers (in ascending d, with FMAs, exactly as the CPU kernels do), turns it into
// ||w||^2 - 2 x.w and folds it into a running minimum per row. Blocks that share rows (K split across
// blockIdx.y, for small N) merge through a 64-bit atomicMin on (order-preserving distance bits, index),
// which yields the smallest distance and, on ties, the lowest index. A last kernel decodes the key and
// recomputes the winner's distance exactly as sum((x - w)^2). Extra memory: fp32 codebook copy, norms, keys.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "checks.h"
#include "cuda/assign_exact.cuh"
#include "cuda/assign_tf32.cuh"
#include "cuda/cuda_utils.cuh"

namespace kvq::cuda {
namespace {

static_assert(kMaxAssignRows == int64_t{kTileRows} * std::numeric_limits<int32_t>::max(),
              "check_assign_args bounds N by the row tiles of one launch grid");

// Blocks of the row-chain kernels: one thread a row.
unsigned chain_blocks(int64_t rows) { return static_cast<unsigned>((rows + kBlock - 1) / kBlock); }

// Code tiles per block: split K across blocks only when the row tiles alone cannot fill the device.
int64_t tiles_per_split(int64_t row_tiles, int64_t code_tiles) {
  const int64_t want_blocks = int64_t{2} * sm_count();
  const int64_t splits = std::clamp<int64_t>((want_blocks + row_tiles - 1) / row_tiles, 1, code_tiles);
  return (code_tiles + splits - 1) / splits;
}

// precision "tf32" needs mma.sync with TF32 operands (compute capability 8.0, Ampere, and later).
void check_tf32_device(const at::Tensor& x) {
  const int device = x.get_device();
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  TORCH_CHECK(major >= 8, "kohonen_vq.assign: precision='tf32' needs a GPU of compute capability >= 8.0, got ",
              major, ".", minor, " on cuda:", device, "; use precision='exact'");
}

std::tuple<at::Tensor, at::Tensor> assign_cuda(const at::Tensor& x, const at::Tensor& codebook,
                                               c10::string_view precision) {
  const AssignPrecision mode = check_assign_args(x, codebook, std::string(precision));
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  const c10::cuda::CUDAGuard guard(x.device());
  if (mode == AssignPrecision::TF32) check_tf32_device(x);
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor sqdist = at::empty({N}, x.options().dtype(at::kFloat));
  if (N == 0) return {indices, sqdist};

  const at::Tensor w = codebook.to(at::kFloat).contiguous();
  const at::Tensor norms = at::empty({K}, w.options());
  const at::Tensor keys = at::empty({N}, x.options().dtype(at::kLong));  // set by norms_kernel
  auto* pkeys = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const unsigned norms_blocks = std::max<unsigned>(chain_blocks(K), grid_stride_blocks(N));
  norms_kernel<<<norms_blocks, kBlock, 0, stream>>>(w.const_data_ptr<float>(), K, D, norms.data_ptr<float>(), pkeys,
                                                    N);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Both searches use 128-row x 128-code block tiles.
  static_assert(tf32::kRows == kTileRows && tf32::kCodes == kTileCodes && tf32::kThreads == kThreads);
  const int64_t row_tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t code_tiles = (K + kTileCodes - 1) / kTileCodes;
  const int64_t per_split = tiles_per_split(row_tiles, code_tiles);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>((code_tiles + per_split - 1) / per_split));
  KVQ_DISPATCH_FLOAT_INPUTS(x.scalar_type(), "kohonen_vq_assign_cuda", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    if (mode == AssignPrecision::TF32) {
      const auto search = D <= tf32::kMaxResidentDims ? tf32::argmin_kernel<scalar_t, true>
                                                      : tf32::argmin_kernel<scalar_t, false>;
      const size_t shared = tf32::shared_bytes(D);  // above the default 48 KiB for D > 32
      C10_CUDA_CHECK(
          cudaFuncSetAttribute(search, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
      search<<<grid, kThreads, shared, stream>>>(px, N, D, x.stride(0), x.stride(1), w.const_data_ptr<float>(),
                                                 norms.const_data_ptr<float>(), K, per_split, pkeys);
    } else {
      argmin_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(px, N, D, x.stride(0), x.stride(1),
                                                             w.const_data_ptr<float>(), norms.const_data_ptr<float>(),
                                                             K, per_split, pkeys);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<scalar_t><<<chain_blocks(N), kBlock, 0, stream>>>(
        px, N, D, x.stride(0), x.stride(1), w.const_data_ptr<float>(), pkeys, indices.data_ptr<int64_t>(),
        sqdist.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {indices, sqdist};
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CUDA, m) { m.impl("assign", &assign_cuda); }

}  // namespace kvq::cuda
