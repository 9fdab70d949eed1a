// CPU kernel of kohonen_vq::cluster_stats. Rows are bucketed by code with a counting sort, then each
// thread sums whole codes in ascending row order with float64 accumulators: the result is bit-identical
// for any thread count, and extra memory is O(N + K).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"

namespace kvq::cpu {
namespace {

template <typename index_t>
std::vector<int64_t> bucket_offsets(const index_t* idx, int64_t stride, int64_t N, int64_t K) {
  std::vector<int64_t> offsets(static_cast<size_t>(K + 1), 0);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t k = static_cast<int64_t>(idx[i * stride]);
    TORCH_CHECK(k >= 0 && k < K, "kohonen_vq.cluster_stats: argument 'indices' must lie in [0, ", K,
                "), got ", k, " at position ", i);
    ++offsets[k + 1];
  }
  for (int64_t k = 0; k < K; ++k) offsets[k + 1] += offsets[k];
  return offsets;
}

// The range check is part of the counting sort and costs nothing here, so it runs whatever check_range says.
std::tuple<at::Tensor, at::Tensor> cluster_stats_cpu(const at::Tensor& x, const at::Tensor& indices,
                                                     int64_t num_codes, bool /*check_range*/) {
  check_cluster_stats_args(x, indices, num_codes);
  const int64_t N = x.size(0), D = x.size(1), K = num_codes;
  at::Tensor sums = at::zeros({K, D}, x.options().dtype(at::kFloat));
  at::Tensor counts = at::zeros({K}, x.options().dtype(at::kFloat));
  if (N == 0) return {sums, counts};

  // Counting sort of row numbers by code (stable: rows stay in ascending order within a code).
  std::vector<int64_t> offsets, order(static_cast<size_t>(N));
  AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "kohonen_vq_cluster_stats_sort", [&] {
    const index_t* idx = indices.const_data_ptr<index_t>();
    const int64_t stride = indices.stride(0);
    offsets = bucket_offsets(idx, stride, N, K);
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < N; ++i) order[fill[static_cast<int64_t>(idx[i * stride])]++] = i;
  });

  // Split the codes into contiguous groups with about equal member counts, one group per task.
  const int64_t tasks = std::max<int64_t>(1, std::min<int64_t>(K, at::get_num_threads() * 4));
  std::vector<int64_t> first_code(static_cast<size_t>(tasks + 1), K);
  first_code[0] = 0;
  for (int64_t t = 1, k = 0; t < tasks; ++t) {
    while (k < K && offsets[k] < t * N / tasks) ++k;
    first_code[t] = k;
  }

  float* ps = sums.data_ptr<float>();
  float* pc = counts.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "kohonen_vq_cluster_stats_cpu", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const int64_t s0 = x.stride(0), s1 = x.stride(1);
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<double> acc(static_cast<size_t>(D));
      for (int64_t k = first_code[t0]; k < first_code[t1]; ++k) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = offsets[k]; j < offsets[k + 1]; ++j) {
          if (j + 4 < offsets[k + 1]) __builtin_prefetch(px + order[j + 4] * s0);
          const scalar_t* row = px + order[j] * s0;
          for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<double>(static_cast<float>(row[d * s1]));
        }
        for (int64_t d = 0; d < D; ++d) ps[k * D + d] = static_cast<float>(acc[d]);
        pc[k] = static_cast<float>(offsets[k + 1] - offsets[k]);
      }
    });
  });
  return {sums, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CPU, m) { m.impl("cluster_stats", &cluster_stats_cpu); }

}  // namespace kvq::cpu
