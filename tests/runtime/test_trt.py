"""The TensorRT backend (vlrt/runtime/backends/trt, docs/tensorrt.md).

Runs everywhere: the lazy import, the refusal without the `tensorrt` package, optimization
profiles from a manifest, the documented-operator check of every graph `vlrt build --backend
tensorrt` hands to TensorRT, and the build/engine/runtime wiring with TensorRT replaced by a
stand-in (which proves the wiring, not TensorRT). Marked `tensorrt`: building and running real
plans; those skip where `import tensorrt` fails or no CUDA device exists, and fail instead of
skipping when VLRT_REQUIRE_TENSORRT=1 (set it on a machine that is meant to have TensorRT).
"""
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip
from onnx import TensorProto, helper

from vlrt import Runtime
from vlrt.build import engine as build_module
from vlrt.build.engine import build_engine, plan_build
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.backends import trt as trt_backend
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.backends.trt import profile_shapes, supported_ops
from vlrt.runtime.backends.trt.supported_ops import SUPPORTED_OPS, check_model
from vlrt.runtime.bundle import Bundle, engine_key

HEADS = ("meanP", "seqTransf", "seqLSTM")
FORMS = ("fp32", "fp16", "int8")  # what TensorRT builds from: the bundle graph, Fp16Graph, symmetric Q/DQ
TOKEN_MERGE = 2  # --token-merge R: merging in the vision tower, the same for every head
# (head, precision form, token merge): every head in every form, and token merging in every form
CASES = [(h, f, 0) for h in HEADS for f in FORMS] + [("seqTransf", f, TOKEN_MERGE) for f in FORMS]


def _missing_packages() -> str | None:
    try:
        trt_backend.require_tensorrt()
    except VlrtError as exc:
        return str(exc)
    return None


