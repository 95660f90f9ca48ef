"""Videos -> model inputs -> embeddings, with decoding overlapping inference.

Two units of work, each a plain callable a worker constructs once (so a batch engine can run
them on other machines later):
- `ClipLoader(manifest)`: one video path -> `Clip` (sampled, preprocessed frames + mask length);
- `Runtime.encode_frames`: a batch of clips -> embeddings.
`encode_stream` runs loaders on a thread pool (PyAV releases the GIL while decoding; one decode
thread per video, parallel across videos) and feeds full batches to the encoder, with a bounded
number of clips in flight so memory stays flat whatever the corpus size.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.preprocess import Preprocess
from vlrt.runtime.sampling import (
    SLICE_FRAMEPOS,
    clip4clip_indices,
    fixed_fps_indices,
    fps_timeline_indices,
    segment_middle_indices,
)
from vlrt.runtime.video import VideoInfo, ffmpeg_reason, probe, read_frames, read_frames_av

Mode = Literal["exact", "fast"]


@dataclasses.dataclass
class Clip:
    path: str
    pixels: np.ndarray  # (T, 3, S, S) float32, T = max_frames, zero after n_frames
    n_frames: int
    indices: list[int]
    info: VideoInfo

    def row(self) -> dict[str, Any]:
        """Metadata kept beside the embedding in an index."""
        i = self.info
        return {"path": self.path, "frames": self.indices, "num_frames": i.num_frames, "fps": round(i.fps, 4),
                "duration": round(i.duration, 4), "width": i.width, "height": i.height, "codec": i.codec}


RULES = ("fps_timeline", "clip4clip", "segment_middle", "fps")


def sample_indices(info: VideoInfo, sampling: dict[str, Any], max_frames: int) -> list[int]:
    """Frame indices by the manifest's rule (the one the model was trained with)."""
    rule = sampling.get("rule")
    if info.num_frames <= 1:
        return list(range(info.num_frames))
    if rule in ("fps_timeline", "clip4clip"):
        sample_fps = float(sampling.get("fps", 1.0))
        slice_mode = SLICE_FRAMEPOS[int(sampling.get("slice_framepos", 2))]
        if rule == "fps_timeline":  # the frames shown at each tick of the video's own timeline
            return fps_timeline_indices(info.timestamps, info.duration, max_frames=max_frames,
                                        sample_fps=sample_fps, slice=slice_mode)
        # By frame index, as CLIP4Clip's OpenCV extractor seeks: kept to reproduce its numbers.
        return clip4clip_indices(info.num_frames, info.fps, max_frames=max_frames,
                                 sample_fps=sample_fps, slice=slice_mode)
    if rule == "segment_middle":
        return segment_middle_indices(info.num_frames, num_segments=max_frames)
    if rule == "fps":
        return fixed_fps_indices(info.timestamps, fps=float(sampling["fps"]), max_frames=max_frames)
    raise VlrtError(f"unknown sampling rule {rule!r} in the manifest; known: {', '.join(RULES)}")


class ClipLoader:
    """Decode, sample and preprocess one video as the bundle's manifest says."""

    def __init__(self, manifest: dict[str, Any], *, mode: Mode = "exact") -> None:
        self.pre = Preprocess.from_manifest(manifest["preprocessing"])
        self.sampling = manifest["sampling"]
        self.max_frames = int(manifest["max_frames"])
        self.mode = mode

    def __call__(self, path: str | os.PathLike) -> Clip:
        path = str(path)
        info = probe(path)
        indices = sample_indices(info, self.sampling, self.max_frames)
        if not indices:
            raise VlrtError(f"{path}: no frames to sample")
        size = self.pre.size
        pixels = np.zeros((self.max_frames, 3, size, size), np.float32)  # (T, 3, S, S)
        if self.mode == "fast" and info.rotation == 0:
            # FFmpeg scales during its YUV -> RGB conversion: no full-size RGB frame is made.
            for t, frame in enumerate(read_frames_av(path, indices, info=info)):
                pixels[t] = self.pre.from_av_frame(frame, mode="fast")
        else:  # exact mode, and rotated videos (turned upright before preprocessing)
            for t, rgb in enumerate(read_frames(path, indices, info=info)):  # (H, W, 3) uint8
                pixels[t] = self.pre.exact(rgb)
        return Clip(path, pixels, len(indices), indices, info)


