// Kernels of the CUDA som_update_ (launched by som_update_cuda.cu, which describes the algorithm).
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/device_runtime.cuh"
#include "neighbourhood.h"

namespace kvq::cuda {
namespace {

constexpr int kMaxAxes = 8;
constexpr int kReduceThreads = 1024;  // the single block of the deterministic count total

// The grid axes of size > 1, axis 0 fastest. Size-1 axes change neither coordinates nor distances.
struct GridShape {
  int dims;
  int64_t size[kMaxAxes];
};

// a * x + b * y with both products rounded, like the CPU path (nvcc would otherwise contract it to an FMA).
__device__ __forceinline__ float blend(float a, float x, float b, float y) {
  return __fadd_rn(__fmul_rn(a, x), __fmul_rn(b, y));
}

// Sets *bad when an element of sums or counts is not finite.
__global__ void check_finite_kernel(const float* __restrict__ sums, int64_t n_sums, const float* __restrict__ counts,
                                    int64_t n_counts, int* __restrict__ bad) {
  bool finite = true;
  for (int64_t i = thread_index(); i < n_sums + n_counts && finite; i += thread_count()) {
    finite = isfinite(i < n_sums ? sums[i] : counts[i - n_sums]);
  }
  if (__syncthreads_or(!finite) && threadIdx.x == 0) *bad = 1;
}

// work[k] = [S_k | c_k].
__global__ void pack_kernel(const float* __restrict__ sums, const float* __restrict__ counts, int64_t K, int64_t D,
                            float* __restrict__ work, const int* __restrict__ bad) {
  if (*bad) return;
  const int64_t W = D + 1;
  for (int64_t e = thread_index(); e < K * W; e += thread_count()) {
    const int64_t k = e / W, l = e % W;
    work[e] = l < D ? sums[k * D + l] : counts[k];
  }
}

// Per-axis taps of the separable neighbourhoods and their radius, as the CPU path builds them: {1, 1} for
// the hard box, exp(-d^2 / sigma(t)^2) up to the float32 underflow radius for the Gaussian.
__global__ void taps_kernel(bool gaussian, GridShape g, double sigma, double shrink, const int64_t* __restrict__ step,
                            float* __restrict__ taps, int64_t* __restrict__ radius, const int* __restrict__ bad) {
  if (*bad) return;
  const double inv2 = gaussian_inv_width2(sigma, shrink, *step);
  int64_t r = 1;
  if (gaussian) {
    r = 0;
    for (int a = 0; a < g.dims; ++a) r = max(r, gaussian_radius(inv2, g.size[a]));
  }
  for (int64_t d = thread_index(); d <= r; d += thread_count()) {
    taps[d] = gaussian ? gaussian_weight(d * d, inv2) : 1.f;
  }
  if (thread_index() == 0) *radius = r;
}

// One axis of a separable stencil, summed in the CPU path's order:
// out[o, i, l] = sum over j in [i - r, i + r] ∩ [0, size) of taps[|i - j|] in[o, j, l], for l < inner.
__global__ void axis_pass_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t total, int64_t inner,
                                 int64_t size, const float* __restrict__ taps, const int64_t* __restrict__ radius,
                                 const int* __restrict__ bad) {
  if (*bad) return;
  const int64_t r = *radius;
  for (int64_t e = thread_index(); e < total; e += thread_count()) {
    const int64_t l = e % inner, i = (e / inner) % size, o = e / (inner * size);
    const float* src = in + o * size * inner + l;
    const int64_t j0 = max(int64_t{0}, i - r), j1 = min(size - 1, i + r);
    float acc = 0.f;
    for (int64_t j = j0; j <= j1; ++j) acc = fmaf(taps[i > j ? i - j : j - i], src[j * inner], acc);
    out[e] = acc;
  }
}

// Hard neighbourhood: A = (1 - a) I + a (3-tap box along every axis), a = 1 / (1 + shrink t); box may be
// original itself (a grid without axes of size > 1).
__global__ void hard_mix_kernel(float* box, const float* original, int64_t n, double shrink,
                                const int64_t* __restrict__ step, const int* __restrict__ bad) {
  if (*bad) return;
  const float a = static_cast<float>(hard_neighbour_weight(shrink, *step));
  for (int64_t e = thread_index(); e < n; e += thread_count()) box[e] = blend(a, box[e], 1.f - a, original[e]);
}

// Exponential neighbourhood exp(-||d|| rate): not separable, so a direct sum over the box of radius r
// around each code, in the CPU path's order (odometer, axis 0 fastest), skipping zero weights.
__global__ void exponential_kernel(const float* __restrict__ in, float* __restrict__ out, int64_t K, int64_t W,
                                   GridShape g, double base, double shrink, const int64_t* __restrict__ step,
                                   const int* __restrict__ bad) {
  if (*bad) return;
  const double rate = exponential_rate(base, shrink, *step);
  int64_t r = 0;
  for (int a = 0; a < g.dims; ++a) r = max(r, exponential_radius(rate, g.size[a]));
  const float rate_f = static_cast<float>(rate);
  for (int64_t e = thread_index(); e < K * W; e += thread_count()) {
    const int64_t k = e / W, l = e % W;
    int64_t c[kMaxAxes], lo[kMaxAxes], hi[kMaxAxes], j[kMaxAxes];
    int64_t rest = k;
    for (int a = 0; a < g.dims; ++a) {
      c[a] = rest % g.size[a];
      rest /= g.size[a];
      lo[a] = max(int64_t{0}, c[a] - r);
      hi[a] = min(g.size[a] - 1, c[a] + r);
      j[a] = lo[a];
    }
    float acc = 0.f;
    while (true) {
      int64_t d2 = 0, code = 0, mult = 1;
      for (int a = 0; a < g.dims; ++a) {
        d2 += (j[a] - c[a]) * (j[a] - c[a]);
        code += j[a] * mult;
        mult *= g.size[a];
      }
      const float wgt = exponential_weight(d2, rate_f);
      if (wgt > 0.f) acc = fmaf(wgt, in[code * W + l], acc);
      int a = 0;
      while (a < g.dims && j[a] == hi[a]) j[a] = lo[a], ++a;
      if (a == g.dims) break;
      ++j[a];
    }
    out[e] = acc;
  }
}

// Gaussian with update_empty = False: which codes are written, as the CPU path's gaussian_written decides
// (see kFarDist2 in neighbourhood.h).
__global__ void nearest_init_kernel(const float* __restrict__ counts, int64_t K, int64_t* __restrict__ dist2,
                                    const int* __restrict__ bad) {
  if (*bad) return;
  for (int64_t k = thread_index(); k < K; k += thread_count()) dist2[k] = counts[k] > 0.f ? 0 : kFarDist2;
}

__global__ void nearest_axis_kernel(const int64_t* __restrict__ in, int64_t* __restrict__ out, int64_t K,
                                    int64_t stride, int64_t size, double sigma, double shrink,
                                    const int64_t* __restrict__ step, const int* __restrict__ bad) {
  if (*bad) return;
  const int64_t r = gaussian_radius(gaussian_inv_width2(sigma, shrink, *step), size);
  for (int64_t k = thread_index(); k < K; k += thread_count()) out[k] = nearest_dist2_along_axis(in, k, stride, size, r);
}

// Sets c' = 0 for the codes that are not written, so that the EMA kernels skip them.
__global__ void drop_unwritten_kernel(const int64_t* __restrict__ dist2, int64_t K, float* __restrict__ mixed,
                                      int64_t W, double sigma, double shrink, const int64_t* __restrict__ step,
                                      const int* __restrict__ bad) {
  if (*bad) return;
  const double inv2 = gaussian_inv_width2(sigma, shrink, *step);
  for (int64_t k = thread_index(); k < K; k += thread_count()) {
    if (!gaussian_writes(dist2[k], inv2)) mixed[k * W + W - 1] = 0.f;
  }
}

// N = decay N + (1 - decay) c'; with only_written, codes with c' == 0 keep N (update_empty = False).
__global__ void ema_counts_kernel(float* __restrict__ n, const float* __restrict__ mixed, int64_t K, int64_t W,
                                  float keep, float take, bool only_written, const int* __restrict__ bad) {
  if (*bad) return;
  for (int64_t k = thread_index(); k < K; k += thread_count()) {
    const float c = mixed[k * W + W - 1];
    if (!only_written || c != 0.f) n[k] = blend(keep, n[k], take, c);
  }
}

// Laplace smoothing stored back into N: N = (N + eps) total / (total + K eps). A single block sums the
// float64 total in a fixed order, so the result is deterministic.
__global__ void __launch_bounds__(kReduceThreads)
    smooth_counts_kernel(float* __restrict__ n, int64_t K, double eps, const int* __restrict__ bad) {
  __shared__ double partial[kReduceThreads];
  if (*bad) return;
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < K; k += kReduceThreads) s += n[k];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int h = kReduceThreads / 2; h > 0; h /= 2) {
    if (threadIdx.x < h) partial[threadIdx.x] += partial[threadIdx.x + h];
    __syncthreads();
  }
  const double total = partial[0];
  const double scale = total > 0.0 ? total / __dadd_rn(total, __dmul_rn(static_cast<double>(K), eps)) : 0.0;
  for (int64_t k = threadIdx.x; k < K; k += kReduceThreads) {
    n[k] = static_cast<float>((static_cast<double>(n[k]) + eps) * scale);
  }
}