def _no_gpu() -> str | None:
    from vlrt.runtime.backends.trt.deps import check_cuda, import_cudart

    try:
        return None if check_cuda(import_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount") else "no CUDA device"
    except VlrtError as exc:
        return str(exc)


MISSING = _missing_packages()
WHY_NOT = MISSING or _no_gpu()  # None: TensorRT and a CUDA device are usable here
requires_tensorrt = pytest.mark.skipif(WHY_NOT is not None and os.environ.get("VLRT_REQUIRE_TENSORRT") != "1",
                                       reason=f"TensorRT unusable here: {WHY_NOT}")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    out = {}
    for head in HEADS:
        ckpt = write_clip4clip(root / f"{head}.bin.0", TINY_C4C, seed=0, head=head)
        out[head] = export_checkpoint(ckpt, root / head, max_frames=4).bundle
    return out


# --- runs everywhere -------------------------------------------------------------------------------

def test_importing_the_backend_imports_neither_tensorrt_nor_cuda():
    code = textwrap.dedent("""
        import sys
        import vlrt, vlrt.runtime.runtime, vlrt.runtime.backends.trt as t
        from vlrt.runtime.backends.trt import builder, deps, profiles, runner, supported_ops
        loaded = [m for m in sys.modules if m == "tensorrt" or m.startswith(("tensorrt.", "cuda", "torch"))]
        assert not loaded, loaded
        assert t.profile_shapes and t.TrtRunner and t.build_plan
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(MISSING is None, reason="TensorRT is installed here")
def test_cli_build_without_tensorrt_fails_in_one_line_and_writes_nothing(bundles, tmp_path, capsys, monkeypatch):
    from vlrt.cli.main import main

    copy = tmp_path / "copy"
    shutil.copytree(bundles["meanP"], copy, ignore=shutil.ignore_patterns("engines"))
    before = sorted(p.name for p in copy.iterdir())
    monkeypatch.setattr(Bundle, "open", lambda *a, **k: pytest.fail("the bundle was opened: work before the refusal"))
    assert main(["build", str(copy), "--backend", "tensorrt"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("vlrt: error: the tensorrt backend needs")
    assert "pip install 'vlrt[tensorrt]'" in err
    assert sorted(p.name for p in copy.iterdir()) == before  # no engines/ and no staging directory
    monkeypatch.undo()
    with pytest.raises(VlrtError, match=r"needs the `tensorrt` Python package"):
        Runtime.load(copy, backend="tensorrt")


def test_profiles_come_from_the_manifest(bundles):
    manifest = Bundle.open(bundles["seqTransf"]).manifest
    video = profile_shapes(manifest, "video")
    assert video == {"pixels": ((1, 1, 3, 32, 32), (8, 4, 3, 32, 32), (8, 4, 3, 32, 32)),
                     "frame_mask": ((1, 1), (8, 4), (8, 4))}
    text = profile_shapes(manifest, "text", max_batch=16, opt_batch=4)
    assert text == {"input_ids": ((1, 32), (4, 32), (16, 32))}  # words fixed at max_words
    assert profile_shapes(manifest, "text")["input_ids"] == ((1, 32), (64, 32), (64, 32))
    bad = json.loads(json.dumps(manifest))
    bad["graphs"]["video"]["inputs"]["pixels"][1] = "clips"
    with pytest.raises(VlrtError, match=r"axis 'clips' with no known range"):
        profile_shapes(bad, "video")


def test_profile_batches_are_the_batches_the_runtime_feeds():
    """TensorRT tunes kernels for the profile's opt shape: it must be the batch Runtime sends."""
    from vlrt.runtime.backends.trt import MAX_BATCH, OPT_BATCH

    def default(method):
        return inspect.signature(method).parameters["batch_size"].default

    assert OPT_BATCH == {"video": default(Runtime.encode_frames), "text": default(Runtime.encode_text)}
    assert default(Runtime.encode_videos) == OPT_BATCH["video"]
    # a full batch of the runtime's is one engine call, not split by the runner
    assert all(MAX_BATCH[g] >= OPT_BATCH[g] for g in OPT_BATCH)


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "int8", "int8_mode": "dynamic"}, "TensorRT builds INT8 only from Q/DQ graphs"),
    ({"precision": "int8"}, "pass --calib DIR"),
    ({"precision": "fp16", "calib": "x"}, "--calib is used only by"),
    ({"precision": "fp16", "int8_mode": "static"}, "applies to --precision int8"),
    ({"plugins": ["/nonexistent/libplugin.so"]}, "--plugin /nonexistent/libplugin.so: no such file"),
])
def test_tensorrt_plan_refuses_contradictions(bundles, monkeypatch, kwargs, message):
    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: None)
    with pytest.raises(VlrtError, match=message):
        plan_build(Bundle.open(bundles["meanP"]), **{"backend": "tensorrt", "precision": None, "int8_mode": None,
                                                     "calib": None, **kwargs})


def test_plugins_are_refused_off_tensorrt(bundles):
    with pytest.raises(VlrtError, match="applies to --backend tensorrt only"):
        plan_build(Bundle.open(bundles["meanP"]), backend="ort-cpu", precision=None, int8_mode=None, calib=None,
                   plugins=["x.so"])


class RandomFeeds:
    """Calibration feeds for op coverage: Q/DQ placement does not depend on the data."""

    def __init__(self, manifest, graph):
        rng, size, frames = np.random.default_rng(0), manifest["preprocessing"]["size"], manifest["max_frames"]
        ids = np.zeros((2, manifest["max_words"]), np.int64)
        ids[:, 0], ids[:, 1:4], ids[0, 4], ids[1, 2] = 49406, [[320, 1125, 539]], 49407, 49407
        feed = {"pixels": rng.standard_normal((2, frames, 3, size, size), dtype=np.float32),
                "frame_mask": np.ones((2, frames), np.float32)} if graph == "video" else {"input_ids": ids}
        self.feeds = [feed]

    def get_next(self):
        return self.feeds.pop() if self.feeds else None

    def rewind(self):
        pass


