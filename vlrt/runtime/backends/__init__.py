"""Backends: one subpackage each (a loader that builds the artifact, a runner that runs it) and
one `Backend` entry in this registry saying what it runs and how its engines are made.

    ort/   ONNX Runtime: `ort-cpu` and `ort-cuda` (SessionFromOnnx, OrtRunner)
    trt/   TensorRT: `tensorrt` (build_plan, PlanFromFile, TrtRunner); lazily imported
    ov/    OpenVINO: `openvino` (OvModel, OvRunner; OvEngineBuild: NNCF int8 IR, bf16); lazily imported

`Runtime`, `Bundle.engine`, `vlrt build` and every CLI `--backend` choice read this registry;
none of them branches on a backend's name. Adding a backend: its folder, a `register(Backend(...))`
call in `_register_builtin` below, and its tests.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError


@dataclasses.dataclass(frozen=True)
class Backend:
    """What a backend runs, how its engines are built, and what goes into an engine's key.

    `runners(graphs, options, threads)` gets `{graph name: file}` (ONNX graphs, or whatever the
    backend's build wrote) and the engine's options, and returns `{graph name: runner}`; runners
    have `infer(feeds) -> outputs` and are context managers.
    """

    name: str
    description: str
    device: str  # "cpu" or "cuda": where the engine runs
    precisions: tuple[str, ...]  # precisions whose engines it runs
    default_precision: str  # what `vlrt build` makes when no precision is given
    int8_modes: tuple[str, ...]  # "dynamic" (ORT's on-the-fly activation quantization), "static" (Q/DQ)
    runners: Callable[[Mapping[str, Path], Mapping[str, Any], int | None], dict[str, Any]]
    available: Callable[[], bool] = lambda: True  # usable here without raising
    require: Callable[[], None] = lambda: None  # raises VlrtError naming what to install
    key_versions: Callable[[], dict[str, str]] = dict  # library versions an engine is keyed by
    key_machine: Callable[[], dict[str, Any]] = dict  # hardware an engine is keyed by, beyond the CPU
    needs_engine: bool = False  # runs only built engines (never the bundle's own ONNX graphs)
    auto_rank: int = 0  # `backend=None` picks the highest-ranked available backend; < 0: by name only
    structural_passes: tuple[str, ...] = ("token-merge",)  # opt-in graph passes it accepts
    # precisions besides fp32 that an int8 engine may compute its unquantized ops in (--int8-fallback)
    int8_fallbacks: tuple[str, ...] = ()
    build: Any = None  # optional hook object: extra build options, and artifacts from the passed graphs
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # precision -> refusal reason
    # (video graph file, its sha256, the outputs the head keeps) -> (tower file, head file, features
    # tensor name): the video graph cut at the per-frame features, for packed frames and frame
    # skipping; None: the backend's engines cannot be cut (every frame slot runs through the tower)
    split_video: Callable[[Path, str, tuple[str, ...]], tuple[Path, Path, str]] | None = \
        dataclasses.field(default=lambda *a: split_onnx_video(*a))

    @property
    def default_int8_mode(self) -> str | None:
        return self.int8_modes[0] if self.int8_modes else None


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in BACKENDS:
        raise VlrtError(f"backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise VlrtError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def resolve(name: str | None) -> Backend:
    """None: the highest-ranked backend available here. A named backend whose packages are
    missing fails here, before any work."""
    if name is None:
        ranked = sorted((b for b in BACKENDS.values() if b.auto_rank >= 0), key=lambda b: -b.auto_rank)
        return next(b for b in ranked if b.available())
    backend = get(name)
    backend.require()
    return backend


def check_precision(backend: Backend, precision: str | None) -> str:
    """None means fp32 (the bundle's own graphs)."""
    precision = precision or "fp32"
    known = sorted({p for b in BACKENDS.values() for p in b.precisions})
    if precision not in known:
        raise VlrtError(f"unknown precision {precision!r}; available: {', '.join(known)}")
    if precision not in backend.precisions:
        raise VlrtError(backend.notes.get(precision)
                        or f"{backend.name} does not run {precision}; it runs {', '.join(backend.precisions)}")
    return precision


def split_onnx_video(path: Path, sha256: str, outputs: tuple[str, ...]) -> tuple[Path, Path, str]:
    """The ONNX video graph cut in two with the `onnx` package, cached by the graph's sha256."""
    from vlrt.runtime.frameskip import features_name, split_video_graph

    tower, head = split_video_graph(path, sha256, outputs)
    return tower, head, features_name(tower)


def _register_builtin() -> None:
    from vlrt.runtime.backends import ort, ov, trt

    register(Backend(
        name="ort-cpu", description="ONNX Runtime, CPU execution provider", device="cpu",
        precisions=("fp32", "int8"), default_precision="int8", int8_modes=("dynamic", "static"),
        runners=ort.cpu_runners, key_versions=ort.versions, auto_rank=10,
        structural_passes=("token-merge", "fuse-attention"),
        notes={"fp16": "fp16 is for GPU backends (ort-cuda, tensorrt): ONNX Runtime's CPU provider casts an fp16 graph back to fp32 and runs it no faster "
                       "than fp32 (docs/build.md); use --precision int8 (or fp32)"}))
    register(Backend(
        name="ort-cuda", description="ONNX Runtime, CUDA execution provider (onnxruntime-gpu)", device="cuda",
        precisions=("fp32", "fp16", "int8"), default_precision="fp16", int8_modes=("static",),
        runners=ort.cuda_runners, available=ort.cuda_available,
        key_versions=ort.versions, auto_rank=20,
        notes={"dynamic": "dynamic int8 needs DynamicQuantizeLinear, which ONNX Runtime's CUDA provider lacks "
                          "(it would run on the CPU); use --int8-mode static for ort-cuda"}))
    register(Backend(
        name="tensorrt", description="NVIDIA TensorRT plans (vlrt[tensorrt], an NVIDIA GPU)", device="cuda",
        precisions=("fp32", "fp16", "int8"), default_precision="fp16", int8_modes=("static",),
        runners=lambda *a: trt.plan_runners(*a), require=lambda: trt.require_tensorrt(),
        key_versions=lambda: trt.key_versions(), key_machine=lambda: trt.key_machine(), needs_engine=True, auto_rank=-1, build=trt.BUILD,
        split_video=None,
        notes={"dynamic": "TensorRT builds INT8 only from Q/DQ graphs: use --int8-mode static (its default) "
                          "with --calib DIR"}))
    register(Backend(
        name="openvino", description="OpenVINO, CPU (vlrt[openvino])", device="cpu",
        precisions=("fp32", "bf16", "int8"), default_precision="int8", int8_modes=("static",),
        runners=lambda *a: ov.runners(*a), available=ov.available, require=ov.require,
        key_versions=lambda: ov.versions(), auto_rank=-1,
        structural_passes=("token-merge",), int8_fallbacks=("bf16",), build=ov.BUILD,
        split_video=lambda *a: ov.split_video(*a),
        notes={"fp16": "fp16 is not a CPU precision: OpenVINO's CPU plugin computes in f32, bf16 (on CPUs with "
                       "avx512_bf16 or amx_bf16) or int8; use --precision int8 (with --calib DIR), bf16 or fp32",
               "dynamic": "OpenVINO int8 comes from NNCF calibration on your videos: use --int8-mode static "
                          "(its default) with --calib DIR"}))


_register_builtin()
