// One token-merge step (ToMe bipartite soft matching), matching and merging in one kernel.
//
// Reference: vlrt/ops/token_merge.py::merge_tokens. One thread block per sequence:
//   1. inv_norm[t] = 1 / max(|x_t|, 1e-6)                         (a warp per token)
//   2. for each A token (even index): best score over B tokens (odd index) and the first B token
//      reaching it; score = (x_a . x_b) * inv_norm[a] * inv_norm[b]; A's first token (the class
//      token) gets PROTECTED                                     (a warp per A token)
//   3. rank of each A token by best score (higher first, ties -> lower index); rank < r merges
//   4. per B token, the merged A tokens that chose it, in increasing index order
//   5. outputs: kept A tokens in order, then every B token; a merged B token is the size-weighted
//      mean, summed in increasing A index order (no atomics, so the bits are reproducible)
// The metric is never materialised: a dot product of raw rows times two inverse norms equals the
// dot product of the normalised rows, and the bookkeeping above is all that shared memory holds.
#include <cuda_fp16.h>
#include <stdint.h>

#include "launch.cuh"
#include "token_merge.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kProtected = -10.0f;  // vlrt/ops/token_merge.py PROTECTED

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// Sum over the warp in a fixed tree; every lane gets lane 0's total.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
    return __shfl_sync(kFullMask, v, 0);
}

// Shared-memory bookkeeping of one sequence; every array is 4-byte typed, so no padding.
struct Scratch {
    float* inv_norm;  // [N]
    float* best;      // [Na] best score of each A token
    int* dst;         // [Na] index (within B) of its best partner
    int* merged;      // [Na] 1 if the A token merges
    int* pos;         // [Na] output row of a kept A token
    int* list;        // [Na] merged A tokens grouped by destination, increasing index within a group
    int* count;       // [Nb] merged A tokens per B token
    int* start;       // [Nb] first entry of each B token's group in `list`
};

__host__ __device__ inline size_t scratch_bytes(int n) {
    const int na = (n + 1) / 2, nb = n / 2;
    return sizeof(float) * (size_t)n + sizeof(int) * (5 * (size_t)na + 2 * (size_t)nb);
}

__device__ Scratch carve(unsigned char* base, int n) {
    const int na = (n + 1) / 2, nb = n / 2;
    Scratch s;
    s.inv_norm = reinterpret_cast<float*>(base);
    s.best = s.inv_norm + n;
    s.dst = reinterpret_cast<int*>(s.best + na);
    s.merged = s.dst + na;
    s.pos = s.merged + na;
    s.list = s.pos + na;
    s.count = s.list + na;
    s.start = s.count + nb;
    return s;
}

template <typename T>
__device__ void inverse_norms(const T* x, int n, int c, float* inv_norm) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int t = warp; t < n; t += kWarps) {
        const T* row = x + (size_t)t * c;
        float sq = 0.0f;
        for (int k = lane; k < c; k += 32) {
            const float v = to_float(row[k]);
            sq = fmaf(v, v, sq);
        }
        sq = warp_sum(sq);
        if (lane == 0) inv_norm[t] = 1.0f / fmaxf(sqrtf(sq), 1e-6f);
    }
}

// Best B partner of every A token. The score of (a, b) depends only on the two rows' values, not
// on their indices, so identical rows give bit-identical scores and the tie rules below apply.
template <typename T>
__device__ void best_partners(const T* x, int na, int nb, int c, const Scratch& s) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int a = warp; a < na; a += kWarps) {
        const T* row_a = x + (size_t)(2 * a) * c;
        float best = kProtected;
        int dst = 0;
        if (a != 0) {  // the class token's row is all PROTECTED, so its argmax is 0
            best = -INFINITY;
            for (int b = 0; b < nb; ++b) {
                const T* row_b = x + (size_t)(2 * b + 1) * c;
                float dot = 0.0f;
                for (int k = lane; k < c; k += 32) dot = fmaf(to_float(row_a[k]), to_float(row_b[k]), dot);
                const float score = warp_sum(dot) * s.inv_norm[2 * a] * s.inv_norm[2 * b + 1];
                if (score > best) {  // strictly greater: the first maximum wins, as np.argmax
                    best = score;
                    dst = b;
                }
            }
        }
        if (lane == 0) {
            s.best[a] = best;
            s.dst[a] = dst;
        }
    }
}

// merged[a] = rank(a) < r, rank by best descending with ties to the lower index (a stable sort of
// -best, as the reference's argsort(kind="stable")).
__device__ void select_merged(int na, int r, const Scratch& s) {
    for (int a = threadIdx.x; a < na; a += kThreads) {
        const float v = s.best[a];
        int rank = 0;
        for (int o = 0; o < na; ++o) {
            const float w = s.best[o];
            rank += (w > v) || (w == v && o < a);
        }
        s.merged[a] = rank < r;
    }
}

// Output rows of kept A tokens and, per B token, the group of A tokens merging into it.
__device__ void group_merges(int na, int nb, const Scratch& s) {
    for (int a = threadIdx.x; a < na; a += kThreads) {
        int before = 0;
        for (int o = 0; o < a; ++o) before += s.merged[o];
        s.pos[a] = a - before;
    }
    for (int b = threadIdx.x; b < nb; b += kThreads) {
        int count = 0, start = 0;
        for (int a = 0; a < na; ++a) {
            if (!s.merged[a]) continue;
            count += s.dst[a] == b;
            start += s.dst[a] < b;
        }
        s.count[b] = count;
        s.start[b] = start;
    }
    __syncthreads();
    for (int a = threadIdx.x; a < na; a += kThreads) {
        if (!s.merged[a]) continue;
        const int d = s.dst[a];
        int within = 0;
        for (int o = 0; o < a; ++o) within += s.merged[o] && s.dst[o] == d;
        s.list[s.start[d] + within] = a;
    }
}

