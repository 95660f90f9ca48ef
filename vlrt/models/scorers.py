"""Multi-grained scorers: a caption against a video by more than one dot product.

A scorer family's encoders write per-frame and per-word features (and, for DRL, their weights)
beside the sentence and video vectors; the scorer turns a caption's features and a video's
features into one score. Scores are the models' evaluation logits without CLIP's logit scale
(a constant factor, which does not change a ranking).

Padding follows each model's own code exactly:
- X-CLIP masks nothing in its scorer. Every one of its fixed W word slots takes part (the
  projected hidden states after EOT included), and every one of its F frame slots (a padded
  slot holds the features of an all-zero image, which its data loader puts there). Only the
  video vector is a masked mean.
- DRL masks everything: padded words and frames have zero similarity and zero weight.
"""
from __future__ import annotations

import torch
from torch import nn

from vlrt.models.config import ModelConfig, ScorerConfig

# X-CLIP's attention over similarity matrices divides by this temperature (1e-2) everywhere.
XCLIP_TEMPERATURE = 1e-2


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    # No epsilon: both models divide by the norm.
    return x / x.norm(dim=-1, keepdim=True)


def masked_video_mean(per_frame: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """normalize(mean over real frames of normalize(per_frame)): CLIP4Clip's video vector, which
    X-CLIP and DRL compute the same way. (B, T, E), (B, T) -> (B, E), (B, T, E) zero where masked."""
    frames = l2_normalize(per_frame) * mask[..., None]
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # an all-padded video counts as one frame
    return l2_normalize(frames.sum(dim=1) / count), frames


def _weighted(sims: torch.Tensor, dim: int, weight: torch.Tensor) -> torch.Tensor:
    """X-CLIP's pattern: sum over `dim` of sims x (softmax(sims / t) over `dim`, mixed by the
    learned square `weight` along that axis)."""
    att = torch.softmax(sims / XCLIP_TEMPERATURE, dim=dim)
    last = sims.dim() - 1  # swapped with positive axes: the exporter mistranslates a negative one
    mixed = torch.matmul(att.transpose(dim, last), weight).transpose(dim, last)
    return (sims * mixed).sum(dim=dim)


class XClipScorer(nn.Module):
    """X-CLIP (loose type): video-sentence, video-word, sentence-frame and frame-word similarities,
    averaged. Parameter names are X-CLIP's own; all are square matrices initialised to identity."""

    MATRICES = (("global_mat_weight", "embed"), ("word_logit_weight", "words"), ("frame_logit_weight", "frames"),
                ("local_mat_weight", "embed"), ("frame_mat_weight", "frames"), ("word_mat_weight", "words"),
                ("frame_mat_weight2", "frames"), ("word_mat_weight2", "words"))

    def __init__(self, cfg: ScorerConfig, embed_dim: int) -> None:
        super().__init__()
        sizes = {"embed": embed_dim, "words": cfg.words, "frames": cfg.frames}
        for name, axis in self.MATRICES:
            self.register_parameter(name, nn.Parameter(torch.eye(sizes[axis])))

    def video_outputs(self, clip_frames: torch.Tensor, head_out: torch.Tensor,
                      mask: torch.Tensor) -> dict[str, torch.Tensor]:
        video, _ = masked_video_mean(head_out, mask)
        # the frame-level features are the CLIP frame features before the temporal head, every slot
        return {"video_embeds": video, "frame_embeds": l2_normalize(clip_frames)}

    def text_outputs(self, sentence: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text_embeds": l2_normalize(sentence), "token_embeds": l2_normalize(tokens)}

    def forward(self, text_embeds: torch.Tensor, token_embeds: torch.Tensor, video_embeds: torch.Tensor,
                frame_embeds: torch.Tensor) -> torch.Tensor:
        """(Q, E), (Q, W, E) captions x (N, E), (N, F, E) videos -> (Q, N) scores."""
        q, w, e = token_embeds.shape
        n, f, _ = frame_embeds.shape
        video_sentence = (text_embeds @ self.global_mat_weight) @ video_embeds.t()  # (Q, N)
        word_video = torch.einsum("qwe,ne->qwn", token_embeds, video_embeds)  # (Q, W, N)
        video_word = _weighted(word_video, 1, self.word_logit_weight)  # (Q, N)
        sentence_frame = torch.einsum("qe,nfe->qnf", text_embeds, frame_embeds)  # (Q, N, F)
        sentence_frame = _weighted(sentence_frame, 2, self.frame_logit_weight)  # (Q, N)
        fine = ((token_embeds.reshape(q * w, e) @ self.local_mat_weight) @ frame_embeds.reshape(n * f, e).t())
        fine = fine.reshape(q, w, n, f)  # (Q, W, N, F)
        per_frame = _weighted(fine, 1, self.word_mat_weight)  # (Q, N, F): words pooled per frame
        per_word = _weighted(fine, 3, self.frame_mat_weight)  # (Q, W, N): frames pooled per word
        frame_word = (_weighted(per_frame, 2, self.frame_mat_weight2)
                      + _weighted(per_word, 1, self.word_mat_weight2)) / 2  # (Q, N)
        return (video_sentence + video_word + sentence_frame + frame_word) / 4


def _weight_mlp(layers: int, width: int) -> nn.Module:
    """DRL's `wti_arch`: 1 -> Linear(width, 1); 2, 3 -> (Linear, ReLU) x (layers - 1), Linear(width, 1)."""
    if layers == 1:
        return nn.Linear(width, 1)
    parts: list[nn.Module] = []
    for _ in range(layers - 1):
        parts += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*parts, nn.Linear(width, 1))


class DrlScorer(nn.Module):
    """DRL's weighted token-wise interaction (wti; with no weight MLPs, its uniform "ti").

    Per pair: each word's best frame similarity, weighted by the caption's word weights, and each
    frame's best word similarity, weighted by the video's frame weights, averaged. The weights
    depend on one side only, so the encoders compute them and the scorer has no parameters."""

    def __init__(self, cfg: ScorerConfig, embed_dim: int) -> None:
        super().__init__()
        self.layers = cfg.weight_layers
        if self.layers:
            self.text_weight_fc = _weight_mlp(self.layers, embed_dim)
            self.video_weight_fc = _weight_mlp(self.layers, embed_dim)

    def _weights(self, fc: nn.Module | None, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if fc is None:
            return mask / mask.sum(dim=1, keepdim=True)
        logits = fc(features).squeeze(-1).masked_fill(mask == 0, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def video_outputs(self, clip_frames: torch.Tensor, head_out: torch.Tensor,
                      mask: torch.Tensor) -> dict[str, torch.Tensor]:
        video, frames = masked_video_mean(head_out, mask)
        weights = self._weights(getattr(self, "video_weight_fc", None), head_out, mask)
        return {"video_embeds": video, "frame_embeds": frames, "frame_weights": weights}

    def text_outputs(self, sentence: torch.Tensor, tokens: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # DRL's text mask covers SOT..EOT (EOT has the largest id)
        eot = ids.to(torch.float32).argmax(dim=-1, keepdim=True)  # (B, 1)
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot).to(tokens.dtype)  # (B, L)
        weights = self._weights(getattr(self, "text_weight_fc", None), tokens, mask)
        return {"text_embeds": l2_normalize(sentence), "token_embeds": l2_normalize(tokens) * mask[..., None],
                "token_weights": weights}

    def forward(self, token_embeds: torch.Tensor, token_weights: torch.Tensor, frame_embeds: torch.Tensor,
                frame_weights: torch.Tensor) -> torch.Tensor:
        """(Q, L, E), (Q, L) captions x (N, T, E), (N, T) videos -> (Q, N) scores."""
        sims = torch.einsum("qle,nte->qnlt", token_embeds, frame_embeds)  # (Q, N, L, T); padding: 0
        text_to_video = (sims.amax(dim=3) * token_weights[:, None, :]).sum(dim=2)  # (Q, N)
        video_to_text = (sims.amax(dim=2) * frame_weights[None, :, :]).sum(dim=2)  # (Q, N)
        return (text_to_video + video_to_text) / 2


SCORERS: dict[str, type[nn.Module]] = {"xclip": XClipScorer, "drl": DrlScorer}


def make_scorer(cfg: ModelConfig) -> nn.Module | None:
    return SCORERS[cfg.scorer.type](cfg.scorer, cfg.embed_dim) if cfg.scorer else None

