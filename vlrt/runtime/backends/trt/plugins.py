"""TensorRT plugin libraries, loaded into the process's plugin registry once per process.

TensorRT has one plugin registry per process (`get_plugin_registry()`), which the ONNX parser and
`Runtime.deserialize_cuda_engine` look plugin creators up in. `IPluginRegistry.load_library`
registers the creators a library exports and fails (returns None) when they are already
registered, so loading a library again for the second graph of a build, or for the second
runner of a `Runtime`, would fail. Each library is therefore loaded once, cached by its
resolved path, under a lock: runners may start on different threads.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_LOADED: dict[str, Any] = {}  # resolved path -> the handle load_library returned; kept for the process's life
_BUILTIN: list[Any] = []  # the tensorrt module whose bundled plugins were registered (at most one)


def load_plugins(trt: Any, logger: Any, libraries: Sequence[str | Path]) -> list[Any]:
    """Register NVIDIA's bundled plugins and each plugin library, once per process; returns the
    libraries' handles. Safe to call for every graph and every runner."""
    with _LOCK:
        if trt not in _BUILTIN:
            # initLibNvInferPlugins is documented as called once before the registry is used
            if not trt.init_libnvinfer_plugins(logger, ""):
                log.warning("TensorRT: init_libnvinfer_plugins reported a failure; NVIDIA's bundled plugins "
                            "may be unavailable")
            _BUILTIN[:] = [trt]
        return [_load_library(trt, Path(lib)) for lib in libraries]


def _load_library(trt: Any, path: Path) -> Any:
    if not path.is_file():
        raise VlrtError(f"TensorRT plugin library {path}: no such file")
    key = str(path.resolve())
    if key in _LOADED:
        return _LOADED[key]
    handle = trt.get_plugin_registry().load_library(key)
    if handle is None:  # not cached: a later call tries again
        raise VlrtError(f"TensorRT plugin library {path}: TensorRT could not load it (not a plugin library, a "
                        "missing dependency, or plugins of the same name already registered by another library; "
                        "see the TensorRT errors logged above)")
    _LOADED[key] = handle
    return handle
