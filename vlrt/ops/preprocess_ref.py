"""Fused frame preprocessing: the NumPy reference of kernels/preprocess.cu.

A decoded frame (packed RGB24, or NV12 in BT.601 or BT.709, limited or full range) becomes CLIP's model input
in one pass: shorter-side resize to S, centre crop S x S, x / 255, (x - mean) / std, planar
(3, S, S). The geometry is CLIP's (torchvision's) and so vlrt.runtime.preprocess's:

- resized size: the shorter side becomes S, the longer `int(S * long / short)` (truncated);
- crop offsets: `round((resized - S) / 2)` with Python's round (halves to the even integer).

The filter is Pillow's bicubic (Keys cubic, a = -0.5), antialiased on downscale the way Pillow
does it (src/libImaging/Resample.c `precompute_coeffs`): for an output pixel `i` of an axis
scaled from `n_in` to `n_out`,

    scale = n_in / n_out,  filterscale = max(scale, 1),  support = 2 * filterscale
    center = (i + 0.5) * scale
    taps j = int(center - support + 0.5) ... int(center + support + 0.5) - 1, clipped to [0, n_in)
    w_j = cubic((j - center + 0.5) / filterscale), then divided by their sum.

The CPU exact path (`Preprocess.exact`, and `from_av_frame` for decoded frames) stores uint8
after every step: FFmpeg's swscale converts YUV to RGB in fixed point and truncates; Pillow
resizes horizontally, rounds and clips to uint8, then resizes vertically and rounds and clips
again, with 22-bit fixed-point weights. Two rounding modes:

- "uint8" (default): the same steps in float64, each stored as the exact path stores it: the
  YUV -> RGB conversion truncates (floor), each resize pass rounds half up (floor(v + 0.5), as
  Pillow's fixed point does), and every step clips to [0, 255]. On RGB input only the weights'
  precision differs from Pillow: values agree except for rare 1-level steps where a sum lies
  within ~1e-6 of a half.
- "none": clip to [0, 255] after each step (Pillow saturates there too; without it, bright edges
  differ by up to 21 levels) but never round, so the output keeps fractional levels.

tests/kernels/test_preprocess_ref.py measures both against `Preprocess.exact`.

NV12: each source pixel is converted on its own with the frame's matrix (BT.601 or BT.709) and
range (limited: Y 16..235, Cb/Cr 16..240; or full: 0..255), the tags swscale follows on the CPU
path (untagged frames: BT.601, limited), taking the chroma sample (y // 2, x // 2) (nearest chroma,
as swscale's unscaled yuv420p converter does; odd sizes have ceil(W/2) x ceil(H/2) chroma samples).
swscale's fixed point itself is not reproduced, and for odd heights swscale leaves its unscaled
converter and interpolates chroma vertically: docs/kernels.md has the measured differences.

float64 throughout; NumPy only (no torch, no PIL).
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from vlrt.constants import CLIP_MEAN, CLIP_STD

# BT.601: luma weights of R and B; limited range puts Y in [16, 235] and Cb, Cr in [16, 240].
KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB
Y_SCALE = 255.0 / 219.0
C_SCALE = 255.0 / 224.0
# (Kr, Kb) of the matrices the kernel converts; kernels/preprocess.h numbers them in this order.
MATRICES = {"bt601": (KR, KB), "bt709": (0.2126, 0.0722)}
RANGES = ("limited", "full")

Rounding = Literal["uint8", "none"]
ROUNDINGS = ("uint8", "none")


class Geometry(NamedTuple):
    """Where the S x S crop sits: the resized image's size and the crop's top-left corner in it."""

    resized_width: int
    resized_height: int
    left: int
    top: int


def geometry(width: int, height: int, size: int) -> Geometry:
    """CLIP's shorter-side resize and centre crop for a `width` x `height` frame, in integers."""
    if width < 1 or height < 1 or size < 1:
        raise ValueError(f"need positive sizes, got {width}x{height} -> {size}")
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # torchvision's truncation
    rw, rh = (size, new_long) if width <= height else (new_long, size)
    return Geometry(rw, rh, _half_to_even(rw - size), _half_to_even(rh - size))


