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
  bf16   openvino only, on CPUs with native bf16 (avx512_bf16 or amx_bf16; refused elsewhere):
         the bundle's graphs, run by OpenVINO with inference precision bf16
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

--backend openvino (needs vlrt[openvino]) runs on the CPU with OpenVINO: int8 (default) is
OpenVINO IR quantized by NNCF on --calib DIR videos (static only), computing what it leaves
unquantized in fp32, or in bf16 with --int8-fallback bf16 (CPUs with native bf16), bf16 as
above, fp32 the bundle's graphs; the key also holds the OpenVINO and NNCF versions. See
docs/build.md.

Every build is checked against the bundle's fp32 graphs: the min cosine per embedding must be
>= 0.99, or nothing is written (--no-gate keeps it and records the gate as skipped).

--auto builds every candidate this machine's CPU backends offer (fp32, int8 dynamic and, with
--calib, static, with and without attention fusion; OpenVINO's when vlrt[openvino] is installed,
int8 with the bf16 fallback included;
token merging only with --token-merge R), times each here through the runtime on the same frames
(interleaved rounds), refuses those below the cosine gate or, with --gallery, more than 0.5 point
of Recall@1 below fp32, and records the fastest as this machine's default in
BUNDLE/engines/auto.json, with every candidate's figures: `Runtime.load(BUNDLE)`, `vlrt embed`
and `vlrt search` then use it when no backend, precision or engine is named.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vlrt.cli.common import Stages, add_json, positive_int, print_json, subcommand
from vlrt.errors import VlrtError
from vlrt.runtime import backends


def register(sub) -> None:
    p = subcommand(sub, "build", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("--backend", choices=backends.names(),
                   help="default: the best ONNX Runtime backend available; tensorrt: docs/tensorrt.md")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="default: the backend's (int8 on ort-cpu and openvino, fp16 on ort-cuda and tensorrt)")
    p.add_argument("--int8-mode", choices=["dynamic", "static"],
                   help="default: dynamic on ort-cpu, static on ort-cuda and openvino")
    p.add_argument("--calib", metavar="DIR", help="videos to calibrate --int8-mode static on")
    p.add_argument("--int8-fallback", choices=["fp32", "bf16"],
                   help="precision of the ops an int8 engine leaves unquantized (default fp32; bf16: openvino, "
                        "on CPUs with native bf16)")
    p.add_argument("--no-gate", action="store_true",
                   help="keep an engine below the cosine gate (recorded as skipped)")
    p.add_argument("--force", action="store_true", help="rebuild even if this engine exists")
    p.add_argument("--plugin", action="append", default=[], metavar="LIB",
                   help="TensorRT plugin library to load (repeatable; --backend tensorrt only)")
    p.add_argument("--token-merge", type=int, default=0, metavar="R",
                   help="merge R tokens per vision block (default 0: off; lossy, see above)")
    p.add_argument("--fuse-attention", action="store_true",
                   help="fuse attention into ONNX Runtime's Attention op (ort-cpu; default off)")
    auto = p.add_argument_group("--auto")
    auto.add_argument("--auto", action="store_true",
                      help="build and time every candidate here; keep the fastest that passes (see above)")
    auto.add_argument("--gallery", metavar="TSV",
                      help="labelled videos for the Recall@1 gate: lines 'file<TAB>caption', files relative to "
                           "the TSV's folder (a first line starting 'file<TAB>' is a header)")
    auto.add_argument("--threads", type=positive_int, help="threads to time with (default: the backend's)")
    auto.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds (default 5)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.build import build_engine, require_build_extra

    require_build_extra()
    if args.auto:
        return run_auto(args)
    if args.gallery or args.threads or args.rounds != 5:
        raise VlrtError("--gallery, --threads and --rounds apply to --auto")
    result = build_engine(args.bundle, backend=args.backend, precision=args.precision, int8_mode=args.int8_mode,
                          calib=args.calib, overwrite=args.force, gate=not args.no_gate, progress=Stages(),
                          plugins=args.plugin, token_merge=args.token_merge,
                          fuse_attention=args.fuse_attention, int8_fallback=args.int8_fallback)
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
        size = graph["bytes"] + graph.get("weights", {}).get("bytes", 0)  # OpenVINO IR: .xml + .bin
        print(f"  {graph['file']}  {size / 1e6:.1f} MB  {changed}; kept fp32: {p['kept_fp32']} nodes")
    v = m["validation"]
    print(f"  vs fp32: min cos {v['min_cosine']:.6f} (gate {v['threshold']}: {v['gate']})  "
          + "  ".join(f"{k} {o['min_cosine']:.6f}" for k, o in v["per_output"].items()))
    if "note" in v:
        print(f"  note: {v['note']}")
    if result.seconds:
        print("time: " + ", ".join(f"{k} {s:.1f}s" for k, s in result.seconds.items()))
    return 0


def run_auto(args: argparse.Namespace) -> int:
    from vlrt.build.auto import build_auto

    for flag in ("precision", "int8_mode", "int8_fallback", "plugin", "fuse_attention", "force", "no_gate"):
        if getattr(args, flag):
            raise VlrtError(f"--{flag.replace('_', '-')} chooses one engine; --auto tries them all")
    gallery = read_gallery(Path(args.gallery)) if args.gallery else None
    entry = build_auto(args.bundle, calib=args.calib, gallery=gallery,
                       token_merge=[args.token_merge] if args.token_merge else [],
                       only=[args.backend] if args.backend else None, threads=args.threads, rounds=args.rounds,
                       progress=Stages(quiet=args.json))
    if args.json:
        print_json(entry)
        return 0
    m = entry["measure"]
    print(f"{args.bundle}: timed on {m['frames']} ({m['source']}), {m['rounds']} interleaved rounds"
          + (f", Recall@1 on {m['gallery_videos']} gallery videos" if m["gallery_videos"] else ""))
    for c in entry["candidates"]:
        figures = [f"{c['frames_per_s']:.1f} frames/s" if "frames_per_s" in c else "",
                   f"min cos {c['timing_min_cosine']:.5f}" if "timing_min_cosine" in c else "",
                   "R@1 t2v {t2v_R@1:.2f} v2t {v2t_R@1:.2f}".format(**c["recall"]) if "recall" in c else ""]
        print(f"  {c['name']:<44} {'  '.join(f for f in figures if f):<52} {c['status']}")
    choice = entry["choice"]
    print(f"chosen: {choice['name']} ({'engine ' + choice['key'] if choice['key'] else 'the bundle graphs'}); "
          "recorded in engines/auto.json as this machine's default")
    return 0


def read_gallery(tsv: Path) -> tuple[list[str], list[str]]:
    """(video files, captions) from a 'file<TAB>caption' file; paths relative to its folder."""
    try:
        lines = tsv.read_text().splitlines()
    except OSError as exc:
        raise VlrtError(f"--gallery {tsv}: {exc.strerror}") from None
    if lines and lines[0].startswith("file\t"):
        lines = lines[1:]
    paths, captions = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            raise VlrtError(f"--gallery {tsv}: line {n} is not 'file<TAB>caption'")
        path = tsv.parent / parts[0]
        if not path.is_file():
            raise VlrtError(f"--gallery {tsv}: line {n}: {path} is not a file")
        paths.append(str(path))
        captions.append(parts[1].strip())
    if not paths:
        raise VlrtError(f"--gallery {tsv}: no videos listed")
    return paths, captions
