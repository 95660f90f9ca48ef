"""Model families: what a checkpoint of each family needs at inference beyond its weights.

One registry entry per family. The entry holds the settings that the checkpoints do not store
(frames, words, sampling rule, preprocessing) with the defaults of the family's own training
code, and the parity tolerance its export must meet.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vlrt.errors import VlrtError

# CLIP's image normalisation (OpenAI CLIP, CLIP4Clip and most open_clip models).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    description: str
    heads: tuple[str, ...]
    max_frames: int
    max_words: int | None  # None: the text tower's context length
    sampling: dict[str, Any]
    min_cosine: float = 0.99999

    def preprocessing(self, image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> dict[str, Any]:
        # CLIP's PIL pipeline: bicubic resize of the shorter side to image_size, centre crop.
        return {"size": image_size, "resize": "shorter-side", "interpolation": "bicubic",
                "crop": "center", "mean": list(mean), "std": list(std), "color": "RGB"}


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise VlrtError(f"model family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise VlrtError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


register(Family(
    name="clip",
    description="image CLIP applied to sampled frames, frame embeddings mean-pooled",
    heads=("meanP",),
    max_frames=12,
    max_words=None,
    # CLIP4Clip's rule is the common choice for CLIP on frames: 1 fps, then linspace to max_frames.
    sampling={"rule": "clip4clip", "fps": 1.0, "slice_framepos": 2},
))

register(Family(
    name="clip4clip",
    description="CLIP4Clip: CLIP towers with a meanP / seqLSTM / seqTransf temporal head",
    heads=("meanP", "seqTransf", "seqLSTM"),
    # CLIP4Clip's released runs: max_words 32, max_frames 12, 1 fps, slice_framepos 2
    # (uniform linspace over the sampled frames). None of these is stored in its checkpoints.
    max_frames=12,
    max_words=32,
    sampling={"rule": "clip4clip", "fps": 1.0, "slice_framepos": 2},
))
