"""What TensorRT made of a graph: the built engine's layers, and whether attention was fused.

The fp16 graph keeps Softmax and LayerNorm in fp32 (`Fp16Graph`), and a strongly typed network
computes them so. TensorRT's fused multi-head-attention kernels need the two batched MatMuls of
attention in fp16 or int8, so an fp32 Softmax between them may leave attention as separate
MatMul / Softmax kernels. Only the built engine tells: `IEngineInspector` lists its layers
(`engine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)`), in
detail when the plan was built with `ProfilingVerbosity.DETAILED` (build_plan does).

A fused attention shows up as a layer whose name, type or tactic names an MHA kernel
(`_gemm_mha_v2`, `_gemv_mha_v1`, fmha, ...); a Softmax left outside one shows up as a layer whose
name, type or metadata (the ONNX nodes it came from) names a Softmax.

    python -m vlrt.runtime.backends.trt.inspect PLAN [PLAN ...] [--plugin LIB]
    python -m vlrt.runtime.backends.trt.inspect --build-default DIR   # the embedded model, fp16 plans

print one JSON object per plan (or per graph of the built engine).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError

_MHA = re.compile(r"mha", re.IGNORECASE)
_SOFTMAX = re.compile(r"softmax", re.IGNORECASE)
_FIELDS = ("Name", "LayerType", "TacticName", "Metadata")  # of a layer, at DETAILED verbosity
_GEMM_TYPES = {"gemm", "matrixmultiply", "matrix_multiply", "matmul"}
EXAMPLES = 5  # layer names kept per kind in the report


def engine_information(trt: Any, engine: Any) -> dict[str, Any]:
    """The engine inspector's JSON description of every layer of `engine`."""
    inspector = engine.create_engine_inspector()
    if inspector is None:
        raise VlrtError("TensorRT could not create an engine inspector for this engine")
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise VlrtError(f"the engine inspector's output is not JSON ({exc}): {str(text)[:200]!r}") from None


def attention_report(info: Mapping[str, Any], *, softmax_in_network: int | None = None) -> dict[str, Any]:
    """Whether attention was fused, from the engine inspector's JSON (`engine_information`).

    `verdict` is "fused" (MHA kernels and no Softmax left outside them), "partial" (both),
    "not fused" (Softmax layers and no MHA kernel) or "unknown" (neither is visible, e.g. a plan
    built without detailed profiling verbosity, whose layers are names only)."""
    layers = info.get("Layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list):
        raise VlrtError(f"the engine information's 'Layers' is a {type(layers).__name__}, not a list")
    detailed = bool(layers) and all(isinstance(layer, Mapping) for layer in layers)
    fused, softmax, gemm = [], [], 0
    for layer in layers:
        name, kind, tactic, metadata = _fields(layer)
        if _MHA.search(" ".join((name, kind, tactic))):
            fused.append(name)
        elif _SOFTMAX.search(" ".join((name, kind, metadata))):
            softmax.append(name)
        elif kind.lower() in _GEMM_TYPES:
            gemm += 1
    return {"verbosity": "detailed" if detailed else ("layer_names_only" if layers else "none"),
            "layers": len(layers), "verdict": _verdict(bool(fused), bool(softmax), detailed),
            "fused_attention_layers": len(fused), "unfused_softmax_layers": len(softmax),
            "other_gemm_layers": gemm, "softmax_in_network": softmax_in_network,
            "examples": {"fused": fused[:EXAMPLES], "softmax": softmax[:EXAMPLES]}}


def _fields(layer: Any) -> tuple[str, str, str, str]:
    if isinstance(layer, Mapping):
        name, kind, tactic, metadata = (str(layer.get(k) or "") for k in _FIELDS)
        return name, kind, tactic, metadata
    return str(layer), "", "", ""


def _verdict(fused: bool, softmax: bool, detailed: bool) -> str:
    if fused:
        return "partial" if softmax else "fused"
    if softmax and detailed:
        return "not fused"
    return "unknown"  # names only: a Softmax inside a Myelin node's name says nothing about its kernels


def inspect_plan(path: str | Path, *, plugins: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Deserialize a plan (after loading its plugin libraries) and report on its attention."""
    from vlrt.runtime.backends.trt.deps import import_tensorrt
    from vlrt.runtime.backends.trt.runner import PlanFromFile

    _runtime, engine = PlanFromFile(path, plugins=[{"path": str(p)} for p in plugins])()
    return {"plan": str(path), **attention_report(engine_information(import_tensorrt(), engine))}


def build_default(root: Path) -> list[dict[str, Any]]:
    """Unpack the embedded model into `root`, build its fp16 TensorRT engine and return each
    graph's build record (what engine.json holds under `tensorrt`) with the plans' min cosine
    against fp32, then the text plan's latency at one query and at the bulk batch. The gate is
    recorded, not enforced, so a failing plan is still reported."""
    from vlrt.assets import unpack_default_bundle
    from vlrt.build.engine import GATE, build_engine

    bundle = unpack_default_bundle(root)
    result = build_engine(bundle, backend="tensorrt", overwrite=True, gate=False,
                          progress=lambda message: print(message, file=sys.stderr))
    cosine = result.manifest["validation"]["min_cosine"]
    reports = [{"graph": name, "plan": str(result.engine_dir / entry["file"]), "min_cosine": cosine,
                "gate_passed": cosine >= GATE, **entry["tensorrt"]}
               for name, entry in result.manifest["graphs"].items()]
    return reports + [{"text_latency_ms": text_latency(bundle, engine=result.key)}]


def text_latency(bundle: Path, *, engine: str, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of `Runtime.encode_text` on the TensorRT engine, per batch size: one
    query (search) and the profile's opt batch (bulk), which the text profile is tuned for."""
    import time

    from vlrt import Runtime
    from vlrt.runtime.backends.trt.profiles import OPT_BATCH

    rt = Runtime.load(bundle, backend="tensorrt", engine=engine)
    out = {}
    for n in sorted({1, OPT_BATCH["text"]}):
        texts = [f"a person does thing number {i}" for i in range(n)]
        rt.encode_text(texts)  # warm-up: first-call allocations and lazy kernel loading
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rt.encode_text(texts)
            times.append(time.perf_counter() - t0)
        out[str(n)] = round(1000 * sorted(times)[len(times) // 2], 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlrt.runtime.backends.trt.inspect",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("plans", nargs="*", type=Path, help="TensorRT plan files")
    parser.add_argument("--plugin", action="append", default=[], help="plugin library the plans need (repeatable)")
    parser.add_argument("--build-default", type=Path, metavar="DIR",
                        help="unpack the embedded model into DIR, build its fp16 plans and report on them")
    args = parser.parse_args(argv)
    if not args.plans and args.build_default is None:
        parser.error("give PLAN files or --build-default DIR")
    try:
        reports = build_default(args.build_default) if args.build_default else []
        reports += [inspect_plan(p, plugins=args.plugin) for p in args.plans]
    except VlrtError as exc:
        print(f"vlrt: error: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
