"""Where OpenVINO int8's time goes, per op, on ViT-B/32 geometry: vlrt's engine and the peer.

The counterpart of profile_int8.py (ONNX Runtime) for the two OpenVINO int8 engines that
auto_cpu.py times: vlrt's (`vlrt build --backend openvino --precision int8 --int8-mode static
--int8-fallback bf16`, calibrated on the same videos) and the peer (NNCF's defaults, OpenVINO's
default inference precision). Both compiled as they run there (LATENCY hint, --threads) plus
PERF_COUNT; one video of 12 real frames per call. Per op: OpenVINO's per-node profile
(`InferRequest.get_profiling_info`, real time) of --runs calls after 2 warm-up calls, summed per
node type as the CPU plugin runs it (after its fusions; a node's exec type names its kernel and
precision, e.g. brgemm_avx512_amx_I8 / jit_avx512_BF16). Wall time: median of the same calls.

    python benchmarks/profile_openvino.py --work /tmp/vlrt-auto   # -> results/profile-openvino-cpu.{json,md}
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import RESULTS, machine, stages, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the checked-in test-video generator


def profile(compiled, feeds: dict, runs: int) -> dict:
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer(feeds)
    walls, per_type = [], defaultdict(lambda: {"ms": 0.0, "nodes": 0, "exec_types": defaultdict(float)})
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - t0)
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1e3 / runs
            entry = per_type[info.node_type]
            entry["ms"] += ms
            entry["nodes"] += 1
            entry["exec_types"][info.exec_type] += ms
    total = sum(e["ms"] for e in per_type.values())
    ops = sorted(({"op": k, "ms": v["ms"], "share": v["ms"] / total, "nodes": v["nodes"] // runs,
                   "exec_types": dict(sorted(v["exec_types"].items(), key=lambda kv: -kv[1]))}
                  for k, v in per_type.items()), key=lambda o: -o["ms"])
    return {"wall_ms": statistics.median(walls) * 1e3, "kernel_ms": total, "ops": ops}


def markdown(r: dict) -> str:
    lines = [f"# Where OpenVINO int8's time goes, per op ({r['date']})", "", f"{r['machine']}. {r['setup']}", ""]
    for e in r["engines"]:
        p = e["profile"]
        lines += [f"## {e['name']}", "", f"{e['describe']}. Wall {p['wall_ms']:.1f} ms per call "
                  f"({e['frames_per_s']:.1f} frames/s), per-node real time summed {p['kernel_ms']:.1f} ms.", "",
                  "| node type (as the CPU plugin runs it) | ms per call | share | nodes | exec types (ms) |",
                  "|---|---|---|---|---|"]
        for o in p["ops"][:14]:
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in list(o["exec_types"].items())[:3])
            lines.append(f"| {o['op']} | {o['ms']:.1f} | {o['share']:.1%} | {o['nodes']} | {kinds} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/vlrt-auto"), help="auto_cpu.py's workdir (shared)")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "profile-openvino-cpu.json"))
    args = p.parse_args()
    from auto_cpu import openvino_peer, prepare

    from vlrt.build import build_engine
    from vlrt.build.auto import timing_frames
    from vlrt.build.engine import calibration_videos
    from vlrt.runtime.backends.ov.runner import OvModel, core
    from vlrt.runtime.bundle import Bundle

    progress = stages()
    bundle_dir, _, calib, _ = prepare(args.work / args.model, args.model, progress)
    bundle = Bundle.open(bundle_dir)
    videos = calibration_videos(calib)
    pixels, mask = timing_frames(bundle, videos, 1)
    feeds = {"pixels": pixels, "frame_mask": mask}
    progress("vlrt's engine: openvino int8 static + bf16 fallback")
    built = build_engine(bundle_dir, backend="openvino", precision="int8", int8_mode="static", calib=calib,
                         int8_fallback="bf16", progress=progress)
    engine = bundle.engine(backend="openvino", key=built.key)
    model = OvModel(engine.graph_path("video"), threads=args.threads,
                    precision=engine.manifest["options"]["inference_precision"])
    ours = core().compile_model(core().read_model(str(model.path)), "CPU", {**model.config(), "PERF_COUNT": True})
    peer, peer_info = openvino_peer(bundle, videos, args.threads, progress, config={"PERF_COUNT": True})
    frames = float(mask.sum())
    engines = []
    for name, compiled, describe in [("vlrt: openvino int8 static + bf16 fallback", ours, engine.describe()),
                                     ("OpenVINO int8, NNCF defaults (the peer)", peer, f"peer: {peer_info}")]:
        progress(f"profiling {name}")
        prof = profile(compiled, feeds, args.runs)
        engines.append({"name": name, "describe": describe, "frames_per_s": frames / (prof["wall_ms"] / 1e3),
                        "profile": prof})
    import openvino

    result = {"benchmark": "profile-openvino", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "setup": f"{args.model} + seqTransf head, random weights; 1 video x {int(frames)} real frames per call; "
                       f"{args.threads} threads; OpenVINO {openvino.__version__}; {args.runs} profiled calls after 2 "
                       "warm-up calls. `python benchmarks/profile_openvino.py`.",
              "engines": engines}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
