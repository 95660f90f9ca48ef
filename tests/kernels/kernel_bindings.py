"""ctypes bindings of libvlrt_kernels.so for the kernel tests (kernels/*.h are the source of truth).

Host-side functions (geometry, argument checks) run anywhere the library loads. The launchers take
device pointers: TorchMemory gives them on a GPU (PyTorch tensors' data_ptr(), launches on a torch
CUDA stream); HostMemory gives host pointers to the CPU emulator's build of the same sources
(tests/kernels/emulator). Nothing here needs CuPy or nvcc.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

VLRT_OK, VLRT_BAD_ARGUMENT, VLRT_TOO_LARGE, VLRT_BAD_MERGE, VLRT_ALIASED = 0, -1, -2, -3, -4
VLRT_FLOAT32, VLRT_FLOAT16 = 0, 1
VLRT_RGB24, VLRT_NV12 = 0, 1
ROUNDING = {"uint8": 0, "none": 1}
MATRIX = {"bt601": 0, "bt709": 1}  # VlrtMatrix
RANGE = {"limited": 0, "full": 1}  # VlrtRange
TOKEN_MERGE_MAX_TOKENS = 2048


def load_build_module():
    """kernels/build.py as a module (it is a script, not part of the vlrt package)."""
    name = "vlrt_kernels_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "kernels" / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


class Frames(ctypes.Structure):
    """VlrtFrames (kernels/preprocess.h)."""

    _fields_ = [
        ("format", ctypes.c_int),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("plane0", ctypes.c_void_p),
        ("plane1", ctypes.c_void_p),
        ("pitch0", ctypes.c_longlong),
        ("pitch1", ctypes.c_longlong),
        ("frame_stride0", ctypes.c_longlong),
        ("frame_stride1", ctypes.c_longlong),
        ("matrix", ctypes.c_int),
        ("range", ctypes.c_int),
    ]


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    c_int, c_void_p = ctypes.c_int, ctypes.c_void_p
    lib.vlrt_token_merge.argtypes = [c_void_p] * 4 + [c_int] * 5 + [c_void_p]
    lib.vlrt_token_merge.restype = c_int
    lib.vlrt_token_merge_shared_bytes.argtypes = [c_int]
    lib.vlrt_token_merge_shared_bytes.restype = ctypes.c_size_t
    lib.vlrt_preprocess_geometry.argtypes = [c_int] * 3 + [ctypes.POINTER(c_int)] * 4
    lib.vlrt_preprocess_geometry.restype = c_int
    floats3 = ctypes.c_float * 3
    lib.vlrt_preprocess.argtypes = [ctypes.POINTER(Frames), c_int, c_int, c_int, floats3, floats3, c_void_p, c_int,
                                    c_void_p]
    lib.vlrt_preprocess.restype = c_int
    lib.vlrt_status_string.argtypes = [c_int]
    lib.vlrt_status_string.restype = ctypes.c_char_p
    return lib


def geometry(lib: ctypes.CDLL, width: int, height: int, size: int) -> tuple[int, tuple[int, int, int, int]]:
    """(status, (resized_width, resized_height, left, top)) from vlrt_preprocess_geometry."""
    out = [ctypes.c_int(-7) for _ in range(4)]
    status = lib.vlrt_preprocess_geometry(width, height, size, *[ctypes.byref(v) for v in out])
    return status, tuple(v.value for v in out)


def floats3(values) -> ctypes.Array:
    return (ctypes.c_float * 3)(*values)


class HostMemory:
    """Buffers for the CPU emulator of the kernels, where device pointers are host pointers."""

    stream = None  # the emulator runs launches in order, at once

    def upload(self, a):
        return np.ascontiguousarray(a)

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype)

    def address(self, a) -> int:
        return a.ctypes.data

    def download(self, a):
        return a

    def synchronize(self) -> None:
        pass


class TorchMemory:
    """Buffers as PyTorch tensors; on a CUDA device, launches go on a non-default torch stream.

    The library links its own (static) CUDA runtime, but a stream handle is the driver's and both
    runtimes use the device's primary context, so torch's stream should order the library's
    launches after torch's work. The run_* helpers rely on that: they launch right after torch
    queues the NaN fill of the outputs, with no host synchronisation in between, on a torch stream
    (non-blocking, so the legacy default stream would not order it either); a launch that ignored
    the handle could run before the fill and leave NaN, though nothing forces that race to show.
    device="cpu" gives host tensors for the CPU emulator, which runs the same code without a stream."""

    def __init__(self, torch, device: str = "cuda"):
        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.cuda_stream = torch.cuda.Stream(self.device)
            self.stream = ctypes.c_void_p(self.cuda_stream.cuda_stream)
        else:
            self.cuda_stream = None
            self.stream = None

    def on_stream(self):
        return self.torch.cuda.stream(self.cuda_stream) if self.cuda_stream else contextlib.nullcontext()

    def upload(self, a):
        with self.on_stream():
            return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def full(self, shape, value, dtype):
        with self.on_stream():
            return self.torch.full(shape, value, dtype=_TORCH_DTYPES[np.dtype(dtype)](self.torch), device=self.device)

    def address(self, a) -> int:
        return a.data_ptr()

    def download(self, a):
        self.synchronize()
        return a.cpu().numpy()

    def synchronize(self) -> None:
        if self.cuda_stream is not None:
            self.cuda_stream.synchronize()


_TORCH_DTYPES = {np.dtype(np.float32): lambda t: t.float32, np.dtype(np.float16): lambda t: t.float16,
                 np.dtype(np.uint8): lambda t: t.uint8}


def run_token_merge(lib, mem, x: np.ndarray, size: np.ndarray, r: int):
    """vlrt_token_merge on outputs filled with NaN; returns (status, x' [B, N-r, C], size' [B, N-r])."""
    b, n, c = x.shape
    dtype = VLRT_FLOAT16 if x.dtype == np.float16 else VLRT_FLOAT32
    dx, ds = mem.upload(x), mem.upload(size)
    ox, os_ = mem.full((b, n - r, c), np.nan, x.dtype), mem.full((b, n - r), np.nan, x.dtype)
    status = lib.vlrt_token_merge(mem.address(dx), mem.address(ds), mem.address(ox), mem.address(os_), b, n, c, r,
                                  dtype, mem.stream)
    return status, mem.download(ox), mem.download(os_)  # download waits for the stream


def pack_frames(fmt: str, frames: list, w: int, h: int) -> list[tuple[np.ndarray, int, int]]:
    """Frames into one buffer per plane: rows padded by 64 bytes, 256 bytes between frames, all
    padding 255 (reading it would show). Returns [(buffer, pitch, frame_stride)] per plane.
    RGB frames are (H, W, 3); NV12 frames are (Y (H, W), UV (ceil(H/2), ceil(W/2), 2))."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    shapes = [(h, 3 * w)] if fmt == "rgb24" else [(h, w), (ch, 2 * cw)]
    planes = []
    for p, (rows, row_bytes) in enumerate(shapes):
        pitch = row_bytes + 64
        stride = pitch * rows + 256
        buffer = np.full(stride * len(frames), 255, np.uint8)
        for i, frame in enumerate(frames):
            data = frame if fmt == "rgb24" else frame[p]
            view = buffer[i * stride: i * stride + pitch * rows].reshape(rows, pitch)
            view[:, :row_bytes] = data.reshape(rows, row_bytes)
        planes.append((buffer, pitch, stride))
    return planes


