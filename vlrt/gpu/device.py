"""Which torch device the GPU path runs on, what it is (for benchmark records), the CUDA primary
context it shares with FFmpeg's NVDEC, and the streams its work runs on.

None means "the first CUDA device", resolved here and nowhere else. An explicit "cpu" is allowed
everywhere in vlrt.gpu: the same code then runs on the CPU (decoding falls back to PyAV's software
decoder, with the reason reported), which is how its plumbing is tested on machines without a GPU.

The primary context. PyAV hands FFmpeg `primary_ctx=1` for frames kept on the GPU, so NVDEC writes
into memory of the CUDA primary context, the one torch uses (a context of its own would give
pointers torch's kernels cannot read). FFmpeg refuses to share a primary context that is already
active with flags other than CU_CTX_SCHED_BLOCKING_SYNC, and torch activates it with the default
flags; every file would then be decoded on the CPU. `share_primary_context` sets the flags through
the driver (ctypes on libcuda.so.1); `resolve_device`, which every vlrt.gpu constructor calls first,
calls it before touching CUDA.

Streams. FFmpeg's CUDA device context has no stream of its own, so NVDEC's copies of decoded
pictures are queued on the legacy default stream. Decode-side work (colour conversion,
preprocessing) runs on a stream per decoding thread and the encoder on its own stream, so they
overlap; the helpers below make each consumer wait for its producer with events, and every torch.cuda
call here goes through `_cuda()`, which tests replace with stand-ins to check the ordering on a CPU.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import platform
import subprocess
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from vlrt.errors import VlrtError

CU_CTX_SCHED_BLOCKING_SYNC = 0x04  # the only primary-context flags FFmpeg shares a context with
CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE = 708


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise VlrtError("the GPU path (vlrt.gpu) needs PyTorch: pip install 'vlrt[gpu]' "
                        "(a CUDA build of torch for GPU work)") from None
    return torch


def _cuda() -> Any:
    """torch.cuda: the one seam through which this package calls it (tests put stand-ins here)."""
    return require_torch().cuda


def resolve_device(device: Any = None) -> Any:
    """A torch.device: None -> cuda:0 (VlrtError when CUDA is unavailable), else as given. For a
    CUDA device, the primary context's flags are set (`share_primary_context`) before CUDA is touched."""
    return resolve_shared_device(device)[0]


def resolve_shared_device(device: Any = None) -> tuple[Any, str | None]:
    """(`resolve_device`'s torch.device, `share_primary_context`'s answer for it): None when FFmpeg
    can share the device's primary context (and for the CPU), otherwise why not."""
    torch, cuda = require_torch(), _cuda()
    if device is None:
        if not cuda.is_available():
            raise VlrtError("no CUDA device is available to PyTorch (torch.cuda.is_available() is False; "
                            f"torch {torch.__version__}); pass device='cpu' to run the GPU path's code on the CPU")
        refusal = share_primary_context(None)
        return torch.device("cuda", cuda.current_device()), refusal
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise VlrtError(f"unknown device {device!r}; expected 'cuda', 'cuda:N' or 'cpu'") from None
    if dev.type == "cpu":
        return dev, None
    if dev.type != "cuda":
        raise VlrtError(f"device {device!r} is not supported by vlrt.gpu; expected 'cuda', 'cuda:N' or 'cpu'")
    if not cuda.is_available():
        raise VlrtError(f"device {device!r} asked for, but PyTorch sees no CUDA device")
    refusal = share_primary_context(dev)
    if dev.index is None:
        dev = torch.device("cuda", cuda.current_device())
    return dev, refusal


