"""Run a TensorRT plan on NumPy feeds: `PlanFromFile` (loader) and `TrtRunner` (runner).

TrtRunner has OrtRunner's interface (a context manager with `activate`, `input_names` and
`infer(feeds) -> outputs`, NumPy in and out), so `vlrt.Runtime` and the build's validation use
either without knowing which. GPU memory and streams go through cuda-python's CUDA runtime
bindings (`cuda.bindings.runtime`), not PyTorch: the runtime never imports torch, and one small
package is enough for malloc, copies and a stream. Device buffers are allocated once, at the
profile's largest shapes, when the runner is activated; each `infer` sets the input shapes,
copies the inputs in, enqueues the engine and copies the outputs back on one stream. Feeds with
a larger batch than the profile's maximum are run in chunks.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.backends.trt.deps import check_cuda, import_cudart, import_tensorrt


class PlanFromFile:
    """Callable that deserializes a plan with `tensorrt.Runtime`, after loading the plugin
    libraries it needs (each checked against the sha256 recorded at build time, when given)."""

    def __init__(self, path: str | Path, *, plugins: Sequence[Mapping[str, str]] = ()) -> None:
        self.path = Path(path)
        self.plugins = [dict(p) for p in plugins]  # {"path": ..., "sha256": ... (optional)}

    def __call__(self) -> tuple[Any, Any]:
        from vlrt.runtime.backends.trt.builder import load_plugins, make_logger

        trt = import_tensorrt()
        logger = make_logger(trt)
        for plugin in self.plugins:
            _check_sha256(Path(plugin["path"]), plugin.get("sha256"))
        load_plugins(trt, logger, [p["path"] for p in self.plugins])
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise VlrtError(f"{self.path}: TensorRT {trt.__version__} cannot deserialize this plan (plans run only on "
                            "the TensorRT version and GPU model that built them); rebuild it with `vlrt build`")
        return runtime, engine  # the runtime must outlive the engine


class TrtRunner:
    """Runs one plan. A context manager: the engine, buffers and stream live between entry and exit."""

    def __init__(self, loader: Callable[[], tuple[Any, Any]]) -> None:
        self._loader = loader
        self._state: _State | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "TrtRunner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state is not None:
            self._state.free()
            self._state = None

    def activate(self) -> None:
        if self._state is None:
            self._state = _State(*self._loader())

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return list(self._state.inputs)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.activate()
        state = self._state
        if set(feeds) != set(state.inputs):
            raise VlrtError(f"feeds {sorted(feeds)} do not match the engine's inputs {sorted(state.inputs)}")
        n = len(next(iter(feeds.values())))
        if n == 0 or any(len(v) != n for v in feeds.values()):
            raise VlrtError(f"every feed needs the same batch size >= 1; got {[np.shape(v) for v in feeds.values()]}")
        chunks = []
        with self._lock:
            for i in range(0, n, state.max_batch):
                chunks.append(state.run({k: v[i:i + state.max_batch] for k, v in feeds.items()}))
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in state.outputs}


class _State:
    """An engine with its execution context, stream and device buffers (sized for the profile's max)."""

    def __init__(self, runtime: Any, engine: Any) -> None:
        trt, self.cudart = import_tensorrt(), import_cudart()
        self.runtime, self.engine = runtime, engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profile = {n: engine.get_tensor_profile_shape(n, 0) for n in names if is_input[n]}  # (min, opt, max)
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.max_batch = min(int(hi[0]) for _, _, hi in self.profile.values())
        self.context = engine.create_execution_context()
        self.stream = check_cuda(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers: dict[str, int] = {}
        for name in self.inputs:  # the largest shapes, to size every buffer once
            self.context.set_input_shape(name, tuple(self.profile[name][2]))
        for name in names:
            nbytes = int(np.prod(tuple(self.context.get_tensor_shape(name)))) * self.dtypes[name].itemsize
            self.buffers[name] = int(check_cuda(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self.context.set_tensor_address(name, self.buffers[name])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = self.cudart
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = {}
        for name in self.inputs:
            arr = hosts[name] = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            self._check_shape(name, arr.shape)
            self.context.set_input_shape(name, arr.shape)
            check_cuda(rt.cudaMemcpyAsync(self.buffers[name], arr.ctypes.data, arr.nbytes, h2d, self.stream),
                       f"copy of {name} to the GPU")
        outs = {name: np.empty(tuple(self.context.get_tensor_shape(name)), self.dtypes[name]) for name in self.outputs}
        if not self.context.execute_async_v3(int(self.stream)):
            raise VlrtError("TensorRT failed to enqueue the engine (see the TensorRT errors logged above)")
        for name, out in outs.items():
            check_cuda(rt.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes, d2h, self.stream),
                       f"copy of {name} from the GPU")
        check_cuda(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outs

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        lo, _, hi = (tuple(s) for s in self.profile[name])
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise VlrtError(f"input {name!r} has shape {shape}; this engine was built for shapes from {lo} to {hi}")

    def free(self) -> None:
        for ptr in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers = {}
        self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.runtime = None


def _check_sha256(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise VlrtError(f"TensorRT plugin library {path} (recorded in the engine) is missing")
    if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise VlrtError(f"TensorRT plugin library {path} changed since the engine was built; rebuild it with "
                        "`vlrt build ... --force`")
