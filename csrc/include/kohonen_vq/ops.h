// Header-only C++ (LibTorch) API of kohonen_vq. Every call goes through the dispatcher, so it reaches the
// kernel of whichever backend the library was built with (CPU, CUDA, Meta) for the inputs' device.
//
// The ops live in the shared library `_C` (kohonen_vq/_C.so in a Python install). A C++ program must load
// it: link it with -Wl,--no-as-needed (nothing references its symbols; its static initialisers register
// the ops) or dlopen it before the first call. Maths: METHOD.md §1-3; Python counterpart: kohonen_vq/ops.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>

namespace kohonen_vq {
namespace detail {

// Typed handle of an operator; throws c10::Error if the library is not loaded or the signature differs
// from the kernels'. Each caller caches its handle in a function-local static (the lookup takes a lock).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Signature>();
}

}  // namespace detail

/// Nearest code of each row of `x` by squared Euclidean distance (METHOD.md Eq. 2).
///
/// @param x         (N, D) float32, float16 or bfloat16.
/// @param codebook  (K, D) floating point, K >= 1, on the same device as `x`.
/// @return `(indices, sqdist)`: int64 (N,) index of the nearest code, ties resolved to the lowest index;
///         float32 (N,) squared distance to it. Arithmetic is float32 whatever the input dtype. Extra
///         memory is O(N + K): no N x K matrix is formed. Rows containing NaN map to code 0.
/// @param precision "exact" (fp32 FMAs) or "tf32": on CUDA (compute capability >= 8.0) the search uses
///         TF32 tensor-core products, so a code within TF32 rounding of the nearest may win a near-tie; the
///         returned distance is still the fp32 distance to the chosen code. The CPU runs "exact" for both.
/// @throws c10::Error naming the offending argument on a bad dtype, rank, D mismatch, device mismatch or
///         precision name.
inline std::tuple<at::Tensor, at::Tensor> assign(const at::Tensor& x, const at::Tensor& codebook,
                                                 const std::string& precision = "exact") {
  using Sig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::string_view);
  static const auto op = detail::find_op<Sig>("kohonen_vq::assign");
  return op.call(x, codebook, precision);
}

/// Per-code sums and member counts of a batch: `S_k = sum_{i: indices_i = k} x_i`, `c_k = |{i: indices_i = k}|`.
///
/// @param x          (N, D) float32, float16 or bfloat16.
/// @param indices    (N,) int64 or int32 on the device of `x`, values in [0, num_codes).
/// @param num_codes  K >= 1.
/// @param check_range  false skips the range check of `indices` on CUDA, where it costs a device
///                     synchronisation (CPU always checks); out-of-range rows are then left out.
/// @return `(sums, counts)`: float32 (K, D) and float32 (K,). On CPU bit-identical for any thread count.
/// @throws c10::Error naming the offending argument, including for indices out of range.
inline std::tuple<at::Tensor, at::Tensor> cluster_stats(const at::Tensor& x, const at::Tensor& indices,
                                                        int64_t num_codes, bool check_range = true) {
  using Sig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, bool);
  static const auto op = detail::find_op<Sig>("kohonen_vq::cluster_stats");
  return op.call(x, indices, num_codes, check_range);
}

/// The codes of a batch, `codebook[indices]`, as a new tensor in the codebook's dtype.
///
/// @param codebook  (K, D) float32, float16 or bfloat16.
/// @param indices   (N,) int64 or int32 on the device of `codebook`, values in [0, K).
/// @param check_range  false skips the range check on CUDA (a device synchronisation; CPU always checks);
///                     rows whose index lies outside [0, K) are then NaN.
/// @throws c10::Error naming the offending argument, including for indices out of range.
inline at::Tensor lookup(const at::Tensor& codebook, const at::Tensor& indices, bool check_range = true) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, bool);
  static const auto op = detail::find_op<Sig>("kohonen_vq::lookup");
  return op.call(codebook, indices, check_range);
}

/// In-place KSOM / EMA-VQ update of codebook w, EMA sums m and EMA counts N from one batch's statistics.
///
/// The batch `sums`/`counts` are first mixed through the neighbourhood A^(t), t = `step`:
/// "none" (A = I: exactly EMA-VQ), "hard" (Eq. 15, weight 1/(1+shrink t) within Chebyshev distance 1),
/// "gaussian" (Eq. 16, sigma(t)^2 = sigma^2/(1+shrink t)) or "exponential" (exp(-||d|| (1+shrink t)/base),
/// the authors' code). Then `N <- decay N + (1-decay) c'`, `m <- decay m + (1-decay) S'`, `w = m / N`.
/// With `update_empty` every code decays and N is Laplace-smoothed with `eps` and stored back; without it
/// codes whose mixed count is exactly 0 keep N, m and w, and the others are not smoothed.
/// On success `step` is incremented. If `sums` or `counts` hold NaN/Inf nothing changes except that
/// `skipped` is incremented (detected on the device, no host synchronisation on GPU).
///
/// @param codebook, ema_sums  (K, D) float32, contiguous, updated in place.
/// @param ema_counts          (K,) float32, contiguous, updated in place.
/// @param step, skipped       one-element int64 counters on the codebook's device.
/// @param sums, counts        (K, D) and (K,) float32 batch statistics, e.g. from cluster_stats().
/// @param grid                axis sizes whose product is K; code k sits at (k mod s0, (k / s0) mod s1, ...).
/// @throws c10::Error naming the offending argument; nothing is modified then.
inline void som_update_(at::Tensor& codebook, at::Tensor& ema_sums, at::Tensor& ema_counts, at::Tensor& step,
                        at::Tensor& skipped, const at::Tensor& sums, const at::Tensor& counts,
                        c10::IntArrayRef grid, std::string_view neighbourhood = "hard", double shrink = 0.1,
                        double sigma = 1.0, double base = 10.0, double decay = 0.99, double eps = 1e-5,
                        bool update_empty = true) {
  // Must match the kernels' C++ signature exactly: mutable tensors by non-const reference.
  using Sig = void(at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, const at::Tensor&,
                   const at::Tensor&, c10::IntArrayRef, c10::string_view, double, double, double, double, double,
                   bool);
  static const auto op = detail::find_op<Sig>("kohonen_vq::som_update_");
  op.call(codebook, ema_sums, ema_counts, step, skipped, sums, counts, grid, neighbourhood, shrink, sigma, base,
            decay, eps, update_empty);
}

/// What the loaded library was built with, as a JSON object: "version", "torch_version", "compiler",
/// "cuda", "cuda_version", "cuda_archs", "cpu_isas_compiled", "cpu_isas_supported", "cpu_isa".
inline std::string build_info() {
  static const auto op = detail::find_op<std::string()>("kohonen_vq::build_info");
  return op.call();
}

/// Selects the CPU instruction set of assign() ("auto", "generic", "avx2", "avx512") for the whole
/// process; returns the previous one. For benchmarks and tests of each code path.
/// @throws c10::Error if the name is unknown or the instruction set is not compiled in or supported.
inline std::string set_cpu_isa(const std::string& name) {
  static const auto op = detail::find_op<std::string(std::string)>("kohonen_vq::set_cpu_isa");
  return op.call(name);
}

}  // namespace kohonen_vq
