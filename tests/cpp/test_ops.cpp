// LibTorch tests of kohonen_vq through <kohonen_vq/ops.h>, without Python: each op against a plain ATen
// statement of the same maths (METHOD.md §1-2), on CPU (every compiled instruction set) and on CUDA when
// a GPU is present and the library was built with CUDA kernels. Exit status 0 iff every check passed.
#include <kohonen_vq/ops.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <array>
#include <cmath>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "harness.h"

namespace {

using namespace kvq_test;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- plain ATen references ----

// (N, K) squared Euclidean distances in float64: the ground truth for assign.
at::Tensor sqdist_matrix(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  return (xd.unsqueeze(1) - wd.unsqueeze(0)).pow(2).sum(-1);
}

// One-hot matmul statement of cluster_stats, in float64.
std::tuple<at::Tensor, at::Tensor> cluster_stats_reference(const at::Tensor& x, const at::Tensor& indices,
                                                           int64_t K) {
  const at::Tensor onehot = at::one_hot(indices.to(at::kLong), K).to(at::kDouble);
  return {onehot.t().mm(x.to(at::kDouble)), onehot.sum(0)};
}

struct SomState {
  at::Tensor w, m, n, step, skipped;

  SomState clone() const { return {w.clone(), m.clone(), n.clone(), step.clone(), skipped.clone()}; }
};

// w^(0) ~ N(0, I), m^(0) = w^(0), N^(0) = init_count (METHOD.md §2).
SomState make_state(int64_t K, int64_t D, double init_count, at::Device dev) {
  const at::TensorOptions f = at::TensorOptions().dtype(at::kFloat).device(dev);
  at::Tensor w = at::randn({K, D}, f);
  return {w, w.clone(), at::full({K}, init_count, f), at::zeros({1}, f.dtype(at::kLong)),
          at::zeros({1}, f.dtype(at::kLong))};
}

// EMA-VQ (Eqs. 6-8) with Laplace smoothing stored back, or without update_empty the no-smoothing variant
// that leaves codes with zero count alone; in float64.
void ema_vq_reference(SomState& s, const at::Tensor& S, const at::Tensor& c, double decay, double eps,
                      bool update_empty) {
  const at::Tensor n = s.n.to(at::kDouble), m = s.m.to(at::kDouble), w = s.w.to(at::kDouble);
  const at::Tensor Sd = S.to(at::kDouble), cd = c.to(at::kDouble);
  at::Tensor n1 = decay * n + (1 - decay) * cd;
  const at::Tensor m1 = decay * m + (1 - decay) * Sd;
  if (update_empty) {
    const at::Tensor total = n1.sum();
    n1 = (n1 + eps) / (total + static_cast<double>(n.size(0)) * eps) * total;
    s.n = n1, s.m = m1, s.w = m1 / n1.unsqueeze(1);
  } else {
    const at::Tensor hit = cd != 0;
    s.n = at::where(hit, n1, n);
    s.m = at::where(hit.unsqueeze(1), m1, m);
    s.w = at::where(hit.unsqueeze(1), m1 / n1.unsqueeze(1), w);
  }
  s.step = s.step + 1;
}

void som_update_none(SomState& s, const at::Tensor& S, const at::Tensor& c, c10::IntArrayRef grid, double decay,
                     double eps, bool update_empty) {
  kohonen_vq::som_update_(s.w, s.m, s.n, s.step, s.skipped, S, c, grid, "none", 0.1, 1.0, 10.0, decay, eps,
                          update_empty);
}

void expect_state_equal(const SomState& a, const SomState& b) {
  EXPECT_EQUAL(a.w, b.w);
  EXPECT_EQUAL(a.m, b.m);
  EXPECT_EQUAL(a.n, b.n);
  EXPECT_EQUAL(a.step, b.step);
  EXPECT_EQUAL(a.skipped, b.skipped);
}

// ---- tests ----

void test_build_info() {
  const std::string info = kohonen_vq::build_info();
  EXPECT(info.front() == '{' && info.back() == '}');
  EXPECT(contains(info, "\"torch_version\""));
  // Built against the torch this test links.
  EXPECT(contains(info, std::string("\"torch_version\": \"") + TORCH_VERSION));
}

// Random inputs: the chosen code is a nearest one up to fp32 rounding, and nearly always argmin's.
void test_assign_random(at::Device dev, at::ScalarType dtype) {
  const at::TensorOptions o = at::TensorOptions().device(dev);
  for (const auto& [N, K, D] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {517, 300, 32}, {1000, 37, 7}}) {
    const at::Tensor x = at::randn({N, D}, o).to(dtype), w = at::randn({K, D}, o).to(dtype);
    const auto [idx, dist] = kohonen_vq::assign(x, w);
    EXPECT(idx.scalar_type() == at::kLong && dist.scalar_type() == at::kFloat);
    EXPECT(idx.device() == dev && dist.device() == dev);
    const at::Tensor d = sqdist_matrix(x, w);
    const at::Tensor chosen = d.gather(1, idx.unsqueeze(1)).squeeze(1);
    // fp32 error of ||x||^2 - 2 x.w + ||w||^2 scales with the norms involved.
    const at::Tensor scale = x.to(at::kDouble).pow(2).sum(1) + w.to(at::kDouble).pow(2).sum(1).max();
    const at::Tensor tol = 1e-5 * scale + 1e-6;
    EXPECT((chosen - std::get<0>(d.min(1)) <= tol).all().item<bool>());
    EXPECT(((dist.to(at::kDouble) - chosen).abs() <= tol).all().item<bool>());
    EXPECT(idx.eq(d.argmin(1)).to(at::kDouble).mean().item<double>() >= 0.99);
  }
}

