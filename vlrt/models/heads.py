"""CLIP4Clip's temporal heads: frame embeddings (B, T, E) -> per-frame outputs (B, T, E).

The video embedding is then normalize(masked mean over frames of normalize(head output)), as
CLIP4Clip computes it; that part lives in `VideoTextModel` because every head shares it.
Frame masks are prefix masks (1 for the first n frames, 0 after), as CLIP4Clip's are.
"""
from __future__ import annotations

import torch
from torch import nn

from vlrt.models.config import HeadConfig
from vlrt.models.layers import Transformer


class MeanPooling(nn.Module):
    """meanP: no temporal parameters; the frame embeddings are pooled as they are."""

    def __init__(self, cfg: HeadConfig, width: int) -> None:
        super().__init__()

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames


class SeqTransformer(nn.Module):
    """seqTransf: frame positions + a small transformer over frames, with a residual around it."""

    def __init__(self, cfg: HeadConfig, width: int) -> None:
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(cfg.max_positions, width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, "quick_gelu", cfg.layer_norm_eps)
        # A float attribute, not a buffer: export may lower it to an fp16-safe value and restore it.
        self.mask_value = cfg.mask_value

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = frames.shape[1]
        x = frames + self.frame_position_embeddings.weight[:t]  # (B, T, E)
        # Padded frames are masked as keys only; their own outputs are dropped by the pooling.
        key_mask = (1.0 - mask)[:, None, None, :] * self.mask_value  # (B, 1, 1, T)
        return self.transformer(x, key_mask) + frames  # (B, T, E)


class SeqLSTM(nn.Module):
    """seqLSTM: a one-layer unidirectional LSTM over frames, with a residual around it.

    CLIP4Clip packs the sequence to its length; for a unidirectional LSTM and a prefix mask the
    outputs at valid frames are the same without packing, and padded frames are masked out later.
    """

    def __init__(self, cfg: HeadConfig, width: int) -> None:
        super().__init__()
        # CLIP4Clip creates (and never uses) a frame position table for seqLSTM too; keeping it
        # lets its checkpoints load strictly.
        self.frame_position_embeddings = nn.Embedding(cfg.max_positions, width)
        self.lstm = nn.LSTM(width, width, num_layers=1, batch_first=True)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(frames)  # (B, T, E)
        return out + frames


HEADS: dict[str, type[nn.Module]] = {
    "meanP": MeanPooling,
    "seqTransf": SeqTransformer,
    "seqLSTM": SeqLSTM,
}


def make_head(cfg: HeadConfig, width: int) -> nn.Module:
    return HEADS[cfg.type](cfg, width)
