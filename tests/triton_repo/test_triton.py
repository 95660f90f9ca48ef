"""`vlrt triton`: the model repository written from the embedded bundle.

- every config.pbtxt parses with Triton's own ModelConfig schema (tritonclient's model_config_pb2);
- every ONNX model's input and output names, types and shapes match its config;
- the Python-backend models' `execute` runs in-process against a stand-in for
  `triton_python_backend_utils` (the real module exists only inside Triton's backend stub);
- a real tritonserver (nvidia-pytriton's build: the Python backend only) serves the tokenizer,
  video_preprocess and both ensembles, the encoders replaced by Python-backend models running the
  same ONNX files with onnxruntime under the generated configs; the ids, pixels and embeddings
  it returns are compared with vlrt's own.

pytriton 0.7.0's backend stub is built against numpy 1.x: under numpy 2 it hands the model
corrupted BYTES tensors. With numpy >= 2 here, the server test needs VLRT_TRITON_NUMPY1, a folder
holding numpy < 2 for this Python (`pip install --target DIR 'numpy<2'`), put first on the stub's path.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
import venv
from pathlib import Path

import numpy as np
import pytest
from video_assets import write_video

import vlrt
from vlrt.errors import VlrtError
from vlrt.runtime.bundle import Bundle, engine_key, sha256_file
from vlrt.triton import MODELS, write_repository
from vlrt.triton.repository import MARKER

ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}
TEXTS = ["a dog runs on the beach", "Ünïcode &amp; <b>html</b>  spacing", "word " * 40]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from vlrt.assets import unpack_default_bundle

    return unpack_default_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def repo(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(bundle, out)
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A 2 s clip (8 frames sampled) and a 5-frame one (5 sampled, 3 masked)."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "clip.mp4", frames=48, fps=24)
    write_video(root / "short.mkv", frames=5, fps=24, width=96, height=160)
    return [root / "clip.mp4", root / "short.mkv"]


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _schema():
    return pytest.importorskip("tritonclient.grpc.model_config_pb2",
                               reason="tritonclient is not installed (pip install 'tritonclient[grpc]'): "
                                      "no Triton ModelConfig schema to parse config.pbtxt with")


def _parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), _schema().ModelConfig())


def _parameters(text: str) -> dict[str, str]:
    """config.pbtxt `parameters` entries -> {key: string_value} (what the models read)."""
    found = re.findall(r'key: "([^"]+)"\s*value \{\s*string_value: "((?:[^"\\]|\\.)*)"', text)
    return {k: re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v) for k, v in found}


def _model_config(repo: Path, name: str) -> str:
    """The JSON Triton hands `initialize` as args["model_config"], as far as the models read it."""
    text = (repo / name / "config.pbtxt").read_text()
    return json.dumps({"name": name, "parameters": {k: {"string_value": v} for k, v in _parameters(text).items()}})


def test_repository_layout(bundle, repo):
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted(MODELS)
    assert all((repo / m / "config.pbtxt").is_file() and (repo / m / "1").is_dir() for m in MODELS)
    assert sha256_file(repo / "text_encoder" / "1" / "model.onnx") == sha256_file(bundle / "text.onnx")
    assert sha256_file(repo / "video_encoder" / "1" / "model.onnx") == sha256_file(bundle / "video.onnx")
    vocab = Bundle.open(bundle).manifest["tokenizer"]["file"]
    assert sha256_file(repo / "tokenizer" / "1" / vocab) == sha256_file(bundle / vocab)
    for name in ("tokenizer", "video_preprocess"):
        source = (repo / name / "1" / "model.py").read_text()
        assert "class TritonPythonModel" in source and "import triton_python_backend_utils as pb_utils" in source
    imports = re.findall(r"^(?:from|import) (\S+)", (repo / "tokenizer" / "1" / "model.py").read_text(), re.M)
    assert sorted(imports) == ["json", "numpy", "pathlib", "triton_python_backend_utils", "vlrt.runtime.tokenizer"]
    assert f"tritonserver --model-repository={repo}\n" in (repo / "README.md").read_text()
    summary = json.loads((repo / MARKER).read_text())
    assert summary["engine"] is None and summary["encoders"]["kind"] == "KIND_CPU"
    assert summary["command"] == f"tritonserver --model-repository={repo}"


def test_configs_follow_tritons_schema(bundle, repo):
    manifest = Bundle.open(bundle).manifest
    configs = {m: _parse(repo / m / "config.pbtxt") for m in MODELS}
    assert all(c.name == m for m, c in configs.items())
    assert configs["text_encoder"].platform == configs["video_encoder"].platform == "onnxruntime_onnx"
    assert configs["tokenizer"].backend == configs["video_preprocess"].backend == "python"
    assert configs["text_ensemble"].platform == configs["video_ensemble"].platform == "ensemble"
    kind = _schema().ModelInstanceGroup.Kind
    for name in ("text_encoder", "video_encoder", "tokenizer", "video_preprocess"):
        assert [g.kind for g in configs[name].instance_group] == [kind.KIND_CPU]
    assert configs["text_encoder"].max_batch_size == 64 and configs["video_encoder"].max_batch_size == 8
    batching = configs["video_encoder"].dynamic_batching
    assert list(batching.preferred_batch_size) == [8] and batching.max_queue_delay_microseconds == 50_000
    tok = configs["tokenizer"]
    assert tok.parameters["context_length"].string_value == str(manifest["max_words"])
    assert list(tok.output[0].dims) == [manifest["max_words"]]
    pre = configs["video_preprocess"]
    assert json.loads(pre.parameters["sampling"].string_value) == manifest["sampling"]
    assert json.loads(pre.parameters["preprocessing"].string_value) == manifest["preprocessing"]
    size = manifest["preprocessing"]["size"]
    assert [list(o.dims) for o in pre.output] == [[manifest["max_frames"], 3, size, size], [manifest["max_frames"]]]
    for name in ("text_ensemble", "video_ensemble"):
        _check_ensemble(configs[name], configs)


def _check_ensemble(ensemble, configs):
    """Each step's inputs exist when it runs and match its model's declared inputs (type, compatible
    dims); every ensemble output is some step's output, of that model's type and dims."""
    tensors = {i.name: (i.data_type, list(i.dims)) for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert ensemble.max_batch_size <= model.max_batch_size
        declared = {i.name: (i.data_type, list(i.dims)) for i in model.input}
        assert set(step.input_map) == set(declared)
        for key, value in step.input_map.items():
            dtype, dims = tensors[value]
            assert dtype == declared[key][0] and _compatible(dims, declared[key][1]), (step.model_name, key)
        produced = {o.name: (o.data_type, list(o.dims)) for o in model.output}
        assert set(step.output_map) <= set(produced)
        tensors.update({value: produced[key] for key, value in step.output_map.items()})
    for out in ensemble.output:
        assert out.name in tensors and tensors[out.name][0] == out.data_type
        assert _compatible(tensors[out.name][1], list(out.dims))


def _compatible(a, b) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def _onnx_io(path: Path):
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def shape(value):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    return ({v.name: (ONNX_TYPES[v.type.tensor_type.elem_type], shape(v)) for v in graph.input},
            {v.name: (ONNX_TYPES[v.type.tensor_type.elem_type], shape(v)) for v in graph.output})


def test_onnx_models_match_their_configs(repo):
    pytest.importorskip("onnx", reason="the onnx package (vlrt[build]) reads the graphs")
    schema = _schema()
    for name in ("text_encoder", "video_encoder"):
        config = _parse(repo / name / "config.pbtxt")
        inputs, outputs = _onnx_io(repo / name / "1" / "model.onnx")
        for declared, actual in ((config.input, inputs), (config.output, outputs)):
            assert {t.name for t in declared} == set(actual), name
            for t in declared:
                dtype, shape = actual[t.name]
                assert schema.DataType.Name(t.data_type) == dtype, (name, t.name)
                assert shape[0] == -1, f"{name} {t.name}: the batch axis must be dynamic"
                # a fixed axis of the graph must be the config's; a dynamic one may be fixed there
                # (the graphs' embedding axes are symbolic, the manifest's and the config's 128)
                assert len(t.dims) == len(shape) - 1, (name, t.name)
                assert all(m in (-1, c) for c, m in zip(t.dims, shape[1:])), (name, t.name, list(t.dims), shape)


def _pb_utils():
    """The real module where it can be imported (inside Triton's stub), else a stand-in with the
    same calls: Tensor(name, array).as_numpy(), get_input_tensor_by_name, InferenceResponse(
    output_tensors=, error=), TritonError(message)."""
    try:
        import triton_python_backend_utils

        return triton_python_backend_utils
    except ImportError:
        pass
    mod = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message):
            self._message = message

        def message(self):
            return self._message

    class InferenceRequest:
        def __init__(self, inputs):
            self._inputs = inputs

        def inputs(self):
            return self._inputs

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self._outputs, self._error = output_tensors, error

        def output_tensors(self):
            return self._outputs

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    mod.Tensor, mod.TritonError, mod.InferenceRequest, mod.InferenceResponse = (
        Tensor, TritonError, InferenceRequest, InferenceResponse)
    mod.get_input_tensor_by_name = lambda request, name: next((t for t in request.inputs() if t.name() == name), None)
    return mod


def _load_model(repo: Path, name: str, pb_utils, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location(f"vlrt_triton_{name}", repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": _model_config(repo, name), "model_instance_kind": "CPU",
                      "model_repository": str(repo / name), "model_version": "1", "model_name": name})
    return model


def _outputs(response) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def test_python_models_in_process(bundle, repo, videos, monkeypatch):
    from vlrt.runtime.pipeline import ClipLoader, prefix_mask
    from vlrt.runtime.tokenizer import ClipTokenizer

    pb = _pb_utils()
    manifest = Bundle.open(bundle).manifest
    tokenizer = _load_model(repo, "tokenizer", pb, monkeypatch)
    good = pb.InferenceRequest([pb.Tensor("text", np.array([[t.encode()] for t in TEXTS], dtype=object))])
    bad = pb.InferenceRequest([pb.Tensor("text", np.array([[b"\xff\xfe"]], dtype=object))])
    first, second = tokenizer.execute([good, bad])
    want = ClipTokenizer(bundle / manifest["tokenizer"]["file"])(TEXTS, context_length=manifest["max_words"])
    ids = _outputs(first)["input_ids"]
    assert ids.dtype == np.int64 and np.array_equal(ids, want)
    assert second.has_error() and "text 0 is not UTF-8" in second.error().message()

    pre = _load_model(repo, "video_preprocess", pb, monkeypatch)
    try:
        data = [[p.read_bytes()] for p in videos]
        ok = pb.InferenceRequest([pb.Tensor("video", np.array(data, dtype=object))])
        junk = pb.InferenceRequest([pb.Tensor("video", np.array([[b"not a video at all"]], dtype=object))])
        first, second = pre.execute([ok, junk])
    finally:
        pre.finalize()
    clips = [ClipLoader(manifest)(p) for p in videos]
    out = _outputs(first)
    assert np.array_equal(out["pixels"], np.stack([c.pixels for c in clips]))
    assert np.array_equal(out["frame_mask"], prefix_mask([8, 5], 8))
    message = second.error().message()
    assert second.has_error() and message.startswith("video 0: ") and "spool" not in message
    assert not Path(pre.spool).exists()


def _fake_engine(bundle: Path, backend: str, *, graphs: dict[str, dict], files: dict[str, bytes], **extra) -> str:
    """An engine folder as `vlrt build` writes one (engine.json keyed by its build inputs, hashed files)."""
    manifest = {"engine_version": 1, "backend": backend, "precision": extra.pop("precision", "fp16"),
                "options": extra.pop("options", {}), "source": {"manifest_sha256": Bundle.open(bundle).manifest_sha256},
                "versions": extra.pop("versions", {}), "machine": extra.pop("machine", {"arch": "x86_64"}), **extra}
    key = engine_key(manifest)
    root = bundle / "engines" / key
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    manifest["graphs"] = {g: {**entry, "sha256": sha256_file(root / entry["file"]),
                              "bytes": (root / entry["file"]).stat().st_size} for g, entry in graphs.items()}
    (root / "engine.json").write_text(json.dumps(manifest))
    return key


@pytest.fixture()
def engine_bundle(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def test_tensorrt_engine_uses_its_plans_and_profile(engine_bundle, tmp_path):
    from vlrt.runtime.backends.trt.profiles import profile_shapes, to_json

    manifest = Bundle.open(engine_bundle).manifest
    profiles = {"video": to_json(profile_shapes(manifest, "video", max_batch=4, opt_batch=2)),
                "text": to_json(profile_shapes(manifest, "text", max_batch=32, opt_batch=16))}
    key = _fake_engine(
        engine_bundle, "tensorrt", versions={"tensorrt": "10.8.0"},
        machine={"arch": "x86_64", "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}},
        options={"plugins": [{"path": "/opt/plugins/libvlrt_trt.so", "sha256": "0" * 64}]},
        graphs={g: {"file": f"{g}.plan", "tensorrt": {"tensorrt": "10.8.0", "profile": profiles[g]}}
                for g in profiles},
        files={"video.plan": b"video plan", "text.plan": b"text plan"})
    out = tmp_path / "repo"
    summary = write_repository(engine_bundle, out, engine=key)
    assert summary["engine"] == key and summary["encoders"] == {
        "platform": "tensorrt_plan", "kind": "KIND_GPU", "precision": "fp16", "backend": "tensorrt"}
    assert (out / "video_encoder" / "1" / "model.plan").read_bytes() == b"video plan"
    assert not list(out.glob("*/1/model.onnx"))
    readme = (out / "README.md").read_text()
    assert "TensorRT 10.8.0" in readme and "NVIDIA H100" in readme
    assert f"LD_PRELOAD=/opt/plugins/libvlrt_trt.so tritonserver --model-repository={out}" in readme
    text = (out / "text_encoder" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "kind: KIND_GPU" in text
    assert "max_batch_size: 32" in text and "preferred_batch_size: [ 16 ]" in text
    if not _importable("tritonclient.grpc.model_config_pb2"):
        return
    configs = {m: _parse(out / m / "config.pbtxt") for m in MODELS}
    words, frames = manifest["max_words"], manifest["max_frames"]
    # words is fixed in the text profile (min = max), frames is not; batch is Triton's
    assert [list(i.dims) for i in configs["text_encoder"].input] == [[words]]
    assert [list(o.dims) for o in configs["text_encoder"].output] == [[128], [words, 128]]
    assert [list(i.dims) for i in configs["video_encoder"].input] == [[-1, 3, 64, 64], [-1]]
    assert configs["video_encoder"].max_batch_size == configs["video_ensemble"].max_batch_size == 4
    assert configs["tokenizer"].max_batch_size == 32 and frames == 8
    for name in ("text_ensemble", "video_ensemble"):
        _check_ensemble(configs[name], configs)
    with pytest.raises(VlrtError, match=r"--max-batch 16: engine .*'s video plan takes batches up to 4"):
        write_repository(engine_bundle, tmp_path / "big", engine=key, max_batch=16)


def test_onnxruntime_engine_and_gpu(engine_bundle, tmp_path):
    key = _fake_engine(engine_bundle, "ort-cpu", precision="int8", options={"mode": "dynamic"},
                       graphs={"video": {"file": "video.onnx"}, "text": {"file": "text.onnx"}},
                       files={"video.onnx": b"int8 video graph", "text.onnx": b"int8 text graph"})
    summary = write_repository(engine_bundle, tmp_path / "repo", engine=key, gpu=True, max_batch=4)
    assert summary["encoders"] == {"platform": "onnxruntime_onnx", "kind": "KIND_GPU", "precision": "int8",
                                   "backend": "ort-cpu"}
    assert (tmp_path / "repo" / "text_encoder" / "1" / "model.onnx").read_bytes() == b"int8 text graph"
    assert all(m["max_batch_size"] == 4 for m in summary["models"].values())
    pre = (tmp_path / "repo" / "video_preprocess" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in pre  # Python-backend models stay on the CPU


def test_refusals(bundle, engine_bundle, repo, tmp_path):
    with pytest.raises(VlrtError, match=r"no engine 'nope' under engines/ \(built engines: none"):
        write_repository(bundle, tmp_path / "a", engine="nope")
    with pytest.raises(VlrtError, match=r"already exists; pass --overwrite"):
        write_repository(bundle, repo)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(VlrtError, match=r"is not a repository written by `vlrt triton`"):
        write_repository(bundle, other, overwrite=True)
    assert (other / "keep.jpg").exists()
    key = _fake_engine(engine_bundle, "openvino", precision="int8", graphs={"video": {"file": "video.xml"}},
                       files={"video.xml": b"<xml/>"})
    with pytest.raises(VlrtError, match=r"is a openvino engine; `vlrt triton` writes onnxruntime"):
        write_repository(engine_bundle, tmp_path / "b", engine=key)
    assert not list(tmp_path.glob(".*partial"))
    multi = tmp_path / "multi"
    shutil.copytree(bundle, multi)
    manifest = json.loads((multi / "vlrt.json").read_text())
    (multi / "vlrt.json").write_text(json.dumps({**manifest, "family": "xclip", "embedding": "multi-vector"}))
    with pytest.raises(VlrtError, match=r"embeds 'multi-vector' features without a scorer graph"):
        write_repository(multi, tmp_path / "c")


def test_a_multi_grained_bundle_gets_its_scorer(tmp_path):
    """The embedded X-CLIP-style sibling: a seventh model, its fp32 scorer graph, unbatched by Triton."""
    import vlrt.assets

    bundle = vlrt.assets.unpack_default_bundle(tmp_path / "xclip", "xclip")
    summary = write_repository(bundle, tmp_path / "repo")
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted([*MODELS, "scorer"])
    assert summary["models"]["scorer"] == {"platform": "onnxruntime_onnx", "max_batch_size": 0}
    spec = json.loads((bundle / "vlrt.json").read_text())["scorer"]
    assert (repo / "scorer" / "1" / "model.onnx").read_bytes() == (bundle / spec["file"]).read_bytes()
    text = (repo / "scorer" / "config.pbtxt").read_text()
    names = [*spec["text_inputs"], *spec["video_inputs"]]
    assert re.findall(r'name: "(\w+)"', text) == ["scorer", *names, spec["output"]]
    assert "`scorer`" in (repo / "README.md").read_text()
    if _importable("onnx"):
        inputs, outputs = _onnx_io(repo / "scorer" / "1" / "model.onnx")
        assert list(inputs) == names and list(outputs) == [spec["output"]]
    if _importable("tritonclient.grpc.model_config_pb2") and _importable("onnx"):
        config = _parse(repo / "scorer" / "config.pbtxt")
        for declared, actual in ((config.input, inputs), (config.output, outputs)):
            for t in declared:
                assert _compatible(actual[t.name][1], list(t.dims)), (t.name, list(t.dims), actual[t.name][1])


def _cli(*argv: str) -> tuple[int, str]:
    """The subcommand through argparse as `vlrt` runs it (its parser, its error handling)."""
    from vlrt.cli import triton
    from vlrt.cli.common import Parser, fail

    parser = Parser(prog="vlrt")
    triton.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["triton", *argv])
    try:
        return args.func(args), ""
    except VlrtError as exc:
        return fail(str(exc), json_mode=False), str(exc)


def test_cli(bundle, tmp_path, capsys):
    out = tmp_path / "repo"
    assert _cli(str(bundle), "-o", str(out), "--max-batch", "2") == (0, "")
    printed = capsys.readouterr().out
    assert f"start it with: tritonserver --model-repository={out}" in printed
    assert "text_encoder      onnxruntime_onnx  max batch 2" in printed
    code, message = _cli(str(bundle), "-o", str(out))
    assert code == 1 and message.endswith("already exists; pass --overwrite to replace it")
    assert _cli(str(bundle), "-o", str(out), "--overwrite", "--json")[0] == 0
    assert json.loads(capsys.readouterr().out)["models"]["video_ensemble"]["max_batch_size"] == 8
    code, message = _cli(str(bundle), "-o", str(tmp_path / "x"), "--engine", "0123abcd")
    assert code == 1 and "no engine '0123abcd'" in message
    with pytest.raises(SystemExit):
        _cli(str(bundle), "-o", str(out), "--max-batch", "0")


# A Python-backend stand-in for the onnxruntime backend: runs the model's own model.onnx with the
# inputs and outputs its generated config.pbtxt declares.
STANDIN_ENCODER = '''\
import json
from pathlib import Path

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.session = onnxruntime.InferenceSession(str(Path(__file__).parent / "model.onnx"),
                                                    providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            values = self.session.run(self.outputs, feeds)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return responses
'''


def _tritonserver() -> dict:
    """Where nvidia-pytriton keeps tritonserver, its Python backend and the backend stub for this
    Python, and what the stub needs; skips, saying what is missing."""
    if not _importable("tritonclient.http"):
        pytest.skip("tritonclient is not installed (pip install 'tritonclient[http]'): no client to send requests")
    try:  # found, not imported: pytriton's own imports need packages installed here with --no-deps
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton==0.7.0): no tritonserver")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = {"server": root / "bin" / "tritonserver", "backend": root / "backends" / "python",
             "stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
             "libs": root.parent.parent / "nvidia_pytriton.libs"}
    missing = [str(p) for p in found.values() if not p.exists()]
    if missing:
        pytest.skip(f"pytriton's tritonserver files are missing (none for Python {version}?): {', '.join(missing)}")
    ldd = subprocess.run(["ldd", str(found["stub"])], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": str(found["libs"])})
    unresolved = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if unresolved:
        pytest.skip(f"the Python {version} backend stub needs {', '.join(unresolved)}, not found on this machine")
    found["numpy1"] = None
    if int(np.__version__.split(".")[0]) >= 2:
        folder = os.environ.get("VLRT_TRITON_NUMPY1")
        ok = folder and [p for p in Path(folder).glob("numpy-*.dist-info") if p.name.split("-")[1].startswith("1.")]
        if not ok:
            pytest.skip(f"pytriton's backend stub is built against numpy 1.x and corrupts BYTES tensors under "
                        f"numpy {np.__version__}: set VLRT_TRITON_NUMPY1 to a folder holding numpy<2 for Python "
                        f"{version} (pip install --target DIR 'numpy<2')")
        found["numpy1"] = Path(folder)
    return found


def _stub_python(tmp: Path, numpy1: Path | None) -> Path:
    """A venv for the backend stub: the stub runs the `python3` first on PATH's environment. It sees
    numpy<2 first (when given), then this interpreter's site-packages and this checkout's vlrt."""
    env = tmp / "stub-python"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    site_dir = next((env / "lib").glob("python3*/site-packages"))
    lines = [str(numpy1)] if numpy1 else []
    lines.append(str(Path(vlrt.__file__).resolve().parents[1]))
    lines += [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (site_dir / "vlrt_triton_test.pth").write_text("\n".join(lines) + "\n")
    return env / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    """Until tritonserver says its HTTP service started (it loads the models first), read from its
    output as it comes (copied to `log`); then its readiness endpoint must answer 200."""
    started = threading.Event()

    def pump() -> None:
        with open(log, "wb") as fh:
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                if b"Started HTTPService" in line:
                    started.set()
        started.set()  # the output ended: the server exited

    threading.Thread(target=pump, daemon=True).start()
    if not started.wait(timeout):
        pytest.fail(f"tritonserver not started after {timeout:.0f} s:\n{log.read_text()[-4000:]}")
    # it logs the start a moment before its socket accepts: retry until then, each pause being a
    # wait for the process to exit
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10) as r:
                assert r.status == 200
                return
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    """tritonserver on a copy of the repository whose encoders are the STANDIN_ENCODER (the only
    change: `platform: "onnxruntime_onnx"` -> `backend: "python"`); yields its client and URL."""
    found = _tritonserver()
    import tritonclient.http as httpclient

    tmp = tmp_path_factory.mktemp("tritonserver")
    served = tmp / "repo"
    shutil.copytree(repo, served)
    for name in ("text_encoder", "video_encoder"):
        config = served / name / "config.pbtxt"
        config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
        (served / name / "1" / "model.py").write_text(STANDIN_ENCODER)
    backends = tmp / "backends" / "python"
    backends.mkdir(parents=True)
    for src in (found["backend"] / "libtriton_python.so", found["backend"] / "triton_python_backend_utils.py",
                found["stub"]):
        shutil.copy2(src, backends / src.name)
    env = {**os.environ, "PATH": f"{_stub_python(tmp, found['numpy1'])}{os.pathsep}{os.environ.get('PATH', '')}",
           "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(found["libs"]), os.environ.get("LD_LIBRARY_PATH")]))}
    port, log = _free_port(), tmp / "tritonserver.log"
    cmd = [str(found["server"]), f"--model-repository={served}", f"--backend-directory={backends.parent}",
           f"--http-port={port}", "--allow-grpc=false", "--allow-metrics=false", "--exit-timeout-secs=5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    client = None
    try:
        _wait_ready(proc, port, log)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield types.SimpleNamespace(client=client, url=f"http://127.0.0.1:{port}", log=log)
    finally:
        if client is not None:
            client.close()  # an open keep-alive connection holds the server's shutdown for its exit timeout
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _infer(client, model: str, name: str, rows: list[bytes], outputs: list[str]) -> dict[str, np.ndarray]:
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput(name, [len(rows), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[r] for r in rows], dtype=object), binary_data=True)
    result = client.infer(model, [tensor], outputs=[httpclient.InferRequestedOutput(o) for o in outputs])
    return {o: result.as_numpy(o) for o in outputs}


def test_tritonserver_runs_the_python_models(server, bundle, videos):
    from vlrt.runtime.pipeline import ClipLoader
    from vlrt.runtime.tokenizer import ClipTokenizer

    client = server.client
    manifest = Bundle.open(bundle).manifest
    assert all(client.is_model_ready(m) for m in MODELS)
    ids = _infer(client, "tokenizer", "text", [t.encode() for t in TEXTS], ["input_ids"])["input_ids"]
    want = ClipTokenizer(bundle / manifest["tokenizer"]["file"])(TEXTS, context_length=manifest["max_words"])
    assert ids.dtype == np.int64 and np.array_equal(ids, want)

    out = _infer(client, "video_preprocess", "video", [p.read_bytes() for p in videos], ["pixels", "frame_mask"])
    clips = [ClipLoader(manifest)(p) for p in videos]
    assert np.array_equal(out["pixels"], np.stack([c.pixels for c in clips]))
    assert out["frame_mask"].tolist() == [[1.0] * 8, [1.0] * 5 + [0.0] * 3]

    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match=r"video 0: cannot open as a video"):
        _infer(client, "video_preprocess", "video", [b"not a video at all"], ["pixels"])


def test_tritonserver_runs_the_ensembles(server, bundle, repo, videos):
    from vlrt.runtime.pipeline import ClipLoader, stack_clips

    client = server.client
    rt = vlrt.Runtime.load(bundle, pack=False)
    text = _infer(client, "text_ensemble", "text", [t.encode() for t in TEXTS], ["text_embeds", "token_embeds"])
    np.testing.assert_allclose(text["text_embeds"], rt.encode_text(TEXTS), atol=1e-5)
    assert text["token_embeds"].shape == (len(TEXTS), rt.bundle.max_words, rt.embed_dim)

    # the README's JSON request, as written there
    body = re.search(r"/v2/models/text_ensemble/infer -d '(.+)'", (repo / "README.md").read_text()).group(1)
    request = urllib.request.Request(f"{server.url}/v2/models/text_ensemble/infer", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        (answer,) = json.loads(r.read())["outputs"]
    text = json.loads(body)["inputs"][0]["data"]
    assert answer["name"] == "text_embeds" and answer["shape"] == [1, rt.embed_dim]
    np.testing.assert_allclose(np.array(answer["data"], np.float32), rt.encode_text(text)[0], atol=1e-5)

    names = ["video_embeds", "frame_embeds", "frame_mask"]
    video = _infer(client, "video_ensemble", "video", [p.read_bytes() for p in videos], names)
    pixels, mask = stack_clips([ClipLoader(rt.bundle.manifest)(p) for p in videos])
    embeds, frames = rt.encode_frames(pixels, mask, return_frames=True)
    np.testing.assert_allclose(video["video_embeds"], embeds, atol=1e-5)
    np.testing.assert_allclose(video["frame_embeds"], frames, atol=1e-5)
    assert np.array_equal(video["frame_mask"], mask)

