"""Text-to-video search with vlrt's embedded model, end to end, on generated test videos.

The embedded model is small (≈ 2 M parameters besides its token table) and was trained by
`python -m vlrt.train` on synthetic clips of coloured shapes that move (vlrt/synth.py); it knows
nothing else. The demo writes the held-out test clips as H.264 files (captions never seen in
training), exports the shipped checkpoint (with the parity gate), builds the default engine for
this machine (as `vlrt build` does), embeds the clips with the real pipeline (decode, sample,
preprocess, ONNX Runtime), runs every caption as a query and prints text->video and video->text
Recall@1/5/10, median rank and throughput, for the fp32 export and for the built engine (with
its top-1 agreement with fp32). It also scores a single-frame baseline (the middle sampled frame
of each clip alone) and two probes that only time can answer: own caption against the opposite
direction and against the other speed (chance: 50%). The fp32 figures must equal the ones
recorded when the model was shipped: the demo exits 1 when they differ.
"""
from __future__ import annotations

import argparse
import json
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
    for scene, seed in items:
        path = folder / synth.clip_name(scene, seed)
        if not path.is_file():  # the name changes with the clip: a cached file is the same clip
            tmp = path.with_name(f".{path.name}.tmp.mp4")
            synth.write_mp4(tmp, synth.render(scene, seed=seed))
            tmp.replace(path)
        paths.append(str(path))
    return paths, [scene for scene, _ in items]


def embed(rt, paths: list[str], *, quiet: bool, single_frame: list | None = None):
    """(N, D) video embeddings. With `single_frame` (a list), also the embedding of each clip's
    middle sampled frame alone, appended to it in input order (the single-frame baseline)."""
    import numpy as np

    from vlrt.cli.progress import Progress
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    def encode(pixels, mask):  # (B, T, 3, S, S), (B, T)
        if single_frame is not None:
            middle = mask.sum(1).astype(int) // 2  # (B,) frame 4 of 8, as vlrt.train.evaluate takes
            rows = np.arange(len(mask))
            single_frame.extend(rt.encode_frames(pixels[rows, middle][:, None], np.ones((len(mask), 1), np.float32)))
        return rt.encode_frames(pixels, mask, return_frames=True)

    progress = Progress(len(paths), enabled=False if quiet else None)
    out = []
    for result in encode_stream(paths, ClipLoader(rt.bundle.manifest), encode, batch_size=16):
        if result.error:
            raise VlrtError(result.error)
        out.append(result.embedding)
        progress.update(done=1)
    progress.close()
    return np.stack(out)


def quality_of(rt, videos, scenes: list[Any]) -> tuple[dict[str, float], Any]:
    """Recall figures, R@1 on captions with motion, and the direction and speed probes."""
    from vlrt import synth
    from vlrt.metrics import ranks, recall_report

    text = rt.encode_text([s.caption for s in scenes])  # (captions, D)
    scores = text @ videos.T  # (captions, videos)
    quality = recall_report(scores)
    moving = [i for i, s in enumerate(scenes) if s.motion != "still"]
    quality["motion_t2v_R@1"] = round(100 * float((ranks(scores)[moving] == 1).mean()), 2)
    if moving:
        own = (text[moving] * videos[moving]).sum(1)  # (M,)
        for name, twins in synth.probes([scenes[i] for i in moving]).items():
            # % of moving clips closer to their own caption than to its twin (chance: 50).
            twin = (rt.encode_text(twins) * videos[moving]).sum(1)
            quality[f"{name}_probe_acc"] = round(100 * float((own > twin).mean()), 2)
    return quality, scores


def figures(rt, paths: list[str], scenes: list[Any], *, quiet: bool, baseline: bool = False) -> dict[str, Any]:
    import numpy as np

    single: list | None = [] if baseline else None
    t0 = time.perf_counter()
    videos = embed(rt, paths, quiet=quiet, single_frame=single)
    seconds = time.perf_counter() - t0
    quality, scores = quality_of(rt, videos, scenes)
    out = {"videos": len(paths), "quality": quality, "videos_per_s": round(len(paths) / seconds, 2),
           "scores": scores, "embeddings": videos}
    if single is not None:
        out["single_frame_baseline"] = quality_of(rt, np.stack(single), scenes)[0]
    return out


def recorded(n: int) -> dict[str, float] | None:
    data = json.loads(resources.files("vlrt").joinpath("assets", RECORDED).read_text())
    return data.get(str(n))