// Small integer coordinates make every distance exact in fp32, so ties are exact and frequent:
// the result must equal argmin's (first minimum), including duplicated codes.
void test_assign_ties(at::Device dev) {
  const at::TensorOptions o = at::TensorOptions().dtype(at::kFloat).device(dev);
  const at::Tensor x = at::randint(-2, 3, {777, 13}, o);
  at::Tensor w = at::randint(-2, 3, {70, 13}, o);
  w[41].copy_(w[5]);
  w[69].copy_(w[5]);
  x[0].copy_(w[5]);
  const auto [idx, dist] = kohonen_vq::assign(x, w);
  const at::Tensor d = sqdist_matrix(x, w);
  EXPECT_EQUAL(idx, d.argmin(1));
  EXPECT_EQUAL(dist, std::get<0>(d.min(1)).to(at::kFloat));
  EXPECT(idx[0].item<int64_t>() <= 5);

  // Equidistant codes 1 and 2, and code 3 a copy of code 1.
  const at::Tensor w2 = at::tensor({3.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f}, o).view({4, 2});
  const at::Tensor x2 = at::tensor({0.f, 0.f, 1.f, 0.f}, o).view({2, 2});
  EXPECT_EQUAL(std::get<0>(kohonen_vq::assign(x2, w2)), at::tensor({int64_t{1}, int64_t{1}}, o.dtype(at::kLong)));
}

