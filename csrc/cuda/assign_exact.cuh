// Kernels of the exact CUDA assign (launched by assign_cuda.cu): the tiled fp32 search, the codebook norms
// and the finishing pass. See assign_cuda.cu for the algorithm.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/argmin_key.cuh"
#include "cuda/device_runtime.cuh"

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

// Per-row FMA chains (||w_k||^2, and the winner's distance) keep the CPU's order, one thread a row, ascending
// d. Read straight from global memory, each thread's chain waits on one scattered load per component (a
// 64-step latency chain). Instead a block stages kChainDims components of its kBlock rows in shared memory
// with coalesced loads, then each thread runs its chain from there.
constexpr int kChainDims = 32;

template <typename T>
__device__ __forceinline__ void stage_rows(float (*xs)[kChainDims + 1], const T* __restrict__ x, int64_t row0,
                                           int64_t N, int64_t s0, int64_t s1, int64_t d0, int64_t D) {
  const int lane = threadIdx.x % kChainDims, first = threadIdx.x / kChainDims;
  const int64_t d = d0 + lane;
#pragma unroll 8
  for (int r = first; r < kBlock; r += kBlock / kChainDims) {
    xs[r][lane] = (d < D && row0 + r < N) ? static_cast<float>(x[(row0 + r) * s0 + d * s1]) : 0.f;
  }
}

// ||w_k||^2 with the same FMA chain as the CPU packing. The launch also sets the N merge keys to all ones,
// larger than any real key, so that the first atomicMin on each lands: one kernel less than a separate fill.
// The grid covers max(K, some of N) threads; blocks past the codes only fill keys.
__global__ void norms_kernel(const float* __restrict__ w, int64_t K, int64_t D, float* __restrict__ norms,
                             unsigned long long* __restrict__ keys, int64_t N) {
  __shared__ float ws[kBlock][kChainDims + 1];
  for (int64_t i = thread_index(); i < N; i += thread_count()) keys[i] = ~0ull;
  const int64_t k0 = int64_t{blockIdx.x} * kBlock;
  if (k0 >= K) return;  // the whole block: the barriers below see all of a block's threads or none
  float s = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kChainDims) {
    stage_rows(ws, w, k0, K, D, int64_t{1}, d0, D);
    __syncthreads();
    const int len = static_cast<int>(std::min<int64_t>(kChainDims, D - d0));
    for (int j = 0; j < len; ++j) s = fmaf(ws[threadIdx.x][j], ws[threadIdx.x][j], s);
    __syncthreads();
  }
  if (k0 + threadIdx.x < K) norms[k0 + threadIdx.x] = s;
}

// A thread's share of the global loads of one tile: component `lane` = t % kTileDims of the rows (codes)
// first + q * kStageStride, q < kLoadsPerThread, with first = t / kTileDims. Neighbouring threads read
// neighbouring components of a row, coalesced for contiguous inputs. The pointer advances by one stage
// at a time, which keeps the per-stage address arithmetic to a few additions.
constexpr int kStageStride = kThreads / kTileDims;
template <typename T>
struct TileReader {
  const T* p;          // this thread's element (first, lane) of the current stage; read only where it exists
  int64_t row_step;    // kStageStride rows further
  int64_t stage_step;  // kTileDims components further
  int rows;            // rows of the tile that exist
};

template <typename T>
__device__ __forceinline__ TileReader<T> tile_reader(const T* base, int64_t first_row, int64_t num_rows, int64_t s0,
                                                     int64_t s1) {
  const int first = threadIdx.x / kTileDims, lane = threadIdx.x % kTileDims;
  return {base + (first_row + first) * s0 + lane * s1, kStageStride * s0, kTileDims * s1,
          static_cast<int>(std::min<int64_t>(num_rows - first_row, kTileRows))};
}

// One kTileDims-wide stage of both tiles, staged in registers so the global loads of the next stage
// overlap the arithmetic of the current one. Missing rows and components read as 0.
struct Stage {
  float x[kLoadsPerThread];
  float w[kLoadsPerThread];
};

template <typename T>
__device__ __forceinline__ void read_stage(float (&v)[kLoadsPerThread], TileReader<T>& src, bool d_ok) {
  const int first = threadIdx.x / kTileDims;
#pragma unroll
  for (int q = 0; q < kLoadsPerThread; ++q) {
    v[q] = (d_ok && first + q * kStageStride < src.rows) ? static_cast<float>(src.p[q * src.row_step]) : 0.f;
  }
  src.p += src.stage_step;
}

template <typename scalar_t>
__device__ __forceinline__ void load_stage(Stage& s, TileReader<scalar_t>& x, TileReader<float>& w, int64_t d0,
                                           int64_t D) {
  const bool d_ok = d0 + threadIdx.x % kTileDims < D;
  read_stage(s.x, x, d_ok);
  read_stage(s.w, w, d_ok);
}

