// CUDA kernel of kohonen_vq::assign: a fused, tiled fp32 "distance + argmin" that never forms N x K.
// Each block takes 128 rows x a range of 128-code tiles; each thread accumulates an 8 x 8 micro-tile of
// dot products x.w in registers (in ascending d, with FMAs, exactly as the CPU kernels do), turns it into
// ||w||^2 - 2 x.w and folds it into a running minimum per row. Blocks that share rows (K split across
// blockIdx.y, for small N) merge through a 64-bit atomicMin on (order-preserving distance bits, index),
// which yields the smallest distance and, on ties, the lowest index. A last kernel decodes the key and
// recomputes the winner's distance exactly as sum((x - w)^2). Extra memory: fp32 codebook copy, norms, keys.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "checks.h"
#include "cuda/cuda_utils.cuh"

namespace kvq::cuda {
namespace {

constexpr int kTileRows = 128;   // rows of x per block
constexpr int kTileCodes = 128;  // codes per tile
constexpr int kTileDims = 8;     // vector components per shared-memory stage
constexpr int kMicro = 8;        // each thread: 8 rows x 8 codes
constexpr int kSide = 16;        // 16 x 16 threads
constexpr int kThreads = kSide * kSide;
constexpr int kHalfTile = kTileRows / 2;
// Row padding of the transposed tiles: keeps float4 alignment and makes the tile stores conflict-free.
constexpr int kPad = 4;
constexpr int kLoadsPerThread = kTileRows * kTileDims / kThreads;
static_assert(kTileRows == kTileCodes && kTileRows == kSide * kMicro, "square tiles, 8 x 8 per thread");
static_assert(kThreads % kTileDims == 0, "each thread loads one fixed component of the tiles");

// Rows (and codes) of a thread's micro-tile: two groups of 4 consecutive, 64 apart, so the float4 shared
// loads are conflict-free. Ascending in i, so codes are visited in ascending order.
__device__ __forceinline__ int micro_offset(int lane16, int i) {
  return (i < 4 ? 0 : kHalfTile) + lane16 * 4 + (i & 3);
}

// Order-preserving map of a float to 32 bits (as unsigned), in the high half; the index in the low half.
// Adding +0 turns -0 into +0 so that equal distances tie and the lower index wins.
__device__ __forceinline__ unsigned long long argmin_key(float dist, int index) {
  unsigned int bits = __float_as_uint(dist + 0.f);
  bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(bits) << 32) | static_cast<unsigned int>(index);
}

// ||w_k||^2 with the same FMA chain as the CPU packing.
__global__ void norms_kernel(const float* __restrict__ w, int64_t K, int64_t D, float* __restrict__ norms) {
  for (int64_t k = thread_index(); k < K; k += thread_count()) {
    float s = 0.f;
    for (int64_t d = 0; d < D; ++d) s = fmaf(w[k * D + d], w[k * D + d], s);
    norms[k] = s;
  }
}

// One kTileDims-wide stage of the x tile (rows) or the codebook tile (codes), staged in registers so the
// global loads of the next stage overlap the arithmetic of the current one.
struct Stage {
  float x[kLoadsPerThread];
  float w[kLoadsPerThread];
};

template <typename scalar_t>
__device__ __forceinline__ void load_stage(Stage& s, const scalar_t* __restrict__ x, int64_t N, int64_t D,
                                           int64_t sx0, int64_t sx1, const float* __restrict__ w, int64_t K,
                                           int64_t row0, int64_t code0, int64_t d0) {
  // Thread t loads component t % kTileDims of rows (codes) t / kTileDims + q * (kThreads / kTileDims):
  // neighbouring threads read neighbouring components of a row, coalesced for contiguous inputs.
  const int64_t d = d0 + threadIdx.x % kTileDims;
  const int r0 = threadIdx.x / kTileDims;
#pragma unroll
  for (int q = 0; q < kLoadsPerThread; ++q) {
    const int r = r0 + q * (kThreads / kTileDims);
    const int64_t row = row0 + r, code = code0 + r;
    s.x[q] = (row < N && d < D) ? static_cast<float>(x[row * sx0 + d * sx1]) : 0.f;
    s.w[q] = (code < K && d < D) ? w[code * D + d] : 0.f;
  }
}

__device__ __forceinline__ void store_stage(const Stage& s, float (*xs)[kTileRows + kPad],
                                            float (*ws)[kTileCodes + kPad]) {
  const int d = threadIdx.x % kTileDims, r0 = threadIdx.x / kTileDims;
#pragma unroll
  for (int q = 0; q < kLoadsPerThread; ++q) {
    xs[d][r0 + q * (kThreads / kTileDims)] = s.x[q];
    ws[d][r0 + q * (kThreads / kTileDims)] = s.w[q];
  }
}

__device__ __forceinline__ void load_micro(const float* row, int lane16, float (&v)[kMicro]) {
  const float4 lo = *reinterpret_cast<const float4*>(row + lane16 * 4);
  const float4 hi = *reinterpret_cast<const float4*>(row + kHalfTile + lane16 * 4);
  v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w;
  v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
}

// Per row: running (smallest distance, its lowest code) over the block's code tiles, merged into keys[row].
// Padding rows and components are zeros (adding exact zeros keeps every dot product bit-identical);
// padding codes get an infinite norm, and infinite or NaN distances never pass the strict "<", so a row
// that only sees those (e.g. a row containing NaN) keeps index 0, as on the CPU.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 2)
    argmin_kernel(const scalar_t* __restrict__ x, int64_t N, int64_t D, int64_t sx0, int64_t sx1,
                  const float* __restrict__ w, const float* __restrict__ norms, int64_t K,
                  int64_t tiles_per_split, unsigned long long* __restrict__ keys) {
  __shared__ __align__(16) float xs[kTileDims][kTileRows + kPad];
  __shared__ __align__(16) float ws[kTileDims][kTileCodes + kPad];
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
  const int64_t row0 = int64_t{blockIdx.x} * kTileRows;
  const int64_t num_tiles = (K + kTileCodes - 1) / kTileCodes;
  const int64_t tile_end = std::min(num_tiles, (blockIdx.y + 1) * tiles_per_split);

  float best[kMicro];
  int best_code[kMicro];
#pragma unroll
  for (int i = 0; i < kMicro; ++i) best[i] = INFINITY, best_code[i] = 0;

  for (int64_t tile = blockIdx.y * tiles_per_split; tile < tile_end; ++tile) {
    const int64_t code0 = tile * kTileCodes;
    float acc[kMicro][kMicro] = {};
    Stage stage;
    load_stage(stage, x, N, D, sx0, sx1, w, K, row0, code0, 0);
    for (int64_t d0 = 0; d0 < D; d0 += kTileDims) {
      store_stage(stage, xs, ws);
      __syncthreads();
      if (d0 + kTileDims < D) load_stage(stage, x, N, D, sx0, sx1, w, K, row0, code0, d0 + kTileDims);
#pragma unroll
      for (int d = 0; d < kTileDims; ++d) {
        float a[kMicro], b[kMicro];
        load_micro(xs[d], ty, a);
        load_micro(ws[d], tx, b);
#pragma unroll
        for (int i = 0; i < kMicro; ++i)
#pragma unroll
          for (int j = 0; j < kMicro; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kMicro; ++j) {
      const int64_t code = code0 + micro_offset(tx, j);
      const float wn = code < K ? norms[code] : INFINITY;
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        const float dist = fmaf(acc[i][j], -2.f, wn);
        // Codes arrive in ascending order per row, so strict "<" keeps the lowest index of a tie.
        if (dist < best[i]) best[i] = dist, best_code[i] = static_cast<int>(code);
      }
    }
  }

  // The 16 threads sharing a row group are 16 consecutive lanes: butterfly min over them.
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    unsigned long long key = argmin_key(best[i], best_code[i]);
#pragma unroll
    for (int offset = kSide / 2; offset > 0; offset /= 2) key = min(key, __shfl_xor_sync(0xffffffffu, key, offset));
    const int64_t row = row0 + micro_offset(ty, i);
    if (tx == i && row < N) atomicMin(keys + row, key);
  }
}

// Decodes the winning index and recomputes its distance exactly, as the CPU path does.
template <typename scalar_t>
__global__ void finish_kernel(const scalar_t* __restrict__ x, int64_t N, int64_t D, int64_t sx0, int64_t sx1,
                              const float* __restrict__ w, const unsigned long long* __restrict__ keys,
                              int64_t* __restrict__ indices, float* __restrict__ sqdist) {
  for (int64_t row = thread_index(); row < N; row += thread_count()) {
    const int64_t k = static_cast<int64_t>(keys[row] & 0xffffffffu);
    float s = 0.f;
    for (int64_t d = 0; d < D; ++d) {
      const float diff = static_cast<float>(x[row * sx0 + d * sx1]) - w[k * D + d];
      s = fmaf(diff, diff, s);
    }
    indices[row] = k;
    sqdist[row] = s;
  }
}

// Code tiles per block: split K across blocks only when the row tiles alone cannot fill the device.
int64_t tiles_per_split(int64_t row_tiles, int64_t code_tiles) {
  const int64_t want_blocks = int64_t{2} * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t splits = std::clamp<int64_t>((want_blocks + row_tiles - 1) / row_tiles, 1, code_tiles);
  return (code_tiles + splits - 1) / splits;
}

std::tuple<at::Tensor, at::Tensor> assign_cuda(const at::Tensor& x, const at::Tensor& codebook) {
  check_assign_args(x, codebook);
  const int64_t N = x.size(0), K = codebook.size(0), D = x.size(1);
  TORCH_CHECK(K <= std::numeric_limits<int32_t>::max(), "kohonen_vq.assign: K = ", K, " codes exceeds 2^31 - 1");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor indices = at::empty({N}, x.options().dtype(at::kLong));
  at::Tensor sqdist = at::empty({N}, x.options().dtype(at::kFloat));
  if (N == 0) return {indices, sqdist};

  const at::Tensor w = codebook.to(at::kFloat).contiguous();
  const at::Tensor norms = at::empty({K}, w.options());
  // All ones = larger than any real key, so the first atomicMin always lands.
  const at::Tensor keys = at::full({N}, -1, x.options().dtype(at::kLong));
  auto* pkeys = reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  norms_kernel<<<grid_stride_blocks(K), kBlock, 0, stream>>>(w.const_data_ptr<float>(), K, D,
                                                             norms.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const int64_t row_tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t code_tiles = (K + kTileCodes - 1) / kTileCodes;
  TORCH_CHECK(row_tiles <= std::numeric_limits<int32_t>::max(), "kohonen_vq.assign: N = ", N, " rows is too many");
  const int64_t per_split = tiles_per_split(row_tiles, code_tiles);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>((code_tiles + per_split - 1) / per_split));
  KVQ_DISPATCH_FLOAT_INPUTS(x.scalar_type(), "kohonen_vq_assign_cuda", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    argmin_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(px, N, D, x.stride(0), x.stride(1),
                                                           w.const_data_ptr<float>(), norms.const_data_ptr<float>(),
                                                           K, per_split, pkeys);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<scalar_t><<<grid_stride_blocks(N), kBlock, 0, stream>>>(
        px, N, D, x.stride(0), x.stride(1), w.const_data_ptr<float>(), pkeys, indices.data_ptr<int64_t>(),
        sqdist.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {indices, sqdist};
}

}  // namespace

TORCH_LIBRARY_IMPL(kohonen_vq, CUDA, m) { m.impl("assign", &assign_cuda); }

}  // namespace kvq::cuda