def run(args: argparse.Namespace) -> int:
    from vlrt import Runtime
    from vlrt.export import export_checkpoint
    from vlrt.export.build import build_engine
    from vlrt.metrics import top1_agreement

    stages = Stages(quiet=args.json)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.output or tmp)
        stages("writing the held-out test clips as H.264 files")
        paths, scenes = write_gallery(root / "videos", args.videos)
        result = export_checkpoint(shipped_model(), root / "bundle", overwrite=True, progress=stages)
        built = build_engine(root / "bundle", backend=args.backend, progress=stages)
        rt = Runtime.load(root / "bundle", backend=args.backend)
        stages(f"embedding {len(paths)} clips with the fp32 export ({rt.backend})")
        out = figures(rt, paths, scenes, quiet=args.json, baseline=True)
        engine = None
        if built.key is not None:
            ert = Runtime.load(root / "bundle", backend=args.backend, precision=built.manifest["precision"],
                               engine=built.key)
            stages(f"embedding {len(paths)} clips with the default engine ({_engine_label(built)})")
            engine = figures(ert, paths, scenes, quiet=args.json)
    scores, videos = out.pop("scores"), out.pop("embeddings")
    if engine is not None:
        e_scores, e_videos = engine.pop("scores"), engine.pop("embeddings")
        engine.update({"engine": _engine_label(built), "key": built.key,
                       "top1_agreement_t2v": top1_agreement(e_scores, scores),
                       "top1_agreement_v2t": top1_agreement(e_scores.T, scores.T),
                       "min_video_cosine": round(float((e_videos * videos).sum(1).min()), 6)})
    out["default_engine"] = engine
    want = recorded(out["videos"])
    out["matches_recorded"] = None if want is None else want == out["quality"]
    out["validation_min_cosine"] = result.report.min_cosine
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print_json(out)
    else:
        _print(out, scenes, scores)
    if out["matches_recorded"] is False:
        raise VlrtError(f"the fp32 figures differ from those recorded when the model was shipped "
                        f"({RECORDED}): {_differences(want, out['quality'])}")
    return 0


def _engine_label(built) -> str:
    m = built.manifest
    mode = m.get("options", {}).get("mode")
    return f"{m['backend']} {m['precision']}" + (f" {mode}" if m["precision"] == "int8" and mode else "")


def _differences(want: dict[str, float], got: dict[str, float]) -> str:
    return ", ".join(f"{k} {got.get(k)} (recorded {v})" for k, v in want.items() if got.get(k) != v)


def _recall_lines(q: dict[str, float], indent: str = "  ") -> list[str]:
    return [f"{indent}{'text->video' if d == 't2v' else 'video->text'}: R@1 {q[f'{d}_R@1']:5.1f}  "
            f"R@5 {q[f'{d}_R@5']:5.1f}  R@10 {q[f'{d}_R@10']:5.1f}  median rank {q[f'{d}_median_rank']:g}"
            for d in ("t2v", "v2t")]


def _print(out: dict[str, Any], scenes, scores) -> None:
    q, b = out["quality"], out["single_frame_baseline"]
    print(f"{out['videos']} held-out clips, one caption each (chance R@1 = {100 / out['videos']:.2f}%); "
          f"export parity min cos {out['validation_min_cosine']:.6f}")
    print("fp32 export:")
    print("\n".join(_recall_lines(q)))
    print(f"  text->video R@1 on captions with motion: {q['motion_t2v_R@1']:.1f} "
          f"(single-frame baseline: {b['motion_t2v_R@1']:.1f})")
    for name, against in (("direction", "the opposite direction"), ("speed", "the other speed")):
        if f"{name}_probe_acc" in q:
            print(f"  {name} probe (own caption vs {against}, chance 50): {q[f'{name}_probe_acc']:.1f} "
                  f"(single-frame baseline: {b[f'{name}_probe_acc']:.1f})")
    print(f"  throughput: {out['videos_per_s']:.1f} videos/s (decode + sample + preprocess + encode, "
          "and the baseline's one frame a clip)")
    e = out["default_engine"]
    if e is None:
        print("default engine: fp32 on this backend, the export itself")
    else:
        print(f"default engine ({e['engine']}):")
        print("\n".join(_recall_lines(e["quality"])))
        print(f"  top-1 agreement with fp32: t2v {e['top1_agreement_t2v']:.1f}%, v2t {e['top1_agreement_v2t']:.1f}%; "
              f"min video cosine {e['min_video_cosine']:.6f}; throughput {e['videos_per_s']:.1f} videos/s")
    for i in range(0, len(scenes), max(1, len(scenes) // 3))[:3]:
        best = scores[i].argmax()
        mark = "correct" if best == i else f"wrong; the right clip is at rank {int((scores[i] > scores[i, i]).sum()) + 1}"
        print(f"  query {scenes[i].caption!r}\n    -> top clip shows {scenes[best].caption!r} ({mark})")
    if out["matches_recorded"] is None:
        print(f"  (no recorded figures for {out['videos']} clips to compare with)")
    elif out["matches_recorded"]:
        print("  fp32 figures equal the ones recorded when the model was shipped")
    print(f"total {out['seconds']:.0f} s")