def run_preprocess(lib, mem, fmt: str, frames: list, w: int, h: int, size: int, rounding: str, dtype,
                   mean, std, *, matrix: str = "bt601", color_range: str = "limited"):
    """vlrt_preprocess of a batch of frames on outputs filled with NaN; returns (status, [B, 3, S, S])."""
    planes = pack_frames(fmt, frames, w, h)
    buffers = [mem.upload(p[0]) for p in planes]
    second = (mem.address(buffers[1]), planes[1][1], planes[1][2]) if fmt == "nv12" else (None, 0, 0)
    desc = Frames(format=VLRT_RGB24 if fmt == "rgb24" else VLRT_NV12, width=w, height=h,
                  plane0=mem.address(buffers[0]), plane1=second[0], pitch0=planes[0][1], pitch1=second[1],
                  frame_stride0=planes[0][2], frame_stride1=second[2], matrix=MATRIX[matrix],
                  range=RANGE[color_range])
    out = mem.full((len(frames), 3, size, size), np.nan, dtype)
    status = lib.vlrt_preprocess(ctypes.byref(desc), len(frames), size, ROUNDING[rounding], floats3(mean),
                                 floats3(std), mem.address(out), VLRT_FLOAT16 if dtype == np.float16 else VLRT_FLOAT32,
                                 mem.stream)
    return status, mem.download(out)  # download waits for the stream
