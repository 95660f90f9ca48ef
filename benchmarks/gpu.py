"""The GPU path on a CUDA machine, side by side in one run: encoder, decode and end to end.

    python benchmarks/gpu.py                       # writes benchmarks/results/gpu-<device>.json + .md

Refuses to run (a one-line reason, exit status 1) without a CUDA device: nothing here is ever
measured on the CPU and written down as a GPU result. (Tests call the sections with a CPU device
to check the script's plumbing; they write nothing.) Before torch touches CUDA it gives the CUDA
primary context the flags FFmpeg needs to share it (`vlrt.gpu.device.share_primary_context`):
without them every file would be decoded on the CPU.

Sections (same videos and frames throughout, warm-up first, median and spread of --repeats runs):
  encoder    image-tower frames/s, eager PyTorch fp32 vs fp16 autocast: ViT-B/32 and ViT-B/16
             geometry (random weights) and the embedded default model
  decode     videos/s for sampled frames only (CLIP4Clip rule, 1 fps, <= 12 frames): PyAV on the
             CPU vs NVDEC (frames -> RGB on the GPU), --workers threads each; then the loaders
             (decode + preprocessing): the CPU path's ClipLoader vs GpuClipLoader
  encode     the same sampled frames, already preprocessed, through the fp16 encoder
  end to end GpuPipeline (NVDEC -> GPU preprocessing -> fp16 encoder, decode overlapping encode);
             and, unless --no-cpu-e2e, the CPU path (PyAV + PIL + ONNX Runtime CPU) as the baseline
Correctness is checked before timing: GPU pipeline embeddings vs the fp32 CPU reference on the
same videos (min cosine >= 0.999), and every NVDEC fallback is counted with its reason. A row that
claims NVDEC is never a timing of CPU decoding: if any file would fall back to the CPU, the row is
recorded as failed (with the reason) instead of timed, the results are still written, and the
script exits with status 1.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in test-video generator
sys.path.insert(0, str(ROOT))


def require_cuda():
    try:
        import torch
    except ImportError:
        raise SystemExit("benchmarks/gpu.py needs PyTorch with CUDA; torch is not installed") from None
    if not torch.cuda.is_available():
        raise SystemExit(f"benchmarks/gpu.py: no CUDA device (torch {torch.__version__}); refusing to run, "
                         "so that no CPU figure is ever recorded as a GPU result")
    return torch


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int, *, warmup: int = 1):
    """(last result, wall times) with CUDA work finished inside each timing."""
    for _ in range(warmup):
        fn()
    _sync()
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return result, times


def row(name: str, times: list[float], *, units: float, unit: str, **extra) -> dict:
    med = statistics.median(times)
    return {"name": name, "median_s": med, "min_s": min(times), "max_s": max(times), "runs": len(times),
            f"{unit}_per_s": units / med, **extra}


def failed_row(name: str, error: str) -> dict:
    """A row that was not timed, loudly: it names why in the results and on stderr."""
    print(f"FAILED {name}: {error}", file=sys.stderr)
    return {"name": name, "error": error}


# ---- encoder ---------------------------------------------------------------------------------

def encoder_rows(args) -> list[dict]:
    import torch

    from vlrt.assets import default_checkpoint as shipped_model
    from vlrt.export.load import load_checkpoint
    from vlrt.gpu.encode import GpuEncoder
    from vlrt.models import VideoTextModel, get_config, random_init

    rows = []
    models = [(name, lambda n=name: random_init(VideoTextModel(get_config(n)), seed=0)) for name in args.configs]
    models.append(("default model (64 px, 4 layers)", lambda: load_checkpoint(shipped_model()).model))
    half = "fp16" if args.device.type == "cuda" else "bf16"  # fp16 autocast is CUDA-only
    for name, make in models:
        model = make()
        size = model.config.vision.image_size
        batch = args.encoder_batch if size >= 224 else 4 * args.encoder_batch
        images = torch.randn((batch, 3, size, size), device=args.device)
        ref = None
        for precision in ("fp32", half):
            enc = GpuEncoder(model, device=args.device, precision=precision)
            out, times = timed(lambda enc=enc, x=images: enc.encode_images(x), args.repeats, warmup=2)
            ref = out if ref is None else ref
            cos = torch.nn.functional.cosine_similarity(out, ref, dim=-1).min().item()
            rows.append(row(f"{name} {precision}", times, units=batch, unit="frames", batch=batch,
                            min_cos_vs_fp32=round(cos, 6)))
        del model, images, enc
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---- videos ----------------------------------------------------------------------------------

def make_videos(folder: Path, args) -> list[str]:
    from video_assets import write_video

    first = folder / "clip000.mp4"
    write_video(first, codec="libx264", width=args.width, height=args.height, frames=args.seconds * args.fps,
                fps=args.fps, gop=2 * args.fps)
    paths = [first]
    for i in range(1, args.videos):  # copies: the same decode cost, no encoding time spent here
        paths.append(folder / f"clip{i:03d}.mp4")
        shutil.copyfile(first, paths[-1])
    return [str(p) for p in paths]


def settings_for(config: str) -> dict:
    """CLIP4Clip's settings (12 frames, 1 fps, uniform slice) for this geometry."""
    from vlrt.families import get_family
    from vlrt.models import get_config

    fam = get_family("clip4clip")
    size = get_config(config).vision.image_size
    return {"max_frames": 12, "max_words": 32, "sampling": dict(fam.sampling), "preprocessing": fam.preprocessing(size)}


