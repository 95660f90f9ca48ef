"""Rules every exported graph keeps, checked on the ONNX itself: the opset, EOT pooling by a float
ArgMax (TensorRT has no int64 ArgMax), and no finite constant beyond fp16's range (a -1e9 mask
becomes -inf or NaN in an fp16 engine)."""
import numpy as np
import onnx
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip
from onnx import numpy_helper

from vlrt.export import export_checkpoint

FP16_MAX = float(np.finfo(np.float16).max)


@pytest.fixture(scope="module", params=["meanP", "seqTransf", "seqLSTM"])
def graphs(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head=request.param)
    export_checkpoint(ckpt, root / "b", max_frames=4, max_words=16)
    return {name: onnx.shape_inference.infer_shapes(onnx.load(root / "b" / f"{name}.onnx")) for name in ("video", "text")}


def constants(model: onnx.ModelProto) -> list[np.ndarray]:
    found = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:
        found += [numpy_helper.to_array(a.t) for a in node.attribute if node.op_type == "Constant" and a.name == "value"]
    return found


def test_opset_is_at_least_17(graphs):
    for model in graphs.values():
        assert {o.domain: o.version for o in model.opset_import}[""] >= 17


def test_eot_pooling_argmax_reads_floats(graphs):
    model = graphs["text"]
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    argmaxes = [n for n in model.graph.node if n.op_type == "ArgMax"]
    assert argmaxes, "EOT pooling should be an ArgMax over the ids"
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in argmaxes)


def test_no_finite_constant_overflows_fp16(graphs):
    for name, model in graphs.items():
        floats = [c for c in constants(model) if c.dtype.kind == "f" and c.size]
        worst = max(float(np.abs(c[np.isfinite(c)]).max(initial=0)) for c in floats)
        assert worst <= FP16_MAX, f"{name}: a constant of magnitude {worst} overflows fp16"


def test_frames_and_words_axes_are_dynamic(graphs):
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for model in graphs.values() for i in model.graph.input}
    assert dims["pixels"][:2] == ["batch", "frames"] and dims["frame_mask"] == ["batch", "frames"]
    assert dims["input_ids"] == ["batch", "words"]
