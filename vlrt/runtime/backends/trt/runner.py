"""Run a TensorRT plan on NumPy feeds: `PlanFromFile` (loader) and `TrtRunner` (runner).

TrtRunner has OrtRunner's interface (a context manager with `activate`, `input_names` and
`infer(feeds) -> outputs`, NumPy in and out), so `vlrt.Runtime` and the build's validation use
either without knowing which. GPU memory and streams go through cuda-python's CUDA runtime
bindings (`cuda.bindings.runtime`), not PyTorch: the runtime never imports torch, and one small
package is enough for malloc, copies and a stream.

When the runner starts it allocates, once, at the profile's largest shapes: a device buffer and a
pinned (page-locked, `cudaMallocHost`) host buffer per tensor. `cudaMemcpyAsync` from pageable
NumPy memory is staged by the driver and synchronous with respect to the host, so the feeds are
copied into the pinned buffers first and the copies are truly asynchronous on the runner's
stream. Each `infer` sets the input shapes, copies the inputs in, enqueues the engine, copies the
outputs back and synchronizes once. Feeds with a larger batch than the profile's maximum are run
in chunks. Starting, running and closing hold the runner's lock, so threads sharing a runner
neither start it twice nor free it under a running call; a start that fails part-way frees what
it had allocated.
"""
from __future__ import annotations

import ctypes
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
        from vlrt.runtime.backends.trt.builder import make_logger
        from vlrt.runtime.backends.trt.plugins import load_plugins

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
        self.close()

    def activate(self) -> None:
        with self._lock:
            self._started()

    def close(self) -> None:
        with self._lock:
            state, self._state = self._state, None
            if state is not None:
                state.free()

    @property
    def input_names(self) -> list[str]:
        with self._lock:
            return list(self._started().inputs)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            state = self._started()
            if set(feeds) != set(state.inputs):
                raise VlrtError(f"feeds {sorted(feeds)} do not match the engine's inputs {sorted(state.inputs)}")
            n = len(next(iter(feeds.values())))
            if n == 0 or any(len(v) != n for v in feeds.values()):
                shapes = [np.shape(v) for v in feeds.values()]
                raise VlrtError(f"every feed needs the same batch size >= 1; got {shapes}")
            chunks = [state.run({k: v[i:i + state.max_batch] for k, v in feeds.items()})
                      for i in range(0, n, state.max_batch)]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in state.outputs}

    def _started(self) -> "_State":
        """The running state, started on first use; the caller holds the lock."""
        if self._state is None:
            where = getattr(self._loader, "path", "the plan")
            try:
                self._state = _State(*self._loader())
            except VlrtError:
                raise
            except Exception as exc:  # TensorRT's and cuda-python's own exception types
                raise VlrtError(f"{where}: the TensorRT runner failed to start: {type(exc).__name__}: {exc}") from exc
        return self._state


class _State:
    """An engine with its execution context, stream, device buffers and pinned host buffers
    (sized for the profile's max). Construction either completes or frees what it allocated."""

    def __init__(self, runtime: Any, engine: Any) -> None:
        trt, self.cudart = import_tensorrt(), import_cudart()
        self.runtime, self.engine, self.context, self.stream = runtime, engine, None, None
        self.buffers: dict[str, int] = {}  # device
        self.hosts: dict[str, int] = {}  # pinned host
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profile = {n: engine.get_tensor_profile_shape(n, 0) for n in names if is_input[n]}  # (min, opt, max)
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.max_batch = min(int(hi[0]) for _, _, hi in self.profile.values())
        try:
            self._allocate(names)
        except BaseException:
            self.free()
            raise

    def _allocate(self, names: list[str]) -> None:
        rt = self.cudart
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise VlrtError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = check_cuda(rt.cudaStreamCreate(), "cudaStreamCreate")
        for name in self.inputs:  # the largest shapes, to size every buffer once
            self.context.set_input_shape(name, tuple(self.profile[name][2]))
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise VlrtError(f"tensor {name!r} has a data-dependent shape {shape}, which this runner cannot size")
            nbytes = max(int(np.prod(shape)) * self.dtypes[name].itemsize, 1)
            what = f"of {nbytes} bytes for {name}"
            self.buffers[name] = int(check_cuda(rt.cudaMalloc(nbytes), f"cudaMalloc {what}"))
            self.hosts[name] = int(check_cuda(rt.cudaMallocHost(nbytes), f"cudaMallocHost {what}"))
            self.context.set_tensor_address(name, self.buffers[name])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rt = self.cudart
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            arr = np.asarray(feeds[name])
            self._check_shape(name, arr.shape)
            self.context.set_input_shape(name, arr.shape)
            staged = _host_array(self.hosts[name], self.dtypes[name], arr.shape)
            staged[...] = arr  # cast and copy into pinned memory
            check_cuda(rt.cudaMemcpyAsync(self.buffers[name], self.hosts[name], staged.nbytes, h2d, self.stream),
                       f"copy of {name} to the GPU")
        outs = {name: _host_array(self.hosts[name], self.dtypes[name], tuple(self.context.get_tensor_shape(name)))
                for name in self.outputs}
        if not self.context.execute_async_v3(int(self.stream)):
            raise VlrtError("TensorRT failed to enqueue the engine (see the TensorRT errors logged above)")
        for name, out in outs.items():
            check_cuda(rt.cudaMemcpyAsync(self.hosts[name], self.buffers[name], out.nbytes, d2h, self.stream),
                       f"copy of {name} from the GPU")
        check_cuda(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {name: out.copy() for name, out in outs.items()}  # the pinned buffers are reused by the next call

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        lo, _, hi = (tuple(s) for s in self.profile[name])
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise VlrtError(f"input {name!r} has shape {shape}; this engine was built for shapes from {lo} to {hi}")

    def free(self) -> None:
        """Release everything allocated so far; safe on a partly built state and when called twice.
        Errors are not raised: freeing is best effort, and a start-up error must not be masked."""
        rt = self.cudart
        if self.stream is not None:
            rt.cudaStreamSynchronize(self.stream)  # no copy may still target the buffers freed below
        self.context = None  # before the engine, and the engine before its runtime
        for ptr in self.buffers.values():
            rt.cudaFree(ptr)
        for ptr in self.hosts.values():
            rt.cudaFreeHost(ptr)
        self.buffers, self.hosts = {}, {}
        if self.stream is not None:
            rt.cudaStreamDestroy(self.stream)
            self.stream = None
        self.engine = self.runtime = None


def _host_array(ptr: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A NumPy view of `shape` elements of `dtype` at the start of a pinned host buffer."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
    return np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)


def _check_sha256(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise VlrtError(f"TensorRT plugin library {path} (recorded in the engine) is missing")
    if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise VlrtError(f"TensorRT plugin library {path} changed since the engine was built; rebuild it with "
                        "`vlrt build ... --force`")
