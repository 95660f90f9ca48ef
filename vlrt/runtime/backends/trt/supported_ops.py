"""TensorRT's documented ONNX operator support, and a check of a graph against it.

Source: the operator support matrix of TensorRT's ONNX parser, `docs/operators.md` in
https://github.com/onnx/onnx-tensorrt, the version headed "TensorRT 10.15 supports operators in
the inclusive range of opset 9 to opset 24" (the 10.x line; read 2026-11, through the project's
search tool). Transcribed by hand below: every row, with its "Supported" column, its "Supported
Types" column and, for rows that have one, the "Restrictions" column in short. Global notes of
that page: INT8, INT4, FP8 and FP4 are quantized types, reachable only through Q/DQ from a
higher-precision float; UINT8 only as a network input or output; DOUBLE has limited support
(cast down to FLOAT), so vlrt treats it as unsupported.

`check_model` lists every op of a graph with TensorRT's verdict, checks the op's main tensor
type against the row's types (after ONNX shape inference), and checks the documented
restrictions that vlrt's graphs can run into (`RESTRICTION_CHECKS`). A restricted op with no
check here is reported as unchecked: add its check before relying on it. The table is what the
documentation says, not what a TensorRT build did: nothing here has been run with TensorRT.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

SOURCE = ("onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9 to 24), "
          "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md")
OPSET_RANGE = (9, 24)

# name | Y/N | supported types | restriction (shortened), one operator per line
_MATRIX = """
Abs|Y|FP32 FP16 BF16 INT32 INT64|
Acos|Y|FP32 FP16 BF16|
Acosh|Y|FP32 FP16 BF16|
Add|Y|FP32 FP16 BF16 INT32 INT64|
AffineGrid|N||
And|Y|BOOL|
ArgMax|Y|FP32 FP16 BF16 INT32 INT64|
ArgMin|Y|FP32 FP16 BF16 INT32 INT64|
Asin|Y|FP32 FP16 BF16|
Asinh|Y|FP32 FP16 BF16|
Atan|Y|FP32 FP16 BF16|
Atanh|Y|FP32 FP16 BF16|
Attention|Y|FP32 FP16 BF16 INT8 FP8|Q, K, V and attn_mask 4D; no past_key/past_value/nonpad_kv_seqlen inputs, no present_key/present_value/qk_matmul_output outputs, no qk_matmul_output_mode or softcap
AveragePool|Y|FP32 FP16 BF16|2D or 3D pooling only; dilations empty or all ones
BatchNormalization|Y|FP32 FP16 BF16|
Bernoulli|N||
BitShift|N||
BitwiseAnd|N||
BitwiseNot|N||
BitwiseOr|N||
BitwiseXor|N||
BlackmanWindow|Y|FP32 FP16|
Cast|Y|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
CastLike|Y|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
Ceil|Y|FP32 FP16 BF16|
Col2Im|N||
Celu|Y|FP32 FP16 BF16|
CenterCropPad|N||
Clip|Y|FP32 FP16 BF16|
Compress|N||
Concat|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
ConcatFromSequence|N||
Constant|Y|FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL|sparse_value, value_string and value_strings attributes unsupported
ConstantOfShape|Y|FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL|
Conv|Y|FP32 FP16 BF16|
ConvInteger|N||
ConvTranspose|Y|FP32 FP16 BF16|
Cos|Y|FP32 FP16 BF16|
Cosh|Y|FP32 FP16 BF16|
CumSum|Y|FP32 FP16 BF16|axis must be a build-time constant
DFT|N||
DeformConv|Y|FP32 FP16|input with 1D or 2D spatial dims; equal begin/end pads per spatial axis
DepthToSpace|Y|FP32 FP16 BF16 INT32 INT64|
DequantizeLinear|Y|INT8 FP8 FP4 INT4|x_zero_point must be zero
Det|N||
Div|Y|FP32 FP16 BF16 INT32 INT64|
Dropout|Y|FP32 FP16 BF16|is_training must be an initializer that is False
DynamicQuantizeLinear|N||not supported (IDynamicQuantize only through a model-local function)
Einsum|Y|FP32 FP16 BF16|
Elu|Y|FP32 FP16 BF16|
Equal|Y|FP32 FP16 BF16 INT32 INT64|
Erf|Y|FP32 FP16 BF16|
Exp|Y|FP32 FP16 BF16|
Expand|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
EyeLike|Y|FP32 FP16 BF16 INT32 INT64 BOOL|input must have static dimensions
Flatten|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Floor|Y|FP32 FP16 BF16|
Gather|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherElements|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherND|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Gelu|Y|FP32 FP16 BF16 INT8 INT32 INT64|
Gemm|Y|FP32 FP16 BF16|
GlobalAveragePool|Y|FP32 FP16 BF16|
GlobalLpPool|Y|FP32 FP16 BF16|
GlobalMaxPool|Y|FP32 FP16 BF16|
Greater|Y|FP32 FP16 BF16 INT32 INT64|
GreaterOrEqual|Y|FP32 FP16 BF16 INT32 INT64|
GridSample|Y|FP32 FP16|4D input only
GroupNormalization|Y|FP32 FP16 BF16|
GRU|Y|FP32 FP16 BF16|bidirectional: same activations both ways
HammingWindow|Y|FP32 FP16|
HannWindow|Y|FP32 FP16|
HardSigmoid|Y|FP32 FP16 BF16|
HardSwish|Y|FP32 FP16 BF16|
Hardmax|Y|FP32 FP16 BF16|axis dimension must be a build-time constant
Identity|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
If|Y|FP32 FP16 BF16 INT32 INT64 BOOL|branch outputs of the same rank and with different names
ImageScaler|Y|FP32 FP16 BF16|
ImageDecoder|N||
InstanceNormalization|Y|FP32 FP16 BF16|
IsInf|Y|FP32 FP16 BF16|
IsNaN|Y|FP32 FP16 BF16 INT32 INT64|
LayerNormalization|Y|FP32 FP16 BF16|only the first output Y
LeakyRelu|Y|FP32 FP16 BF16|
Less|Y|FP32 FP16 BF16 INT32 INT64|
LessOrEqual|Y|FP32 FP16 BF16 INT32 INT64|
Log|Y|FP32 FP16 BF16|
LogSoftmax|Y|FP32 FP16 BF16|
Loop|Y|FP32 FP16 BF16 INT32 INT64 BOOL|static scan output length; loop-carried shapes fixed across iterations
LRN|Y|FP32 FP16 BF16|
LSTM|Y|FP32 FP16 BF16|bidirectional: same activations both ways; input_forget must be 0; layout must be 0
LpNormalization|Y|FP32 FP16 BF16|
LpPool|Y|FP32 FP16 BF16|dilations empty or all ones
MatMul|Y|FP32 FP16 BF16|
MatMulInteger|N||
Max|Y|FP32 FP16 BF16 INT32 INT64|
MaxPool|Y|FP32 FP16 BF16|2D or 3D pooling only; no Indices output; dilations empty or all ones
MaxRoiPool|N||
MaxUnpool|N||
Mean|Y|FP32 FP16 BF16 FP8 INT32 INT64|
MeanVarianceNormalization|Y|FP32 FP16 BF16|
MelWeightMatrix|N||
Min|Y|FP32 FP16 BF16 INT32 INT64|
Mish|Y|FP32 FP16|
Mod|Y|FP32 FP16 BF16 INT32 INT64|
Mul|Y|FP32 FP16 BF16 INT32 INT64|
Multinomial|N||
Neg|Y|FP32 FP16 BF16 INT32 INT64|
NegativeLogLikelihoodLoss|N||
NonMaxSuppression|Y|FP32 FP16|
NonZero|Y|FP32 FP16|
Not|Y|BOOL|
OneHot|Y|FP32 FP16 BF16 INT32 INT64 BOOL|depth must be a build-time constant
Optional|N||
OptionalGetElement|N||
OptionalHasElement|N||
Or|Y|BOOL|
Pad|Y|FP32 FP16 BF16 INT32 INT64|
ParametricSoftplus|Y|FP32 FP16 BF16|
Pow|Y|FP32 FP16 BF16 INT32 INT64|
PRelu|Y|FP32 FP16 BF16|
QLinearConv|N||
QLinearMatMul|N||
QuantizeLinear|Y|FP32 FP16 BF16|y_zero_point must be 0
RandomNormal|Y|FP32 FP16 BF16|seed ignored
RandomNormalLike|Y|FP32 FP16 BF16|seed ignored
RandomUniform|Y|FP32 FP16 BF16|seed ignored
RandomUniformLike|Y|FP32 FP16 BF16|seed ignored
Range|Y|FP32 FP16 BF16 INT32 INT64|
Reciprocal|Y|FP32 FP16 BF16|
ReduceL1|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceL2|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSum|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSumExp|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMax|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMean|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMin|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceProd|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSum|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSumSquare|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
RegexFullMatch|N||
Relu|Y|FP32 FP16 BF16 INT32 INT64|
Reshape|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Resize|Y|FP32 FP16 BF16|coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; modes nearest, linear; nearest modes floor, ceil, round_prefer_floor, round_prefer_ceil; aspect ratio policy stretch; tensor scales need axes = iota(rank); no antialiasing
ReverseSequence|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
RMSNormalization|Y|FP32 FP16 BF16|
RNN|Y|FP32 FP16 BF16|bidirectional: same activations both ways
RoiAlign|Y|FP32 FP16|
RotaryEmbedding|Y|FP32 FP16 BF16|position_ids must be INT64
Round|Y|FP32 FP16 BF16|
STFT|Y|FP32|frame_step and window must be initializers; real-valued input
ScaledTanh|Y|FP32 FP16 BF16|
Scan|Y|FP32 FP16 BF16|
Scatter|Y|FP32 FP16 BF16 INT32 INT64|
ScatterElements|Y|FP32 FP16 BF16 INT32 INT64|
ScatterND|Y|FP32 FP16 BF16 INT32 INT64|reduction other than none unsupported
Selu|Y|FP32 FP16 BF16|
SequenceAt|N||
SequenceConstruct|N||
SequenceEmpty|N||
SequenceErase|N||
SequenceInsert|N||
SequenceLength|N||
SequenceMap|N||
Shape|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Shrink|Y|FP32 FP16 BF16 INT32 INT64|
Sigmoid|Y|FP32 FP16 BF16|
Sign|Y|FP32 FP16 BF16 INT32 INT64|
Sin|Y|FP32 FP16 BF16|
Sinh|Y|FP32 FP16 BF16|
Size|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Slice|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Softmax|Y|FP32 FP16 BF16|
SoftmaxCrossEntropyLoss|N||
Softplus|Y|FP32 FP16 BF16|
Softsign|Y|FP32 FP16 BF16|
SpaceToDepth|Y|FP32 FP16 BF16 INT32 INT64|
Split|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
SplitToSequence|N||
Sqrt|Y|FP32 FP16 BF16|
Squeeze|Y|FP32 FP16 BF16 INT32 INT64 BOOL|axes must be resolvable to a constant
StringConcat|N||
StringNormalizer|N||
StringSplit|N||
Sub|Y|FP32 FP16 BF16 INT32 INT64|
Sum|Y|FP32 FP16 BF16 INT32 INT64|
Tan|Y|FP32 FP16 BF16|
Tanh|Y|FP32 FP16 BF16|
TensorScatter|Y|FP32 FP16 BF16 INT32|past_cache and update 4D; axis must be -2
TfIdfVectorizer|N||
ThresholdedRelu|Y|FP32 FP16 BF16|
Tile|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
TopK|Y|FP32 FP16 BF16 INT32 INT64|sorted must be 1; K must be less than 3840
Transpose|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Trilu|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Unique|N||
Unsqueeze|Y|FP32 FP16 BF16 INT32 INT64 BOOL|axes must be resolvable to a constant
Upsample|Y|FP32 FP16 BF16|
Where|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Xor|Y|BOOL|
"""


@dataclasses.dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: frozenset[str]
    restriction: str


def _parse(matrix: str) -> dict[str, OpSupport]:
    table = {}
    for line in matrix.strip().splitlines():
        name, flag, types, restriction = line.split("|")
        table[name] = OpSupport(flag == "Y", frozenset(types.split()), restriction)
    return table


SUPPORTED_OPS: dict[str, OpSupport] = _parse(_MATRIX)

# ONNX TensorProto element types -> the names the matrix uses (DOUBLE is left out on purpose).
_TYPE_NAMES = {1: "FP32", 10: "FP16", 16: "BF16", 3: "INT8", 6: "INT32", 7: "INT64", 2: "UINT8", 9: "BOOL",
               17: "FP8", 22: "INT4", 23: "FP4"}
# Which tensor carries the type the matrix's column means (default: input 0).
_TYPED = {"Where": ("input", 1), "Cast": ("output", 0), "CastLike": ("output", 0), "Constant": ("output", 0),
          "ConstantOfShape": ("output", 0)}


@dataclasses.dataclass
class GraphReport:
    """What `check_model` found: op counts ("Op" or "domain:Op"), problems, and the ops whose
    documented restriction has no check here."""

    ops: dict[str, int]
    problems: list[str]
    unchecked: dict[str, str]
    restrictions: dict[str, str]  # documented restriction of every op present that has one


def check_model(model: Any, *, plugins: Iterable[str] = ()) -> GraphReport:
    """Check an `onnx.ModelProto` against `SUPPORTED_OPS`; `plugins` names custom ops a loaded
    plugin library provides."""
    import onnx

    model = onnx.shape_inference.infer_shapes(model)
    ctx = _Context(model)
    problems, unchecked, restrictions = _check_opset(model), {}, {}
    ops = Counter()
    for i, node in enumerate(model.graph.node):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        ops[f"{domain}:{node.op_type}" if domain else node.op_type] += 1
        where = f"node {i} {node.name or '(unnamed)'} ({node.op_type})"
        if domain:
            if node.op_type not in set(plugins):
                problems.append(f"{where}: domain {domain!r} is not ONNX; TensorRT would need a plugin named {node.op_type}")
            continue
        row = SUPPORTED_OPS.get(node.op_type)
        if row is None or not row.supported:
            problems.append(f"{where}: {'not in' if row is None else 'unsupported by'} TensorRT's ONNX parser"
                            + (f" ({row.restriction})" if row and row.restriction else ""))
            continue
        problems += [f"{where}: {p}" for p in _check_type(node, row, ctx)]
        if row.restriction:
            restrictions[node.op_type] = row.restriction
            check = RESTRICTION_CHECKS.get(node.op_type)
            if check is None:
                unchecked[node.op_type] = row.restriction
            else:
                problems += [f"{where}: {p}" for p in check(node, ctx)]
    return GraphReport(dict(ops), problems, unchecked, restrictions)


class _Context:
    """Element types, constant values and consumers of a shape-inferred graph."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
        self.constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            if node.op_type == "Constant":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
        self.types.update({t.name: t.data_type for t in g.initializer})
        self.used = {name for n in g.node for name in n.input} | {o.name for o in g.output}

    def type_name(self, tensor: str) -> str | None:
        code = self.types.get(tensor)
        return _TYPE_NAMES.get(code, f"ONNX type {code}") if code else None


