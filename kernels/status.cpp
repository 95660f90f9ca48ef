// Status strings of the kernels' launchers (kernels/vlrt_kernels.h).
#include "vlrt_kernels.h"

extern "C" const char* vlrt_status_string(int status) {
    switch (status) {
        case VLRT_OK: return "ok";
        case VLRT_BAD_ARGUMENT: return "bad argument (null pointer, non-positive size, unknown dtype or format)";
        case VLRT_TOO_LARGE: return "size past the kernel's limits (see docs/kernels.md)";
        case VLRT_BAD_MERGE: return "r must satisfy 0 <= r <= ceil(N / 2) - 1";
        case VLRT_ALIASED: return "an output buffer overlaps an input buffer";
        default: return status > 0 ? cudaGetErrorString(static_cast<cudaError_t>(status)) : "unknown status";
    }
}