@pytest.fixture(scope="module")
def tensorrt_inputs(bundles, tmp_path_factory):
    """What `vlrt build --backend tensorrt` would hand to TensorRT's parser, per case of CASES:
    graph name -> ONNX model, made by the build's own plan and passes. The text graph is checked
    once (it does not depend on the head or on token merging: asserted below)."""
    calib = tmp_path_factory.mktemp("calib")
    (calib / "clip.mp4").write_bytes(b"listed, never decoded: the feeds are RandomFeeds")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trt_backend, "require_tensorrt", lambda: None)
        mp.setattr(build_module, "_calibration_reader",
                   lambda bundle, graph, videos: RandomFeeds(bundle.manifest, graph))
        for head, form, tome in CASES:
            bundle = Bundle.open(bundles[head])
            plan = plan_build(bundle, backend="tensorrt", precision=form, int8_mode=None,
                              calib=calib if form == "int8" else None, token_merge=tome)
            with_text = head == HEADS[0] and not tome
            if not with_text:
                plan.passes.pop("text", None)
            dst = tmp_path_factory.mktemp(f"{head}-{form}-{tome}")
            graphs = build_module._run_passes(bundle, plan, dst, {}, lambda message: None)
            out[head, form, tome] = {g: onnx.load(str(dst / e["file"])) for g, e in graphs.items()
                                     if g == "video" or with_text}
    return out


def _structure(model):
    return [(n.op_type, n.domain, [a.name for a in n.attribute]) for n in model.graph.node]


def test_text_graph_is_the_same_for_every_head(bundles):
    texts = [onnx.load(str(bundles[h] / "text.onnx")) for h in HEADS]
    assert all(_structure(t) == _structure(texts[0]) for t in texts[1:])


@pytest.mark.parametrize("head, form, tome", CASES)
def test_every_op_tensorrt_gets_is_documented_as_supported(tensorrt_inputs, head, form, tome):
    graphs = tensorrt_inputs[head, form, tome]
    assert set(graphs) == ({"video", "text"} if head == HEADS[0] and not tome else {"video"})
    for name, model in graphs.items():
        report = check_model(model)
        assert report.problems == [], f"{head} {form} {name}: " + "\n".join(report.problems)
        assert report.unchecked == {}, f"{head} {form} {name}: restricted ops with no check: {report.unchecked}"
        assert all(":" not in op for op in report.ops), report.ops  # no custom domains (ORT contrib ops)
        ops = set(report.ops)
        assert {"MatMul", "LayerNormalization", "Softmax", "ReduceL2"} <= ops
        assert ("LSTM" in ops) == (head == "seqLSTM" and name == "video")
        assert ("ArgMax" in ops) == (name == "text" or bool(tome))  # EOT pooling; ToMe's best partner
        assert ("TopK" in ops) == bool(tome)  # ToMe's choice of the r merged tokens
        if form == "int8":
            assert report.ops["QuantizeLinear"] > 0 and report.ops["DequantizeLinear"] > report.ops["QuantizeLinear"]
        else:
            assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
        if form == "fp16":  # really the fp16 graph: most MatMuls read fp16
            typed = onnx.shape_inference.infer_shapes(model)
            types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
            matmuls = [n for n in typed.graph.node if n.op_type == "MatMul"]
            assert sum(types.get(n.input[0]) == TensorProto.FLOAT16 for n in matmuls) >= len(matmuls) // 2


def test_checked_restrictions_of_our_graphs_are_the_documented_ones(tensorrt_inputs):
    seen = {}
    for graphs in tensorrt_inputs.values():
        for model in graphs.values():
            seen.update(check_model(model).restrictions)
    # The restricted ops that vlrt's graphs contain; each one is checked by check_model.
    assert set(seen) == {"Constant", "Unsqueeze", "Squeeze", "LayerNormalization", "LSTM", "ReduceL2", "ReduceSum",
                         "ReduceMax", "TopK", "QuantizeLinear", "DequantizeLinear"}
    assert "input_forget must be 0" in seen["LSTM"] and "zero" in seen["DequantizeLinear"]
    assert "sorted must be 1" in seen["TopK"]