def nvdec_fallbacks(paths: list[str], infos: dict, wanted: dict, device) -> dict[str, int]:
    """One untimed pass: reason -> how many files NVDEC would leave to the CPU decoder."""
    from vlrt.gpu.decode import GpuDecoder, GpuDecodeStats

    decoder, reasons = GpuDecoder(device=device), {}
    for p in paths:
        stats = GpuDecodeStats()
        decoder.read_frames(p, wanted[p], info=infos[p], stats=stats)
        if stats.fallback:
            reasons[stats.fallback] = reasons.get(stats.fallback, 0) + 1
    return reasons


def decode_rows(paths: list[str], settings: dict, args) -> tuple[list[dict], dict]:
    from vlrt.errors import VlrtError
    from vlrt.gpu.decode import GpuDecoder
    from vlrt.gpu.pipeline import GpuClipLoader
    from vlrt.runtime.pipeline import ClipLoader, sample_indices
    from vlrt.runtime.video import probe, read_frames

    infos = {p: probe(p) for p in paths}
    wanted = {p: sample_indices(infos[p], settings["sampling"], settings["max_frames"]) for p in paths}
    fallbacks = nvdec_fallbacks(paths, infos, wanted, args.device)
    nvdec = GpuDecoder(device=args.device, fallback="error")  # a CPU fallback fails the row
    jobs = [("decode-only, PyAV on the CPU", lambda p: read_frames(p, wanted[p], info=infos[p]), False),
            ("decode-only, NVDEC (RGB on the GPU)", lambda p: nvdec.read_frames(p, wanted[p], info=infos[p]), True),
            ("decode + preprocess, CPU loader (exact)", ClipLoader(settings), False),
            ("decode + preprocess, GPU loader (NVDEC)", GpuClipLoader(settings, decoder=nvdec), True)]
    rows = []
    for name, job, claims_nvdec in jobs:
        if claims_nvdec and fallbacks:
            rows.append(failed_row(name, f"not timed: NVDEC leaves {sum(fallbacks.values())} of {len(paths)} "
                                         f"files to the CPU ({'; '.join(fallbacks)})"))
            continue

        def run(job=job):
            with cf.ThreadPoolExecutor(args.workers) as pool:
                return list(pool.map(job, paths))
        try:
            _, times = timed(run, args.repeats)
        except VlrtError as err:  # NVDEC refused a file during the timed runs
            rows.append(failed_row(name, str(err)))
            continue
        rows.append(row(name, times, units=len(paths), unit="videos", workers=args.workers))
    frames = sum(len(w) for w in wanted.values())
    return rows, {"sampled_frames": frames, "nvdec_fallbacks": fallbacks}


def check_pipeline(enc, paths, ckpt, settings) -> float:
    """Min cosine of `enc`'s GPU-pipeline embeddings to the fp32 CPU reference (CPU decode + PIL) on 2 videos."""
    import torch

    from vlrt.gpu.encode import GpuEncoder
    from vlrt.gpu.pipeline import GpuPipeline
    from vlrt.runtime.pipeline import ClipLoader, stack_clips

    gpu = GpuPipeline(enc, fallback="error").encode_videos(paths[:2])  # VlrtError if NVDEC refuses a file
    ref_enc = GpuEncoder.from_checkpoint(ckpt, device="cpu", precision="fp32")
    pixels, mask = stack_clips([ClipLoader(settings)(p) for p in paths[:2]])  # (2, T, 3, S, S), (2, T)
    ref = ref_enc.encode_frames(torch.from_numpy(pixels), torch.from_numpy(mask)).numpy()
    return float(((gpu * ref).sum(1) / np.linalg.norm(gpu, axis=1) / np.linalg.norm(ref, axis=1)).min())


