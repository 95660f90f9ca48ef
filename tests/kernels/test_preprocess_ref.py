"""The fused-preprocessing reference (vlrt/ops/preprocess_ref.py) on the CPU.

(a) against vlrt's exact CPU preprocessing (Pillow) on RGB frames of odd sizes, with the measured
    differences as bounds; (b) its NV12 path, in each matrix and range, against a separate
    per-pixel conversion followed by its RGB path, and its conversion against vlrt.gpu.colour's
    and swscale's. Differences are in pixel levels (0..255) unless said otherwise.
"""
from __future__ import annotations

import numpy as np
import pytest
from frame_cases import AV_COLOR_RANGE, AV_COLORSPACE, COLOURS
from PIL import Image

from vlrt.ops import preprocess_ref as ref
from vlrt.runtime.preprocess import Preprocess

STD = np.asarray(ref.CLIP_STD)[:, None, None]  # (3, 1, 1)
SIZES = [(640, 480), (480, 640), (451, 300), (1000, 100), (224, 224)]


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8: gradients, noise of sigma 6, a saturated rectangle (hard colour edges)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W) each
    img = np.stack([127 + 100 * np.sin(xx / 37 + yy / 53), 127 + 100 * np.cos(xx / 23 - yy / 41),
                    (xx * 255 / max(w - 1, 1) + yy) % 256], axis=-1)  # (H, W, 3)
    img += rng.normal(0, 6, img.shape)
    img[h // 3: h // 2, w // 4: w // 2] = (250, 10, 30)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 uniform noise: every bicubic overshoot Pillow clips, the worst case."""
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def level_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of two normalised (3, S, S) inputs, in pixel levels."""
    return np.abs(a - b) * STD * 255.0


@pytest.mark.parametrize("w,h,size", [(w, h, 224) for w, h in SIZES] + [(224, 224, 336)])
@pytest.mark.parametrize("make", [scene, noise])
def test_reference_matches_exact_cpu_preprocessing(w, h, size, make):
    """Measured on these frames (seeded): "uint8" differs from Pillow by exactly 1 level in at most
    0.17% of values (mean <= 0.0017 levels; there a sum lies within ~1e-6 of a half and the 22-bit
    weights round the other way); "none" by at most 1.082 levels, mean <= 0.315 (it keeps the
    fractions Pillow rounds away). The bounds sit slightly above those measurements."""
    img = make(np.random.default_rng(w * h + size), h, w)
    exact = Preprocess(size=size, mean=ref.CLIP_MEAN, std=ref.CLIP_STD).exact(img).astype(np.float64)
    stored = level_diff(ref.preprocess_rgb(img, size, rounding="uint8"), exact)
    kept = level_diff(ref.preprocess_rgb(img, size, rounding="none"), exact)
    if (w, h) == (size, size):  # no resize: both are a copy
        assert stored.max() < 1e-4 and kept.max() < 1e-4
        return
    assert stored.max() < 1.001
    assert (stored > 0.01).mean() < 0.0025
    assert stored.mean() < 0.0025
    assert kept.max() < 1.15
    assert kept.mean() < 0.33


@pytest.mark.parametrize("n_in,n_out,first,count", [(640, 298, 37, 224), (300, 224, 0, 224), (100, 224, 0, 224),
                                                    (1000, 2240, 1008, 224), (1920, 398, 87, 224), (7, 3, 0, 3)])
def test_resample_matrix_is_pillows_filter(n_in, n_out, first, count):
    """Pillow's float ("F" mode) resize uses the same coefficients without uint8 rounding, so one row
    through both must agree to float32 precision (measured: 1.5e-5 levels at most)."""
    row = np.random.default_rng(n_in).uniform(0, 255, n_in).astype(np.float32)
    pil = np.asarray(Image.fromarray(row[None, :], mode="F").resize((n_out, 1), Image.Resampling.BICUBIC))[0]
    weights = ref.resample_matrix(n_in, n_out, first, count)  # (count, n_in)
    np.testing.assert_allclose(weights @ row, pil[first: first + count], rtol=0, atol=1e-4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)


def test_geometry_matches_runtime_preprocess():
    pre = Preprocess(size=224, mean=ref.CLIP_MEAN, std=ref.CLIP_STD)
    for w, h in SIZES + [(229, 224), (1920, 1080), (225, 224), (227, 224), (3, 500)]:
        g = ref.geometry(w, h, 224)
        assert (g.resized_width, g.resized_height) == pre.resized_size(w, h)
        assert (g.left, g.top) == pre.crop_box(w, h)[:2]


KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # BT.601-7 and BT.709-6, Table "Derivation of luminance"


def yuv_matrix(y: np.ndarray, uv: np.ndarray, matrix: str, color_range: str) -> np.ndarray:
    """A separate NV12 -> RGB: chroma repeated 2x2, then one 3x3 matrix on (Y', Cb, Cr) scaled to
    [0, 1] luma and [-0.5, 0.5] chroma. (H, W), (ceil(H/2), ceil(W/2), 2) uint8 -> (H, W, 3)
    float64, unclipped."""
    h, w = y.shape
    chroma = uv.repeat(2, axis=0).repeat(2, axis=1)[:h, :w].astype(np.float64)  # (H, W, 2)
    y0, ys, cs = (0.0, 255.0, 255.0) if color_range == "full" else (16.0, 219.0, 224.0)
    ypbpr = np.stack([(y - y0) / ys, (chroma[..., 0] - 128.0) / cs, (chroma[..., 1] - 128.0) / cs], -1)
    kr, kb = KR_KB[matrix]
    kg = 1 - kr - kb
    matrix = np.array([[1.0, 0.0, 2 * (1 - kr)],
                       [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
                       [1.0, 2 * (1 - kb), 0.0]])  # (3, 3): rows R, G, B
    return 255.0 * ypbpr @ matrix.T  # (H, W, 3)


def random_nv12(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Y (H, W) and UV (ceil(H/2), ceil(W/2), 2) over all byte values: out-of-gamut values clip."""
    return (rng.integers(0, 256, (h, w), dtype=np.uint8),
            rng.integers(0, 256, ((h + 1) // 2, (w + 1) // 2, 2), dtype=np.uint8))


@pytest.mark.parametrize("w,h,colour", [(w, h, ("bt601", "limited")) for w, h in [(640, 480), (224, 224)]] +
                         [(w, h, c) for c in COLOURS for w, h in [(451, 301), (1000, 100)]],
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_nv12_path_is_the_matrix_then_rgb_path(w, h, colour):
    y, uv = random_nv12(np.random.default_rng(w + h), w, h)
    rgb = np.clip(yuv_matrix(y, uv, *colour), 0, 255)  # (H, W, 3)
    # "uint8": a truncated uint8 RGB frame (as swscale makes it), then Pillow's arithmetic
    expected = ref.preprocess_rgb(np.floor(rgb).astype(np.uint8), 224, rounding="uint8")
    got = ref.preprocess_nv12(y, uv, 224, rounding="uint8", matrix=colour[0], color_range=colour[1])
    np.testing.assert_array_equal(got, expected)
    # "none": the float conversion goes straight in
    expected = ref.preprocess_rgb(rgb, 224, rounding="none")
    got = ref.preprocess_nv12(y, uv, 224, rounding="none", matrix=colour[0], color_range=colour[1])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_defaults_are_bt601_limited():
    y, uv = random_nv12(np.random.default_rng(5), 33, 17)
    np.testing.assert_array_equal(ref.nv12_to_rgb(y, uv), ref.nv12_to_rgb(y, uv, matrix="bt601",
                                                                          color_range="limited"))
    with pytest.raises(ValueError, match="matrix"):
        ref.nv12_to_rgb(y, uv, matrix="bt2020")
    with pytest.raises(ValueError, match="range"):
        ref.nv12_to_rgb(y, uv, color_range="tv")


@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
def test_conversion_is_vlrt_gpu_colours(colour):
    """The GPU path's PyTorch conversion (vlrt.gpu.colour, run here on CPU tensors) and the
    reference's "uint8" conversion are one formula, odd sizes included; float32 against float64
    may floor a value within ~1e-5 of an integer differently."""
    torch = pytest.importorskip("torch")
    from vlrt.gpu.colour import nv12_to_rgb

    tags = {"colorspace": AV_COLORSPACE[colour[0]], "color_range": AV_COLOR_RANGE[colour[1]]}
    for w, h in [(640, 480), (451, 301), (33, 17)]:
        y, uv = random_nv12(np.random.default_rng(w * h), w, h)
        gpu = nv12_to_rgb(torch.from_numpy(y), torch.from_numpy(uv), **tags).numpy().transpose(1, 2, 0)
        mine = ref.nv12_to_rgb(y, uv, rounding="uint8", matrix=colour[0], color_range=colour[1])
        assert (np.abs(gpu - mine) > 0).mean() < 1e-4 and np.abs(gpu - mine).max() <= 1


@pytest.mark.parametrize("colour", COLOURS, ids="-".join)
def test_conversion_is_swscales_on_even_heights(colour):
    """swscale's unscaled yuv420p -> rgb24 converter (the CPU path, following the frame's tags) and
    the reference's conversion, in pixel levels: measured mean 0.13-0.53, max 2 on uniform
    bytes. For odd heights swscale leaves that converter and interpolates chroma vertically (see
    docs/kernels.md), so only even heights are compared; widths may be odd."""
    pytest.importorskip("av")
    from frame_cases import av_frame

    for w, h in [(640, 480), (451, 300), (33, 18)]:
        y, uv = random_nv12(np.random.default_rng(w * h + 1), w, h)
        cpu = av_frame(y, uv, *colour).to_ndarray(format="rgb24").astype(np.float64)  # (H, W, 3)
        diff = np.abs(cpu - ref.nv12_to_rgb(y, uv, rounding="uint8", matrix=colour[0], color_range=colour[1]))
        assert diff.max() <= 2 and diff.mean() <= 0.6, (w, h, diff.max(), diff.mean())


def test_nv12_planes_split_a_pyav_buffer():
    w, h = 6, 4
    buffer = np.arange(w * h * 3 // 2, dtype=np.uint8).reshape(h * 3 // 2, w)  # (H * 3/2, W)
    y, uv = ref.nv12_planes(buffer, w, h)
    assert y.shape == (4, 6) and uv.shape == (2, 3, 2)
    assert uv[0, 0].tolist() == [24, 25] and uv[1, 2].tolist() == [34, 35]


def test_refuses_unknown_rounding_and_bad_planes():
    with pytest.raises(ValueError, match="rounding"):
        ref.preprocess_rgb(np.zeros((4, 4, 3), np.uint8), 2, rounding="even")
    with pytest.raises(ValueError, match="UV plane"):
        ref.preprocess_nv12(np.zeros((4, 4), np.uint8), np.zeros((1, 2, 2), np.uint8), 2)
