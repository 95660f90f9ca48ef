"""Spinning against blocking ONNX Runtime workers in vlrt's runtime, on the embedded model.

vlrt builds its ONNX Runtime CPU sessions with `session.intra_op.allow_spinning` 0: idle workers
block at once instead of spinning while they wait for work. This script measures that choice
against ONNX Runtime's default (spinning), each scenario in a fresh process per setting, the two
settings alternating for --repeats rounds:

  packed batch   Runtime.encode_frames on 4 videos x 8 random frames (the tower and head sessions
                 run back to back), median of 200 calls
  whole graph    the same through Runtime.load(pack=False): one video session
  end to end     Runtime.encode_videos on the 243 held-out demo clips (H.264; decode threads
                 beside the encoder), packed and whole graph
  mixed          one thread encoding batches of 16 videos (8 random frames) while another
                 encodes 4 captions every 5 ms, for 8 s: videos/s and the texts' p50 / p99

    python benchmarks/spin.py --work /tmp/vlrt-spin      # -> benchmarks/results/spin-cpu.{json,md}
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, write_result

SCENARIOS = ("packed batch", "whole graph", "end to end, packed", "end to end, whole graph", "mixed")


def child(scenario: str, spin: bool, work: Path) -> dict:
    """One measurement in this process (run by the parent in a fresh one)."""
    import threading

    import numpy as np

    import vlrt.runtime.backends.ort.loader as loader
    from vlrt import Runtime

    if spin:  # ONNX Runtime's default, in place of vlrt's setting
        init = loader.SessionFromOnnx.__init__
        loader.SessionFromOnnx.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "spin": True})
    bundle = work / "bundle"
    pack = scenario in ("packed batch", "end to end, packed", "mixed")
    rt = Runtime.load(bundle, threads=2, pack=pack)
    rng = np.random.default_rng(0)
    if scenario in ("packed batch", "whole graph"):
        px, mask = rng.standard_normal((4, 8, 3, 64, 64)).astype(np.float32), np.ones((4, 8), np.float32)
        rt.encode_frames(px, mask, batch_size=4)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            rt.encode_frames(px, mask, batch_size=4)
            times.append(time.perf_counter() - t0)
        return {"ms": statistics.median(times) * 1e3}
    if scenario.startswith("end to end"):
        paths = sorted(str(p) for p in (work / "videos").glob("*.mp4"))
        rt.encode_videos(paths[:16])
        t0 = time.perf_counter()
        rt.encode_videos(paths)
        return {"videos_per_s": len(paths) / (time.perf_counter() - t0)}
    px, mask = rng.standard_normal((16, 8, 3, 64, 64)).astype(np.float32), np.ones((16, 8), np.float32)
    rt.encode_frames(px, mask, batch_size=16)
    rt.encode_text(["warm up"])
    stop, videos, latency = time.perf_counter() + 8, [0], []

    def encode_videos():
        while time.perf_counter() < stop:
            rt.encode_frames(px, mask, batch_size=16)
            videos[0] += 16

    def encode_texts():
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            rt.encode_text(["a red circle moves to the left on a white background"] * 4)
            latency.append(time.perf_counter() - t0)
            time.sleep(0.005)

    threads = [threading.Thread(target=encode_videos), threading.Thread(target=encode_texts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"videos_per_s": videos[0] / 8, "text_p50_ms": float(np.percentile(latency, 50)) * 1e3,
            "text_p99_ms": float(np.percentile(latency, 99)) * 1e3}


def prepare(work: Path) -> None:
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench.quality import write_gallery

    if not (work / "bundle" / "vlrt.json").exists():
        unpack_default_bundle(work / "bundle")
    write_gallery(work / "videos", None)


def markdown(result: dict) -> str:
    lines = [f"# Spinning against blocking ONNX Runtime workers in vlrt's runtime ({result['date']})", "",
             f"{result['machine']}. The embedded model, 2 intra-op threads, fp32 bundle; each figure from a "
             f"fresh process, the two settings alternating, {result['repeats']} rounds: median (min-max). "
             "`python benchmarks/spin.py`.", "",
             "| scenario | measure | spinning (ONNX Runtime's default) | blocking (vlrt) | blocking / spinning |",
             "|---|---|---|---|---|"]
    for scenario, measures in result["scenarios"].items():
        for measure, by in measures.items():
            s, b = by["spin"], by["block"]
            lines.append(f"| {scenario} | {measure} | {statistics.median(s):.2f} ({min(s):.2f}-{max(s):.2f}) | "
                         f"{statistics.median(b):.2f} ({min(b):.2f}-{max(b):.2f}) | "
                         f"{statistics.median(b) / statistics.median(s):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/vlrt-spin"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "spin-cpu.json"))
    p.add_argument("--child", nargs=2, metavar=("SCENARIO", "SETTING"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "spin", args.work)))
        return
    prepare(args.work)
    scenarios: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in range(args.repeats):
        for scenario in SCENARIOS:
            for setting in (("spin", "block") if r % 2 == 0 else ("block", "spin")):
                cmd = [sys.executable, __file__, "--work", str(args.work), "--child", scenario, setting]
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                print(f"round {r + 1}: {scenario}, {setting}: {got}", file=sys.stderr, flush=True)
                for measure, value in got.items():
                    scenarios.setdefault(scenario, {}).setdefault(measure, {"spin": [], "block": []})[setting].append(value)
    result = {"benchmark": "spin", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "repeats": args.repeats, "scenarios": scenarios}
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
