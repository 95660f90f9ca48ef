// Fused preprocessing: decoded frame -> resize (Pillow's antialiased bicubic) -> centre crop ->
// normalise -> planar [3, S, S], one kernel, no intermediate image in global memory.
//
// Reference: vlrt/ops/preprocess_ref.py. The filter is separable and is applied as Pillow applies
// it, horizontal pass first, but inside one block:
//   - a block owns a 16 x 16 tile of the S x S output (one thread per output pixel) and computes
//     its 16 columns' and 16 rows' filter taps once, in double precision as Pillow does;
//   - it walks the source rows its tile needs in chunks of 32: the horizontal pass writes the
//     chunk's 32 x 16 (x 3 channels) intermediate values to shared memory, then each thread adds
//     the rows of the chunk that fall in its own vertical window to its accumulators.
// Shared memory holds the taps and one chunk, whatever the scale, so a 4K frame needs no more of
// it than a VGA frame. Each source pixel of the window is read by about 4 horizontal taps (the
// bicubic support is 4 output pixels wide), against 16 for a direct 2-D weighted sum.
#include <cuda_fp16.h>
#include <math.h>

#include "launch.cuh"
#include "preprocess.h"

namespace {

constexpr int kTile = 16;
constexpr int kChunk = 32;
constexpr int kThreads = kTile * kTile;

// Pillow's bicubic geometry along one axis: `in` source pixels, resized to `out`, of which the
// crop keeps `size` starting at `offset`.
struct Axis {
    int in;
    int out;
    int offset;
    int taps;  // Pillow's ksize: the most taps any output pixel has
    double scale;
    double filterscale;
    double support;
};

struct Norm {
    float mean[3];
    float inv_std[3];
};

__host__ Axis make_axis(int in, int out, int offset) {
    Axis a;
    a.in = in;
    a.out = out;
    a.offset = offset;
    a.scale = static_cast<double>(in) / out;
    a.filterscale = a.scale < 1.0 ? 1.0 : a.scale;
    a.support = 2.0 * a.filterscale;
    a.taps = static_cast<int>(ceil(a.support)) * 2 + 1;
    return a;
}

__device__ double cubic(double x) {  // Keys, a = -0.5
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

// Taps of resized pixel `index` (Pillow's precompute_coeffs): first source pixel, count, weights.
__device__ void filter_taps(const Axis& a, int index, float* w, int* first, int* count) {
    const double center = (index + 0.5) * a.scale;
    const double ss = 1.0 / a.filterscale;
    int lo = static_cast<int>(center - a.support + 0.5);
    int hi = static_cast<int>(center + a.support + 0.5);
    lo = lo < 0 ? 0 : lo;
    hi = hi > a.in ? a.in : hi;
    double total = 0.0;
    for (int k = 0; k < hi - lo; ++k) total += cubic((k + lo - center + 0.5) * ss);
    for (int k = 0; k < hi - lo; ++k) {
        const double v = cubic((k + lo - center + 0.5) * ss);
        w[k] = static_cast<float>(total != 0.0 ? v / total : v);
    }
    *first = lo;
    *count = hi - lo;
}

// A step's result stored as uint8 (VLRT_ROUND_UINT8: floor(v + offset), then clip) or only
// clipped: offset 0.5 is Pillow's rounding after a resize pass, 0 swscale's truncating conversion.
__device__ __forceinline__ float settle(float v, int rounding, float offset = 0.5f) {
    if (rounding == VLRT_ROUND_UINT8) v = floorf(v + offset);
    return fminf(fmaxf(v, 0.0f), 255.0f);
}

// NV12 -> RGB: R = Y' + rcr Cr', G = Y' - gcb Cb' - gcr Cr', B = Y' + bcb Cb', with
// Y' = (Y - y_offset) * y_scale and C' = C - 128; the range's chroma scale is folded into the four
// chroma coefficients. Computed once on the host in double precision, then rounded to float.
struct Yuv {
    float y_offset;
    float y_scale;
    float rcr, gcb, gcr, bcb;
};

__host__ Yuv make_yuv(int matrix, int range) {
    const bool bt709 = matrix == VLRT_MATRIX_BT709;
    const double kr = bt709 ? 0.2126 : 0.299, kb = bt709 ? 0.0722 : 0.114, kg = 1.0 - kr - kb;
    const bool full = range == VLRT_RANGE_FULL;
    const double y_scale = full ? 1.0 : 255.0 / 219.0, c_scale = full ? 1.0 : 255.0 / 224.0;
    Yuv c;
    c.y_offset = full ? 0.0f : 16.0f;
    c.y_scale = static_cast<float>(y_scale);
    c.rcr = static_cast<float>(2.0 * (1.0 - kr) * c_scale);
    c.gcb = static_cast<float>(2.0 * (1.0 - kb) * kb / kg * c_scale);
    c.gcr = static_cast<float>(2.0 * (1.0 - kr) * kr / kg * c_scale);
    c.bcb = static_cast<float>(2.0 * (1.0 - kb) * c_scale);
    return c;
}

// One pixel of an NV12 row: x's chroma pair is x / 2 (rounded down), so the last column of an
// odd-width frame reads the last of its ceil(width / 2) pairs.
__device__ __forceinline__ float3 nv12_pixel(const Yuv& m, const unsigned char* luma, const unsigned char* chroma,
                                             int x, int rounding) {
    const float y = (static_cast<float>(luma[x]) - m.y_offset) * m.y_scale;
    const float cb = static_cast<float>(chroma[2 * (x >> 1)]) - 128.0f;
    const float cr = static_cast<float>(chroma[2 * (x >> 1) + 1]) - 128.0f;
    return make_float3(settle(fmaf(m.rcr, cr, y), rounding, 0.0f),
                       settle(y - m.gcb * cb - m.gcr * cr, rounding, 0.0f),
                       settle(fmaf(m.bcb, cb, y), rounding, 0.0f));
}

// Horizontal pass of source row `y` for one output column.
__device__ float3 horizontal(const VlrtFrames& f, const Yuv& yuv, size_t frame, int y, int first, int count,
                             const float* w, int rounding) {
    float3 acc = make_float3(0.0f, 0.0f, 0.0f);
    const unsigned char* row = f.plane0 + frame * f.frame_stride0 + y * f.pitch0;
    if (f.format == VLRT_RGB24) {
        for (int k = 0; k < count; ++k) {
            const unsigned char* p = row + 3 * (first + k);
            acc.x = fmaf(w[k], p[0], acc.x);
            acc.y = fmaf(w[k], p[1], acc.y);
            acc.z = fmaf(w[k], p[2], acc.z);
        }
    } else {
        // Row y's chroma row is y / 2 (rounded down): an odd height's last row reads the last chroma row.
        const unsigned char* chroma = f.plane1 + frame * f.frame_stride1 + (y >> 1) * f.pitch1;
        for (int k = 0; k < count; ++k) {
            const float3 p = nv12_pixel(yuv, row, chroma, first + k, rounding);
            acc.x = fmaf(w[k], p.x, acc.x);
            acc.y = fmaf(w[k], p.y, acc.y);
            acc.z = fmaf(w[k], p.z, acc.z);
        }
    }
    return make_float3(settle(acc.x, rounding), settle(acc.y, rounding), settle(acc.z, rounding));
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

struct Taps {  // one block's filter taps, in shared memory
    float* wx;   // [kTile][X.taps]
    float* wy;   // [kTile][Y.taps]
    int* first;  // [2 * kTile]: columns, then rows
    int* count;  // [2 * kTile]
    float* tmp;  // [kChunk][kTile][3]
};

__device__ Taps carve(unsigned char* base, const Axis& X) {
    Taps t;
    t.first = reinterpret_cast<int*>(base);
    t.count = t.first + 2 * kTile;
    t.tmp = reinterpret_cast<float*>(t.count + 2 * kTile);
    t.wx = t.tmp + kChunk * kTile * 3;
    t.wy = t.wx + kTile * X.taps;
    return t;
}

__host__ size_t shared_bytes(const Axis& X, const Axis& Y) {
    return sizeof(int) * 4 * kTile + sizeof(float) * (kChunk * kTile * 3 + kTile * (X.taps + Y.taps));
}

// Threads 0-15 compute the tile's column taps, threads 16-31 its row taps.
__device__ void tile_taps(const Axis& X, const Axis& Y, int size, const Taps& t) {
    const int tid = threadIdx.y * kTile + threadIdx.x;
    if (tid >= 2 * kTile) return;
    const bool column = tid < kTile;
    const int i = tid % kTile;
    const Axis a = column ? X : Y;  // a copy: a reference to either parameter would put both in local memory
    const int o = (column ? blockIdx.x : blockIdx.y) * kTile + i;
    float* w = column ? t.wx + i * X.taps : t.wy + i * Y.taps;
    t.first[tid] = 0;
    t.count[tid] = 0;
    if (o < size) filter_taps(a, o + a.offset, w, &t.first[tid], &t.count[tid]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
preprocess_kernel(VlrtFrames f, Yuv yuv, Axis X, Axis Y, int size, int rounding, Norm norm, T* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char shared[];
    const Taps t = carve(shared, X);
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTile + tx;
    const size_t frame = blockIdx.z;
    tile_taps(X, Y, size, t);
    __syncthreads();

    // Source rows the tile needs: windows move monotonically, so first row's start to last row's end.
    const int last = min(kTile, size - static_cast<int>(blockIdx.y) * kTile) - 1;
    const int rows_lo = t.first[kTile], rows_hi = t.first[kTile + last] + t.count[kTile + last];
    const int my_lo = t.first[kTile + ty], my_hi = my_lo + t.count[kTile + ty];
    const float* my_w = t.wy + ty * Y.taps;
    float r = 0.0f, g = 0.0f, b = 0.0f;
    for (int r0 = rows_lo; r0 < rows_hi; r0 += kChunk) {
        const int rows = min(kChunk, rows_hi - r0);
        for (int i = tid; i < rows * kTile; i += kThreads) {
            const int rr = i / kTile, c = i % kTile;
            const float3 v = horizontal(f, yuv, frame, r0 + rr, t.first[c], t.count[c], t.wx + c * X.taps, rounding);
            float* dst = t.tmp + 3 * (rr * kTile + c);
            dst[0] = v.x;
            dst[1] = v.y;
            dst[2] = v.z;
        }
        __syncthreads();
        const int lo = max(my_lo, r0), hi = min(my_hi, r0 + rows);
        for (int y = lo; y < hi; ++y) {
            const float w = my_w[y - my_lo];
            const float* v = t.tmp + 3 * ((y - r0) * kTile + tx);
            r = fmaf(w, v[0], r);
            g = fmaf(w, v[1], g);
            b = fmaf(w, v[2], b);
        }
        __syncthreads();
    }

    const int ox = blockIdx.x * kTile + tx, oy = blockIdx.y * kTile + ty;
    if (ox >= size || oy >= size) return;
    const float rgb[3] = {settle(r, rounding), settle(g, rounding), settle(b, rounding)};
    const size_t plane = static_cast<size_t>(size) * size;
    T* o = out + frame * 3 * plane + static_cast<size_t>(oy) * size + ox;
    for (int ch = 0; ch < 3; ++ch)
        store(o + ch * plane, (rgb[ch] * (1.0f / 255.0f) - norm.mean[ch]) * norm.inv_std[ch]);
}

int half_to_even(int d) {  // round(d / 2) for d >= 0, halves to the even integer (Python's round)
    const int q = d / 2;
    return (d % 2 == 1 && q % 2 == 1) ? q + 1 : q;
}

int check_frames(const VlrtFrames* f, int batch) {
    if (!f || !f->plane0 || batch < 0) return VLRT_BAD_ARGUMENT;
    if (f->format != VLRT_RGB24 && f->format != VLRT_NV12) return VLRT_BAD_ARGUMENT;
    if (f->width < 1 || f->height < 1) return VLRT_BAD_ARGUMENT;
    if (f->width > VLRT_PREPROCESS_MAX_SIDE || f->height > VLRT_PREPROCESS_MAX_SIDE) return VLRT_TOO_LARGE;
    if (f->frame_stride0 < 0 || f->frame_stride1 < 0) return VLRT_BAD_ARGUMENT;
    if (f->matrix != VLRT_MATRIX_BT601 && f->matrix != VLRT_MATRIX_BT709) return VLRT_BAD_ARGUMENT;
    if (f->range != VLRT_RANGE_LIMITED && f->range != VLRT_RANGE_FULL) return VLRT_BAD_ARGUMENT;
    if (f->format == VLRT_RGB24) return f->pitch0 >= 3LL * f->width ? VLRT_OK : VLRT_BAD_ARGUMENT;
    if (!f->plane1 || f->pitch0 < f->width || f->pitch1 < 2LL * ((f->width + 1) / 2)) return VLRT_BAD_ARGUMENT;
    return VLRT_OK;
}

}  // namespace

extern "C" int vlrt_preprocess_geometry(int width, int height, int size, int* resized_width,
                                        int* resized_height, int* left, int* top) {
    if (!resized_width || !resized_height || !left || !top) return VLRT_BAD_ARGUMENT;
    if (width < 1 || height < 1 || size < 1) return VLRT_BAD_ARGUMENT;
    if (width > VLRT_PREPROCESS_MAX_SIDE || height > VLRT_PREPROCESS_MAX_SIDE || size > VLRT_PREPROCESS_MAX_SIZE)
        return VLRT_TOO_LARGE;
    const bool portrait = width <= height;
    const long long short_side = portrait ? width : height, long_side = portrait ? height : width;
    // Python's int(size * long / short): an exact product, one correctly rounded division, truncation.
    const int new_long = static_cast<int>(static_cast<double>(size * long_side) / static_cast<double>(short_side));
    *resized_width = portrait ? size : new_long;
    *resized_height = portrait ? new_long : size;
    *left = half_to_even(*resized_width - size);
    *top = half_to_even(*resized_height - size);
    return VLRT_OK;
}

extern "C" int vlrt_preprocess(const VlrtFrames* frames, int batch, int size, int rounding, const float* mean,
                               const float* std, void* out, int out_dtype, cudaStream_t stream) {
    int status = check_frames(frames, batch);
    if (status != VLRT_OK) return status;
    if (!mean || !std || !out) return VLRT_BAD_ARGUMENT;
    if (rounding != VLRT_ROUND_UINT8 && rounding != VLRT_ROUND_NONE) return VLRT_BAD_ARGUMENT;
    if (out_dtype != VLRT_FLOAT32 && out_dtype != VLRT_FLOAT16) return VLRT_BAD_ARGUMENT;
    if (batch > 65535) return VLRT_TOO_LARGE;  // gridDim.z
    int rw, rh, left, top;
    status = vlrt_preprocess_geometry(frames->width, frames->height, size, &rw, &rh, &left, &top);
    if (status != VLRT_OK) return status;
    const Axis X = make_axis(frames->width, rw, left), Y = make_axis(frames->height, rh, top);
    if (X.taps > VLRT_PREPROCESS_MAX_TAPS || Y.taps > VLRT_PREPROCESS_MAX_TAPS) return VLRT_TOO_LARGE;
    Norm norm;
    for (int c = 0; c < 3; ++c) {
        if (!(std[c] > 0.0f)) return VLRT_BAD_ARGUMENT;
        norm.mean[c] = mean[c];
        norm.inv_std[c] = 1.0f / std[c];
    }
    if (batch == 0) return VLRT_OK;
    const dim3 grid((size + kTile - 1) / kTile, (size + kTile - 1) / kTile, batch), block(kTile, kTile);
    const size_t shared = shared_bytes(X, Y);
    const Yuv yuv = make_yuv(frames->matrix, frames->range);
    if (out_dtype == VLRT_FLOAT32)
        VLRT_LAUNCH(preprocess_kernel<float>, grid, block, shared, stream)(*frames, yuv, X, Y, size, rounding, norm,
                                                                          static_cast<float*>(out));
    else
        VLRT_LAUNCH(preprocess_kernel<__half>, grid, block, shared, stream)(*frames, yuv, X, Y, size, rounding, norm,
                                                                           static_cast<__half*>(out));
    return static_cast<int>(cudaGetLastError());
}
