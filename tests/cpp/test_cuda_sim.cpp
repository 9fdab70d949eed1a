// The CUDA kernels' own source, run on the CPU by tests/cpp/cuda_sim (cuda_sim.h says what that checks and
// what it cannot), against the CPU ops and plain ATen statements. It runs in every build, with or without a
// GPU, so each kernel change is exercised before a GPU session measures it. Exit status 0 iff every check
// passed.
#include <kohonen_vq/ops.h>

#include <ATen/ATen.h>

#include "checks.h"

#include <algorithm>
#include <functional>
#include <iostream>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/assign_exact.cuh"
#include "cuda/assign_tf32.cuh"
#include "cuda/cluster_stats_kernels.cuh"
#include "cuda/float_dispatch.h"
#include "cuda/lookup_kernel.cuh"
#include "cuda/som_update_kernels.cuh"
#include "harness.h"

namespace {

using namespace kvq_test;
using kvq_sim::launch;
namespace kc = kvq::cuda;

unsigned blocks_of(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

// ---- the simulator on its own ----

void block_sum_kernel(const float* in, float* out) {
  __shared__ float partial[64];
  partial[threadIdx.x] = in[blockIdx.x * 64 + threadIdx.x];
  __syncthreads();
  for (int h = 32; h > 0; h /= 2) {
    if (threadIdx.x < static_cast<unsigned>(h)) partial[threadIdx.x] += partial[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

void warp_sum_kernel(const int* in, int* out) {
  int v = in[threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 40) {  // lanes of warp 1 split between this barrier and the shuffle below
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
  }
}

void test_simulator() {
  const at::Tensor in = at::randn({3, 64});
  at::Tensor out = at::empty({3});
  launch(dim3(3), dim3(64), 0, block_sum_kernel, in.const_data_ptr<float>(), out.data_ptr<float>());
  EXPECT_CLOSE(out, in.sum(1), 1e-5, 1e-5);

  const at::Tensor ints = at::randint(-100, 100, {64}, at::kInt);
  at::Tensor sums = at::empty({64}, at::kInt);
  launch(dim3(1), dim3(64), 0, warp_sum_kernel, ints.const_data_ptr<int>(), sums.data_ptr<int>());
  const at::Tensor per_warp = ints.view({2, 32}).sum(1, /*keepdim=*/true, at::kInt).expand({2, 32}).reshape({64});
  EXPECT_EQUAL(sums, per_warp);

  at::Tensor flags = at::zeros({64}, at::kInt);
  const auto refused = [&](dim3 block, size_t shared, const std::string& needle) {
    try {
      launch(dim3(1), block, shared, divergent_barrier_kernel, flags.data_ptr<int>());
    } catch (const std::exception& e) {
      return std::string(e.what()).find(needle) != std::string::npos;
    }
    return false;
  };
  EXPECT(refused(dim3(64), 0, "warp 1 deadlocks"));
  EXPECT(refused(dim3(2048), 0, "block of 2048 threads"));
  EXPECT(refused(dim3(64), 300000, "300000 bytes of dynamic shared memory"));
}

// ---- assign ----

struct AssignCase {
  int64_t n, k, d;
};
// Tails of the 128-row and 128-code tiles, of the 8- and 32-component stages, D = 1, a single code, and
// D above the TF32 kernel's resident limit (128).
const std::vector<AssignCase> kAssignCases = {{1, 1, 1},    {7, 3, 1},     {7, 300, 3},  {130, 48, 64},
                                              {257, 1, 130}, {129, 257, 33}, {300, 129, 8}, {40, 200, 128}};

// norms, the search with `per_split` code tiles a block (K split across blockIdx.y when it is smaller than
// the number of code tiles), and the finishing pass, as assign_cuda launches them.
std::tuple<at::Tensor, at::Tensor> sim_assign(const at::Tensor& x, const at::Tensor& codebook, bool tf32,
                                              int64_t per_split) {
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  const at::Tensor w = codebook.to(at::kFloat).contiguous();
  at::Tensor norms = at::empty({K}), sqdist = at::empty({N});
  // Zero keys would beat every real one: the norms launch must set them. Its grid has a block past the codes.
  at::Tensor indices = at::empty({N}, at::kLong), keys = at::zeros({N}, at::kLong);
  auto* pkeys = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());
  launch(dim3(blocks_of(K, kc::kBlock) + 1), dim3(kc::kBlock), 0, kc::norms_kernel, w.const_data_ptr<float>(), K, D,
         norms.data_ptr<float>(), pkeys, N);
  const int64_t code_tiles = (K + kc::kTileCodes - 1) / kc::kTileCodes;
  const dim3 grid(blocks_of(N, kc::kTileRows), blocks_of(code_tiles, per_split));
  KVQ_DISPATCH_FLOAT_INPUTS(x.scalar_type(), "sim", [&] {
    const auto args = std::make_tuple(x.const_data_ptr<scalar_t>(), N, D, x.stride(0), x.stride(1),
                                      w.const_data_ptr<float>(), norms.const_data_ptr<float>(), K, per_split, pkeys);
    const auto search = [&](auto kernel, size_t shared) {
      std::apply([&](auto... a) { launch(grid, dim3(kc::kThreads), shared, kernel, a...); }, args);
    };
    if (!tf32) {
      search(kc::argmin_kernel<scalar_t>, 0);
    } else if (D <= kc::tf32::kMaxResidentDims) {
      search(kc::tf32::argmin_kernel<scalar_t, true>, kc::tf32::shared_bytes(D));
    } else {
      search(kc::tf32::argmin_kernel<scalar_t, false>, kc::tf32::shared_bytes(D));
    }
    launch(dim3(blocks_of(N, kc::kBlock)), dim3(kc::kBlock), 0, kc::finish_kernel<scalar_t>,
           x.const_data_ptr<scalar_t>(), N, D, x.stride(0), x.stride(1), w.const_data_ptr<float>(), pkeys,
           indices.data_ptr<int64_t>(), sqdist.data_ptr<float>());
  });
  return {indices, sqdist};
}

// Selects a CPU kernel whose search sums in the CUDA kernels' order (FMA chains in ascending d); returns its
// name, or "" when there is none.
std::string select_fma_cpu_isa() {
  for (const std::string isa : {"avx2", "avx512"}) {
    try {
      kohonen_vq::set_cpu_isa(isa);
      return isa;
    } catch (const c10::Error&) {
    }
  }
  return "";
}

// The winner's distance recomputed in float64, and the smallest distance, per row.
std::tuple<at::Tensor, at::Tensor> chosen_and_nearest(const at::Tensor& x, const at::Tensor& w,
                                                      const at::Tensor& indices) {
  const at::Tensor xd = x.to(at::kDouble), wd = w.to(at::kDouble);
  const at::Tensor all = (xd.unsqueeze(1) - wd.unsqueeze(0)).pow(2).sum(-1);
  return {all.gather(1, indices.unsqueeze(1)).squeeze(1), std::get<0>(all.min(1))};
}

void check_exact(const at::Tensor& x, const at::Tensor& w, int64_t per_split, const std::string& isa) {
  const auto [indices, sqdist] = sim_assign(x, w, /*tf32=*/false, per_split);
  if (!isa.empty()) {  // the search sums in the same order: the same codes, ties included
    const auto [cpu_indices, cpu_sqdist] = kohonen_vq::assign(x, w);
    EXPECT_EQUAL(indices, cpu_indices);
    EXPECT_CLOSE(sqdist, cpu_sqdist, 1e-5, 1e-6);  // the CPU sums the winner's distance lane-wise
  }
  const auto [chosen, nearest] = chosen_and_nearest(x, w, indices);
  const at::Tensor scale = x.to(at::kDouble).pow(2).sum(1) + w.to(at::kDouble).pow(2).sum(1).max();
  EXPECT(((chosen - nearest) <= 1e-5 * scale).all().item<bool>());
  EXPECT_CLOSE(sqdist, chosen, 1e-5, 1e-6);
}

// TF32 keeps 10 mantissa bits: the chosen code is within 2^-9 (||x||^2 + max ||w||^2) of the nearest.
void check_tf32(const at::Tensor& x, const at::Tensor& w, int64_t per_split) {
  const auto [indices, sqdist] = sim_assign(x, w, /*tf32=*/true, per_split);
  EXPECT(((indices >= 0) & (indices < w.size(0))).all().item<bool>());
  const auto [chosen, nearest] = chosen_and_nearest(x, w, indices);
  const at::Tensor scale = x.to(at::kDouble).pow(2).sum(1) + w.to(at::kDouble).pow(2).sum(1).max();
  EXPECT(((chosen - nearest) <= std::ldexp(1.0, -9) * scale).all().item<bool>());
  EXPECT_CLOSE(sqdist, chosen, 1e-5, 1e-6);
}

void test_assign_searches() {
  const std::string isa = select_fma_cpu_isa();
  std::cout << "  exact search's codes compared with CPU kernel: " << (isa.empty() ? "none (no FMA ISA)" : isa)
            << std::endl;
  for (const AssignCase& c : kAssignCases) {
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      const at::Tensor x = at::randn({c.n, c.d}).to(dtype), w = at::randn({c.k, c.d}).to(dtype);
      const int64_t code_tiles = (c.k + kc::kTileCodes - 1) / kc::kTileCodes;
      for (const int64_t per_split : {code_tiles, int64_t{1}, int64_t{2}}) {
        check_exact(x, w, per_split, isa);
        check_tf32(x, w, per_split);
      }
    }
  }
  kohonen_vq::set_cpu_isa("auto");
}

void test_assign_layouts_ties_nan() {
  const at::Tensor w = at::randn({200, 40});
  const at::Tensor transposed = at::randn({150, 40}).t().contiguous().t();
  const at::Tensor strided = at::randn({150, 80}).slice(1, 0, 80, 2);
  for (const at::Tensor& x : {transposed, strided}) {
    check_exact(x, w, 1, "");
    check_tf32(x, w, 1);
  }
  // Every code twice: the lower copy wins. A row with NaN matches nothing and keeps code 0.
  const at::Tensor doubled = at::cat({w, w});
  at::Tensor x = at::randn({150, 40});
  x[3][7] = std::numeric_limits<float>::quiet_NaN();
  for (const bool tf32 : {false, true}) {
    const at::Tensor indices = std::get<0>(sim_assign(x, doubled, tf32, 1));
    EXPECT((indices < 200).all().item<bool>());
    EXPECT(indices[3].item<int64_t>() == 0);
  }
}

// ---- cluster_stats ----

// Indices with some rows out of [0, K): both kernels must leave those rows out.
at::Tensor indices_with_strays(int64_t n, int64_t k, at::ScalarType dtype) {
  at::Tensor idx = at::randint(0, k, {n}, at::kLong);
  for (int64_t i = 5; i < n; i += 11) idx[i] = (i % 2 == 0) ? -1 : k + i % 3;
  return idx.to(dtype);
}

std::tuple<at::Tensor, at::Tensor> sim_cluster_stats(const at::Tensor& x, const at::Tensor& indices, int64_t K,
                                                     bool private_sums) {
  const int64_t N = x.size(0), D = x.size(1);
  // One zeroed buffer, the sums then the counts, as cluster_stats_cuda lays it out.
  at::Tensor totals64 = at::zeros({K * D + K}, at::kDouble);
  double* psums = totals64.data_ptr<double>();
  auto* pcounts = reinterpret_cast<unsigned long long*>(psums + K * D);
  KVQ_DISPATCH_FLOAT_INPUTS(x.scalar_type(), "sim", [&] {
    AT_DISPATCH_INDEX_TYPES(indices.scalar_type(), "sim_index", [&] {
      const auto args = std::make_tuple(x.const_data_ptr<scalar_t>(), N, D, x.stride(0), x.stride(1),
                                        indices.const_data_ptr<index_t>(), indices.stride(0), K, psums, pcounts);
      if (private_sums) {  // 2 blocks, so both the block partials and their merge are exercised
        const size_t shared = static_cast<size_t>(K * D + K) * sizeof(float);
        std::apply([&](auto... a) {
          launch(dim3(2), dim3(kc::kPrivateThreads), shared, kc::accumulate_private_kernel<scalar_t, index_t>, a...);
        }, args);
      } else {
        std::apply([&](auto... a) {
          launch(dim3(3), dim3(kc::kBlock), 0, kc::accumulate_kernel<scalar_t, index_t>, a...);
        }, args);
      }
    });
  });
  at::Tensor sums = at::empty({K, D}), counts = at::empty({K});
  launch(dim3(2), dim3(kc::kBlock), 0, kc::round_kernel, static_cast<const double*>(psums),
         static_cast<const unsigned long long*>(pcounts), K, D, sums.data_ptr<float>(), counts.data_ptr<float>());
  return {sums, counts};
}

void test_cluster_stats() {
  struct Case {
    int64_t n, k, d;
  };
  for (const Case& c : std::vector<Case>{{1, 1, 1}, {1003, 5, 3}, {257, 16, 64}, {2050, 48, 40}, {99, 300, 2}}) {
    for (const at::ScalarType dtype : {at::kFloat, at::kHalf}) {
      for (const at::ScalarType index_dtype : {at::kLong, at::kInt}) {
        const at::Tensor x = at::randn({c.n, 2 * c.d}).to(dtype).slice(1, 0, 2 * c.d, 2);  // strided rows
        const at::Tensor idx = indices_with_strays(c.n, c.k, index_dtype);
        const at::Tensor keep = (idx >= 0) & (idx < c.k);
        const auto [ref_sums, ref_counts] =
            kohonen_vq::cluster_stats(x.index({keep}), idx.index({keep}), c.k);
        for (const bool private_sums : {false, true}) {
          const auto [sums, counts] = sim_cluster_stats(x, idx, c.k, private_sums);
          EXPECT_EQUAL(counts, ref_counts);
          EXPECT_CLOSE(sums, ref_sums, 1e-5, 1e-4);
        }
      }
    }
  }
}

// ---- lookup ----

void test_lookup() {
  for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const at::Tensor codebook = at::randn({30, 7}).to(dtype).t().contiguous().t();  // column-major
    const at::Tensor idx = indices_with_strays(301, 30, at::kLong);
    at::Tensor out = at::empty({301, 7}, codebook.options());
    KVQ_DISPATCH_FLOAT_INPUTS(dtype, "sim", [&] {
      launch(dim3(3), dim3(kc::kBlock), 0, kc::lookup_kernel<scalar_t, int64_t>, codebook.const_data_ptr<scalar_t>(),
             int64_t{30}, int64_t{7}, codebook.stride(0), codebook.stride(1), idx.const_data_ptr<int64_t>(),
             idx.stride(0), int64_t{301}, out.data_ptr<scalar_t>());
    });
    const at::Tensor keep = (idx >= 0) & (idx < 30);
    EXPECT_EQUAL(out.index({keep}), codebook.index_select(0, idx.index({keep})));
    EXPECT(out.index({~keep}).isnan().all().item<bool>());
  }
}

// ---- som_update_ ----

struct SomState {
  at::Tensor w, m, n, step, skipped;
};

SomState som_state(int64_t K, int64_t D) {
  const at::Tensor w = at::randn({K, D});
  return {w, w.clone(), at::rand({K}) + 0.5, at::full({1}, 3, at::kLong), at::zeros({1}, at::kLong)};
}

SomState clone(const SomState& s) { return {s.w.clone(), s.m.clone(), s.n.clone(), s.step.clone(), s.skipped.clone()}; }

struct SomParams {
  std::vector<int64_t> grid;
  kvq::Neighbourhood nb;
  bool update_empty;
  double shrink = 0.1, sigma = 1.5, base = 2.0, decay = 0.9, eps = 1e-5;
};

// som_update_cuda's kernel sequence; the grid-stride kernels run as 3 blocks, so their loops stride.
void sim_som_update(SomState& s, const at::Tensor& S, const at::Tensor& C, const SomParams& p) {
  using kvq::Neighbourhood;
  const auto L = [](auto kernel, auto... args) { launch(dim3(3), dim3(kc::kBlock), 0, kernel, args...); };
  const int64_t K = s.w.size(0), D = s.w.size(1), W = D + 1;
  kc::GridShape g{};
  for (const int64_t size : p.grid) {
    if (size > 1) g.size[g.dims++] = size;
  }
  at::Tensor bad_flag = at::zeros({1}, at::kInt);
  int* bad = bad_flag.data_ptr<int>();
  const int64_t* step = s.step.const_data_ptr<int64_t>();
  L(kc::check_finite_kernel, S.const_data_ptr<float>(), K * D, C.const_data_ptr<float>(), K, bad);
  at::Tensor work = at::empty({K, W}), mixed = work;
  L(kc::pack_kernel, S.const_data_ptr<float>(), C.const_data_ptr<float>(), K, D, work.data_ptr<float>(), bad);
  if (p.nb == Neighbourhood::Exponential) {
    mixed = at::empty_like(work);
    L(kc::exponential_kernel, work.const_data_ptr<float>(), mixed.data_ptr<float>(), K, W, g, p.base, p.shrink, step,
      bad);
  } else if (p.nb != Neighbourhood::None) {
    at::Tensor taps = at::empty({std::max<int64_t>(2, *std::max_element(p.grid.begin(), p.grid.end()))});
    at::Tensor radius = at::empty({1}, at::kLong);
    L(kc::taps_kernel, p.nb == Neighbourhood::Gaussian, g, p.sigma, p.shrink, step, taps.data_ptr<float>(),
      radius.data_ptr<int64_t>(), bad);
    const at::Tensor scratch = at::empty({2, K, W});
    int64_t inner = W;
    for (int a = 0; a < g.dims; ++a) {
      const at::Tensor dst = scratch[a % 2];
      L(kc::axis_pass_kernel, mixed.const_data_ptr<float>(), dst.data_ptr<float>(), K * W, inner, g.size[a],
        taps.const_data_ptr<float>(), radius.const_data_ptr<int64_t>(), bad);
      mixed = dst;
      inner *= g.size[a];
    }
    if (p.nb == Neighbourhood::Hard) {
      L(kc::hard_mix_kernel, mixed.data_ptr<float>(), work.const_data_ptr<float>(), K * W, p.shrink, step, bad);
    }
  }
  if (p.nb != Neighbourhood::None) {
    L(kc::check_finite_kernel, mixed.const_data_ptr<float>(), K * W, static_cast<const float*>(nullptr), int64_t{0},
      bad);
  }
  if (p.nb == Neighbourhood::Gaussian && !p.update_empty) {
    at::Tensor dist2 = at::empty({2, K}, at::kLong);
    int64_t* src = dist2[0].data_ptr<int64_t>();
    int64_t* dst = dist2[1].data_ptr<int64_t>();
    L(kc::nearest_init_kernel, C.const_data_ptr<float>(), K, src, bad);
    int64_t stride = 1;
    for (int a = 0; a < g.dims; ++a) {
      L(kc::nearest_axis_kernel, static_cast<const int64_t*>(src), dst, K, stride, g.size[a], p.sigma, p.shrink, step,
        bad);
      std::swap(src, dst);
      stride *= g.size[a];
    }
    L(kc::drop_unwritten_kernel, static_cast<const int64_t*>(src), K, mixed.data_ptr<float>(), W, p.sigma, p.shrink,
      step, bad);
  }
  const float keep = static_cast<float>(p.decay), take = static_cast<float>(1.0 - p.decay);
  const auto counts = [&](bool only_written) {
    L(kc::ema_counts_kernel, s.n.data_ptr<float>(), mixed.const_data_ptr<float>(), K, W, keep, take, only_written,
      static_cast<const int*>(bad));
  };
  const auto rows = [&] {
    L(kc::ema_rows_kernel, s.w.data_ptr<float>(), s.m.data_ptr<float>(), s.n.const_data_ptr<float>(),
      mixed.const_data_ptr<float>(), K, D, keep, take, p.update_empty, static_cast<const int*>(bad));
  };
  if (p.update_empty) {
    counts(false);
    launch(dim3(1), dim3(kc::kReduceThreads), 0, kc::smooth_counts_kernel, s.n.data_ptr<float>(), K, p.eps,
           static_cast<const int*>(bad));
    rows();
  } else {
    rows();
    counts(true);
  }
  launch(dim3(1), dim3(1), 0, kc::advance_counters_kernel, s.step.data_ptr<int64_t>(), s.skipped.data_ptr<int64_t>(),
         static_cast<const int*>(bad));
}

const char* neighbourhood_name(kvq::Neighbourhood nb) {
  switch (nb) {
    case kvq::Neighbourhood::None: return "none";
    case kvq::Neighbourhood::Hard: return "hard";
    case kvq::Neighbourhood::Gaussian: return "gaussian";
    case kvq::Neighbourhood::Exponential: return "exponential";
  }
  return "";
}

// Each neighbourhood, with and without update_empty, on 1-, 2- and 3-axis grids (one axis of size 1), from
// batches that leave some codes empty; then a batch with a NaN, which must change nothing but `skipped`.
void test_som_update() {
  using kvq::Neighbourhood;
  const std::vector<std::vector<int64_t>> grids = {{1}, {9}, {4, 5}, {3, 1, 4}};
  for (const auto& grid : grids) {
    const int64_t K = std::accumulate(grid.begin(), grid.end(), int64_t{1}, std::multiplies<>()), D = 3;
    for (const Neighbourhood nb :
         {Neighbourhood::None, Neighbourhood::Hard, Neighbourhood::Gaussian, Neighbourhood::Exponential}) {
      for (const bool update_empty : {true, false}) {
        const SomParams p{grid, nb, update_empty};
        const SomState start = som_state(K, D);
        const at::Tensor counts = at::randint(0, 3, {K}).to(at::kFloat);  // about a third of the codes empty
        const at::Tensor sums = at::randn({K, D}) * counts.unsqueeze(1);
        SomState sim = clone(start), cpu = clone(start);
        sim_som_update(sim, sums, counts, p);
        kohonen_vq::som_update_(cpu.w, cpu.m, cpu.n, cpu.step, cpu.skipped, sums, counts, grid,
                                neighbourhood_name(nb), p.shrink, p.sigma, p.base, p.decay, p.eps, update_empty);
        EXPECT_CLOSE(sim.w, cpu.w, 1e-5, 1e-6);
        EXPECT_CLOSE(sim.m, cpu.m, 1e-5, 1e-6);
        EXPECT_CLOSE(sim.n, cpu.n, 1e-5, 1e-6);
        EXPECT_EQUAL(sim.step, cpu.step);
        EXPECT_EQUAL(sim.skipped, cpu.skipped);

        at::Tensor poisoned = sums.clone();
        poisoned[K - 1][D - 1] = std::numeric_limits<float>::quiet_NaN();
        SomState skipped = clone(start);
        sim_som_update(skipped, poisoned, counts, p);
        EXPECT_EQUAL(skipped.w, start.w);
        EXPECT_EQUAL(skipped.n, start.n);
        EXPECT(skipped.step.item<int64_t>() == 3 && skipped.skipped.item<int64_t>() == 1);
      }
    }
  }
}

}  // namespace

int main() {
  at::manual_seed(0);
  kvq_test::run("simulator: barriers, shuffles, deadlock and launch checks", test_simulator);
  kvq_test::run("assign kernels (exact, tf32): shapes, dtypes, K splits", test_assign_searches);
  kvq_test::run("assign kernels: non-contiguous x, ties, NaN rows", test_assign_layouts_ties_nan);
  kvq_test::run("cluster_stats kernels (atomic, shared-memory partials), rounding", test_cluster_stats);
  kvq_test::run("lookup kernel", test_lookup);
  kvq_test::run("som_update_ kernels: every neighbourhood, update_empty, non-finite batches", test_som_update);
  return kvq_test::summary();
}
