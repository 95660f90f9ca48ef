"""Build an optimized engine of a bundle for one backend, precision and this machine.

Writes BUNDLE/engines/<key>/ (graphs + engine.json); `vlrt.Runtime.load(BUNDLE, precision=...)`,
`vlrt bench --precision` and friends then use it. The key hashes every setting, the bundle, the
onnx/onnxruntime versions and the CPU (model and ISA flags), so the same command reuses the engine
and anything else builds a new one.

precisions:
  int8   (default on ort-cpu) --int8-mode dynamic: int8 MatMul weights, activations quantized per
         batch, no calibration; --int8-mode static: calibrated Q/DQ graph (needs --calib DIR of
         videos; the form TensorRT consumes; default on ort-cuda)
  fp16   (default on ort-cuda) fp16 graph with LayerNorm, Softmax and the embedding tail in fp32;
         refused on ort-cpu, whose fp16 kernels are mostly casts
  fp32   the bundle's own graphs; nothing to build unless a structural pass applies
         (--fuse-attention, --token-merge); tensorrt: a plan built from them

structural passes (opt-in; run before the precision pass):
  --fuse-attention   ort-cpu, fp32 or dynamic int8: each attention subgraph of the vision and
                     text towers becomes ONNX Runtime's fused Attention op (QAttention under
                     dynamic int8); measured no faster than the plain graph on ViT-B/32 and
                     ViT-B/16 here, hence off by default (docs/build.md)
  --token-merge R    lossy: merge R tokens per vision block (ToMe-style), proportional
                     attention after; `Runtime.load(..., token_merge=R)` and `vlrt bench
                     --token-merge R` select such an engine, nothing picks it by default

--backend tensorrt (needs vlrt[tensorrt] and an NVIDIA GPU) builds TensorRT plans from the same
graphs: fp16 (default) from the fp16 graph, int8 from symmetric Q/DQ (--calib DIR), fp32; the
key then also holds the TensorRT version and the GPU. See docs/tensorrt.md.

Every build is checked against the bundle's fp32 graphs: the min cosine per embedding must be
>= 0.99, or nothing is written (--no-gate keeps it and records the gate as skipped).
"""
from __future__ import annotations

import argparse

from vlrt.cli.common import Stages, add_json, print_json, subcommand
from vlrt.runtime import backends


def register(sub) -> None:
    p = subcommand(sub, "build", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("--backend", choices=backends.names(),
                   help="default: the best ONNX Runtime backend available; tensorrt: docs/tensorrt.md")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="default: the backend's (int8 on ort-cpu, fp16 on ort-cuda and tensorrt)")
    p.add_argument("--int8-mode", choices=["dynamic", "static"],
                   help="default: dynamic on ort-cpu, static on ort-cuda")
    p.add_argument("--calib", metavar="DIR", help="videos to calibrate --int8-mode static on")
    p.add_argument("--no-gate", action="store_true",
                   help="keep an engine below the cosine gate (recorded as skipped)")
    p.add_argument("--force", action="store_true", help="rebuild even if this engine exists")
    p.add_argument("--plugin", action="append", default=[], metavar="LIB",
                   help="TensorRT plugin library to load (repeatable; --backend tensorrt only)")
    p.add_argument("--token-merge", type=int, default=0, metavar="R",
                   help="merge R tokens per vision block (default 0: off; lossy, see above)")
    p.add_argument("--fuse-attention", action="store_true",
                   help="fuse attention into ONNX Runtime's Attention op (ort-cpu; default off)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.build import build_engine, require_build_extra

    require_build_extra()
    result = build_engine(args.bundle, backend=args.backend, precision=args.precision, int8_mode=args.int8_mode,
                          calib=args.calib, overwrite=args.force, gate=not args.no_gate, progress=Stages(),
                          plugins=args.plugin, token_merge=args.token_merge,
                          fuse_attention=args.fuse_attention)
    m = result.manifest
    if args.json:
        print_json({"engine": str(result.engine_dir) if result.engine_dir else None, "key": result.key,
                    "reused": result.reused, "backend": m["backend"], "precision": m["precision"],
                    "options": m.get("options"), "validation": m.get("validation"),
                    "graphs": m.get("graphs"), "seconds": result.seconds})
        return 0
    if result.engine_dir is None:
        print(f"{args.bundle}: {m['note']}")
        return 0
    verb = "reused" if result.reused else "built"
    print(f"{result.engine_dir}: {verb} {m['precision']} engine for {m['backend']} (key {result.key})")
    for graph in m["graphs"].values():
        p = graph["pass"]
        steps = [*graph.get("passes", []), p]
        changed = "; ".join(f"{q['name']}: " + ", ".join(f"{k} {v}" for k, v in q["changed"].items()) for q in steps)
        print(f"  {graph['file']}  {graph['bytes'] / 1e6:.1f} MB  {changed}; kept fp32: {p['kept_fp32']} nodes")
    v = m["validation"]
    print(f"  vs fp32: min cos {v['min_cosine']:.6f} (gate {v['threshold']}: {v['gate']})  "
          + "  ".join(f"{k} {o['min_cosine']:.6f}" for k, o in v["per_output"].items()))
    if "note" in v:
        print(f"  note: {v['note']}")
    if result.seconds:
        print("time: " + ", ".join(f"{k} {s:.1f}s" for k, s in result.seconds.items()))
    return 0
