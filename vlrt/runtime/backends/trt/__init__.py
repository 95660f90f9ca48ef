"""TensorRT backend: a builder that turns one ONNX graph into a plan, and a runner that runs it.

Importing this package imports neither `tensorrt` nor `cuda`: they are imported by the functions
that need them, and a missing one raises VlrtError saying to `pip install 'vlrt[tensorrt]'`.

    profiles.py       optimization-profile shapes (batch, frames, words) from the bundle manifest
    builder.py        build_plan(): ONNX -> strongly typed network -> plan (timing cache, progress, plugins)
    runner.py         PlanFromFile (loader) and TrtRunner (OrtRunner's interface, cuda-python buffers)
    deps.py           the lazy imports, require_tensorrt(), gpu_fingerprint()
    supported_ops.py  TensorRT's documented ONNX operator support and check_model()

docs/tensorrt.md says what runs where, and what has not been verified (nothing has run with
TensorRT yet: no machine the project has access to has it).
"""
from vlrt.runtime.backends.trt.builder import build_plan
from vlrt.runtime.backends.trt.deps import gpu_fingerprint, require_tensorrt, tensorrt_version
from vlrt.runtime.backends.trt.profiles import MAX_BATCH, OPT_BATCH, profile_shapes
from vlrt.runtime.backends.trt.runner import PlanFromFile, TrtRunner

__all__ = [
    "MAX_BATCH",
    "OPT_BATCH",
    "PlanFromFile",
    "TrtRunner",
    "build_plan",
    "gpu_fingerprint",
    "profile_shapes",
    "require_tensorrt",
    "tensorrt_version",
]
