#include "checks.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <sstream>

namespace kvq {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

void check_defined(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), "kohonen_vq.", op, ": argument '", name, "' is an undefined tensor");
}

void check_float_input(const at::Tensor& t, const char* op, const char* name) {
  check_defined(t, op, name);
  TORCH_CHECK(is_supported_float(t.scalar_type()), "kohonen_vq.", op, ": argument '", name,
              "' must have dtype float32, float16 or bfloat16, got ", t.scalar_type());
}

void check_dtype(const at::Tensor& t, at::ScalarType want, const char* op, const char* name) {
  check_defined(t, op, name);
  TORCH_CHECK(t.scalar_type() == want, "kohonen_vq.", op, ": argument '", name, "' must have dtype ",
              want, ", got ", t.scalar_type());
}

void check_rank(const at::Tensor& t, int64_t rank, const char* what, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == rank, "kohonen_vq.", op, ": argument '", name, "' must be a ", rank,
              "-D tensor of shape ", what, ", got shape ", shape_str(t));
}

void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn,
                       const char* op) {
  TORCH_CHECK(a.device() == b.device(), "kohonen_vq.", op, ": arguments '", an, "' and '", bn,
              "' must be on the same device, got ", a.device(), " and ", b.device());
}

void check_shape(const at::Tensor& t, c10::IntArrayRef want, const char* op, const char* name) {
  TORCH_CHECK(t.sizes() == want, "kohonen_vq.", op, ": argument '", name, "' must have shape ", want,
              ", got ", shape_str(t));
}

// (N,) code indices, int64 or int32 (the dtypes the CPU and CUDA kernels dispatch on).
void check_index_vector(const at::Tensor& indices, const char* op) {
  TORCH_CHECK(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt, "kohonen_vq.", op,
              ": argument 'indices' must have dtype int64 or int32, got ", indices.scalar_type());
  check_rank(indices, 1, "(N,)", op, "indices");
}

void check_scalar_counter(const at::Tensor& t, const at::Tensor& like, const char* name) {
  check_dtype(t, at::kLong, "som_update_", name);
  TORCH_CHECK(t.numel() == 1, "kohonen_vq.som_update_: argument '", name,
              "' must hold exactly one element, got shape ", shape_str(t));
  check_same_device(t, name, like, "codebook", "som_update_");
}

}  // namespace

Neighbourhood parse_neighbourhood(const std::string& name) {
  if (name == "none") return Neighbourhood::None;
  if (name == "hard") return Neighbourhood::Hard;
  if (name == "gaussian") return Neighbourhood::Gaussian;
  if (name == "exponential") return Neighbourhood::Exponential;
  TORCH_CHECK(false, "kohonen_vq.som_update_: argument 'neighbourhood' must be one of 'none', 'hard', "
                     "'gaussian', 'exponential', got '", name, "'");
}

AssignPrecision check_assign_args(const at::Tensor& x, const at::Tensor& codebook, const std::string& precision) {
  TORCH_CHECK(precision == "exact" || precision == "tf32", "kohonen_vq.assign: argument 'precision' must be one of "
              "'exact', 'tf32', got '", precision, "'");
  check_float_input(x, "assign", "x");
  check_float_input(codebook, "assign", "codebook");
  check_rank(x, 2, "(N, D)", "assign", "x");
  check_rank(codebook, 2, "(K, D)", "assign", "codebook");
  TORCH_CHECK(codebook.size(0) > 0, "kohonen_vq.assign: argument 'codebook' must hold at least one code "
              "(K >= 1), got shape ", shape_str(codebook));
  TORCH_CHECK(codebook.size(1) > 0, "kohonen_vq.assign: vector dimension D must be >= 1, got codebook shape ",
              shape_str(codebook));
  TORCH_CHECK(x.size(1) == codebook.size(1), "kohonen_vq.assign: argument 'x' has D = ", x.size(1),
              " but 'codebook' has D = ", codebook.size(1), " (x: ", shape_str(x), ", codebook: ",
              shape_str(codebook), ")");
  check_same_device(x, "x", codebook, "codebook", "assign");
  // Code indices are int32 inside the kernels, and the CUDA launch grid has at most 2^31 - 1 row tiles.
  TORCH_CHECK(codebook.size(0) <= std::numeric_limits<int32_t>::max(), "kohonen_vq.assign: K = ", codebook.size(0),
              " codes exceeds 2^31 - 1");
  TORCH_CHECK(x.size(0) <= kMaxAssignRows, "kohonen_vq.assign: N = ", x.size(0), " rows is too many (at most ",
              kMaxAssignRows, ")");
  return precision == "tf32" ? AssignPrecision::TF32 : AssignPrecision::Exact;
}

void check_cluster_stats_args(const at::Tensor& x, const at::Tensor& indices, int64_t num_codes) {
  check_float_input(x, "cluster_stats", "x");
  check_defined(indices, "cluster_stats", "indices");
  check_rank(x, 2, "(N, D)", "cluster_stats", "x");
  TORCH_CHECK(x.size(1) > 0, "kohonen_vq.cluster_stats: vector dimension D must be >= 1, got x shape ",
              shape_str(x));
  check_index_vector(indices, "cluster_stats");
  TORCH_CHECK(indices.size(0) == x.size(0), "kohonen_vq.cluster_stats: argument 'indices' must have shape (",
              x.size(0), ",) to match x ", shape_str(x), ", got ", shape_str(indices));
  TORCH_CHECK(num_codes > 0, "kohonen_vq.cluster_stats: argument 'num_codes' must be >= 1, got ", num_codes);
  check_same_device(x, "x", indices, "indices", "cluster_stats");
}

