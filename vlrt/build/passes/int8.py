"""INT8 graphs: dynamic quantization (weights only, calibration-free) and calibrated static Q/DQ."""
from __future__ import annotations

import collections
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from vlrt.build.passes import EmbeddingTail, PassReport, PatchEmbedding, count_ops
from vlrt.errors import VlrtError

log = logging.getLogger(__name__)

# Text calibration set: varied length, vocabulary and structure, like real queries (not the
# synthetic test captions, which would flatter the model vlrt ships).
CAPTIONS = (
    "a man is cooking pasta in a small kitchen",
    "two dogs run across a snowy field",
    "a woman plays the violin on a stage",
    "children are playing football in a park",
    "a car drives down a wet road at night",
    "someone is slicing vegetables on a wooden board",
    "a cat jumps onto the table",
    "a crowd cheers at a concert while fireworks explode above the stage",
    "a person is riding a bicycle through the city",
    "waves crash against the rocks",
    "a chef explains how to make a chocolate cake step by step",
    "an old man reads a newspaper on a bench",
    "a red ball rolls to the left",
    "a blue square moves up",
    "three small green circles",
    "a yellow triangle spins slowly",
    "a plane takes off from the runway",
    "a group of friends laugh around a campfire",
    "a girl is brushing her teeth",
    "a basketball player dunks the ball",
    "a tutorial on how to fix a flat tire",
    "a horse gallops along the beach at sunset",
    "people are dancing at a wedding",
    "a news anchor talks about the weather",
    "someone types on a laptop keyboard",
    "a baby laughs",
    "a monkey eats a banana in a tree",
    "the camera pans over a mountain range covered in snow",
    "a man repairs the engine of an old truck",
    "a skateboarder falls off a ramp",
    "two people are arguing in a kitchen",
    "a time lapse of clouds moving over a city skyline",
    "a dog catches a frisbee",
    "a woman is applying makeup in front of a mirror",
    "kids build a sandcastle",
    "a train passes through a tunnel",
    "someone pours coffee into a white cup",
    "a soccer goalkeeper saves a penalty",
    "a band performs a rock song",
    "an animated character waves hello",
    "a fish swims among coral",
    "a person explains a math problem on a whiteboard",
    "rain falls on a window",
    "a large purple star moves quickly to the right",
    "a boy and his father fly a kite on a windy hill",
    "the players shake hands after the match",
    "a bird lands on a branch",
    "a woman runs on a treadmill in a gym",
    "a close up of hands knitting a scarf",
    "cars are stuck in heavy traffic on the highway",
    "",
)


def prepare(src: Path, dst: Path) -> Path:
    """ORT's pre-quantization step: shape inference and basic graph optimisation.

    Its symbolic shape inference fails on these graphs (dynamic batch x frames reshapes), so it is
    skipped; ONNX shape inference is enough for the quantizer.
    """
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def kept_in_fp32(model: onnx.ModelProto) -> set[str]:
    """Node names the int8 passes leave alone: the patch embedding and the embedding tail."""
    return {n.name for n in [*PatchEmbedding.nodes(model), *EmbeddingTail.nodes(model)]}


# Attention: the fused node of FuseAttention (passes/attention.py) becomes QAttention, whose q/k/v
# projection is int8; graphs without it are unaffected.
DYNAMIC_OPS = ("MatMul", "Attention")


