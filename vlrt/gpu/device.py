"""Which torch device the GPU path runs on, and what it is (for benchmark records).

None means "the first CUDA device", resolved here and nowhere else. An explicit "cpu" is allowed
everywhere in vlrt.gpu: the same code then runs on the CPU (decoding falls back to PyAV's software
decoder, with the reason reported), which is how its plumbing is tested on machines without a GPU.
"""
from __future__ import annotations

import datetime
import platform
import subprocess
from typing import Any

from vlrt.errors import VlrtError


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise VlrtError("the GPU path (vlrt.gpu) needs PyTorch: pip install 'vlrt[gpu]' "
                        "(a CUDA build of torch for GPU work)") from None
    return torch


def resolve_device(device: Any = None) -> Any:
    """A torch.device: None -> cuda:0 (VlrtError when CUDA is unavailable), else as given."""
    torch = require_torch()
    if device is None:
        if not torch.cuda.is_available():
            raise VlrtError("no CUDA device is available to PyTorch (torch.cuda.is_available() is False; "
                            f"torch {torch.__version__}); pass device='cpu' to run the GPU path's code on the CPU")
        return torch.device("cuda", torch.cuda.current_device())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise VlrtError(f"unknown device {device!r}; expected 'cuda', 'cuda:N' or 'cpu'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VlrtError(f"device {device!r} asked for, but PyTorch sees no CUDA device")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise VlrtError(f"device {device!r} is not supported by vlrt.gpu; expected 'cuda', 'cuda:N' or 'cpu'")
    return dev


def capability(device: Any) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device; None for the CPU."""
    if device.type != "cuda":
        return None
    return tuple(require_torch().cuda.get_device_capability(device))


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
