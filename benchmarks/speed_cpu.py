"""`vlrt bench --speed` for ViT-B/32, ViT-B/16 and the embedded model, in one run, on this CPU.

    python benchmarks/speed_cpu.py --workdir /tmp/vlrt-speed

Three bundles, each measured with vlrt.bench.speed.run_speed (every configuration side by side: eager
PyTorch fp32, the plain ORT export, fp32 + fused attention, int8 dynamic (the ort-cpu default
engine), int8 + fused attention, int8 + token merging, int8 + frame skipping):

  ViT-B/32 + seqTransf (4 layers), random weights, 12 frames; token merging r = 2, 4
  ViT-B/16 + seqTransf (4 layers), random weights, 12 frames; token merging r = 8, 16
  the embedded trained model (vlrt/assets/default_model.pt.gz): the same plus the retrieval
  columns on the held-out synthetic test clips; token merging r = 1, 2; frame skipping at 1 level

End-to-end columns: 16 H.264 640x360 10 s videos (benchmarks/e2e.py's generator) for the random
bundles, the synthetic test clips for the embedded model. Random weights make the cosine column
the only accuracy figure there; the retrieval columns of the trained model are what an
optimization costs users. Writes benchmarks/results/speed-cpu.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, stages, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/vlrt-speed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=["ViT-B-32", "ViT-B-16", "default"], action="append",
                   help="measure only these bundles (repeatable); the others keep their results in --out")
    p.add_argument("--out", default=str(RESULTS / "speed-cpu.json"))
    args = p.parse_args()

    from e2e import make_bundle, make_videos

    from vlrt.bench.quality import write_gallery
    from vlrt.bench.speed import default_configs, markdown, plot, run_speed
    from vlrt.export import export_checkpoint

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    clips = work / "e2e-videos"
    if not clips.is_dir():
        clips.mkdir()
        make_videos(clips, 16, seconds=10, width=640, height=360, fps=24)
    e2e = sorted(str(p) for p in clips.glob("*.mp4"))
    results, sections = [], []
    for name, merges in [("ViT-B-32", [2, 4]), ("ViT-B-16", [8, 16])]:
        if args.only and name not in args.only:
            continue
        folder = work / name
        bundle = folder / "bundle"
        if not (bundle / "vlrt.json").is_file():
            folder.mkdir(exist_ok=True)
            make_bundle(folder, name)
        result = run_speed(bundle, configs=default_configs(merges), threads=args.threads, batch=1, frames=12,
                           warmup=2, repeats=args.repeats, videos=e2e, checkpoint=str(folder / "model.pt"),
                           progress=stages())
        results.append((f"{name} + seqTransf, random weights", result))
    if not args.only or "default" in args.only:
        bundle = work / "default" / "bundle"  # exported afresh: the shipped model may have changed
        export_checkpoint(ROOT / "vlrt" / "assets" / "default_model.pt.gz", bundle, overwrite=True)
        paths, scenes = write_gallery(work / "synthetic-test", None)
        result = run_speed(bundle, configs=default_configs([1, 2], [1.0]), threads=args.threads, batch=8,
                           frames=12, warmup=3, repeats=4 * args.repeats, videos=paths[:64],  # ~0.1 s a run: more
                           quality=(paths, [s.caption for s in scenes]), progress=stages())
        results.append(("embedded default model (64 px, 4+3 layers, seqTransf), synthetic test clips", result))
    out = Path(args.out)
    if args.only and out.is_file():  # re-measure some bundles, keep the others' last results
        kept = json.loads(out.read_text())["results"]
        kept.update(dict(results))
        results = list(kept.items())
    for title, result in results:
        sections.append(markdown(result, title).replace("# ", "## ", 1))
    combined = {"benchmark": "speed-cpu", "results": {title: r for title, r in results}}
    header = ("# Encoder and end-to-end speed per build configuration, CPU\n\n"
              "Produced by `python benchmarks/speed_cpu.py` (vlrt.bench.speed.run_speed, the code behind "
              "`vlrt bench --speed`); the plot is speed-cpu.png.\n\n")
    write_result(out, combined, header + "\n".join(sections))
    plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
