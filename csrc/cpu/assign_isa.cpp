// Register-tiled fused "distance + argmin" kernel. Compiled once per instruction set with KVQ_ISA set;
// the only ISA-specific part is the small vector layer below. The N x K distance matrix never exists:
// each MR x NR tile of dot products is turned into distances in registers and folded into a per-row,
// per-lane running minimum.
#include "cpu/assign_isa.h"

#include <cstdint>

#if defined(KVQ_ISA_AVX2) || defined(KVQ_ISA_AVX512)
#include <immintrin.h>
#endif

namespace kvq::cpu {
namespace {

#if defined(KVQ_ISA_AVX512)
constexpr int kLanes = 16, kRows = 12, kVecs = 2;  // 24 accumulators of 32 zmm registers
using VF = __m512;
using VI = __m512i;
inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
inline VF vset1(float v) { return _mm512_set1_ps(v); }
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vfmadd(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline VI iload(const int32_t* p) { return _mm512_loadu_si512(p); }
inline void istore(int32_t* p, VI v) { _mm512_storeu_si512(p, v); }
inline VI iset1(int32_t v) { return _mm512_set1_epi32(v); }
inline VI iadd(VI a, VI b) { return _mm512_add_epi32(a, b); }
inline VI iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
// best = (cand < best) ? cand : best, index likewise; strict < keeps the earliest (lowest) index.
inline void vkeep_min(VF cand, VI cand_idx, VF& best, VI& best_idx) {
  const __mmask16 m = _mm512_cmp_ps_mask(cand, best, _CMP_LT_OQ);
  best = _mm512_mask_blend_ps(m, best, cand);
  best_idx = _mm512_mask_blend_epi32(m, best_idx, cand_idx);
}
#elif defined(KVQ_ISA_AVX2)
constexpr int kLanes = 8, kRows = 6, kVecs = 2;  // 12 accumulators of 16 ymm registers
using VF = __m256;
using VI = __m256i;
inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
inline VF vset1(float v) { return _mm256_set1_ps(v); }
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vfmadd(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline VI iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline void istore(int32_t* p, VI v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline VI iset1(int32_t v) { return _mm256_set1_epi32(v); }
inline VI iadd(VI a, VI b) { return _mm256_add_epi32(a, b); }
inline VI iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline void vkeep_min(VF cand, VI cand_idx, VF& best, VI& best_idx) {
  const VF m = _mm256_cmp_ps(cand, best, _CMP_LT_OQ);
  best = _mm256_blendv_ps(best, cand, m);
  best_idx = _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(best_idx), _mm256_castsi256_ps(cand_idx), m));
}
#else
// Portable baseline: GCC/Clang vector extensions, i.e. SSE2 on x86-64 and NEON on AArch64. Multiply and
// add stay separate: the baseline x86-64 has no FMA instruction and a libm fmaf call per element is slow.
constexpr int kLanes = 4, kRows = 4, kVecs = 3;
using VF = float __attribute__((vector_size(16)));
using VI = int32_t __attribute__((vector_size(16)));
inline VF vload(const float* p) { VF r; __builtin_memcpy(&r, p, sizeof r); return r; }
inline VF vset1(float x) { return VF{x, x, x, x}; }
inline VF vzero() { return vset1(0.f); }
inline VF vfmadd(VF a, VF b, VF c) { return a * b + c; }
inline void vstore(float* p, VF v) { __builtin_memcpy(p, &v, sizeof v); }
inline VI iload(const int32_t* p) { VI r; __builtin_memcpy(&r, p, sizeof r); return r; }
inline void istore(int32_t* p, VI v) { __builtin_memcpy(p, &v, sizeof v); }
inline VI iset1(int32_t x) { return VI{x, x, x, x}; }
inline VI iadd(VI a, VI b) { return a + b; }
inline VI iota() { return VI{0, 1, 2, 3}; }
inline void vkeep_min(VF cand, VI cand_idx, VF& best, VI& best_idx) {
  const VI m = cand < best;  // all ones where strictly smaller; false for NaN
  best = (VF)(((VI)cand & m) | ((VI)best & ~m));
  best_idx = (cand_idx & m) | (best_idx & ~m);
}
#endif

inline float hsum(VF v) {
  float lanes[kLanes];
  vstore(lanes, v);
  float s = 0.f;
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

constexpr int64_t kPanel = int64_t{kLanes} * kVecs;
// Panels per cache block: keep the block of packed codes within about 256 KiB of L2.
constexpr int64_t kBlockBytes = 256 * 1024;
constexpr float kInf = __builtin_inff();
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

void pack(const float* w, int64_t K, int64_t D, float* panels, float* norms) {
  const int64_t num_panels = (K + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < num_panels; ++p) {
    float* dst = panels + p * D * kPanel;
    for (int64_t j = 0; j < kPanel; ++j) {
      const int64_t k = p * kPanel + j;
      float norm = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        const float v = k < K ? w[k * D + d] : 0.f;
        dst[d * kPanel + j] = v;
        norm += v * v;
      }
      norms[p * kPanel + j] = k < K ? norm : kInf;
    }
  }
}

// One kRows x kPanel tile: dot products over the full D, then distances folded into the running minima.
inline void tile(const float* x, int64_t D, const float* panel, const float* norm, int32_t first_code,
                 float* best_val, int32_t* best_idx) {
  VF acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = vzero();
  for (int64_t d = 0; d < D; ++d) {
    VF b[kVecs];
    for (int v = 0; v < kVecs; ++v) b[v] = vload(panel + d * kPanel + v * kLanes);
    for (int r = 0; r < kRows; ++r) {
      const VF a = vset1(x[r * D + d]);
      for (int v = 0; v < kVecs; ++v) acc[r][v] = vfmadd(a, b[v], acc[r][v]);
    }
  }
  const VF minus_two = vset1(-2.f);
  VF wn[kVecs];
  VI idx[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    wn[v] = vload(norm + v * kLanes);
    idx[v] = iadd(iota(), iset1(first_code + v * kLanes));
  }
  for (int r = 0; r < kRows; ++r) {
    VF bv = vload(best_val + r * kLanes);
    VI bi = iload(best_idx + r * kLanes);
    for (int v = 0; v < kVecs; ++v) vkeep_min(vfmadd(acc[r][v], minus_two, wn[v]), idx[v], bv, bi);
    vstore(best_val + r * kLanes, bv);
    istore(best_idx + r * kLanes, bi);
  }
}

void argmin_rows(const float* x, int64_t rows, int64_t D, const float* panels, const float* norms,
                 int64_t num_panels, float* best_val, int32_t* best_idx, int64_t* out_index) {
  for (int64_t i = 0; i < rows * kLanes; ++i) {
    best_val[i] = kInf;
    best_idx[i] = 0;
  }
  const int64_t per_block = kBlockBytes / (D * kPanel * int64_t{sizeof(float)});
  const int64_t block = per_block > 0 ? per_block : 1;
  for (int64_t p0 = 0; p0 < num_panels; p0 += block) {
    const int64_t p1 = min64(num_panels, p0 + block);
    for (int64_t r = 0; r < rows; r += kRows) {
      for (int64_t p = p0; p < p1; ++p) {
        tile(x + r * D, D, panels + p * D * kPanel, norms + p * kPanel, static_cast<int32_t>(p * kPanel),
             best_val + r * kLanes, best_idx + r * kLanes);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* bv = best_val + r * kLanes;
    const int32_t* bi = best_idx + r * kLanes;
    float v = bv[0];
    int32_t i = bi[0];
    for (int l = 1; l < kLanes; ++l) {
      if (bv[l] < v || (bv[l] == v && bi[l] < i)) { v = bv[l]; i = bi[l]; }
    }
    out_index[r] = i;
  }
}

// sum_d (x_d - w_d)^2 for each row and its chosen code: lane-wise partial sums, then the lanes in order.
void sqdist_rows(const float* x, int64_t rows, int64_t D, const float* w, const int64_t* index, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    const float* wr = w + index[r] * D;
    VF acc = vzero();
    int64_t d = 0;
    for (; d + kLanes <= D; d += kLanes) {
      const VF diff = vload(xr + d) - vload(wr + d);
      acc = vfmadd(diff, diff, acc);
    }
    float s = hsum(acc);
    for (; d < D; ++d) s += (xr[d] - wr[d]) * (xr[d] - wr[d]);
    out[r] = s;
  }
}

}  // namespace

#define KVQ_CAT2(a, b) a##b
#define KVQ_CAT(a, b) KVQ_CAT2(a, b)
#define KVQ_STR2(a) #a
#define KVQ_STR(a) KVQ_STR2(a)

const AssignKernels KVQ_CAT(assign_kernels_, KVQ_ISA) = {KVQ_STR(KVQ_ISA), kPanel,       kRows,       kLanes,
                                                         &pack,            &argmin_rows, &sqdist_rows};

}  // namespace kvq::cpu
