"""Embedding throughput of `vlrt embed` (Index.add) against the Ray Data pipeline (vlrt embed --ray)
with 1 and 2 encoder actors, on a local Ray cluster sized to this machine, with the embedded
default model and generated H.264 videos. Per-stage busy time comes from the timing the decode
tasks and encoder actors record in their Parquet parts.

    python benchmarks/ray_embed.py [--videos 96] [--out benchmarks/results/ray-embed-cpu.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, contention, contention_line, load_snapshot, machine, stages, write_result


def make_videos(folder: Path, n: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from video_assets import write_video

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"v{i:03d}.mp4"
        if not path.is_file():
            write_video(path, width=320, height=240, frames=96 + 8 * (i % 6), fps=24, gop=24, start_pts=i)
    return folder


def _mark(blocks: list, part: str, rows: int) -> None:
    blocks.append((time.perf_counter(), rows))


def run(args) -> dict:
    import ray

    from vlrt.assets import unpack_default_bundle
    from vlrt.runtime.index import Index
    from vlrt.runtime.ray_embed import embed_on_ray

    say = stages()
    work = Path(args.workdir)
    bundle = unpack_default_bundle(work / "bundle")
    videos = make_videos(work / f"videos-{args.videos}", args.videos)
    say(f"{args.videos} videos in {videos}")
    before = load_snapshot()
    runs = []
    out = Path(tempfile.mkdtemp(prefix="vlrt-ray-bench-"))
    try:
        say("local: vlrt embed (Index.add)")
        with Index.create(out / "local", bundle, backend="ort-cpu") as index:
            s = index.add([str(videos)], batch_size=8, workers=2)
        runs.append({"pipeline": "vlrt embed (local)", "actors": None, "videos": s.embedded,
                     "seconds": round(s.seconds, 2), "videos_per_s": round(s.embedded / s.seconds, 2)})
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        start_s = time.perf_counter() - t0
        say(f"local Ray cluster started in {start_s:.1f}s; warm-up run (8 videos, not measured)")
        with Index.create(out / "warm-up", bundle, backend="ort-cpu") as index:
            embed_on_ray(index, [str(videos / f"v{i:03d}.mp4") for i in range(8)], actors=2, batch_size=8)
        for actors in (1, 2):
            say(f"ray: {actors} encoder actor(s)")
            blocks: list[tuple[float, int]] = []
            mark = functools.partial(_mark, blocks)
            with Index.create(out / f"ray{actors}", bundle, backend="ort-cpu") as index:
                t_call = time.perf_counter()
                s = embed_on_ray(index, [str(videos)], actors=actors, batch_size=8, on_block=mark)
            after_first = sum(rows for _, rows in blocks[1:])
            steady = after_first / (blocks[-1][0] - blocks[0][0]) if len(blocks) > 1 else None
            st = s.stages
            cpus = os.cpu_count()
            runs.append({"pipeline": "vlrt embed --ray", "actors": actors, "videos": s.embedded,
                         "seconds": round(s.seconds, 2), "videos_per_s": round(s.embedded / s.seconds, 2),
                         "first_block_s": round(blocks[0][0] - t_call, 2),
                         "videos_per_s_after_first_block": round(steady, 2) if steady else None,
                         "decode_busy_s": st["decode_busy_s"], "encode_busy_s": st["encode_busy_s"],
                         "decode_share_of_cpu_time_pct": round(100 * st["decode_busy_s"] / (s.seconds * cpus), 1),
                         "encode_share_of_cpu_time_pct": round(100 * st["encode_busy_s"] / (s.seconds * cpus), 1),
                         "decode_ms_per_video": round(1000 * st["decode_busy_s"] / max(1, st["decode_files"]), 1),
                         "encode_ms_per_video": round(1000 * st["encode_busy_s"] / max(1, s.embedded), 1),
                         "merge_s": st["merge_s"], "merge_ms_per_video": round(1000 * st["merge_s"] / max(1, s.embedded), 2),
                         "decode_processes": st["decode_processes"], "encode_processes": st["encode_processes"]})
        ray.shutdown()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"machine": machine(), "model": "vlrt default embedded bundle (8 frames, 64 px, ort-cpu fp32)",
            "videos": args.videos, "video": "H.264 320x240, 96-136 frames at 24 fps (tests/video_assets.py)",
            "ray_cluster_start_s": round(start_s, 2), "runs": runs, "contention": contention(before, load_snapshot())}


def markdown(r: dict) -> str:
    lines = ["# vlrt embed: local pipeline vs Ray Data (CPU)", "",
             f"{r['machine']}. {r['videos']} videos ({r['video']}), {r['model']}. Seconds are the embedding "
             "call's own (planning, pipeline, merge, FAISS build); the local Ray cluster's start "
             f"({r['ray_cluster_start_s']} s) is not included, and a warm-up run (8 videos, 2 actors) came first, so both "
             "measured Ray runs found the worker processes started.", "",
             "| pipeline | encoder actors | videos/s | seconds | first block s | videos/s after first block "
             "| decode busy s | encode busy s | decode ms/video | encode ms/video |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        lines.append(f"| {run['pipeline']} | {run['actors'] or '-'} | {run['videos_per_s']} | {run['seconds']} | "
                     f"{run.get('first_block_s', '-')} | {run.get('videos_per_s_after_first_block', '-')} | "
                     f"{run.get('decode_busy_s', '-')} | {run.get('encode_busy_s', '-')} | "
                     f"{run.get('decode_ms_per_video', '-')} | {run.get('encode_ms_per_video', '-')} |")
    ray1 = next(run for run in r["runs"] if run["actors"] == 1)
    ray2 = next(run for run in r["runs"] if run["actors"] == 2)
    local = r["runs"][0]
    per_video = 1000 / ray1["videos_per_s_after_first_block"]
    lines += ["", "## Where the time goes here (measured)", "",
              f"Per video, decoding costs {ray1['decode_ms_per_video']} ms of a decode task's time and encoding "
              f"{ray1['encode_ms_per_video']} ms of an actor's (this model is 8 frames of 64 px: its encoder is "
              f"cheap). After the first block, the one-actor run delivered a video every {per_video:.0f} ms, more than the "
              f"{ray1['decode_ms_per_video'] + ray1['encode_ms_per_video']:.0f} ms of work each: the rest is Ray's per-"
              "task cost (one decode task per video: scheduling, moving the decoded frames through the object "
              "store) and the Parquet part each batch writes. The driver spent "
              f"{ray1['merge_ms_per_video']} ms per video merging parts into the index. On this 2-core machine the "
              f"local pipeline ({local['videos_per_s']} videos/s, no cluster, decoding threads beside the encoder in "
              "one process) is faster; Ray also needs its cluster start and its actors' model load "
              "(the first block's seconds). " + second_actor(ray1, ray2), "",
              "## A 100-node run (reasoning, not measured)", "",
              "Nothing here ran on more than this one machine. What follows is an estimate from the figures "
              "above and from how the pipeline is built.", "",
              "- Decoding scales with the cluster's CPUs: decode tasks are independent and Ray Data schedules "
              "them on every node. With a full-size model on GPU nodes the encoder is no longer cheap, and the "
              "ratio of decode CPUs to GPUs sets the rate: the per-video decode and encode times measured here "
              "are the inputs to that sizing, measured per node.",
              "- The object store carries every decoded clip, float32 (T, 3, S, S): 8x3x64x64 = 0.4 MB here, "
              "12x3x224x224 = 7.2 MB for a ViT-B model. At 1,000 videos/s that is about 7 GB/s between nodes "
              "when decode tasks and encoder actors are on different nodes; shipping uint8 frames and "
              "normalising in the actor would cut it four-fold. Spilling starts when encoders fall behind.",
              "- The driver becomes the bottleneck: it plans every file (one stat each, on the shared "
              "filesystem), reads every part and commits every shard of one index, and builds the FAISS index "
              f"at the end. At the {ray1['merge_ms_per_video']} ms per video measured here one driver merges "
              f"about {1000 / max(ray1['merge_ms_per_video'], 1e-3):,.0f} videos/s, before the shared "
              "filesystem's latency, which this machine did not have. Past that, the index would have to be "
              "written as several indexes (by path range) and searched together, which vlrt does not do.",
              "- The parts directory and the index must be on a filesystem every node mounts; per-part renames "
              "and many small files are what such filesystems handle worst.",
              "", "First block s: from the call to the first merged part (planning, pipeline start, encoder "
              "actors loading the model); videos/s after first block: merged rows per second from the first "
              "merged part to the last.", "", "Busy seconds are summed over the decode tasks and encoder actors from their own timers "
              "(recorded in the Parquet parts); the local pipeline does not record them.", "",
              contention_line(r["contention"]) + " Ray's worker processes (decode tasks, encoder actors) count as "
              "outside this process.", ""]
    return "\n".join(lines)


def second_actor(ray1: dict, ray2: dict) -> str:
    """One sentence on what the second encoder actor changed, from the two runs' figures."""
    a, b = ray1["videos_per_s_after_first_block"], ray2["videos_per_s_after_first_block"]
    used = ("both actors encoded batches" if ray2["encode_processes"] == 2
            else "only one of the two actors was handed batches")
    if ray2["encode_processes"] < 2:
        return (f"With two encoder actors the rate after the first block was {b} videos/s against {a} with one, "
                f"but {used}: the difference is not a second encoder at work (run-to-run variation was not "
                "measured). Encoding is a small share of the work here, so one actor keeps up.")
    if b < 1.1 * a:
        return (f"A second encoder actor does not raise the rate after the first block ({a} -> {b} videos/s; "
                f"{used}): encoding is a small share of the work, and each actor's CPU share is taken from "
                "the decode tasks.")
    return f"A second encoder actor raises the rate after the first block from {a} to {b} videos/s ({used})."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--workdir", default="/tmp/vlrt-bench-ray")
    parser.add_argument("--out", default=str(RESULTS / "ray-embed-cpu.json"))
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the existing JSON, run nothing")
    args = parser.parse_args()
    result = json.loads(Path(args.out).read_text()) if args.render else run(args)
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