def capability(device: Any) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device; None for the CPU."""
    if device.type != "cuda":
        return None
    return tuple(_cuda().get_device_capability(device))


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def device_report(device: Any) -> dict[str, Any]:
    """Device name, capability, driver, CUDA, library versions and date: what a result must carry."""
    torch = require_torch()
    report: dict[str, Any] = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
                              "torch": torch.__version__, "cuda_runtime": torch.version.cuda}
    for name in ("av", "numpy", "onnxruntime", "triton", "cupy", "torchcodec"):
        report[name] = _version(name)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report.update(device=props.name, capability=".".join(map(str, capability(device))),
                      memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                      driver=_driver_version())
    else:
        report.update(device=f"cpu ({platform.processor() or platform.machine()})", capability=None)
    return report


def _version(module: str) -> str | None:
    """The installed distribution's version, without importing the module (cupy's name varies)."""
    from importlib.metadata import PackageNotFoundError, version

    names = {"cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy")}.get(module, (module,))
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


# ---- the CUDA primary context, shared with FFmpeg's NVDEC ------------------------------------

class CudaDriver:
    """The driver calls `share_primary_context` needs, through ctypes on libcuda.so.1: the driver
    library itself, present wherever a GPU is, so neither the CUDA toolkit nor cuda-python is needed.
    Every method returns the CUresult (0: success) first."""

    def __init__(self, path: str = "libcuda.so.1") -> None:
        import ctypes

        self._ctypes = ctypes
        self._lib = ctypes.CDLL(path)  # OSError where there is no driver
        # The _v2 entry point (CUDA >= 11) may change the flags of an active primary context;
        # the original one answers CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE instead.
        self._set_flags = getattr(self._lib, "cuDevicePrimaryCtxSetFlags_v2", None) or \
            self._lib.cuDevicePrimaryCtxSetFlags

    def init(self) -> int:
        return self._lib.cuInit(0)

    def device(self, ordinal: int) -> tuple[int, int]:
        dev = self._ctypes.c_int()
        return self._lib.cuDeviceGet(self._ctypes.byref(dev), int(ordinal)), dev.value

    def primary_state(self, dev: int) -> tuple[int, int, bool]:
        """(CUresult, flags, active) of the device's primary context."""
        flags, active = self._ctypes.c_uint(), self._ctypes.c_int()
        rc = self._lib.cuDevicePrimaryCtxGetState(dev, self._ctypes.byref(flags), self._ctypes.byref(active))
        return rc, flags.value, bool(active.value)

    def set_primary_flags(self, dev: int, flags: int) -> int:
        return self._set_flags(dev, self._ctypes.c_uint(flags))

    def error_name(self, rc: int) -> str:
        name = self._ctypes.c_char_p()
        if self._lib.cuGetErrorName(rc, self._ctypes.byref(name)) != 0 or not name.value:
            return f"CUresult {rc}"
        return name.value.decode()


@functools.lru_cache(maxsize=1)
def _driver() -> CudaDriver:
    """The driver, loaded once (tests replace this function with a stand-in)."""
    return CudaDriver()


def cuda_ordinal(device: Any) -> int | None:
    """The CUDA ordinal a device spec names, found without initialising CUDA; None for the CPU."""
    torch, cuda = require_torch(), _cuda()
    if isinstance(device, int):  # torch.device(int) means "the current accelerator"; here, the ordinal
        return device
    dev = torch.device("cuda") if device is None else torch.device(device)
    if dev.type != "cuda":
        return None
    if dev.index is not None:
        return dev.index
    # current_device() would initialise CUDA; before that, torch's current device is 0.
    return cuda.current_device() if cuda.is_initialized() else 0


def share_primary_context(device: Any = None) -> str | None:
    """Give the device's CUDA primary context the flags FFmpeg needs to decode into it with NVDEC
    (CU_CTX_SCHED_BLOCKING_SYNC). None when FFmpeg can share it (and for the CPU); otherwise why not,
    the reason a file is then decoded on the CPU.

    Called by `resolve_device`, first in every vlrt.gpu constructor, before torch initialises CUDA:
    the flags are then set while the context is inactive, which every driver allows. Where torch got
    there first, the driver's cuDevicePrimaryCtxSetFlags_v2 changes the flags of the active context
    (CUDA >= 11); the blocking flag makes host threads that wait on the GPU sleep instead of spinning.
    """
    ordinal = cuda_ordinal(device)
    if ordinal is None:
        return None
    try:
        drv = _driver()
    except (OSError, AttributeError) as err:
        return f"the CUDA driver library (libcuda.so.1) cannot be used: {err}"
    rc = drv.init()
    if rc == 0:
        rc, dev = drv.device(ordinal)
    if rc == 0:
        rc, flags, active = drv.primary_state(dev)
    if rc != 0:
        return f"the CUDA driver cannot query device {ordinal}: {drv.error_name(rc)}"
    if flags == CU_CTX_SCHED_BLOCKING_SYNC:
        return None
    rc = drv.set_primary_flags(dev, CU_CTX_SCHED_BLOCKING_SYNC)
    if rc == 0:
        rc, flags, active = drv.primary_state(dev)
    if rc == 0 and flags == CU_CTX_SCHED_BLOCKING_SYNC:
        return None
    return _flags_refusal(drv, rc, ordinal, flags, active)


