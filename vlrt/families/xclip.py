"""X-CLIP (xuguohai/X-CLIP, "loose type"): CLIP towers and a CLIP4Clip temporal head, scored by
video-sentence, video-word, sentence-frame and frame-word similarities with attention over the
similarity matrices (vlrt/models/scorers.py).

Its scorer's weight matrices fix a caption at exactly `max_words` token slots and a video at
exactly `max_frames` frame slots; both are read from the checkpoint's shapes. Padded slots
take part in the scores, as in X-CLIP's own code.
"""
from __future__ import annotations

from vlrt.families import Family, ScorerSpec, register
from vlrt.families.clip import ONE_FPS, clip_graphs


def xclip_scorer(*, embed_dim: int, words: int, frames: int) -> ScorerSpec:
    e = embed_dim
    return ScorerSpec(
        "scorer.onnx",
        text_inputs={"text_embeds": ["queries", e], "token_embeds": ["queries", words, e]},
        video_inputs={"video_embeds": ["videos", e], "frame_embeds": ["videos", frames, e]},
        words=words, frames=frames)


register(Family(
    name="xclip",
    description="X-CLIP: CLIP towers, a temporal head and a multi-grained scorer",
    heads=("meanP", "seqTransf", "seqLSTM"),
    # X-CLIP's released runs: max_words 32, max_frames 12, 1 fps, slice_framepos 2 (the checkpoint
    # fixes words and frames through its scorer's shapes).
    max_frames=12,
    max_words=32,
    sampling=dict(ONE_FPS),
    graphs=clip_graphs,
    embedding="multi-vector",
    scorer=xclip_scorer,
    scores_padded_frames=True,
))
