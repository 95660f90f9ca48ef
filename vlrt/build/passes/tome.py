"""TokenMerge: ToMe-style token merging inside the vision tower of a video graph.

After the attention of every vision block, r tokens are merged into their most similar partners
(bipartite soft matching, defined in vlrt/ops/token_merge.py, which this graph is tested
against), and the next block's attention becomes proportional (log token size added to the
logits). ViT-B/32 at 224 px starts with 50 tokens; r = 2 leaves 26 after 12 blocks and removes
about 24 % of the tower's FLOPs. The class token never merges and stays first, so ln_post and
the projection see the same token as before.

    x ─► + attn(ln_1(x) ; + log s) ─► merge(r) ─► + mlp(ln_2(·)) ─► next block
                                        │ sizes s
                                        └──────────────────────────► next block's attention

Only standard ONNX ops with static token counts (the image size is fixed in a bundle; batch stays
dynamic): Gather with constant indices to split A/B, ReduceL2, MatMul for the similarities,
ReduceMax/ArgMax, TopK (k = r, the merged A tokens; k = |A| - r, the kept ones in index order),
Equal + Cast for one-hot matrices, and MatMul with them for both the gather of kept tokens and
the size-weighted scatter-add into B — no ScatterElements with a reduction, which TensorRT runs
outside its fused kernels.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vlrt.build.passes import PassReport
from vlrt.errors import VlrtError
from vlrt.ops.token_merge import PROTECTED, merge_counts

BLOCK = re.compile(r"^/visual/transformer/resblocks\.(\d+)/Add$")  # x + attn(ln_1(x)) of block K
PREFIX = "/vlrt_tome"


@dataclasses.dataclass
class TokenMerge:
    r: int  # tokens merged per block (capped per block by merge_counts)
    tokens: int  # tokens entering the tower (class token + patches)
    name: ClassVar[str] = "token-merge"

    def options(self) -> dict[str, Any]:
        return {"token_merge": self.r, "metric": "residual stream after attention", "proportional_attention": True}

    def apply(self, src: Path, dst: Path) -> PassReport:
        model = onnx.load(str(src))
        counts = add_token_merging(model, self.r, self.tokens)
        onnx.save(model, str(dst))
        left = self.tokens - sum(counts)
        return PassReport(self.name, len(model.graph.node), 0, {},
                          {"merge steps": sum(1 for c in counts if c), "tokens merged": sum(counts),
                           "tokens left": left}, {**self.options(), "per_block": counts})


def vision_tokens(manifest: dict[str, Any]) -> int:
    vision = manifest["model"]["vision"]
    return (vision["image_size"] // vision["patch_size"]) ** 2 + 1


def add_token_merging(model: onnx.ModelProto, r: int, tokens: int) -> list[int]:
    """Rewrite the video graph in place; returns the tokens merged after each block."""
    graph = model.graph
    blocks = {}
    for node in graph.node:
        match = BLOCK.match(node.name)
        if match:
            blocks[int(match.group(1))] = node
    if not blocks:
        raise VlrtError(f"graph {graph.name!r}: no vision transformer blocks found (node names "
                        "/visual/transformer/resblocks.K/Add); --token-merge needs a video graph exported by vlrt")
    layers = len(blocks)
    if sorted(blocks) != list(range(layers)):
        raise VlrtError(f"graph {graph.name!r}: vision blocks {sorted(blocks)} are not numbered 0..{layers - 1}")
    counts = merge_counts(tokens, layers, r)
    softmax = {int(m.group(1)): n for n in graph.node
               if (m := re.match(r"^/visual/transformer/resblocks\.(\d+)/attn/Softmax$", n.name))}
    if sorted(softmax) != list(range(layers)):
        raise VlrtError(f"graph {graph.name!r}: attention Softmax not found in every vision block")
    builder = _Builder(graph)
    size = None  # [BT, n, 1] token sizes; None while every size is 1
    n = tokens
    for k in range(layers):
        if size is not None:
            builder.attention_bias(softmax[k], size, k)
        if counts[k] == 0:
            continue
        x = blocks[k].output[0]
        if size is None:
            size = builder.ones_like_tokens(x, n, k)
        new_x, size = builder.merge(x, size, n, counts[k], k)
        builder.rewire(x, new_x)
        n -= counts[k]
    builder.commit()
    return counts


class _Builder:
    """Makes the merge subgraphs and splices them in after their producers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.after: dict[int, list[onnx.NodeProto]] = collections.defaultdict(list)  # id(node) -> new nodes
        self.rewired: dict[str, str] = {}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.anchor: onnx.NodeProto | None = None
        self.initializers: list[onnx.TensorProto] = []

    def _name(self, k: int, what: str) -> str:
        return f"{PREFIX}/block{k}/{what}"

    def const(self, k: int, what: str, value: np.ndarray) -> str:
        name = self._name(k, what)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, k: int, op: str, inputs: list[str], what: str, **attrs) -> str:
        out = self._name(k, what)
        self.after[id(self.anchor)].append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def ones_like_tokens(self, x: str, n: int, k: int) -> str:
        self.anchor = self.producer[x]
        shape = self.node(k, "Shape", [x], "x_shape", start=0, end=1)  # [BT]
        full = self.node(k, "Concat", [shape, self.const(k, "n_1", np.array([n, 1], np.int64))], "ones_shape", axis=0)
        return self.node(k, "ConstantOfShape", [full], "ones",
                         value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))

    def attention_bias(self, softmax: onnx.NodeProto, size: str, k: int) -> None:
        """logits + log(size of each key), broadcast over heads and queries: [BT, 1, 1, n]."""
        logits = softmax.input[0]
        self.anchor = self.producer[logits]
        log = self.node(k, "Log", [size], "log_size")  # [BT, n, 1]
        bias = self.node(k, "Transpose", [log], "log_size_t", perm=[0, 2, 1])  # [BT, 1, n]
        bias = self.node(k, "Unsqueeze", [bias, self.const(k, "axis1", np.array([1], np.int64))], "attention_bias")
        softmax.input[0] = self.node(k, "Add", [logits, bias], "proportional_logits")

    def merge(self, x: str, size: str, n: int, r: int, k: int) -> tuple[str, str]:
        """x [BT, n, C], size [BT, n, 1] -> [BT, n - r, C], [BT, n - r, 1]; see vlrt/ops/token_merge.py."""
        self.anchor = self.producer[x]
        na, nb = (n + 1) // 2, n // 2
        even = self.const(k, "a_index", np.arange(0, n, 2, dtype=np.int64))
        odd = self.const(k, "b_index", np.arange(1, n, 2, dtype=np.int64))
        node = self.node
        norm = node(k, "ReduceL2", [x], "norm", axes=[-1], keepdims=1)  # axes: an attribute until opset 18
        norm = node(k, "Max", [norm, self.const(k, "eps", np.array(1e-6, np.float32))], "norm_eps")
        metric = node(k, "Div", [x, norm], "metric")
        ma = node(k, "Gather", [metric, even], "metric_a", axis=1)
        mb = node(k, "Gather", [metric, odd], "metric_b", axis=1)
        scores = node(k, "MatMul", [ma, node(k, "Transpose", [mb], "metric_b_t", perm=[0, 2, 1])], "scores")
        first = np.zeros((1, na, 1), bool)
        first[0, 0, 0] = True  # the class token: never merged
        scores = node(k, "Where", [self.const(k, "class_row", first), self.const(k, "protected", np.array(PROTECTED, np.float32)),
                                   scores], "scores_protected")
        best = node(k, "ReduceMax", [scores], "best", axes=[-1], keepdims=0)
        dst = node(k, "ArgMax", [scores], "dst", axis=-1, keepdims=1)  # [BT, na, 1], first maximum
        self.after[id(self.anchor)].append(helper.make_node(
            "TopK", [best, self.const(k, "r", np.array([r], np.int64))],
            [self._name(k, "src_value"), self._name(k, "src")], name=self._name(k, "TopK_src"), axis=-1, largest=1, sorted=1))
        src = self._name(k, "src")  # [BT, r]: the merged A tokens, best first (ties: lower index)
        range_a = self.const(k, "range_a", np.arange(na, dtype=np.int64))
        range_af = self.const(k, "range_a_f", np.arange(na, dtype=np.float32)[None, :])
        src_hot = self.one_hot(k, src, range_a, "src_onehot")  # [BT, r, na]
        merged = node(k, "ReduceSum", [src_hot, self.const(k, "axis1r", np.array([1], np.int64))], "merged", keepdims=0)
        # kept A tokens in index order: the largest -(index + na * merged) are the smallest unmerged indices
        order = node(k, "Neg", [node(k, "Add", [range_af, node(k, "Mul", [merged, self.const(
            k, "na", np.array(na, np.float32))], "merged_na")], "keep_key")], "keep_score")
        self.after[id(self.anchor)].append(helper.make_node(
            "TopK", [order, self.const(k, "keep_k", np.array([na - r], np.int64))],
            [self._name(k, "keep_value"), self._name(k, "keep")], name=self._name(k, "TopK_keep"), axis=-1, largest=1,
            sorted=1))
        keep_hot = self.one_hot(k, self._name(k, "keep"), range_a, "keep_onehot")  # [BT, na - r, na]
        xa = node(k, "Gather", [x, even], "x_a", axis=1)
        xb = node(k, "Gather", [x, odd], "x_b", axis=1)
        sa = node(k, "Gather", [size, even], "size_a", axis=1)
        sb = node(k, "Gather", [size, odd], "size_b", axis=1)
        # destination of each merged token, as a one-hot row over B
        dst_f = node(k, "Cast", [dst], "dst_f", to=TensorProto.FLOAT)  # [BT, na, 1]
        src_dst = node(k, "MatMul", [src_hot, dst_f], "src_dst")  # [BT, r, 1]: exact small integers
        range_bf = self.const(k, "range_b_f", np.arange(nb, dtype=np.float32)[None, None, :])
        dst_hot = node(k, "Cast", [node(k, "Equal", [src_dst, range_bf], "dst_eq")], "dst_onehot", to=TensorProto.FLOAT)
        dst_hot_t = node(k, "Transpose", [dst_hot], "dst_onehot_t", perm=[0, 2, 1])  # [BT, nb, r]
        weighted_a = node(k, "Mul", [xa, sa], "x_a_weighted")
        add_x = node(k, "MatMul", [dst_hot_t, node(k, "MatMul", [src_hot, weighted_a], "src_x")], "add_x")
        add_s = node(k, "MatMul", [dst_hot_t, node(k, "MatMul", [src_hot, sa], "src_size")], "add_size")
        new_sb = node(k, "Add", [sb, add_s], "size_b_merged")
        new_xb = node(k, "Div", [node(k, "Add", [node(k, "Mul", [xb, sb], "x_b_weighted"), add_x], "x_b_sum"), new_sb],
                      "x_b_merged")
        kept_x = node(k, "MatMul", [keep_hot, xa], "x_a_kept")
        kept_s = node(k, "MatMul", [keep_hot, sa], "size_a_kept")
        new_x = node(k, "Concat", [kept_x, new_xb], "x_merged", axis=1)
        new_size = node(k, "Concat", [kept_s, new_sb], "size_merged", axis=1)
        return new_x, new_size

    def one_hot(self, k: int, index: str, range_: str, what: str) -> str:
        """index [BT, m] int64 -> [BT, m, len(range)] float one-hot rows (Equal + Cast)."""
        col = self.node(k, "Unsqueeze", [index, self.const(k, f"{what}_axis", np.array([-1], np.int64))], f"{what}_col")
        eq = self.node(k, "Equal", [col, range_], f"{what}_eq")
        return self.node(k, "Cast", [eq], what, to=TensorProto.FLOAT)

    def rewire(self, old: str, new: str) -> None:
        """The graph's own consumers of `old` read `new`; the merge subgraph keeps reading `old`."""
        self.rewired[old] = new

    def commit(self) -> None:
        ordered = []
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name in self.rewired:
                    node.input[i] = self.rewired[name]
            ordered.append(node)
            ordered.extend(self.after.get(id(node), []))
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        self.graph.initializer.extend(self.initializers)