def pipeline_rows(paths, work: Path, args, settings) -> tuple[list[dict], dict]:
    from vlrt.errors import VlrtError
    from vlrt.gpu.encode import GpuEncoder
    from vlrt.models import HeadConfig, VideoTextModel, get_config, random_init
    from vlrt.models.checkpoint import save_checkpoint

    cfg = get_config(args.e2e_config).replace(head=HeadConfig(type="seqTransf", layers=4, heads=8, max_positions=77))
    ckpt = save_checkpoint(random_init(VideoTextModel(cfg), seed=0), work / "model.pt", settings=settings)
    half = "fp16" if args.device.type == "cuda" else "bf16"
    enc = GpuEncoder.from_checkpoint(ckpt, device=args.device, precision=half)
    rows = [encode_only_row(enc, paths, settings, args, half)]
    name, extra = f"end-to-end GpuPipeline (NVDEC), {args.e2e_config} {half}", {}
    try:
        cos = check_pipeline(enc, paths, ckpt, settings)
        if cos < 0.999:
            raise SystemExit(f"GPU pipeline vs fp32 CPU reference: min cos {cos:.5f} < 0.999; not timing a wrong pipeline")
        extra["min_cos_gpu_pipeline_vs_fp32_cpu"] = round(cos, 6)
        rows.append(e2e_row(name, enc, paths, args))
    except VlrtError as err:  # NVDEC refused a file: the pipeline would time CPU decoding
        rows.append(failed_row(name, str(err)))
    if args.cpu_e2e:
        rows.append(cpu_e2e_row(paths, ckpt, work, args, extra))
    return rows, extra


def encode_only_row(enc, paths, settings, args, half) -> dict:
    """The encoder alone on the pipeline's preprocessed clips (decoded wherever; not what is timed)."""
    import torch

    from vlrt.gpu.decode import GpuDecoder
    from vlrt.gpu.pipeline import GpuClipLoader
    from vlrt.gpu.preprocess import GpuPreprocess
    from vlrt.runtime.pipeline import prefix_mask

    dtype = torch.float16 if half == "fp16" else torch.bfloat16
    loader = GpuClipLoader(settings, decoder=GpuDecoder(device=args.device),
                           preprocess=GpuPreprocess.from_manifest(settings["preprocessing"], dtype=dtype))
    clips = [loader(p) for p in paths]
    pixels = torch.stack([c.pixels for c in clips])  # (N, T, 3, S, S)
    mask = torch.from_numpy(prefix_mask([c.n_frames for c in clips], pixels.shape[1]))  # (N, T) on the host

    def encode_only():
        for i in range(0, len(paths), args.batch_size):
            enc.encode_frames(pixels[i:i + args.batch_size], mask[i:i + args.batch_size])

    _, times = timed(encode_only, args.repeats)
    return row(f"encode-only, {args.e2e_config} {half} (preprocessed frames on the GPU)", times, units=len(paths),
               unit="videos")


def e2e_row(name: str, enc, paths, args) -> dict:
    from vlrt.gpu.pipeline import GpuPipeline

    pipe = GpuPipeline(enc, fallback="error", batch_size=args.batch_size, workers=args.workers)
    _, times = timed(lambda: pipe.encode_videos(paths), args.repeats)  # VlrtError on a CPU fallback
    return row(name, times, units=len(paths), unit="videos", workers=args.workers, batch=args.batch_size)


def cpu_e2e_row(paths, ckpt, work: Path, args, extra: dict) -> dict:
    """The CPU path on the same videos (PyAV + PIL + ONNX Runtime CPU): the baseline ratio."""
    try:
        from vlrt import Runtime
        from vlrt.export import export_checkpoint

        rt = Runtime.load(export_checkpoint(ckpt, work / "bundle").bundle, backend="ort-cpu")
        _, times = timed(lambda: rt.encode_videos(paths, batch_size=args.batch_size, workers=args.workers),
                         1, warmup=0)
        return row(f"end-to-end CPU path (ONNX Runtime CPU, {os.cpu_count()} cores)", times, units=len(paths),
                   unit="videos", workers=args.workers)
    except Exception as exc:  # the baseline must not cost the GPU figures; the failure is recorded
        extra["cpu_e2e_error"] = f"{type(exc).__name__}: {exc}"
        return {"name": "end-to-end CPU path", "error": extra["cpu_e2e_error"]}


