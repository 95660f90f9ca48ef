"""Trace the reference model's two encoders to ONNX, as its family's graph specs declare them.

CLIP families (vlrt/families/clip.py):
video.onnx: pixels (B, T, 3, H, W) float32 + frame_mask (B, T) float32
            -> video_embeds (B, E), frame_embeds (B, T, E)
text.onnx:  input_ids (B, L) int64 -> text_embeds (B, E), token_embeds (B, L, E)
Batch, frames and words are dynamic. Outputs are L2-normalised; padded frames and tokens are zero.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from vlrt.families import Family, GraphSpec
from vlrt.models import VideoTextModel

OPSET = 17
# The largest mask magnitude that is finite in fp16 with room to spare; it still zeroes a
# masked frame's softmax weight exactly in fp32 (exp(-1e4) underflows to 0).
FP16_SAFE_MASK = -1e4


class _VideoEncoder(nn.Module):
    def __init__(self, model: VideoTextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_video(pixels, frame_mask)


class _TextEncoder(nn.Module):
    def __init__(self, model: VideoTextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_text(input_ids)


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


def export_onnx(model: VideoTextModel, family: Family, out_dir: Path, *, frames: int,
                words: int) -> dict[str, GraphSpec]:
    """Write the family's graphs (video.onnx and text.onnx) into out_dir; returns their specs."""
    specs = family.graphs(image_size=model.config.vision.image_size, embed_dim=model.config.embed_dim)
    inputs = dummy_inputs(model, frames=frames, words=words)
    wrappers = {"video": _VideoEncoder(model), "text": _TextEncoder(model)}
    with export_patches(model), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is chosen on purpose (a true opset 17, plain
        # MatMul/Softmax attention); silence its deprecation notice and tracer chatter.
        warnings.simplefilter("ignore")
        for name, spec in specs.items():
            torch.onnx.export(
                wrappers[name], inputs[name], str(out_dir / spec.file),
                input_names=list(spec.inputs), output_names=list(spec.outputs),
                dynamic_axes=_dynamic_axes(spec), opset_version=OPSET, dynamo=False,
                do_constant_folding=True,
            )
    return specs


def _dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name, dims in {**spec.inputs, **spec.outputs}.items():
        axes[name] = {i: d for i, d in enumerate(dims) if isinstance(d, str)}
    return axes
