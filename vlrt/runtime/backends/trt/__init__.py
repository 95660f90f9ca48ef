"""TensorRT backend: a builder that turns one ONNX graph into a plan, and a runner that runs it.

Importing this package imports neither `tensorrt` nor `cuda`: they are imported by the functions
that need them, and a missing one raises VlrtError saying to `pip install 'vlrt[tensorrt]'`.

    profiles.py       optimization-profile shapes (batch, frames, words) from the bundle manifest
    builder.py        build_plan(): ONNX -> strongly typed network -> plan (timing cache, progress, plugins)
    runner.py         PlanFromFile (loader) and TrtRunner (OrtRunner's interface, cuda-python buffers)
    plugins.py        plugin libraries, loaded into TensorRT's registry once per process
    inspect.py        a built engine's layers (engine inspector): was attention fused?
    deps.py           the lazy imports, require_tensorrt(), gpu_fingerprint()
    supported_ops.py  TensorRT's documented ONNX operator support and check_model()
    engine.py         the build hook: TensorRT options, plans from the passed graphs, timing cache

docs/tensorrt.md says what runs where, and what has not been verified (nothing has run with
TensorRT yet: no machine the project has access to has it).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlrt.runtime.backends.trt.builder import build_plan
from vlrt.runtime.backends.trt.deps import gpu_fingerprint, require_tensorrt, tensorrt_version
from vlrt.runtime.backends.trt.engine import TrtEngineBuild
from vlrt.runtime.backends.trt.profiles import MAX_BATCH, OPT_BATCH, profile_shapes
from vlrt.runtime.backends.trt.runner import PlanFromFile, TrtRunner

BUILD = TrtEngineBuild()

__all__ = [
    "MAX_BATCH",
    "OPT_BATCH",
    "PlanFromFile",
    "TrtRunner",
    "build_plan",
    "BUILD",
    "gpu_fingerprint",
    "profile_shapes",
    "require_tensorrt",
    "tensorrt_version",
]


# Registry hooks (vlrt/runtime/backends/__init__.py). They look names up in this module when
# called, so that tests can stand in for TensorRT by replacing them here.

def plan_runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, Any]:
    plugins = options.get("plugins", [])
    return {name: TrtRunner(PlanFromFile(path, plugins=plugins)) for name, path in graphs.items()}


def key_versions() -> dict[str, str]:
    return {"tensorrt": tensorrt_version()}


def key_machine() -> dict[str, Any]:
    return {"gpu": gpu_fingerprint()}
