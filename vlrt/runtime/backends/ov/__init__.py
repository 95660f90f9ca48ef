"""OpenVINO backend (CPU): a runner for ONNX graphs and OpenVINO IR, the build hook that makes
int8 IR with NNCF and bf16 engines, and the video graph's split for IR.

Importing this package imports neither `openvino` nor `nncf` (NNCF imports torch when it is
installed): the functions that need them import them, and a missing one raises VlrtError saying
to `pip install "vlrt[openvino]"`.

    runner.py   OvModel (reads ONNX or IR, compiles for the CPU with an explicit inference
                precision and threads) and OvRunner (OrtRunner's interface)
    engine.py   OvEngineBuild, the build hook: int8 IR from NNCF on --calib videos, bf16 on CPUs
                with native bf16, fp32 as the bundle's graphs
    split.py    split_video(): the video graph cut into tower and head (ONNX or IR)

docs/build.md ("OpenVINO") says what each precision does.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError
from vlrt.runtime.backends.ov.engine import OvEngineBuild, native_bf16
from vlrt.runtime.backends.ov.runner import OvModel, OvRunner, inference_precision
from vlrt.runtime.backends.ov.split import split_video

BUILD = OvEngineBuild()

__all__ = ["BUILD", "OvEngineBuild", "OvModel", "OvRunner", "available", "native_bf16", "require", "runners",
           "split_video", "versions"]


def runners(graphs: Mapping[str, Path], options: Mapping[str, Any], threads: int | None) -> dict[str, OvRunner]:
    precision = inference_precision(options)
    return {name: OvRunner(OvModel(path, threads=threads, precision=precision)) for name, path in graphs.items()}


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    if not available():
        raise VlrtError('the openvino backend needs OpenVINO: pip install "vlrt[openvino]"')


def versions() -> dict[str, str]:
    """OpenVINO's and NNCF's versions, of those installed (read from their package metadata:
    importing NNCF would import torch)."""
    found = {}
    for name in ("openvino", "nncf"):
        if importlib.util.find_spec(name) is not None:
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
    return found
