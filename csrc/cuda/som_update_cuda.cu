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
#include "cuda/som_update_kernels.cuh"

namespace kvq::cuda {
namespace {

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
