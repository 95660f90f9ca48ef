"""Text-to-video search with vlrt's embedded model, end to end, on generated test videos.

The embedded model is small (≈ 2 M parameters besides its token table) and was trained by
`python -m vlrt.models.train` on synthetic clips of coloured shapes that move
(vlrt/bench/synth.py); it knows nothing else. vlrt ships it twice: as an exported, hash-checked
bundle (ONNX graphs + manifest), which the demo runs with no PyTorch, and as the checkpoint it
was exported from (`--from-checkpoint` exports it again, parity gate included; needs
vlrt[export]).

The demo writes the held-out test clips as H.264 files (captions never seen in training), chooses
this machine's default engine as `vlrt build --auto` does (every CPU candidate built and timed
here; static int8 calibrated on 8 training clips; the Recall@1 gate on the test clips; needs
vlrt[build]), embeds the clips with the real pipeline (decode, sample, preprocess, encode), runs
every caption as a query and prints text->video and video->text Recall@1/5/10, median rank and
throughput, for the fp32 bundle and for the chosen engine (with its top-1 agreement with fp32). It also scores a
single-frame baseline (the middle sampled frame of each clip alone) and two probes that only
time can answer: own caption against the opposite direction and against the other speed
(chance: 50%). The fp32 figures must equal the ones recorded when the model was shipped: the
demo exits 1 when they differ.

--model xclip runs the embedded model's multi-grained sibling instead: the same towers and head
with X-CLIP's scorer, trained the same way; every caption is scored against every clip by the
scorer (per-word and per-frame features). It runs its fp32 bundle only (no engine is chosen;
`vlrt build --auto` on its bundle gates candidates on the scorer's Recall@1), without the
single-frame baseline (its scorer takes exactly 8 frame slots).

With -o DIR it leaves, to explore:
  DIR/videos/        the test clips (H.264 MP4)
  DIR/captions.tsv   file, caption, split: one line per clip
  DIR/calib/         the calibration clips (training split)
  DIR/bundle/        the bundle, the engines it built under bundle/engines/<key>/, and the
                     choice with every candidate's figures in bundle/engines/auto.json
  DIR/index/         an index of the clips, embedded with the chosen engine (with the fp32
                     graphs when none was built or they were fastest), so that `vlrt search DIR/index "a red circle
                     moves to the left"` can be checked against captions.tsv by eye
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vlrt.cli.common import Stages, add_backend, add_json, fail, positive_int, print_json, subcommand
from vlrt.errors import VlrtError

CALIBRATION_CLIPS = 8


def register(sub) -> None:
    p = subcommand(sub, "demo", __doc__)
    p.add_argument("-o", "--output", help="keep the videos, captions, bundle, engine and index here "
                                          "(default: a temporary directory, removed at the end)")
    p.add_argument("--videos", type=positive_int, help="use only the first N test clips (default: all)")
    add_backend(p, only_graphs=True)
    p.add_argument("--model", choices=["default", "xclip"], default="default",
                   help="xclip: the multi-grained sibling (X-CLIP's scorer) instead of the default model")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="export the shipped checkpoint (parity gate included) instead of unpacking the shipped "
                        "bundle; needs vlrt[export] (PyTorch)")
    add_json(p)
    p.set_defaults(func=run)


def make_bundle(root: Path, *, from_checkpoint: bool, progress, model: str = "default") -> dict[str, Any]:
    """The demo's bundle under root/bundle: unpacked from the package, or exported again."""
    from vlrt.assets import default_checkpoint, unpack_default_bundle
    from vlrt.runtime.bundle import Bundle

    if not from_checkpoint:
        progress("unpacking the shipped bundle (hash-checked)")
        bundle = Bundle.open(unpack_default_bundle(root / "bundle", model))
        return {"source": "shipped bundle", "validation_min_cosine": bundle.manifest["validation"]["min_cosine"]}
    try:
        from vlrt.export import export_checkpoint
    except ImportError as exc:
        raise VlrtError(f"--from-checkpoint exports with PyTorch, which is not installed ({exc.name or exc}); "
                        "pip install 'vlrt[export]', or run the demo without it") from None
    result = export_checkpoint(default_checkpoint(model), root / "bundle", overwrite=True, progress=progress)
    return {"source": "checkpoint, exported now", "validation_min_cosine": result.report.min_cosine}


