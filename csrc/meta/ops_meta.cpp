// Meta kernels: output shapes and the same argument checks as the real kernels, without data.
// FakeTensor (torch.compile) and the C++ meta device use them.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "checks.h"

namespace kvq::meta {
namespace {

std::tuple<at::Tensor, at::Tensor> assign_meta(const at::Tensor& x, const at::Tensor& codebook,
                                               c10::string_view precision) {
  check_assign_args(x, codebook, std::string(precision));
  return {at::empty({x.size(0)}, x.options().dtype(at::kLong)),
          at::empty({x.size(0)}, x.options().dtype(at::kFloat))};
}

std::tuple<at::Tensor, at::Tensor> cluster_stats_meta(const at::Tensor& x, const at::Tensor& indices,
                                                      int64_t num_codes, bool /*check_range*/) {
  check_cluster_stats_args(x, indices, num_codes);
  return {at::empty({num_codes, x.size(1)}, x.options().dtype(at::kFloat)),
          at::empty({num_codes}, x.options().dtype(at::kFloat))};
}

at::Tensor lookup_meta(const at::Tensor& codebook, const at::Tensor& indices, bool /*check_range*/) {
  check_lookup_args(codebook, indices);
  return at::empty({indices.size(0), codebook.size(1)}, codebook.options());
}

void som_update_meta(at::Tensor& codebook, at::Tensor& ema_sums, at::Tensor& ema_counts, at::Tensor& step,
                     at::Tensor& skipped, const at::Tensor& sums, const at::Tensor& counts,
                     c10::IntArrayRef grid, c10::string_view neighbourhood, double shrink, double sigma,
                     double base, double decay, double eps, bool /*update_empty*/) {
  check_som_update_args(codebook, ema_sums, ema_counts, step, skipped, sums, counts, grid,
                        std::string(neighbourhood), shrink, sigma, base, decay, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, Meta, m) {
  m.impl("assign", &assign_meta);
  m.impl("cluster_stats", &cluster_stats_meta);
  m.impl("lookup", &lookup_meta);
  m.impl("som_update_", &som_update_meta);
}

}  // namespace kvq::meta
