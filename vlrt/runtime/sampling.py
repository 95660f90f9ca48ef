"""Frame samplers: which frames of a video a model sees, as pure functions of its timing.

A sampler gets the frame count and rate (or the frames' timestamps) and returns frame indices;
the manifest's `sampling.rule` names the one the model was trained with. Short videos give fewer
frames (the caller pads and masks); no rule duplicates frames unless it says so.

Rules on timestamps use one notion of "the frame shown at time t": the last frame whose
timestamp is at or before t (`shown_at`), as `vlrt.runtime.video.frame_indices_at` does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from vlrt.errors import VlrtError

SliceMode = Literal["head", "tail", "uniform"]
TIME_TOLERANCE_S = 1e-9  # this far below a frame's timestamp is float rounding: that frame is shown
# CLIP4Clip's `slice_framepos`: 0 keeps the first frames, 1 the last, 2 spreads them evenly.
SLICE_FRAMEPOS: dict[int, SliceMode] = {0: "head", 1: "tail", 2: "uniform"}


def _check(num_frames: int, max_frames: int) -> None:
    if num_frames < 0:
        raise VlrtError(f"frame count must be >= 0, got {num_frames}")
    if max_frames < 1:
        raise VlrtError(f"max_frames must be >= 1, got {max_frames}")


def shown_at(timestamps: Sequence[float] | np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """For each time, the index of the last frame whose timestamp is at or before it (-1 before the
    first frame). `timestamps` are increasing; a time within TIME_TOLERANCE_S below a timestamp
    counts as that timestamp, so float rounding never picks the frame before."""
    ts = np.asarray(timestamps, dtype=np.float64)  # (N,)
    t = np.asarray(times, dtype=np.float64)  # (M,)
    return np.searchsorted(ts, t + TIME_TOLERANCE_S, side="right") - 1  # (M,)


def clip4clip_indices(num_frames: int, fps: float, *, max_frames: int, sample_fps: float = 1.0,
                      slice: SliceMode = "uniform") -> list[int]:
    """CLIP4Clip's rule: `sample_fps` frames per second, then cut down to `max_frames`.

    As its extractor does: the rate is truncated to an integer; each second s in
    0..ceil(frames / fps) contributes the frames at s * fps + k * (fps // sample_fps), for the first
    `sample_fps` values of k; frames past the end are dropped. More than `max_frames` frames are
    then cut by `slice`: the first, the last, or `linspace(0, n - 1, max_frames)` cast to int.
    """
    _check(num_frames, max_frames)
    rate = int(fps)
    if rate < 1:
        raise VlrtError(f"frame rate {fps} is below 1 fps; CLIP4Clip's rule needs at least 1")
    per_second = max(1, int(sample_fps)) if sample_fps > 0 else rate
    step = max(1, rate // per_second)
    offsets = list(range(0, rate, step))[:per_second]
    seconds = (num_frames + rate - 1) // rate
    picked = [s * rate + k for s in range(seconds + 1) for k in offsets]
    return slice_frames([i for i in picked if i < num_frames], max_frames=max_frames, mode=slice)


def fps_timeline_indices(timestamps: Sequence[float], duration: float, *, max_frames: int,
                         sample_fps: float = 1.0, slice: SliceMode = "uniform") -> list[int]:
    """CLIP4Clip's rule on the video's timeline: the frame shown at every 1/`sample_fps` seconds,
    then cut down to `max_frames` by `slice` as `clip4clip_indices` cuts.

    `timestamps` are the frames' presentation times in seconds (any start; times count from the
    first frame) and `duration` the video's length from its first frame (`VideoInfo.duration`).
    Ticks t = k / sample_fps are taken while t < duration, as CLIP4Clip takes second s while
    s * fps < frame count; at each tick the frame shown is `shown_at`'s. On a constant integer
    rate this is CLIP4Clip's choice exactly whenever `sample_fps` divides the rate (always at the
    default 1 fps); on 29.97 fps and variable-rate video it stays on the timeline where index
    arithmetic drifts. A frame on screen across two ticks is picked at both. `sample_fps` <= 0
    takes every frame, as CLIP4Clip does.
    """
    _check(len(timestamps), max_frames)
    if not timestamps:
        return []
    shown = np.asarray(timestamps, dtype=np.float64) - timestamps[0]  # (N,) seconds from the first
    if np.any(np.diff(shown) < 0):
        raise VlrtError("frame timestamps must be in presentation order")
    if sample_fps <= 0:
        return slice_frames(range(len(shown)), max_frames=max_frames, mode=slice)
    count = math.ceil(duration * sample_fps - TIME_TOLERANCE_S)  # ticks k / sample_fps < duration
    ticks = np.arange(max(count, 1)) / sample_fps  # (K,) seconds; tick 0 always
    return slice_frames([int(i) for i in shown_at(shown, ticks)], max_frames=max_frames, mode=slice)


def slice_frames(indices: Sequence[int], *, max_frames: int, mode: SliceMode = "uniform") -> list[int]:
    """CLIP4Clip's cut of sampled frames to `max_frames`: the first, the last, or
    `linspace(0, n - 1, max_frames)` cast to int (its `slice_framepos` 0 / 1 / 2)."""
    indices = list(indices)
    if len(indices) <= max_frames:
        return indices
    if mode == "head":
        return indices[:max_frames]
    if mode == "tail":
        return indices[-max_frames:]
    if mode == "uniform":
        keep = np.linspace(0, len(indices) - 1, num=max_frames, dtype=int)
        return [indices[i] for i in keep]
    raise VlrtError(f"unknown slice mode {mode!r}; expected head, tail or uniform")


def segment_middle_indices(num_frames: int, *, num_segments: int) -> list[int]:
    """The middle frame of each of N equal segments (Singularity / ALPRO at test time).

    Segment edges are `linspace(0, n, N + 1)` truncated to integers, as Singularity's loader
    computes them; segment i covers frames e[i] .. e[i+1] - 1 and contributes (e[i] + e[i+1] - 1) // 2.
    Videos with fewer frames than segments give one index per frame, without repeats.
    """
    _check(num_frames, num_segments)
    edges = np.linspace(0, num_frames, min(num_segments, num_frames) + 1).astype(int)
    return [int((edges[i] + edges[i + 1] - 1) // 2) for i in range(len(edges) - 1)]


def fixed_fps_indices(timestamps: Sequence[float], *, fps: float, max_frames: int,
                      start: float | None = None) -> list[int]:
    """One frame per 1/fps seconds of presentation time: for each tick, the last frame shown at it.

    Works from timestamps, so variable-frame-rate videos and non-zero start times sample the
    frames a viewer would see at those times. A frame that stays on screen across several ticks
    is picked at each of them: that is what the rule asks for.
    """
    if fps <= 0:
        raise VlrtError(f"fps must be > 0, got {fps}")
    _check(len(timestamps), max_frames)
    if not timestamps:
        return []
    ts = np.asarray(timestamps, dtype=np.float64)
    if np.any(np.diff(ts) < 0):
        raise VlrtError("frame timestamps must be in presentation order")
    t0 = ts[0] if start is None else start
    ticks = t0 + np.arange(math.floor((ts[-1] - t0) * fps + 1e-9) + 1) / fps
    picked = np.searchsorted(ts, ticks + 1e-9, side="right") - 1
    return [int(i) for i in picked[picked >= 0][:max_frames]]
