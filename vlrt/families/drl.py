"""DRL (Disentangled Representation Learning, foolwood/DRL) with its weighted token-wise
interaction ("wti"; "ti" when the checkpoint has no weight MLPs): CLIP towers, a temporal head
("None" = meanP, seqTransf, seqLSTM), and a scorer over per-word and per-frame features.

The encoders also write each caption's word weights and each video's frame weights (they
depend on one side only), so the scorer graph has no parameters. DRL's dot-product
checkpoints ("dp") have CLIP4Clip's layout and score; they export as the clip4clip family.
"""
from __future__ import annotations

import dataclasses

from vlrt.families import Family, GraphSpec, ScorerSpec, register
from vlrt.families.clip import ONE_FPS, clip_graphs


def drl_graphs(*, image_size: int, embed_dim: int) -> dict[str, GraphSpec]:
    """CLIP's graphs plus the frame and word weights."""
    graphs = clip_graphs(image_size=image_size, embed_dim=embed_dim)
    added = {"video": {"frame_weights": ["batch", "frames"]}, "text": {"token_weights": ["batch", "words"]}}
    return {name: dataclasses.replace(spec, outputs={**spec.outputs, **added[name]}) for name, spec in graphs.items()}


def drl_scorer(*, embed_dim: int, words: int, frames: int) -> ScorerSpec:
    e = embed_dim
    return ScorerSpec(
        "scorer.onnx",
        text_inputs={"token_embeds": ["queries", "words", e], "token_weights": ["queries", "words"]},
        video_inputs={"frame_embeds": ["videos", "frames", e], "frame_weights": ["videos", "frames"]})


register(Family(
    name="drl",
    description="DRL: CLIP towers, a temporal head and weighted token-wise interaction",
    heads=("meanP", "seqTransf", "seqLSTM"),
    # DRL's MSR-VTT scripts: max_words 32, max_frames 12, 1 fps.
    max_frames=12,
    max_words=32,
    sampling=dict(ONE_FPS),
    graphs=drl_graphs,
    embedding="multi-vector",
    scorer=drl_scorer,
))