template <typename T>
__device__ void copy_row(const T* src, T* dst, int c) {
    for (int k = threadIdx.x % 32; k < c; k += 32) dst[k] = src[k];
}

template <typename T>
__device__ void write_outputs(const T* x, const T* size, T* x_out, T* size_out, int na, int nb, int c,
                              int r, const Scratch& s) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int a = warp; a < na; a += kWarps) {
        if (s.merged[a]) continue;
        copy_row(x + (size_t)(2 * a) * c, x_out + (size_t)s.pos[a] * c, c);
        if (lane == 0) size_out[s.pos[a]] = size[2 * a];
    }
    for (int b = warp; b < nb; b += kWarps) {
        const int row = na - r + b, count = s.count[b];
        const int* group = s.list + s.start[b];
        const T* xb = x + (size_t)(2 * b + 1) * c;
        if (count == 0) {  // (s x) / s can differ from x in float32; the reference's float64 cannot
            copy_row(xb, x_out + (size_t)row * c, c);
            if (lane == 0) size_out[row] = size[2 * b + 1];
            continue;
        }
        const float sb = to_float(size[2 * b + 1]);
        float total = sb;
        for (int i = 0; i < count; ++i) total += to_float(size[2 * group[i]]);
        for (int k = lane; k < c; k += 32) {
            float acc = to_float(xb[k]) * sb;
            for (int i = 0; i < count; ++i) {
                const int a = group[i];
                acc = fmaf(to_float(x[(size_t)(2 * a) * c + k]), to_float(size[2 * a]), acc);
            }
            store(x_out + (size_t)row * c + k, acc / total);
        }
        if (lane == 0) store(size_out + row, total);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
token_merge_kernel(const T* __restrict__ x, const T* __restrict__ size, T* __restrict__ x_out,
                   T* __restrict__ size_out, int n, int c, int r) {
    extern __shared__ __align__(16) unsigned char shared[];
    const int na = (n + 1) / 2, nb = n / 2, m = n - r;
    const size_t seq = blockIdx.x;
    x += seq * n * c;
    size += seq * n;
    x_out += seq * m * c;
    size_out += seq * m;
    const Scratch s = carve(shared, n);

    inverse_norms(x, n, c, s.inv_norm);
    __syncthreads();
    best_partners(x, na, nb, c, s);
    __syncthreads();
    select_merged(na, r, s);
    __syncthreads();
    group_merges(na, nb, s);
    __syncthreads();
    write_outputs(x, size, x_out, size_out, na, nb, c, r, s);
}

bool overlaps(const void* p, size_t p_bytes, const void* q, size_t q_bytes) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
    return a < b + q_bytes && b < a + p_bytes;
}

template <typename T>
int launch(const void* x, const void* size, void* x_out, void* size_out, int batch, int n, int c, int r,
           cudaStream_t stream) {
    const size_t shared = scratch_bytes(n);
    VLRT_LAUNCH(token_merge_kernel<T>, batch, kThreads, shared, stream)(
        static_cast<const T*>(x), static_cast<const T*>(size), static_cast<T*>(x_out),
        static_cast<T*>(size_out), n, c, r);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" size_t vlrt_token_merge_shared_bytes(int tokens) {
    if (tokens < 1 || tokens > VLRT_TOKEN_MERGE_MAX_TOKENS) return 0;
    return scratch_bytes(tokens);
}

extern "C" int vlrt_token_merge(const void* x, const void* size, void* x_out, void* size_out, int batch,
                                int tokens, int channels, int r, int dtype, cudaStream_t stream) {
    if (!x || !size || !x_out || !size_out) return VLRT_BAD_ARGUMENT;
    if (batch < 0 || tokens < 1 || channels < 1) return VLRT_BAD_ARGUMENT;
    if (dtype != VLRT_FLOAT32 && dtype != VLRT_FLOAT16) return VLRT_BAD_ARGUMENT;
    if (r < 0 || r > (tokens + 1) / 2 - 1) return VLRT_BAD_MERGE;
    if (tokens > VLRT_TOKEN_MERGE_MAX_TOKENS) return VLRT_TOO_LARGE;
    const size_t elem = dtype == VLRT_FLOAT32 ? 4 : 2;
    const size_t in_x = elem * batch * tokens * channels, in_s = elem * batch * tokens;
    const size_t out_x = elem * batch * (tokens - r) * channels, out_s = elem * batch * (tokens - r);
    if (overlaps(x_out, out_x, x, in_x) || overlaps(x_out, out_x, size, in_s) ||
        overlaps(size_out, out_s, x, in_x) || overlaps(size_out, out_s, size, in_s) ||
        overlaps(x_out, out_x, size_out, out_s))
        return VLRT_ALIASED;
    if (batch == 0) return VLRT_OK;
    if (r == 0) {  // the reference returns its input unchanged, in the original token order
        cudaError_t err = cudaMemcpyAsync(x_out, x, in_x, cudaMemcpyDeviceToDevice, stream);
        if (err == cudaSuccess) err = cudaMemcpyAsync(size_out, size, in_s, cudaMemcpyDeviceToDevice, stream);
        return static_cast<int>(err);
    }
    if (dtype == VLRT_FLOAT32) return launch<float>(x, size, x_out, size_out, batch, tokens, channels, r, stream);
    return launch<__half>(x, size, x_out, size_out, batch, tokens, channels, r, stream);
}
