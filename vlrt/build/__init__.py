"""`vlrt build`: a bundle's fp32 graphs -> an engine for one backend, precision and machine.

No torch: graph passes (onnx), quantization (ONNX Runtime's tools) and the gate, which compares
the engine with the bundle's fp32 graphs on inputs made from the manifest. Needs the `build`
extra (`pip install 'vlrt[build]'`: the onnx package); a runtime-only install gets a one-line
error naming it.

    engine.py    build_engine(): plan, passes, backend artifacts, gate, engine directory
    passes/      one class per graph transformation (fp16, int8, token merging, attention fusion)
    validate.py  the gate's inputs and comparison, shared with the export gate
    staging.py   atomic directory writes
"""
from __future__ import annotations

from typing import Any

from vlrt.errors import VlrtError

__all__ = ["BuildResult", "build_engine", "plan_build", "require_build_extra", "validate_engine"]


def require_build_extra() -> None:
    """Raise a one-line VlrtError when the packages the build needs are missing."""
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization  # noqa: F401
    except ImportError as exc:
        raise VlrtError(f"`vlrt build` needs the build extra ({exc.name or exc} is missing): "
                        "pip install 'vlrt[build]'") from None


def __getattr__(name: str) -> Any:
    # engine.py imports onnx; importing vlrt.build alone must not, so that the error above is the
    # one a runtime-only install sees.
    if name in ("BuildResult", "build_engine", "plan_build", "validate_engine"):
        require_build_extra()
        from vlrt.build import engine

        return getattr(engine, name)
    raise AttributeError(name)
