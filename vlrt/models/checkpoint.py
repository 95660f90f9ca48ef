"""vlrt's own checkpoint format: one torch.save'd dict of plain data and tensors.

{"format": "vlrt-checkpoint", "version": 1, "family": str, "config": ModelConfig.to_dict(),
 "settings": {max_frames, max_words, sampling, preprocessing}, "state_dict": canonical names}
It loads with torch.load(weights_only=True): nothing in it needs unpickling of code.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import torch

from vlrt.models.video_text import VideoTextModel

FORMAT = "vlrt-checkpoint"


def save_checkpoint(model: VideoTextModel, path: str | Path, *, family: str = "clip4clip",
                    settings: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write `model` as a vlrt checkpoint; `half` stores weights in fp16 (half the size), and a
    path ending in .gz is gzip-compressed (untrained all-zero rows then cost almost nothing)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).clone()
             for k, v in model.state_dict().items()}
    path = Path(path)
    payload = {"format": FORMAT, "version": 1, "family": family, "config": model.config.to_dict(),
               "settings": settings or {}, "state_dict": state}
    if path.suffix != ".gz":
        torch.save(payload, path)
        return path
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    # mtime=0: the same weights give the same bytes, so a shipped file's hash is reproducible.
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0))
    return path
