"""ONNX Runtime backend: a loader that builds sessions and a runner that runs them."""
from vlrt.runtime.backends.ort.loader import SessionFromOnnx, available_providers
from vlrt.runtime.backends.ort.runner import OrtRunner

__all__ = ["OrtRunner", "SessionFromOnnx", "available_providers"]
