"""Retrieval quality of a bundle on vlrt's synthetic test set (the yardstick for optimizations).

Embeds the held-out synthetic test clips (H.264, written once into --cache) with the bundle and
reports text->video and video->text Recall@1/5/10 and median rank. With --reference (another
bundle of the same model, normally its fp32 export) it also reports the top-1 agreement of the
two rankings and the per-video embedding cosine between them: what an optimization costs users.
Meaningful for models trained on vlrt's synthetic videos (the embedded default); speed columns
join this table with `vlrt build`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from vlrt.cli.common import add_json, print_json, subcommand
from vlrt.errors import VlrtError


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlrt" / "synthetic-test"


def register(sub) -> None:
    p = subcommand(sub, "bench", __doc__)
    p.add_argument("bundle", help="bundle directory to measure")
    p.add_argument("--reference", help="bundle whose ranking counts as the reference (e.g. the fp32 export)")
    p.add_argument("--cache", default=str(default_cache()),
                   help="where the test clips are written once (default: %(default)s)")
    p.add_argument("--videos", type=int, help="use only the first N test clips (default: all)")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda"], help="default: the best available")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                   help="measure the engine `vlrt build` made for this precision (default: fp32, the bundle's graphs)")
    p.add_argument("--engine", metavar="KEY", help="measure this built engine (a key under BUNDLE/engines/)")
    add_json(p)
    p.set_defaults(func=run)


def measure(bundle: str, paths: list[str], scenes, backend: str | None, precision: str | None = None,
            engine: str | None = None):
    from vlrt import Runtime
    from vlrt.cli.demo import embed

    rt = Runtime.load(bundle, backend=backend, precision=precision, engine=engine)
    videos = embed(rt, paths, quiet=True)
    return videos, rt.encode_text([s.caption for s in scenes]) @ videos.T


def run(args: argparse.Namespace) -> int:
    from vlrt.cli.demo import write_gallery
    from vlrt.metrics import recall_report, top1_agreement

    paths, scenes = write_gallery(Path(args.cache), args.videos)
    videos, scores = measure(args.bundle, paths, scenes, args.backend, args.precision, args.engine)
    out = {"bundle": args.bundle, "precision": args.precision or "fp32", "engine": args.engine,
           "videos": len(paths), "quality": recall_report(scores)}
    if args.reference:
        ref_videos, ref_scores = measure(args.reference, paths, scenes, args.backend)
        if ref_videos.shape != videos.shape:
            raise VlrtError(f"{args.reference}: {ref_videos.shape[1]}-d embeddings, {args.bundle}: "
                            f"{videos.shape[1]}-d; a reference must be the same model")
        out["reference"] = args.reference
        out["top1_agreement_t2v"] = top1_agreement(scores, ref_scores)
        out["top1_agreement_v2t"] = top1_agreement(scores.T, ref_scores.T)
        out["min_video_cosine"] = float((videos * ref_videos).sum(1).min())
    if args.json:
        print_json(out)
        return 0
    q = out["quality"]
    print(f"{args.bundle}: {len(paths)} synthetic test clips")
    for d in ("t2v", "v2t"):
        print(f"  {d}: R@1 {q[f'{d}_R@1']:.2f}  R@5 {q[f'{d}_R@5']:.2f}  R@10 {q[f'{d}_R@10']:.2f}  "
              f"median rank {q[f'{d}_median_rank']:g}")
    if args.reference:
        print(f"  vs {args.reference}: top-1 agreement t2v {out['top1_agreement_t2v']:.2f}%, "
              f"v2t {out['top1_agreement_v2t']:.2f}%, min video cosine {out['min_video_cosine']:.6f}")
    return 0