def _check_opset(model: Any) -> list[str]:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lo, hi = OPSET_RANGE
    if version is None or not lo <= version <= hi:
        return [f"graph: ONNX opset {version}, TensorRT 10.15 parses opsets {lo} to {hi}"]
    return []


def _check_type(node: Any, row: OpSupport, ctx: _Context) -> list[str]:
    side, index = _TYPED.get(node.op_type, ("input", 0))
    names = node.output if side == "output" else node.input
    if index >= len(names) or not names[index]:
        return []
    found = ctx.type_name(names[index])
    if found is None:
        return [f"cannot check the {side} type: shape inference gave none for {names[index]!r}"]
    if found not in row.types:
        return [f"{side} {index} is {found}; TensorRT supports {' '.join(sorted(row.types))}"]
    if node.op_type in ("Cast", "CastLike") and ctx.type_name(node.input[0]) not in row.types:
        return [f"casts from {ctx.type_name(node.input[0])}; TensorRT supports {' '.join(sorted(row.types))}"]
    return []


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constant_input(index: int, what: str) -> Callable[[Any, _Context], list[str]]:
    def check(node: Any, ctx: _Context) -> list[str]:
        if index < len(node.input) and node.input[index] and node.input[index] not in ctx.constants:
            return [f"{what} ({node.input[index]!r}) is computed at run time, not an initializer or Constant"]
        return []
    return check


