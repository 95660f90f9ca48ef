"""Run a graph with OpenVINO on the CPU: `OvModel` (loader) and `OvRunner` (runner).

OvRunner has OrtRunner's interface (a context manager with `activate`, `input_names` and
`infer(feeds) -> outputs`, NumPy in and out, outputs keyed by the graph's output names), so
`vlrt.Runtime` and the build's gate use either without knowing which. OpenVINO reads ONNX files
directly and OpenVINO IR (`.xml` with its `.bin` beside it); batch, frames and words stay dynamic.

The inference precision is always set: f32, or bf16 for a bf16 engine. Left unset, OpenVINO's CPU
plugin computes in bf16 on CPUs that have it, which would change an fp32 or int8 engine's
numerics silently. A precision OpenVINO does not honour here (bf16 on a CPU without it, which
OpenVINO runs in f32) is refused when the model is compiled, so a runner never runs otherwise
than its engine says.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError

PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # engine option `inference_precision` -> OpenVINO element type
_CORE: Any = None
_CORE_LOCK = threading.Lock()


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise VlrtError('the openvino backend needs OpenVINO: pip install "vlrt[openvino]"') from None
    return openvino


def core():
    """The process's `openvino.Core` (one is enough; creating it loads the device plugins)."""
    global _CORE
    ov = import_openvino()
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def inference_precision(options: Mapping[str, Any]) -> str:
    """The OpenVINO inference precision an engine's options ask for (f32 unless they say bf16)."""
    precision = options.get("inference_precision", "f32")
    if precision not in PRECISIONS:
        raise VlrtError(f"inference_precision {precision!r}: OpenVINO engines run {' or '.join(PRECISIONS)}")
    return precision


class OvModel:
    """Callable that reads one graph (ONNX or OpenVINO IR) and compiles it for the CPU device."""

    def __init__(self, path: str | Path, *, threads: int | None = None, precision: str = "f32") -> None:
        self.path = Path(path)
        self.threads = threads
        self.precision = inference_precision({"inference_precision": precision})

    def config(self) -> dict[str, Any]:
        """The compile properties: inference precision, latency hint (one stream), threads."""
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        return config

    def __call__(self):
        ov = import_openvino()
        if self.path.suffix == ".xml" and not self.path.with_suffix(".bin").is_file():
            raise VlrtError(f"{self.path}: its weights {self.path.with_suffix('.bin').name} are missing")
        try:
            compiled = core().compile_model(core().read_model(str(self.path)), "CPU", self.config())
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
            raise VlrtError(f"{self.path}: OpenVINO {ov.__version__} cannot load this graph: {_reason(exc)}") from None
        actual = compiled.get_property("INFERENCE_PRECISION_HINT")
        if actual != getattr(ov.Type, PRECISIONS[self.precision]):
            raise VlrtError(f"{self.path}: OpenVINO {ov.__version__} runs this graph in {actual.get_type_name()} on this "
                            f"CPU, not {self.precision} as the engine says (bf16 needs a CPU with avx512_bf16 or "
                            "amx_bf16); build a fp32 or int8 engine instead")
        return compiled


def _input_name(port) -> str:
    """An input's graph name: its parameter's, where OpenVINO gave the tensor other names too (the
    ONNX frontend adds the names of the no-op Casts it removed)."""
    names, name = port.get_names(), port.get_node().get_friendly_name()
    return name if name in names else port.get_any_name()


def _reason(exc: Exception) -> str:
    """OpenVINO's message without its "Exception from <source file>" lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from")]
    return lines[0] if lines else str(exc).strip()


class OvRunner:
    """Runs one graph. A context manager: the compiled model lives between entry and exit.
    Each thread that calls `infer` gets its own infer request (requests are not shared)."""

    def __init__(self, loader: OvModel) -> None:
        self._loader = loader
        self._compiled: Any = None
        self._outputs: list[tuple[str, ...]] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def __enter__(self) -> "OvRunner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._compiled, self._local = None, threading.local()

    def activate(self) -> None:
        with self._lock:
            if self._compiled is None:
                self._compiled = self._loader()
                self._outputs = [tuple(sorted(o.get_names())) for o in self._compiled.outputs]

    @property
    def input_names(self) -> list[str]:
        self.activate()
        return [_input_name(i) for i in self._compiled.inputs]

    @property
    def inference_precision(self) -> str:
        """The precision OpenVINO compiled the graph for (its element type name: f32, bf16)."""
        self.activate()
        return self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.activate()
        compiled = self._compiled
        request = getattr(self._local, "request", None)
        if request is None or self._local.compiled is not compiled:
            request = self._local.request = compiled.create_infer_request()
            self._local.compiled = compiled
        results = request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        out = {}
        for i, names in enumerate(self._outputs):  # every name of an output tensor (ONNX's among them)
            value = results[i]
            out.update({name: value for name in names})
        return out
