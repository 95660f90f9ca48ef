"""The TensorRT backend's own logic, with `tensorrt` and `cuda.bindings.runtime` replaced by
stand-ins that keep the real APIs' rules (docs/tensorrt.md):

- the plugin registry refuses a library whose plugins are already registered
  (`IPluginRegistry.load_library` returns None);
- `IBuilderConfig.set_timing_cache` returns False for a cache TensorRT rejects, and
  `create_timing_cache` may raise on bytes it cannot parse;
- `cudaMalloc` / `cudaMallocHost` return (error, pointer) and can fail; every pointer must be
  freed with its own free (`cudaFree` / `cudaFreeHost`).

"Device" memory here is host memory, so the runner's copies and a toy engine (y = 2x) really run.
These tests prove the backend's handling of those rules, not TensorRT's behaviour.
"""
import ctypes
import json
import logging
import sys
import threading
import types

import numpy as np
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime.backends.trt import builder, plugins
from vlrt.runtime.backends.trt import inspect as trt_inspect
from vlrt.runtime.backends.trt.runner import PlanFromFile, TrtRunner

ENUMS = {
    "NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"], "BuilderFlag": ["TF32"], "MemoryPoolType": ["WORKSPACE"],
    "ProfilingVerbosity": ["LAYER_NAMES_ONLY", "DETAILED"], "LayerType": ["MATRIX_MULTIPLY", "SOFTMAX", "DEQUANTIZE"],
    "DataType": ["FLOAT", "HALF"], "TensorIOMode": ["INPUT", "OUTPUT"], "LayerInformationFormat": ["ONELINE", "JSON"],
}

# What the engine inspector returns for a plan built with ProfilingVerbosity.DETAILED, written by
# hand in the shape TensorRT 10 prints (Myelin kernels named after the ONNX nodes they came from).
LN = {"Name": "__myl_MeanSubMulMeanAddSqrtDivMulAdd_myl0_0", "LayerType": "kgen",
      "TacticName": "__myl_MeanSubMulMeanAddSqrtDivMulAdd_0x1", "StreamId": 0,
      "Metadata": "[ONNX Layer: /text/transformer/resblocks.0/ln_1/LayerNormalization]",
      "Inputs": [{"Name": "x", "Dimensions": [64, 32, 512], "Format/Datatype": "Float"}],
      "Outputs": [{"Name": "y", "Dimensions": [64, 32, 512], "Format/Datatype": "Half"}]}
QKV = {"Name": "/text/transformer/resblocks.0/attn/MatMul_myl0_1", "LayerType": "gemm",
       "TacticName": "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64", "StreamId": 0,
       "Metadata": "[ONNX Layer: /text/transformer/resblocks.0/attn/MatMul]"}
MHA = {"Name": "_gemm_mha_v2_myl0_2", "LayerType": "kgen", "TacticName": "_gemm_mha_v2_0x5a", "StreamId": 0,
       "Metadata": "[ONNX Layer: /text/transformer/resblocks.0/attn/MatMul_1]\x1e"
                   "[ONNX Layer: /text/transformer/resblocks.0/attn/Softmax]\x1e"
                   "[ONNX Layer: /text/transformer/resblocks.0/attn/MatMul_2]"}
SOFTMAX = {"Name": "__myl_CastMaxSubExpSumDivCast_myl0_3", "LayerType": "kgen",
           "TacticName": "__myl_CastMaxSubExpSumDivCast_0x7", "StreamId": 0,
           "Metadata": "[ONNX Layer: /text/transformer/resblocks.1/attn/Softmax]"}
AV = {"Name": "/text/transformer/resblocks.1/attn/MatMul_2_myl0_4", "LayerType": "gemm",
      "TacticName": "sm90_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize64x64x8", "StreamId": 0,
      "Metadata": "[ONNX Layer: /text/transformer/resblocks.1/attn/MatMul_2]"}
