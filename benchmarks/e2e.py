"""End-to-end video embedding throughput on this machine, side by side in one run.

Configurations (same videos, same model, same sampled frames):
  naive        decode every frame with PyAV, PIL preprocessing, eager PyTorch fp32, no overlap
  decode-only  vlrt's loader (keyframe-aware seeks, sampled frames only, exact preprocessing)
  encode-only  vlrt's ONNX Runtime encoder on the already-preprocessed frames
  vlrt         the full pipeline: loader threads overlapping ONNX Runtime encoding
Each is checked for correctness before timing (embeddings of vlrt vs naive: cosine >= 0.999).

    python benchmarks/e2e.py --videos 16 --out benchmarks/results/e2e-cpu.json

Writes JSON and a markdown table beside it. Random weights: speed only, not quality.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in test-video generator


def make_videos(folder: Path, n: int, *, seconds: int, width: int, height: int, fps: int) -> list[str]:
    from video_assets import write_video

    first = folder / "clip000.mp4"
    write_video(first, codec="libx264", width=width, height=height, frames=seconds * fps, fps=fps, gop=2 * fps)
    paths = [first]
    for i in range(1, n):  # copies under other names: same decode cost, no encode time spent here
        paths.append(folder / f"clip{i:03d}.mp4")
        shutil.copyfile(first, paths[-1])
    return [str(p) for p in paths]


def make_bundle(folder: Path, config: str) -> Path:
    from vlrt.export import export_checkpoint
    from vlrt.models import HeadConfig, VideoTextModel, get_config, random_init
    from vlrt.models.checkpoint import save_checkpoint

    cfg = get_config(config).replace(head=HeadConfig(type="seqTransf", layers=4, heads=8, max_positions=77))
    ckpt = save_checkpoint(random_init(VideoTextModel(cfg), seed=0), folder / "model.pt")
    return export_checkpoint(ckpt, folder / "bundle").bundle


def naive_embed(paths, model, manifest):
    """The baseline: every frame decoded and converted, PIL on the sampled ones, eager PyTorch."""
    import av
    import torch
    from PIL import Image

    from vlrt.runtime.pipeline import sample_indices
    from vlrt.runtime.video import probe

    pre = manifest["preprocessing"]
    size, mean, std = pre["size"], np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
    out = []
    for path in paths:
        with av.open(path) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        wanted = sample_indices(probe(path), manifest["sampling"], manifest["max_frames"])
        pixels = np.zeros((1, manifest["max_frames"], 3, size, size), np.float32)
        for t, i in enumerate(wanted):
            img = Image.fromarray(frames[i])
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, int(w * scale)), max(size, int(h * scale))), Image.BICUBIC)
            left, top = int(round((img.width - size) / 2.0)), int(round((img.height - size) / 2.0))
            crop = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255.0
            pixels[0, t] = ((crop - mean) / std).transpose(2, 0, 1)
        mask = np.zeros((1, manifest["max_frames"]), np.float32)
        mask[0, :len(wanted)] = 1
        with torch.no_grad():
            out.append(model.encode_video(torch.from_numpy(pixels), torch.from_numpy(mask))[0].numpy()[0])
    return np.stack(out)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def run(args) -> dict:
    import av
    import onnxruntime
    import torch

    from vlrt import Runtime
    from vlrt.export import load_checkpoint
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vlrt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = make_videos(work, args.videos, seconds=args.seconds, width=args.width, height=args.height, fps=args.fps)
    bundle = make_bundle(work, args.config)
    rt = Runtime.load(bundle, backend="ort-cpu")
    manifest = rt.bundle.manifest
    loader = ClipLoader(manifest)
    reference = load_checkpoint(work / "model.pt").model

    def decode_only():
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(args.workers) as pool:
            return list(pool.map(loader, paths))

    clips, t_decode = timed(decode_only, args.repeats)
    pixels = np.stack([c.pixels for c in clips])
    mask = np.zeros(pixels.shape[:2], np.float32)
    for b, c in enumerate(clips):
        mask[b, :c.n_frames] = 1
    sampled_frames = int(mask.sum())
    _, t_encode = timed(lambda: rt.encode_frames(pixels, mask, batch_size=args.batch_size), args.repeats)

    def full():
        enc = lambda px, m: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
        return np.stack([r.embedding for r in encode_stream(paths, loader, enc, batch_size=args.batch_size,
                                                            workers=args.workers)])

    vlrt_emb, t_full = timed(full, args.repeats)
    naive_emb, t_naive = timed(lambda: naive_embed(paths, reference, manifest), 1)
    cos = float(((vlrt_emb * naive_emb).sum(1)).min())
    if cos < 0.999:
        raise SystemExit(f"vlrt and naive embeddings disagree (min cos {cos:.5f}); not timing a wrong pipeline")

    def row(name, times):
        med = statistics.median(times)
        return {"name": name, "median_s": med, "min_s": min(times), "max_s": max(times), "runs": len(times),
                "videos_per_s": len(paths) / med, "sampled_frames_per_s": sampled_frames / med}

    rows = [row("naive (decode all + PIL + eager PyTorch)", t_naive), row("decode-only (vlrt loader)", t_decode),
            row("encode-only (ONNX Runtime)", t_encode), row("vlrt end-to-end", t_full)]
    base = rows[0]["videos_per_s"]
    for r in rows:
        r["vs_naive"] = r["videos_per_s"] / base
    return {
        "benchmark": "e2e", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "av": av.__version__,
                     "ffmpeg": ".".join(map(str, av.library_versions["libavcodec"])) + " (libavcodec)",
                     "python": platform.python_version()},
        "setup": {"videos": len(paths), "seconds": args.seconds, "size": f"{args.width}x{args.height}", "fps": args.fps,
                  "codec": "h264", "gop": 2 * args.fps, "model": f"{args.config} + seqTransf (random weights)",
                  "max_frames": manifest["max_frames"], "sampling": manifest["sampling"], "sampled_frames": sampled_frames,
                  "workers": args.workers, "batch_size": args.batch_size},
        "min_cosine_vlrt_vs_naive": cos,
        "rows": rows,
        "slower_of_decode_and_encode_videos_per_s": min(rows[1]["videos_per_s"], rows[2]["videos_per_s"]),
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    lines = [f"# End-to-end embedding throughput ({result['date']})", "",
             f"{result['machine']}. {s['videos']} H.264 videos, {s['seconds']} s each, {s['size']} at {s['fps']} fps "
             f"(GOP {s['gop']}); {s['model']}, {s['max_frames']} max frames, CLIP4Clip sampling (1 fps); "
             f"{s['sampled_frames']} frames sampled in all; {s['workers']} decode workers, batch {s['batch_size']}. "
             f"vlrt vs naive embeddings: min cosine {result['min_cosine_vlrt_vs_naive']:.6f}.", "",
             "| configuration | videos/s | sampled frames/s | × naive | median s (runs) |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['videos_per_s']:.2f} | {r['sampled_frames_per_s']:.1f} | "
                     f"{r['vs_naive']:.2f} | {r['median_s']:.2f} ({r['runs']}) |")
    lines += ["", f"Slower of decode-only and encode-only: {result['slower_of_decode_and_encode_videos_per_s']:.2f} videos/s "
              "(the ceiling an overlapped pipeline can approach)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--config", default="ViT-B-32")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir")
    p.add_argument("--out", default=str(RESULTS / "e2e-cpu.json"))
    args = p.parse_args()
    result = run(args)
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