__device__ __forceinline__ void store_stage(const Stage& s, float (*xs)[kTileRows + kPad],
                                            float (*ws)[kTileCodes + kPad]) {
  const int lane = threadIdx.x % kTileDims, first = threadIdx.x / kTileDims;
#pragma unroll
  for (int q = 0; q < kLoadsPerThread; ++q) {
    xs[lane][first + q * kStageStride] = s.x[q];
    ws[lane][first + q * kStageStride] = s.w[q];
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
  // Each thread's running minimum for its 8 rows, in shared memory to keep the registers for the tile.
  __shared__ float best_dist[kMicro][kThreads];
  __shared__ int best_code[kMicro][kThreads];
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
  const int64_t row0 = int64_t{blockIdx.x} * kTileRows;
  const int64_t num_tiles = (K + kTileCodes - 1) / kTileCodes;
  const int64_t tile_end = std::min(num_tiles, (blockIdx.y + 1) * tiles_per_split);

#pragma unroll
  for (int i = 0; i < kMicro; ++i) best_dist[i][threadIdx.x] = INFINITY, best_code[i][threadIdx.x] = 0;

  // One flat loop over (code tile, stage): the stage read ahead in registers runs on into the next tile,
  // so the global loads never stall the pipeline at a tile boundary (K = 512 has only 4 tiles a block).
  int64_t tile = blockIdx.y * tiles_per_split, d0 = 0;
  TileReader<scalar_t> x_tile = tile_reader(x, row0, N, sx0, sx1);
  TileReader<float> w_tile = tile_reader(w, tile * kTileCodes, K, D, int64_t{1});
  float acc[kMicro][kMicro] = {};
  Stage stage;
  if (tile < tile_end) load_stage(stage, x_tile, w_tile, 0, D);
  while (tile < tile_end) {
    store_stage(stage, xs, ws);
    __syncthreads();
    const bool last_stage = d0 + kTileDims >= D;
    const int64_t next_tile = last_stage ? tile + 1 : tile, next_d0 = last_stage ? 0 : d0 + kTileDims;
    if (last_stage && next_tile < tile_end) {
      x_tile = tile_reader(x, row0, N, sx0, sx1);
      w_tile = tile_reader(w, next_tile * kTileCodes, K, D, int64_t{1});
    }
    if (next_tile < tile_end) load_stage(stage, x_tile, w_tile, next_d0, D);
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
    if (last_stage) {
      const int64_t code0 = tile * kTileCodes;
      float wn[kMicro];
#pragma unroll
      for (int j = 0; j < kMicro; ++j) {
        const int64_t code = code0 + micro_offset(tx, j);
        wn[j] = code < K ? norms[code] : INFINITY;
      }
#pragma unroll
      for (int i = 0; i < kMicro; ++i) {
        float bd = best_dist[i][threadIdx.x];
        int bc = best_code[i][threadIdx.x];
        // Codes arrive in ascending order per row, so strict "<" keeps the lowest index of a tie.
#pragma unroll
        for (int j = 0; j < kMicro; ++j) {
          const float dist = fmaf(acc[i][j], -2.f, wn[j]);
          if (dist < bd) bd = dist, bc = static_cast<int>(code0 + micro_offset(tx, j));
          acc[i][j] = 0.f;
        }
        best_dist[i][threadIdx.x] = bd;
        best_code[i][threadIdx.x] = bc;
      }
    }
    tile = next_tile, d0 = next_d0;
  }

  // The 16 threads sharing a row group are 16 consecutive lanes: butterfly min over them.
#pragma unroll
  for (int i = 0; i < kMicro; ++i) {
    unsigned long long key = argmin_key(best_dist[i][threadIdx.x], best_code[i][threadIdx.x]);
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
  __shared__ float xs[kBlock][kChainDims + 1];
  const int64_t row0 = int64_t{blockIdx.x} * kBlock, row = row0 + threadIdx.x;
  const int64_t k = row < N ? static_cast<int64_t>(keys[row] & 0xffffffffu) : 0;
  float s = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kChainDims) {
    stage_rows(xs, x, row0, N, sx0, sx1, d0, D);
    __syncthreads();
    const int len = static_cast<int>(std::min<int64_t>(kChainDims, D - d0));
    const float* code = w + k * D + d0;
    for (int j = 0; j < len; ++j) {
      const float diff = xs[threadIdx.x][j] - code[j];
      s = fmaf(diff, diff, s);
    }
    __syncthreads();
  }
  if (row < N) indices[row] = k, sqdist[row] = s;
}

}  // namespace
}  // namespace kvq::cuda
