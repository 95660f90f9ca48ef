// CPU stand-in for cuda_fp16.h (see cuda_runtime_api.h here): GCC's _Float16 converts from float
// with round-to-nearest-even, as __float2half_rn does.
#ifndef VLRT_CUDA_FP16_EMULATION_H
#define VLRT_CUDA_FP16_EMULATION_H

#include "cuda_runtime_api.h"

using __half = _Float16;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }

#endif  // VLRT_CUDA_FP16_EMULATION_H
