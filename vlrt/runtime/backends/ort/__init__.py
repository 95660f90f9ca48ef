"""ONNX Runtime backend: a loader that builds sessions and a runner that runs them."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlrt.runtime.backends.ort.loader import SessionFromOnnx, available_providers
from vlrt.runtime.backends.ort.runner import OrtRunner

__all__ = ["OrtRunner", "SessionFromOnnx", "available_providers", "cpu_runners", "cuda_runners"]


# A runtime's sessions do not spin-wait for work. ONNX Runtime's idle intra-op workers spin by
# default, which takes the cores from whatever runs next in the process: the other part of the cut
# video graph (the embedded model's packed batch of 4 x 8 frames: 15-26 ms spinning, 8-13 ms not),
# the decode threads (243 clips end to end: 79-123 videos/s spinning, 142-163 not), the video
# encoder while texts are encoded beside it (234-286 videos/s against 394-408; text p50 +1 ms).
# A session alone gains from spinning only on millisecond calls (7.4 against 8.4-9.4 ms); ViT-B/32
# calls (0.7 s) are the same either way.
def cpu_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cpu", threads=threads, spin=False))
            for name, path in graphs.items()}


def cuda_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OrtRunner]:
    return {name: OrtRunner(SessionFromOnnx(path, device="cuda", threads=threads)) for name, path in graphs.items()}


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in available_providers()


def versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}
