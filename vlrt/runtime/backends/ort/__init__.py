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
# video graph, the decode threads, the video encoder while texts are encoded beside it. On the
# embedded model (benchmarks/spin.py): a packed batch 22.7 ms spinning against 11.9 ms not, 243
# clips end to end 80 against 140 videos/s, videos beside texts 144 against 422 videos/s (text
# p50 +0.9 ms); a whole graph alone 5% slower; ViT-B/32 calls (0.7 s) the same either way.
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