def _zero_point_zero(node: Any, ctx: _Context) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        return []
    zp = ctx.constants.get(node.input[2])
    if zp is None:
        return [f"zero point {node.input[2]!r} is not a constant"]
    return [] if not zp.any() else [f"zero point is not zero (max |zp| {abs(zp.astype(int)).max()})"]


def _lstm(node: Any, ctx: _Context) -> list[str]:
    out = []
    if _attr(node, "input_forget", 0) != 0:
        out.append("input_forget must be 0")
    if _attr(node, "layout", 0) != 0:
        out.append("layout must be 0")
    acts = [a.decode() if isinstance(a, bytes) else a for a in _attr(node, "activations", [])]
    if _attr(node, "direction", b"forward") in (b"bidirectional", "bidirectional") and acts[:3] != acts[3:6]:
        out.append(f"bidirectional LSTM with different activations per direction: {acts}")
    return out


def _layer_norm(node: Any, ctx: _Context) -> list[str]:
    extra = [name for name in node.output[1:] if name and name in ctx.used]
    return [f"uses outputs {extra}; TensorRT supports only the first output Y"] if extra else []


def _top_k(node: Any, ctx: _Context) -> list[str]:
    out = [] if _attr(node, "sorted", 1) == 1 else ["sorted must be 1"]
    k = ctx.constants.get(node.input[1]) if len(node.input) > 1 else None
    if k is None:
        out.append("K is not a constant, so K < 3840 cannot be checked")
    elif int(k.reshape(-1)[0]) >= 3840:
        out.append(f"K = {int(k.reshape(-1)[0])}, TensorRT needs K < 3840")
    return out


