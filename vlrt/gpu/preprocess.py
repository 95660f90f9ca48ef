"""CLIP preprocessing in PyTorch on (N, 3, H, W) uint8 frames, on the frames' device.

The arithmetic is the CPU path's (`vlrt.runtime.preprocess.Preprocess`, whose size and crop
methods are used here, not re-derived): shorter side -> `size` with the longer side truncated,
bicubic resize, centre crop with Python's round, /255, normalise in float32. The resize is
`interpolate(mode="bicubic", antialias=True)` (PIL's kernel, a = -0.5, widened when shrinking) run
as PIL runs it: horizontal pass, round and clamp to 0..255, vertical pass, round and clamp. On the
CPU this equals PIL's fixed-point result except for ~0.05% of values, off by 1-2 levels
(tests/gpu/test_gpu_preprocess.py asserts it; the CUDA kernels are expected to agree as closely).

A fused CUDA kernel (kernels/preprocess.cu) can replace the PyTorch ops:
pass it as `kernel`, a callable with the `FusedPreprocessKernel` signature below.
"""
from __future__ import annotations

from typing import Any, Protocol

from vlrt.errors import VlrtError
from vlrt.gpu.device import require_torch
from vlrt.runtime.preprocess import Preprocess


class FusedPreprocessKernel(Protocol):
    """The seam for a fused resize + crop + normalise kernel.

    frames: (N, 3, H, W) uint8 (on a CUDA device, for a CUDA kernel). size: (height, width) after
    the shorter-side resize; box: (left, top, right, bottom) of the crop in the resized image;
    mean/std per RGB channel; dtype: the output dtype. Returns (N, 3, box height, box width) of
    `dtype`, holding what the PyTorch path computes (two rounded bicubic passes, crop, /255,
    normalise) within the tolerance tests/gpu/test_gpu_preprocess.py asserts.
    """

    def __call__(self, frames: Any, *, size: tuple[int, int], box: tuple[int, int, int, int],
                 mean: tuple[float, float, float], std: tuple[float, float, float], dtype: Any) -> Any: ...


class GpuPreprocess:
    """uint8 frames -> model input, as `Preprocess.exact` computes it (within a level per pixel)."""

    def __init__(self, pre: Preprocess, *, dtype: Any = None, kernel: FusedPreprocessKernel | None = None) -> None:
        torch = require_torch()
        self.pre = pre
        self.dtype = dtype if dtype is not None else torch.float16
        self.kernel = kernel
        self._consts: dict[Any, tuple[Any, Any]] = {}

    @classmethod
    def from_manifest(cls, pre: dict[str, Any], **kwargs: Any) -> GpuPreprocess:
        """From a manifest's (or a loaded checkpoint's) `preprocessing`, refusing rules it cannot follow."""
        return cls(Preprocess.from_manifest(pre), **kwargs)

    def __call__(self, frames: Any) -> Any:
        """(N, 3, H, W) uint8 -> (N, 3, size, size) of self.dtype, on the frames' device."""
        torch = require_torch()
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise VlrtError("GPU preprocessing needs (N, 3, H, W) uint8 frames, "
                            f"got {frames.dtype} {tuple(frames.shape)}")
        height, width = frames.shape[-2:]
        rw, rh = self.pre.resized_size(width, height)
        box = self.pre.crop_box(width, height)
        if self.kernel is not None:
            return self.kernel(frames, size=(rh, rw), box=box, mean=self.pre.mean, std=self.pre.std, dtype=self.dtype)
        resized = self._resize(frames, rh, rw)  # (N, 3, rh, rw) float32 holding integers 0..255
        left, top, right, bottom = box
        return self._normalize(resized[:, :, top:bottom, left:right])  # (N, 3, S, S)

    def frames_list(self, frames: list[Any]) -> Any:
        """A list of (3, H, W) uint8 frames (sizes may differ) -> (N, 3, size, size)."""
        torch = require_torch()
        if not frames:
            s = self.pre.size
            return torch.zeros((0, 3, s, s), dtype=self.dtype)
        if len({tuple(f.shape) for f in frames}) == 1:
            return self(torch.stack(frames))  # (N, 3, H, W)
        return torch.cat([self(f[None]) for f in frames])  # (N, 3, S, S)

    @staticmethod
    def _resize(frames: Any, height: int, width: int) -> Any:
        """Two separable passes, horizontal first, each rounded and clamped to 0..255, as PIL's
        8-bit resampler stores its intermediate image: one float pass differs by up to ~12 levels
        where bicubic overshoot at hard edges is clipped between PIL's passes."""
        x = frames.float()  # (N, 3, H, W)
        if width != x.shape[-1]:
            x = _bicubic(x, x.shape[-2], width)  # (N, 3, H, w)
        if height != x.shape[-2]:
            x = _bicubic(x, height, width)  # (N, 3, h, w)
        return x

    def _normalize(self, crop: Any) -> Any:
        """Integers 0..255 in float32 -> ToTensor then Normalize, in float32 as torch does, then dtype."""
        torch = require_torch()
        mean, std = self._constants(crop.device)
        x = crop / torch.tensor(255.0, dtype=torch.float32, device=crop.device)
        return ((x - mean) / std).to(self.dtype)

    def _constants(self, device: Any) -> tuple[Any, Any]:
        if device not in self._consts:
            torch = require_torch()
            mean = torch.tensor(self.pre.mean, dtype=torch.float32, device=device)[:, None, None]  # (3, 1, 1)
            std = torch.tensor(self.pre.std, dtype=torch.float32, device=device)[:, None, None]  # (3, 1, 1)
            self._consts[device] = (mean, std)
        return self._consts[device]


def _bicubic(x: Any, height: int, width: int) -> Any:
    """Antialiased bicubic (PIL's kernel) to (height, width), rounded to integers in 0..255."""
    torch = require_torch()
    x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True,
                                        align_corners=False)
    return x.round_().clamp_(0.0, 255.0)
