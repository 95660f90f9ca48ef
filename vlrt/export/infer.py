"""Hyperparameters from tensor shapes, and a strict shape check against the reference model.

Works on shapes alone (tensors, meta tensors or plain tuples), so a full-size checkpoint's
geometry can be read and checked without allocating any weights. Names are vlrt's canonical
ones (see `vlrt.models.video_text`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from vlrt.errors import VlrtError
from vlrt.models import HeadConfig, ModelConfig, ScorerConfig, TextConfig, VideoTextModel, VisionConfig

# OpenAI CLIP and CLIP4Clip derive attention heads from the width this way; Hugging Face
# configs state the count, and loaders pass it in instead.
HEAD_WIDTH = 64


def shape_of(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def count_blocks(shapes: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in shapes if (m := pattern.match(key))}
    if indices and indices != set(range(len(indices))):
        raise VlrtError(f"inconsistent shapes: blocks under {prefix!r} are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _need(shapes: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise VlrtError(f"checkpoint has no {key!r}; it does not look like a CLIP ViT model")
    return shape_of(shapes[key])


def infer_vision(shapes: Mapping[str, Any], *, heads: int | None = None) -> VisionConfig:
    width, _, patch, _ = _need(shapes, "clip.visual.conv1.weight")
    positions = _need(shapes, "clip.visual.positional_embedding")[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise VlrtError(f"inconsistent shapes: {positions} vision positions is not 1 + a square grid")
    layers = count_blocks(shapes, "clip.visual.transformer.resblocks.")
    return VisionConfig(image_size=grid * patch, patch_size=patch, width=width, layers=layers,
                        heads=heads or width // HEAD_WIDTH)


def infer_text(shapes: Mapping[str, Any], *, heads: int | None = None) -> TextConfig:
    vocab, width = _need(shapes, "clip.text.token_embedding.weight")
    context = _need(shapes, "clip.text.positional_embedding")[0]
    layers = count_blocks(shapes, "clip.text.transformer.resblocks.")
    return TextConfig(context_length=context, vocab_size=vocab, width=width, layers=layers,
                      heads=heads or width // HEAD_WIDTH)


def infer_head(shapes: Mapping[str, Any]) -> HeadConfig:
    positions = shapes.get("head.frame_position_embeddings.weight")
    max_positions, width = shape_of(positions) if positions is not None else (0, 0)
    if "head.lstm.weight_ih_l0" in shapes:
        return HeadConfig(type="seqLSTM", max_positions=max_positions)
    layers = count_blocks(shapes, "head.transformer.resblocks.")
    if layers:
        return HeadConfig(type="seqTransf", layers=layers, heads=width // HEAD_WIDTH,
                          max_positions=max_positions)
    return HeadConfig(type="meanP")


def infer_scorer(family: str, shapes: Mapping[str, Any]) -> ScorerConfig:
    """The scorer of a multi-vector family from its tensors' shapes (canonical `scorer.*` names)."""
    if family == "xclip":
        words, frames = (shapes.get(f"scorer.{k}") for k in ("word_logit_weight", "frame_logit_weight"))
        if words is None or frames is None:
            raise VlrtError("an X-CLIP checkpoint carries its similarity weights (global_mat_weight, "
                            "word_logit_weight, frame_logit_weight, ...); this one has none")
        return ScorerConfig(type="xclip", words=shape_of(words)[0], frames=shape_of(frames)[0])
    if family == "drl":
        # wti_arch 1: one Linear (text_weight_fc.weight); 2 and 3: Linear/ReLU stacks (.0., .2., .4.)
        layers = sum(1 for k in shapes if re.fullmatch(r"scorer\.text_weight_fc\.(\d+\.)?weight", k))
        return ScorerConfig(type="drl", weight_layers=layers)
    raise VlrtError(f"family {family!r} has no scorer")


def infer_config(
    shapes: Mapping[str, Any],
    *,
    activation: str = "quick_gelu",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    layer_norm_eps: float = 1e-5,
) -> ModelConfig:
    """A full model config from canonical-name shapes; `check_shapes` then verifies every tensor."""
    embed = _need(shapes, "clip.visual.proj")[1]
    text_embed = _need(shapes, "clip.text.text_projection")[1]
    if embed != text_embed:
        raise VlrtError(f"inconsistent shapes: vision projects to {embed} dims, text to {text_embed}")
    return ModelConfig(
        embed_dim=embed,
        vision=infer_vision(shapes, heads=vision_heads),
        text=infer_text(shapes, heads=text_heads),
        activation=activation,  # type: ignore[arg-type]
        layer_norm_eps=layer_norm_eps,
        head=infer_head(shapes),
    )


def check_shapes(cfg: ModelConfig, shapes: Mapping[str, Any]) -> None:
    """Refuse a state dict that does not match the model exactly: missing, extra or misshapen keys."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VideoTextModel(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {shape_of(shapes[k])} (expected {expected[k]})"
             for k in expected if k in shapes and shape_of(shapes[k]) != expected[k]]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise VlrtError("inconsistent shapes: " + "; ".join(problems))
