"""The export gate: ONNX Runtime (CPU, fp32) against the PyTorch reference (fp32).

Inputs differ from the tracing inputs (another batch size, other masks, real captions) so that a
graph that baked in a traced shape or value fails here; a second, smaller feed (one video with
fewer frames, captions in a shorter context) checks that frames and words are really dynamic.
Every embedding vector is compared: each video, each valid frame, each sentence, each valid token.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlrt.errors import VlrtError
from vlrt.models import VideoTextModel
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.tokenizer import ClipTokenizer

CAPTIONS = (
    "a man is cooking pasta in a small kitchen",
    "two dogs run across a snowy field",
    "a red circle moves to the left",
    "someone plays the guitar on a stage while the crowd sings along and claps",
)


@dataclasses.dataclass
class Report:
    min_cosine: float
    max_abs_diff: float
    per_output: dict[str, dict[str, float]]
    threshold: float
    backend: str = "onnxruntime-cpu-fp32"

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}

    def lines(self) -> list[str]:
        rows = [f"  {name:<13} min cos {m['min_cosine']:.9f}  max |diff| {m['max_abs_diff']:.2e}  "
                f"({int(m['vectors'])} vectors)" for name, m in self.per_output.items()]
        verdict = "PASS" if self.passed else "FAIL"
        return [f"parity vs PyTorch fp32 ({self.backend}): {verdict} (min cos {self.min_cosine:.9f} "
                f">= {self.threshold})", *rows]


def validation_inputs(model: VideoTextModel, *, frames: int, words: int) -> dict[str, dict[str, np.ndarray]]:
    size = model.config.vision.image_size
    rng = np.random.default_rng(1234)
    pixels = rng.standard_normal((3, frames, 3, size, size), dtype=np.float32)
    mask = np.ones((3, frames), dtype=np.float32)
    mask[1, 1:] = 0  # a one-frame video
    mask[2, (frames + 1) // 2:] = 0
    ids = ClipTokenizer()(list(CAPTIONS), context_length=words)
    return {"video": {"pixels": pixels, "frame_mask": mask}, "text": {"input_ids": ids}}


def reference_outputs(model: VideoTextModel, feeds: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        v = feeds["video"]
        video, frames = model.encode_video(torch.from_numpy(v["pixels"]), torch.from_numpy(v["frame_mask"]))
        text, tokens = model.encode_text(torch.from_numpy(feeds["text"]["input_ids"]))
    return {"video_embeds": video.numpy(), "frame_embeds": frames.numpy(),
            "text_embeds": text.numpy(), "token_embeds": tokens.numpy()}


def compare(expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Cosine per embedding vector (all-zero reference vectors, i.e. padding, must stay zero)."""
    e = expected.reshape(-1, expected.shape[-1]).astype(np.float64)  # (V, E)
    a = actual.reshape(-1, actual.shape[-1]).astype(np.float64)  # (V, E)
    real = np.linalg.norm(e, axis=1) > 0
    cos = (e[real] * a[real]).sum(1) / (np.linalg.norm(e[real], axis=1) * np.linalg.norm(a[real], axis=1))
    diff = float(np.abs(e - a).max())
    return {"min_cosine": float(np.nan_to_num(cos, nan=-1.0).min()), "max_abs_diff": diff,
            "vectors": float(real.sum())}


def short_inputs(model: VideoTextModel, *, frames: int, words: int) -> dict[str, dict[str, np.ndarray]]:
    """One video of fewer frames than traced, and captions in a shorter context (truncated)."""
    full = validation_inputs(model, frames=max(1, frames // 2), words=max(2, words // 2 + 1))
    return {"video": {k: v[2:] for k, v in full["video"].items()}, "text": full["text"]}


def _worse(a: dict[str, float] | None, b: dict[str, float]) -> dict[str, float]:
    if a is None:
        return b
    return {"min_cosine": min(a["min_cosine"], b["min_cosine"]), "max_abs_diff": max(a["max_abs_diff"], b["max_abs_diff"]),
            "vectors": a["vectors"] + b["vectors"]}


def validate(model: VideoTextModel, graphs: dict[str, Path], *, frames: int, words: int,
             threshold: float) -> Report:
    feed_sets = [validation_inputs(model, frames=frames, words=words), short_inputs(model, frames=frames, words=words)]
    references = [reference_outputs(model, feeds) for feeds in feed_sets]  # once, for both graphs
    per_output: dict[str, dict[str, float]] = {}
    for name, path in graphs.items():
        with OrtRunner(SessionFromOnnx(path)) as runner:
            for feeds, expected in zip(feed_sets, references):
                try:
                    got = runner.infer(feeds[name])
                except Exception as exc:  # noqa: BLE001 - ORT raises its own types for shape errors
                    shapes = {k: v.shape for k, v in feeds[name].items()}
                    raise VlrtError(f"{path.name} fails on inputs of shapes {shapes} that the PyTorch "
                                    f"model accepts: {str(exc).strip().splitlines()[0]}") from None
                for out_name, value in got.items():
                    if value.shape != expected[out_name].shape:
                        raise VlrtError(f"{path.name}: output {out_name} has shape {value.shape}, "
                                        f"the reference {expected[out_name].shape}")
                    per_output[out_name] = _worse(per_output.get(out_name), compare(expected[out_name], value))
    return Report(
        min_cosine=min(m["min_cosine"] for m in per_output.values()),
        max_abs_diff=max(m["max_abs_diff"] for m in per_output.values()),
        per_output=per_output,
        threshold=threshold,
    )