FUSED = {"Layers": [LN, QKV, MHA, dict(MHA, Name="_gemm_mha_v2_myl0_5")], "Bindings": ["input_ids", "text_embedding"]}
NOT_FUSED = {"Layers": [LN, QKV, SOFTMAX, AV], "Bindings": ["input_ids", "text_embedding"]}
NAMES_ONLY = {"Layers": ["{ForeignNode[/text/Cast.../text/transformer/resblocks.1/attn/Softmax...]}",
                         "Reformatting CopyNode for Output Tensor 0"], "Bindings": ["input_ids", "text_embedding"]}


# --- stand-ins ---------------------------------------------------------------------------------

class Registry:
    """IPluginRegistry: refuses a second load of a library whose plugins it already holds."""

    def __init__(self):
        self.loaded, self.calls = set(), []
        self.require_lock = False  # set by tests that check the cache's lock is held while loading

    def load_library(self, path):
        self.calls.append(path)
        assert not self.require_lock or plugins._LOCK.locked(), "a library is loaded outside the cache's lock"
        if path in self.loaded or "broken" in path:
            return None
        self.loaded.add(path)
        return object()


class Config:
    """IBuilderConfig's timing-cache rules: a cache serialized by this 'TensorRT' starts with GOOD;
    other bytes make a cache that set_timing_cache rejects; b"RAISE" makes the bindings raise."""

    def __init__(self):
        self.profiling_verbosity, self.progress_monitor, self.cache, self.profiles = None, None, None, []

    def clear_flag(self, flag):
        pass

    def set_memory_pool_limit(self, pool, size):
        pass

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, blob):
        if bytes(blob) == b"RAISE":
            raise RuntimeError("timing cache deserialization failed")
        return types.SimpleNamespace(blob=bytes(blob), serialize=lambda: b"GOOD timed")

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache.blob and not cache.blob.startswith(b"GOOD"):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Network:
    def __init__(self, trt):
        self.num_inputs, self.num_layers = 1, 2
        half = types.SimpleNamespace(dtype=trt.DataType.HALF)
        self._layers = [types.SimpleNamespace(type=t, num_outputs=1, get_output=lambda j: half)
                        for t in (trt.LayerType.MATRIX_MULTIPLY, trt.LayerType.SOFTMAX)]

    def get_input(self, i):
        return types.SimpleNamespace(name="input_ids")

    def get_layer(self, i):
        return self._layers[i]


class Engine:
    """ICudaEngine of a toy plan: y = 2 * x, x of shape (batch, 4), batch 1..3; and its inspector."""

    def __init__(self, trt, info):
        self.trt, self.info, self.num_io_tensors, self.contexts = trt, info, 2, 0

    def get_tensor_name(self, i):
        return ["x", "y"][i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == "x" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.trt.DataType.FLOAT

    def get_tensor_profile_shape(self, name, profile):
        return (1, 4), (2, 4), (3, 4)

    def create_execution_context(self):
        self.contexts += 1
        return Context()

    def create_engine_inspector(self):
        info = self.info
        return types.SimpleNamespace(get_engine_information=lambda fmt: json.dumps(info))


class Context:
    def __init__(self):
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shapes["x"]))
        x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["x"]))
        np.ctypeslib.as_array((ctypes.c_float * n).from_address(self.addresses["y"]))[:] = 2 * x
        return True


def fake_tensorrt(info=FUSED):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.3.9"
    for enum, members in ENUMS.items():
        setattr(trt, enum, types.SimpleNamespace(**{m: i for i, m in enumerate(members)}))
    trt.ILogger = type("ILogger", (), {"Severity": types.SimpleNamespace(
        INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4), "__init__": lambda self: None})
    trt.IProgressMonitor = type("IProgressMonitor", (), {"__init__": lambda self: None})
    trt.registry, trt.builtin_inits = Registry(), []
    trt.init_libnvinfer_plugins = lambda logger, namespace: trt.builtin_inits.append(namespace) or True
    trt.get_plugin_registry = lambda: trt.registry
    trt.nptype = lambda dtype: {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dtype]
    trt.Builder = lambda logger: types.SimpleNamespace(
        create_network=lambda flags: Network(trt), create_builder_config=Config,
        create_optimization_profile=lambda: types.SimpleNamespace(set_shape=lambda *a: None),
        build_serialized_network=lambda network, config: b"PLAN")
    trt.OnnxParser = lambda network, logger: types.SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: Engine(trt, info))
    return trt


