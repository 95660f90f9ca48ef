"""The export gate: ONNX Runtime (CPU, fp32) against the PyTorch reference (fp32).

The inputs (vlrt/build/validate.py) differ from the tracing inputs, and a second, smaller feed
checks that frames and words are really dynamic.
Every embedding vector is compared: each video, each valid frame, each sentence, each valid token.
A multi-vector family's scorer graph is fed the reference's own features (padded words and
frames included) and its scores compared with the reference scorer's: max |difference|.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlrt.build.validate import compare, short_inputs, validation_inputs, worse
from vlrt.errors import VlrtError
from vlrt.families import ScorerSpec
from vlrt.models import VideoTextModel
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx


@dataclasses.dataclass
class Report:
    min_cosine: float
    max_abs_diff: float
    per_output: dict[str, dict[str, float]]
    threshold: float
    backend: str = "onnxruntime-cpu-fp32"
    scores: dict[str, float] | None = None  # multi-vector: {max_abs_diff, threshold, pairs}

    @property
    def passed(self) -> bool:
        scores_ok = self.scores is None or self.scores["max_abs_diff"] <= self.scores["threshold"]
        return self.min_cosine >= self.threshold and scores_ok

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}

    def lines(self) -> list[str]:
        rows = [f"  {name:<13} min cos {m['min_cosine']:.9f}  max |diff| {m['max_abs_diff']:.2e}  "
                f"({int(m['vectors'])} vectors)" for name, m in self.per_output.items()]
        if self.scores is not None:
            rows.append(f"  {'scores':<13} max |diff| {self.scores['max_abs_diff']:.2e} <= "
                        f"{self.scores['threshold']:.0e}  ({int(self.scores['pairs'])} caption-video pairs)")
        verdict = "PASS" if self.passed else "FAIL"
        return [f"parity vs PyTorch fp32 ({self.backend}): {verdict} (min cos {self.min_cosine:.9f} "
                f">= {self.threshold})", *rows]


def reference_outputs(model: VideoTextModel, feeds: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        v = feeds["video"]
        video = model.video_outputs(torch.from_numpy(v["pixels"]), torch.from_numpy(v["frame_mask"]))
        text = model.text_outputs(torch.from_numpy(feeds["text"]["input_ids"]))
    return {name: value.numpy() for name, value in {**video, **text}.items()}


def score_parity(model: VideoTextModel, spec: ScorerSpec, path: Path, threshold: float,
                 references: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The scorer graph against the reference scorer on the reference's features, for every feed
    whose words and frames the scorer takes."""
    worst, pairs = 0.0, 0
    with OrtRunner(SessionFromOnnx(path)) as runner:
        for outputs in references:
            feeds = {name: outputs[name] for name in spec.inputs}
            if not fits(spec, feeds):
                continue
            with torch.no_grad():
                want = model.scorer(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()
            got = runner.infer(feeds)[spec.output]
            if got.shape != want.shape:
                raise VlrtError(f"{path.name}: scores have shape {got.shape}, the reference {want.shape}")
            worst, pairs = max(worst, float(np.abs(got - want).max())), pairs + want.size
    if not pairs:
        raise VlrtError(f"{path.name}: no gate feed has the {spec.words} words and {spec.frames} frames it takes")
    return {"max_abs_diff": worst, "threshold": threshold, "pairs": float(pairs)}


def fits(spec: ScorerSpec, feeds: dict[str, np.ndarray]) -> bool:
    """Whether features have the word and frame slots a scorer with fixed counts takes."""
    words = next(v.shape[1] for k, v in feeds.items() if k in spec.text_inputs and v.ndim == 3)
    frames = next(v.shape[1] for k, v in feeds.items() if k in spec.video_inputs and v.ndim == 3)
    return spec.words in (0, words) and spec.frames in (0, frames)


def validate(model: VideoTextModel, graphs: dict[str, Path], *, frames: int, words: int,
             threshold: float, scorer: tuple[ScorerSpec, Path, float] | None = None) -> Report:
    size = model.config.vision.image_size
    feed_sets = [validation_inputs(image_size=size, frames=frames, words=words),
                 short_inputs(image_size=size, frames=frames, words=words)]
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
                    per_output[out_name] = worse(per_output.get(out_name), compare(expected[out_name], value))
    return Report(
        min_cosine=min(m["min_cosine"] for m in per_output.values()),
        max_abs_diff=max(m["max_abs_diff"] for m in per_output.values()),
        per_output=per_output,
        threshold=threshold,
        scores=score_parity(model, *scorer, references) if scorer else None,
    )
