"""How long `vlrt export` takes on a full-size checkpoint on this machine.

Writes a ViT-B/32 OpenAI TorchScript archive with random weights (the test writers' real key
layout), runs `python -m vlrt export` on it in a fresh process, and records the wall time, the
peak resident memory of that process, the stage times the command prints and its parity report.

    python benchmarks/export_b32.py            # -> benchmarks/results/export-vit-b32.{json,md}
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in checkpoint writers


def run(workdir: Path) -> dict:
    import onnxruntime
    import torch
    from checkpoint_writers import VIT_B_32, write_openai_torchscript

    ckpt = write_openai_torchscript(workdir / "ViT-B-32.pt", VIT_B_32, seed=0)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "vlrt", "export", str(ckpt), "-o", str(workdir / "bundle"), "--json"],
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"export failed: {res.stderr.strip()}")
    out = json.loads(res.stdout)
    # ru_maxrss of waited-for children is in KiB on Linux; the export is the only child.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "benchmark": "export-vit-b32", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
        "checkpoint": "ViT-B/32 OpenAI TorchScript archive, random weights (tests/checkpoint_writers.py)",
        "checkpoint_mb": round(ckpt.stat().st_size / 1e6, 1),
        "wall_s": round(wall, 2), "peak_rss_mb": round(peak_mb),
        "stage_seconds": out.get("seconds", {}),
        "validation": {k: out["validation"][k] for k in ("min_cosine", "max_abs_diff", "passed")},
    }


def markdown(r: dict) -> str:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["stage_seconds"].items())
    v = r["validation"]
    return (f"# `vlrt export` of a full-size ViT-B/32 ({r['date']})\n\n{r['machine']}; torch {r['versions']['torch']}, "
            f"onnxruntime {r['versions']['onnxruntime']}.\n\n"
            f"{r['checkpoint']}, {r['checkpoint_mb']} MB: **{r['wall_s']:.1f} s** wall for the whole command "
            f"(process start and imports included), peak RSS {r['peak_rss_mb']} MB; stages: {stages}. "
            f"Parity gate: min cosine {v['min_cosine']:.9f}, max |diff| {v['max_abs_diff']:.2e}, "
            f"{'PASS' if v['passed'] else 'FAIL'}.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(RESULTS / "export-vit-b32.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vlrt-export-bench-") as tmp:
        result = run(Path(tmp))
    write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
