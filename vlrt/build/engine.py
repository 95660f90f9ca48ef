"""`build_engine`: a bundle's fp32 graphs -> graphs optimized for one backend, precision and machine.

An engine is a directory `BUNDLE/engines/<key>/` holding the optimized video and text graphs and
`engine.json`. The key is a short hash of everything the engine is built from (backend,
precision, pass options, calibration data, the bundle manifest's sha256, onnx/onnxruntime/vlrt
versions, CPU model and ISA flags), so a changed setting, bundle, version or machine never
reuses a stale engine. Every build is validated against the bundle's fp32 graphs on the export
gate's inputs; an engine below the gate (min cosine 0.99 per embedding) is not written.

A backend's registry entry may carry a build hook (`Backend.build`; TensorRT's `TrtEngineBuild`,
OpenVINO's `OvEngineBuild`), an object with:

    options(plugins) -> dict        extra engine options (part of the key)
    artifacts(bundle, precision, options, out, graphs, seconds, progress, *, calibration)
                                    the backend's own files from the passed graphs (`graphs`:
                                    name -> engine.json entry of the ONNX file in `out`); returns
                                    the entries engine.json lists; an entry names the other
                                    files it needs under "onnx" or "weights" ({file, sha256,
                                    bytes}: Engine.verify checks them). `calibration`: the
                                    --calib videos of a static int8 build (empty otherwise)
    gate_runner(path, options)      the runner the gate runs a built file with, given the
                                    engine's options, or None for ONNX Runtime CPU
    accepts_plugins = True          optional: --plugin applies
    owns_precision = True           optional: the artifacts make the precision; no ONNX precision
                                    pass runs, and `precision_options(precision, int8_mode,
                                    fallback=)` gives the precision's engine options (see
                                    _plan_precision)
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlrt.build.staging import staging_dir
from vlrt.build.validate import compare, worse
from vlrt.constants import VIDEO_SUFFIXES
from vlrt.errors import VlrtError
from vlrt.families import get_family
from vlrt.runtime import backends
from vlrt.runtime.backends import Backend
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.bundle import (
    ENGINE_MANIFEST,
    ENGINE_VERSION,
    ENGINES,
    Bundle,
    Engine,
    engine_key,
    engine_machine,
    machine_fingerprint,
    sha256_file,
)
from vlrt.runtime.tokenizer import ClipTokenizer

Int8Mode = Literal["dynamic", "static"]
GATE = 0.99  # reduced precision must hold cos >= 0.99 per embedding by default
GRAPHS = ("video", "text")
MAX_CALIBRATION_VIDEOS = 64
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# ORT CPU inserts Casts and computes an fp16 graph in fp32 (checked: every MatMul/Add/LayerNorm
# of the optimized session graph is fp32), so the gate sees fp16 weight rounding, not fp16 math.
FP16_NOTE = ("validated on ONNX Runtime CPU, which computes fp16 graphs in fp32 after casting: this checks the "
             "graph and fp16 weight rounding, not fp16 arithmetic; check on the GPU that runs it")


@dataclasses.dataclass
class BuildResult:
    engine_dir: Path | None  # None for fp32: the bundle's own graphs are the engine
    key: str | None
    manifest: dict[str, Any]
    reused: bool
    seconds: dict[str, float]


@dataclasses.dataclass
class _Plan:
    backend: Backend
    precision: str
    options: dict[str, Any]
    passes: dict[str, Any]  # graph name -> precision pass object
    calibration: list[Path]
    # graph name -> structural passes (token merging, attention fusion), run in order before the precision pass
    graph_passes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


def build_engine(
    bundle_dir: str | Path,
    *,
    backend: str | None = None,
    precision: str | None = None,
    int8_mode: Int8Mode | None = None,
    calib: str | Path | None = None,
    overwrite: bool = False,
    gate: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    plugins: Sequence[str | Path] = (),
    token_merge: int = 0,
    fuse_attention: bool = False,
    int8_fallback: str | None = None,
) -> BuildResult:
    """Build (or reuse) the engine for these settings on this machine; raises VlrtError when the
    built graphs fail the cosine gate (unless `gate=False`, which records it as skipped).

    None means the default: the best backend here; int8 on ort-cpu and fp16 on ort-cuda; dynamic
    int8 on ort-cpu and static (Q/DQ) on ort-cuda. `int8_fallback`: the precision an int8 engine
    computes its unquantized ops in, "fp32" (the default) or "bf16" (openvino, on CPUs with native
    bf16).
    """
    spec = backends.resolve(backend)  # a backend whose packages are missing fails before any work
    bundle = Bundle.open(bundle_dir)
    plan = plan_build(bundle, backend=spec.name, precision=precision, int8_mode=int8_mode, calib=calib, plugins=plugins,
                      token_merge=token_merge, fuse_attention=fuse_attention, int8_fallback=int8_fallback)
    if plan.precision == "fp32" and not plan.backend.needs_engine and not plan.graph_passes:
        return BuildResult(None, None, {"backend": plan.backend.name, "precision": "fp32",
                                        "note": "fp32 runs the bundle's own graphs; nothing to build"}, False, {})
    manifest = _key_fields(bundle, plan)
    key = engine_key(manifest)
    target = bundle.root / ENGINES / key
    if target.exists() and not overwrite:
        return _reuse(target, gate=gate, progress=progress)
    seconds: dict[str, float] = {}
    with _engine_staging(target, overwrite=overwrite) as tmp:
        graphs = _run_passes(bundle, plan, tmp, seconds, progress)
        hook = plan.backend.build
        if hook is not None:  # artifacts of the backend's own (TensorRT: plans; OpenVINO: int8 IR)
            graphs = hook.artifacts(bundle, plan.precision, plan.options, tmp, graphs, seconds, progress,
                                    calibration=plan.calibration)
        t0 = time.perf_counter()
        progress("validating against the bundle's fp32 graphs")
        gate_runner = getattr(hook, "gate_runner", None)
        validation = validate_engine(bundle, {g: tmp / entry["file"] for g, entry in graphs.items()},
                                     runner=(lambda path: gate_runner(path, plan.options)) if gate_runner else None)
        seconds["validate"] = time.perf_counter() - t0
        validation["gate"] = _gate(validation, enabled=gate)
        if plan.precision == "fp16" and hook is None:  # a backend's own artifacts are run by the gate itself
            validation["note"] = FP16_NOTE
        manifest = {"engine_version": ENGINE_VERSION, "key": key,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                    **manifest, "graphs": graphs, "validation": validation, "seconds": seconds}
        if plan.calibration:
            manifest["calibration"] = {"dir": str(Path(calib).resolve()), "videos": [p.name for p in plan.calibration]}
        (tmp / ENGINE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return BuildResult(target, key, manifest, False, seconds)


def _reuse(target: Path, *, gate: bool, progress: Callable[[str], None]) -> BuildResult:
    """The engine already built with these settings, checked as if loaded."""
    try:
        engine = Engine(target, json.loads((target / ENGINE_MANIFEST).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise VlrtError(f"{target / ENGINE_MANIFEST}: unreadable ({exc}); rebuild it with --force") from None
    engine.verify()
    if gate:  # it may have been kept with --no-gate
        _gate(engine.manifest["validation"], enabled=True)
    progress(f"reusing engine {engine.key} (built {engine.manifest.get('created')})")
    return BuildResult(target, engine.key, engine.manifest, True, {})


def plan_build(bundle: Bundle, *, backend: str | None, precision: str | None, int8_mode: str | None,
               calib: str | Path | None, plugins: Sequence[str | Path] = (), token_merge: int = 0,
               fuse_attention: bool = False, int8_fallback: str | None = None) -> _Plan:
    """Resolve the defaults and refuse contradictory settings, before any work is done.

    Structural passes come first: token merging (video graph) and attention fusion (ort-cpu, fp32
    or dynamic int8: static Q/DQ cannot quantize the fused node's q/k/v projection). A backend
    lists the ones it accepts. Both are opt-in: merging is lossy, and fusion measured no faster
    than the plain graph on ViT-B/32 and ViT-B/16 here (docs/build.md). fp32 with a structural
    pass builds an engine too.
    """
    from vlrt.build.passes import FuseAttention, TokenMerge
    from vlrt.build.passes.tome import vision_tokens

    plan = _plan_precision(bundle, backend=backends.resolve(backend), precision=precision, int8_mode=int8_mode,
                           calib=calib, plugins=plugins, int8_fallback=int8_fallback)
    if token_merge < 0:
        raise VlrtError(f"--token-merge {token_merge}: must be >= 0 (tokens merged per vision block)")
    if token_merge and "token-merge" not in plan.backend.structural_passes:
        raise VlrtError(f"--token-merge: the {plan.backend.name} backend does not run token-merged graphs")
    static = plan.precision == "int8" and plan.options.get("mode") == "static"
    if fuse_attention and ("fuse-attention" not in plan.backend.structural_passes or static):
        raise VlrtError("--fuse-attention makes ONNX Runtime CPU's Attention op: it applies to --backend ort-cpu "
                        "with fp32 or dynamic int8 (TensorRT fuses attention itself; static Q/DQ cannot quantize "
                        "the fused node)")
    structural: dict[str, list[Any]] = {g: [] for g in GRAPHS}
    if token_merge:
        structural["video"].append(TokenMerge(r=token_merge, tokens=vision_tokens(bundle.manifest)))
    if fuse_attention:
        for graph in GRAPHS:
            structural[graph].append(FuseAttention())
    plan.graph_passes = {g: p for g, p in structural.items() if p}
    if plan.graph_passes:
        plan.options = {**plan.options, "graph_passes": {g: [{"name": p.name, **p.options()} for p in passes]
                                                         for g, passes in plan.graph_passes.items()}}
    return plan


def _plan_precision(bundle: Bundle, *, backend: Backend, precision: str | None, int8_mode: str | None,
                    calib: str | Path | None, plugins: Sequence[str | Path] = (),
                    int8_fallback: str | None = None) -> _Plan:
    """The precision pass and its options. Reduced precision comes from the graph: an fp16 graph,
    dynamic int8 (ORT CPU), or calibrated Q/DQ (symmetric for GPU backends, which TensorRT
    requires; asymmetric uint8 activations on the CPU, ORT's fast u8*s8 path).

    A backend's build hook may make the precision itself instead (`owns_precision`, OpenVINO):
    no ONNX precision pass runs, its `precision_options(precision, int8_mode, fallback)` are the
    engine's options (it may refuse there, before any work), and static int8 still takes the
    --calib videos, recorded in the options and engine.json as for Q/DQ, and handed to its
    artifacts. An int8 fallback other than fp32 is the backend's to make (`int8_fallbacks`)."""
    from vlrt.build.passes import DynamicInt8, Fp16Graph, StaticInt8QDQ

    hook = backend.build
    if plugins and not getattr(hook, "accepts_plugins", False):
        raise VlrtError("--plugin loads TensorRT plugin libraries: it applies to --backend tensorrt only")
    precision = backends.check_precision(backend, precision or backend.default_precision)
    if int8_mode is not None and precision != "int8":
        raise VlrtError(f"--int8-mode {int8_mode} applies to --precision int8, not {precision}")
    mode = int8_mode or backend.default_int8_mode
    if precision == "int8" and mode not in backend.int8_modes:
        raise VlrtError(backend.notes.get(mode) or
                        f"{backend.name} has no int8 mode {mode!r}; available: {', '.join(backend.int8_modes)}")
    if calib is not None and (precision != "int8" or mode != "static"):
        raise VlrtError("--calib is used only by --precision int8 --int8-mode static")
    fallback = None if int8_fallback in (None, "fp32") else int8_fallback
    if int8_fallback is not None and precision != "int8":
        raise VlrtError(f"--int8-fallback {int8_fallback} applies to --precision int8, not {precision}")
    if fallback is not None and fallback not in backend.int8_fallbacks:
        offer = [b.name for b in map(backends.get, backends.names()) if fallback in b.int8_fallbacks]
        raise VlrtError(f"--int8-fallback {fallback}: the {backend.name} backend computes what int8 leaves "
                        f"unquantized in fp32 only" + (f"; {', '.join(offer)} offers {fallback}" if offer else ""))
    base = hook.options(plugins) if hook is not None else {}
    if getattr(hook, "owns_precision", False):
        options = hook.precision_options(precision, mode if precision == "int8" else None, fallback=fallback)
        if precision != "int8" or mode != "static":
            return _Plan(backend, precision, {**options, **base}, {}, [])
        if calib is None:
            raise VlrtError(f"{backend.name} int8 is calibrated on videos (--int8-mode static): pass --calib DIR, a "
                            "folder of videos like the ones you will embed")
        videos = calibration_videos(Path(calib))
        return _Plan(backend, precision, {**options, "calibration": _calibration_id(videos), **base}, {}, videos)
    if precision not in ("fp32", "fp16", "int8"):
        raise VlrtError(f"no graph pass makes {precision} graphs, and the {backend.name} backend's build does not")
    if precision in ("fp32", "fp16"):
        passes = {g: Fp16Graph() for g in GRAPHS} if precision == "fp16" else {}
        options = {"pass": "fp16"} if passes else ({"pass": "none"} if base else {})
        return _Plan(backend, precision, {**options, **base}, passes, [])
    reduce_range = backend.device == "cpu" and _needs_reduce_range(machine_fingerprint())
    if mode == "dynamic":
        quant = DynamicInt8(reduce_range=reduce_range)
        return _Plan(backend, precision, quant.options(), {g: quant for g in GRAPHS}, [])
    if calib is None:
        raise VlrtError(f"{backend.name} int8 comes from a calibrated Q/DQ graph (--int8-mode static): pass "
                        "--calib DIR, a folder of videos like the ones you will embed")
    videos = calibration_videos(Path(calib))
    quant = StaticInt8QDQ(symmetric=backend.device == "cuda", reduce_range=reduce_range)
    options = {**quant.options(), "calibration": _calibration_id(videos), **base}
    return _Plan(backend, precision, options, {g: quant for g in GRAPHS}, videos)


def calibration_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise VlrtError(f"--calib {folder}: not a directory")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise VlrtError(f"--calib {folder}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    if len(videos) > MAX_CALIBRATION_VIDEOS:  # evenly spread over the folder, deterministic
        videos = [videos[i] for i in np.linspace(0, len(videos) - 1, MAX_CALIBRATION_VIDEOS).round().astype(int)]
    return videos


def validate_engine(bundle: Bundle, graphs: dict[str, Path], *,
                    runner: Callable[[Path], Any] | None = None) -> dict[str, Any]:
    """Min cosine per embedding of the built graphs vs the bundle's fp32 graphs (ORT CPU), on the
    gate's inputs made from the manifest (vlrt.build.validate): no PyTorch model is needed.
    `runner(path)` gives the runner of a built file, as the backend will run it (TensorRT plans,
    OpenVINO IR and ONNX), or None for a file ONNX Runtime CPU runs; without it, ORT CPU runs all."""
    tokenizer = ClipTokenizer(bundle.path(bundle.manifest["tokenizer"]["file"]))
    feed_sets = get_family(bundle.manifest["family"]).validation_inputs(bundle.manifest, tokenizer)
    per_output: dict[str, dict[str, float]] = {}
    for name, path in graphs.items():
        built = runner(path) if runner is not None else None
        with OrtRunner(SessionFromOnnx(bundle.graph_path(name))) as ref, \
                (built if built is not None else _onnx_runner(path)) as opt:
            for feeds in feed_sets:
                expected, got = ref.infer(feeds[name]), opt.infer(feeds[name])
                for out_name, value in expected.items():
                    per_output[out_name] = worse(per_output.get(out_name), compare(value, got[out_name]))
    return {"min_cosine": min(m["min_cosine"] for m in per_output.values()),
            "max_abs_diff": max(m["max_abs_diff"] for m in per_output.values()),
            "per_output": per_output, "threshold": GATE, "reference": "bundle fp32 graphs, ONNX Runtime CPU",
            "inputs": "vlrt.build.validate.manifest_feed_sets"}


def _onnx_runner(path: Path) -> OrtRunner:
    return OrtRunner(SessionFromOnnx(path))


def _gate(validation: dict[str, Any], *, enabled: bool) -> str:
    if not enabled:
        return "skipped"
    if validation["min_cosine"] >= GATE:
        return "passed"
    rows = ", ".join(f"{k} {v['min_cosine']:.5f}" for k, v in validation["per_output"].items())
    raise VlrtError(f"the built engine fails the gate: min cosine {validation['min_cosine']:.5f} < {GATE} vs fp32 "
                    f"({rows}); nothing was written. Try another --int8-mode, calibration set or a smaller "
                    "--token-merge, or pass --no-gate to keep it anyway")


def _run_passes(bundle: Bundle, plan: _Plan, out: Path, seconds: dict[str, float],
                progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    graphs = {}
    for name in GRAPHS:
        t0 = time.perf_counter()
        src, dst = bundle.graph_path(name), out / f"{name}.onnx"
        chain = [*plan.graph_passes.get(name, []), *([plan.passes[name]] if name in plan.passes else [])]
        reports = []
        for i, graph_pass in enumerate(chain):
            progress(f"{graph_pass.name}: {name} graph")
            step = dst if i == len(chain) - 1 else out / f".{name}.step{i}.onnx"
            if graph_pass is plan.passes.get(name) and plan.calibration:
                reports.append(graph_pass.apply(src, step, _calibration_reader(bundle, name, plan.calibration)))
            else:
                reports.append(graph_pass.apply(src, step))
            if src.parent == out:
                src.unlink()
            src = step
        if not chain:  # this graph is unchanged: the bundle's own, linked (or copied) beside the others
            _link_or_copy(src, dst)
        seconds[name] = time.perf_counter() - t0
        graphs[name] = {"file": dst.name, "sha256": sha256_file(dst), "bytes": dst.stat().st_size,
                        "pass": reports[-1].to_dict() if reports else {"name": "none", "changed": {}, "kept_fp32": 0},
                        "passes": [r.to_dict() for r in reports[:-1]]}
    return graphs


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _calibration_reader(bundle: Bundle, graph: str, videos: list[Path]):
    from vlrt.build.passes import CaptionCalibration, FrameCalibration
    from vlrt.runtime.tokenizer import ClipTokenizer

    if graph == "video":
        return FrameCalibration(bundle.manifest, videos)
    tokenizer = ClipTokenizer(bundle.path(bundle.manifest["tokenizer"]["file"]))
    return CaptionCalibration(tokenizer, context_length=bundle.max_words)


def _key_fields(bundle: Bundle, plan: _Plan) -> dict[str, Any]:
    import onnx
    import onnxruntime

    from vlrt import __version__

    return {"backend": plan.backend.name, "precision": plan.precision, "options": plan.options,
            "source": {"manifest_sha256": bundle.manifest_sha256},
            "versions": {"vlrt": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         **plan.backend.key_versions()},
            "machine": engine_machine(plan.backend)}


def _needs_reduce_range(machine: dict[str, Any]) -> bool:
    """7-bit weights on x86 without VNNI, where u8*s8 pairs saturate int16 (VPMADDUBSW)."""
    x86 = machine["arch"].lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not any(f in machine["isa"] for f in VNNI_FLAGS)


def _calibration_id(videos: list[Path]) -> dict[str, Any]:
    from vlrt.build.passes import CAPTIONS  # the text graph's calibration captions

    digest = hashlib.sha256()
    for path in videos:
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    captions = hashlib.sha256("\n".join(CAPTIONS).encode()).hexdigest()
    return {"videos": len(videos), "videos_sha256": digest.hexdigest(), "captions_sha256": captions}


@contextlib.contextmanager
def _engine_staging(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """staging_dir for an engine directory: an old engine is moved aside, restored on failure."""
    aside = target.with_name(f".{target.name}.old")
    if target.exists():
        if not overwrite:
            raise VlrtError(f"{target}: already exists; pass --force to rebuild it")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
    try:
        with staging_dir(target, overwrite=False) as tmp:
            yield tmp
    except BaseException:
        if aside.exists() and not target.exists():
            os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
