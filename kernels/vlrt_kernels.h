// Shared declarations of vlrt's CUDA kernels: status codes and data types of the extern "C"
// launchers. Each launcher checks its arguments on the host before it touches the GPU, so the
// checks can be exercised on a machine without one.
#ifndef VLRT_KERNELS_H
#define VLRT_KERNELS_H

#include <cuda_runtime_api.h>

// The library is built with hidden visibility; these are its exported functions.
#if defined(__GNUC__)
#define VLRT_API __attribute__((visibility("default")))
#else
#define VLRT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Launchers return VLRT_OK, a negative VLRT_* code for bad arguments (nothing was launched), or a
// positive cudaError_t from the launch.
enum VlrtStatus {
    VLRT_OK = 0,
    VLRT_BAD_ARGUMENT = -1,  // a null pointer, a negative or zero size, an unknown dtype or format
    VLRT_TOO_LARGE = -2,     // a size past the documented limits of the kernel
    VLRT_BAD_MERGE = -3,     // r outside 0 <= r <= ceil(N / 2) - 1
    VLRT_ALIASED = -4,       // an output buffer overlaps an input buffer
};

enum VlrtDType {
    VLRT_FLOAT32 = 0,
    VLRT_FLOAT16 = 1,
};

// A short, static description of a status code (for error messages; never NULL).
VLRT_API const char* vlrt_status_string(int status);

#ifdef __cplusplus
}
#endif

#endif  // VLRT_KERNELS_H