// m = decay m + (1 - decay) S', then w = m / N. update_empty: every code, N already smoothed, w where
// N > 0. Otherwise only codes with c' != 0, with their new N = decay N + (1 - decay) c' computed here from
// the old N (ema_counts_kernel stores it afterwards), w where that is != 0.
__global__ void ema_rows_kernel(float* __restrict__ w, float* __restrict__ m, const float* __restrict__ n,
                                const float* __restrict__ mixed, int64_t K, int64_t D, float keep, float take,
                                bool update_empty, const int* __restrict__ bad) {
  if (*bad) return;
  const int64_t W = D + 1;
  for (int64_t e = thread_index(); e < K * D; e += thread_count()) {
    const int64_t k = e / D, d = e % D;
    const float c = mixed[k * W + D];
    if (!update_empty && c == 0.f) continue;
    const float nk = update_empty ? n[k] : blend(keep, n[k], take, c);
    const float md = blend(keep, m[e], take, mixed[k * W + d]);
    m[e] = md;
    if (update_empty ? nk > 0.f : nk != 0.f) w[e] = md / nk;
  }
}

__global__ void advance_counters_kernel(int64_t* __restrict__ step, int64_t* __restrict__ skipped,
                                        const int* __restrict__ bad) {
  if (*bad) {
    ++*skipped;
  } else {
    ++*step;
  }
}

}  // namespace
}  // namespace kvq::cuda
