"""FuseAttention: each transformer self-attention subgraph -> one com.microsoft.Attention node.

vlrt exports attention as the MatMul -> Softmax -> MatMul pattern (vlrt/models/layers.py), the
form TensorRT fuses itself. ONNX Runtime's CPU provider does not: its session optimizer fuses
the Q·Kᵀ MatMul with its scale and transpose (FusedMatMul) and QuickGelu, but leaves ~20 nodes
per attention (reshapes, transposes, gathers, softmax), and its transformer optimizer fuses
nothing on this graph layout. This pass rewrites every attention of the vision tower
and text transformer into ONNX Runtime's fused `Attention` contrib op, which takes the packed
q/k/v projection exactly as CLIP stores it:

    ln_1(x) ─► MatMul(W_qkv [C, 3C]) ─► Add(b_qkv) ─► Reshape(B, N, 3, H, hd) ─► Transpose ─► q, k, v
            ─► (q·hd^-½)·kᵀ [+ causal mask] ─► Softmax ─► ·v ─► Transpose ─► Reshape(B, N, C)
                                                   ⇓
    ln_1(x) ─► Attention(W_qkv, b_qkv; num_heads=H, unidirectional=causal) ─► (B, N, C)

The output projection (`out_proj`) stays a MatMul, so the int8 passes quantize it as before;
DynamicInt8 turns the fused node into `QAttention` (int8 q/k/v projection inside the fused op).

What is matched, per attention scope `/…/resblocks.K/attn/` (node names from the exporter):
the packed in-projection MatMul whose weight is an initializer [C, 3C] and its bias Add, one
Softmax, the scale Mul (hd = 1/scale², heads = C / hd), and an optional additive mask that must
be a slice of a constant causal mask (0 on and below the diagonal, <= -1e4 above) — the text
transformer's. Attention with a runtime mask (the seqTransf head's frame mask) is left as it
is: it sits in the fp32 embedding tail and runs on one token per frame. Anything that does not
match exactly is left unfused and counted in the report; validation against the fp32 graph
(the build's cosine gate) checks the result numerically.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vlrt.build.passes import PassReport

SCOPE = re.compile(r"^(.*/resblocks\.\d+/attn/)")
TOKEN_MERGE_PREFIX = "/vlrt_tome/"  # nodes made by passes/tome.py
CAUSAL_MASKED = -1e4  # above the diagonal, a causal mask holds this or less (vlrt exports -inf)


class FuseAttention:
    name = "fuse-attention"

    def options(self) -> dict[str, object]:
        return {"attention": "com.microsoft.Attention"}

    def apply(self, src: Path, dst: Path) -> PassReport:
        model = onnx.load(str(src))
        fused, skipped = fuse_attention(model)
        onnx.save(model, str(dst))
        return PassReport(self.name, len(model.graph.node), 0, {},
                          {"Attention": fused, "attention left unfused": skipped}, self.options())


def fuse_attention(model: onnx.ModelProto) -> tuple[int, int]:
    """Rewrite `model` in place; returns (fused, left unfused) attention counts."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    for output in graph.output:  # a graph output leaves every scope
        consumers[output.name].append(None)
    scopes: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        match = SCOPE.match(node.name)
        if match and "/out_proj/" not in node.name:
            scopes[match.group(1)].append(node)
    fused = skipped = 0
    replacements: dict[int, list[onnx.NodeProto]] = {}  # id(last node of scope) -> Attention (+ bias)
    removed: set[int] = set()
    for scope, nodes in scopes.items():
        plan = _match(nodes, inits, consts, producers, consumers)
        if plan is None:
            skipped += 1
            continue
        x, weight, bias, output, heads, causal, key_bias = plan
        inputs, extra = [x, weight, bias], []
        if key_bias is not None:  # [BT, 1, 1, n] -> [BT, 1, n, n]: ORT wants the full query axis
            extra = _expand_key_bias(scope, key_bias)
            inputs += ["", "", extra[-1].output[0]]
        attention = helper.make_node(
            "Attention", inputs, [output], name=f"{scope}Attention", domain="com.microsoft",
            num_heads=heads, unidirectional=int(causal))
        replacements[id(nodes[-1])] = [*extra, attention]  # where the scope's last node was: inputs exist
        # Constants stay: the exporter shares them across scopes; unused ones go with the dead nodes.
        removed.update(id(n) for n in nodes if n.op_type != "Constant")
        fused += 1
    if not fused:
        return 0, skipped
    new_nodes = []
    for node in graph.node:
        new_nodes.extend(replacements.get(id(node), []))
        if id(node) not in removed:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_dead_nodes(graph)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused, skipped


