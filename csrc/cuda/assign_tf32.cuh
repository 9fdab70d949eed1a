// The "tf32" search of kohonen_vq::assign: the same fused "distance + argmin" as the exact kernel, with
// the dot products x.w on the tensor cores (mma.sync m16n8k8, TF32 inputs rounded to nearest, fp32
// accumulation). A block takes 128 rows x a range of 128-code tiles; its 8 warps each own 32 rows x 64
// codes (2 x 8 MMA tiles, 64 accumulators a thread). The x tile is converted to TF32 into shared memory
// once (for D <= 128); code tiles stream through shared memory 32 components at a time, read ahead in
// registers. The epilogue reads the accumulators in their documented register layout
// (rows g and g + 8, codes 2t and 2t + 1 of each 16 x 8 tile, g = lane / 4, t = lane % 4), so no
// accumulator passes through shared memory. Results merge through the same 64-bit atomicMin keys as the
// exact kernel; finish_kernel then recomputes the winner's distance in fp32.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/argmin_key.cuh"

namespace kvq::cuda::tf32 {

constexpr int kRows = 128;        // rows of x per block
constexpr int kCodes = 128;       // codes per tile
constexpr int kDims = 32;         // components per shared-memory stage (4 MMA k-steps)
constexpr int kThreads = 256;     // 8 warps: 4 along rows x 2 along codes
constexpr int kWarpRows = 32;     // rows per warp: 2 MMA tiles of 16
constexpr int kWarpCodes = 64;    // codes per warp: 8 MMA tiles of 8
constexpr int kMTiles = kWarpRows / 16;
constexpr int kNTiles = kWarpCodes / 8;
// Row stride of the shared tiles: 36 puts the 32 lanes' fragment reads (row g, component t) on 32 banks.
constexpr int kStride = kDims + 4;
constexpr int kRowsPerPass = kThreads / kDims;  // rows one pass of the block's loads covers
constexpr int kLoads = kRows / kRowsPerPass;    // values of each tile a thread loads per stage
static_assert(kRows == 4 * kWarpRows && kCodes == 2 * kWarpCodes, "8 warps cover the 128 x 128 tile");

__device__ __forceinline__ uint32_t to_tf32(float v) {
#ifdef KVQ_CUDA_SIM
  return ::kvq_sim::to_tf32(v);
#else
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(out) : "f"(v));
  return out;
#endif
}

// c += a (16 x 8, row-major fragment) * b (8 x 8, column fragment), TF32 in, fp32 out.
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(KVQ_CUDA_SIM)
  ::kvq_sim::mma_m16n8k8_tf32(c, a, b);
#else
  __trap();  // the host refuses precision "tf32" below compute capability 8.0
#endif
}

// One stage of a tile in registers: component (d0 + lane) of rows first + q * kRowsPerPass, missing ones 0.
template <typename T>
__device__ __forceinline__ void read_stage(float (&v)[kLoads], const T* base, int64_t first_row, int64_t num_rows,
                                           int64_t s0, int64_t s1, int64_t d0, int64_t D) {
  const int lane = threadIdx.x % kDims, first = threadIdx.x / kDims;
  const int64_t d = d0 + lane;
#pragma unroll
  for (int q = 0; q < kLoads; ++q) {
    const int64_t row = first_row + first + q * kRowsPerPass;
    v[q] = (d < D && row < num_rows) ? static_cast<float>(base[row * s0 + d * s1]) : 0.f;
  }
}

// Converts a staged stage to TF32 into columns [col, col + kDims) of a shared tile with row stride `stride`.
__device__ __forceinline__ void store_stage(const float (&v)[kLoads], uint32_t* tile, int stride, int col) {
  const int lane = threadIdx.x % kDims, first = threadIdx.x / kDims;
#pragma unroll
  for (int q = 0; q < kLoads; ++q) tile[(first + q * kRowsPerPass) * stride + col + lane] = to_tf32(v[q]);
}

// The x tile stays in shared memory for all of a block's code tiles when D is at most this (K = 512 visits
// 4 code tiles: without it the rows are read and converted 4 times); larger D streams x like the codes.
constexpr int64_t kMaxResidentDims = 128;

// Row stride (in 32-bit words) of the x tile: all D components (padded to kDims) when resident, else one
// stage. Stride = 4 (mod 32) keeps the fragment reads on 32 banks.
__host__ __device__ inline int x_stride(int64_t D) {
  return D <= kMaxResidentDims ? static_cast<int>((D + kDims - 1) / kDims * kDims) + 4 : kStride;
}

// Dynamic shared memory of argmin_kernel: the x tile, then one stage of the code tile.
inline size_t shared_bytes(int64_t D) { return sizeof(uint32_t) * (size_t{kRows} * x_stride(D) + kCodes * kStride); }

