"""Graph passes: a bundle's fp32 ONNX graph in, an optimized graph out; one class per transformation.

    fp16.Fp16Graph       fp16 graph for GPU backends; LayerNorm, Softmax and the embedding tail stay fp32
    int8.DynamicInt8     MatMul weights int8 per channel, activations quantized on the fly (ORT CPU)
    int8.StaticInt8QDQ   calibrated Q/DQ graph (ORT CPU; the form TensorRT consumes)
    tome.TokenMerge      token merging in the vision tower (structural; runs before a precision pass)
    attention.FuseAttention  attention subgraphs -> ONNX Runtime's fused Attention op (structural)

Every pass keeps the same two parts of a CLIP graph in fp32, found by the matchers below, and
returns a `PassReport` saying what it changed and what it kept.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import onnx

from vlrt.constants import PROJECTION_WEIGHTS
from vlrt.errors import VlrtError


@dataclasses.dataclass
class PassReport:
    """What a pass did to one graph."""

    name: str
    nodes: int  # nodes in the output graph
    kept_fp32: int  # compute nodes deliberately left in fp32 (blocked or excluded)
    kept_fp32_by_op: dict[str, int]
    changed: dict[str, int]  # e.g. {"MatMulInteger": 72} or {"fp16 compute nodes": 400}
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        changed = ", ".join(f"{k} {v}" for k, v in self.changed.items())
        kept = ", ".join(f"{op} {n}" for op, n in sorted(self.kept_fp32_by_op.items()))
        return f"{self.name}: {changed}; kept fp32: {self.kept_fp32} nodes ({kept})"


class EmbeddingTail:
    """The projection into the embedding space and every node after it.

        LayerNorm (ln_post / ln_final) ─► [pool / gather] ─► MatMul(x, proj) ─► temporal head ─► ReduceL2 ─► Div ─► outputs
                                                            └──────────────────────── tail ─────────────────────────┘

    The projection is matched by its weight's canonical name; the tail is everything downstream
    of it (video: the temporal head, masked mean pooling and L2 normalisation; text: EOT pooling
    and normalisation). It is kept in fp32 because the projection decides the embedding itself
    (its error is not averaged out by later layers), normalisation divides by a sum of squares
    that fp16 overflows, and the temporal head runs on one token per frame: a few MFLOPs, so
    nothing is gained by lowering it.
    """

    @staticmethod
    def projections(model: onnx.ModelProto) -> list[onnx.NodeProto]:
        found = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                 and any(i.endswith(PROJECTION_WEIGHTS) for i in n.input)]
        if not found:
            raise VlrtError(f"graph {model.graph.name!r}: no projection MatMul (weights named "
                            f"{' or '.join(PROJECTION_WEIGHTS)}); was it exported by vlrt?")
        return found

    @classmethod
    def nodes(cls, model: onnx.ModelProto) -> list[onnx.NodeProto]:
        consumers = collections.defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                consumers[name].append(node)
        seen: dict[int, onnx.NodeProto] = {}
        stack = cls.projections(model)
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen[id(node)] = node
            stack.extend(c for out in node.output for c in consumers[out])
        order = {id(n): i for i, n in enumerate(model.graph.node)}
        return sorted(seen.values(), key=lambda n: order[id(n)])


class PatchEmbedding:
    """The ViT patch embedding: the graph's Conv (kernel = stride = patch size) on the pixels.

        pixels ─► Reshape (B*T, 3, H, W) ─► Conv(conv1) ─► Reshape/Transpose ─► + class token ─► ...

    Kept in fp32 by the int8 passes: its input is the raw normalised image (a wide, skewed range
    per channel that 8 bits resolve badly), it runs once per frame on 3 input channels (a small
    share of the FLOPs), and ONNX Runtime's ConvInteger is slower than its fp32 Conv on CPU.
    """

    @staticmethod
    def nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
        return [n for n in model.graph.node if n.op_type == "Conv"]


def count_ops(model: onnx.ModelProto, names: set[str]) -> dict[str, int]:
    """Op types of the named compute nodes (shape bookkeeping left out)."""
    skip = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "Slice", "Cast",
            "Equal", "Where", "Expand", "ConstantOfShape", "Range", "Flatten", "Transpose", "LessOrEqual"}
    return dict(collections.Counter(n.op_type for n in model.graph.node
                                    if n.name in names and n.op_type not in skip))


# Imported last: these modules use the shared matchers above.
from vlrt.build.passes.attention import FuseAttention
from vlrt.build.passes.fp16 import Fp16Graph
from vlrt.build.passes.int8 import CAPTIONS, CaptionCalibration, DynamicInt8, FrameCalibration, StaticInt8QDQ
from vlrt.build.passes.tome import TokenMerge

__all__ = [
    "CAPTIONS",
    "CaptionCalibration",
    "DynamicInt8",
    "EmbeddingTail",
    "Fp16Graph",
    "FuseAttention",
    "FrameCalibration",
    "PassReport",
    "PatchEmbedding",
    "StaticInt8QDQ",
    "TokenMerge",
]