# ---- report ----------------------------------------------------------------------------------

def run(args) -> dict:
    from vlrt.gpu.device import device_report

    report = device_report(args.device)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vlrt-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"device: {report['device']}, driver {report.get('driver')}, torch {report['torch']}", file=sys.stderr)
    enc_rows = encoder_rows(args)
    paths = make_videos(work, args)
    settings = settings_for(args.e2e_config)
    dec_rows, dec_extra = decode_rows(paths, settings, args)
    e2e_rows, e2e_extra = pipeline_rows(paths, work, args, settings)
    return {"benchmark": "gpu", "date": report["date"], "device": report,
            "setup": {"videos": len(paths), "seconds": args.seconds, "size": f"{args.width}x{args.height}",
                      "fps": args.fps, "codec": "h264", "gop": 2 * args.fps, "sampling": settings["sampling"],
                      "max_frames": settings["max_frames"], "workers": args.workers, "batch_size": args.batch_size,
                      "encoder_batch": args.encoder_batch, **dec_extra},
            "encoder": enc_rows, "decode": dec_rows, "end_to_end": e2e_rows, **e2e_extra}


def _table(rows: list[dict], unit: str) -> list[str]:
    lines = [f"| configuration | {unit}/s | median s (min-max, runs) | note |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | - | - | failed: {r['error']} |")
            continue
        note = ", ".join(f"{k} {r[k]}" for k in ("batch", "workers", "min_cos_vs_fp32") if k in r)
        lines.append(f"| {r['name']} | {r[f'{unit}_per_s']:.1f} | {r['median_s']:.3f} ({r['min_s']:.3f}-"
                     f"{r['max_s']:.3f}, {r['runs']}) | {note} |")
    return lines


def markdown(result: dict) -> str:
    d, s = result["device"], result["setup"]
    lines = [f"# GPU path: encoder, decode, end to end ({result['date']})", "",
             f"{d['device']} (compute {d['capability']}, {d.get('memory_gib')} GiB), driver {d.get('driver')}, "
             f"CUDA runtime {d['cuda_runtime']}, torch {d['torch']}, PyAV {d['av']}, torchcodec {d['torchcodec']}, "
             f"Python {d['python']}. No TensorRT: the reference model in PyTorch (fp16 = autocast).", "",
             "## Encoder (image tower, random weights except the default model)", "",
             *_table(result["encoder"], "frames"), "",
             f"## Decode ({s['videos']} H.264 videos, {s['seconds']} s, {s['size']} at {s['fps']} fps, "
             f"GOP {s['gop']}; CLIP4Clip sampling, {s['sampled_frames']} frames in all)", "",
             *_table(result["decode"], "videos"), "",
             f"Files NVDEC did not decode (reason: count): {s['nvdec_fallbacks'] or 'none'}.", "", "## End to end", "",
             *_table(result["end_to_end"], "videos"), ""]
    cos = result.get("min_cos_gpu_pipeline_vs_fp32_cpu")
    lines.append("GPU pipeline vs fp32 CPU reference: " + (f"min cosine {cos:.6f}." if cos is not None else "not run."))
    return "\n".join(lines) + "\n"


def failed_rows(result: dict) -> list[str]:
    return [r["name"] for key in ("encoder", "decode", "end_to_end") for r in result[key] if "error" in r]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--encoder-batch", type=int, default=256)
    p.add_argument("--e2e-config", default="ViT-B-32")
    p.add_argument("--videos", type=int, default=32)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-cpu-e2e", dest="cpu_e2e", action="store_false", help="skip the CPU end-to-end baseline")
    p.add_argument("--workdir")
    p.add_argument("--out", help="default: benchmarks/results/gpu-<device>.json")
    args = p.parse_args()
    torch = require_cuda()
    # Before anything below touches CUDA: FFmpeg decodes with NVDEC only into a primary context
    # with these flags. A refusal here fails every NVDEC row later, with this reason.
    from vlrt.gpu.device import share_primary_context

    refused = share_primary_context("cuda:0")
    if refused:
        print(f"WARNING: NVDEC cannot share the CUDA context: {refused}", file=sys.stderr)
    args.device = torch.device("cuda", 0)
    result = run(args)
    write_result(args.out or RESULTS / f"gpu-{slug(result['device']['device'])}.json", result, markdown(result))
    failed = failed_rows(result)
    if failed:
        raise SystemExit(f"benchmarks/gpu.py: {len(failed)} rows failed (recorded, not timed): {'; '.join(failed)}")


if __name__ == "__main__":
    main()
