"""ONNX Runtime backend: a loader that builds sessions and a runner that runs them."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlrt.runtime.backends.ort.loader import SessionFromOnnx, available_providers
from vlrt.runtime.backends.ort.runner import OrtRunner

__all__ = ["OrtRunner", "SessionFromOnnx", "available_providers", "cpu_runners", "cuda_runners"]


def cpu_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cpu", threads=threads)) for name, path in graphs.items()}


def cuda_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cuda", threads=threads)) for name, path in graphs.items()}


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in available_providers()


def versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}
