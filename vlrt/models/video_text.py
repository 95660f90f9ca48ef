"""The reference video-text model: CLIP towers plus a temporal head, and a scorer for the
multi-grained families (vlrt/models/scorers.py).

This is what every export is checked against. Its state dict uses vlrt's canonical names:
`clip.visual.*` (OpenAI CLIP's vision names), `clip.text.*` (OpenAI CLIP's top-level text
names), `clip.logit_scale`, `head.*` and `scorer.*`. Loaders translate each checkpoint format into them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlrt.models.clip import CLIP
from vlrt.models.config import ModelConfig
from vlrt.models.heads import make_head
from vlrt.models.scorers import l2_normalize, make_scorer, masked_video_mean


class VideoTextModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.clip = CLIP(cfg)
        self.head = make_head(cfg.head, cfg.embed_dim)
        self.scorer = make_scorer(cfg)  # None: a dual encoder, scored by a dot product

    def _frames(self, pixels: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t = pixels.shape[:2]
        images = pixels.reshape(b * t, *pixels.shape[2:])  # (B*T, 3, H, W)
        frames = self.clip.encode_image(images).reshape(b, t, -1)  # (B, T, E)
        mask = frame_mask.to(frames.dtype)  # (B, T)
        return frames, self.head(frames, mask), mask

    def encode_video(
        self, pixels: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) pixels, (B, T) prefix mask -> (B, E) video, (B, T, E) frame embeddings.

        Both outputs are L2-normalised; frame embeddings of padded frames are zero.
        """
        _, head_out, mask = self._frames(pixels, frame_mask)
        return masked_video_mean(head_out, mask)

    def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) token ids -> (B, E) sentence, (B, L, E) token embeddings, L2-normalised.

        Token embeddings after the EOT token (padding) are zero.
        """
        sentence, tokens = self.clip.encode_text(ids)
        eot = ids.to(torch.float32).argmax(dim=-1, keepdim=True)  # (B, 1)
        positions = torch.arange(ids.shape[1], device=ids.device)[None, :]  # (1, L)
        valid = (positions <= eot).to(tokens.dtype)  # (B, L)
        return l2_normalize(sentence), F.normalize(tokens, dim=-1) * valid[..., None]

    def video_outputs(self, pixels: torch.Tensor, frame_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The video graph's outputs by name (the family's graph spec orders them)."""
        if self.scorer is None:
            video, frames = self.encode_video(pixels, frame_mask)
            return {"video_embeds": video, "frame_embeds": frames}
        return self.scorer.video_outputs(*self._frames(pixels, frame_mask))

    def text_outputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text graph's outputs by name."""
        if self.scorer is None:
            text, tokens = self.encode_text(ids)
            return {"text_embeds": text, "token_embeds": tokens}
        sentence, tokens = self.clip.encode_text(ids)
        return self.scorer.text_outputs(sentence, tokens, ids)
