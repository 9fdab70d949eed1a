// Neighbourhood coefficients A^(t) of METHOD.md §3, shared by the CPU and CUDA update kernels.
// All neighbourhoods are functions of grid offsets, so they are applied as stencils, never as K×K matrices.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KVQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KVQ_HOST_DEVICE inline
#endif

namespace kvq {

// exp(-x) rounds to zero in float32 for x above ~103.97, so weights past this exponent are exactly zero
// in a float32 dense matrix too; stencils stop there and stay exact.
constexpr double kFloatUnderflowExponent = 104.0;

// Eq. 15: off-diagonal weight of the hard neighbourhood, 1 / (1 + tau t).
KVQ_HOST_DEVICE double hard_neighbour_weight(double shrink, int64_t step) {
  return 1.0 / (1.0 + shrink * static_cast<double>(step));
}

// Eq. 16: 1 / sigma(t)^2 with sigma(t)^2 = sigma0^2 / (1 + tau t).
KVQ_HOST_DEVICE double gaussian_inv_width2(double sigma, double shrink, int64_t step) {
  return (1.0 + shrink * static_cast<double>(step)) / (sigma * sigma);
}

// Authors' code kernel: exp(-||d|| (1 + tau t) / base); this is the per-unit-distance rate.
KVQ_HOST_DEVICE double exponential_rate(double base, double shrink, int64_t step) {
  return (1.0 + shrink * static_cast<double>(step)) / base;
}

// Largest per-axis offset with a non-zero float32 Gaussian factor, capped by the axis length.
KVQ_HOST_DEVICE int64_t gaussian_radius(double inv_width2, int64_t axis_size) {
  const double r = std::floor(std::sqrt(kFloatUnderflowExponent / inv_width2));
  return r >= static_cast<double>(axis_size - 1) ? axis_size - 1 : static_cast<int64_t>(r);
}

// Largest grid distance with a non-zero float32 exponential weight, capped by the axis length.
KVQ_HOST_DEVICE int64_t exponential_radius(double rate, int64_t axis_size) {
  const double r = std::floor(kFloatUnderflowExponent / rate);
  return r >= static_cast<double>(axis_size - 1) ? axis_size - 1 : static_cast<int64_t>(r);
}

}  // namespace kvq
