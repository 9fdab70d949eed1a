// CPU kernel of kohonen_vq::som_update_ (METHOD.md §2-3): neighbourhood mixing of the batch statistics
// as stencils on the grid (separable per axis for hard and Gaussian), then the EMA update, Laplace
// smoothing and w = m / N, all in place. A non-finite batch only increments `skipped`.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "neighbourhood.h"

namespace kvq::cpu {
namespace {

// Below this many float operations a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 16;
int64_t grain_rows(int64_t work_per_row) { return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, work_per_row)); }

// Rows of `width` floats (D sums and the count) for K codes laid out on `grid`, axis 0 fastest.
struct GridRows {
  std::vector<int64_t> grid;
  int64_t width;
  int64_t codes() const {
    int64_t k = 1;
    for (int64_t s : grid) k *= s;
    return k;
  }
};

// out[.., i, ..] = sum_{|j - i| <= r} taps[|i - j|] in[.., j, ..] along one grid axis.
void axis_pass(const GridRows& g, int64_t axis, const std::vector<float>& taps, const float* in, float* out) {
  int64_t inner = g.width;
  for (int64_t a = 0; a < axis; ++a) inner *= g.grid[a];
  const int64_t size = g.grid[axis];
  const int64_t outer = g.codes() * g.width / (inner * size);
  const int64_t radius = static_cast<int64_t>(taps.size()) - 1;
  at::parallel_for(0, outer * size, grain_rows(inner), [&](int64_t b, int64_t e) {
    for (int64_t oi = b; oi < e; ++oi) {
      const int64_t o = oi / size, i = oi % size;
      float* dst = out + (o * size + i) * inner;
      for (int64_t l = 0; l < inner; ++l) dst[l] = 0.f;
      const int64_t j0 = std::max<int64_t>(0, i - radius), j1 = std::min(size - 1, i + radius);
      for (int64_t j = j0; j <= j1; ++j) {
        const float wgt = taps[std::abs(i - j)];
        const float* src = in + (o * size + j) * inner;
        for (int64_t l = 0; l < inner; ++l) dst[l] += wgt * src[l];
      }
    }
  });
}

// Applies the same per-axis taps along every axis of length > 1; the result ends in `buf`.
void separable(const GridRows& g, const std::vector<float>& taps, std::vector<float>& buf,
               std::vector<float>& tmp) {
  for (int64_t a = 0; a < static_cast<int64_t>(g.grid.size()); ++a) {
    if (g.grid[a] == 1) continue;
    axis_pass(g, a, taps, buf.data(), tmp.data());
    buf.swap(tmp);
  }
}

// Non-separable exponential kernel exp(-||d|| rate): direct sum over the box where weights are non-zero.
void exponential(const GridRows& g, double rate, const std::vector<float>& in, std::vector<float>& out) {
  const int64_t dims = static_cast<int64_t>(g.grid.size()), K = g.codes(), W = g.width;
  int64_t radius = 0;
  for (int64_t s : g.grid) radius = std::max(radius, exponential_radius(rate, s));
  at::parallel_for(0, K, grain_rows(W * (2 * radius + 1)), [&](int64_t b, int64_t e) {
    std::vector<int64_t> c(dims), lo(dims), hi(dims), j(dims);
    for (int64_t k = b; k < e; ++k) {
      for (int64_t a = 0, r = k; a < dims; ++a) {
        c[a] = r % g.grid[a];
        r /= g.grid[a];
        lo[a] = std::max<int64_t>(0, c[a] - radius);
        hi[a] = std::min(g.grid[a] - 1, c[a] + radius);
        j[a] = lo[a];
      }
      float* dst = out.data() + k * W;
      for (int64_t l = 0; l < W; ++l) dst[l] = 0.f;
      while (true) {  // odometer over the box, axis 0 fastest
        int64_t d2 = 0, code = 0, mult = 1;
        for (int64_t a = 0; a < dims; ++a) {
          d2 += (j[a] - c[a]) * (j[a] - c[a]);
          code += j[a] * mult;
          mult *= g.grid[a];
        }
        const float wgt = exponential_weight(d2, static_cast<float>(rate));
        if (wgt > 0.f) {
          const float* src = in.data() + code * W;
          for (int64_t l = 0; l < W; ++l) dst[l] += wgt * src[l];
        }
        int64_t a = 0;
        while (a < dims && j[a] == hi[a]) j[a] = lo[a], ++a;
        if (a == dims) break;
        ++j[a];
      }
    }
  });
}

// Which codes get a non-zero Gaussian write (see kFarDist2 in neighbourhood.h).
std::vector<uint8_t> gaussian_written(const GridRows& g, const float* counts, double inv_width2) {
  const int64_t K = g.codes();
  std::vector<int64_t> dist2(static_cast<size_t>(K)), next(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) dist2[k] = counts[k] > 0.f ? 0 : kFarDist2;
  for (int64_t a = 0, stride = 1; a < static_cast<int64_t>(g.grid.size()); stride *= g.grid[a], ++a) {
    const int64_t size = g.grid[a], radius = gaussian_radius(inv_width2, size);
    for (int64_t k = 0; k < K; ++k) next[k] = nearest_dist2_along_axis(dist2.data(), k, stride, size, radius);
    dist2.swap(next);
  }
  std::vector<uint8_t> written(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) written[k] = gaussian_writes(dist2[k], inv_width2);
  return written;
}