Neighbourhood check_som_update_args(const at::Tensor& codebook, const at::Tensor& ema_sums,
                                    const at::Tensor& ema_counts, const at::Tensor& step,
                                    const at::Tensor& skipped, const at::Tensor& sums,
                                    const at::Tensor& counts, c10::IntArrayRef grid,
                                    const std::string& neighbourhood, double shrink, double sigma,
                                    double base, double decay, double eps) {
  const char* op = "som_update_";
  check_dtype(codebook, at::kFloat, op, "codebook");
  check_rank(codebook, 2, "(K, D)", op, "codebook");
  const int64_t K = codebook.size(0), D = codebook.size(1);
  TORCH_CHECK(K > 0, "kohonen_vq.som_update_: argument 'codebook' must hold at least one code (K >= 1), got shape ",
              shape_str(codebook));
  TORCH_CHECK(codebook.is_contiguous(), "kohonen_vq.som_update_: argument 'codebook' must be contiguous "
              "(it is updated in place)");
  check_dtype(ema_sums, at::kFloat, op, "ema_sums");
  check_shape(ema_sums, {K, D}, op, "ema_sums");
  TORCH_CHECK(ema_sums.is_contiguous(), "kohonen_vq.som_update_: argument 'ema_sums' must be contiguous");
  check_dtype(ema_counts, at::kFloat, op, "ema_counts");
  check_shape(ema_counts, {K}, op, "ema_counts");
  TORCH_CHECK(ema_counts.is_contiguous(), "kohonen_vq.som_update_: argument 'ema_counts' must be contiguous");
  check_dtype(sums, at::kFloat, op, "sums");
  check_shape(sums, {K, D}, op, "sums");
  check_dtype(counts, at::kFloat, op, "counts");
  check_shape(counts, {K}, op, "counts");
  check_scalar_counter(step, codebook, "step");
  check_scalar_counter(skipped, codebook, "skipped");
  check_same_device(codebook, "codebook", ema_sums, "ema_sums", op);
  check_same_device(codebook, "codebook", ema_counts, "ema_counts", op);
  check_same_device(codebook, "codebook", sums, "sums", op);
  check_same_device(codebook, "codebook", counts, "counts", op);

  TORCH_CHECK(!grid.empty(), "kohonen_vq.som_update_: argument 'grid' must list at least one axis size");
  int64_t prod = 1;
  for (int64_t s : grid) {
    TORCH_CHECK(s >= 1, "kohonen_vq.som_update_: argument 'grid' must have sizes >= 1, got ", grid);
    prod *= s;
  }
  TORCH_CHECK(prod == K, "kohonen_vq.som_update_: argument 'grid' ", grid, " holds ", prod,
              " nodes but the codebook has K = ", K, " codes");
  const Neighbourhood nb = parse_neighbourhood(neighbourhood);
  for (const auto& [name, value] : {std::pair<const char*, double>{"shrink", shrink}, {"sigma", sigma},
                                    {"base", base}, {"decay", decay}, {"eps", eps}}) {
    TORCH_CHECK(std::isfinite(value), "kohonen_vq.som_update_: argument '", name, "' must be finite, got ", value);
  }
  TORCH_CHECK(shrink >= 0.0, "kohonen_vq.som_update_: argument 'shrink' must be >= 0, got ", shrink);
  TORCH_CHECK(sigma > 0.0, "kohonen_vq.som_update_: argument 'sigma' must be > 0, got ", sigma);
  TORCH_CHECK(base > 0.0, "kohonen_vq.som_update_: argument 'base' must be > 0, got ", base);
  TORCH_CHECK(decay >= 0.0 && decay < 1.0, "kohonen_vq.som_update_: argument 'decay' must be in [0, 1), got ",
              decay);
  TORCH_CHECK(eps >= 0.0, "kohonen_vq.som_update_: argument 'eps' must be >= 0, got ", eps);
  return nb;
}

void check_lookup_args(const at::Tensor& codebook, const at::Tensor& indices) {
  check_float_input(codebook, "lookup", "codebook");
  check_defined(indices, "lookup", "indices");
  check_rank(codebook, 2, "(K, D)", "lookup", "codebook");
  check_index_vector(indices, "lookup");
  check_same_device(codebook, "codebook", indices, "indices", "lookup");
}

void check_indices_in_range(const at::Tensor& indices, int64_t num_codes, const char* op) {
  if (indices.numel() == 0) return;
  const at::Tensor idx = indices.to(at::kLong);
  const int64_t lo = idx.min().item<int64_t>();
  const int64_t hi = idx.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < num_codes, "kohonen_vq.", op, ": argument 'indices' must lie in [0, ", num_codes,
              "), got values in [", lo, ", ", hi, "]");
}

}  // namespace kvq
