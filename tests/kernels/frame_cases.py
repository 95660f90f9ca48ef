"""Frames and checks shared by the preprocessing kernel tests (GPU, and the CPU emulator).

Tolerances, in normalised units (one pixel level is 1 / (255 * std), about 0.015):
- rounding "none": |diff| <= 1e-4 in float32 output (float32 accumulation, ~0.01 levels);
- rounding "uint8": the same, except where float32 and float64 store a value within ~1e-5 of a
  rounding boundary differently. A 1-level step moves a later sum by at most the sum of its
  weights' magnitudes (< 1.3), which that step's own rounding can turn into 2, so each rounding
  stage adds up to a level: allowed, at most 1% of values, each within 2 levels for RGB (two
  stages) and 3 for NV12 (three). Seen in the CPU emulator over 1,500 small frames: at most
  0.49% of values, 2.0 levels (RGB, 2x upscale) and 1.95 levels (NV12).
- float16 output adds its own rounding: 2e-3 absolute.
"""
from __future__ import annotations

import numpy as np

from vlrt.ops import preprocess_ref as ref

LEVEL = 1.0 / (255.0 * min(ref.CLIP_STD))  # one pixel level, in normalised units (worst channel)
CASES = [  # format, width, height, S
    ("rgb24", 640, 480, 224), ("rgb24", 480, 640, 224), ("rgb24", 451, 300, 224), ("rgb24", 1000, 100, 224),
    ("rgb24", 224, 224, 224), ("rgb24", 224, 224, 336), ("rgb24", 1920, 1080, 224), ("rgb24", 3840, 2160, 336),
    ("nv12", 640, 480, 224), ("nv12", 451, 301, 224), ("nv12", 1000, 100, 224), ("nv12", 1920, 1080, 224),
    ("nv12", 7680, 4320, 224),
]


def make_frames(rng: np.random.Generator, fmt: str, w: int, h: int, count: int = 3) -> list:
    """`count` frames: smooth gradients with noise and hard edges, then uniform noise (NV12 bytes
    over 0..255, so out-of-gamut colours clip). RGB: (H, W, 3); NV12: (Y (H, W), UV (ceil(H/2),
    ceil(W/2), 2))."""
    frames = []
    for k in range(count):
        if k % 2 == 0:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
            phase = rng.uniform(0, 6, 3)
            img = np.stack([127 + 110 * np.sin(xx / 31 + yy / 47 + p) for p in phase], -1)  # (H, W, 3)
            img += rng.normal(0, 8, img.shape)
            img[h // 3: h // 2, w // 4: w // 2] = rng.integers(0, 256, 3)
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        else:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if fmt == "rgb24":
            frames.append(img)
        else:  # reuse channel 0 as luma and a subsampled channel 1/2 pair as chroma
            frames.append((img[:, :, 0].copy(), np.ascontiguousarray(img[::2, ::2, 1:])))
    return frames


COLOURS = [(m, r) for m in ref.MATRICES for r in ref.RANGES]  # (matrix, color_range): every combination


def reference(fmt: str, frame, size: int, rounding: str, matrix: str = "bt601",
              color_range: str = "limited") -> np.ndarray:
    if fmt == "rgb24":
        return ref.preprocess_rgb(frame, size, rounding=rounding)
    return ref.preprocess_nv12(*frame, size, rounding=rounding, matrix=matrix, color_range=color_range)


def check_output(out: np.ndarray, expected: np.ndarray, rounding: str, dtype, fmt: str = "rgb24") -> None:
    """One frame's (3, S, S) output against the reference (float64), tolerances as stated above."""
    assert np.isfinite(out).all(), "output left unwritten (NaN poison survived)"
    diff = np.abs(out.astype(np.float64) - expected)
    atol = 2e-3 if dtype == np.float16 else 1e-4
    if rounding == "none":
        assert diff.max() <= atol, diff.max()
        return
    off = diff > atol
    assert off.mean() <= 0.01, f"{off.mean():.4%} of values differ by more than {atol}"
    stages = 2 if fmt == "rgb24" else 3
    assert diff.max() <= stages * LEVEL + atol, diff.max() / LEVEL


def emulate_float32(fmt: str, frame, size: int, rounding: str, matrix: str = "bt601",
                    color_range: str = "limited") -> np.ndarray:
    """The kernel's arithmetic in float32 NumPy: float32 taps (computed in float64), float32 passes,
    settle after the conversion (truncate for "uint8") and each pass (round half up), then clip."""
    f32 = np.float32

    def settle(v, offset=0.5):
        return np.clip(np.floor(v + f32(offset)) if rounding == "uint8" else v, f32(0), f32(255))

    if fmt == "rgb24":
        rgb = frame.astype(f32)
    else:
        y, uv = frame
        h, w = y.shape
        c = uv[np.arange(h)[:, None] // 2, np.arange(w)[None, :] // 2].astype(f32) - f32(128)  # (H, W, 2)
        k = ref.YuvCoefficients(*map(f32, ref.yuv_coefficients(matrix, color_range)))  # float64, then float32
        luma = (y.astype(f32) - k.y_offset) * k.y_scale
        cb, cr = c[..., 0], c[..., 1]
        rgb = settle(np.stack([luma + k.rcr * cr, luma - k.gcb * cb - k.gcr * cr, luma + k.bcb * cb], -1),
                     offset=0.0)
    h, w = rgb.shape[:2]
    g = ref.geometry(w, h, size)
    wx = ref.resample_matrix(w, g.resized_width, g.left, size).astype(f32)  # (S, W)
    wy = ref.resample_matrix(h, g.resized_height, g.top, size).astype(f32)  # (S, H)
    rows = settle(np.ascontiguousarray(rgb.transpose(2, 0, 1)) @ wx.T)  # (3, H, S)
    planes = settle(wy @ rows)  # (3, S, S)
    mean = np.asarray(ref.CLIP_MEAN, f32)[:, None, None]
    inv_std = (f32(1) / np.asarray(ref.CLIP_STD, f32))[:, None, None]
    return (planes * f32(1 / 255) - mean) * inv_std


# PyAV's tags for the kernel's matrices and ranges (AVColorSpace, AVColorRange values).
AV_COLORSPACE = {"bt601": 6, "bt709": 1}  # SMPTE 170M (BT.601 525), BT.709
AV_COLOR_RANGE = {"limited": 1, "full": 2}  # MPEG, JPEG


def av_frame(y: np.ndarray, uv: np.ndarray, matrix: str, color_range: str):
    """A PyAV yuv420p VideoFrame of these NV12 planes, tagged with the matrix and range: what the
    CPU path decodes, and converts with swscale following the tags (`to_ndarray(format="rgb24")`)."""
    from av.video.frame import VideoFrame

    h, w = y.shape
    frame = VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, (y, uv[..., 0], uv[..., 1])):
        rows = np.zeros((plane.height, plane.line_size), np.uint8)  # (rows, pitch): PyAV pads rows
        rows[:, : data.shape[1]] = data
        plane.update(rows.tobytes())
    frame.colorspace = AV_COLORSPACE[matrix]
    frame.color_range = AV_COLOR_RANGE[color_range]
    return frame