def _flags_refusal(drv: Any, rc: int, ordinal: int, flags: int, active: bool) -> str:
    state = f"the CUDA primary context of device {ordinal} is {'active' if active else 'inactive'} with flags {flags:#x}"
    if rc == CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE:
        return (f"{state}, which this driver cannot change once active; FFmpeg shares it only with flags "
                f"{CU_CTX_SCHED_BLOCKING_SYNC:#x} (create vlrt.gpu objects before anything else uses CUDA)")
    if rc != 0:
        return f"{state}; setting flags {CU_CTX_SCHED_BLOCKING_SYNC:#x} failed: {drv.error_name(rc)}"
    return f"{state} after setting flags {CU_CTX_SCHED_BLOCKING_SYNC:#x}; FFmpeg shares it only with those"


# ---- streams ---------------------------------------------------------------------------------

def new_stream(device: Any, *, priority: int = 0) -> Any:
    """A stream for work on `device`; None on the CPU (work there is synchronous). torch hands out
    streams round-robin from a pool per priority, so streams of different priorities never turn
    out to be the same stream, while two of one priority can."""
    return _cuda().Stream(device, priority=priority) if device.type == "cuda" else None


class ThreadStreams:
    """One stream per thread for a device: decoding threads then overlap one another and the encoder."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._local = threading.local()

    def get(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None and self.device.type == "cuda":
            stream = self._local.stream = new_stream(self.device)
        return stream


def on_stream(stream: Any) -> Any:
    """A context that makes `stream` current; nothing for None (the CPU)."""
    return contextlib.nullcontext() if stream is None else _cuda().stream(stream)


def wait_for_legacy(stream: Any) -> None:
    """`stream` waits for the work queued on the legacy default stream so far, where FFmpeg queues
    NVDEC's copy of each decoded picture: without it a kernel on `stream` can read a surface before
    the picture is in it (torch's streams do not synchronise with the legacy stream implicitly)."""
    if stream is None:
        return
    legacy = _cuda().default_stream(stream.device)
    if stream != legacy:
        stream.wait_stream(legacy)


def legacy_waits_for(stream: Any) -> None:
    """The legacy default stream waits for the work queued on `stream` so far: once a decoded frame
    is released, FFmpeg may queue the next picture's copy into the same surface on that stream."""
    if stream is None:
        return
    legacy = _cuda().default_stream(stream.device)
    if stream != legacy:
        legacy.wait_event(record_event(stream))


def record_event(stream: Any) -> Any:
    """An event marking the work queued on `stream` so far; None for no stream (the CPU)."""
    if stream is None:
        return None
    event = _cuda().Event()
    event.record(stream)
    return event


def wait_event(stream: Any, event: Any, tensors: Iterable[Any] = ()) -> None:
    """`stream` waits for `event` before it reads `tensors` (made on another stream), which are
    marked as used by `stream` so that the caching allocator does not hand their memory to the
    producer's stream while `stream` may still read it."""
    if stream is None or event is None:
        return
    stream.wait_event(event)
    for tensor in tensors:
        record_use(tensor, stream)


def record_use(tensor: Any, stream: Any) -> None:
    if tensor is not None and tensor.is_cuda:
        tensor.record_stream(stream)


@contextlib.contextmanager
def borrowed_stream(stream: Any) -> Iterator[list[Any]]:
    """Run a block on `stream` as if it ran on the caller's current stream.

    `stream` first waits for the caller's stream (whose work made the block's inputs); the block
    appends its output tensors to the list it is given, and the caller's stream waits for `stream`
    before it can read them. Nothing happens for stream None or when `stream` is already current,
    e.g. inside the pipeline, which runs the encoder on the encoder's stream itself so that the
    legacy default stream (and with it NVDEC's copies) never waits for the encoder.
    """
    outputs: list[Any] = []
    if stream is None:
        yield outputs
        return
    cuda = _cuda()
    caller = cuda.current_stream(stream.device)
    if caller == stream:
        yield outputs
        return
    stream.wait_stream(caller)
    with cuda.stream(stream):
        yield outputs
    caller.wait_stream(stream)
    for tensor in outputs:
        record_use(tensor, caller)
