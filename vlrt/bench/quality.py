"""Retrieval quality on the embedded model's synthetic test set: the code behind `vlrt demo` and
`vlrt bench`'s quality columns.

The gallery is the held-out test split of vlrt.bench.synth written as H.264 files; every caption
is a query. Figures: Recall@1/5/10 and median rank both ways, R@1 on captions with motion, and
two probes only time can answer (own caption against the opposite direction, and against the
other speed; chance 50).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError


def write_gallery(folder: Path, limit: int | None, split: str = "test") -> tuple[list[str], list[Any]]:
    """The first `limit` clips of a synthetic split as H.264 files (kept when already there)."""
    from vlrt.bench import synth

    folder.mkdir(parents=True, exist_ok=True)
    items = list(synth.gallery(split))[:limit]
    paths = []
    for scene, seed in items:
        path = folder / synth.clip_name(scene, seed)
        if not path.is_file():  # the name changes with the clip: a cached file is the same clip
            tmp = path.with_name(f".{path.name}.tmp.mp4")
            synth.write_mp4(tmp, synth.render(scene, seed=seed))
            tmp.replace(path)
        paths.append(str(path))
    return paths, [scene for scene, _ in items]


def embed(rt, paths: list[str], *, progress: Callable[[], None] | None = None, single_frame: list | None = None,
          records: list | None = None):
    """(N, D) video embeddings. With `single_frame` (a list), also the embedding of each clip's
    middle sampled frame alone, appended to it in input order (the single-frame baseline); with
    `records` (a list), each clip's per-frame record (`Runtime.frame_record_names`)."""
    import numpy as np

    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    def encode(pixels, mask):  # (B, T, 3, S, S), (B, T)
        if single_frame is not None:
            middle = mask.sum(1).astype(int) // 2  # (B,) frame 4 of 8, as vlrt.models.train.evaluate takes
            rows = np.arange(len(mask))
            single_frame.extend(rt.encode_frames(pixels[rows, middle][:, None], np.ones((len(mask), 1), np.float32)))
        return rt.encode_frames(pixels, mask, return_frames=True)

    out = []
    for result in encode_stream(paths, ClipLoader(rt.bundle.manifest), encode, batch_size=16):
        if result.error:
            raise VlrtError(result.error)
        out.append(result.embedding)
        if records is not None:
            records.append(result.frames)
        if progress is not None:
            progress()
    return np.stack(out)


def quality_of(rt, videos, scenes: list[Any], records=None) -> tuple[dict[str, float], Any]:
    """Recall figures, R@1 on captions with motion, and the direction and speed probes. A
    multi-grained model (`rt.multi_vector`) is scored by its scorer, which reads the clips'
    per-frame `records` too."""
    import numpy as np

    from vlrt.bench import synth
    from vlrt.bench.metrics import ranks, recall_report

    captions = [s.caption for s in scenes]
    if rt.multi_vector:
        clips = {rt.bundle.outputs("video")[0]: videos, **rt.split_frame_record(np.asarray(records))}
        scores = rt.score(rt.encode_text_outputs(captions), clips)  # (captions, videos)

        def pairs(texts: list[str], rows: list[int]) -> np.ndarray:
            """text i against clip rows[i] only"""
            out = rt.encode_text_outputs(texts)
            return np.array([rt.score({k: v[i:i + 1] for k, v in out.items()},
                                      {k: v[r:r + 1] for k, v in clips.items()})[0, 0] for i, r in enumerate(rows)])
    else:
        text = rt.encode_text(captions)  # (captions, D)
        scores = text @ videos.T  # (captions, videos)
        pairs = lambda texts, rows: (rt.encode_text(texts) * videos[rows]).sum(1)  # noqa: E731
    quality = recall_report(scores)
    moving = [i for i, s in enumerate(scenes) if s.motion != "still"]
    quality["motion_t2v_R@1"] = round(100 * float((ranks(scores)[moving] == 1).mean()), 2)
    if moving:
        own = scores[moving, moving]  # (M,)
        for name, twins in synth.probes([scenes[i] for i in moving]).items():
            # % of moving clips closer to their own caption than to its twin (chance: 50).
            twin = pairs(twins, moving)
            quality[f"{name}_probe_acc"] = round(100 * float((own > twin).mean()), 2)
    return quality, scores


def figures(rt, paths: list[str], scenes: list[Any], *, progress: Callable[[], None] | None = None,
            baseline: bool = False) -> dict[str, Any]:
    import numpy as np

    single: list | None = [] if baseline else None
    records: list | None = [] if rt.multi_vector else None
    t0 = time.perf_counter()
    videos = embed(rt, paths, progress=progress, single_frame=single, records=records)
    seconds = time.perf_counter() - t0
    quality, scores = quality_of(rt, videos, scenes, records)
    out = {"videos": len(paths), "quality": quality, "videos_per_s": round(len(paths) / seconds, 2),
           "scores": scores, "embeddings": videos}
    if single is not None:
        out["single_frame_baseline"] = quality_of(rt, np.stack(single), scenes)[0]
    return out
