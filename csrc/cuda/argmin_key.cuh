// The 64-bit merge key of the CUDA assign kernels: blocks (and warps) that share rows combine their
// running minima with one atomicMin on it.
#pragma once
#include "cuda/device_runtime.cuh"

namespace kvq::cuda {

// Order-preserving map of a float to 32 bits (as unsigned), in the high half; the index in the low half.
// Adding +0 turns -0 into +0 so that equal distances tie and the lower index wins.
__device__ __forceinline__ unsigned long long argmin_key(float dist, int index) {
  unsigned int bits = __float_as_uint(dist + 0.f);
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(bits) << 32) | static_cast<unsigned int>(index);
}

}  // namespace kvq::cuda
