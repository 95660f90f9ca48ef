"""The openvino backend: fp32 on the bundle's graphs, NNCF int8 IR engines through `build_engine`
(the gate on OpenVINO, calibration, versions, weights), the runtime, the refusals (bf16 on a CPU
without it, dynamic int8, fp16), a tampered .bin, the IR split, token merging and the CLI."""
import json
import os
import shutil

import numpy as np
import pytest
from cli_support import vlrt
from video_assets import write_video

from vlrt import Runtime
from vlrt.build import engine as build_module
from vlrt.build.engine import build_engine, plan_build
from vlrt.errors import VlrtError
from vlrt.runtime.backends import ov as ov_backend
from vlrt.runtime.backends.ort import OrtRunner, SessionFromOnnx
from vlrt.runtime.backends.ov import OvModel, OvRunner, split_video
from vlrt.runtime.bundle import Bundle, Engine, engine_key, machine_fingerprint, sha256_file
from vlrt.runtime.tokenizer import ClipTokenizer

ov = pytest.importorskip("openvino")  # vlrt's backend module imports it only when it runs

OUTPUTS = ("video_embeds", "frame_embeds")
TEXT = ["a dog runs", "a red circle moves to the left", "two people are dancing at a wedding"]


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    """A copy of the tiny bundle: the engines built here are not left in the shared one."""
    copy = tmp_path_factory.mktemp("openvino") / "b"
    shutil.copytree(tiny_bundle, copy, ignore=shutil.ignore_patterns("engines"))
    return copy


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino-calib")
    for i, (w, h) in enumerate([(96, 64), (64, 96)]):
        write_video(folder / f"clip{i}.mp4", width=w, height=h, frames=48, fps=24)
    return folder


@pytest.fixture(scope="module")
def int8(bundle, calib):
    pytest.importorskip("nncf")
    messages = []
    result = build_engine(bundle, backend="openvino", precision="int8", calib=calib, progress=messages.append)
    return result, messages


def cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def frames(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    return rng.standard_normal((3, 4, 3, 32, 32), dtype=np.float32), mask


def test_fp32_runs_the_bundle_graphs_like_onnx_runtime(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    b = Bundle.open(bundle)
    rng = np.random.default_rng(0)
    feeds = [{"pixels": rng.standard_normal((n, t, 3, 32, 32), dtype=np.float32), "frame_mask": np.ones((n, t), np.float32)}
             for n, t in ((1, 4), (3, 2), (5, 1))]  # batch and frames are dynamic
    tokenizer = ClipTokenizer(b.path(b.manifest["tokenizer"]["file"]))
    texts = [{"input_ids": tokenizer(TEXT, context_length=b.max_words)}, {"input_ids": tokenizer(TEXT[:1], context_length=5)}]
    for graph, sets in (("video", feeds), ("text", texts)):
        with OvRunner(OvModel(b.graph_path(graph))) as got, OrtRunner(SessionFromOnnx(b.graph_path(graph))) as ref:
            assert got.inference_precision == "f32"
            for f in sets:
                expected, actual = ref.infer(f), got.infer(f)
                assert set(expected) <= set(actual)
                for name, value in expected.items():
                    assert actual[name].shape == value.shape and actual[name].dtype == np.float32
                    real = np.linalg.norm(value, axis=-1) > 0
                    assert cosines(actual[name][real], value[real]).min() >= 0.99999, name
    rt, ref = Runtime.load(bundle, backend="openvino"), Runtime.load(bundle, backend="ort-cpu")
    assert rt.engine is None and rt.backend == "openvino"
    pixels, mask = frames()
    assert cosines(rt.encode_frames(pixels, mask), ref.encode_frames(pixels, mask)).min() >= 0.99999
    assert cosines(rt.encode_text(TEXT), ref.encode_text(TEXT)).min() >= 0.99999
    nothing = build_engine(bundle, backend="openvino", precision="fp32")
    assert nothing.engine_dir is None and "nothing to build" in nothing.manifest["note"]


def test_runner_sets_precision_and_threads(bundle):
    path = Bundle.open(bundle).graph_path("text")
    assert OvModel(path).config()["INFERENCE_PRECISION_HINT"] == "f32"  # never OpenVINO's own default
    assert OvModel(path, precision="bf16").config()["INFERENCE_PRECISION_HINT"] == "bf16"
    runners = ov_backend.runners({"text": path}, {"inference_precision": "bf16"}, 1)
    assert runners["text"]._loader.precision == "bf16" and runners["text"]._loader.threads == 1
    with ov_backend.runners({"text": path}, {}, 1)["text"] as runner:
        assert runner._compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert str(runner._compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    with pytest.raises(VlrtError, match="inference_precision 'f16'"):
        ov_backend.runners({"text": path}, {"inference_precision": "f16"}, None)
    with pytest.raises(VlrtError, match="OpenVINO .* cannot load this graph: Unable to read the model"):
        OvRunner(OvModel(Bundle.open(bundle).path("vlrt.json"))).activate()


def test_int8_engine_is_nncf_ir_gated_on_openvino(bundle, calib, int8):
    result, messages = int8
    m = result.manifest
    assert (m["backend"], m["precision"], m["key"]) == ("openvino", "int8", result.key) and engine_key(m) == result.key
    assert m["options"]["mode"] == "static" and m["options"]["quantizer"] == "nncf"
    assert m["options"]["inference_precision"] == "f32" and m["options"]["smooth_quant"] is False
    videos = sorted(calib.glob("*.mp4"))
    # the calibration set is keyed and recorded exactly as ORT's static int8 records it
    ort_static = plan_build(Bundle.open(bundle), backend="ort-cpu", precision="int8", int8_mode="static", calib=calib)
    assert m["options"]["calibration"] == ort_static.options["calibration"] == build_module._calibration_id(videos)
    assert m["calibration"] == {"dir": str(calib.resolve()), "videos": [p.name for p in videos]}
    assert m["versions"]["openvino"] == ov_backend.versions()["openvino"] and "nncf" in m["versions"]
    assert {"vlrt", "onnx", "onnxruntime"} <= set(m["versions"]) and m["machine"] == machine_fingerprint()
    assert sorted(p.name for p in result.engine_dir.iterdir()) == ["engine.json", "text.bin", "text.xml",
                                                                    "video.bin", "video.xml"]  # no ORT Q/DQ graph
    for name in ("video", "text"):
        g = m["graphs"][name]
        assert g["file"] == f"{name}.xml" and g["sha256"] == sha256_file(result.engine_dir / g["file"])
        w = g["weights"]
        assert w["file"] == f"{name}.bin" and w["sha256"] == sha256_file(result.engine_dir / w["file"])
        assert w["bytes"] == (result.engine_dir / w["file"]).stat().st_size
        assert g["converted_from"]["sha256"] == sha256_file(bundle / f"{name}.onnx")
        assert g["pass"]["name"] == "int8-nncf" and g["pass"]["changed"]["FakeQuantize"] > 0
        assert "QuantizeLinear" not in (result.engine_dir / g["file"]).read_text()
    assert m["graphs"]["video"]["pass"]["kept_fp32_by_op"]["Conv"] == 1  # the patch embedding
    v = m["validation"]
    assert v["gate"] == "passed" and v["min_cosine"] >= 0.99 and v["max_abs_diff"] > 1e-5  # really quantized
    assert any(msg.startswith("NNCF: quantizing the video graph") for msg in messages), messages
    again = build_engine(bundle, backend="openvino", precision="int8", calib=calib)
    assert again.reused and again.key == result.key


def test_the_gate_runs_the_engine_on_openvino(bundle, int8, monkeypatch):
    """`validate_engine` takes the hook's runner for IR and ONNX alike, with the engine's options."""
    result, _ = int8
    seen = []
    real = ov_backend.BUILD.gate_runner

    def spy(path, options):
        seen.append((path.name, options.get("inference_precision")))
        return real(path, options)

    monkeypatch.setattr(ov_backend.BUILD, "gate_runner", spy)
    graphs = {g: result.engine_dir / e["file"] for g, e in result.manifest["graphs"].items()}
    gate_runner = ov_backend.BUILD.gate_runner
    validation = build_module.validate_engine(Bundle.open(bundle), graphs,
                                              runner=lambda p: gate_runner(p, result.manifest["options"]))
    assert seen == [("video.xml", "f32"), ("text.xml", "f32")]
    assert validation["min_cosine"] == pytest.approx(result.manifest["validation"]["min_cosine"], abs=1e-6)


def test_runtime_encodes_with_the_int8_engine(bundle, calib, int8, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result, _ = int8
    rt = Runtime.load(bundle, backend="openvino", precision="int8")
    ref = Runtime.load(bundle, backend="ort-cpu")
    assert rt.engine.key == result.key and rt.precision == "int8" and rt.backend == "openvino"
    t8, t32 = rt.encode_text(TEXT), ref.encode_text(TEXT)
    videos = sorted(str(p) for p in calib.glob("*.mp4"))
    v8, v32 = rt.encode_videos(videos), ref.encode_videos(videos)
    pixels, mask = frames(1)
    f8, f32 = rt.encode_frames(pixels, mask), ref.encode_frames(pixels, mask)
    for low, full in ((t8, t32), (v8, v32), (f8, f32)):
        assert cosines(low, full).min() >= 0.99
        assert np.abs(low - full).max() > 1e-5  # it really is another graph


def test_bf16_is_refused_on_a_cpu_without_it(bundle):
    if ov_backend.native_bf16(machine_fingerprint()):
        pytest.skip("this CPU has native bf16")
    before = sorted(os.listdir(bundle))
    with pytest.raises(VlrtError, match=r"--precision bf16 needs a CPU with native bf16 \(avx512_bf16 or amx_bf16\); "
                                        r"this one .* has neither"):
        build_engine(bundle, backend="openvino", precision="bf16")
    assert sorted(os.listdir(bundle)) == before  # refused before any work
    res = vlrt("build", bundle, "--backend", "openvino", "--precision", "bf16")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("vlrt: error: --precision bf16 needs a CPU with native bf16")


def test_bf16_engine_plumbing(bundle, monkeypatch):
    """With the ISA check told the CPU has bf16: the plan is the linked bundle graphs plus the
    bf16 option, no ONNX pass, and the gate compiles them on OpenVINO with the bf16 hint, which
    this CPU does not honour, so nothing is written (bf16 numerics are not tested here)."""
    if ov_backend.native_bf16(machine_fingerprint()):
        pytest.skip("this CPU has native bf16: a real bf16 engine would be built")
    import vlrt.runtime.bundle as bundle_module

    real = bundle_module.machine_fingerprint
    monkeypatch.setattr(bundle_module, "machine_fingerprint", lambda: {**real(), "isa": [*real()["isa"], "avx512_bf16"]})
    plan = plan_build(Bundle.open(bundle), backend="openvino", precision="bf16", int8_mode=None, calib=None)
    assert plan.options == {"inference_precision": "bf16"} and plan.passes == {} and plan.calibration == []
    seen = []
    real_gate = ov_backend.BUILD.gate_runner

    def spy(path, options):
        seen.append((path.name, os.stat(path).st_ino == os.stat(bundle / path.name).st_ino, dict(options)))
        runner = real_gate(path, options)
        seen.append(runner._loader.config()["INFERENCE_PRECISION_HINT"])
        return runner

    monkeypatch.setattr(ov_backend.BUILD, "gate_runner", spy)
    with pytest.raises(VlrtError, match=r"video.onnx: OpenVINO .* runs this graph in f32 on this CPU, not bf16"):
        build_engine(bundle, backend="openvino", precision="bf16")
    assert seen == [("video.onnx", True, {"inference_precision": "bf16"}), "bf16"]
    assert not [e for e in (bundle / "engines").glob("*/engine.json")
                if json.loads(e.read_text())["precision"] == "bf16"]


def test_bf16_engine_on_a_cpu_with_it(bundle):
    if not ov_backend.native_bf16(machine_fingerprint()):
        pytest.skip("this CPU has no native bf16 (the plumbing and the refusal are tested above)")
    result = build_engine(bundle, backend="openvino", precision="bf16")
    m = result.manifest
    assert m["options"] == {"inference_precision": "bf16"} and m["validation"]["gate"] == "passed"
    assert m["validation"]["max_abs_diff"] > 1e-6  # computed in bf16, not f32
    rt = Runtime.load(bundle, backend="openvino", precision="bf16")
    assert rt.engine.key == result.key
    pixels, mask = frames(3)
    ref = Runtime.load(bundle, backend="ort-cpu")
    assert cosines(rt.encode_frames(pixels, mask), ref.encode_frames(pixels, mask)).min() >= 0.99
    with ov_backend.runners({"text": result.engine_dir / "text.onnx"}, m["options"], 1)["text"] as runner:
        assert runner.inference_precision == "bf16"


@pytest.mark.parametrize("kwargs, message", [
    ({"precision": "int8", "int8_mode": "dynamic"}, "OpenVINO int8 comes from NNCF calibration on your videos"),
    ({"precision": "int8"}, "openvino int8 is calibrated on videos .*pass --calib DIR"),
    ({"precision": "fp16"}, "fp16 is not a CPU precision"),
    ({"precision": "bf16", "calib": "x"}, "--calib is used only by"),
    ({"precision": "fp32", "fuse_attention": True}, "--fuse-attention makes ONNX Runtime CPU's Attention op"),
    ({"precision": "bf16", "int8_fallback": "bf16"}, "--int8-fallback bf16 applies to --precision int8, not bf16"),
])
def test_refused_settings(bundle, kwargs, message):
    with pytest.raises(VlrtError, match=message):
        build_engine(bundle, backend="openvino", **kwargs)


def test_int8_fallback_bf16_is_openvinos_and_needs_native_bf16(bundle, calib, monkeypatch):
    with pytest.raises(VlrtError, match="the ort-cpu backend computes what int8 leaves unquantized in fp32 only; "
                                        "openvino offers bf16"):
        build_engine(bundle, backend="ort-cpu", precision="int8", int8_fallback="bf16")
    import vlrt.runtime.bundle as bundle_module

    real = bundle_module.machine_fingerprint
    monkeypatch.setattr(bundle_module, "machine_fingerprint",
                        lambda: {**real(), "isa": [f for f in real()["isa"] if f not in ov_backend.engine.BF16_FLAGS]})
    before = sorted(os.listdir(bundle))
    with pytest.raises(VlrtError, match=r"--int8-fallback bf16 needs a CPU with native bf16 .* use the fp32 fallback"):
        build_engine(bundle, backend="openvino", precision="int8", calib=calib, int8_fallback="bf16")
    assert sorted(os.listdir(bundle)) == before  # refused before any work


def test_int8_with_the_bf16_fallback(bundle, calib, int8, tmp_path, monkeypatch):
    """On a CPU with native bf16: the same NNCF IR, compiled with inference precision bf16 for
    what it leaves unquantized; its own engine, never the default int8 one."""
    if not ov_backend.native_bf16(machine_fingerprint()):
        pytest.skip("this CPU has no native bf16 (the refusal is tested above)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = build_engine(bundle, backend="openvino", precision="int8", calib=calib, int8_fallback="bf16")
    m, default = result.manifest, int8[0]
    assert m["options"] == {**default.manifest["options"], "inference_precision": "bf16"} and result.key != default.key
    assert m["validation"]["gate"] == "passed" and m["validation"]["min_cosine"] >= 0.99
    assert Runtime.load(bundle, backend="openvino", precision="int8").engine.key == default.key  # the fp32 fallback
    rt = Runtime.load(bundle, backend="openvino", engine=result.key)
    assert "bf16 fallback" in rt.engine.describe()
    ref = Runtime.load(bundle, backend="ort-cpu")
    pixels, mask = frames(2)
    assert cosines(rt.encode_frames(pixels, mask), ref.encode_frames(pixels, mask)).min() >= 0.99
    assert cosines(rt.encode_text(TEXT), ref.encode_text(TEXT)).min() >= 0.99
    runners = ov_backend.runners({"text": result.engine_dir / "text.xml"}, m["options"], 1)
    with runners["text"] as runner:
        assert runner.inference_precision == "bf16"  # what OpenVINO compiled, not only what was asked


def test_a_modified_bin_is_refused(int8, tmp_path):
    result, _ = int8
    copy = tmp_path / result.key
    shutil.copytree(result.engine_dir, copy)
    engine = Engine(copy, json.loads((copy / "engine.json").read_text()))
    engine.verify()
    data = bytearray((copy / "video.bin").read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight; the .xml is unchanged
    (copy / "video.bin").write_bytes(bytes(data))
    with pytest.raises(VlrtError, match=r"video.bin: sha256 .* does not match engine.json's"):
        engine.verify()
    (copy / "video.bin").unlink()
    with pytest.raises(VlrtError, match=r"video.bin: sha256 missing\.\.\. does not match"):
        engine.verify()


def test_ir_split_gives_the_whole_graph(int8, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result, _ = int8
    entry = result.manifest["graphs"]["video"]
    whole = result.engine_dir / entry["file"]
    tower, head, features = split_video(whole, entry["sha256"], OUTPUTS)
    assert features == entry["features"] and tower.suffix == head.suffix == ".xml"
    assert tower.with_suffix(".bin").is_file() and head.with_suffix(".bin").is_file()
    assert str(tower).startswith(str(tmp_path / "vlrt" / "split"))
    pixels, mask = frames(2)
    n, t = mask.shape
    with OvRunner(OvModel(whole)) as full, OvRunner(OvModel(tower)) as frames_part, OvRunner(OvModel(head)) as head_part:
        assert frames_part.input_names == ["pixels"] and head_part.input_names == [features, "frame_mask"]
        expected = full.infer({"pixels": pixels, "frame_mask": mask})
        flat = frames_part.infer({"pixels": pixels.reshape(1, n * t, *pixels.shape[2:])})[features]  # (1, N*T, D)
        got = head_part.infer({features: flat.reshape(n, t, -1), "frame_mask": mask})
        real = frames_part.infer({"pixels": pixels[mask > 0][None]})[features][0]  # the real frames only
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    np.testing.assert_allclose(real, flat[0][mask.reshape(-1) > 0], atol=1e-5)
    stamp = tower.stat().st_mtime_ns
    assert split_video(whole, entry["sha256"], OUTPUTS) == (tower, head, features)  # cached
    assert tower.stat().st_mtime_ns == stamp
    other = tmp_path / "other"  # the same .xml with other weights is split again
    other.mkdir()
    shutil.copy(whole, other / "video.xml")
    data = bytearray(whole.with_suffix(".bin").read_bytes())
    data[-1] ^= 1
    (other / "video.bin").write_bytes(bytes(data))
    assert split_video(other / "video.xml", entry["sha256"], OUTPUTS)[0].parent != tower.parent


def test_onnx_split_defers_to_frameskip(bundle, tmp_path, monkeypatch):
    from vlrt.runtime.frameskip import features_name, split_video_graph

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    b = Bundle.open(bundle)
    sha = sha256_file(b.graph_path("video"))
    tower, head, features = split_video(b.graph_path("video"), sha, OUTPUTS)
    assert (tower, head) == split_video_graph(b.graph_path("video"), sha, OUTPUTS) and features == features_name(tower)
    with pytest.raises(VlrtError, match="not an ONNX graph or OpenVINO IR"):
        split_video(b.path("vlrt.json"), sha, OUTPUTS)


def test_token_merged_graph_runs_on_openvino(bundle):
    """Token merging makes standard ONNX ops: OpenVINO runs the merged graph as ORT does."""
    built = build_engine(bundle, backend="openvino", precision="fp32", token_merge=1, gate=False)
    assert built.manifest["options"]["graph_passes"]["video"][0]["name"] == "token-merge"
    merged = built.engine_dir / built.manifest["graphs"]["video"]["file"]
    pixels, mask = frames(3)
    with OvRunner(OvModel(merged)) as got, OrtRunner(SessionFromOnnx(merged)) as ref:
        expected, actual = ref.infer({"pixels": pixels, "frame_mask": mask}), got.infer({"pixels": pixels, "frame_mask": mask})
    for name in OUTPUTS:
        real = np.linalg.norm(expected[name], axis=-1) > 0
        assert cosines(actual[name][real], expected[name][real]).min() >= 0.99999, name


def test_cli_build_embed_search(bundle, calib, int8, tmp_path):
    result, _ = int8
    res = vlrt("build", bundle, "--backend", "openvino", "--calib", calib, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # stdout holds the result only
    assert (out["key"], out["reused"], out["precision"]) == (result.key, True, "int8")
    res = vlrt("embed", bundle, calib, "-o", tmp_path / "idx", "--backend", "openvino", "--precision", "int8", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["embedded"] == 2 and (out["engine"]["backend"], out["engine"]["engine"]) == ("openvino", result.key)
    res = vlrt("search", tmp_path / "idx", "a moving square", "-k", 2, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)  # the query goes through the engine the videos were embedded with
    assert len(out["results"]) == 2 and (out["engine"]["backend"], out["engine"]["engine"]) == ("openvino", result.key)
