// Host helpers of the CUDA launchers: launch sizes for grid-stride loops, and the input dtype dispatch.
// Only c10/cuda headers: ATen/cuda/CUDAContext.h also needs the cuBLAS/cuSPARSE headers, which a bare
// CUDA toolkit next to a pip-installed torch may lack. (at::cuda::getCurrentCUDAStream is the c10 one.)
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "cuda/device_runtime.cuh"
#include "cuda/float_dispatch.h"

namespace kvq::cuda {

// Streaming multiprocessors of the current device.
inline int sm_count() {
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return n;
}

// Blocks for a grid-stride loop over n items: enough to fill every SM, at least one.
inline int grid_stride_blocks(int64_t n) {
  const int64_t fill = int64_t{8} * sm_count();
  return static_cast<int>(std::clamp<int64_t>((n + kBlock - 1) / kBlock, 1, fill));
}

}  // namespace kvq::cuda
