// Token merging (one ToMe-style bipartite merge step) on the GPU.
// The semantics are those of vlrt/ops/token_merge.py::merge_tokens; docs/kernels.md has the
// launch configuration and limits.
#ifndef VLRT_TOKEN_MERGE_H
#define VLRT_TOKEN_MERGE_H

#include <stddef.h>

#include "vlrt_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

// Largest N (tokens per sequence) the kernel accepts: its per-sequence bookkeeping lives in
// shared memory, 18 bytes per token (36 KiB at N = 2048), under the 48 KiB default.
#define VLRT_TOKEN_MERGE_MAX_TOKENS 2048

// One merge step: x [B, N, C] and size [B, N] -> x_out [B, N - r, C] and size_out [B, N - r].
// x, size, x_out and size_out are device pointers of one dtype (VLRT_FLOAT32 or VLRT_FLOAT16);
// arithmetic is float32. Outputs must not overlap inputs. r == 0 copies (x_out = x), as the
// reference does. Deterministic: no floating-point atomics; the same input gives the same bits.
VLRT_API int vlrt_token_merge(const void* x, const void* size, void* x_out, void* size_out, int batch,
                              int tokens, int channels, int r, int dtype, cudaStream_t stream);

// Dynamic shared memory one block uses for `tokens` tokens (0 for an out-of-range count).
VLRT_API size_t vlrt_token_merge_shared_bytes(int tokens);

#ifdef __cplusplus
}
#endif

#endif  // VLRT_TOKEN_MERGE_H
