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

// Float32 Gaussian weight exp(-d2 / sigma(t)^2) at squared grid distance d2. Distance 0 weighs exactly 1
// (Eq. 16), also when the width has shrunk to 0 and 0 * inf would be NaN.
KVQ_HOST_DEVICE float gaussian_weight(int64_t d2, double inv_width2) {
  return d2 == 0 ? 1.f : static_cast<float>(std::exp(-static_cast<double>(d2) * inv_width2));
}

// Float32 exponential weight exp(-||d|| rate) at squared grid distance d2; distance 0 weighs exactly 1.
KVQ_HOST_DEVICE float exponential_weight(int64_t d2, float rate) {
  return d2 == 0 ? 1.f : std::exp(-std::sqrt(static_cast<float>(d2)) * rate);
}

// Gaussian without update_empty writes a code only if the squared grid distance to the nearest code with
// members has a non-zero float32 weight: the per-axis taps can all be non-zero where their product rounds
// to 0. That distance is a squared Euclidean distance transform, separable per axis; kFarDist2 marks no
// code with members in reach.
constexpr int64_t kFarDist2 = int64_t{1} << 60;

// One axis of the transform at code k: min over |j - i| <= radius of dist2[k + (j - i) stride] + (j - i)^2.
KVQ_HOST_DEVICE int64_t nearest_dist2_along_axis(const int64_t* dist2, int64_t k, int64_t stride, int64_t size,
                                                 int64_t radius) {
  const int64_t i = (k / stride) % size;
  const int64_t j0 = i > radius ? i - radius : 0, j1 = i + radius < size - 1 ? i + radius : size - 1;
  int64_t best = kFarDist2;
  for (int64_t j = j0; j <= j1; ++j) {
    const int64_t from = dist2[k + (j - i) * stride];
    if (from < kFarDist2 && from + (j - i) * (j - i) < best) best = from + (j - i) * (j - i);
  }
  return best;
}

KVQ_HOST_DEVICE bool gaussian_writes(int64_t nearest_dist2, double inv_width2) {
  return nearest_dist2 < kFarDist2 && gaussian_weight(nearest_dist2, inv_width2) > 0.f;
}

// Largest grid distance with a non-zero float32 exponential weight, capped by the axis length.
KVQ_HOST_DEVICE int64_t exponential_radius(double rate, int64_t axis_size) {
  const double r = std::floor(kFloatUnderflowExponent / rate);
  return r >= static_cast<double>(axis_size - 1) ? axis_size - 1 : static_cast<int64_t>(r);
}

}  // namespace kvq
