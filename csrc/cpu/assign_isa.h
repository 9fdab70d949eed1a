// Interface of the CPU assignment micro-kernels. assign_isa.cpp is compiled once per instruction set
// (generic, avx2, avx512); cpu_isa.cpp picks the best one the running CPU supports.
// The ISA translation units use no C++ library templates (no std::vector, std::min, ...): an inline
// template instantiated there with AVX-512 enabled could be the copy the linker keeps for every caller.
#pragma once
#include <cstdint>

namespace kvq::cpu {

struct AssignKernels {
  const char* isa;       // "generic", "avx2" or "avx512"
  int64_t panel_width;   // codes per packed panel
  int64_t row_block;     // rows per micro-tile; row chunks are padded to a multiple of this
  int64_t lanes;         // vector lanes: argmin_rows needs rows * lanes floats and int32s of scratch
  // Packs w (K x D, row-major) into ceil(K / panel_width) panels of D x panel_width floats, and writes
  // ||w_k||^2 per slot; padding slots get +inf norms so they never win.
  void (*pack)(const float* w, int64_t K, int64_t D, float* panels, float* norms);
  // For `rows` (a multiple of row_block) contiguous rows of x (stride D), the index of the code
  // minimising ||w||^2 - 2 x.w, ties to the lowest index; rows with NaN get index 0.
  void (*argmin_rows)(const float* x, int64_t rows, int64_t D, const float* panels, const float* norms,
                      int64_t num_panels, float* scratch_val, int32_t* scratch_idx, int64_t* out_index);
  // The exact squared distance sum_d (x_d - w_{index,d})^2 of each of `rows` rows to its chosen code
  // (w: the K x D codebook, row-major).
  void (*sqdist_rows)(const float* x, int64_t rows, int64_t D, const float* w, const int64_t* index, float* out);
};

extern const AssignKernels assign_kernels_generic;
#if defined(__x86_64__) || defined(_M_X64)
extern const AssignKernels assign_kernels_avx2;
extern const AssignKernels assign_kernels_avx512;
#endif

}  // namespace kvq::cpu
