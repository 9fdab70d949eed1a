// The dtype dispatch of the CUDA launchers, in a header of its own (no CUDA headers) so that
// tests/cpp/test_cuda_sim.cpp instantiates the kernels for exactly the same dtypes.
#pragma once
#include <ATen/Dispatch.h>

// The input dtypes checks.cpp accepts (float32, float16, bfloat16); arithmetic is fp32 for all of them.
#define KVQ_DISPATCH_FLOAT_INPUTS(TYPE, NAME, ...)             \
  AT_DISPATCH_SWITCH(TYPE, NAME,                               \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))
