"""Redundant-frame skipping: sampled frames nearly identical to an earlier one are encoded once.

Static shots, slides, fades to black and paused screen recordings give runs of sampled frames
that differ by compression noise only. With `Runtime.load(..., skip_similar=T)` each video's
frames are compared, in order, to the last frame that was encoded ("the representative"); a
frame whose mean absolute difference from it is at most T levels of 255 (on the preprocessed
pixels, de-normalised) reuses the representative's frame features. The vision tower then runs on
the representatives only, and the temporal head (mean pooling, seqTransf, seqLSTM) runs on the
full sequence of T frame features, duplicates included, so every pooling rule sees what it would
have seen had it encoded the duplicate itself (exactly that, for bit-identical frames).

This needs the video graph in two parts, the per-frame tower (pixels -> projected frame
features [B, T, D]) and the head (features + mask -> video and frame embeddings), the same parts
that packed frames use (`Runtime.load(..., pack=True)`, the default: the tower runs on the real
frames of a batch only). They are cut from the engine's (or bundle's) video graph with the `onnx`
package on first use and cached under $XDG_CACHE_HOME/vlrt/split/<sha256 of the graph>-<the kept
outputs' hash>/, so a changed graph never reuses a stale split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from vlrt.constants import VISION_PROJECTION
from vlrt.errors import VlrtError


@dataclasses.dataclass
class SkipStats:
    frames: int = 0  # valid (unmasked) frames seen
    encoded: int = 0  # frames that went through the vision tower

    @property
    def skipped(self) -> int:
        return self.frames - self.encoded


def representatives(pixels: np.ndarray, mask: np.ndarray, threshold: float, std: np.ndarray) -> np.ndarray:
    """(N, T) index into the flattened (N*T) frames of each frame's representative; -1 where masked.

    `threshold`: mean absolute difference in 8-bit levels; `std`: the preprocessing std per
    channel, to turn normalised differences back into levels."""
    n, t = mask.shape
    scale = (255.0 * np.asarray(std, np.float32)).reshape(3, 1, 1)
    rep = np.full((n, t), -1, np.int64)
    for i in range(n):
        last = -1
        for j in range(t):
            if mask[i, j] == 0:
                break
            if last >= 0 and float(np.abs((pixels[i, j] - pixels[i, last]) * scale).mean()) <= threshold:
                rep[i, j] = i * t + last
            else:
                rep[i, j] = i * t + j
                last = j
    return rep


def split_video_graph(path: Path, sha256: str, outputs: tuple[str, ...]) -> tuple[Path, Path]:
    """(tower, head) graphs cut from the video graph at the projected frame features; cached.
    `outputs`: the video graph's outputs the head part keeps (the manifest names them)."""
    kept = hashlib.sha256(",".join(outputs).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlrt" / "split" / f"{sha256}-{kept}"
    tower, head = base / "video_frames.onnx", base / "video_head.onnx"
    if tower.is_file() and head.is_file():
        return tower, head
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError:
        raise VlrtError("the video graph is cut in two with the onnx package: pip install 'vlrt[build]'") from None
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    cut = _features_tensor(model)
    extractor = Extractor(model)
    try:
        base.mkdir(parents=True, exist_ok=True)
        (base / "features").write_text(cut)  # before the graphs, whose presence marks the split done
        for target, inputs, kept in [(tower, ["pixels"], [cut]), (head, [cut, "frame_mask"], list(outputs))]:
            part = extractor.extract_model(inputs, kept)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            onnx.save(part, str(tmp))
            tmp.replace(target)
    except OSError as exc:
        raise VlrtError(f"cannot write the cut video graph under {base} ({exc.strerror}); set XDG_CACHE_HOME to a "
                        "writable folder") from None
    return tower, head


def features_name(tower: Path) -> str:
    return (tower.parent / "features").read_text()


def _features_tensor(model) -> str:
    """The Reshape to (B, T, D) right after the vision projection: where the temporal head starts."""
    projection = next((n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                       and any(i.endswith(VISION_PROJECTION) for i in n.input)), None)
    if projection is None:
        raise VlrtError(f"graph {model.graph.name!r}: no vision projection ({VISION_PROJECTION}); was it exported by vlrt?")
    consumers = [n for n in model.graph.node if projection.output[0] in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "Reshape":
        raise VlrtError(f"graph {model.graph.name!r}: the vision projection does not feed one Reshape to (B, T, D); "
                        "it cannot be cut at the frame features")
    return consumers[0].output[0]
