// CUDA kernel of kohonen_vq::lookup: out[i, d] = codebook[indices[i], d], one thread an element, so the
// writes are coalesced and the codebook rows come from L2. Rows whose index lies outside [0, K) come out
// as NaN instead of reading outside the codebook, so the (synchronising) range check may be turned off.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/cuda_utils.cuh"
#include "cuda/lookup_kernel.cuh"

namespace kvq::cuda {
namespace {

at::Tensor lookup_cuda(const at::Tensor& codebook, const at::Tensor& indices, bool check_range) {
  check_lookup_args(codebook, indices);
  const int64_t N = indices.size(0), K = codebook.size(0), D = codebook.size(1);
  const c10::cuda::CUDAGuard guard(codebook.device());
  at::Tensor out = at::empty({N, D}, codebook.options());
  if (out.numel() == 0) return out;
  if (check_range) check_indices_in_range(indices, K, "lookup");  // reads min and max back: a device sync
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  KVQ_DISPATCH_FLOAT_INPUTS(codebook.scalar_type(), "kohonen_vq_lookup_cuda", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "kohonen_vq_lookup_cuda_index", [&] {
      lookup_kernel<scalar_t, index_t><<<grid_stride_blocks(N * D), kBlock, 0, stream>>>(
          codebook.const_data_ptr<scalar_t>(), K, D, codebook.stride(0), codebook.stride(1),
          indices.const_data_ptr<index_t>(), indices.stride(0), N, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CUDA, m) { m.impl("lookup", &lookup_cuda); }

}  // namespace kvq::cuda