def build_default(root: Path, paths: list[str], scenes: list[Any], backend: str | None, progress):
    """This machine's default engine, chosen as `vlrt build --auto` chooses (the demo's clips are
    the labelled gallery); None when the build extra is missing."""
    from vlrt.build import require_build_extra

    try:
        require_build_extra()
    except VlrtError as exc:
        progress(f"no engine built: {exc}")
        return None
    from vlrt.bench.quality import write_gallery
    from vlrt.build.auto import build_auto

    progress("writing 8 training clips to calibrate static int8 on")
    write_gallery(root / "calib", CALIBRATION_CLIPS, split="train")
    return build_auto(root / "bundle", calib=root / "calib", gallery=(paths, [s.caption for s in scenes]),
                      only=[backend] if backend else None, progress=progress)


def run(args: argparse.Namespace) -> int:
    from vlrt.assets import recorded_figures
    from vlrt.bench.quality import write_gallery

    stages = Stages(quiet=args.json)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.output or tmp)
        stages("writing the held-out test clips as H.264 files")
        paths, scenes = write_gallery(root / "videos", args.videos)
        write_captions(root / "captions.tsv", paths, scenes)
        source = make_bundle(root, from_checkpoint=args.from_checkpoint, progress=stages, model=args.model)
        auto = build_default(root, paths, scenes, args.backend, stages) if args.model == "default" else None
        out = measure(root, paths, scenes, auto, args, stages)
    out["bundle_source"] = source["source"]
    out["validation_min_cosine"] = source["validation_min_cosine"]
    want = recorded_figures(out["videos"], args.model)
    out["matches_recorded"] = None if want is None else want == out["quality"]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.output:
        out["output"] = {"videos": str(root / "videos"), "captions": str(root / "captions.tsv"),
                         "bundle": str(root / "bundle"), "index": str(root / "index")}
    scores = out.pop("scores")
    if not args.json:
        _print(out, scenes, scores)
    if out["matches_recorded"] is False:
        return fail(f"the fp32 figures differ from those recorded when the model was shipped: "
                    f"{_differences(want, out['quality'])}", json_mode=args.json, extra=out)
    if args.json:
        print_json(out)
    return 0


def write_captions(path: Path, paths: list[str], scenes: list[Any]) -> None:
    lines = ["file\tcaption\tsplit"] + [f"{Path(p).name}\t{s.caption}\ttest" for p, s in zip(paths, scenes)]
    path.write_text("\n".join(lines) + "\n")


def measure(root: Path, paths: list[str], scenes: list[Any], auto, args, stages) -> dict[str, Any]:
    """fp32 figures (with the single-frame baseline), then the chosen engine's, whose embeddings
    come from the index the demo leaves behind."""
    from vlrt import Runtime
    from vlrt.bench.metrics import top1_agreement
    from vlrt.bench.quality import figures, quality_of

    rt = Runtime.load(root / "bundle", backend=args.backend, precision="fp32")
    stages(f"embedding {len(paths)} clips with the fp32 bundle ({rt.backend})")
    out = figures(rt, paths, scenes, baseline=not rt.multi_vector)
    choice = auto["choice"] if auto is not None else {"name": f"{rt.backend} fp32", "backend": rt.backend, "key": None}
    stages(f"indexing {len(paths)} clips with {choice['name']}")
    t0 = time.perf_counter()
    ert, e_videos = write_index(root / "index", root / "bundle", paths, backend=choice["backend"],
                                engine=choice["key"])
    seconds = time.perf_counter() - t0
    videos, scores = out.pop("embeddings"), out["scores"]
    out["default_engine"] = None
    if auto is not None:
        quality, e_scores = quality_of(ert, e_videos, scenes)
        out["default_engine"] = {
            "name": choice["name"], "engine": ert.engine_line(), "key": choice["key"], "quality": quality,
            "videos_per_s": round(len(paths) / seconds, 2),
            "top1_agreement_t2v": top1_agreement(e_scores, scores),
            "top1_agreement_v2t": top1_agreement(e_scores.T, scores.T),
            "min_video_cosine": round(float((e_videos * videos).sum(1).min()), 6),
            "candidates": [{k: c[k] for k in ("name", "status", "frames_per_s") if k in c}
                           for c in auto["candidates"]]}
    return out


