// CPU kernel of kohonen_vq::lookup: ATen's index_select behind the op boundary. The range check always
// runs (it costs nothing here), so a bad index raises instead of reading outside the codebook.
#include <ATen/ops/index_select.h>
#include <torch/library.h>

#include "checks.h"

namespace kvq::cpu {
namespace {

at::Tensor lookup_cpu(const at::Tensor& codebook, const at::Tensor& indices, bool /*check_range*/) {
  check_lookup_args(codebook, indices);
  check_indices_in_range(indices, codebook.size(0), "lookup");
  return at::index_select(codebook, 0, indices);
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CPU, m) { m.impl("lookup", &lookup_cpu); }

}  // namespace kvq::cpu