// kResident (D <= kMaxResidentDims) is a template parameter so that the streaming x stage takes no
// registers in the resident kernel. The streaming kernel (D > 128, rare) reads both tiles ahead: within the
// 128 registers of 2 blocks per SM it spilled 144-208 bytes a thread, so it runs 1 block per SM instead
// (196-200 registers, no spill, per ptxas for sm_80 and sm_90; not yet timed).
template <typename scalar_t, bool kResident>
__global__ void __launch_bounds__(kThreads, kResident ? 2 : 1)
    argmin_kernel(const scalar_t* __restrict__ x, int64_t N, int64_t D, int64_t sx0, int64_t sx1,
                  const float* __restrict__ w, const float* __restrict__ norms, int64_t K,
                  int64_t tiles_per_split, unsigned long long* __restrict__ keys) {
  KVQ_DYNAMIC_SHARED(uint32_t, shared);
  const int xs_stride = x_stride(D);
  uint32_t* xs = shared;
  uint32_t* ws = shared + kRows * xs_stride;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int warp_row = (warp % 4) * kWarpRows, warp_code = (warp / 4) * kWarpCodes;
  const int64_t row0 = int64_t{blockIdx.x} * kRows;
  const int64_t tile_end = std::min((K + kCodes - 1) / kCodes, (blockIdx.y + 1) * tiles_per_split);
  int64_t tile = blockIdx.y * tiles_per_split, d0 = 0;
  if (tile >= tile_end) return;

  float x_next[kResident ? 1 : kLoads], w_next[kLoads];
  if constexpr (kResident) {  // the whole x tile once, in TF32, staged through w_next (not yet in use)
    for (int64_t c = 0; c < D; c += kDims) {
      read_stage(w_next, x, row0, N, sx0, sx1, c, D);
      store_stage(w_next, xs, xs_stride, static_cast<int>(c));
    }
  } else {
    read_stage(x_next, x, row0, N, sx0, sx1, 0, D);
  }
  read_stage(w_next, w, tile * kCodes, K, D, int64_t{1}, 0, D);

  // Running minimum of this thread's 4 rows (tile mi, half h: row warp_row + 16 mi + 8 h + g).
  float best_dist[kMTiles][2];
  int best_code[kMTiles][2];
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
    best_dist[mi][0] = best_dist[mi][1] = INFINITY;
    best_code[mi][0] = best_code[mi][1] = 0;
  }

  // Flat loop over (code tile, stage), the next stage read ahead in registers across tile boundaries.
  float acc[kMTiles][kNTiles][4] = {};
  while (tile < tile_end) {
    if constexpr (!kResident) store_stage(x_next, xs, xs_stride, 0);
    store_stage(w_next, ws, kStride, 0);
    __syncthreads();
    const bool last_stage = d0 + kDims >= D;
    const int64_t next_tile = last_stage ? tile + 1 : tile, next_d0 = last_stage ? 0 : d0 + kDims;
    if (next_tile < tile_end) {
      if constexpr (!kResident) read_stage(x_next, x, row0, N, sx0, sx1, next_d0, D);
      read_stage(w_next, w, next_tile * kCodes, K, D, int64_t{1}, next_d0, D);
    }
    const uint32_t* xa = xs + (kResident ? d0 : 0);
#pragma unroll
    for (int k8 = 0; k8 < kDims; k8 += 8) {
      uint32_t a[kMTiles][4], b[kNTiles][2];
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
        const uint32_t* r = xa + (warp_row + mi * 16 + g) * xs_stride + k8 + t;
        a[mi][0] = r[0], a[mi][1] = r[8 * xs_stride], a[mi][2] = r[4], a[mi][3] = r[8 * xs_stride + 4];
      }
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj) {
        const uint32_t* c = ws + (warp_code + nj * 8 + g) * kStride + k8 + t;
        b[nj][0] = c[0], b[nj][1] = c[4];
      }
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
        for (int nj = 0; nj < kNTiles; ++nj) mma_tf32(acc[mi][nj], a[mi], b[nj]);
    }
    __syncthreads();
    if (last_stage) {
      // Codes visited in ascending order per thread (nj, then 2t, 2t + 1): strict "<" keeps the lowest.
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t code = tile * kCodes + warp_code + nj * 8 + 2 * t + e;
          const float wn = code < K ? norms[code] : INFINITY;
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const float dist = fmaf(acc[mi][nj][2 * h + e], -2.f, wn);
              if (dist < best_dist[mi][h]) best_dist[mi][h] = dist, best_code[mi][h] = static_cast<int>(code);
              acc[mi][nj][2 * h + e] = 0.f;
            }
        }
      }
    }
    tile = next_tile, d0 = next_d0;
  }

  // The 4 lanes of a row (same g) hold disjoint codes: min over them, then one atomicMin per row and warp.
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      unsigned long long key = argmin_key(best_dist[mi][h], best_code[mi][h]);
      key = min(key, __shfl_xor_sync(0xffffffffu, key, 1));
      key = min(key, __shfl_xor_sync(0xffffffffu, key, 2));
      const int64_t row = row0 + warp_row + mi * 16 + 8 * h + g;
      if (t == 0 && row < N) atomicMin(keys + row, key);
    }
}

}  // namespace kvq::cuda::tf32
