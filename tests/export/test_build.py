"""`vlrt build`: fp16 and int8 passes, engine directories, reuse, the gate, and the runtime's lookup."""
import json
import shutil

import numpy as np
import onnx
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip
from cli_support import vlrt
from video_assets import write_video

from vlrt import Runtime
from vlrt.build import engine as build_module
from vlrt.build.engine import build_engine
from vlrt.build.passes import Fp16Graph
from vlrt.build.passes.fp16 import node_precisions
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.bundle import engine_key, machine_fingerprint, sha256_file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    return export_checkpoint(ckpt, root / "b", max_frames=4).bundle


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for i, (w, h) in enumerate([(160, 96), (96, 128), (128, 128)]):
        write_video(folder / f"clip{i}.mp4", width=w, height=h, frames=96, fps=24)
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def dynamic(bundle):
    return build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode="dynamic")


@pytest.fixture(scope="module")
def static(bundle, calib):
    return build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode="static", calib=calib)


def cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def frames_and_text(rt, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((3, 4, 3, 32, 32), dtype=np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    return rt.encode_frames(pixels, mask), rt.encode_text(["a dog runs", "a red circle moves to the left"])


def test_dynamic_engine_manifest(bundle, dynamic):
    m = json.loads((dynamic.engine_dir / "engine.json").read_text())
    assert dynamic.engine_dir == bundle.resolve() / "engines" / dynamic.key and not dynamic.reused
    assert (m["backend"], m["precision"], m["key"]) == ("ort-cpu", "int8", dynamic.key)
    assert m["options"]["mode"] == "dynamic" and m["options"]["per_channel"] is True
    assert m["source"]["manifest_sha256"] == sha256_file(bundle / "vlrt.json")
    assert {"onnx", "onnxruntime", "vlrt"} <= set(m["versions"])
    assert m["machine"] == machine_fingerprint() and m["machine"]["cpu"]
    assert engine_key(m) == dynamic.key and len(dynamic.key) == 16
    for name in ("video", "text"):
        g = m["graphs"][name]
        assert g["sha256"] == sha256_file(dynamic.engine_dir / g["file"])
        assert g["pass"]["changed"]["MatMulInteger"] > 0
    video_kept = m["graphs"]["video"]["pass"]["kept_fp32_by_op"]
    assert video_kept["Conv"] == 1  # the patch embedding
    assert video_kept["MatMul"] >= 1 + 2 * 4  # projection + the seqTransf head's weighted MatMuls
    v = m["validation"]
    assert v["gate"] == "passed" and v["threshold"] == 0.99 and v["min_cosine"] >= 0.99
    assert set(v["per_output"]) == {"video_embeds", "frame_embeds", "text_embeds", "token_embeds"}


def test_dynamic_graph_keeps_projection_and_patch_embedding_fp32(dynamic):
    graph = onnx.load(str(dynamic.engine_dir / "video.onnx")).graph
    ops = {n.name: n.op_type for n in graph.node}
    assert ops["/visual/MatMul"] == "MatMul" and ops["/visual/conv1/Conv"] == "Conv"
    assert not any("/head/" in name for name, op in ops.items() if op == "MatMulInteger")
    assert any("/visual/transformer/" in name for name, op in ops.items() if op == "MatMulInteger")


@pytest.mark.parametrize("which", ["dynamic", "static"])
def test_runtime_uses_the_int8_engine(bundle, calib, which, request):
    built = request.getfixturevalue(which)
    rt = Runtime.load(bundle, backend="ort-cpu", precision="int8", engine=built.key)
    ref = Runtime.load(bundle, backend="ort-cpu")
    assert rt.precision == "int8" and rt.engine.key == built.key and ref.engine is None
    (v8, t8), (v32, t32) = frames_and_text(rt), frames_and_text(ref)
    assert cosines(v8, v32).min() >= 0.99 and cosines(t8, t32).min() >= 0.99
    assert np.abs(v8 - v32).max() > 1e-5  # it really is another graph
    videos = sorted(str(p) for p in calib.glob("*.mp4"))
    assert cosines(rt.encode_videos(videos), ref.encode_videos(videos)).min() >= 0.99


def test_static_engine_is_calibrated_qdq(static, calib):
    m = static.manifest
    assert m["options"]["mode"] == "static" and m["options"]["format"] == "QDQ"
    assert m["options"]["activations"] == "uint8" and m["options"]["per_channel"] is True
    assert m["options"]["calibration"]["videos"] == 3 and m["calibration"]["videos"] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    ops = [n.op_type for n in onnx.load(str(static.engine_dir / "video.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    assert m["validation"]["gate"] == "passed" and m["validation"]["min_cosine"] >= 0.99


def test_same_settings_reuse_other_settings_new_key(bundle, dynamic, static, calib, tmp_path):
    again = build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode="dynamic")
    assert again.reused and again.key == dynamic.key and again.manifest["created"] == dynamic.manifest["created"]
    assert static.key != dynamic.key
    other_calib = tmp_path / "calib"
    shutil.copytree(calib, other_calib)
    (other_calib / "clip2.mp4").unlink()
    fewer = build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode="static", calib=other_calib)
    assert not fewer.reused and fewer.key not in (static.key, dynamic.key)


def test_engine_choice_is_deterministic(bundle, dynamic, static, tmp_path):
    built = [json.loads(p.read_text()) for p in (bundle / "engines").glob("*/engine.json")]
    assert len(built) >= 2
    # the default int8 mode of ort-cpu (dynamic), although the static engine was built after it
    assert max(built, key=lambda m: m["created"])["key"] != dynamic.key
    rt = Runtime.load(bundle, backend="ort-cpu", precision="int8")
    assert rt.engine.key == dynamic.key
    assert rt.engine_info == {"backend": "ort-cpu", "precision": "int8", "engine": dynamic.key,
                              "options": dynamic.manifest["options"], "skip_similar": None, "packed": True}
    assert rt.engine_line().startswith(f"engine {dynamic.key} (ort-cpu, int8, dynamic int8")
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    shutil.rmtree(copy / "engines" / dynamic.key)
    statics = sorted(m["key"] for m in built if m["options"].get("mode") == "static")
    if len(statics) == 1:  # the only int8 engine left is taken, default or not
        assert Runtime.load(copy, backend="ort-cpu", precision="int8").engine.key == statics[0]
    fused = build_engine(copy, backend="ort-cpu", precision="int8", int8_mode="dynamic", fuse_attention=True)
    with pytest.raises(VlrtError, match=rf"int8 engines fit here and none is the default build: .*{fused.key}.*"
                                        r"choose one with --engine KEY"):
        Runtime.load(copy, backend="ort-cpu", precision="int8")
    assert Runtime.load(copy, backend="ort-cpu", precision="int8", engine=fused.key).engine.key == fused.key
    with pytest.raises(VlrtError, match=rf"engine {fused.key} is int8, not fp32"):
        Runtime.load(copy, backend="ort-cpu", precision="fp32", engine=fused.key)


def test_tampered_engine_is_refused(bundle, dynamic, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    engine_dir = copy / "engines" / dynamic.key
    with open(engine_dir / "video.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VlrtError, match=r"video.onnx: sha256 .* does not match engine.json"):
        Runtime.load(copy, backend="ort-cpu", precision="int8", engine=dynamic.key)
    with pytest.raises(VlrtError, match="--force"):
        build_engine(copy, backend="ort-cpu", precision="int8", int8_mode="dynamic")
    rebuilt = build_engine(copy, backend="ort-cpu", precision="int8", int8_mode="dynamic", overwrite=True)
    assert rebuilt.key == dynamic.key and not rebuilt.reused
    Runtime.load(copy, backend="ort-cpu", precision="int8", engine=dynamic.key)
    manifest = json.loads((engine_dir / "engine.json").read_text())
    manifest["options"]["per_channel"] = False  # settings edited after the build
    (engine_dir / "engine.json").write_text(json.dumps(manifest))
    with pytest.raises(VlrtError, match="do not hash to its key"):
        Runtime.load(copy, backend="ort-cpu", precision="int8", engine=dynamic.key)


def test_missing_engine_says_which_build_to_run(tmp_path, bundle):
    copy = tmp_path / "fresh"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("engines"))
    with pytest.raises(VlrtError, match=rf"no int8 engine for ort-cpu .* `vlrt build {copy} --backend ort-cpu --precision int8`"):
        Runtime.load(copy, backend="ort-cpu", precision="int8")


def test_engine_of_another_machine_is_not_used(bundle, dynamic, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    other = {**machine_fingerprint(), "isa": []}
    monkeypatch.setattr("vlrt.runtime.bundle.machine_fingerprint", lambda: other)
    with pytest.raises(VlrtError, match=r"built for other settings, another bundle export, onnxruntime version or machine"):
        Runtime.load(copy, backend="ort-cpu", precision="int8")


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "fp16"}, "fp16 is for GPU backends"),
    ({"precision": "int8", "int8_mode": "static"}, "pass --calib DIR"),
    ({"precision": "int8", "int8_mode": "dynamic", "calib": "x"}, "--calib is used only by"),
    ({"backend": "ort-cuda", "precision": "fp16", "int8_mode": "static"}, "--int8-mode static applies to --precision int8"),
    ({"backend": "ort-cuda", "precision": "int8", "int8_mode": "dynamic"}, "CUDA provider lacks"),
])
def test_refused_settings(bundle, kwargs, message):
    with pytest.raises(VlrtError, match=message):
        build_engine(bundle, **{"backend": "ort-cpu", **kwargs})


def test_fp16_is_refused_on_cpu_at_load_too(bundle):
    with pytest.raises(VlrtError, match="fp16 is for GPU backends"):
        Runtime.load(bundle, backend="ort-cpu", precision="fp16")


def test_fp16_engine_for_cuda_is_built_here_and_says_what_its_gate_checked(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("engines"))
    built = build_engine(copy, backend="ort-cuda")  # the default precision on ort-cuda
    m = built.manifest
    assert (m["backend"], m["precision"], m["options"]) == ("ort-cuda", "fp16", {"pass": "fp16"})
    assert m["validation"]["gate"] == "passed" and "not fp16 arithmetic" in m["validation"]["note"]
    assert m["graphs"]["video"]["pass"]["kept_fp32_by_op"]["LayerNormalization"] > 0
    with pytest.raises(VlrtError, match=rf"engine {built.key} \(ort-cuda, fp16\) does not fit here \(different backend\)"):
        Runtime.load(copy, backend="ort-cpu", engine=built.key)


def test_failed_gate_writes_nothing_and_no_gate_records_skipped(bundle, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("engines"))
    monkeypatch.setattr(build_module, "GATE", 1.01)  # no lossy graph can pass
    with pytest.raises(VlrtError, match=r"fails the gate: min cosine 0\.9\d+ < 1.01"):
        build_engine(copy, backend="ort-cpu", precision="int8")
    assert not any((copy / "engines").iterdir())
    kept = build_engine(copy, backend="ort-cpu", precision="int8", gate=False)
    assert kept.manifest["validation"]["gate"] == "skipped"
    with pytest.raises(VlrtError, match="fails the gate"):  # reusing it with the gate on checks it again
        build_engine(copy, backend="ort-cpu", precision="int8")


def test_fp16_pass_keeps_sensitive_ops_fp32(bundle, tmp_path):
    from vlrt.export.validate import compare

    feeds = {"video": {"pixels": np.random.default_rng(0).standard_normal((2, 4, 3, 32, 32), dtype=np.float32),
                       "frame_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float32)},
             "text": {"input_ids": Runtime.load(bundle, backend="ort-cpu").tokenize(["a dog runs", "two cats"])}}
    for name in ("video", "text"):
        report = Fp16Graph().apply(bundle / f"{name}.onnx", tmp_path / f"{name}16.onnx")
        model = onnx.load(str(tmp_path / f"{name}16.onnx"))
        onnx.checker.check_model(model)  # includes topological order, which TensorRT's parser needs
        model = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
        sensitive = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceL2", "ArgMax")]
        assert sensitive and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in sensitive)
        matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
        fp16 = [n.name for n in matmuls if types.get(n.input[0]) == onnx.TensorProto.FLOAT16]
        assert len(fp16) >= len(matmuls) // 2 and f"/{name}/MatMul" not in fp16  # the projection stays fp32
        assert all(types[i.name] == onnx.TensorProto.FLOAT for i in model.graph.input if i.name != "input_ids")
        precisions = node_precisions(model)
        assert precisions["fp16"] > 0 and report.changed["fp16 compute nodes"] == precisions["fp16"]
        assert report.kept_fp32_by_op["LayerNormalization"] == sum(n.op_type == "LayerNormalization" for n in model.graph.node)
        with OrtRunner(SessionFromOnnx(bundle / f"{name}.onnx")) as ref, \
                OrtRunner(SessionFromOnnx(tmp_path / f"{name}16.onnx")) as half:
            expected, got = ref.infer(feeds[name]), half.infer(feeds[name])
        for out, value in expected.items():
            assert got[out].dtype == np.float32
            assert compare(value, got[out])["min_cosine"] >= 0.999, out



def test_cli_build(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("engines"))
    res = vlrt("build", copy, "--backend", "ort-cpu", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["precision"], out["options"]["mode"], out["reused"]) == ("int8", "dynamic", False)
    assert out["validation"]["min_cosine"] >= 0.99 and (copy / "engines" / out["key"] / "engine.json").is_file()
    res = vlrt("build", copy, "--backend", "ort-cpu", "--precision", "int8")
    assert res.returncode == 0 and f"reused int8 engine for ort-cpu (key {out['key']})" in res.stdout
    assert "vs fp32: min cos" in res.stdout and "MatMulInteger" in res.stdout
    res = vlrt("build", copy, "--backend", "ort-cpu", "--precision", "fp16")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("vlrt: error: fp16 is for GPU backends")


def test_a_rebuild_by_another_version_is_taken_over_the_older_one(bundle, dynamic, tmp_path):
    """The same recipe built by two vlrt versions: both fit (vlrt's version is not a runtime
    matter), and the later build runs; recipes that differ are still refused."""
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    older = json.loads((copy / "engines" / dynamic.key / "engine.json").read_text())
    older["versions"]["vlrt"], older["created"] = "0.0.9", "2000-01-01T00:00:00.000+00:00"
    older["key"] = engine_key(older)
    shutil.copytree(copy / "engines" / dynamic.key, copy / "engines" / older["key"])
    (copy / "engines" / older["key"] / "engine.json").write_text(json.dumps(older))
    assert Runtime.load(copy, backend="ort-cpu", precision="int8").engine.key == dynamic.key