class Cudart:
    """cuda.bindings.runtime: (error, value) results, real memory, and failures on demand
    (`fail={"cudaMallocHost": 2}`: the second cudaMallocHost fails)."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0, cudaErrorMemoryAllocation=2)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, fail=None):
        self.fail, self.calls = dict(fail or {}), {}
        self.device, self.host, self.streams, self.memory = set(), set(), set(), {}
        self.copies = []

    def _call(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.fail.get(name) == self.calls[name]

    def _alloc(self, name, size, live):
        if self._call(name):
            return 2, 0
        buf = ctypes.create_string_buffer(size)
        self.memory[ctypes.addressof(buf)] = buf
        live.add(ctypes.addressof(buf))
        return 0, ctypes.addressof(buf)

    def cudaMalloc(self, size):
        return self._alloc("cudaMalloc", size, self.device)

    def cudaMallocHost(self, size):
        return self._alloc("cudaMallocHost", size, self.host)

    def cudaFree(self, ptr):
        self.device.remove(ptr)
        return (0,)

    def cudaFreeHost(self, ptr):
        self.host.remove(ptr)
        return (0,)

    def cudaStreamCreate(self):
        if self._call("cudaStreamCreate"):
            return 2, None
        stream = 100 + self.calls["cudaStreamCreate"]
        self.streams.add(stream)
        return 0, stream

    def cudaStreamDestroy(self, stream):
        self.streams.remove(stream)
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        self.copies.append((kind, src in self.host or dst in self.host))
        ctypes.memmove(dst, src, size)
        return (0,)

    def cudaGetErrorName(self, err):
        return 0, b"cudaErrorMemoryAllocation"


@pytest.fixture
def trt(monkeypatch):
    """A fresh stand-in TensorRT, and a process whose plugin cache is empty."""
    module = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_BUILTIN", [])
    return module


@pytest.fixture
def cudart(monkeypatch):
    module = types.ModuleType("cuda.bindings.runtime")
    impl = Cudart()
    for name in dir(impl):
        if name.startswith("cuda"):
            setattr(module, name, getattr(impl, name))
    module.impl = impl
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", module)
    return impl


def _build(tmp_path, name="text", **kwargs):
    onnx = tmp_path / f"{name}.onnx"
    onnx.write_bytes(b"onnx")
    profile = {"input_ids": ((1, 32), (64, 32), (64, 32))}
    return builder.build_plan(onnx, tmp_path / f"{name}.plan", profiles=profile, precision="fp16", **kwargs)


# --- plugin libraries: once per process -------------------------------------------------------

def test_plugin_library_is_loaded_once_for_every_graph_and_runner(trt, cudart, tmp_path):
    lib = tmp_path / "libplugins.so"
    lib.write_bytes(b"ELF")
    assert trt.registry.load_library("/elsewhere/libx.so") and trt.registry.load_library("/elsewhere/libx.so") is None
    for graph in ("video", "text"):  # `vlrt build --plugin`: one load for both graphs
        _build(tmp_path, graph, plugin_libraries=[lib])
    (tmp_path / "link.so").symlink_to(lib)  # another spelling of the same library
    for spelling in (lib, tmp_path / "link.so"):  # `Runtime.load`: a runner per graph, each loading the plugins
        PlanFromFile(tmp_path / "text.plan", plugins=[{"path": str(spelling)}])()
    assert [c for c in trt.registry.calls if "libplugins" in c] == [str(lib.resolve())]
    assert trt.builtin_inits == [""]  # NVIDIA's bundled plugins registered once too
    assert sorted(plugins._LOADED) == [str(lib.resolve())]


def test_concurrent_runners_load_a_plugin_library_once(trt, tmp_path):
    lib = tmp_path / "libplugins.so"
    lib.write_bytes(b"ELF")
    errors = []

    def load():
        try:
            plugins.load_plugins(trt, None, [lib])
        except VlrtError as exc:
            errors.append(exc)

    trt.registry.require_lock = True
    start = threading.Barrier(8)
    threads = [threading.Thread(target=lambda: (start.wait(), load())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and trt.registry.calls == [str(lib.resolve())]


def test_a_plugin_library_that_fails_to_load_is_an_error_and_not_cached(trt, tmp_path):
    lib = tmp_path / "libbroken.so"
    lib.write_bytes(b"ELF")
    for _ in range(2):
        with pytest.raises(VlrtError, match=r"libbroken.so: TensorRT could not load it"):
            plugins.load_plugins(trt, None, [lib])
    assert len(trt.registry.calls) == 2 and plugins._LOADED == {}
    with pytest.raises(VlrtError, match=r"no such file"):
        plugins.load_plugins(trt, None, [tmp_path / "missing.so"])


# --- the timing cache -------------------------------------------------------------------------

@pytest.mark.parametrize("saved, reused, discarded", [
    (None, False, None),
    (b"GOOD earlier build", True, None),
    (b"\x00garbage", False, "TensorRT refused it"),
    (b"RAISE", False, "RuntimeError: timing cache deserialization failed"),
])
def test_a_bad_timing_cache_is_replaced_not_fatal(trt, tmp_path, caplog, saved, reused, discarded):
    cache = tmp_path / "engines" / ".timing-cache" / "t.cache"
    if saved is not None:
        cache.parent.mkdir(parents=True)
        cache.write_bytes(saved)
    with caplog.at_level(logging.WARNING, logger=builder.__name__):
        info = _build(tmp_path, timing_cache=cache)
    assert info["timing_cache"]["reused"] is reused
    assert (info["timing_cache"]["discarded"] is None) == (discarded is None)
    if discarded:
        assert discarded in info["timing_cache"]["discarded"]
        assert f"timing cache {cache} not used" in caplog.text
    assert cache.read_bytes() == b"GOOD timed"  # written after the build, over the bad one
    assert (tmp_path / "text.plan").read_bytes() == b"PLAN"


# --- the runner: locked start-up, no leaks, pinned host buffers --------------------------------

def _loader(trt):
    engine = Engine(trt, FUSED)
    loader = lambda: (object(), engine)  # noqa: E731
    loader.engine = engine
    return loader


def test_runner_runs_through_pinned_buffers_and_frees_them(trt, cudart):
    x = np.arange(20, dtype=np.float64).reshape(5, 4)  # 5 > max batch 3: two chunks; float64 cast to the engine's fp32
    with TrtRunner(_loader(trt)) as runner:
        y = runner.infer({"x": x})["y"]
        assert len(cudart.device) == 2 and len(cudart.host) == 2  # x and y, on both sides
    assert y.dtype == np.float32 and np.array_equal(y, 2 * x)
    assert cudart.copies and all(pinned for _, pinned in cudart.copies)  # every copy from or to pinned memory
    assert cudart.device == set() and cudart.host == set() and cudart.streams == set()


@pytest.mark.parametrize("fail, message", [
    ({"cudaMallocHost": 2}, r"CUDA error in cudaMallocHost of 48 bytes for y: cudaErrorMemoryAllocation"),
    ({"cudaMalloc": 2}, r"CUDA error in cudaMalloc of 48 bytes for y"),
    ({"cudaStreamCreate": 1}, r"CUDA error in cudaStreamCreate"),
])
def test_runner_start_up_failure_frees_what_it_allocated(trt, cudart, fail, message):
    cudart.fail = fail
    runner = TrtRunner(_loader(trt))
    with pytest.raises(VlrtError, match=message):
        runner.activate()
    assert cudart.device == set() and cudart.host == set() and cudart.streams == set()
    cudart.fail = {}  # the failure is not remembered: the next call starts it
    assert np.array_equal(runner.infer({"x": np.ones((1, 4), np.float32)})["y"], np.full((1, 4), 2, np.float32))
    runner.close()
    assert cudart.device == set() and cudart.host == set()


def test_runner_start_up_errors_become_vlrt_errors(trt, cudart, tmp_path):
    def broken():
        raise RuntimeError("pybind11::error_already_set")

    broken.path = tmp_path / "video.plan"
    with pytest.raises(VlrtError, match=r"video.plan: the TensorRT runner failed to start: RuntimeError"):
        TrtRunner(broken).activate()
    no_context = _loader(trt)
    no_context.engine.create_execution_context = lambda: None
    with pytest.raises(VlrtError, match=r"could not create an execution context"):
        TrtRunner(no_context).activate()
    assert cudart.streams == set() and cudart.device == set()


def test_concurrent_first_calls_start_the_runner_once(trt, cudart):
    loads, locked = [], []
    engine = Engine(trt, FUSED)

    def loader():
        loads.append(1)
        locked.append(runner._lock.locked())  # the start-up runs under the runner's lock
        return object(), engine

    runner = TrtRunner(loader)
    out = []
    start = threading.Barrier(4)

    def first_call():
        start.wait()
        out.append(runner.infer({"x": np.ones((2, 4))}))

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and locked == [True] and engine.contexts == 1 and len(out) == 4
    assert len(cudart.device) == 2 and len(cudart.host) == 2  # one set of buffers
    runner.close()
    runner.close()  # closing twice is harmless
    assert cudart.device == set() and cudart.host == set()


# --- attention fusion, from the engine inspector -------------------------------------------------

def test_attention_report_parses_the_engine_inspectors_json():
    fused = trt_inspect.attention_report(FUSED, softmax_in_network=1)
    assert fused["verdict"] == "fused" and fused["verbosity"] == "detailed"
    assert (fused["fused_attention_layers"], fused["unfused_softmax_layers"], fused["other_gemm_layers"]) == (2, 0, 1)
    assert fused["examples"]["fused"] == ["_gemm_mha_v2_myl0_2", "_gemm_mha_v2_myl0_5"]
    unfused = trt_inspect.attention_report(NOT_FUSED)
    assert unfused["verdict"] == "not fused" and unfused["examples"]["softmax"] == [SOFTMAX["Name"]]
    assert unfused["other_gemm_layers"] == 2  # the MatMuls left around the Softmax
    partial = trt_inspect.attention_report({"Layers": [MHA, SOFTMAX]})
    assert partial["verdict"] == "partial"
    names = trt_inspect.attention_report(NAMES_ONLY)
    assert (names["verdict"], names["verbosity"]) == ("unknown", "layer_names_only")
    assert trt_inspect.attention_report({"Layers": ["_gemm_mha_v2_myl0_2"]})["verdict"] == "fused"
    assert trt_inspect.attention_report({})["verbosity"] == "none"
    with pytest.raises(VlrtError, match=r"'Layers' is a dict"):
        trt_inspect.attention_report({"Layers": {}})


def test_engine_information_refuses_what_is_not_json(trt):
    engine = types.SimpleNamespace(create_engine_inspector=lambda: types.SimpleNamespace(
        get_engine_information=lambda fmt: "Layers: ..."))
    with pytest.raises(VlrtError, match=r"not JSON"):
        trt_inspect.engine_information(trt, engine)


def test_build_records_attention_and_the_inspect_entry_point_prints_it(trt, cudart, tmp_path, capsys):
    info = _build(tmp_path)
    assert info["attention"]["verdict"] == "fused" and info["attention"]["softmax_in_network"] == 1
    assert info["layers"]["softmax"] == 1
    assert trt_inspect.main([str(tmp_path / "text.plan")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plan"] == str(tmp_path / "text.plan") and report["verdict"] == "fused"
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: None)
    assert _build(tmp_path)["attention"]["verdict"] == "unknown"  # recorded, the build not failed
    assert trt_inspect.main([str(tmp_path / "text.plan")]) == 1
    assert "cannot deserialize this plan" in capsys.readouterr().err
