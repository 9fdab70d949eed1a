// Argument validation shared by the CPU, CUDA and Meta kernels, so every backend raises the same,
// explicit errors (argument name, expected and actual shape/dtype/device).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <string>

namespace kvq {

enum class Neighbourhood { None = 0, Hard = 1, Gaussian = 2, Exponential = 3 };

Neighbourhood parse_neighbourhood(const std::string& name);

// Arithmetic of assign's distance search: "exact" fp32 FMAs, or "tf32" tensor-core products (CUDA only;
// the CPU has no TF32 unit and runs the exact search for both).
enum class AssignPrecision { Exact = 0, TF32 = 1 };

// Rows one assign call may take: 128-row CUDA tiles times the largest launch grid dimension.
constexpr int64_t kMaxAssignRows = int64_t{128} * 2147483647;

// (N, D) x and (K, D) codebook, floating point, same device, K < 2^31, N <= kMaxAssignRows, and a known
// precision name; returns the parsed precision.
AssignPrecision check_assign_args(const at::Tensor& x, const at::Tensor& codebook, const std::string& precision);
void check_cluster_stats_args(const at::Tensor& x, const at::Tensor& indices, int64_t num_codes);
// Hyper-parameters and tensor shapes of som_update_; returns the parsed neighbourhood.
Neighbourhood check_som_update_args(const at::Tensor& codebook, const at::Tensor& ema_sums,
                                    const at::Tensor& ema_counts, const at::Tensor& step,
                                    const at::Tensor& skipped, const at::Tensor& sums,
                                    const at::Tensor& counts, c10::IntArrayRef grid,
                                    const std::string& neighbourhood, double shrink, double sigma,
                                    double base, double decay, double eps);

// (K, D) floating-point codebook and (N,) int64/int32 indices on its device.
void check_lookup_args(const at::Tensor& codebook, const at::Tensor& indices);

// Range check of indices against num_codes on any device (reads the values: a host sync on GPU); `op`
// names the op in the error.
void check_indices_in_range(const at::Tensor& indices, int64_t num_codes, const char* op);

}  // namespace kvq
