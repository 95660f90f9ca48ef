"""YUV 4:2:0 (NV12 / P010 / P016, as NVDEC writes them) -> RGB uint8, on whatever device the
planes are on, matching the CPU path's conversion (FFmpeg's swscale via PyAV's `to_ndarray`).

The CPU path turns decoded yuv420p frames into rgb24 with swscale's unscaled converter, which
  - picks the matrix from the frame's colourspace tag, BT.601 when the tag is unspecified,
  - treats the range as limited (16..235) unless the frame says full ("JPEG") range,
  - replicates each chroma sample over its 2x2 luma block (no chroma interpolation),
  - and truncates in fixed point.
Doing the same in float32 and truncating (floor) lands within 2-3 levels of swscale everywhere
and within ~0.1 level on average on x264/x265 test videos; measured on the CPU in
tests/gpu/test_gpu_colour.py, where the tolerances are asserted. NVDEC's planes themselves are the
same bits a software decoder produces (H.264/HEVC decoding is exactly specified), so these
tolerances are the whole expected GPU-vs-CPU difference for 8-bit streams.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vlrt.errors import VlrtError

# AVColorSpace values (libavutil/pixfmt.h) -> (Kr, Kb). Anything else is treated as BT.601, as
# swscale's default does.
_KR_KB = {
    1: (0.2126, 0.0722),   # BT709
    4: (0.30, 0.11),       # FCC
    5: (0.299, 0.114),     # BT470BG
    6: (0.299, 0.114),     # SMPTE170M
    7: (0.212, 0.087),     # SMPTE240M
    9: (0.2627, 0.0593),   # BT2020_NCL
    10: (0.2627, 0.0593),  # BT2020_CL (converted as NCL: the constant-luminance form is rare)
}
BT601 = (0.299, 0.114)
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def matrix_name(colorspace: int) -> str:
    return {1: "bt709", 4: "fcc", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}.get(int(colorspace or 0), "bt601")


def _as_float(plane: Any) -> Any:
    """uint8 or 16-bit (MSB-aligned P010/P016) samples -> float32 in 8-bit units."""
    torch = _torch()
    if plane.dtype == torch.uint8:
        return plane.float()
    if plane.element_size() != 2:
        raise TypeError(f"expected uint8 or 16-bit planes, got {plane.dtype}")
    # uint16 has few kernels in torch; reinterpret as int16 and undo the sign.
    return (plane.view(torch.int16).to(torch.int32) & 0xFFFF).float() / 256.0


def _upsample(chroma: Any, height: int, width: int) -> Any:
    """(h, w) chroma -> (height, width) by 2x2 replication; an odd last row/column repeats the edge."""
    torch = _torch()
    full = chroma.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)  # (2h, 2w)
    if full.shape[0] < height or full.shape[1] < width:
        full = torch.nn.functional.pad(full[None, None], (0, max(0, width - full.shape[1]),
                                                          0, max(0, height - full.shape[0])), mode="replicate")[0, 0]
    return full[:height, :width]


def yuv420_to_rgb(y: Any, u: Any, v: Any, *, colorspace: int = 2, color_range: int = 0) -> Any:
    """(H, W) luma, (H/2, W/2) chroma planes -> (3, H, W) uint8 RGB on the planes' device.

    `colorspace` and `color_range` are the frame's AVColorSpace / AVColorRange values
    (PyAV's `frame.colorspace`, `frame.color_range`).
    """
    torch = _torch()
    height, width = y.shape
    kr, kb = _KR_KB.get(int(colorspace or 0), BT601)
    kg = 1.0 - kr - kb
    luma = _as_float(y)
    cb = _upsample(_as_float(u), height, width) - 128.0
    cr = _upsample(_as_float(v), height, width) - 128.0
    if int(color_range or 0) != FULL_RANGE:
        luma = (luma - 16.0) * (255.0 / 219.0)
        cb, cr = cb * (255.0 / 224.0), cr * (255.0 / 224.0)
    r = luma + (2.0 * (1.0 - kr)) * cr
    g = luma - (2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr
    b = luma + (2.0 * (1.0 - kb)) * cb
    rgb = torch.stack([r, g, b])  # (3, H, W)
    return rgb.floor_().clamp_(0.0, 255.0).to(torch.uint8)


def nv12_to_rgb(y: Any, uv: Any, **tags: int) -> Any:
    """NV12/P010/P016: (H, W) luma, (ceil(H/2), ceil(W/2), 2) interleaved chroma (as
    `dlpack_planes` gives them) -> (3, H, W) uint8 RGB. A chroma plane one row or column short
    (PyAV's own DLPack shape for odd sizes) has its edge repeated, which swscale does not do."""
    return yuv420_to_rgb(y, uv[..., 0], uv[..., 1], **tags)


def dlpack_planes(frame: Any) -> tuple[Any, Any]:
    """(Y (H, W), UV (ceil(H/2), ceil(W/2), 2)): an NV12 / P010 / P016 PyAV frame's planes as
    torch views of its memory (GPU memory for NVDEC frames), uint8 or uint16. The views keep the
    frame's buffer alive; nothing is copied.

    PyAV exports the chroma plane as floor(H/2) x floor(W/2) samples, so an odd-sized picture
    loses the last chroma row or column, which swscale (the CPU path) uses. FFmpeg allocates that
    plane with ceil(H/2) rows of at least ceil(W/2) sample pairs (`av_image_fill_arrays`; CUDA
    frame pools at the coded size rounded up to even), so the whole plane is read through a wider
    view of the same memory.
    """
    torch = _torch()
    # The capsule is taken here: PyAV refuses the stream= argument torch.from_dlpack would pass.
    y = torch.from_dlpack(frame.planes[0].__dlpack__())  # (H, W)
    uv = torch.from_dlpack(frame.planes[1].__dlpack__())  # (H//2, W//2, 2)
    rows, cols = (frame.height + 1) // 2, (frame.width + 1) // 2
    if tuple(uv.shape[:2]) != (rows, cols):
        uv = _widen(uv, rows, cols)  # (ceil(H/2), ceil(W/2), 2)
    return y, uv


class _PlaneView:
    """Array-interface view of a plane's memory; holds the exported tensor (and so the frame)."""

    def __init__(self, owner: Any, interface: dict[str, Any]) -> None:
        self.owner = owner
        if owner.is_cuda:  # read by torch.as_tensor
            self.__cuda_array_interface__ = interface
        else:  # read by numpy.asarray
            self.__array_interface__ = interface


def _widen(uv: Any, rows: int, cols: int) -> Any:
    """The (rows, cols, 2) chroma plane starting where `uv` starts, with `uv`'s line length."""
    item = uv.element_size()
    line = uv.stride(0) * item
    if uv.dim() != 3 or tuple(uv.stride()[1:]) != (2, 1) or line < 2 * cols * item:
        raise VlrtError(f"cannot view the full {rows}x{cols} chroma plane of a {tuple(uv.shape)} export "
                        f"with strides {tuple(uv.stride())} (line of {line} bytes)")
    interface = {"shape": (rows, cols, 2), "typestr": "<u2" if item == 2 else "|u1",
                 "strides": (line, 2 * item, item), "data": (uv.data_ptr(), False), "version": 3}
    view = _PlaneView(uv, interface)
    torch = _torch()
    if uv.is_cuda:  # torch keeps `view` (and so the frame) alive as long as the tensor lives
        return torch.as_tensor(view, device=uv.device)
    return torch.from_numpy(np.asarray(view))  # the array's base is `view`


def _torch() -> Any:
    from vlrt.gpu.device import require_torch

    return require_torch()
