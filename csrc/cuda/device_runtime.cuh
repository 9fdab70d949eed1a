// What the kernel headers need from the CUDA runtime, and nothing from ATen, so that the kernels also compile
// as plain C++ for tests/cpp/cuda_sim (KVQ_CUDA_SIM), which runs them on the CPU to check their logic.
#pragma once
#ifdef KVQ_CUDA_SIM
#include "cuda_sim.h"
// Dynamic shared memory of the current simulated block.
#define KVQ_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::kvq_sim::dynamic_shared())
#else
#include <cuda_runtime.h>
#define KVQ_DYNAMIC_SHARED(type, name) \
  extern __shared__ __align__(16) unsigned char kvq_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(kvq_dynamic_shared_)
#endif

#include <cstdint>

namespace kvq::cuda {

constexpr int kBlock = 256;  // threads per block of the element-wise kernels

__device__ __forceinline__ int64_t thread_index() { return blockIdx.x * int64_t{blockDim.x} + threadIdx.x; }
__device__ __forceinline__ int64_t thread_count() { return int64_t{gridDim.x} * blockDim.x; }

}  // namespace kvq::cuda
