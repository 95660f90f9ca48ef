"""What each of vlrt's OpenVINO int8 settings costs or buys against NNCF's defaults, on this CPU.

vlrt's OpenVINO int8 engine differs from `nncf.quantize(model_type=TRANSFORMER)` with defaults
in three ways: the patch embedding and the embedding tail (projection, temporal head,
normalisation) are NNCF's ignored scope, SmoothQuant is off, and the graph is compiled with
inference precision f32 (OpenVINO's CPU default is bf16 on CPUs with native bf16). This script
quantizes the video graph with each combination of the first two (the same calibration
batches for all), compiles each at f32 and, on a CPU with native bf16, at bf16, and times them
interleaved on the same frames, each round calling every variant once. The figure that counts
is each variant's ratio to NNCF's defaults at OpenVINO's default precision (what a user gets
without vlrt), taken round by round (so load from elsewhere falls on both sides of a ratio) and
summarised as the median and the quartiles over the rounds. vlrt's own built engine (`vlrt build
--backend openvino --precision int8 --calib`) is timed alongside.

    python benchmarks/ov_int8_settings.py --models ViT-B-32,ViT-B-16 --workdir /tmp/vlrt-auto

The workdir is auto_cpu.py's (bundles and calibration videos are made there once and reused).
Writes benchmarks/results/ov-int8-settings.json and .md.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def variants_for(bundle, calib: Path, progress) -> tuple[dict, dict]:
    """{name: openvino.Model} for the four quantization settings, and what each quantized."""
    import nncf
    import onnx
    import openvino as ov

    from vlrt.build.engine import calibration_videos
    from vlrt.build.passes import FrameCalibration
    from vlrt.build.passes.int8 import kept_in_fp32
    from vlrt.runtime.backends.ov.engine import VIDEO_BATCH, quantize_settings

    source = str(bundle.graph_path("video"))
    keep = kept_in_fp32(onnx.load(source))
    videos = calibration_videos(calib)
    reader = FrameCalibration(bundle.manifest, videos, batch_size=VIDEO_BATCH)
    feeds = list(iter(reader.get_next, None))
    models, info = {}, {}
    for ignore in (True, False):
        for smooth in (False, True):
            name = (f"ignored scope {'on' if ignore else 'off'}, SmoothQuant {'on' if smooth else 'off'}"
                    + (" (vlrt's)" if ignore and not smooth else " (NNCF's defaults)" if smooth and not ignore else ""))
            progress(f"nncf.quantize: {name}")
            model = ov.convert_model(source)
            ignored = sorted(keep & {op.get_friendly_name() for op in model.get_ordered_ops()}) if ignore else []
            t0 = time.perf_counter()
            quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                      **quantize_settings(ignored, smooth_quant=smooth))
            ops = [op.get_type_name() for op in quantized.get_ordered_ops()]
            models[name] = quantized
            info[name] = {"fake_quantize": ops.count("FakeQuantize"), "ignored_ops": len(ignored),
                          "quantize_s": round(time.perf_counter() - t0, 1)}
    return models, info


def run_model(model: str, work: Path, *, threads: int, rounds: int, batch: int, progress) -> dict:
    import openvino as ov
    from auto_cpu import prepare

    from vlrt.build.auto import timing_frames
    from vlrt.build.engine import build_engine, calibration_videos
    from vlrt.runtime.backends.ov import native_bf16
    from vlrt.runtime.bundle import Bundle, machine_fingerprint

    bundle_dir, _, calib, _ = prepare(work, model, progress)
    bundle = Bundle.open(bundle_dir)
    progress(f"{model}: vlrt build --backend openvino --precision int8 --calib")
    built = build_engine(bundle_dir, backend="openvino", precision="int8", int8_mode="static", calib=calib,
                         progress=progress)
    models, info = variants_for(bundle, calib, progress)
    models["vlrt build (its engine)"] = str(built.engine_dir / "video.xml")
    core = ov.Core()
    default = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    precisions = ["f32", "bf16"] if native_bf16(machine_fingerprint()) else ["f32"]
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = {}
    for name, m in models.items():
        for precision in precisions:
            c = core.compile_model(m, "CPU", {**base, "INFERENCE_PRECISION_HINT": precision})
            compiled[f"{name} @ {c.get_property('INFERENCE_PRECISION_HINT').get_type_name()}"] = c
    peer_name = f"ignored scope off, SmoothQuant on (NNCF's defaults) @ {default}"
    reference = core.compile_model(str(bundle.graph_path("video")), "CPU", {**base, "INFERENCE_PRECISION_HINT": "f32"})
    pixels, mask = timing_frames(bundle, calibration_videos(calib), batch)
    feed = {"pixels": pixels, "frame_mask": mask}
    out = bundle.outputs("video")[0]

    def embeds(c) -> np.ndarray:
        v = c(feed)[next(o for o in c.outputs if out in o.get_names())]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    want = embeds(reference)
    progress(f"{model}: timing {len(compiled)} variants, {rounds} interleaved rounds")
    load_start = os.getloadavg()
    samples: dict[str, list[float]] = {name: [] for name in compiled}
    for r in range(rounds + 1):  # round 0 warms up
        for name, c in compiled.items():
            t0 = time.perf_counter()
            c(feed)
            if r:
                samples[name].append(time.perf_counter() - t0)
    frames = float(mask.sum())
    rows = []
    for name, c in compiled.items():
        ratios = sorted(p / s for p, s in zip(samples[peer_name], samples[name]))
        q1, q3 = np.percentile(ratios, [25, 75])
        setting = name.rsplit(" @ ", 1)[0]
        rows.append({"name": name, "frames_per_s": round(frames / statistics.median(samples[name]), 2),
                     "vs_peer_median": round(statistics.median(ratios), 3), "vs_peer_q1": round(float(q1), 3),
                     "vs_peer_q3": round(float(q3), 3), "min_cos_vs_fp32": round(float((embeds(c) * want).sum(1).min()), 6),
                     **info.get(setting, {})})
    return {"model": model, "bundle_vision": bundle.manifest["model"]["vision"], "threads": threads, "rounds": rounds,
            "frames": f"{len(pixels)} videos x {mask.shape[1]} frames", "openvino_default_precision": default,
            "peer": peer_name, "engine_key": built.key, "load_start": load_start, "load_end": os.getloadavg(),
            "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"# OpenVINO int8: vlrt's settings against NNCF's defaults ({result['date']})", "",
             f"{result['machine']}.", "",
             "Each variant quantized by `nncf.quantize(model_type=TRANSFORMER)` on the same calibration batches, "
             "compiled with the LATENCY hint and the inference precision named, timed interleaved on the same "
             "frames (every frame slot filled). × peer: the variant's speed over NNCF's defaults at OpenVINO's "
             "default precision, per round; median and quartiles over the rounds. Cosine: video embeddings "
             "against the fp32 graph on OpenVINO at f32. `python benchmarks/ov_int8_settings.py`.", ""]
    for m in result["models"]:
        v = m["bundle_vision"]
        lines += [f"## {m['model']} (vision width {v['width']}, patch {v['patch_size']}, {v['image_size']} px; "
                  f"{m['frames']}, {m['threads']} threads, {m['rounds']} rounds)", "",
                  f"OpenVINO's default inference precision on this CPU: {m['openvino_default_precision']}. "
                  f"Load average {m['load_start'][0]:.2f} at the start, {m['load_end'][0]:.2f} at the end.", "",
                  "| variant @ inference precision | FakeQuantize | frames/s | × peer (median) | quartiles | min cos |",
                  "|---|---|---|---|---|---|"]
        for r in m["rows"]:
            name = f"**{r['name']}**" if r["name"] == m["peer"] else r["name"]
            lines.append(f"| {name} | {r.get('fake_quantize', '')} | {r['frames_per_s']:.1f} | {r['vs_peer_median']:.3f} | "
                         f"{r['vs_peer_q1']:.3f}–{r['vs_peer_q3']:.3f} | {r['min_cos_vs_fp32']:.5f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ViT-B-32,ViT-B-16")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vlrt-auto"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=4, help="videos per timed call")
    ap.add_argument("--out", type=Path, default=RESULTS / "ov-int8-settings.json")
    args = ap.parse_args()
    if args.rounds < 4:
        ap.error("--rounds: at least 4 (the quartiles need them)")
    os.environ.setdefault("XDG_CACHE_HOME", str(args.workdir / "cache"))
    progress = stages()
    models = [run_model(m, args.workdir / m, threads=args.threads, rounds=args.rounds, batch=args.batch,
                        progress=progress) for m in args.models.split(",")]
    result = {"benchmark": "ov-int8-settings", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "models": models}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
