"""The reference video-text model: CLIP towers plus a temporal head.

This is what every export is checked against. Its state dict uses vlrt's canonical names:
`clip.visual.*` (OpenAI CLIP's vision names), `clip.text.*` (OpenAI CLIP's top-level text
names), `clip.logit_scale`, and `head.*`. Loaders translate each checkpoint format into them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlrt.models.clip import CLIP
from vlrt.models.config import ModelConfig
from vlrt.models.heads import make_head


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # No epsilon, as CLIP4Clip divides by the norm; zero vectors only occur where a mask zeroes them
    # after normalisation.
    return x / x.norm(dim=-1, keepdim=True)


class VideoTextModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.clip = CLIP(cfg)
        self.head = make_head(cfg.head, cfg.embed_dim)

    def encode_video(
        self, pixels: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) pixels, (B, T) prefix mask -> (B, E) video, (B, T, E) frame embeddings.

        Both outputs are L2-normalised; frame embeddings of padded frames are zero.
        """
        b, t = pixels.shape[:2]
        images = pixels.reshape(b * t, *pixels.shape[2:])  # (B*T, 3, H, W)
        frames = self.clip.encode_image(images).reshape(b, t, -1)  # (B, T, E)
        mask = frame_mask.to(frames.dtype)  # (B, T)
        per_frame = l2_normalize(self.head(frames, mask)) * mask[..., None]  # (B, T, E)
        # CLIP4Clip counts an all-padded video as one frame rather than dividing by zero.
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        video = l2_normalize(per_frame.sum(dim=1) / count)  # (B, E)
        return video, per_frame

    def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) token ids -> (B, E) sentence, (B, L, E) token embeddings, L2-normalised.

        Token embeddings after the EOT token (padding) are zero.
        """
        sentence, tokens = self.clip.encode_text(ids)
        eot = ids.to(torch.float32).argmax(dim=-1, keepdim=True)  # (B, 1)
        positions = torch.arange(ids.shape[1], device=ids.device)[None, :]  # (1, L)
        valid = (positions <= eot).to(tokens.dtype)  # (B, L)
        return l2_normalize(sentence), F.normalize(tokens, dim=-1) * valid[..., None]
