"""CLIP-based families: image CLIP applied to sampled frames, and CLIP4Clip's temporal heads.

Both embed a video as one vector (its frames through CLIP's vision tower, then a temporal head)
and a caption as one vector (EOT pooling of CLIP's text tower), scored by a dot product.
"""
from __future__ import annotations

from vlrt.families import Family, GraphSpec, Head, register, register_head

# CLIP4Clip's `slice_framepos` 2 spreads the kept frames evenly (linspace over the 1-fps frames).
ONE_FPS = {"rule": "fps_timeline", "fps": 1.0, "slice_framepos": 2}


def clip_graphs(*, image_size: int, embed_dim: int) -> dict[str, GraphSpec]:
    """A video graph (frames + prefix mask -> video and per-frame embeddings) and a text graph
    (token ids -> sentence and per-token embeddings); batch, frames and words are dynamic."""
    s, e = image_size, embed_dim
    return {
        "video": GraphSpec(
            "video", "video.onnx",
            inputs={"pixels": ["batch", "frames", 3, s, s], "frame_mask": ["batch", "frames"]},
            outputs={"video_embeds": ["batch", e], "frame_embeds": ["batch", "frames", e]},
            input_types={"pixels": "float32", "frame_mask": "float32"},
            embedding="video_embeds", features="frame_embeds"),
        "text": GraphSpec(
            "text", "text.onnx",
            inputs={"input_ids": ["batch", "words"]},
            outputs={"text_embeds": ["batch", e], "token_embeds": ["batch", "words", e]},
            input_types={"input_ids": "int64"},
            embedding="text_embeds", features="token_embeds"),
    }


register_head(Head("meanP", "mean of the normalised frame embeddings (no parameters)", positional=False))
register_head(Head("seqTransf", "frame positions + a small transformer over frames, residual", positional=True))
register_head(Head("seqLSTM", "a one-layer LSTM over frames, residual", positional=False))

register(Family(
    name="clip",
    description="image CLIP applied to sampled frames, frame embeddings mean-pooled",
    heads=("meanP",),
    max_frames=12,
    max_words=None,
    # CLIP4Clip's 1-fps rule is the common choice for CLIP on frames.
    sampling=dict(ONE_FPS),
    graphs=clip_graphs,
))

register(Family(
    name="clip4clip",
    description="CLIP4Clip: CLIP towers with a meanP / seqLSTM / seqTransf temporal head",
    heads=("meanP", "seqTransf", "seqLSTM"),
    # CLIP4Clip's released runs: max_words 32, max_frames 12, 1 fps, slice_framepos 2. None of
    # these is stored in its checkpoints.
    max_frames=12,
    max_words=32,
    sampling=dict(ONE_FPS),
    graphs=clip_graphs,
))