@dataclasses.dataclass
class Result:
    path: str
    embedding: np.ndarray | None = None  # (D,)
    frames: np.ndarray | None = None  # (T, D)
    clip: Clip | None = None
    error: str | None = None


def prefix_mask(counts: Iterable[int], frames: int) -> np.ndarray:
    """(B, T) float32: 1 for the first counts[b] of `frames` frames of clip b, 0 after."""
    return (np.arange(frames) < np.asarray(list(counts), np.int64)[:, None]).astype(np.float32)


def stack_clips(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """A batch for the encoder: pixels (B, T, 3, S, S) and the prefix mask (B, T)."""
    pixels = np.stack([c.pixels for c in clips])  # (B, T, 3, S, S)
    return pixels, prefix_mask([c.n_frames for c in clips], pixels.shape[1])


def encode_stream(paths: Iterable[str], loader: Callable[[str], Any], encode, *, batch_size: int = 8,
                  workers: int = 2, in_flight: int | None = None, result: Callable[..., Any] = Result,
                  collate: Callable[[list[Any]], tuple[Any, Any]] = stack_clips) -> Iterator[Any]:
    """Yield one Result per path, in input order; a bad video yields its error and the rest go on.

    `encode(pixels (B, T, 3, S, S), mask (B, T))` returns (video (B, D), frames (B, T, D)).
    Whatever the length of `paths`, at most `in_flight + batch_size - 1` clips are loading or
    loaded and not yet yielded, and `paths` is read at most `in_flight + 2 * batch_size - 1`
    items ahead of the results: an error comes out once no clip waits before it, and a run of
    errors after a clip sends a short batch to the encoder.

    Other clip types (the GPU pipeline's) bring their own `result` class (fields path, embedding,
    frames, clip, error, as `Result`'s) and `collate`, which batches the clips for `encode`.
    """
    in_flight = in_flight or max(2 * batch_size, 2 * workers)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlrt-decode") as pool:
        pending: deque[tuple[str, cf.Future]] = deque()
        ready: list[Any] = []
        source = iter(paths)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < in_flight:
                path = next(source, None)
                if path is None:
                    exhausted = True
                else:
                    pending.append((str(path), pool.submit(loader, path)))
            if pending:
                ready.append(collect(*pending.popleft(), result))
            clips = sum(r.clip is not None for r in ready)
            if clips >= batch_size or not clips or len(ready) >= 2 * batch_size or (exhausted and not pending):
                yield from _encode_ready(ready, encode, collate)
                ready = []


def collect(path: str, future: cf.Future, result=None):
    """The loaded clip of `future`, or its error, as `result` (default: Result) for `path`."""
    result = result or Result
    try:
        return result(path, clip=future.result())
    except VlrtError as exc:
        return result(path, error=str(exc))
    except Exception as exc:  # a decoder crash on one file must not stop thousands of others
        # FFmpeg's and the OS's errors in plain words, without errno numbers.
        reason = ffmpeg_reason(exc) if getattr(exc, "strerror", None) else str(exc)
        return result(path, error=f"{path}: {type(exc).__name__}: {reason}")


def _encode_ready(ready: list[Any], encode, collate) -> list[Any]:
    clips = [r.clip for r in ready if r.clip is not None]
    if clips:
        video, frames = encode(*collate(clips))  # (B, D), (B, T, D)
        it = iter(zip(video, frames))
        for r in ready:
            if r.clip is not None:
                r.embedding, r.frames = next(it)  # (D,), (T, D) zero after n_frames
                r.clip.pixels = None  # drop the decoded frames as soon as they are encoded
    return ready
