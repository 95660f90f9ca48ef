// Fused frame preprocessing on the GPU: decoded frame (packed RGB24, or NV12 in BT.601 or BT.709,
// limited or full range) -> CLIP's shorter-side bicubic resize -> centre crop -> /255,
// (x - mean) / std -> planar [3, S, S] float16 or float32, in one kernel.
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

// The YUV -> RGB matrix and range of NV12 frames: the frame's colour tags, which the CPU path's
// swscale honours (PyAV's frame.colorspace and frame.color_range; untagged frames are BT.601,
// limited). Other matrices (BT.2020, SMPTE 240M, FCC) are refused rather than converted wrongly.
enum VlrtMatrix {
    VLRT_MATRIX_BT601 = 0,  // Kr = 0.299, Kb = 0.114 (BT.470BG, SMPTE 170M)
    VLRT_MATRIX_BT709 = 1,  // Kr = 0.2126, Kb = 0.0722
};

enum VlrtRange {
    VLRT_RANGE_LIMITED = 0,  // Y in [16, 235], Cb and Cr in [16, 240] ("MPEG", tv)
    VLRT_RANGE_FULL = 1,     // Y, Cb and Cr in [0, 255] ("JPEG", pc)
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
// plane_p + i * frame_stride_p; rows are pitch_p bytes apart (decoders pad rows). NV12 frames of
// odd width or height have ceil(width / 2) x ceil(height / 2) chroma samples; the last luma column
// and row use the last chroma sample. A zero-initialised struct's colour fields mean BT.601 limited.
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
    int matrix;  // VlrtMatrix: used by NV12, and must be a known value for every format
    int range;   // VlrtRange: likewise
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
