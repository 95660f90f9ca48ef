"""The inputs every gate runs on, and how outputs are compared; no torch.

The export gate (ONNX Runtime against PyTorch) and the engine gate (an engine against the
bundle's fp32 graphs) feed the same inputs, made from numbers the manifest records (image size,
max frames, max words) and the bundle's tokenizer. They differ from the tracing inputs (another
batch size, one-frame and half-padded videos, real captions), so a graph that baked in a traced
shape or value fails; a second, smaller feed (one video with fewer frames, captions in a shorter
context) checks that frames and words are really dynamic.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from vlrt.runtime.tokenizer import ClipTokenizer

CAPTIONS = (
    "a man is cooking pasta in a small kitchen",
    "two dogs run across a snowy field",
    "a red circle moves to the left",
    "someone plays the guitar on a stage while the crowd sings along and claps",
)
Feeds = dict[str, dict[str, np.ndarray]]  # graph name -> input name -> array


def validation_inputs(*, image_size: int, frames: int, words: int, tokenizer: ClipTokenizer | None = None) -> Feeds:
    rng = np.random.default_rng(1234)
    pixels = rng.standard_normal((3, frames, 3, image_size, image_size), dtype=np.float32)  # (3, T, 3, S, S)
    mask = np.ones((3, frames), dtype=np.float32)
    mask[1, 1:] = 0  # a one-frame video
    mask[2, (frames + 1) // 2:] = 0
    ids = (tokenizer or ClipTokenizer())(list(CAPTIONS), context_length=words)  # (4, words)
    return {"video": {"pixels": pixels, "frame_mask": mask}, "text": {"input_ids": ids}}


def short_inputs(*, image_size: int, frames: int, words: int, tokenizer: ClipTokenizer | None = None) -> Feeds:
    """One video of fewer frames than traced, and captions in a shorter context (truncated)."""
    full = validation_inputs(image_size=image_size, frames=max(1, frames // 2), words=max(2, words // 2 + 1),
                             tokenizer=tokenizer)
    return {"video": {k: v[2:] for k, v in full["video"].items()}, "text": full["text"]}


def manifest_feed_sets(manifest: dict[str, Any], tokenizer: ClipTokenizer | None = None) -> list[Feeds]:
    """Both feeds, from what a bundle's manifest records."""
    dims = {"image_size": int(manifest["preprocessing"]["size"]), "frames": int(manifest["max_frames"]),
            "words": int(manifest["max_words"]), "tokenizer": tokenizer}
    return [validation_inputs(**dims), short_inputs(**dims)]


def compare(expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Cosine per embedding vector (all-zero reference vectors, i.e. padding, must stay zero)."""
    e = expected.reshape(-1, expected.shape[-1]).astype(np.float64)  # (V, E)
    a = actual.reshape(-1, actual.shape[-1]).astype(np.float64)  # (V, E)
    real = np.linalg.norm(e, axis=1) > 0
    cos = (e[real] * a[real]).sum(1) / (np.linalg.norm(e[real], axis=1) * np.linalg.norm(a[real], axis=1))
    diff = float(np.abs(e - a).max())
    return {"min_cosine": float(np.nan_to_num(cos, nan=-1.0).min()), "max_abs_diff": diff,
            "vectors": float(real.sum())}


def worse(a: dict[str, float] | None, b: dict[str, float]) -> dict[str, float]:
    """The worse of two comparisons of one output (their vectors added up)."""
    if a is None:
        return b
    return {"min_cosine": min(a["min_cosine"], b["min_cosine"]), "max_abs_diff": max(a["max_abs_diff"], b["max_abs_diff"]),
            "vectors": a["vectors"] + b["vectors"]}
