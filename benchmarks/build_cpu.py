"""Video-encoder throughput of each `vlrt build` precision on this CPU, side by side in one run.

Configurations (same model, same frames, same threads):
  eager PyTorch fp32         the reference model (vlrt.models), torch.inference_mode
  torch.onnx.export + ORT    the fp32 bundle's video.onnx with default SessionOptions
  int8 dynamic               `vlrt build --precision int8 --int8-mode dynamic`
  int8 static (QDQ)          `vlrt build --precision int8 --int8-mode static --calib DIR`
  fp16 (GPU graph, on CPU)   `vlrt build --backend ort-cuda --precision fp16`, run by ORT CPU to show
                             why ort-cpu refuses fp16
Each is checked before timing: its video and frame embeddings' min cosine to eager PyTorch is
recorded (random weights: the figure says little about a trained model's accuracy, see
docs/build.md for the trained model's retrieval figures).

Then, if the embedded trained model (vlrt/assets/default_model.pt.gz) is there, its retrieval
figures per int8 engine: it is exported, int8 engines are built (static: calibrated on 32 clips of
the synthetic *train* split), and `python -m vlrt bench BUNDLE --precision int8 --engine KEY
--reference BUNDLE` runs on the held-out test clips.

    python benchmarks/build_cpu.py --workdir /tmp/vlrt-build-bench

Writes benchmarks/results/build-cpu.json and .md. Warm-up, then the median of --repeats runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, stages, write_result

from vlrt.bench.speed import min_cosine, ort_session, timed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in test-video generator
sys.path.insert(0, str(ROOT / "benchmarks"))


def prepare(work: Path, config: str) -> Path:
    """The random-weight full-size bundle (made once per workdir) and calibration videos."""
    from e2e import make_bundle
    from video_assets import write_video

    bundle = work / "bundle"
    if not (bundle / "vlrt.json").is_file():
        make_bundle(work, config)
    calib = work / "calib"
    calib.mkdir(exist_ok=True)
    for i in range(8):
        path = calib / f"calib{i}.mp4"
        if not path.is_file():
            write_video(path, width=320 + 32 * i, height=240, frames=24 * 6, fps=24, gop=48)
    return bundle


def engines(bundle: Path, calib: Path, progress) -> dict[str, object]:
    from vlrt.build.engine import build_engine

    settings = {
        "int8 dynamic": {"backend": "ort-cpu", "precision": "int8", "int8_mode": "dynamic"},
        "int8 static (QDQ, uint8 act.)": {"backend": "ort-cpu", "precision": "int8", "int8_mode": "static",
                                          "calib": calib},
        "fp16 (GPU graph, run on ORT CPU)": {"backend": "ort-cuda", "precision": "fp16"},
    }
    # No gate here: random weights are what is being timed, and their cosines are reported instead.
    return {name: build_engine(bundle, gate=False, progress=progress, **kw) for name, kw in settings.items()}


def retrieval(work: Path) -> dict | None:
    """`vlrt bench` figures of the embedded trained model, fp32 and each int8 engine."""
    import subprocess

    from vlrt.bench import synth
    from vlrt.build.engine import build_engine
    from vlrt.export import export_checkpoint

    model = ROOT / "vlrt" / "assets" / "default_model.pt.gz"
    if not model.is_file():
        return None
    bundle, calib = work / "trained" / "bundle", work / "trained" / "calib"
    export_checkpoint(model, bundle, overwrite=True)
    calib.mkdir(parents=True, exist_ok=True)
    train = list(synth.gallery("train", seed=7))
    for k, (scene, seed) in enumerate(train[::max(1, len(train) // 32)][:32]):
        synth.write_mp4(calib / f"train{k:03d}.mp4", synth.render(scene, seed=seed))
    runs = {"fp32": []}
    for mode in ("dynamic", "static"):
        built = build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode=mode,
                             calib=calib if mode == "static" else None)
        runs[f"int8 {mode}"] = ["--precision", "int8", "--engine", built.key]
    out = {}
    for name, extra in runs.items():
        res = subprocess.run([sys.executable, "-m", "vlrt", "bench", str(bundle), "--backend", "ort-cpu",
                              "--reference", str(bundle), "--json", *extra], capture_output=True, text=True, check=True)
        out[name] = json.loads(res.stdout)
    return out


def run(args) -> dict:
    import onnx
    import onnxruntime
    import torch

    from vlrt.export import load_checkpoint

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    bundle = prepare(work, args.config)
    built = engines(bundle, work / "calib", stages())
    model = load_checkpoint(work / "model.pt").model.eval()
    size = model.config.vision.image_size
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.videos, args.frames, 3, size, size), dtype=np.float32)  # (B, T, 3, S, S)
    mask = np.ones((args.videos, args.frames), np.float32)  # (B, T)
    feeds = {"pixels": pixels, "frame_mask": mask}

    def eager():
        with torch.inference_mode():
            video, frames = model.encode_video(torch.from_numpy(pixels), torch.from_numpy(mask))
        return video.numpy(), frames.numpy()

    configs = [("eager PyTorch fp32", eager, None)]
    graphs = [("torch.onnx.export + ORT (default options)", bundle / "video.onnx", True)]
    graphs += [(name, r.engine_dir / r.manifest["graphs"]["video"]["file"], False) for name, r in built.items()]
    for name, path, default in graphs:
        sess = ort_session(path, args.threads, plain=default)
        configs.append((name, lambda s=sess: tuple(s.run(["video_embeds", "frame_embeds"], feeds)), path))
    reference = eager()
    rows = []
    for name, fn, path in configs:
        repeats = args.repeats if "fp16" not in name else max(5, args.repeats // 2)
        out, times = timed(fn, warmup=args.warmup, repeats=repeats)
        med = statistics.median(times)
        frames = pixels.shape[0] * pixels.shape[1]
        row = {"name": name, "frames_per_s": frames / med, "median_s": med, "min_s": min(times), "max_s": max(times),
               "runs": len(times), "min_cos_video": min_cosine(reference[0], out[0]),
               "min_cos_frames": min_cosine(reference[1], out[1])}
        if path is not None:
            row["graph_mb"] = Path(path).stat().st_size / 1e6
        rows.append(row)
        print(f"{name:<40} {row['frames_per_s']:7.1f} frames/s  cos video {row['min_cos_video']:.6f} "
              f"frames {row['min_cos_frames']:.6f}", file=sys.stderr)
    base = rows[1]["frames_per_s"]
    for r in rows:
        r["vs_ort_fp32"] = r["frames_per_s"] / base
    return {
        "benchmark": "build-cpu", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "setup": {"model": f"{args.config} + seqTransf (4 layers), random weights", "batch":
                  f"{args.videos} videos x {args.frames} frames", "threads": args.threads, "warmup": args.warmup,
                  "inputs": "standard normal pixels, seed 0"},
        "engines": {name: {"key": r.key, "options": r.manifest["options"],
                           "validation_min_cosine": r.manifest["validation"]["min_cosine"],
                           "video_pass": r.manifest["graphs"]["video"]["pass"]} for name, r in built.items()},
        "rows": rows,
        "retrieval": retrieval(work),
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    v = result["versions"]
    lines = [f"# Video encoder throughput per build precision, CPU ({result['date']})", "",
             f"{result['machine']}. {s['model']}; batch {s['batch']}; {s['threads']} threads; {s['inputs']}. "
             f"onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, torch {v['torch']}. "
             "Cosines are per embedding against eager PyTorch fp32 (min over the batch); random weights, so they "
             "say little about a trained model (see docs/build.md for retrieval figures).", "",
             "| configuration | frames/s | × ORT fp32 | min cos video | min cos frames | median s (runs, min-max) | graph MB |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mb = f"{r['graph_mb']:.0f}" if "graph_mb" in r else "-"
        lines.append(f"| {r['name']} | {r['frames_per_s']:.1f} | {r['vs_ort_fp32']:.2f} | {r['min_cos_video']:.6f} | "
                     f"{r['min_cos_frames']:.6f} | {r['median_s']:.3f} ({r['runs']}, {r['min_s']:.3f}-{r['max_s']:.3f}) | {mb} |")
    lines += ["", "The fp16 graph is the ort-cuda engine run by ORT's CPU provider, which casts it back and "
              "computes it in fp32 (hence its cosine): no gain on a CPU, which is why ort-cpu refuses fp16."]
    if result.get("retrieval"):
        lines += ["", "## Retrieval, embedded trained model (synthetic test clips)", "",
                  "| precision | videos | t2v R@1 | t2v R@5 | v2t R@1 | v2t R@5 | top-1 agreement t2v / v2t (%) | "
                  "min video cos vs fp32 |", "|---|---|---|---|---|---|---|---|"]
        for name, r in result["retrieval"].items():
            q = r["quality"]
            lines.append(f"| {name} | {r['videos']} | {q['t2v_R@1']:.2f} | {q['t2v_R@5']:.2f} | {q['v2t_R@1']:.2f} | "
                         f"{q['v2t_R@5']:.2f} | {r['top1_agreement_t2v']:.2f} / {r['top1_agreement_v2t']:.2f} | "
                         f"{r['min_video_cosine']:.6f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="ViT-B-32")
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--workdir", default="/tmp/vlrt-build-bench")
    p.add_argument("--out", default=str(RESULTS / "build-cpu.json"))
    args = p.parse_args()
    result = run(args)
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
