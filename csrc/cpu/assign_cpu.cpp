// CPU kernel of kohonen_vq::assign: packs the codebook once, then each thread converts a chunk of rows
// to a small fp32 buffer and runs the register-tiled argmin kernel of the selected instruction set.
// Extra memory: the packed codebook, O(K), and one row chunk per thread; never N x K.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "checks.h"
#include "cpu/cpu_isa.h"

namespace kvq::cpu {
namespace {

constexpr int64_t kChunkRows = 256;

// The CPU has no TF32 unit: precision "tf32" runs the same exact search (a result within any TF32 tolerance).
std::tuple<at::Tensor, at::Tensor> assign_cpu(const at::Tensor& x, const at::Tensor& codebook,
                                              c10::string_view precision) {
  check_assign_args(x, codebook, std::string(precision));
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor sqdist = at::empty({N}, x.options().dtype(at::kFloat));
  if (N == 0) return {indices, sqdist};

  const AssignKernels& kern = active_assign_kernels();
  const at::Tensor w = codebook.to(at::kFloat).contiguous();
  const float* pw = w.data_ptr<float>();
  const int64_t nr = kern.panel_width;
  const int64_t num_panels = (K + nr - 1) / nr;
  std::vector<float> panels(static_cast<size_t>(num_panels * nr * D));
  std::vector<float> norms(static_cast<size_t>(num_panels * nr));
  at::parallel_for(0, num_panels, 16, [&](int64_t p0, int64_t p1) {
    const int64_t k0 = p0 * nr;
    kern.pack(pw + k0 * D, std::min(K - k0, (p1 - p0) * nr), D, panels.data() + p0 * nr * D,
              norms.data() + k0);
  });

  const int64_t chunk = (kChunkRows + kern.row_block - 1) / kern.row_block * kern.row_block;
  const int64_t num_chunks = (N + chunk - 1) / chunk;
  int64_t* out_idx = indices.data_ptr<int64_t>();
  float* out_dist = sqdist.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "kohonen_vq_assign_cpu", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const int64_t s0 = x.stride(0), s1 = x.stride(1);
    at::parallel_for(0, num_chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<float> xb(static_cast<size_t>(chunk * D));
      std::vector<int64_t> best(static_cast<size_t>(chunk));
      std::vector<float> scratch_val(static_cast<size_t>(chunk * kern.lanes));
      std::vector<int32_t> scratch_idx(static_cast<size_t>(chunk * kern.lanes));
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = c * chunk, rows = std::min(chunk, N - r0);
        const int64_t padded = (rows + kern.row_block - 1) / kern.row_block * kern.row_block;
        for (int64_t r = 0; r < padded; ++r) {
          for (int64_t d = 0; d < D; ++d) {
            xb[r * D + d] = r < rows ? static_cast<float>(px[(r0 + r) * s0 + d * s1]) : 0.f;
          }
        }
        kern.argmin_rows(xb.data(), padded, D, panels.data(), norms.data(), num_panels, scratch_val.data(),
                         scratch_idx.data(), best.data());
        // The argmin uses ||w||^2 - 2 x.w; the reported distance is recomputed exactly for the winner.
        kern.sqdist_rows(xb.data(), rows, D, pw, best.data(), out_dist + r0);
        std::copy(best.begin(), best.begin() + rows, out_idx + r0);
      }
    });
  });
  return {indices, sqdist};
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CPU, m) { m.impl("assign", &assign_cpu); }

}  // namespace kvq::cpu
