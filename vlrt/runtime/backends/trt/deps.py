"""The TensorRT backend's optional dependencies, imported only when called.

Two packages: `tensorrt` (NVIDIA's Python bindings, which also bring the builder and runtime
libraries) and `cuda-python` (`cuda.bindings.runtime`, the CUDA runtime API: device buffers,
copies, streams, the GPU's name). Neither is imported when vlrt or this package is imported; a
missing one raises VlrtError naming it and the extra that installs both, `vlrt[tensorrt]`.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

from vlrt.errors import VlrtError

EXTRA = "pip install 'vlrt[tensorrt]'"


def import_tensorrt() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:  # also raised when the wheel is there but libnvinfer is not
        raise VlrtError(f"the tensorrt backend needs the `tensorrt` Python package (TensorRT 10 or newer), which "
                        f"cannot be imported here ({exc}); install it with {EXTRA}") from None
    except OSError as exc:  # a shared library of the wheel failed to load
        raise VlrtError(f"the `tensorrt` package is installed but its libraries fail to load ({exc}); "
                        f"reinstall it with {EXTRA}") from None


def import_cudart() -> ModuleType:
    """cuda-python's CUDA runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6), or the
    older `cuda.cudart` location."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise VlrtError(f"the tensorrt backend needs the `cuda-python` package (module cuda.bindings.runtime) for GPU "
                    f"buffers and streams, which cannot be imported here; install it with {EXTRA}")


def require_tensorrt() -> None:
    """Raise VlrtError, before any work is done, when the backend's packages are missing."""
    import_tensorrt()
    import_cudart()


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def check_cuda(result: Any, what: str) -> Any:
    """cuda-python calls return (error, *values): raise on an error, return the value(s)."""
    cudart = import_cudart()
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise VlrtError(f"CUDA error in {what}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


@functools.lru_cache(maxsize=None)
def gpu_fingerprint(device: int | None = None) -> dict[str, Any]:
    """The GPU a plan is built for: TensorRT plans run only on the GPU model (compute capability)
    and TensorRT version that built them."""
    cudart = import_cudart()
    if device is None:
        device = check_cuda(cudart.cudaGetDevice(), "cudaGetDevice")
    props = check_cuda(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\0").strip(), "compute_capability": f"{props.major}.{props.minor}"}
