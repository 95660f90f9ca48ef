"""Trace the reference model's two encoders (and a multi-vector family's scorer) to ONNX, as its
family's graph specs declare them.

CLIP families (vlrt/families/clip.py):
video.onnx: pixels (B, T, 3, H, W) float32 + frame_mask (B, T) float32
            -> video_embeds (B, E), frame_embeds (B, T, E)
text.onnx:  input_ids (B, L) int64 -> text_embeds (B, E), token_embeds (B, L, E)
Batch, frames and words are dynamic. Outputs are L2-normalised; padded frames and tokens are zero.
Multi-vector families add outputs (DRL's weights) and scorer.onnx: the text graph's outputs for
Q captions and the video graph's for N videos -> scores (Q, N) (vlrt/families/xclip.py, drl.py).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from vlrt.families import Family, GraphSpec, ScorerSpec
from vlrt.models import VideoTextModel

OPSET = 17
# The largest mask magnitude that is finite in fp16 with room to spare; it still zeroes a
# masked frame's softmax weight exactly in fp32 (exp(-1e4) underflows to 0).
FP16_SAFE_MASK = -1e4


class _Graph(nn.Module):
    """One graph: the model's named outputs in the spec's order (the scorer's inputs, by name)."""

    def __init__(self, model: VideoTextModel, name: str, outputs: list[str], inputs: list[str] | None = None) -> None:
        super().__init__()
        self.model, self.name, self.outputs, self.inputs = model, name, outputs, inputs

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.name == "scorer":
            return (self.model.scorer(**dict(zip(self.inputs, inputs))),)
        out = self.model.video_outputs(*inputs) if self.name == "video" else self.model.text_outputs(*inputs)
        return tuple(out[k] for k in self.outputs)


@contextlib.contextmanager
def export_patches(model: VideoTextModel) -> Iterator[None]:
    """Changes that hold only while tracing: an fp16-safe frame mask value."""
    head = model.head
    saved = getattr(head, "mask_value", None)
    if saved is not None:
        head.mask_value = max(saved, FP16_SAFE_MASK)
    try:
        yield
    finally:
        if saved is not None:
            head.mask_value = saved


def dummy_inputs(model: VideoTextModel, *, frames: int, words: int) -> dict[str, tuple[torch.Tensor, ...]]:
    size = model.config.vision.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, frames, 3, size, size, generator=gen)
    mask = torch.ones(2, frames)
    mask[1, frames // 2 + 1:] = 0
    ids = torch.zeros(2, words, dtype=torch.int64)
    ids[:, 0], ids[0, 1:4], ids[0, 4] = 49406, torch.tensor([320, 1125, 539]), 49407
    ids[1, 1], ids[1, 2] = 2368, 49407
    return {"video": (pixels, mask), "text": (ids,)}


def scorer_inputs(spec: ScorerSpec, *, frames: int, words: int, queries: int = 2, videos: int = 3,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Random features of the scorer's input shapes: unit vectors, weights summing to 1."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {"queries": queries, "videos": videos, "words": words, "frames": frames}
    out = {}
    for name, dims in spec.inputs.items():
        x = torch.randn(*[sizes.get(d, d) for d in dims], generator=gen)
        out[name] = x.softmax(-1) if name.endswith("_weights") else x / x.norm(dim=-1, keepdim=True)
    return out


def export_scorer(model: VideoTextModel, spec: ScorerSpec, path: Path, *, frames: int, words: int) -> None:
    """Trace the model's scorer to `path`: queries, videos and (where not fixed) words and frames dynamic."""
    inputs = scorer_inputs(spec, frames=frames, words=words)
    graph = _Graph(model, "scorer", [spec.output], list(spec.inputs))
    _export(graph, tuple(inputs.values()), path, list(spec.inputs), [spec.output],
            {**spec.inputs, spec.output: ["queries", "videos"]})


def export_onnx(model: VideoTextModel, family: Family, out_dir: Path, *, frames: int,
                words: int) -> tuple[dict[str, GraphSpec], ScorerSpec | None]:
    """Write the family's graphs (video.onnx, text.onnx and a multi-vector family's scorer.onnx)
    into out_dir; returns their specs."""
    specs = family.graphs(image_size=model.config.vision.image_size, embed_dim=model.config.embed_dim)
    inputs = dummy_inputs(model, frames=frames, words=words)
    with export_patches(model):
        for name, spec in specs.items():
            _export(_Graph(model, name, list(spec.outputs)), inputs[name], out_dir / spec.file,
                    list(spec.inputs), list(spec.outputs), {**spec.inputs, **spec.outputs})
    if family.scorer is None:
        return specs, None
    scorer = family.scorer(embed_dim=model.config.embed_dim, words=model.config.scorer.words,
                           frames=model.config.scorer.frames)
    export_scorer(model, scorer, out_dir / scorer.file, frames=frames, words=words)
    return specs, scorer


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], dims: dict[str, list[int | str]]) -> None:
    dynamic = _dynamic_axes(dims)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is chosen on purpose (a true opset 17, plain
        # MatMul/Softmax attention); silence its deprecation notice and tracer chatter.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _dynamic_axes(dims: dict[str, list[int | str]]) -> dict[str, dict[int, str]]:
    """Per tensor, its named (dynamic) axes."""
    return {name: {i: d for i, d in enumerate(axes) if isinstance(d, str)} for name, axes in dims.items()}