@dataclasses.dataclass
class DynamicInt8:
    """MatMul weights to int8 (per output channel); activations quantized to uint8 at run time.

        x ─► MatMul(x, W) ─►        becomes        x ─► DynamicQuantizeLinear ─► MatMulInteger(x_u8, W_s8) ─► Cast ─► Mul(scales) ─►

    Matches: every MatMul whose B is a constant (QKV, attention output and MLP projections of
    each transformer block); MatMuls of two activations (Q·Kᵀ, attention·V) stay fp32.
    Excluded: the patch-embedding Conv and the embedding tail (`kept_in_fp32`). Why: no
    calibration needed (each batch brings its own activation range), so it is robust on any input;
    with VNNI the u8·s8 dot products run at about twice the fp32 rate. `reduce_range` (7-bit
    weights) avoids the int16 saturation of u8·s8 on CPUs without VNNI.
    """

    per_channel: bool = True
    reduce_range: bool = False
    preprocess: bool = True
    name: ClassVar[str] = "int8-dynamic"

    def options(self) -> dict[str, Any]:
        return {"mode": "dynamic", "weights": "int8", "activations": "uint8 (dynamic)", "ops": list(DYNAMIC_OPS),
                **dataclasses.asdict(self)}

    def apply(self, src: Path, dst: Path) -> PassReport:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="vlrt-int8-") as tmp:
            path = prepare(src, Path(tmp) / "pre.onnx") if self.preprocess else src
            model = onnx.load(str(path))
            keep = kept_in_fp32(model)
            quantize_dynamic(
                str(path), str(dst), op_types_to_quantize=list(DYNAMIC_OPS), per_channel=self.per_channel,
                reduce_range=self.reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=sorted(keep),
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        return _report(self.name, self.options(), model, keep, dst,
                       {"MatMulInteger": "MatMulInteger", "QAttention": "QAttention", "MatMul left fp32": "MatMul"})


def _report(name: str, options: dict[str, Any], model: onnx.ModelProto, keep, dst: Path,
            counted: dict[str, str]) -> PassReport:
    """What a quantization pass did: node counts of the written graph (`counted`: label -> op type)."""
    out = onnx.load(str(dst))
    ops = collections.Counter(n.op_type for n in out.graph.node)
    by_op = count_ops(model, keep)
    return PassReport(name=name, nodes=len(out.graph.node), kept_fp32=sum(by_op.values()),
                      kept_fp32_by_op=by_op, changed={label: ops[op] for label, op in counted.items()},
                      options=options)


@dataclasses.dataclass
class StaticInt8QDQ:
    """Calibrated static quantization in QDQ form: QuantizeLinear/DequantizeLinear pairs around MatMuls.

        x ─► MatMul(x, W) ─►        becomes        x ─► Q ─► DQ ─► MatMul ◄─ DQ ◄─ W_s8 (per channel) ─►

    Matches: the MatMuls of the transformer blocks (both inputs, activations included), with scales
    from calibration data (MinMax over real inputs). Excluded: the patch-embedding Conv and the
    embedding tail (`kept_in_fp32`). Why: with fixed scales ONNX Runtime fuses DQ→MatMul→Q into
    integer kernels with no per-batch range computation, and TensorRT builds INT8 layers only
    from explicit Q/DQ nodes like these. `symmetric` gives int8 activations with zero point 0
    (what TensorRT expects); otherwise uint8 asymmetric (ORT CPU's fast u8·s8 path).
    """

    symmetric: bool = False
    per_channel: bool = True
    reduce_range: bool = False
    preprocess: bool = True
    ops: tuple[str, ...] = ("MatMul",)
    calibrate_method: str = "MinMax"
    name: ClassVar[str] = "int8-static-qdq"

    def options(self) -> dict[str, Any]:
        return {"mode": "static", "format": "QDQ", "weights": "int8",
                "activations": "int8 symmetric" if self.symmetric else "uint8", **dataclasses.asdict(self),
                "ops": list(self.ops)}

    def apply(self, src: Path, dst: Path, reader: CalibrationDataReader) -> PassReport:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        act = QuantType.QInt8 if self.symmetric else QuantType.QUInt8
        with tempfile.TemporaryDirectory(prefix="vlrt-qdq-") as tmp:
            path = prepare(src, Path(tmp) / "pre.onnx") if self.preprocess else src
            model = onnx.load(str(path))
            keep = kept_in_fp32(model)
            quantize_static(
                str(path), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(self.ops),
                per_channel=self.per_channel, reduce_range=self.reduce_range, activation_type=act,
                weight_type=QuantType.QInt8, nodes_to_exclude=sorted(keep),
                calibrate_method=CalibrationMethod[self.calibrate_method],
                extra_options={"ActivationSymmetric": self.symmetric, "WeightSymmetric": True},
            )
        return _report(self.name, self.options(), model, keep, dst,
                       {"QuantizeLinear": "QuantizeLinear", "DequantizeLinear": "DequantizeLinear"})


class FrameCalibration(CalibrationDataReader):
    """Video-graph calibration feeds: real videos, sampled and preprocessed as the manifest says."""

    def __init__(self, manifest: dict[str, Any], videos: Sequence[str | Path], *, batch_size: int = 4) -> None:
        from vlrt.runtime.pipeline import ClipLoader

        self._loader = ClipLoader(manifest)
        self._videos = [str(v) for v in videos]
        self._batch_size = batch_size
        self._feeds: Iterator[dict[str, np.ndarray]] | None = None
        self.frames = 0
        self.skipped: list[str] = []

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._feeds is None:
            self._feeds = self._iterate()
        return next(self._feeds, None)

    def rewind(self) -> None:
        self._feeds = None

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        self.frames, self.skipped = 0, []
        for i in range(0, len(self._videos), self._batch_size):
            clips = []
            for path in self._videos[i:i + self._batch_size]:
                try:
                    clips.append(self._loader(path))
                except VlrtError as exc:  # one bad file does not spoil the calibration set
                    log.warning("calibration: skipping %s", exc)
                    self.skipped.append(path)
            if not clips:
                continue
            mask = np.zeros((len(clips), clips[0].pixels.shape[0]), np.float32)  # (B, T)
            for b, clip in enumerate(clips):
                mask[b, :clip.n_frames] = 1.0
            self.frames += int(mask.sum())
            yield {"pixels": np.stack([c.pixels for c in clips]), "frame_mask": mask}  # (B, T, 3, S, S), (B, T)
        if not self.frames:
            raise VlrtError(f"calibration: none of the {len(self._videos)} videos could be decoded")


class CaptionCalibration(CalibrationDataReader):
    """Text-graph calibration feeds: `CAPTIONS`, tokenized with the bundle's tokenizer."""

    def __init__(self, tokenizer, *, context_length: int, batch_size: int = 10) -> None:
        self._ids = tokenizer(list(CAPTIONS), context_length=context_length)  # (N, L) int64
        self._batch_size = batch_size
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._ids):
            return None
        batch = self._ids[self._next:self._next + self._batch_size]
        self._next += self._batch_size
        return {"input_ids": batch}

    def rewind(self) -> None:
        self._next = 0