def write_index(dest: Path, bundle: Path, paths: list[str], *, backend: str, engine: str | None):
    """An index of the clips made through `Index.create` / `add` (as `vlrt embed` makes one) with
    `engine` (None: the fp32 graphs); returns the runtime that encoded them and their (N, D)
    embeddings in the order of `paths`."""
    import numpy as np

    from vlrt import Index

    if dest.exists():  # the demo's own index from an earlier run, perhaps of another bundle: made anew
        if not (dest / "index.json").is_file():
            raise VlrtError(f"{dest}: exists and is not a vlrt index; refusing to replace it")
        shutil.rmtree(dest)
    with Index.create(dest, bundle, backend=backend, engine=engine) as index:
        summary = index.add(paths, batch_size=16)
        if summary.failed:
            raise VlrtError(f"{len(summary.failed)} clips failed to embed; first: {summary.failed[0]['error']}")
        row = {Path(p).resolve(): i for i, p in enumerate(index.paths)}
        return index.runtime(), np.stack([index.embeddings[row[Path(p).resolve()]] for p in paths])


def _differences(want: dict[str, float], got: dict[str, float]) -> str:
    return ", ".join(f"{k} {got.get(k)} (recorded {v})" for k, v in want.items() if got.get(k) != v)


def _recall_lines(q: dict[str, float], indent: str = "  ") -> list[str]:
    return [f"{indent}{'text->video' if d == 't2v' else 'video->text'}: R@1 {q[f'{d}_R@1']:5.1f}  "
            f"R@5 {q[f'{d}_R@5']:5.1f}  R@10 {q[f'{d}_R@10']:5.1f}  median rank {q[f'{d}_median_rank']:g}"
            for d in ("t2v", "v2t")]


def _print(out: dict[str, Any], scenes, scores) -> None:
    q, b = out["quality"], out.get("single_frame_baseline")
    base = (lambda key: f" (single-frame baseline: {b[key]:.1f})") if b else (lambda key: "")  # noqa: E731
    print(f"{out['videos']} held-out clips, one caption each (chance R@1 = {100 / out['videos']:.2f}%); "
          f"bundle: {out['bundle_source']}, export parity min cos {out['validation_min_cosine']:.6f}")
    print("fp32 bundle:" if b else "fp32 bundle, scored by the model's scorer:")
    print("\n".join(_recall_lines(q)))
    print(f"  text->video R@1 on captions with motion: {q['motion_t2v_R@1']:.1f}{base('motion_t2v_R@1')}")
    for name, against in (("direction", "the opposite direction"), ("speed", "the other speed")):
        if f"{name}_probe_acc" in q:
            print(f"  {name} probe (own caption vs {against}, chance 50): {q[f'{name}_probe_acc']:.1f}"
                  f"{base(f'{name}_probe_acc')}")
    print(f"  throughput: {out['videos_per_s']:.1f} videos/s (decode + sample + preprocess + encode"
          + (", and the baseline's one frame a clip)" if b else ")"))
    e = out["default_engine"]
    if e is None:
        print("default engine: none built; the index holds the fp32 bundle's embeddings")
        if not b:
            print("  (the multi-grained demo runs the fp32 bundle only)")
    else:
        tried = ", ".join(f"{c['name']} {c['frames_per_s']:.0f}" for c in e["candidates"] if "frames_per_s" in c)
        print(f"default engine, the fastest candidate here that holds the gates (frames/s: {tried}):")
        print(f"  {e['name']}: {e['engine']}")
        print("\n".join(_recall_lines(e["quality"])))
        print(f"  top-1 agreement with fp32: t2v {e['top1_agreement_t2v']:.1f}%, v2t {e['top1_agreement_v2t']:.1f}%; "
              f"min video cosine {e['min_video_cosine']:.6f}; indexing {e['videos_per_s']:.1f} videos/s")
    for i in range(0, len(scenes), max(1, len(scenes) // 3))[:3]:
        best = scores[i].argmax()
        mark = "correct" if best == i else f"wrong; the right clip is at rank {int((scores[i] > scores[i, i]).sum()) + 1}"
        print(f"  query {scenes[i].caption!r}\n    -> top clip shows {scenes[best].caption!r} ({mark})")
    if out["matches_recorded"] is None:
        print(f"  (no recorded figures for {out['videos']} clips to compare with)")
    elif out["matches_recorded"]:
        print("  fp32 figures equal the ones recorded when the model was shipped")
    if "output" in out:
        o = out["output"]
        print(f"left in place: {o['videos']}, {o['captions']}, {o['bundle']}, {o['index']}")
        print(f"  try: vlrt search {o['index']} \"{scenes[0].caption}\" -k 3")
    print(f"total {out['seconds']:.0f} s")
