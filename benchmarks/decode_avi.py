"""Reading the frames `fps_timeline` samples from MPEG-4 AVIs, plain and with packed B-frames
(the DivX/Xvid layout of UCF101 and HMDB51): time and frames decoded, per file kind.

    python benchmarks/decode_avi.py            # -> benchmarks/results/decode-avi.{json,md}

The files are made by tests/video_assets.py (10 s, 640x360, 24 fps, keyframes every 12 frames);
each read is repeated and the median kept.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the checked-in test-video generators

KINDS = {  # name -> (writer name, options)
    "plain MPEG-4 AVI": ("write_video", {"codec": "mpeg4", "bframes": False}),
    "packed B-frames, closed GOP": ("write_packed_avi", {"closed_gop": True}),
    "packed B-frames, open GOP": ("write_packed_avi", {"closed_gop": False}),
}


def measure(path: Path, repeats: int) -> dict:
    from vlrt.families import get_family
    from vlrt.runtime.pipeline import sample_indices
    from vlrt.runtime.video import DecodeStats, probe, read_frames

    info = probe(path)
    indices = sample_indices(info, get_family("clip4clip").sampling, 12)
    times, stats = [], DecodeStats()
    for _ in range(repeats):
        stats = DecodeStats()
        t0 = time.perf_counter()
        read_frames(path, indices, info=info, stats=stats)
        times.append(time.perf_counter() - t0)
    return {"frames": info.num_frames, "sampled": len(indices), "ms": round(1000 * statistics.median(times), 1),
            "frames_decoded": stats.frames_decoded, "seeks": stats.seeks, "by_output_order": info.by_output_order}


def main() -> None:
    import video_assets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(RESULTS / "decode-avi.json"))
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (writer, options) in KINDS.items():
            path = Path(tmp) / (writer + str(len(rows)) + ".avi")
            getattr(video_assets, writer)(path, frames=240, width=640, height=360, fps=24, gop=12, **options)
            rows[name] = measure(path, args.repeats)
    result = {"benchmark": "decode-avi", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "repeats": args.repeats, "rows": rows}
    lines = [f"# Sampled frames from MPEG-4 AVIs ({result['date']})", "", f"{result['machine']}.", "",
             "| file | frames | sampled | ms (median) | frames decoded | seeks | placed by output order |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {r['frames']} | {r['sampled']} | {r['ms']} | {r['frames_decoded']} | {r['seeks']} "
              f"| {r['by_output_order']} |" for n, r in rows.items()]
    lines += ["", "Produced by `python benchmarks/decode_avi.py`: 10 s at 640x360, 24 fps, keyframes every 12 "
              "frames; the 1-fps default rule samples up to 12 frames."]
    write_result(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
