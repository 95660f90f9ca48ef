"""ONNX Runtime backend: a loader that builds sessions and a runner that runs them."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlrt.runtime.backends.ort.loader import SessionFromOnnx, available_providers
from vlrt.runtime.backends.ort.runner import OrtRunner

__all__ = ["OrtRunner", "SessionFromOnnx", "available_providers", "cpu_runners", "cuda_runners"]


# The cut video graph's two parts run back to back, each in its own session: ONNX Runtime's idle
# workers spin while waiting for work, so one part's workers take the cores from the other's. On
# the embedded model's packed batch (4 videos x 8 frames, 2 threads) that doubled the time (15 to 26
# ms spinning, 8 to 13 ms not); on ViT-B/32 spinning made no difference.
NO_SPIN = frozenset({"video_frames", "video_head"})


def cpu_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cpu", threads=threads, spin=name not in NO_SPIN))
            for name, path in graphs.items()}


def cuda_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cuda", threads=threads)) for name, path in graphs.items()}


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in available_providers()


def versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}