def _half_to_even(d: int) -> int:
    """round(d / 2) with Python's rule (2.5 -> 2, 3.5 -> 4), for d >= 0, in integers."""
    q, odd = divmod(d, 2)
    return q + 1 if odd and q % 2 == 1 else q


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (Pillow's BICUBIC), elementwise."""
    a = -0.5
    x = np.abs(np.asarray(x, np.float64))
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def resample_matrix(in_size: int, out_size: int, first: int, count: int) -> np.ndarray:
    """Weights of output pixels first .. first + count - 1 of an in_size -> out_size resize.

    Returns (count, in_size) float64; row i holds the normalised taps of output pixel first + i.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    center = (np.arange(first, first + count, dtype=np.float64) + 0.5) * scale  # (count,)
    lo = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)  # (count,)
    hi = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)  # (count,)
    j = np.arange(in_size, dtype=np.float64)[None, :]  # (1, in_size)
    w = cubic((j - center[:, None] + 0.5) * (1.0 / filterscale))  # (count, in_size)
    inside = (j >= lo[:, None]) & (j < hi[:, None])  # (count, in_size)
    w = np.where(inside, w, 0.0)
    total = w.sum(axis=1, keepdims=True)  # (count, 1)
    return np.divide(w, total, out=w, where=total != 0.0)


def _settle(values: np.ndarray, rounding: Rounding, *, offset: float = 0.5) -> np.ndarray:
    """A step's result stored as uint8 ("uint8": floor(v + offset), then clip) or only clipped."""
    if rounding == "uint8":
        values = np.floor(values + offset)
    return np.clip(values, 0.0, 255.0)


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")


def resize_crop(rgb: np.ndarray, size: int, *, rounding: Rounding = "uint8") -> np.ndarray:
    """(H, W, 3) RGB (uint8 or float) -> (3, size, size) float64 in [0, 255], resized and cropped."""
    _check_rounding(rounding)
    h, w = rgb.shape[:2]
    g = geometry(w, h, size)
    wx = resample_matrix(w, g.resized_width, g.left, size)  # (S, W)
    wy = resample_matrix(h, g.resized_height, g.top, size)  # (S, H)
    planes = np.asarray(rgb, np.float64).transpose(2, 0, 1)  # (3, H, W)
    rows = _settle(planes @ wx.T, rounding)  # (3, H, S): the horizontal pass first, as Pillow
    return _settle(wy @ rows, rounding)  # (3, S, S)


def normalize(planes: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """(3, S, S) values in [0, 255] -> (3, S, S) float64: x / 255, then (x - mean) / std."""
    mean = np.asarray(mean, np.float64)[:, None, None]  # (3, 1, 1)
    std = np.asarray(std, np.float64)[:, None, None]  # (3, 1, 1)
    return (planes / 255.0 - mean) / std


def preprocess_rgb(rgb: np.ndarray, size: int, *, rounding: Rounding = "uint8", mean=CLIP_MEAN,
                   std=CLIP_STD) -> np.ndarray:
    """Packed (H, W, 3) RGB frame -> (3, size, size) float64 model input."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {rgb.shape}")
    return normalize(resize_crop(rgb, size, rounding=rounding), mean, std)


def nv12_planes(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A contiguous NV12 buffer (PyAV's `to_ndarray()` layout, (H * 3 // 2, W) for even sizes)
    -> Y (H, W) and interleaved UV (ceil(H/2), ceil(W/2), 2)."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    flat = np.ascontiguousarray(frame).reshape(-1)
    y = flat[: width * height].reshape(height, width)  # (H, W)
    uv = flat[width * height: width * height + ch * cw * 2].reshape(ch, cw, 2)  # (H/2, W/2, 2)
    return y, uv


class YuvCoefficients(NamedTuple):
    """R = Y' + rcr Cr', G = Y' - gcb Cb' - gcr Cr', B = Y' + bcb Cb', where Y' = (Y - y_offset) *
    y_scale and C' = C - 128 (the range's chroma scale is folded into the four coefficients)."""

    y_offset: float
    y_scale: float
    rcr: float
    gcb: float
    gcr: float
    bcb: float


def yuv_coefficients(matrix: str = "bt601", color_range: str = "limited") -> YuvCoefficients:
    """The conversion of `matrix` ("bt601", "bt709") and `color_range` ("limited", "full"), float64."""
    if matrix not in MATRICES:
        raise ValueError(f"unknown matrix {matrix!r}; expected one of {', '.join(MATRICES)}")
    if color_range not in RANGES:
        raise ValueError(f"unknown range {color_range!r}; expected one of {', '.join(RANGES)}")
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    full = color_range == "full"
    y_scale, c_scale = (1.0, 1.0) if full else (Y_SCALE, C_SCALE)
    return YuvCoefficients(0.0 if full else 16.0, y_scale, 2.0 * (1.0 - kr) * c_scale,
                           2.0 * (1.0 - kb) * kb / kg * c_scale, 2.0 * (1.0 - kr) * kr / kg * c_scale,
                           2.0 * (1.0 - kb) * c_scale)


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, *, rounding: Rounding = "none", matrix: str = "bt601",
                color_range: str = "limited") -> np.ndarray:
    """Y (H, W) and UV (ceil(H/2), ceil(W/2), 2) uint8 -> (H, W, 3) float64 RGB in [0, 255]."""
    _check_rounding(rounding)
    k = yuv_coefficients(matrix, color_range)
    h, w = y.shape
    chroma = np.asarray(uv, np.float64)[np.arange(h)[:, None] // 2, np.arange(w)[None, :] // 2]  # (H, W, 2)
    luma = (np.asarray(y, np.float64) - k.y_offset) * k.y_scale  # (H, W)
    cb, cr = chroma[..., 0] - 128.0, chroma[..., 1] - 128.0  # (H, W) each
    r = luma + k.rcr * cr
    g = luma - k.gcb * cb - k.gcr * cr
    b = luma + k.bcb * cb
    return _settle(np.stack([r, g, b], axis=-1), rounding, offset=0.0)  # (H, W, 3); truncated, as swscale


def preprocess_nv12(y: np.ndarray, uv: np.ndarray, size: int, *, rounding: Rounding = "uint8",
                    mean=CLIP_MEAN, std=CLIP_STD, matrix: str = "bt601", color_range: str = "limited") -> np.ndarray:
    """NV12 planes (see `nv12_to_rgb`) -> (3, size, size) float64 model input."""
    h, w = y.shape
    if uv.shape != ((h + 1) // 2, (w + 1) // 2, 2):
        raise ValueError(f"UV plane of shape {uv.shape} does not fit a {w}x{h} luma plane")
    rgb = nv12_to_rgb(y, uv, rounding=rounding, matrix=matrix, color_range=color_range)  # (H, W, 3)
    return normalize(resize_crop(rgb, size, rounding=rounding), mean, std)