def _graph(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


@pytest.mark.parametrize("case, message", [
    ("uint8 dq", "input 0 is UINT8; TensorRT supports FP4 FP8 INT4 INT8"),
    ("zero point", "zero point is not zero"),
    ("topk unsorted", "sorted must be 1"),
    ("lstm layout", "layout must be 0"),
    ("layernorm mean", "supports only the first output Y"),
    ("computed axes", "axes ('ax') is computed at run time"),
    ("contrib op", "domain 'com.microsoft' is not ONNX"),
    ("matmulinteger", "unsupported by TensorRT's ONNX parser"),
    ("double", "input 0 is ONNX type 11"),
    ("opset", "opset 25, TensorRT 10.15 parses opsets 9 to 24"),
])
def test_check_model_catches_what_tensorrt_refuses(case, message):
    x, q8 = _f("x", [2, 4]), helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    models = {
        "uint8 dq": _graph([helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [_f("q", [4], TensorProto.UINT8)],
                           [_f("y", [4])], [q8, helper.make_tensor("z", TensorProto.UINT8, [], [0])]),
        "zero point": _graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], [x],
                             [_f("y", [2, 4], TensorProto.INT8)], [q8, helper.make_tensor("z", TensorProto.INT8, [], [3])]),
        "topk unsorted": _graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], sorted=0)], [x],
                                [_f("v", [2, 2]), _f("i", [2, 2], TensorProto.INT64)],
                                [helper.make_tensor("k", TensorProto.INT64, [1], [2])]),
        "lstm layout": _graph([helper.make_node("LSTM", ["x3", "w", "r"], ["y"], hidden_size=1, layout=1)],
                              [_f("x3", [2, 3, 1])], [_f("y", None)],
                              [helper.make_tensor("w", TensorProto.FLOAT, [1, 4, 1], [0.0] * 4),
                               helper.make_tensor("r", TensorProto.FLOAT, [1, 4, 1], [0.0] * 4)]),
        "layernorm mean": _graph([helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean"]),
                                  helper.make_node("Identity", ["mean"], ["m"])], [x], [_f("y", [2, 4]), _f("m", None)],
                                 [helper.make_tensor("g", TensorProto.FLOAT, [4], [1.0] * 4)]),
        "computed axes": _graph([helper.make_node("Shape", ["x"], ["sh"]),
                                 helper.make_node("Gather", ["sh", "zero"], ["ax"], axis=0),
                                 helper.make_node("ReduceSum", ["x", "ax"], ["y"])], [x], [_f("y", None)],
                                [helper.make_tensor("zero", TensorProto.INT64, [1], [0])]),
        "contrib op": _graph([helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")], [x], [_f("y", [2, 4])]),
        "matmulinteger": _graph([helper.make_node("MatMulInteger", ["a", "a"], ["y"])], [_f("a", [2, 2], TensorProto.UINT8)],
                                [_f("y", [2, 2], TensorProto.INT32)]),
        "double": _graph([helper.make_node("Relu", ["d"], ["y"])], [_f("d", [2], TensorProto.DOUBLE)],
                         [_f("y", [2], TensorProto.DOUBLE)]),
        "opset": _graph([helper.make_node("Relu", ["x"], ["y"])], [x], [_f("y", [2, 4])], opset=25),
    }
    model = models[case]
    if case == "contrib op":
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    problems = check_model(model).problems
    assert any(message in p for p in problems), problems
    if case == "contrib op":
        assert check_model(model, plugins=["FastGelu"]).problems == []


def test_table_is_a_transcription_not_a_guess():
    assert "TensorRT 10.15" in supported_ops.SOURCE and supported_ops.OPSET_RANGE == (9, 24)
    assert len(SUPPORTED_OPS) == 200
    assert SUPPORTED_OPS["LayerNormalization"].types == {"FP32", "FP16", "BF16"}
    assert SUPPORTED_OPS["Cast"].types == {"FP32", "FP16", "BF16", "INT32", "INT64", "UINT8", "BOOL"}
    assert SUPPORTED_OPS["DequantizeLinear"].types == {"INT8", "FP8", "FP4", "INT4"}
    assert not SUPPORTED_OPS["ConvInteger"].supported and SUPPORTED_OPS["Attention"].supported


# --- the build/engine/runtime wiring, with a stand-in for TensorRT ---------------------------------

class StandInPlan(OrtRunner):
    """Stands in for TrtRunner(PlanFromFile(path)): the 'plan' is a copy of the ONNX graph, run by ORT CPU."""

    def __init__(self, path, plugins=()):
        super().__init__(SessionFromOnnx(path))


def _stand_in(monkeypatch, *, version="10.13.3.9", gpu=("NVIDIA H100 80GB HBM3", "9.0")):
    built = []

    def build_plan(onnx_path, plan_path, *, profiles, precision, timing_cache, plugin_libraries, progress):
        built.append((onnx_path.name, profiles, precision, timing_cache.name))
        shutil.copyfile(onnx_path, plan_path)
        return {"tensorrt": version, "profile": {k: [list(s) for s in v] for k, v in profiles.items()}}

    trt = trt_backend
    monkeypatch.setattr(trt, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt, "tensorrt_version", lambda: version)
    monkeypatch.setattr(trt, "gpu_fingerprint", lambda: {"name": gpu[0], "compute_capability": gpu[1]})
    monkeypatch.setattr(trt, "build_plan", build_plan)
    monkeypatch.setattr(trt, "PlanFromFile", StandInPlan)
    monkeypatch.setattr(trt, "TrtRunner", lambda loader: loader)
    return built


def test_tensorrt_engine_directory_key_and_lookup(bundles, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(bundles["seqTransf"], copy, ignore=shutil.ignore_patterns("engines"))
    built = _stand_in(monkeypatch)
    result = build_engine(copy, backend="tensorrt")
    m = result.manifest
    assert (m["backend"], m["precision"], m["options"]["pass"]) == ("tensorrt", "fp16", "fp16")
    assert m["versions"]["tensorrt"] == "10.13.3.9" and m["machine"]["gpu"] == {
        "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert m["options"]["tf32"] is False and m["options"]["max_batch"] == {"video": 8, "text": 64}
    assert [b[0] for b in built] == ["video.onnx", "text.onnx"] and all(b[2] == "fp16" for b in built)
    assert built[0][3].startswith("tensorrt-10.13.3.9-NVIDIA_H100_80GB_HBM3-sm9.0")
    assert "not fp16 arithmetic" not in json.dumps(m["validation"])  # the gate ran the plan, not ORT's casts
    for name in ("video", "text"):
        entry = m["graphs"][name]
        assert entry["file"] == f"{name}.plan" and entry["onnx"]["file"] == f"{name}.onnx"
        assert (result.engine_dir / entry["file"]).is_file() and (result.engine_dir / entry["onnx"]["file"]).is_file()
    assert engine_key(m) == result.key
    rt = Runtime.load(copy, backend="tensorrt")
    assert rt.engine.key == result.key and rt.precision == "fp16"
    ref = Runtime.load(copy, backend="ort-cpu")
    text = ["a dog runs", "a red circle moves to the left"]
    cos = (rt.encode_text(text) * ref.encode_text(text)).sum(-1)
    assert cos.min() >= 0.999
    # the same build on another GPU or TensorRT version is another engine, and this one is not used there
    _stand_in(monkeypatch, gpu=("NVIDIA A100-SXM4-40GB", "8.0"))
    with pytest.raises(VlrtError, match=r"no fp16 engine for tensorrt built on this machine \(1 engine\(s\) under"):
        Runtime.load(copy, backend="tensorrt")
    assert build_engine(copy, backend="tensorrt").key != result.key
    _stand_in(monkeypatch, version="10.14.1.48")
    with pytest.raises(VlrtError, match=rf"engine {result.key} \(tensorrt, fp16\) does not fit here \(different tensorrt\)"):
        Runtime.load(copy, backend="tensorrt", engine=result.key)


def test_fp32_plans_and_a_tampered_onnx_beside_a_plan(bundles, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(bundles["meanP"], copy, ignore=shutil.ignore_patterns("engines"))
    built = _stand_in(monkeypatch)
    fp32 = build_engine(copy, backend="tensorrt", precision="fp32")  # TensorRT builds a plan even for fp32
    assert fp32.engine_dir is not None and fp32.manifest["options"]["pass"] == "none"
    assert [b[2] for b in built] == ["fp32", "fp32"] and (fp32.engine_dir / "video.plan").is_file()
    fp16 = build_engine(copy, backend="tensorrt")
    assert fp16.key != fp32.key
    assert Runtime.load(copy, backend="tensorrt").engine.key == fp16.key  # no precision: the newest engine
    with open(fp16.engine_dir / "video.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VlrtError, match=r"video.onnx: sha256 .* does not match engine.json"):
        Runtime.load(copy, backend="tensorrt", precision="fp16")
    assert Runtime.load(copy, backend="tensorrt", precision="fp32").engine.key == fp32.key


# --- real TensorRT: build and run plans on a GPU ---------------------------------------------------

def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _frames(rng, n=3, frames=4):
    mask = np.ones((n, frames), np.float32)
    mask[1, 2:], mask[2, 1:] = 0, 0
    return rng.standard_normal((n, frames, 3, 32, 32), dtype=np.float32), mask


@pytest.mark.tensorrt
@requires_tensorrt
@pytest.mark.parametrize("precision, threshold", [("fp16", 0.999), ("fp32", 0.99999)])
@pytest.mark.parametrize("head", HEADS)
def test_tensorrt_plans_match_ort_cpu(bundles, tmp_path, head, precision, threshold):
    copy = tmp_path / "copy"
    shutil.copytree(bundles[head], copy, ignore=shutil.ignore_patterns("engines"))
    messages = []
    result = build_engine(copy, backend="tensorrt", precision=precision, progress=messages.append)
    assert any(msg.startswith("TensorRT: ") and "steps" in msg for msg in messages), messages
    for name, entry in result.manifest["graphs"].items():  # the engine inspector read the built plan
        attention = entry["tensorrt"]["attention"]
        assert "error" not in attention and attention["verbosity"] == "detailed", (name, attention)
        print(name, precision, json.dumps(attention))  # -rA shows whether attention fused
    assert result.manifest["validation"]["min_cosine"] >= 0.99
    rt, ref = Runtime.load(copy, backend="tensorrt", precision=precision), Runtime.load(copy, backend="ort-cpu")
    pixels, mask = _frames(np.random.default_rng(0))
    v, f = rt.encode_frames(pixels, mask, return_frames=True)
    v_ref, f_ref = ref.encode_frames(pixels, mask, return_frames=True)
    valid = mask.astype(bool)
    assert _cos(v, v_ref).min() >= threshold and _cos(f[valid], f_ref[valid]).min() >= threshold
    assert np.abs(f[~valid]).max() == 0  # padded frames stay zero
    text = ["a dog runs", "a red circle moves to the left", ""]
    assert _cos(rt.encode_text(text), ref.encode_text(text)).min() >= threshold
    big = np.concatenate([pixels] * 4), np.concatenate([mask] * 4)  # 12 videos > max batch 8: split in chunks
    assert _cos(rt.encode_frames(*big, batch_size=12), ref.encode_frames(*big)).min() >= threshold


@pytest.mark.tensorrt
@requires_tensorrt
def test_tensorrt_int8_plan_and_timing_cache(bundles, tmp_path):
    from video_assets import write_video

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        write_video(calib / f"clip{i}.mp4", width=96, height=96, frames=48, fps=24)
    copy = tmp_path / "copy"
    shutil.copytree(bundles["seqTransf"], copy, ignore=shutil.ignore_patterns("engines"))
    int8 = build_engine(copy, backend="tensorrt", precision="int8", calib=calib)
    info = int8.manifest["graphs"]["video"]["tensorrt"]
    assert info["layers"]["dequantize"] > 0 and int8.manifest["options"]["activations"] == "int8 symmetric"
    fp16 = build_engine(copy, backend="tensorrt", precision="fp16")  # a second build reuses the timing cache
    assert fp16.manifest["graphs"]["video"]["tensorrt"]["timing_cache"]["reused"] is True
    assert fp16.manifest["graphs"]["video"]["tensorrt"]["timing_cache"]["discarded"] is None
    rt, ref = Runtime.load(copy, backend="tensorrt", precision="int8"), Runtime.load(copy, backend="ort-cpu")
    pixels, mask = _frames(np.random.default_rng(1))
    assert _cos(rt.encode_frames(pixels, mask), ref.encode_frames(pixels, mask)).min() >= 0.99
    with pytest.raises(VlrtError, match=r"input 'input_ids' has shape \(1, 7\); this engine was built for shapes"):
        rt._runners["text"].infer({"input_ids": np.zeros((1, 7), np.int64)})