void test_assign_nan_row(at::Device dev) {
  const at::TensorOptions o = at::TensorOptions().dtype(at::kFloat).device(dev);
  const at::Tensor x = at::randn({5, 4}, o), w = at::randn({9, 4}, o);
  x[2][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT(std::get<0>(kohonen_vq::assign(x, w))[2].item<int64_t>() == 0);
}

// precision "tf32": on CUDA the chosen code is within TF32 rounding (2^-9 of the norms) of a nearest one and
// the distance is the fp32 one to it; on CPU it is the exact search, bit for bit.
void test_assign_tf32(at::Device dev) {
  const at::TensorOptions o = at::TensorOptions().device(dev);
  const at::Tensor x = at::randn({700, 40}, o), w = at::randn({300, 40}, o);
  const auto [idx, dist] = kohonen_vq::assign(x, w, "tf32");
  const at::Tensor d = sqdist_matrix(x, w);
  const at::Tensor chosen = d.gather(1, idx.unsqueeze(1)).squeeze(1);
  const at::Tensor scale = x.to(at::kDouble).pow(2).sum(1) + w.to(at::kDouble).pow(2).sum(1).max();
  EXPECT((chosen - std::get<0>(d.min(1)) <= std::pow(2.0, -9) * scale).all().item<bool>());
  EXPECT(((dist.to(at::kDouble) - chosen).abs() <= 1e-5 * scale + 1e-6).all().item<bool>());
  if (dev.is_cpu()) EXPECT_EQUAL(idx, std::get<0>(kohonen_vq::assign(x, w)));
}

void test_assign(at::Device dev) {
  for (at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) test_assign_random(dev, t);
  test_assign_tf32(dev);
  test_assign_ties(dev);
  test_assign_nan_row(dev);
}

void test_cluster_stats(at::Device dev) {
  const int64_t N = 1000, D = 24, K = 50;
  const at::TensorOptions o = at::TensorOptions().dtype(at::kFloat).device(dev);
  const at::Tensor x = at::randn({N, D}, o);
  const at::Tensor idx = at::randint(0, K - 10, {N}, o.dtype(at::kLong));  // codes 40..49 stay empty
  const auto [S_ref, c_ref] = cluster_stats_reference(x, idx, K);
  for (at::ScalarType it : {at::kLong, at::kInt}) {
    const auto [S, c] = kohonen_vq::cluster_stats(x, idx.to(it), K);
    EXPECT(S.scalar_type() == at::kFloat && c.scalar_type() == at::kFloat && S.device() == dev);
    EXPECT_CLOSE(S, S_ref, 1e-5, 1e-4);
    EXPECT_EQUAL(c, c_ref.to(at::kFloat));
  }
  const auto [Su, cu] = kohonen_vq::cluster_stats(x, idx, K, /*check_range=*/false);
  EXPECT_CLOSE(Su, S_ref, 1e-5, 1e-4);
  EXPECT_EQUAL(cu, c_ref.to(at::kFloat));
  const at::Tensor xh = x.to(at::kHalf);
  const auto [Sh, ch] = kohonen_vq::cluster_stats(xh, idx, K);
  EXPECT_CLOSE(Sh, std::get<0>(cluster_stats_reference(xh, idx, K)), 1e-5, 1e-3);
}

void test_lookup(at::Device dev) {
  const at::TensorOptions o = at::TensorOptions().dtype(at::kFloat).device(dev);
  const at::Tensor w = at::randn({50, 24}, o);
  const at::Tensor idx = at::randint(0, 50, {300}, o.dtype(at::kLong));
  for (at::ScalarType it : {at::kLong, at::kInt}) {
    EXPECT_EQUAL(kohonen_vq::lookup(w, idx.to(it)), w.index_select(0, idx));
  }
  EXPECT_EQUAL(kohonen_vq::lookup(w, idx, /*check_range=*/false), w.index_select(0, idx));
  EXPECT_THROWS(kohonen_vq::lookup(w, at::full({2}, 50, o.dtype(at::kLong))), "must lie in [0, 50)");
}

// Neighbourhood "none" is EMA-VQ: three batches through assign -> cluster_stats -> som_update_.
void test_som_update_ema(at::Device dev) {
  const int64_t K = 64, D = 16, N = 100;  // N < K: many empty codes every step
  const std::vector<int64_t> grid{8, 8};
  const double decay = 0.9, eps = 1e-5;
  for (const auto& [init_count, update_empty] : std::vector<std::pair<double, bool>>{{1.0, true}, {0.0, false},
                                                                                    {0.0, true}}) {
    SomState s = make_state(K, D, init_count, dev);
    SomState ref = s.clone();
    for (int step = 0; step < 3; ++step) {
      const at::Tensor x = at::randn({N, D}, s.w.options());
      const auto [S, c] = kohonen_vq::cluster_stats(x, std::get<0>(kohonen_vq::assign(x, s.w)), K);
      som_update_none(s, S, c, grid, decay, eps, update_empty);
      ema_vq_reference(ref, S, c, decay, eps, update_empty);
      EXPECT_CLOSE(s.n, ref.n, 1e-5, 1e-7);
      EXPECT_CLOSE(s.m, ref.m, 1e-5, 1e-6);
      EXPECT_CLOSE(s.w, ref.w, 1e-5, 1e-5);
      ref.w = s.w.clone(), ref.m = s.m.clone(), ref.n = s.n.clone();  // next step from the same state
    }
    EXPECT(s.step.item<int64_t>() == 3 && s.skipped.item<int64_t>() == 0);
  }
}

// A non-finite batch changes nothing but `skipped`; the next finite batch applies normally.
void test_som_update_nonfinite(at::Device dev) {
  const int64_t K = 12, D = 5;
  SomState s = make_state(K, D, 1.0, dev);
  const at::Tensor S = at::randn({K, D}, s.w.options()), c = at::rand({K}, s.w.options());
  const SomState before = s.clone();
  for (const std::string nb : {"none", "hard", "gaussian", "exponential"}) {
    at::Tensor bad = S.clone();
    bad[3][1] = std::numeric_limits<float>::quiet_NaN();
    kohonen_vq::som_update_(s.w, s.m, s.n, s.step, s.skipped, bad, c, {3, 4}, nb);
  }
  at::Tensor inf_counts = c.clone();
  inf_counts[0] = std::numeric_limits<float>::infinity();
  kohonen_vq::som_update_(s.w, s.m, s.n, s.step, s.skipped, S, inf_counts, {3, 4});
  EXPECT(s.skipped.item<int64_t>() == 5);
  EXPECT_EQUAL(s.w, before.w);
  EXPECT_EQUAL(s.m, before.m);
  EXPECT_EQUAL(s.n, before.n);
  EXPECT_EQUAL(s.step, before.step);
  kohonen_vq::som_update_(s.w, s.m, s.n, s.step, s.skipped, S, c, {3, 4});
  EXPECT(s.step.item<int64_t>() == 1 && !at::equal(s.w.cpu(), before.w.cpu()));
}

// Bad inputs raise c10::Error naming the argument, before anything is modified.
void test_errors(at::Device dev) {
  const at::TensorOptions o = at::TensorOptions().dtype(at::kFloat).device(dev);
  const at::Tensor x = at::randn({6, 4}, o), w = at::randn({5, 4}, o);
  EXPECT_THROWS(kohonen_vq::assign(at::randn({6, 3}, o), w), "'x'");
  EXPECT_THROWS(kohonen_vq::assign(x.to(at::kInt), w), "'x'");
  EXPECT_THROWS(kohonen_vq::assign(x, w.unsqueeze(0)), "'codebook'");
  const at::Tensor idx = at::zeros({6}, o.dtype(at::kLong));
  EXPECT_THROWS(kohonen_vq::cluster_stats(x, idx.to(at::kFloat), 5), "'indices'");
  EXPECT_THROWS(kohonen_vq::cluster_stats(x, idx + 5, 5), "'indices'");
  EXPECT_THROWS(kohonen_vq::cluster_stats(x, idx, 0), "'num_codes'");

  SomState s = make_state(8, 4, 1.0, dev);
  const SomState before = s.clone();
  const at::Tensor S = at::randn({8, 4}, o), c = at::ones({8}, o);
  auto update = [&](c10::IntArrayRef grid, std::string_view nb, double decay, const at::Tensor& n) {
    at::Tensor counts = n;
    kohonen_vq::som_update_(s.w, s.m, counts, s.step, s.skipped, S, c, grid, nb, 0.1, 1.0, 10.0, decay);
  };
  EXPECT_THROWS(update({8}, "square", 0.99, s.n), "'neighbourhood'");
  EXPECT_THROWS(update({7}, "hard", 0.99, s.n), "'grid'");
  EXPECT_THROWS(update({2, 4}, "hard", 1.0, s.n), "'decay'");
  EXPECT_THROWS(update({8}, "hard", 0.99, s.n.to(at::kDouble)), "'ema_counts'");
  expect_state_equal(s, before);

  if (dev.is_cuda()) EXPECT_THROWS(kohonen_vq::assign(x.cpu(), w), "'codebook'");
}

void run_device_tests(at::Device dev) {
  test_cluster_stats(dev);
  test_lookup(dev);
  test_som_update_ema(dev);
  test_som_update_nonfinite(dev);
  test_errors(dev);
}

// assign on CPU once per instruction set this machine supports, then back to the automatic choice.
void test_assign_cpu_isas() {
  for (const std::string isa : {"generic", "avx2", "avx512"}) {
    try {
      kohonen_vq::set_cpu_isa(isa);
    } catch (const c10::Error&) {
      std::cout << "  assign[" << isa << "]: not compiled in or not supported here, skipped" << std::endl;
      continue;
    }
    test_assign(at::kCPU);
    std::cout << "  assign[" << isa << "]: done" << std::endl;
  }
  kohonen_vq::set_cpu_isa("auto");
}

// Library first: without CUDA kernels torch_cuda is not loaded, so no GPU would be visible anyway.
bool cuda_testable() {
  if (!contains(kohonen_vq::build_info(), "\"cuda\": true")) {
    std::cout << "CUDA: library built without CUDA kernels (KVQ_CUDA=OFF?), CUDA checks skipped" << std::endl;
    return false;
  }
  if (!torch::cuda::is_available()) {
    std::cout << "CUDA: no GPU visible, CUDA checks skipped" << std::endl;
    return false;
  }
  return true;
}

}  // namespace

int main() {
  using namespace kvq_test;
  at::manual_seed(0);
  run("build_info", test_build_info);
  run("cpu: assign per instruction set", test_assign_cpu_isas);
  run("cpu: cluster_stats, lookup, som_update_, errors", [] { run_device_tests(at::kCPU); });
  if (cuda_testable()) {
    run("cuda: assign", [] { test_assign(at::kCUDA); });
    run("cuda: cluster_stats, lookup, som_update_, errors", [] { run_device_tests(at::kCUDA); });
  }
  return kvq_test::summary();
}
