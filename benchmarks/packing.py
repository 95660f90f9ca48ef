"""Packed frames: videos/s of the vision tower on short and full videos, packed and not.

ViT-B/32 geometry (random weights: speed only), 12 frame slots per video, batches of 8 videos:
  1-frame videos    one real frame and 11 padded slots per video
  12-frame videos   every slot real
each through the bundle's fp32 graphs on ort-cpu, `Runtime.load(bundle, pack=True)` (the tower on real frames only, packed into one
tower batch) and `pack=False` (every slot through the tower), interleaved round by round. Before
timing, packed and unpacked embeddings are compared (min cosine over videos and frames).

    python benchmarks/packing.py --workdir /tmp/vlrt-packing

Writes benchmarks/results/packing-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, stages, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent))


def batch(frames: int, *, videos: int, slots: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((videos, slots, 3, size, size), np.float32)
    pixels[:, :frames] = rng.standard_normal((videos, frames, 3, size, size))
    mask = np.zeros((videos, slots), np.float32)
    mask[:, :frames] = 1
    return pixels, mask


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    keep = np.linalg.norm(b, axis=-1) > 0
    a, b = a[keep], b[keep]
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vlrt-packing"))
    ap.add_argument("--config", default="ViT-B-32")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "packing-cpu.json")
    args = ap.parse_args()
    progress = stages()
    from e2e import make_bundle

    from vlrt import Runtime

    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_CACHE_HOME", str(args.workdir / "cache"))
    bundle = args.workdir / "bundle"
    if not (bundle / "vlrt.json").is_file():
        progress(f"exporting a random-weight {args.config}")
        make_bundle(args.workdir, args.config)
    load = os.getloadavg()
    runtimes = {"packed": Runtime.load(bundle, precision="fp32", threads=args.threads),
                "unpacked": Runtime.load(bundle, precision="fp32", threads=args.threads, pack=False)}
    assert runtimes["packed"].packed, runtimes["packed"].pack_note
    slots, size = runtimes["packed"].bundle.max_frames, runtimes["packed"].bundle.image_size
    batches = {f: batch(f, videos=args.videos, slots=slots, size=size, seed=f) for f in (1, slots)}
    agreement = {}
    for frames, (pixels, mask) in batches.items():
        outs = {name: rt.encode_frames(pixels, mask, batch_size=args.videos, return_frames=True)
                for name, rt in runtimes.items()}
        agreement[frames] = {"video": min_cosine(outs["packed"][0], outs["unpacked"][0]),
                             "frames": min_cosine(outs["packed"][1], outs["unpacked"][1])}
    times: dict[tuple[str, int], list[float]] = {(n, f): [] for n in runtimes for f in batches}
    for r in range(args.rounds):
        progress(f"round {r + 1}/{args.rounds}")
        for (name, frames), samples in times.items():
            pixels, mask = batches[frames]
            t0 = time.perf_counter()
            runtimes[name].encode_frames(pixels, mask, batch_size=args.videos)
            samples.append(time.perf_counter() - t0)
    rows = []
    for (name, frames), samples in times.items():
        seconds = statistics.median(samples)
        rows.append({"runtime": name, "frames_per_video": frames, "seconds_per_batch": seconds,
                     "videos_per_s": args.videos / seconds})
    rate = {(r["runtime"], r["frames_per_video"]): r["videos_per_s"] for r in rows}
    ratio = rate[("packed", 1)] / rate[("packed", slots)]
    result = {"machine": machine(), "config": args.config, "slots": slots, "videos_per_batch": args.videos,
              "threads": args.threads, "rounds": args.rounds, "loadavg_start": load, "loadavg_end": os.getloadavg(),
              "rows": rows, "agreement_min_cosine": agreement, "packed_1_vs_12": ratio}
    lines = [f"# Packed frames ({args.config}, {slots} slots, batches of {args.videos} videos, {args.threads} threads)",
             "", f"Machine: {machine()}. Load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
             "", "| runtime | real frames per video | s per batch | videos/s |", "|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['frames_per_video']} | {r['seconds_per_batch']:.3f} | {r['videos_per_s']:.1f} |"
              for r in rows]
    lines += ["", f"Packed: 1-frame videos encode {ratio:.1f}× as many videos/s as {slots}-frame videos "
              f"(unpacked: {rate[('unpacked', 1)] / rate[('unpacked', slots)]:.2f}×).",
              "Packed vs unpacked embeddings, min cosine: " + "; ".join(
                  f"{f}-frame videos: video {a['video']:.7f}, frames {a['frames']:.7f}" for f, a in agreement.items()),
              "", "`python benchmarks/packing.py` (median of interleaved rounds; random weights).", ""]
    write_result(args.out, result, "\n".join(lines))


if __name__ == "__main__":
    main()
