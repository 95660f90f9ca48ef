"""Build a TensorRT plan (a serialized engine) from one ONNX graph: `build_plan`.

Written against the TensorRT 10.x Python API (names checked against the bindings of 10.13 and
11.4; 11.x keeps them): `Builder`, `create_network` with the STRONGLY_TYPED flag (11.x ignores
it: every network is strongly typed there), `OnnxParser.parse_from_file`, an optimization
profile per input, the timing cache, an `IProgressMonitor`, `build_serialized_network`, and
the engine inspector on the result (whether attention was fused, inspect.py).

Strongly typed means TensorRT computes every tensor in the type the ONNX graph gives it: FP16
comes from the fp16 graph (`vlrt.build.passes.Fp16Graph`), INT8 from explicit Q/DQ nodes
(`StaticInt8QDQ(symmetric=True)`), so no precision flags are set. TF32 is switched off, so the
parts the passes keep in fp32 (LayerNorm, Softmax, the projection and the embedding tail) are
computed in true fp32 rather than with a 10-bit mantissa.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from vlrt.errors import VlrtError
from vlrt.runtime.backends.trt.deps import import_tensorrt
from vlrt.runtime.backends.trt.plugins import load_plugins
from vlrt.runtime.backends.trt.profiles import Profile, to_json

log = logging.getLogger(__name__)
Precision = Literal["fp32", "fp16", "int8"]
DEFAULT_WORKSPACE_MIB = 4096  # an upper bound only: TensorRT allocates what the chosen tactics need
PROGRESS_EVERY_S = 5.0


def build_plan(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    profiles: Profile,
    precision: Precision,
    timing_cache: str | Path | None = None,
    plugin_libraries: Sequence[str | Path] = (),
    progress: Callable[[str], None] = lambda message: None,
    workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
) -> dict[str, Any]:
    """Parse `onnx_path`, build for this GPU, write the plan to `plan_path`; returns what was built
    (TensorRT version, profile, layer counts, timing-cache use, attention fusion, seconds) for
    engine.json."""
    trt = import_tensorrt()
    t0 = time.perf_counter()
    logger = make_logger(trt)
    load_plugins(trt, logger, plugin_libraries)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise VlrtError(f"{onnx_path}: TensorRT's ONNX parser failed: {parser_errors(parser)}")
    layers = _check_network(trt, network, profiles, precision, onnx_path)
    config = _builder_config(trt, builder, profiles, workspace_mib)
    cache = _load_timing_cache(config, timing_cache)
    monitor = progress_monitor(trt, progress)
    config.progress_monitor = monitor  # kept referenced until the build returns
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VlrtError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT errors logged above)")
    _write_atomic(Path(plan_path), memoryview(serialized))
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), memoryview(config.get_timing_cache().serialize()))
    return {"tensorrt": str(trt.__version__), "precision": precision, "profile": to_json(profiles),
            "layers": layers, "timing_cache": {"path": str(timing_cache) if timing_cache else None, **cache},
            "attention": _attention(trt, logger, serialized, layers["softmax"], onnx_path),
            "workspace_mib": workspace_mib, "seconds": round(time.perf_counter() - t0, 3)}


def _builder_config(trt: Any, builder: Any, profiles: Profile, workspace_mib: int | None) -> Any:
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    # layer names, types and tactics in the plan, so the engine inspector can tell whether
    # attention was fused (inspect.py)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    return config


def _attention(trt: Any, logger: Any, serialized: Any, softmax: int, onnx_path: str | Path) -> dict[str, Any]:
    """The built engine's attention report. The plan is already written: a failure here is
    recorded and logged rather than failing the build."""
    # imported here, not at the top: `python -m vlrt.runtime.backends.trt.inspect` must find the
    # module unimported when the package loads
    from vlrt.runtime.backends.trt.inspect import attention_report, engine_information

    try:
        runtime = trt.Runtime(logger)  # kept referenced while the engine is used
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise VlrtError("the plan just built does not deserialize")
        return attention_report(engine_information(trt, engine), softmax_in_network=softmax)
    except Exception as exc:  # TensorRT's bindings raise their own exception types
        log.warning("%s: could not inspect the built engine: %s", onnx_path, exc)
        return {"verdict": "unknown", "error": f"{type(exc).__name__}: {exc}", "softmax_in_network": softmax}


def parser_errors(parser: Any) -> str:
    """Every error the ONNX parser recorded, one clause each: node, op type and description."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()} {err.node_name()!r} ({err.node_operator()})" if err.node() >= 0 else "graph"
        out.append(f"{where}: {err.desc()} [{err.code()}]")
    return "; ".join(out) or "no error recorded"