bool all_finite(const float* p, int64_t n) {
  return at::parallel_reduce(
      0, n, kParallelGrain, true,
      [&](int64_t b, int64_t e, bool ok) {
        for (int64_t i = b; i < e && ok; ++i) ok = std::isfinite(p[i]);
        return ok;
      },
      [](bool a, bool b) { return a && b; });
}

void som_update_cpu(at::Tensor& codebook, at::Tensor& ema_sums, at::Tensor& ema_counts, at::Tensor& step,
                    at::Tensor& skipped, const at::Tensor& sums, const at::Tensor& counts,
                    c10::IntArrayRef grid, c10::string_view neighbourhood, double shrink, double sigma,
                    double base, double decay, double eps, bool update_empty) {
  const Neighbourhood nb = check_som_update_args(codebook, ema_sums, ema_counts, step, skipped, sums, counts,
                                                 grid, std::string(neighbourhood), shrink, sigma, base, decay, eps);
  const int64_t K = codebook.size(0), D = codebook.size(1), W = D + 1;
  const at::Tensor S = sums.contiguous(), C = counts.contiguous();
  if (!all_finite(S.const_data_ptr<float>(), K * D) || !all_finite(C.const_data_ptr<float>(), K)) {
    skipped.add_(1);
    return;
  }
  const int64_t t = step.item<int64_t>();

  // [S' | c'] per code: the batch statistics mixed through A^(t).
  GridRows g{std::vector<int64_t>(grid.begin(), grid.end()), W};
  std::vector<float> mixed(static_cast<size_t>(K * W));
  std::vector<uint8_t> written;  // only for Gaussian without update_empty, see gaussian_written
  const float* ps = S.const_data_ptr<float>();
  const float* pc = C.const_data_ptr<float>();
  for (int64_t k = 0; k < K; ++k) {
    std::copy(ps + k * D, ps + (k + 1) * D, mixed.begin() + k * W);
    mixed[k * W + D] = pc[k];
  }
  if (nb != Neighbourhood::None) {
    std::vector<float> tmp(mixed.size());
    if (nb == Neighbourhood::Hard) {
      // A = (1 - a) I + a (box_0 ⊗ box_1 ⊗ ...): diagonal 1, weight a within Chebyshev distance 1.
      const std::vector<float> original = mixed;
      separable(g, {1.f, 1.f}, mixed, tmp);
      const float a = static_cast<float>(hard_neighbour_weight(shrink, t));
      for (size_t i = 0; i < mixed.size(); ++i) mixed[i] = a * mixed[i] + (1.f - a) * original[i];
    } else if (nb == Neighbourhood::Gaussian) {
      const double inv2 = gaussian_inv_width2(sigma, shrink, t);
      int64_t radius = 0;
      for (int64_t s : g.grid) radius = std::max(radius, gaussian_radius(inv2, s));
      std::vector<float> taps(static_cast<size_t>(radius + 1));
      for (int64_t d = 0; d <= radius; ++d) taps[d] = gaussian_weight(d * d, inv2);
      if (!update_empty) written = gaussian_written(g, C.const_data_ptr<float>(), inv2);
      separable(g, taps, mixed, tmp);
    } else {
      exponential(g, exponential_rate(base, shrink, t), mixed, tmp);
      mixed.swap(tmp);
    }
  }

  // Finite sums can still overflow float32 when neighbours are added up: such a batch is skipped too.
  if (nb != Neighbourhood::None && !all_finite(mixed.data(), K * W)) {
    skipped.add_(1);
    return;
  }

  float* w = codebook.data_ptr<float>();
  float* m = ema_sums.data_ptr<float>();
  float* n = ema_counts.data_ptr<float>();
  const float keep = static_cast<float>(decay), take = static_cast<float>(1.0 - decay);
  if (update_empty) {
    // Every code decays; Laplace smoothing of the counts is stored back (METHOD.md §2).
    double total = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      n[k] = keep * n[k] + take * mixed[k * W + D];
      total += n[k];
    }
    // With no counts at all the smoothed counts are 0 (not 0/0); w is then left as it is.
    const double scale = total > 0.0 ? total / (total + static_cast<double>(K) * eps) : 0.0;
    at::parallel_for(0, K, grain_rows(D), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const float smoothed = static_cast<float>((static_cast<double>(n[k]) + eps) * scale);
        n[k] = smoothed;
        for (int64_t d = 0; d < D; ++d) {
          float& md = m[k * D + d];
          md = keep * md + take * mixed[k * W + d];
          if (smoothed > 0.f) w[k * D + d] = md / smoothed;
        }
      }
    });
  } else {
    // Codes with no (neighbourhood-weighted) writes keep N, m and w; the others are not smoothed.
    at::parallel_for(0, K, grain_rows(D), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const float c = mixed[k * W + D];
        if (c == 0.f || (!written.empty() && !written[k])) continue;
        n[k] = keep * n[k] + take * c;
        for (int64_t d = 0; d < D; ++d) {
          float& md = m[k * D + d];
          md = keep * md + take * mixed[k * W + d];
          if (n[k] != 0.f) w[k * D + d] = md / n[k];
        }
      }
    });
  }
  step.add_(1);
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CPU, m) { m.impl("som_update_", &som_update_cpu); }

}  // namespace kvq::cpu
