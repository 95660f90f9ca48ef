"""Optimization profiles: the (min, opt, max) shape of every graph input, from the bundle manifest.

A TensorRT engine built from a graph with dynamic axes runs any shape inside its profile and
is tuned for the `opt` shape. The manifest declares each input's axes (vlrt/export/onnx.py):

    video  pixels (batch, frames, 3, S, S), frame_mask (batch, frames)
    text   input_ids (batch, words)

batch:  1 .. max_batch; opt = the batch the runtime feeds (`OPT_BATCH`), which TensorRT picks its
        kernels for: `Runtime.encode_frames`' batch_size (8 clips) for video, and
        `Runtime.encode_text`'s batch_size (64 texts) for text. A search query is one text, but
        a one-text call is expected to be bound by kernel launches whatever tiles the kernels
        use, while kernels picked for one text would run a bulk batch of 64 with tiles far too
        small; so text is tuned for the bulk batch and a query runs in the same profile
        (unmeasured: `python -m vlrt.runtime.backends.trt.inspect --build-default` times both)
frames: 1 .. the manifest's max_frames; opt = max_frames (clips are padded to it, with a mask)
words:  fixed at the manifest's max_words: the tokenizer always pads to it, and a fixed axis
        lets TensorRT pick kernels for exactly that length
"""
from __future__ import annotations

from typing import Any

from vlrt.errors import VlrtError

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)

# The largest batch an engine accepts; the runner splits larger feeds into chunks of this size.
MAX_BATCH = {"video": 8, "text": 64}
OPT_BATCH = {"video": 8, "text": 64}  # the runtime's batch sizes; tests/runtime/test_trt.py checks they agree


def profile_shapes(manifest: dict[str, Any], graph: str, *, max_batch: int | None = None,
                   opt_batch: int | None = None) -> Profile:
    """(min, opt, max) per input of `graph` ("video" or "text"); None: `MAX_BATCH` / `OPT_BATCH`."""
    try:
        inputs = manifest["graphs"][graph]["inputs"]
    except KeyError:
        raise VlrtError(f"the bundle manifest declares no {graph!r} graph inputs") from None
    hi = max_batch or MAX_BATCH[graph]
    opt = min(opt_batch or OPT_BATCH[graph], hi)
    if hi < 1 or opt < 1:
        raise VlrtError(f"batch sizes must be >= 1; got max {hi}, opt {opt}")
    ranges = {"batch": (1, opt, hi), "frames": (1, int(manifest["max_frames"]), int(manifest["max_frames"])),
              "words": (int(manifest["max_words"]),) * 3}
    profile: Profile = {}
    for name, dims in inputs.items():
        per_dim = [_dim_range(d, ranges, graph, name) for d in dims]
        profile[name] = tuple(tuple(r[i] for r in per_dim) for i in range(3))  # type: ignore[assignment]
    return profile


def _dim_range(dim: int | str, ranges: dict[str, tuple[int, int, int]], graph: str, name: str) -> tuple[int, int, int]:
    if isinstance(dim, int):
        return dim, dim, dim
    if dim not in ranges:
        raise VlrtError(f"{graph} graph input {name!r} has an axis {dim!r} with no known range "
                        f"(known: {', '.join(ranges)})")
    return ranges[dim]


def to_json(profile: Profile) -> dict[str, dict[str, list[int]]]:
    return {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in profile.items()}
