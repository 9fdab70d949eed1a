// The op schemas of the kohonen_vq namespace, all in one place. Kernels register per backend in
// cpu/, cuda/ and meta/; Python wrappers live in kohonen_vq/ops.py.
#include <torch/library.h>

#include "build_info.h"

TORCH_LIBRARY(kohonen_vq, m) {
  // Nearest code by squared Euclidean distance (ties -> lowest index), fp32 arithmetic. precision="tf32"
  // searches with tensor-core products on CUDA (the winner's distance is still recomputed in fp32).
  m.def("assign(Tensor x, Tensor codebook, *, str precision=\"exact\") -> (Tensor indices, Tensor sqdist)");
  // Per-code sum of member vectors and member count. check_range=False skips the range check of `indices`
  // where it costs a device synchronisation (CUDA), for callers whose indices come from assign.
  m.def("cluster_stats(Tensor x, Tensor indices, int num_codes, *, bool check_range=True) -> "
        "(Tensor sums, Tensor counts)");
  // codebook[indices] as a new tensor: the codes of a batch, read before an in-place update of the codebook
  // (an op boundary, so a compiler cannot move the read after it). check_range as for cluster_stats; rows
  // whose index lies outside [0, K) come out as NaN when the CUDA check is off.
  m.def("lookup(Tensor codebook, Tensor indices, *, bool check_range=True) -> Tensor");
  // Fused in-place KSOM / EMA-VQ update of codebook, EMA sums, EMA counts; advances `step` when applied,
  // counts the batch in `skipped` (and changes nothing else) when sums or counts are not finite.
  m.def(
      "som_update_(Tensor(a!) codebook, Tensor(b!) ema_sums, Tensor(c!) ema_counts, Tensor(d!) step, "
      "Tensor(e!) skipped, Tensor sums, Tensor counts, int[] grid, str neighbourhood, float shrink, "
      "float sigma, float base, float decay, float eps, bool update_empty) -> ()");

  // Library facts as JSON (torch version built against, CUDA archs, CPU instruction sets).
  m.def("build_info() -> str", &kvq::build_info_json);
  // Selects the CPU instruction set of the assignment kernel ("auto", "generic", "avx2", "avx512");
  // returns the previous one. For benchmarks and tests of each code path.
  m.def("set_cpu_isa(str name) -> str", &kvq::set_cpu_isa_op);
}
