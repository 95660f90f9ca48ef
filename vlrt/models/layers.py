"""Transformer building blocks shared by the CLIP towers and the temporal head.

Parameter names follow OpenAI CLIP (`attn.in_proj_weight`, `mlp.c_fc`, `ln_1`, ...) so that
checkpoints in that layout load without renaming. Attention is written as MatMul -> Softmax ->
MatMul with an additive mask: the pattern ONNX Runtime and TensorRT recognise and fuse.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    # Exact (erf) GELU, as open_clip and Hugging Face use for "gelu".
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class MultiheadAttention(nn.Module):
    """Self-attention with a packed q/k/v projection, as torch.nn.MultiheadAttention stores it."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        head_dim = d // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
        qkv = qkv.reshape(b, n, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q * (1.0 / math.sqrt(head_dim)), k.transpose(-1, -2))  # (B, H, N, N)
        if mask is not None:
            scores = scores + mask  # mask broadcasts from (N, N) or (B, 1, N, N)
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v)  # (B, H, N, hd)
        out = out.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.out_proj(out)


class Mlp(nn.Module):
    def __init__(self, width: int, activation: str, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 4 * width  # CLIP's ratio; some open_clip models use another
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = make_activation(activation)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, activation: str, eps: float, mlp_width: int | None = None) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, activation, mlp_width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str, eps: float,
                 mlp_width: int | None = None) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualBlock(width, heads, activation, eps, mlp_width) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x
