"""Speed of the two kernels on a GPU, driven through PyTorch tensors and a torch CUDA stream (the
GPU session runs it; no CuPy, no nvcc), against the PyTorch path they would replace.

    python tests/kernels/bench_kernels.py --lib build/gpu-session/libvlrt_kernels.so --out DIR

Preprocessing: vlrt_preprocess straight from NV12 (or RGB24) to float16 model input, against
vlrt.gpu's path for the same frames (vlrt.gpu.colour's NV12 -> RGB, then GpuPreprocess), with the
largest and mean difference between the two in pixel levels. Token merging: vlrt_token_merge
alone (vlrt has no other GPU implementation). Each figure is the median and minimum of `--repeat`
launches timed with CUDA events on one stream, after a warm-up launch. Writes kernels-bench.json
and kernels-bench.md to DIR.

`--device cpu --smoke` runs the same code on tiny inputs with the CPU emulator's build of the
kernels (tests/kernels/test_emulated_kernels.py does), where the times mean nothing.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_bindings as kb  # noqa: E402
from frame_cases import make_frames  # noqa: E402

PREPROCESS = [  # format, width, height, S, batch
    ("nv12", 1920, 1080, 224, 16),
    ("nv12", 3840, 2160, 336, 4),
    ("rgb24", 1280, 720, 224, 32),
]
MERGE = [  # batch, tokens, channels, r (float16)
    (64, 197, 768, 16),  # ViT-B/16 at 224
    (16, 577, 1024, 40),  # ViT-L/14 at 336
]
SMOKE_PREPROCESS = [("nv12", 45, 31, 20, 2), ("rgb24", 40, 30, 24, 2)]
SMOKE_MERGE = [(2, 9, 8, 2)]


class Timer:
    """Milliseconds per call: CUDA events on the stream (GPU), wall clock (CPU)."""

    def __init__(self, torch, mem: kb.TorchMemory, repeat: int):
        self.torch, self.mem, self.repeat = torch, mem, repeat

    def __call__(self, fn) -> dict:
        fn()  # warm-up: first launches load modules and fill caches
        self.mem.synchronize()
        times = []
        for _ in range(self.repeat):
            if self.mem.cuda_stream is not None:
                start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record(self.mem.cuda_stream)
                fn()
                end.record(self.mem.cuda_stream)
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return {"median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4)}


def preprocess_case(torch, lib, mem, timer, rng, fmt, w, h, size, batch) -> dict:
    from vlrt.gpu.colour import nv12_to_rgb
    from vlrt.gpu.preprocess import GpuPreprocess
    from vlrt.ops import preprocess_ref as ref
    from vlrt.runtime.preprocess import Preprocess

    frames = make_frames(rng, fmt, w, h, count=batch)
    planes = kb.pack_frames(fmt, frames, w, h)
    buffers = [mem.upload(p[0]) for p in planes]
    second = (buffers[1].data_ptr(), planes[1][1], planes[1][2]) if fmt == "nv12" else (None, 0, 0)
    desc = kb.Frames(format=kb.VLRT_NV12 if fmt == "nv12" else kb.VLRT_RGB24, width=w, height=h,
                     plane0=buffers[0].data_ptr(), plane1=second[0], pitch0=planes[0][1], pitch1=second[1],
                     frame_stride0=planes[0][2], frame_stride1=second[2])
    out = mem.full((batch, 3, size, size), 0.0, np.float16)
    mean, std = kb.floats3(ref.CLIP_MEAN), kb.floats3(ref.CLIP_STD)

    def kernel():
        status = lib.vlrt_preprocess(ctypes.byref(desc), batch, size, kb.ROUNDING["uint8"], mean, std,
                                     out.data_ptr(), kb.VLRT_FLOAT16, mem.stream)
        if status != kb.VLRT_OK:
            raise RuntimeError(lib.vlrt_status_string(status).decode())

    # vlrt.gpu's path: whole frames as decoders hand them over, converted, then resized.
    if fmt == "nv12":
        ys = [mem.upload(f[0]) for f in frames]
        uvs = [mem.upload(f[1]) for f in frames]
    else:
        rgb = mem.upload(np.stack(frames).transpose(0, 3, 1, 2))  # (B, 3, H, W)
    gpu_pre = GpuPreprocess(Preprocess(size=size, mean=ref.CLIP_MEAN, std=ref.CLIP_STD), dtype=torch.float16)
    result = {}

    def torch_path():
        with mem.on_stream():
            x = torch.stack([nv12_to_rgb(y, uv) for y, uv in zip(ys, uvs)]) if fmt == "nv12" else rgb
            result["out"] = gpu_pre(x)

    row = {"format": fmt, "width": w, "height": h, "size": size, "batch": batch,
           "kernel": timer(kernel), "pytorch_path": timer(torch_path)}
    mem.synchronize()
    levels = 255.0 * np.asarray(ref.CLIP_STD)[:, None, None]
    diff = np.abs(mem.download(out).astype(np.float64) - mem.download(result["out"]).astype(np.float64)) * levels
    row["kernel_vs_pytorch_levels"] = {"max": round(float(diff.max()), 3), "mean": round(float(diff.mean()), 4)}
    row["speedup"] = round(row["pytorch_path"]["median_ms"] / max(row["kernel"]["median_ms"], 1e-9), 2)
    row["kernel_us_per_frame"] = round(1e3 * row["kernel"]["median_ms"] / batch, 2)
    return row


def merge_case(lib, mem, timer, rng, b, n, c, r) -> dict:
    from merge_cases import make_tokens

    x, size = make_tokens(rng, b, n, c, np.float16)
    dx, ds = mem.upload(x), mem.upload(size)
    ox, os_ = mem.full((b, n - r, c), 0.0, np.float16), mem.full((b, n - r), 0.0, np.float16)

    def kernel():
        status = lib.vlrt_token_merge(dx.data_ptr(), ds.data_ptr(), ox.data_ptr(), os_.data_ptr(), b, n, c, r,
                                      kb.VLRT_FLOAT16, mem.stream)
        if status != kb.VLRT_OK:
            raise RuntimeError(lib.vlrt_status_string(status).decode())

    row = {"batch": b, "tokens": n, "channels": c, "r": r, "dtype": "float16", "kernel": timer(kernel)}
    row["kernel_us_per_sequence"] = round(1e3 * row["kernel"]["median_ms"] / b, 2)
    return row


def markdown(report: dict) -> str:
    lines = [f"# Kernel speed: {report['device']}", "",
             f"torch {report['torch']}, CUDA {report['cuda']}, {report['date']}, median of {report['repeat']}", "",
             "| preprocessing | batch | kernel ms | PyTorch path ms | speedup | kernel us/frame | max / mean diff (levels) |",
             "|---|---|---|---|---|---|---|"]
    for p in report["preprocess"]:
        d = p["kernel_vs_pytorch_levels"]
        lines.append(f"| {p['format']} {p['width']}x{p['height']} -> {p['size']} | {p['batch']} | "
                     f"{p['kernel']['median_ms']} | {p['pytorch_path']['median_ms']} | {p['speedup']} | "
                     f"{p['kernel_us_per_frame']} | {d['max']} / {d['mean']} |")
    lines += ["", "| token merge (float16) | kernel ms | us/sequence |", "|---|---|---|"]
    for m in report["token_merge"]:
        lines.append(f"| B={m['batch']} N={m['tokens']} C={m['channels']} r={m['r']} | "
                     f"{m['kernel']['median_ms']} | {m['kernel_us_per_sequence']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", type=Path, required=True, help="libvlrt_kernels.so (the emulator's on the CPU)")
    parser.add_argument("--out", type=Path, required=True, help="folder for kernels-bench.json and .md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny inputs (for the CPU emulator)")
    args = parser.parse_args(argv)
    import torch

    lib = kb.load(args.lib)
    mem = kb.TorchMemory(torch, args.device)
    timer = Timer(torch, mem, args.repeat)
    rng = np.random.default_rng(0)
    cuda = mem.cuda_stream is not None
    report = {
        "device": torch.cuda.get_device_name(mem.device) if cuda else platform.processor() or "cpu",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(mem.device))) if cuda else None,
        "torch": torch.__version__, "cuda": torch.version.cuda, "repeat": args.repeat,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "library": str(args.lib),
        "preprocess": [preprocess_case(torch, lib, mem, timer, rng, *case)
                       for case in (SMOKE_PREPROCESS if args.smoke else PREPROCESS)],
        "token_merge": [merge_case(lib, mem, timer, rng, *case) for case in (SMOKE_MERGE if args.smoke else MERGE)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "kernels-bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
