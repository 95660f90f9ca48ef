"""Frames -> model input, made the way CLIP's own preprocessing makes it.

OpenAI CLIP's `_transform` (which CLIP4Clip reuses) runs torchvision on a PIL image:
`Resize(n, BICUBIC)`, `CenterCrop(n)`, `convert("RGB")`, `ToTensor()`, `Normalize(mean, std)`.
A model only sees the pixels it was trained on if we repeat that arithmetic, and torchvision is
not a runtime dependency, so its rules are reproduced here with PIL and NumPy:

- Resize, int size (torchvision `transforms.functional._compute_resized_output_size`): the shorter
  side becomes n, the longer `int(n * long / short)` -- truncated, not rounded; the PIL image is then
  resized with plain `img.resize((w, h), BICUBIC)` (torchvision `_functional_pil.resize`).
- CenterCrop (torchvision `functional.center_crop`): `top = int(round((h - n) / 2.0))`, the same for
  `left`, with Python's round (halves go to the even integer: an offset of 2.5 becomes 2). After
  the shorter-side resize both sides are >= n, so torchvision's padding branch never runs.
- ToTensor divides the uint8 values by 255 in float32; Normalize subtracts the float32 mean and
  divides by the float32 std. Doing the same float32 operations here gives the same bits.

Two modes for decoded video frames: "exact" converts the frame to full-size RGB and runs the PIL
pipeline above; "fast" lets FFmpeg's swscale resize inside its YUV -> RGB conversion (one pass,
no full-size RGB image), at the price of small differences -- see docs/preprocessing.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from vlrt.errors import VlrtError

Mode = Literal["exact", "fast"]
MODES: tuple[str, ...] = ("exact", "fast")
# The manifest values this module implements; anything else would silently preprocess differently.
RESIZES = ("shorter-side",)
CROPS = ("center",)
INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC}
COLORS = ("RGB",)


def _check_choice(key: str, value: Any, allowed) -> str:
    if value not in allowed:
        raise VlrtError(f"preprocessing {key} {value!r} is not supported; expected one of {', '.join(allowed)}")
    return value


def _triple(pre: dict[str, Any], key: str) -> tuple[float, float, float]:
    value = pre.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise VlrtError(f"preprocessing {key} must be 3 numbers (R, G, B), got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Preprocess:
    """Shorter-side bicubic resize to `size`, centre crop, /255, normalise: CLIP's `_transform`."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise VlrtError(f"preprocessing size must be an integer >= 1, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise VlrtError(f"mean and std need 3 values each, got mean={self.mean!r} std={self.std!r}")
        if any(not s > 0 for s in self.std):
            raise VlrtError(f"std values must be > 0, got {self.std!r}")

    @classmethod
    def from_manifest(cls, pre: dict[str, Any]) -> Preprocess:
        """Builds from a bundle manifest's `preprocessing`, refusing rules this module cannot follow."""
        for key, allowed in (("resize", RESIZES), ("crop", CROPS), ("interpolation", INTERPOLATIONS)):
            _check_choice(key, pre.get(key), allowed)
        _check_choice("color", pre.get("color", "RGB"), COLORS)  # older manifests may omit it
        return cls(size=pre.get("size"), mean=_triple(pre, "mean"), std=_triple(pre, "std"))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after torchvision's shorter-side resize: short -> size, long -> int(size * long / short)."""
        _check_image_size(width, height)
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        _check_resized_pixels(width, height, self.size * new_long)
        return (self.size, new_long) if width <= height else (new_long, self.size)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of torchvision's CenterCrop in the resized image."""
        rw, rh = self.resized_size(width, height)
        # torchvision writes int(round(...)); round already returns an int, and rounds 2.5 to 2.
        left = round((rw - self.size) / 2.0)
        top = round((rh - self.size) / 2.0)
        return left, top, left + self.size, top + self.size

    def exact(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, size, size) float32, the same bits as CLIP's PIL pipeline.

        Gray (H, W) or (H, W, 1) and RGBA (H, W, 4) are accepted too. As in CLIP, the image is
        resized in its own mode and converted to RGB after the crop (PIL resizes RGBA with
        premultiplied alpha, so the order matters there).
        """
        image = _to_pil(rgb)
        size = self.resized_size(*image.size)
        box = self.crop_box(*image.size)
        image = image.resize(size, Image.Resampling.BICUBIC).crop(box).convert("RGB")
        return self.normalize(np.asarray(image))  # (size, size, 3) uint8

    def fast(self, rgb: np.ndarray) -> np.ndarray:
        """Like `exact`, but resized by swscale's bicubic (via PyAV): about 2x faster on 1080p RGB,
        within ~0.3 levels on average. Decoded frames should go to `from_av_frame(mode="fast")`
        instead, which also skips making the full-size RGB image."""
        if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
            _check_image_size(rgb.shape[1], rgb.shape[0])
        else:
            rgb = np.asarray(_to_pil(rgb).convert("RGB"))  # (H, W, 3)
        frame = _av().VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        return self.from_av_frame(frame, mode="fast")

    def from_av_frame(self, frame: Any, *, mode: Mode = "exact") -> np.ndarray:
        """A PyAV VideoFrame (any pixel format) -> (3, size, size) float32.

        "exact": swscale converts to full-size rgb24, then `exact`. "fast": swscale resizes with its
        bicubic filter during the colour conversion, straight to the resized size; only the crop and
        normalisation are left to NumPy. Measured differences and timings: docs/preprocessing.md.
        """
        if mode == "exact":
            return self.exact(frame.to_ndarray(format="rgb24"))
        if mode != "fast":
            raise VlrtError(f"unknown preprocessing mode {mode!r}; expected one of {', '.join(MODES)}")
        rw, rh = self.resized_size(frame.width, frame.height)
        small = frame.reformat(width=rw, height=rh, format="rgb24", interpolation=_swscale_bicubic())
        left, top, right, bottom = self.crop_box(frame.width, frame.height)
        return self.normalize(small.to_ndarray()[top:bottom, left:right])  # (size, size, 3)

    def normalize(self, rgb_crop: np.ndarray) -> np.ndarray:
        """(size, size, 3) uint8 -> (3, size, size) float32, ToTensor then Normalize, in float32 as torch does."""
        expected = (self.size, self.size, 3)
        if rgb_crop.dtype != np.uint8 or rgb_crop.shape != expected:
            raise VlrtError(f"normalize needs a uint8 array of shape {expected}, "
                            f"got {rgb_crop.dtype} {rgb_crop.shape}")
        x = rgb_crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # (3, S, S)
        mean = np.asarray(self.mean, np.float32)[:, None, None]  # (3, 1, 1)
        std = np.asarray(self.std, np.float32)[:, None, None]  # (3, 1, 1)
        return (x - mean) / std  # (3, S, S)


def _check_image_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise VlrtError(f"image is {width}x{height} pixels; both sides must be >= 1")


def _check_resized_pixels(width: int, height: int, pixels: int) -> None:
    # A 1 x 100000 strip would become a multi-gigabyte image; PIL's own decompression-bomb bound
    # is a fair line between odd and absurd.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit:
        raise VlrtError(f"a {width}x{height} image resizes to {pixels} pixels (more than {limit}); "
                        f"its aspect ratio is too extreme to preprocess")


def _swscale_bicubic() -> Any:
    """swscale flags for the fast mode: its bicubic, with chroma kept at full output resolution.

    swscale's bicubic is the Keys cubic with a = -0.6 (B = 0, C = 0.6; PIL's has a = -0.5), and
    PyAV cannot change those parameters. FULL_CHR_H_INT matters more: without it swscale writes
    RGB from chroma at half the output width, and on decoded x264 frames the mean difference from
    the exact mode grows from ~2.5 to ~4 levels (colour edges: ~150 instead of ~90).
    """
    interpolation = _av().video.reformatter.Interpolation
    return interpolation.BICUBIC | interpolation.FULL_CHR_H_INT


def _av() -> Any:
    try:
        import av
        import av.video.reformatter
    except ImportError as err:
        raise VlrtError("fast preprocessing needs PyAV: pip install av") from err
    return av


def _to_pil(array: np.ndarray) -> Image.Image:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> a PIL image in mode L, RGB or RGBA."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise VlrtError(f"expected a uint8 NumPy image, got {getattr(array, 'dtype', type(array).__name__)}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # (H, W)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise VlrtError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    _check_image_size(array.shape[1], array.shape[0])
    return Image.fromarray(np.ascontiguousarray(array))