def _match(nodes, inits, consts, producers, consumers):
    """(x, weight, bias, output, heads, causal) for one attention scope, or None."""
    by_op = collections.defaultdict(list)
    for n in nodes:
        by_op[n.op_type].append(n)
    matmuls, softmax = by_op["MatMul"], by_op["Softmax"]
    if len(matmuls) != 3 or len(softmax) != 1:
        return None
    in_proj = next((m for m in matmuls if m.input[1] in inits), None)
    if in_proj is None:
        return None
    weight = numpy_helper.to_array(inits[in_proj.input[1]])
    width = weight.shape[0]
    if weight.ndim != 2 or weight.shape[1] != 3 * width:
        return None
    scope_outputs = {o for n in nodes for o in n.output}
    bias_add = next((n for n in by_op["Add"] if in_proj.output[0] in n.input), None)
    if bias_add is None:
        return None
    bias = next((i for i in bias_add.input if i in inits), None)
    if bias is None or numpy_helper.to_array(inits[bias]).shape != (3 * width,):
        return None
    scale = next((consts[i] for m in by_op["Mul"] for i in m.input if i in consts and consts[i].size == 1), None)
    if scale is None:
        return None
    head_dim = round(1.0 / float(scale.reshape(())) ** 2)
    if head_dim <= 0 or width % head_dim:
        return None
    causal, key_bias = False, None
    logits = producers.get(softmax[0].input[0])
    if logits is not None and logits.op_type == "Add":
        mask = next((i for i in logits.input if i not in scope_outputs), None)
        if mask is not None and mask in producers and producers[mask].name.startswith(TOKEN_MERGE_PREFIX):
            key_bias = mask  # TokenMerge's proportional attention: log(size) per key
            nodes = [*nodes, logits]  # the Add sits outside the scope (the merge pass made it)
        elif mask is None or not _is_causal_slice(mask, producers, inits, consts):
            return None  # a runtime mask (seqTransf's frame mask): leave it
        else:
            causal = True
    inside = {id(n) for n in nodes}
    leaving = [o for n in nodes if n.op_type != "Constant" for o in n.output
               if any(id(c) not in inside for c in consumers[o])]
    if len(leaving) != 1:
        return None
    return in_proj.input[0], in_proj.input[1], bias, leaving[0], width // head_dim, causal, key_bias


def _expand_key_bias(scope: str, key_bias: str) -> list[onnx.NodeProto]:
    """Nodes expanding a [BT, 1, 1, n] key bias to [BT, 1, n, n]."""
    p = f"{scope}key_bias/"
    return [
        helper.make_node("Shape", [key_bias], [p + "bt_1"], name=p + "Shape_bt_1", start=0, end=2),
        helper.make_node("Shape", [key_bias], [p + "n"], name=p + "Shape_n", start=3, end=4),
        helper.make_node("Concat", [p + "bt_1", p + "n", p + "n"], [p + "shape"], name=p + "Concat", axis=0),
        helper.make_node("Expand", [key_bias, p + "shape"], [p + "expanded"], name=p + "Expand"),
    ]


def _is_causal_slice(name, producers, inits, consts) -> bool:
    """`name` is a Slice (possibly the whole thing) of a constant causal mask."""
    source, node = name, producers.get(name)
    while node is not None and node.op_type == "Slice":  # mask[:n, :n] exports as two Slices
        source = node.input[0]
        node = producers.get(source)
    if source in inits:
        mask = numpy_helper.to_array(inits[source])
    elif source in consts:
        mask = consts[source]
    else:
        return False
    mask = mask.reshape(mask.shape[-2:]) if mask.ndim >= 2 and mask.size == mask.shape[-1] * mask.shape[-2] else None
    if mask is None or mask.shape[0] != mask.shape[1]:
        return False
    upper = np.triu(np.ones(mask.shape, bool), k=1)
    return bool((mask[~upper] == 0).all() and (mask[upper] <= CAUSAL_MASKED).all())


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    alive = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(alive)
