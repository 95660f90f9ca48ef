"""The fp16 graph for GPU backends (ORT CUDA; TensorRT builds FP16 from exactly this form)."""
from __future__ import annotations

import collections
from pathlib import Path

import onnx

from vlrt.build.passes import EmbeddingTail, PassReport, count_ops
from vlrt.errors import VlrtError

# Ops computed in fp32 wherever they occur (the converter wraps them in Casts):
# LayerNormalization: CLIP's residual stream carries activations in the hundreds to thousands, and
#   the variance (a mean of squares) overflows fp16's 65504 or loses the small features.
# Softmax: the max-subtraction and the sum of exponentials over the sequence lose precision in fp16.
# ReduceL2: the L2 norm is a sum of squares (overflow), like the LayerNorm variance.
# ArgMax: EOT pooling runs ArgMax over token ids cast to float; ids above 2048 are not exact in
#   fp16 (49407 and 49400 both round to 49408), so the end token would be lost.
BLOCKED_OPS = ("LayerNormalization", "Softmax", "ReduceL2", "ArgMax")


class Fp16Graph:
    """Convert an fp32 graph to fp16, keeping the numerically sensitive parts in fp32.

        pixels (fp32) ─► Cast ─► [ViT in fp16: MatMul, Add, GELU ...] ─► Cast ─► LayerNorm (fp32) ─► Cast ─► ...
                                                                 ... ─► Cast ─► projection + tail (fp32) ─► outputs (fp32)

    Matches: every float tensor and op. Changes: weights and compute to fp16 with
    `onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`, so callers still
    feed and get fp32. Keeps fp32: the ops in `BLOCKED_OPS`, the `EmbeddingTail` (projection,
    temporal head, pooling, normalisation) and Casts of integer tensors to float (token ids). Why:
    fp16 halves memory traffic and uses tensor cores on GPUs; the kept parts are where fp16 loses
    accuracy and they are a small share of the FLOPs.
    """

    name = "fp16"

    def apply(self, src: Path, dst: Path) -> PassReport:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
        blocked_nodes = {n.name for n in EmbeddingTail.nodes(model)} | integer_casts(model)
        blocked_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(BLOCKED_OPS))
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                             op_block_list=blocked_ops, node_block_list=sorted(blocked_nodes))
        round_trips = drop_fp16_round_trips(converted)
        topological_sort(converted)
        onnx.save(converted, str(dst))
        kept = {n.name for n in model.graph.node if n.op_type in blocked_ops} | blocked_nodes
        by_op = count_ops(model, kept)
        precisions = node_precisions(onnx.shape_inference.infer_shapes(converted))
        return PassReport(
            name=self.name, nodes=len(converted.graph.node), kept_fp32=sum(by_op.values()), kept_fp32_by_op=by_op,
            changed={"fp16 compute nodes": precisions["fp16"], "fp32 compute nodes": precisions["fp32"],
                     "casts": precisions["casts"]},
            options={"keep_io_types": True, "op_block_list": list(BLOCKED_OPS), "tail_nodes_blocked": len(blocked_nodes),
                     "fp16_round_trips_removed": round_trips},
        )


def drop_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Let fp32 flow straight from one kept-fp32 node to the next.

        blocked A ─► Cast(to fp16) ─► Cast(to fp32) ─► blocked B     becomes     blocked A ─► blocked B
                                   └─► fp16 consumers (kept)                          └─► Cast(to fp16) ─► fp16 consumers

    convert_float_to_float16 makes every intermediate tensor fp16 and wraps each blocked node in
    Casts, so a chain of blocked nodes still rounds to fp16 between every two of them: the
    "fp32" tail would lose precision at each edge, and token ids (exact in fp32) would be rounded
    before ArgMax. Only Cast(fp16) -> Cast(fp32) pairs on an fp32 value are removed, which is
    exact. Returns how many pairs were removed.
    """
    g = model.graph
    types = _elem_types(model)
    producers = {out: n for n in g.node for out in n.output}
    outputs = {o.name for o in g.output}
    rewired: dict[str, str] = {}
    for node in g.node:
        parent = producers.get(node.input[0]) if node.op_type == "Cast" else None
        if (parent is not None and parent.op_type == "Cast" and _cast_to(node) == onnx.TensorProto.FLOAT
                and _cast_to(parent) == onnx.TensorProto.FLOAT16 and types.get(parent.input[0]) == onnx.TensorProto.FLOAT
                and node.output[0] not in outputs):
            rewired[node.output[0]] = parent.input[0]
    for node in g.node:
        node.input[:] = [rewired.get(name, name) for name in node.input]
    used = {name for n in g.node for name in n.input} | outputs
    keep = [n for n in g.node if n.output[0] not in rewired and (n.op_type != "Cast" or n.output[0] in used)]
    del g.node[:]
    g.node.extend(keep)
    return len(rewired)


def topological_sort(model: onnx.ModelProto) -> None:
    """Order nodes so each comes after its inputs' producers (the converter appends its Casts at
    the end; ONNX requires the order and TensorRT's parser reads nodes in it)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise VlrtError(f"graph {g.name!r}: a cycle or a missing input at {remaining[0].name!r}")
        pending = remaining
    del g.node[:]
    g.node.extend(ordered)


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def integer_casts(model: onnx.ModelProto) -> set[str]:
    """Names of Cast nodes that turn an integer tensor into float (their values must stay exact)."""
    types = _elem_types(model)
    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL}
    return {n.name for n in model.graph.node if n.op_type == "Cast" and types.get(n.input[0]) in ints}


def node_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """How many compute nodes read fp16, how many fp32 (shape-typed model), and how many Casts."""
    types = _elem_types(model)
    counts = collections.Counter()
    for node in model.graph.node:
        if node.op_type == "Cast":
            counts["casts"] += 1
            continue
        seen = {types.get(name) for name in node.input}
        if onnx.TensorProto.FLOAT16 in seen:
            counts["fp16"] += 1
        elif onnx.TensorProto.FLOAT in seen:
            counts["fp32"] += 1
    return {"fp16": counts["fp16"], "fp32": counts["fp32"], "casts": counts["casts"]}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types
