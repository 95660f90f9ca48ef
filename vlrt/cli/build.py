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
  fp32   the bundle's own graphs; nothing to build

Every build is checked against the bundle's fp32 graphs: the min cosine per embedding must be
>= 0.99, or nothing is written (--no-gate keeps it and records the gate as skipped).
"""
from __future__ import annotations

import argparse

from vlrt.cli.common import Stages, add_json, print_json, subcommand


def register(sub) -> None:
    p = subcommand(sub, "build", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda"], help="default: the best available")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="default: int8 on ort-cpu, fp16 on ort-cuda")
    p.add_argument("--int8-mode", choices=["dynamic", "static"],
                   help="default: dynamic on ort-cpu, static on ort-cuda")
    p.add_argument("--calib", metavar="DIR", help="videos to calibrate --int8-mode static on")
    p.add_argument("--no-gate", action="store_true",
                   help="keep an engine below the cosine gate (recorded as skipped)")
    p.add_argument("--force", action="store_true", help="rebuild even if this engine exists")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.export.build import build_engine

    result = build_engine(args.bundle, backend=args.backend, precision=args.precision, int8_mode=args.int8_mode,
                          calib=args.calib, overwrite=args.force, gate=not args.no_gate, progress=Stages())
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
    for name, graph in m["graphs"].items():
        p = graph["pass"]
        changed = ", ".join(f"{k} {v}" for k, v in p["changed"].items())
        print(f"  {name}.onnx  {graph['bytes'] / 1e6:.1f} MB  {p['name']}: {changed}; "
              f"kept fp32: {p['kept_fp32']} nodes")
    v = m["validation"]
    print(f"  vs fp32: min cos {v['min_cosine']:.6f} (gate {v['threshold']}: {v['gate']})  "
          + "  ".join(f"{k} {o['min_cosine']:.6f}" for k, o in v["per_output"].items()))
    if "note" in v:
        print(f"  note: {v['note']}")
    if result.seconds:
        print("time: " + ", ".join(f"{k} {s:.1f}s" for k, s in result.seconds.items()))
    return 0
