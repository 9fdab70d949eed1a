// CUDA kernel of kohonen_vq::som_update_ (METHOD.md §2-3): the CPU path's algorithm, without any host
// synchronisation. The step counter is read inside the kernels; a device flag `bad` records whether the
// batch is finite, and every kernel after that check returns at once when it is set, so a non-finite batch
// only increments `skipped`. The batch statistics [S | c] are packed into a K x (D + 1) work buffer, mixed
// through A^(t) as stencils on the grid (same taps, radii and summation order as the CPU path), then
// folded into the EMAs in place.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <utility>

#include "checks.h"
#include "cuda/cuda_utils.cuh"
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

GridShape grid_shape(c10::IntArrayRef grid) {
  GridShape g{};
  for (int64_t s : grid) {
    if (s == 1) continue;
    TORCH_CHECK(g.dims < kMaxAxes, "kohonen_vq.som_update_: the CUDA kernel supports grids with at most ", kMaxAxes,
                " axes of size > 1, got grid ", grid);
    g.size[g.dims++] = s;
  }
  return g;
}

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

// Hard / Gaussian: one axis pass per grid axis, alternating between two scratch buffers. Returns the
// buffer holding the result (work itself when the grid has no axis of size > 1).
at::Tensor separable(const GridShape& g, const at::Tensor& work, const at::Tensor& taps, const at::Tensor& radius,
                     const int* bad, cudaStream_t stream) {
  const int64_t total = work.numel();
  const at::Tensor scratch = at::empty({2, work.size(0), work.size(1)}, work.options());
  at::Tensor src = work;
  int64_t inner = work.size(1);
  for (int a = 0; a < g.dims; ++a) {
    at::Tensor dst = scratch[a % 2];
    axis_pass_kernel<<<grid_stride_blocks(total), kBlock, 0, stream>>>(
        src.const_data_ptr<float>(), dst.data_ptr<float>(), total, inner, g.size[a], taps.const_data_ptr<float>(),
        radius.const_data_ptr<int64_t>(), bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    src = dst;
    inner *= g.size[a];
  }
  return src;
}

// [S' | c'] = A^(t) applied to work = [S | c]; may return work itself, or overwrite it.
at::Tensor mix_statistics(Neighbourhood nb, const GridShape& g, const at::Tensor& work, double shrink, double sigma,
                          double base, const int64_t* step, const int* bad, cudaStream_t stream) {
  if (nb == Neighbourhood::None) return work;
  if (nb == Neighbourhood::Exponential) {
    at::Tensor out = at::empty_like(work);
    exponential_kernel<<<grid_stride_blocks(work.numel()), kBlock, 0, stream>>>(
        work.const_data_ptr<float>(), out.data_ptr<float>(), work.size(0), work.size(1), g, base, shrink, step, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
  const bool gaussian = nb == Neighbourhood::Gaussian;
  int64_t max_axis = 2;  // the hard taps {1, 1} need two slots
  for (int a = 0; a < g.dims; ++a) max_axis = std::max(max_axis, g.size[a]);
  const at::Tensor taps = at::empty({max_axis}, work.options());
  const at::Tensor radius = at::empty({1}, work.options().dtype(at::kLong));
  taps_kernel<<<grid_stride_blocks(max_axis), kBlock, 0, stream>>>(
      gaussian, g, sigma, shrink, step, taps.data_ptr<float>(), radius.data_ptr<int64_t>(), bad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor mixed = separable(g, work, taps, radius, bad, stream);
  if (!gaussian) {
    hard_mix_kernel<<<grid_stride_blocks(work.numel()), kBlock, 0, stream>>>(
        mixed.data_ptr<float>(), work.const_data_ptr<float>(), work.numel(), shrink, step, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return mixed;
}

// See drop_unwritten_kernel; counts are the batch counts c, mixed holds [S' | c'].
void drop_unwritten_codes(const GridShape& g, const at::Tensor& counts, const at::Tensor& mixed, double sigma,
                          double shrink, const int64_t* step, const int* bad, cudaStream_t stream) {
  const int64_t K = mixed.size(0);
  const at::Tensor dist2 = at::empty({2, K}, mixed.options().dtype(at::kLong));
  int64_t* src = dist2[0].data_ptr<int64_t>();
  int64_t* dst = dist2[1].data_ptr<int64_t>();
  nearest_init_kernel<<<grid_stride_blocks(K), kBlock, 0, stream>>>(counts.const_data_ptr<float>(), K, src, bad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  int64_t stride = 1;
  for (int a = 0; a < g.dims; ++a) {
    nearest_axis_kernel<<<grid_stride_blocks(K), kBlock, 0, stream>>>(src, dst, K, stride, g.size[a], sigma, shrink,
                                                                       step, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(src, dst);
    stride *= g.size[a];
  }
  drop_unwritten_kernel<<<grid_stride_blocks(K), kBlock, 0, stream>>>(src, K, mixed.data_ptr<float>(), mixed.size(1),
                                                                      sigma, shrink, step, bad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The EMA update of METHOD.md §2 from the mixed statistics, in place.
void update_emas(at::Tensor& codebook, at::Tensor& ema_sums, at::Tensor& ema_counts, const at::Tensor& mixed,
                 double decay, double eps, bool update_empty, const int* bad, cudaStream_t stream) {
  const int64_t K = codebook.size(0), D = codebook.size(1), W = D + 1;
  const float keep = static_cast<float>(decay), take = static_cast<float>(1.0 - decay);
  float* n = ema_counts.data_ptr<float>();
  const float* pmixed = mixed.const_data_ptr<float>();
  const auto counts = [&](bool only_written) {
    ema_counts_kernel<<<grid_stride_blocks(K), kBlock, 0, stream>>>(n, pmixed, K, W, keep, take, only_written, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  const auto rows = [&] {
    ema_rows_kernel<<<grid_stride_blocks(K * D), kBlock, 0, stream>>>(
        codebook.data_ptr<float>(), ema_sums.data_ptr<float>(), n, pmixed, K, D, keep, take, update_empty, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (update_empty) {
    counts(false);
    smooth_counts_kernel<<<1, kReduceThreads, 0, stream>>>(n, K, eps, bad);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    rows();
  } else {
    rows();  // reads the old N
    counts(true);
  }
}

void som_update_cuda(at::Tensor& codebook, at::Tensor& ema_sums, at::Tensor& ema_counts, at::Tensor& step,
                     at::Tensor& skipped, const at::Tensor& sums, const at::Tensor& counts, c10::IntArrayRef grid,
                     c10::string_view neighbourhood, double shrink, double sigma, double base, double decay,
                     double eps, bool update_empty) {
  const Neighbourhood nb = check_som_update_args(codebook, ema_sums, ema_counts, step, skipped, sums, counts, grid,
                                                 std::string(neighbourhood), shrink, sigma, base, decay, eps);
  const GridShape g = grid_shape(grid);
  const int64_t K = codebook.size(0), D = codebook.size(1);
  const c10::cuda::CUDAGuard guard(codebook.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor S = sums.contiguous(), C = counts.contiguous();
  const at::Tensor bad_flag = at::zeros({1}, codebook.options().dtype(at::kInt));
  const int* bad = bad_flag.const_data_ptr<int>();
  const int64_t* t = step.const_data_ptr<int64_t>();

  check_finite_kernel<<<grid_stride_blocks(K * (D + 1)), kBlock, 0, stream>>>(
      S.const_data_ptr<float>(), K * D, C.const_data_ptr<float>(), K, bad_flag.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor work = at::empty({K, D + 1}, codebook.options());
  pack_kernel<<<grid_stride_blocks(work.numel()), kBlock, 0, stream>>>(S.const_data_ptr<float>(),
                                                                       C.const_data_ptr<float>(), K, D,
                                                                       work.data_ptr<float>(), bad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor mixed = mix_statistics(nb, g, work, shrink, sigma, base, t, bad, stream);
  if (nb != Neighbourhood::None) {  // else mixed is the batch statistics, already checked
    // Finite sums can still overflow float32 when neighbours are added up: such a batch is skipped too.
    check_finite_kernel<<<grid_stride_blocks(mixed.numel()), kBlock, 0, stream>>>(
        mixed.const_data_ptr<float>(), mixed.numel(), nullptr, 0, bad_flag.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (nb == Neighbourhood::Gaussian && !update_empty) drop_unwritten_codes(g, C, mixed, sigma, shrink, t, bad, stream);
  update_emas(codebook, ema_sums, ema_counts, mixed, decay, eps, update_empty, bad, stream);
  advance_counters_kernel<<<1, 1, 0, stream>>>(step.data_ptr<int64_t>(), skipped.data_ptr<int64_t>(), bad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CUDA, m) { m.impl("som_update_", &som_update_cuda); }

}  // namespace kvq::cuda