def _constant_attrs(node: Any, ctx: _Context) -> list[str]:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [f"attribute {bad[0]} is unsupported"] if bad else []


def _scatter_nd(node: Any, ctx: _Context) -> list[str]:
    reduction = _attr(node, "reduction", b"none")
    return [] if reduction in (b"none", "none") else [f"reduction {reduction!r} is unsupported"]


def _dropout(node: Any, ctx: _Context) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        return []
    value = ctx.constants.get(node.input[2])
    return [] if value is not None and not value.any() else ["is_training must be a constant False"]


RESTRICTION_CHECKS: dict[str, Callable[[Any, _Context], list[str]]] = {
    "Constant": _constant_attrs,
    "CumSum": _constant_input(1, "axis"),
    "DequantizeLinear": _zero_point_zero,
    "Dropout": _dropout,
    "LayerNormalization": _layer_norm,
    "LSTM": _lstm,
    "OneHot": _constant_input(1, "depth"),
    "QuantizeLinear": _zero_point_zero,
    "ScatterND": _scatter_nd,
    "Squeeze": _constant_input(1, "axes"),
    "TopK": _top_k,
    "Unsqueeze": _constant_input(1, "axes"),
    **{op: _constant_input(1, "axes") for op in SUPPORTED_OPS if op.startswith("Reduce")},
}
# A seed that TensorRT ignores changes no graph structure: nothing to check.
RESTRICTION_CHECKS.update({op: (lambda node, ctx: []) for op in
                           ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike")})
