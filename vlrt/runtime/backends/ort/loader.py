"""Build ONNX Runtime sessions from ONNX files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from vlrt.errors import VlrtError

Device = Literal["cpu", "cuda"]
PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class SessionFromOnnx:
    """Callable that builds an `onnxruntime.InferenceSession` for one graph."""

    def __init__(self, path: str | os.PathLike, *, device: Device = "cpu", threads: int | None = None,
                 spin: bool = True) -> None:
        if device not in PROVIDERS:
            raise VlrtError(f"unknown device {device!r} for ONNX Runtime; expected one of {sorted(PROVIDERS)}")
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.spin = spin  # False: intra-op workers block at once when idle instead of spinning

    def __call__(self):
        import onnxruntime as ort

        if self.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise VlrtError("ONNX Runtime here has no CUDA provider; install vlrt[gpu] (onnxruntime-gpu)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=PROVIDERS[self.device])
        except Exception as exc:  # ORT raises its own untyped exceptions for bad graphs
            raise VlrtError(f"{self.path}: ONNX Runtime cannot load this graph: {exc}") from None
