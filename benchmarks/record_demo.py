"""Run `vlrt demo` on the full test set and on CI's 40 clips, and record what it printed.

    python benchmarks/record_demo.py                 # -> benchmarks/results/demo-cpu.{json,md}
    python benchmarks/record_demo.py --ship          # also vlrt/assets/demo_figures.json
    python benchmarks/record_demo.py --model xclip   # the multi-grained sibling -> demo-xclip-cpu.{json,md}

--ship is for a newly trained model only: it makes the figures measured now the ones every later
`vlrt demo` must reproduce (it exits 1 when they differ).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, write_result

from vlrt.assets import MODELS

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "vlrt" / "assets" / "demo_figures.json"


def demo(videos: int | None, model: str) -> dict:
    cmd = [sys.executable, "-m", "vlrt", "demo", "--json", "--model", model] + (["--videos", str(videos)] if videos else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode not in (0, 1) or not res.stdout.strip():
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return json.loads(res.stdout)


def markdown(r: dict) -> str:
    name = "" if r.get("model", "default") == "default" else f" `{r['model']}`"
    lines = [f"# `vlrt demo` on the embedded{name} model ({r['date']})", "", f"{r['machine']}.", "",
             "| clips | run | t2v R@1 | t2v R@5 | v2t R@1 | v2t R@5 | motion t2v R@1 | direction probe | speed probe "
             "| top-1 agreement t2v / v2t | min video cos | videos/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        rows = [("fp32 bundle", run["quality"], None), ("single-frame baseline", run["single_frame_baseline"], None)]
        if run["default_engine"]:
            rows.append((f"default engine ({run['default_engine']['engine']})", run["default_engine"]["quality"],
                         run["default_engine"]))
        for name, q, e in rows:
            agree = f"{e['top1_agreement_t2v']:.2f} / {e['top1_agreement_v2t']:.2f}" if e else ""
            cos = f"{e['min_video_cosine']:.6f}" if e else ""
            speed = e["videos_per_s"] if e else (run["videos_per_s"] if name == "fp32 bundle" else "")
            lines.append(f"| {run['videos']} | {name} | {q['t2v_R@1']} | {q['t2v_R@5']} | {q['v2t_R@1']} | {q['v2t_R@5']} "
                         f"| {q['motion_t2v_R@1']} | {q['direction_probe_acc']} | {q['speed_probe_acc']} | {agree} "
                         f"| {cos} | {speed} |")
    lines += ["", "Chance R@1 is 100/clips %; the probes' chance is 50%. The baseline feeds the same model the "
              "middle sampled frame of each clip alone. Whole demo (write clips, unpack the shipped bundle, build, embed with fp32, index with the engine; videos/s for the engine is indexing through Index.add): "
              + ", ".join(f"{run['seconds']:.0f} s for {run['videos']} clips" for run in r["runs"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ship", action="store_true", help=f"write {FIGURES.relative_to(ROOT)} from this run")
    p.add_argument("--model", choices=MODELS, default="default", help="which embedded model (default: default)")
    p.add_argument("--out", help="default: benchmarks/results/demo-cpu.json, or demo-MODEL-cpu.json")
    args = p.parse_args()
    runs = [demo(None, args.model), demo(40, args.model)]
    result = {"benchmark": "demo", "model": args.model, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "runs": runs}
    if args.ship:  # this model's figures only; the other model's stay as recorded
        figures = json.loads(FIGURES.read_text())
        mine = {str(r["videos"]): r["quality"] for r in runs}
        if args.model == "default":
            figures.update(mine)
        else:
            figures[args.model] = mine
        FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    out = args.out or RESULTS / ("demo-cpu.json" if args.model == "default" else f"demo-{args.model}-cpu.json")
    write_result(out, result, markdown(result))


if __name__ == "__main__":
    main()
