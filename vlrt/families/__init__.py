"""Model families: what vlrt knows about a kind of model beyond its weights. No torch.

A family is one module in this package plus one `register(Family(...))` entry. The entry
declares everything the other parts read instead of branching on names:

    reference        dotted path of the PyTorch reference model (imported only by `vlrt export`)
    heads            its temporal heads, each a `Head` entry (CLIP4Clip's meanP/seqTransf/seqLSTM)
    graphs()         the ONNX graphs: names, inputs, outputs with their axes (symbolic = dynamic),
                     and which output is the embedding and which the per-frame/per-token features
    embedding        "vector": one vector per video and per caption, scored by a dot product;
                     "multi-vector": per-frame/per-word features and a scorer graph (`scorer()`)
    scorer()         multi-vector only: the scorer graph, which of the text and video graphs'
                     outputs it takes, and the fixed word/frame counts it needs
    tokenizer        the tokenizer the text graph expects
    sampling, max_frames, max_words, preprocessing()
                     the settings checkpoints do not store, with the defaults of the family's own
                     training code
    validation_inputs()  the gate's inputs (vlrt/build/validate.py), made from the manifest
    min_cosine       the export gate's threshold

The manifest records the family, its graphs and their embedding outputs, so the runtime and the
build read names from the manifest, never from code. Families: clip.py (CLIP on frames, CLIP4Clip),
xclip.py (X-CLIP), drl.py (DRL).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

from vlrt.constants import CLIP_MEAN, CLIP_STD
from vlrt.errors import VlrtError

Axes = list[int | str]  # a tensor's shape: ints are fixed, names are dynamic axes
EmbeddingKind = Literal["vector", "multi-vector"]


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of a bundle."""

    name: str
    file: str
    inputs: dict[str, Axes]
    outputs: dict[str, Axes]
    input_types: dict[str, str]
    embedding: str  # output: one L2-normalised vector per item
    features: str | None = None  # output: per-frame / per-token features (zero where masked)

    def to_manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ScorerSpec:
    """The scorer graph of a multi-vector family: caption features x video features -> scores.

    Its inputs are outputs of the text graph (`text_inputs`, first axis: queries) and of the video
    graph (`video_inputs`, first axis: videos); it returns (queries, videos) scores. `words` and
    `frames` > 0: the scorer takes exactly that many word / frame slots (X-CLIP's weight matrices).
    """

    file: str
    text_inputs: dict[str, Axes]
    video_inputs: dict[str, Axes]
    output: str = "scores"
    words: int = 0
    frames: int = 0

    @property
    def inputs(self) -> dict[str, Axes]:
        return {**self.text_inputs, **self.video_inputs}

    def to_manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Head:
    """A temporal head: how frame embeddings become one video embedding."""

    name: str
    description: str
    positional: bool  # has a frame position table: videos may not have more frames than its rows


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    description: str
    heads: tuple[str, ...]
    max_frames: int
    max_words: int | None  # None: the text tower's context length
    sampling: dict[str, Any]
    graphs: Callable[..., dict[str, GraphSpec]]  # (image_size=, embed_dim=) -> graphs
    reference: str = "vlrt.models.video_text:VideoTextModel"
    embedding: EmbeddingKind = "vector"
    tokenizer: str = "clip-bpe"
    min_cosine: float = 0.99999
    # multi-vector: (embed_dim=, words=, frames=) -> the scorer graph's spec
    scorer: Callable[..., ScorerSpec] | None = None
    max_score_diff: float = 1e-4  # the export gate's bound on |score - reference score|
    # True where padded frame slots take part in the scores (X-CLIP): each then holds the features
    # of an all-zero image, as the family's data loader fills it
    scores_padded_frames: bool = False

    def preprocessing(self, image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> dict[str, Any]:
        # CLIP's PIL pipeline: bicubic resize of the shorter side to image_size, centre crop.
        return {"size": image_size, "resize": "shorter-side", "interpolation": "bicubic",
                "crop": "center", "mean": list(mean), "std": list(std), "color": "RGB"}

    def reference_model(self) -> Any:
        """The PyTorch reference model class (imports torch: export only)."""
        import importlib

        module, _, attr = self.reference.partition(":")
        return getattr(importlib.import_module(module), attr)

    def validation_inputs(self, manifest: dict[str, Any], tokenizer: Any = None) -> list[dict[str, Any]]:
        """The gate's two feed sets, from what the manifest records."""
        from vlrt.build.validate import manifest_feed_sets

        return manifest_feed_sets(manifest, tokenizer)

    def manifest_fields(self) -> dict[str, Any]:
        """What the family adds to a bundle's manifest."""
        fields: dict[str, Any] = {"family": self.name, "embedding": self.embedding}
        if self.scores_padded_frames:
            fields["padded_frames"] = "zero-image"
        return fields


FAMILIES: dict[str, Family] = {}
HEADS: dict[str, Head] = {}


def _add(registry: dict[str, Any], what: str, entry: Any) -> Any:
    if entry.name in registry:
        raise VlrtError(f"{what} {entry.name!r} is already registered")
    registry[entry.name] = entry
    return entry


def register(family: Family) -> Family:
    unknown = [h for h in family.heads if h not in HEADS]
    if unknown:
        raise VlrtError(f"family {family.name!r} names unregistered heads {unknown}; known: {', '.join(HEADS)}")
    return _add(FAMILIES, "model family", family)


def register_head(head: Head) -> Head:
    return _add(HEADS, "temporal head", head)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise VlrtError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise VlrtError(f"unknown temporal head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name]


# registers the built-in families
from vlrt.families import clip as _clip  # noqa: E402,F401
from vlrt.families import drl as _drl  # noqa: E402,F401
from vlrt.families import xclip as _xclip  # noqa: E402,F401
