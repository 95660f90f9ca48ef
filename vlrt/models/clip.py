"""The CLIP towers exactly as CLIP computes them, with OpenAI CLIP's parameter names.

Vision: patchify (conv, no bias) -> prepend class token -> + positions -> ln_pre -> pre-LN
transformer -> ln_post on the class token -> @ proj.
Text: token + position embeddings -> causal pre-LN transformer -> ln_final -> the feature at the
EOT token (the largest id in CLIP's vocabulary) -> @ text_projection.
"""
from __future__ import annotations

import torch
from torch import nn

from vlrt.models.config import ModelConfig
from vlrt.models.layers import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        v = cfg.vision
        grid = v.image_size // v.patch_size
        self.conv1 = nn.Conv2d(3, v.width, kernel_size=v.patch_size, stride=v.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(v.width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, v.width))
        self.ln_pre = nn.LayerNorm(v.width, eps=cfg.layer_norm_eps)
        self.transformer = Transformer(v.width, v.layers, v.heads, cfg.activation, cfg.layer_norm_eps, v.mlp_width)
        self.ln_post = nn.LayerNorm(v.width, eps=cfg.layer_norm_eps)
        self.proj = nn.Parameter(torch.empty(v.width, cfg.embed_dim))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token in front, before the transformer."""
        x = self.conv1(images)  # (N, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g*g, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (N, 1, W)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (N, 1+g*g, W)
        return self.ln_pre(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed pixels -> (N, embed_dim) unnormalised image embeddings."""
        x = self.transformer(self.tokens(images))  # (N, 1+g*g, W)
        return self.ln_post(x[:, 0, :]) @ self.proj  # (N, E)


class TextTransformer(nn.Module):
    """The text tower; its parameters sit at the top level of a CLIP state dict."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        t = cfg.text
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads, cfg.activation, cfg.layer_norm_eps, t.mlp_width)
        self.ln_final = nn.LayerNorm(t.width, eps=cfg.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))
        causal = torch.full((t.context_length, t.context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L) token ids -> (N, E) sentence and (N, L, E) per-token features, unnormalised."""
        n, length = ids.shape
        x = self.token_embedding(ids) + self.positional_embedding[:length]  # (N, L, W)
        x = self.transformer(x, self.causal_mask[:length, :length])  # (N, L, W)
        tokens = self.ln_final(x) @ self.text_projection  # (N, L, E)
        # EOT has the largest id; ArgMax over int64 is unsupported in ONNX Runtime, and float32
        # holds every id below 2**24 exactly.
        eot = ids.to(torch.float32).argmax(dim=-1)  # (N,)
        sentence = tokens[torch.arange(n, device=ids.device), eot]  # (N, E)
        return sentence, tokens


class CLIP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.visual = VisionTransformer(cfg)
        self.text = TextTransformer(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(ids)
