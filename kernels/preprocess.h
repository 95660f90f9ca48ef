// Fused frame preprocessing on the GPU: decoded frame (packed RGB24, or NV12 with BT.601
// limited-range YUV) -> CLIP's shorter-side bicubic resize -> centre crop -> /255, (x - mean) / std
// -> planar [3, S, S] float16 or float32, in one kernel.
// Reference: vlrt/ops/preprocess_ref.py. Launch configuration and limits: docs/kernels.md.
#ifndef VLRT_PREPROCESS_H
#define VLRT_PREPROCESS_H

#include "vlrt_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum VlrtPixelFormat {
    VLRT_RGB24 = 0,  // plane0: rows of width * 3 bytes, R G B
    VLRT_NV12 = 1,   // plane0: luma rows of width bytes; plane1: ceil(height / 2) rows of
                     // ceil(width / 2) interleaved Cb Cr pairs
};

enum VlrtRounding {
    VLRT_ROUND_UINT8 = 0,  // store each step as the CPU exact path does: the YUV -> RGB conversion
                           // truncates (swscale), each resize pass rounds half up (Pillow), all clip
    VLRT_ROUND_NONE = 1,   // clip to [0, 255] after each step, never round
};

#define VLRT_PREPROCESS_MAX_SIDE 16384  // source width and height
#define VLRT_PREPROCESS_MAX_SIZE 2048   // S
#define VLRT_PREPROCESS_MAX_TAPS 257    // filter taps per axis: a downscale of at most 64x

// A batch of equally sized frames in device memory. Frame i's plane p starts at
// plane_p + i * frame_stride_p; rows are pitch_p bytes apart (decoders pad rows).
typedef struct VlrtFrames {
    int format;  // VlrtPixelFormat
    int width;
    int height;
    const unsigned char* plane0;
    const unsigned char* plane1;  // NV12 only; NULL for RGB24
    long long pitch0;
    long long pitch1;
    long long frame_stride0;
    long long frame_stride1;
} VlrtFrames;

// CLIP's geometry for a width x height frame: the resized size (shorter side -> size, longer ->
// int(size * long / short)) and the crop's top-left corner (round((resized - size) / 2), halves to
// even). Host only. Returns VLRT_OK or VLRT_BAD_ARGUMENT / VLRT_TOO_LARGE.
VLRT_API int vlrt_preprocess_geometry(int width, int height, int size, int* resized_width,
                                      int* resized_height, int* left, int* top);

// frames -> out [batch, 3, size, size] (dtype VLRT_FLOAT32 or VLRT_FLOAT16), planar RGB, each
// channel c as (v / 255 - mean[c]) / std[c]. mean and std are host arrays of 3 floats.
VLRT_API int vlrt_preprocess(const VlrtFrames* frames, int batch, int size, int rounding, const float* mean,
                             const float* std, void* out, int out_dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif  // VLRT_PREPROCESS_H
