"""Text-to-video search with vlrt's embedded model, end to end, on generated test videos.

The embedded model is small (≈ 2 M parameters besides its token table) and was trained by
`python -m vlrt.train` on synthetic clips of coloured shapes that move (vlrt/synth.py); it knows
nothing else. The demo writes the held-out test clips as H.264 files (captions never seen in
training), exports the shipped checkpoint (with the parity gate), embeds the clips with the real
pipeline (decode, sample, preprocess, ONNX Runtime), runs every caption as a query and prints
text->video and video->text Recall@1/5/10, median rank, and throughput, then compares the
figures with the ones recorded when the model was shipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from vlrt.cli.common import Stages, add_json, print_json, subcommand
from vlrt.errors import VlrtError

MODEL = "default_model.pt.gz"
RECORDED = "demo_figures.json"


def register(sub) -> None:
    p = subcommand(sub, "demo", __doc__)
    p.add_argument("-o", "--output", help="keep the videos, bundle and index here (default: a temp dir)")
    p.add_argument("--videos", type=int, help="use only the first N test clips (default: all)")
    p.add_argument("--backend", choices=["ort-cpu", "ort-cuda"], help="default: the best available")
    add_json(p)
    p.set_defaults(func=run)


def shipped_model() -> Path:
    path = Path(str(resources.files("vlrt").joinpath("assets", MODEL)))
    if not path.is_file():
        raise VlrtError(f"the embedded model {path} is missing from this installation")
    return path


def write_gallery(folder: Path, limit: int | None) -> tuple[list[str], list[Any]]:
    from vlrt import synth

    folder.mkdir(parents=True, exist_ok=True)
    items = list(synth.gallery("test"))[:limit]
    paths = []
    for i, (scene, seed) in enumerate(items):
        path = folder / f"test{i:03d}.mp4"
        if not path.is_file():  # clips are deterministic: a cached one is the same file
            tmp = path.with_name(f".{path.name}.tmp.mp4")
            synth.write_mp4(tmp, synth.render(scene, seed=seed))
            tmp.replace(path)
        paths.append(str(path))
    return paths, [scene for scene, _ in items]


def embed(rt, paths: list[str], *, quiet: bool):
    import numpy as np

    from vlrt.cli.progress import Progress
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    progress = Progress(len(paths), enabled=False if quiet else None)
    encode = lambda px, m: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
    out = []
    for result in encode_stream(paths, ClipLoader(rt.bundle.manifest), encode, batch_size=16):
        if result.error:
            raise VlrtError(result.error)
        out.append(result.embedding)
        progress.update(done=1)
    progress.close()
    return np.stack(out)


def figures(rt, paths: list[str], scenes: list[Any], *, quiet: bool) -> dict[str, Any]:
    from vlrt.metrics import ranks, recall_report

    t0 = time.perf_counter()
    videos = embed(rt, paths, quiet=quiet)
    seconds = time.perf_counter() - t0
    text = rt.encode_text([s.caption for s in scenes])
    scores = text @ videos.T  # (captions, videos)
    quality = recall_report(scores)
    moving = [i for i, s in enumerate(scenes) if s.motion != "still"]
    quality["motion_t2v_R@1"] = round(100 * float((ranks(scores)[moving] == 1).mean()), 2)
    quality["direction_probe_acc"] = direction_probe(rt, videos, [scenes[i] for i in moving], moving)
    return {"videos": len(paths), "quality": quality, "videos_per_s": round(len(paths) / seconds, 2),
            "scores": scores}


def direction_probe(rt, videos, scenes: list[Any], rows: list[int]) -> float:
    """% of moving clips that score higher with their caption than with the same caption in the
    opposite direction (50% = chance): the one thing a single frame cannot know."""
    from vlrt.synth import OPPOSITE

    true = rt.encode_text([s.caption for s in scenes])
    flipped = rt.encode_text([s.with_motion(OPPOSITE[s.motion]).caption for s in scenes])
    v = videos[rows]
    return round(100 * float(((true * v).sum(1) > (flipped * v).sum(1)).mean()), 2)


def recorded(n: int) -> dict[str, float] | None:
    data = json.loads(resources.files("vlrt").joinpath("assets", RECORDED).read_text())
    return data.get(str(n))


def run(args: argparse.Namespace) -> int:
    from vlrt import Runtime
    from vlrt.export import export_checkpoint

    stages = Stages(quiet=args.json)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.output or tmp)
        stages("writing the held-out test clips as H.264 files")
        paths, scenes = write_gallery(root / "videos", args.videos)
        result = export_checkpoint(shipped_model(), root / "bundle", overwrite=True, progress=stages)
        rt = Runtime.load(root / "bundle", backend=args.backend)
        stages(f"embedding {len(paths)} clips ({rt.backend})")
        out = figures(rt, paths, scenes, quiet=args.json)
    scores = out.pop("scores")
    want = recorded(out["videos"])
    out["matches_recorded"] = None if want is None else want == out["quality"]
    out["validation_min_cosine"] = result.report.min_cosine
    if args.json:
        print_json(out)
    else:
        _print(out, want, scenes, scores)
    return 0


def _print(out: dict[str, Any], want, scenes, scores) -> None:
    q = out["quality"]
    print(f"{out['videos']} held-out clips, one caption each (chance R@1 = {100 / out['videos']:.2f}%); "
          f"export parity min cos {out['validation_min_cosine']:.6f}")
    for d in ("t2v", "v2t"):
        label = "text->video" if d == "t2v" else "video->text"
        print(f"  {label}: R@1 {q[f'{d}_R@1']:5.1f}  R@5 {q[f'{d}_R@5']:5.1f}  R@10 {q[f'{d}_R@10']:5.1f}  "
              f"median rank {q[f'{d}_median_rank']:g}")
    print(f"  text->video R@1 on captions with motion: {q['motion_t2v_R@1']:.1f}")
    print(f"  direction probe (own caption vs the opposite direction, chance 50): {q['direction_probe_acc']:.1f}")
    print(f"  throughput: {out['videos_per_s']:.1f} videos/s (decode + sample + preprocess + encode)")
    for i in range(0, len(scenes), max(1, len(scenes) // 3))[:3]:
        best = scores[i].argmax()
        mark = "correct" if best == i else f"wrong; the right clip is at rank {int((scores[i] > scores[i, i]).sum()) + 1}"
        print(f"  query {scenes[i].caption!r}\n    -> top clip shows {scenes[best].caption!r} ({mark})")
    if want is None:
        print(f"  (no recorded figures for {out['videos']} clips to compare with)")
    elif out["matches_recorded"]:
        print("  figures equal the ones recorded when the model was shipped")
    else:
        print(f"  figures DIFFER from the recorded ones: {want}", file=sys.stderr)