@functools.lru_cache(maxsize=None)
def make_logger(trt: Any) -> Any:
    """The TensorRT logger, forwarding warnings and errors to Python logging. One per process:
    TensorRT objects keep a pointer to their logger, so it must outlive all of them."""
    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL, trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING, trt.ILogger.Severity.INFO: logging.DEBUG,
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return Logger()


def progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    """An `IProgressMonitor` that reports TensorRT's build phases through `report`: each phase
    of the top two levels when it starts, and the top level's steps at most every few seconds.
    TensorRT calls it from its own threads, hence the lock."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int]] = {}  # name -> (depth, steps)
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = self._phases[parent_phase][0] + 1 if parent_phase in self._phases else 0
                self._phases[phase_name] = (depth, num_steps)
                if depth <= 1:
                    report(f"TensorRT: {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                depth, steps = self._phases.get(phase_name, (0, 0))
                now = time.monotonic()
                if depth == 0 and now - self._last >= PROGRESS_EVERY_S:
                    self._last = now
                    report(f"TensorRT: {phase_name} {step + 1}/{steps}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._phases.pop(phase_name, None)

    return Monitor()


def _check_network(trt: Any, network: Any, profiles: Profile, precision: str, onnx_path: str | Path) -> dict[str, int]:
    """Refuse a profile that misses an input, and a graph whose types contradict the precision
    asked for (a strongly typed network computes in the graph's own types)."""
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing, extra = set(inputs) - set(profiles), set(profiles) - set(inputs)
    if missing or extra:
        raise VlrtError(f"{onnx_path}: optimization profile does not match the graph inputs {inputs} "
                        f"(missing {sorted(missing)}, unknown {sorted(extra)})")
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    dq = sum(layer.type == trt.LayerType.DEQUANTIZE for layer in layers)
    softmax = sum(layer.type == trt.LayerType.SOFTMAX for layer in layers)
    half = sum(layer.get_output(j).dtype == trt.DataType.HALF for layer in layers for j in range(layer.num_outputs))
    if precision == "int8" and not dq:
        raise VlrtError(f"{onnx_path}: an int8 build needs a Q/DQ graph, and this graph has no DequantizeLinear")
    if precision == "fp16" and not half:
        raise VlrtError(f"{onnx_path}: an fp16 build needs the fp16 graph (Fp16Graph), and this graph has no "
                        "fp16 tensor")
    return {"layers": len(layers), "dequantize": dq, "fp16_outputs": half, "softmax": softmax}


def _load_timing_cache(config: Any, path: str | Path | None) -> dict[str, Any]:
    """Start from the saved timing cache if there is one; returns whether one was read, and why a
    saved one was discarded. Callers name the file per TensorRT version and GPU (vlrt build does),
    since a cache is valid only for the version and device that timed it; `ignore_mismatch=False`
    keeps TensorRT checking that. An unreadable or mismatched cache costs build time, not the
    build: it is replaced by a fresh one, which the build then writes over the file."""
    blob = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
            accepted = cache is not None and config.set_timing_cache(cache, False)
            why = "TensorRT refused it (corrupt, or from another TensorRT version or GPU)"
        except Exception as exc:  # the bindings raise on bytes they cannot parse
            accepted, why = False, f"{type(exc).__name__}: {exc}"
        if accepted:
            return {"reused": True, "discarded": None}
        log.warning("timing cache %s not used (%s); starting from an empty one", path, why)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise VlrtError("TensorRT could not attach an empty timing cache to the builder config")
    return {"reused": False, "discarded": why if blob else None}


def _write_atomic(path: Path, data: memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
