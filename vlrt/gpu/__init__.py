"""The GPU path without TensorRT: NVDEC decoding, PyTorch preprocessing and the reference model
in fp16, with frames kept on the GPU from the decoder to the model (docs/gpu.md).

Importing `vlrt.gpu` or its modules imports neither torch nor PyAV's hardware support: both are
imported on first use, and a missing one raises VlrtError naming what to install. The runtime
(`vlrt.runtime`) never imports this package.

UNVERIFIED ON A GPU: everything here has run on the CPU only (device="cpu"); see docs/gpu.md.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GpuDecoder": "vlrt.gpu.decode",
    "GpuDecodeStats": "vlrt.gpu.decode",
    "GpuPreprocess": "vlrt.gpu.preprocess",
    "FusedPreprocessKernel": "vlrt.gpu.preprocess",
    "GpuEncoder": "vlrt.gpu.encode",
    "GpuClipLoader": "vlrt.gpu.pipeline",
    "GpuPipeline": "vlrt.gpu.pipeline",
    "GpuResult": "vlrt.gpu.pipeline",
    "nvdec_refusal": "vlrt.gpu.support",
    "device_report": "vlrt.gpu.device",
    "resolve_device": "vlrt.gpu.device",
    "share_primary_context": "vlrt.gpu.device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlrt.gpu' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
