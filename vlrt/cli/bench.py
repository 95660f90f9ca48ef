"""Retrieval quality of a bundle on vlrt's synthetic test set (the yardstick for optimizations);
with --speed, the speed of every build configuration side by side.

Embeds the held-out synthetic test clips (H.264, written once into --cache) with the bundle and
reports text->video and video->text Recall@1/5/10 and median rank, R@1 on the captions with
motion, and the direction and speed probes (own caption vs the opposite direction / the other
speed, chance 50%). With --reference (another
bundle of the same model, normally its fp32 export) it also reports the top-1 agreement of the
two rankings and the per-video embedding cosine between them: what an optimization costs users.
Meaningful for models trained on vlrt's synthetic videos (the embedded default).

--speed builds (or reuses) the engines of each configuration and measures, in one run: encoder
frames/s, x plain ORT export, x eager PyTorch, GFLOP/s vs this machine's matmul ceiling, min
cosine vs the plain export, end-to-end videos/s on the test clips (or --videos-dir), and, with
--quality, Recall@1/5 and top-1 agreement per configuration. Configurations: eager PyTorch fp32,
plain ORT export, fp32 + fused attention, int8 dynamic, int8 dynamic + fused attention (the
default engine), and each --token-merge R. -o writes JSON, markdown (.md) and a plot (.png).

--serve URL puts a bounded load on a running `vlrt serve` instead (no bundle needed): text
queries (POST /v1/search) at 1, 8 and 32 concurrent clients (p50/p95/p99), then, with the
synthetic test clips (or --videos-dir), --e2e-videos uploads from 16 concurrent clients
(videos/s) and the batch sizes the server formed. Every loop is bounded in requests and time.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from vlrt.cli.common import add_backend, add_json, positive_int, print_json, subcommand
from vlrt.errors import VlrtError


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlrt" / "synthetic-test"


def register(sub) -> None:
    p = subcommand(sub, "bench", __doc__)
    p.add_argument("bundle", nargs="?", help="bundle directory to measure (not with --serve)")
    p.add_argument("--reference", help="bundle whose ranking counts as the reference (e.g. the fp32 export)")
    p.add_argument("--cache", default=str(default_cache()),
                   help="where the test clips are written once (default: %(default)s)")
    p.add_argument("--videos", type=positive_int, help="use only the first N test clips (default: all)")
    add_backend(p)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"],
                   help="measure the engine `vlrt build` made for this precision (default: fp32, the bundle's graphs)")
    p.add_argument("--engine", metavar="KEY", help="measure this built engine (a key under BUNDLE/engines/)")
    speed = p.add_argument_group("speed (--speed)")
    speed.add_argument("--speed", action="store_true", help="measure every build configuration's speed")
    speed.add_argument("--token-merge", type=int, action="append", default=[], metavar="R",
                       help="also measure int8 + token merging R per block (repeatable)")
    speed.add_argument("--skip-similar", type=float, action="append", default=[], metavar="LEVELS",
                       help="also measure int8 + frame skipping at this threshold (end-to-end and quality; repeatable)")
    speed.add_argument("--quality", action="store_true", help="add retrieval columns (synthetic test clips)")
    speed.add_argument("--checkpoint", help="PyTorch checkpoint for the eager baseline (default: the bundle's source)")
    speed.add_argument("--videos-dir", help="videos for the end-to-end column (default: the synthetic test clips)")
    speed.add_argument("--e2e-videos", type=int, default=32, help="videos for the end-to-end column (default 32)")
    speed.add_argument("--batch", type=int, default=2, help="videos per encoder batch (default 2)")
    speed.add_argument("--frames", type=int, help="frames per video (default: the bundle's max frames)")
    speed.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: all cores)")
    speed.add_argument("--repeats", type=int, default=7)
    speed.add_argument("--warmup", type=int, default=2)
    speed.add_argument("-o", "--out", help="write OUT.json, OUT.md and OUT.png")
    serve = p.add_argument_group("a running server (--serve)")
    serve.add_argument("--serve", metavar="URL", help="load a running `vlrt serve` at URL")
    serve.add_argument("--api-key", help="the server's API key (default: VLRT_API_KEY)")
    serve.add_argument("--requests", type=positive_int, default=200, help="text queries per concurrency (default 200)")
    serve.add_argument("--seconds", type=float, default=60.0, help="time limit per step (default 60)")
    add_json(p)
    p.set_defaults(func=run)


def measure(bundle: str, paths: list[str], scenes, backend: str | None, precision: str | None = None,
            engine: str | None = None):
    """(videos (N, D), scores (captions, videos), the demo's quality figures incl. the probes)."""
    from vlrt import Runtime
    from vlrt.bench.quality import embed, quality_of

    rt = Runtime.load(bundle, backend=backend, precision=precision, engine=engine)
    videos = embed(rt, paths)
    quality, scores = quality_of(rt, videos, scenes)
    return videos, scores, quality, rt


def run(args: argparse.Namespace) -> int:
    from vlrt.bench.metrics import top1_agreement
    from vlrt.bench.quality import write_gallery
    from vlrt.cli.common import Stages

    if args.serve:
        return run_serve(args)
    if args.bundle is None:
        raise VlrtError("vlrt bench needs a bundle directory (or --serve URL)")
    if args.speed:
        return run_speed(args)
    stages = Stages(quiet=args.json)
    stages(f"writing the synthetic test clips to {args.cache}")
    paths, scenes = write_gallery(Path(args.cache), args.videos)
    stages(f"embedding {len(paths)} clips with {args.bundle}")
    videos, scores, quality, rt = measure(args.bundle, paths, scenes, args.backend, args.precision, args.engine)
    out = {"bundle": args.bundle, "precision": rt.precision, "engine": rt.engine_info,
           "videos": len(paths), "quality": quality}
    if args.reference:
        stages(f"embedding {len(paths)} clips with the reference {args.reference}")
        ref_videos, ref_scores, _, _ = measure(args.reference, paths, scenes, args.backend)
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
    print(f"{args.bundle}: {len(paths)} synthetic test clips; encoded by {rt.engine_line()}")
    for d in ("t2v", "v2t"):
        print(f"  {d}: R@1 {q[f'{d}_R@1']:.2f}  R@5 {q[f'{d}_R@5']:.2f}  R@10 {q[f'{d}_R@10']:.2f}  "
              f"median rank {q[f'{d}_median_rank']:g}")
    print(f"  t2v R@1 on captions with motion {q['motion_t2v_R@1']:.2f}; probes (chance 50): direction "
          f"{q.get('direction_probe_acc', float('nan')):.2f}, speed {q.get('speed_probe_acc', float('nan')):.2f}")
    if args.reference:
        print(f"  vs {args.reference}: top-1 agreement t2v {out['top1_agreement_t2v']:.2f}%, "
              f"v2t {out['top1_agreement_v2t']:.2f}%, min video cosine {out['min_video_cosine']:.6f}")
    return 0


def run_speed(args: argparse.Namespace) -> int:
    import json

    from vlrt.bench.quality import write_gallery
    from vlrt.bench.speed import default_configs, markdown, plot
    from vlrt.bench.speed import run_speed as measure_speed
    from vlrt.cli.common import Stages
    from vlrt.runtime.bundle import Bundle

    stages = Stages(quiet=args.json)
    stages(f"opening {args.bundle}")
    bundle = Bundle.open(args.bundle)
    if args.videos_dir:
        folder = Path(args.videos_dir)
        videos = sorted(str(p) for p in folder.iterdir() if p.is_file())[: args.e2e_videos]
        if not videos:
            raise VlrtError(f"--videos-dir {folder}: no files")
    else:
        stages(f"writing the synthetic test clips to {args.cache}")
        videos = write_gallery(Path(args.cache), args.e2e_videos)[0]
    quality = None
    if args.quality:
        paths, scenes = write_gallery(Path(args.cache), args.videos)
        quality = (paths, [s.caption for s in scenes])
    result = measure_speed(args.bundle, configs=default_configs(args.token_merge, args.skip_similar), threads=args.threads,
                           batch=args.batch, frames=args.frames or bundle.max_frames, warmup=args.warmup,
                           repeats=args.repeats, videos=videos, checkpoint=args.checkpoint, quality=quality,
                           progress=stages)
    table = markdown(result, f"Speed of {args.bundle}")
    if args.out:
        out = Path(args.out).with_suffix("")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(table)
        plot([(str(args.bundle), result)], out.with_suffix(".png"))
    if args.json:
        print_json(result)
    else:
        print(table)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from vlrt.bench import serve as load
    from vlrt.bench.quality import write_gallery
    from vlrt.bench.synth import gallery
    from vlrt.cli.common import Stages

    stages = Stages(quiet=args.json)
    key = args.api_key or os.environ.get("VLRT_API_KEY") or None
    try:
        load.metrics(args.serve, key)
    except (OSError, RuntimeError) as exc:
        raise VlrtError(f"--serve {args.serve}: no vlrt server answers there ({exc})") from None
    queries = [s.caption for s, _ in list(gallery("test"))[:64]]
    out: dict = {"url": args.serve, "text": []}
    for clients in (1, 8, 32):
        stages(f"text queries from {clients} clients ...")
        out["text"].append(load.text_latency(args.serve, queries, clients=clients, requests=args.requests,
                                             seconds=args.seconds, api_key=key))
    if args.videos_dir:
        videos = sorted(str(p) for p in Path(args.videos_dir).iterdir() if p.is_file())
    else:
        stages(f"writing the synthetic test clips to {args.cache}")
        videos = write_gallery(Path(args.cache), 16)[0]
    if not videos:
        raise VlrtError(f"--videos-dir {args.videos_dir}: no files")
    stages("video uploads from 16 clients ...")
    before = load.metrics(args.serve, key)
    out["video"] = load.video_throughput(args.serve, videos, clients=16, requests=args.e2e_videos,
                                         seconds=args.seconds, api_key=key)
    out["video"]["batches"] = load.diff_batches(before, load.metrics(args.serve, key), "video")
    if args.json:
        print_json(out)
        return 0
    print(f"{args.serve}: text queries (POST /v1/search)")
    for t in out["text"]:
        print(f"  {t['clients']:2d} clients: {t['per_s']} queries/s, p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms, "
              f"p99 {t['p99_ms']} ms; statuses {t['statuses']}")
    v = out["video"]
    print(f"video uploads, 16 clients: {v['videos_per_s']} videos/s ({v['ok']} ok; statuses {v['statuses']}); "
          f"{v['batches']['batches']} batches, mean size {v['batches']['mean']}")
    return 0
