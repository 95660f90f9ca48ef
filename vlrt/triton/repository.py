"""A Triton model repository from a bundle: six models, each a folder with config.pbtxt and 1/.

    text_encoder       the text graph: input_ids -> the text graph's outputs
    video_encoder      the video graph: pixels + frame_mask -> the video graph's outputs
    tokenizer          Python backend: text (BYTES) -> input_ids, vlrt's CLIP tokenizer
    video_preprocess   Python backend: a video file (BYTES) -> pixels + frame_mask, vlrt's decode,
                       sampling rule and preprocessing
    text_ensemble      tokenizer -> text_encoder: text in, embeddings out
    video_ensemble     video_preprocess -> video_encoder: a file in, embeddings (and frame_mask) out
    scorer             a multi-grained bundle's (X-CLIP, DRL) scorer graph: caption features x
                       video features -> scores, on the onnxruntime backend (max_batch_size 0:
                       its captions and videos are two independent batch axes)

The encoders are the bundle's fp32 ONNX graphs (`platform: "onnxruntime_onnx"`), or a built
engine's graphs: an onnxruntime engine's ONNX graphs, or a TensorRT engine's plans
(`platform: "tensorrt_plan"`, always on the GPU). Tensor names, data types and dims come from
the manifest's graph specs, batch axis removed (Triton adds it: `max_batch_size`), dynamic axes
as -1; a TensorRT plan's dims are its recorded optimization profile's (an axis whose min equals
its max is fixed), and its max_batch_size is at most the profile's largest batch. Every output
of a vlrt graph is a float32 embedding (fp16 engines keep float32 inputs and outputs).

The Python-backend models' settings (context length, vocabulary file, sampling rule,
preprocessing) are written into their config.pbtxt `parameters` from the manifest, and the
vocabulary file is copied beside the tokenizer's model.py, so the repository does not refer to
the bundle. The folder also holds README.md (how to start it, which backend each model needs)
and vlrt-triton.json (what was written, from which bundle and engine); `--overwrite` replaces
only a folder holding that file.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlrt.errors import VlrtError
from vlrt.runtime.bundle import ENGINE_MANIFEST, ENGINE_VERSION, ENGINES, Bundle, Engine
from vlrt.triton.models import SOURCES

MARKER = "vlrt-triton.json"
MODELS = ("text_encoder", "video_encoder", "tokenizer", "video_preprocess", "text_ensemble", "video_ensemble")
SCORER = "scorer"  # a seventh model, for a multi-grained bundle
ENCODERS = {"text": "text_encoder", "video": "video_encoder"}
# The runtime's batch sizes (Runtime.encode_text, Runtime.encode_frames; TensorRT's default profiles).
DEFAULT_MAX_BATCH = {"text": 64, "video": 8}
# How long the dynamic batcher holds a request for others: `vlrt serve`'s batch waits.
QUEUE_DELAY_US = {"text": 5_000, "video": 50_000}
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
              "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
OUTPUT_TYPE = "TYPE_FP32"
# The feeds `Runtime` gives each graph; the Python-backend models produce exactly these.
GRAPH_INPUTS = {"text": ("input_ids",), "video": ("pixels", "frame_mask")}
ONNX_PLATFORM = "onnxruntime_onnx"
PLAN_PLATFORM = "tensorrt_plan"
GPU_BACKENDS = ("ort-cuda", "tensorrt")  # engines built for the GPU: their encoders get KIND_GPU


class Symbol(str):
    """A protobuf enum value (TYPE_FP32, KIND_CPU): written bare in config.pbtxt, not quoted."""


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A ModelConfig as protobuf text format: a mapping is a message, a list of mappings a
    repeated message (map fields too, as {key, value} entries), a list of scalars a repeated
    scalar; str values are quoted, Symbol values bare."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, Mapping):
            body = to_pbtxt(value, indent + 1)
            lines += [f"{pad}{key} {{", *([body] if body else []), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines += [f"{pad}  {{", to_pbtxt(item, indent + 2), f"{pad}  }}" + ("," if i < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def write_repository(bundle_path: str | Path, out: str | Path, *, engine: str | None = None,
                     max_batch: int | None = None, gpu: bool = False, overwrite: bool = False,
                     mode: str = "exact", preprocess_instances: int = 1, decode_workers: int = 2,
                     progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Write the repository for the bundle at `bundle_path` (its own fp32 graphs, or the engine
    whose key is `engine`) to `out`, and return what was written (also kept as out/vlrt-triton.json).

    `max_batch`: every model's max_batch_size (None: 64 for text, 8 for video, the runtime's
    batch sizes; a TensorRT engine's profile caps both). `gpu`: the encoders run as KIND_GPU
    instances (an ort-cuda or TensorRT engine always does); the Python-backend models are
    KIND_CPU. `mode`: the video preprocessing (exact, or fast: resized inside FFmpeg).
    `preprocess_instances`: video_preprocess instances (processes); `decode_workers`: files each
    instance decodes at once.
    """
    if max_batch is not None and max_batch < 1:
        raise VlrtError(f"max_batch must be >= 1, got {max_batch}")
    if mode not in ("exact", "fast"):
        raise VlrtError(f"unknown preprocessing mode {mode!r}; expected exact or fast")
    if preprocess_instances < 1 or decode_workers < 1:
        raise VlrtError("preprocess_instances and decode_workers must be >= 1")
    out = Path(out).resolve()
    _check_target(out, overwrite=overwrite)
    progress(f"opening bundle {bundle_path} (checking its files' sha256)")
    bundle = Bundle.open(bundle_path)
    _check_graphs(bundle)
    chosen = _engine(bundle, engine) if engine else None
    if chosen is not None:
        progress(f"using {chosen.describe()}")
    plan = chosen is not None and chosen.manifest.get("backend") == "tensorrt"
    kind = "KIND_GPU" if gpu or (chosen is not None and chosen.manifest.get("backend") in GPU_BACKENDS) else "KIND_CPU"
    graphs = {g: _graph_io(bundle, g, chosen if plan else None) for g in ("text", "video")}
    batch = {g: _max_batch(g, graphs[g], max_batch, chosen) for g in graphs}
    configs = _configs(bundle, graphs, batch, platform=PLAN_PLATFORM if plan else ONNX_PLATFORM, kind=kind,
                       mode=mode, preprocess_instances=preprocess_instances, decode_workers=decode_workers)
    if "scorer" in bundle.manifest:
        configs[SCORER] = _scorer_config(bundle.manifest["scorer"], kind)
    sources = {g: (chosen or bundle).graph_path(g) for g in graphs}
    summary = {
        "repository": str(out), "bundle": str(bundle.root.resolve()), "bundle_manifest_sha256": bundle.manifest_sha256,
        "engine": chosen.key if chosen else None,
        "encoders": {"platform": PLAN_PLATFORM if plan else ONNX_PLATFORM, "kind": kind,
                     "precision": chosen.precision if chosen else "fp32",
                     "backend": chosen.manifest.get("backend") if chosen else None},
        "models": {name: {k: c[k] for k in ("platform", "backend", "max_batch_size") if k in c}
                   for name, c in configs.items()},
        "command": f"tritonserver --model-repository={out}",
        "vlrt_version": _vlrt_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with _staging(out) as tmp:
        for graph, name in ENCODERS.items():
            target = tmp / name / "1" / ("model.plan" if plan else "model.onnx")
            progress(f"{name}: copying {sources[graph].name} ({sources[graph].stat().st_size / 1e6:.1f} MB)")
            _copy(sources[graph], target)
        if SCORER in configs:  # the bundle's fp32 scorer graph, with every engine (as Runtime runs it)
            _copy(bundle.path(bundle.manifest["scorer"]["file"]), tmp / SCORER / "1" / "model.onnx")
        vocab = bundle.path(bundle.manifest["tokenizer"]["file"])
        _copy(vocab, tmp / "tokenizer" / "1" / vocab.name)
        _copy(SOURCES / "tokenizer.py", tmp / "tokenizer" / "1" / "model.py")
        _copy(SOURCES / "video_preprocess.py", tmp / "video_preprocess" / "1" / "model.py")
        for name in ("text_ensemble", "video_ensemble"):
            (tmp / name / "1").mkdir(parents=True)  # an ensemble has no files, but Triton needs its version folder
        for name, config in configs.items():
            (tmp / name / "config.pbtxt").write_text(to_pbtxt(config) + "\n")
        progress("writing config.pbtxt for " + ", ".join(configs))
        (tmp / "README.md").write_text(_readme(out, bundle, chosen, configs, kind))
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_target(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise VlrtError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise VlrtError(f"{out}: already exists; pass --overwrite to replace it")
        if not (out / MARKER).is_file():
            raise VlrtError(f"{out}: exists and is not a repository written by `vlrt triton` (no {MARKER}); "
                            "refusing to replace it")


def _check_graphs(bundle: Bundle) -> None:
    """One vector per text and per video, from graphs fed as `Runtime` feeds them: the tokenizer
    and video_preprocess models produce exactly those feeds."""
    kind = bundle.manifest.get("embedding", "vector")
    if kind != "vector" and "scorer" not in bundle.manifest:
        raise VlrtError(f"{bundle.root}: its family ({bundle.manifest.get('family')}) embeds {kind!r} features "
                        "without a scorer graph in the bundle; export it again with this vlrt")
    for graph, names in GRAPH_INPUTS.items():
        spec = bundle.manifest["graphs"].get(graph)
        if spec is None:
            raise VlrtError(f"{bundle.root}: the bundle has no {graph!r} graph")
        if tuple(spec["inputs"]) != names:
            raise VlrtError(f"{bundle.root}: the {graph} graph takes {', '.join(spec['inputs'])}; the Triton "
                            f"preprocessing models produce {', '.join(names)}")
    types = bundle.manifest["graphs"]
    if types["text"]["input_types"].get("input_ids") != "int64":
        raise VlrtError(f"{bundle.root}: the text graph takes {types['text']['input_types'].get('input_ids')} "
                        "input_ids; the tokenizer model produces int64")
    if any(types["video"]["input_types"].get(n) != "float32" for n in GRAPH_INPUTS["video"]):
        raise VlrtError(f"{bundle.root}: the video graph's inputs are not float32; video_preprocess produces float32")
    tokenizer = bundle.manifest["tokenizer"].get("type")
    if tokenizer != "clip-bpe":
        raise VlrtError(f"{bundle.root}: tokenizer {tokenizer!r}; the Triton tokenizer model is vlrt's clip-bpe")


def _engine(bundle: Bundle, key: str) -> Engine:
    """The engine `key` under the bundle's engines/, built from this export. Unlike `Bundle.engine`,
    it need not fit this machine: the repository is served elsewhere."""
    path = bundle.root / ENGINES / key / ENGINE_MANIFEST
    if not path.is_file():
        known = sorted(p.parent.name for p in (bundle.root / ENGINES).glob(f"[!.]*/{ENGINE_MANIFEST}"))
        raise VlrtError(f"{bundle.root}: no engine {key!r} under {ENGINES}/ (built engines: "
                        f"{', '.join(known) or 'none'}; build one with `vlrt build {bundle.root}`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VlrtError(f"{path}: unreadable engine manifest ({exc})") from None
    if manifest.get("engine_version") != ENGINE_VERSION:
        raise VlrtError(f"{path}: engine_version {manifest.get('engine_version')!r} is not {ENGINE_VERSION}; "
                        "rebuild it with this vlrt")
    found = Engine(path.parent, manifest)
    found.verify()
    if manifest.get("source", {}).get("manifest_sha256") != bundle.manifest_sha256:
        raise VlrtError(f"{bundle.root}: engine {key} was built from another export of this bundle (its source "
                        f"manifest differs); rebuild it with `vlrt build {bundle.root}`")
    backend = manifest.get("backend")
    if backend not in ("ort-cpu", "ort-cuda", "tensorrt"):
        raise VlrtError(f"engine {key} is a {backend} engine; `vlrt triton` writes onnxruntime (ort-cpu, ort-cuda) "
                        "and TensorRT engines, and the bundle's own graphs")
    return found


def _graph_io(bundle: Bundle, graph: str, plan: Engine | None) -> dict[str, Any]:
    """A graph's inputs and outputs for config.pbtxt (name, data_type, dims without the batch axis)
    and, for a TensorRT plan, its profile's batch range."""
    spec = bundle.manifest["graphs"][graph]
    fixed: dict[str, int] = {}
    batch: tuple[int, int] | None = None
    if plan is not None:
        fixed, batch = _profile_axes(plan, graph, spec["inputs"])

    def dims(name: str, axes: Sequence[int | str]) -> list[int]:
        if not axes or axes[0] != "batch":
            raise VlrtError(f"{bundle.root}: {graph} graph tensor {name!r} has axes {list(axes)}, without the leading "
                            "dynamic batch axis Triton's batching needs")
        return [a if isinstance(a, int) else fixed.get(a, -1) for a in axes[1:]]

    inputs = []
    for name, axes in spec["inputs"].items():
        dtype = spec["input_types"][name]
        if dtype not in DATA_TYPES:
            raise VlrtError(f"{bundle.root}: {graph} graph input {name!r} has data type {dtype!r}, which has no "
                            f"Triton type here (known: {', '.join(DATA_TYPES)})")
        inputs.append({"name": name, "data_type": Symbol(DATA_TYPES[dtype]), "dims": dims(name, axes)})
    outputs = [{"name": name, "data_type": Symbol(OUTPUT_TYPE), "dims": dims(name, axes)}
               for name, axes in spec["outputs"].items()]
    return {"inputs": inputs, "outputs": outputs, "batch": batch}


def _profile_axes(plan: Engine, graph: str, inputs: Mapping[str, Sequence[int | str]]
                  ) -> tuple[dict[str, int], tuple[int, int]]:
    """From a TensorRT plan's recorded profile: the named axes whose min equals their max (fixed
    there), and the batch range (opt, max) every input accepts."""
    try:
        profile = plan.manifest["graphs"][graph]["tensorrt"]["profile"]
    except KeyError:
        raise VlrtError(f"{plan.root / ENGINE_MANIFEST}: the {graph} plan records no optimization profile; "
                        "rebuild the engine with this vlrt") from None
    fixed: dict[str, int] = {}
    dynamic: set[str] = set()
    opt, hi = [], []
    for name, axes in inputs.items():
        if name not in profile:
            raise VlrtError(f"{plan.root / ENGINE_MANIFEST}: the {graph} plan's profile has no input {name!r}")
        lo_dims, opt_dims, hi_dims = (profile[name][k] for k in ("min", "opt", "max"))
        if len(lo_dims) != len(axes):
            raise VlrtError(f"{plan.root / ENGINE_MANIFEST}: the {graph} plan's profile gives {name!r} "
                            f"{len(lo_dims)} axes, the manifest {len(axes)}")
        opt.append(opt_dims[0])
        hi.append(hi_dims[0])
        for axis, lo, top in zip(axes[1:], lo_dims[1:], hi_dims[1:]):
            if isinstance(axis, str):
                if lo == top and axis not in dynamic:
                    fixed[axis] = lo
                else:
                    dynamic.add(axis)
                    fixed.pop(axis, None)
    return fixed, (min(opt), min(hi))


def _max_batch(graph: str, io: Mapping[str, Any], asked: int | None, engine: Engine | None) -> int:
    limit = io["batch"][1] if io["batch"] else None
    value = asked or DEFAULT_MAX_BATCH[graph]
    if limit is not None and asked is not None and asked > limit:
        raise VlrtError(f"--max-batch {asked}: engine {engine.key}'s {graph} plan takes batches up to {limit} (its "
                        "optimization profile); rebuild it for larger batches or ask for at most that")
    return min(value, limit) if limit is not None else value


def _param(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": {"string_value": value if isinstance(value, str) else json.dumps(value)}}


def _configs(bundle: Bundle, graphs: Mapping[str, Mapping[str, Any]], batch: Mapping[str, int], *, platform: str,
             kind: str, mode: str, preprocess_instances: int, decode_workers: int) -> dict[str, dict[str, Any]]:
    m = bundle.manifest
    text, video = graphs["text"], graphs["video"]
    configs: dict[str, dict[str, Any]] = {}
    for graph, name in ENCODERS.items():
        io = graphs[graph]
        preferred = min(io["batch"][0], batch[graph]) if io["batch"] else batch[graph]
        configs[name] = {
            "name": name, "platform": platform, "max_batch_size": batch[graph],
            "input": io["inputs"], "output": io["outputs"],
            "dynamic_batching": {"preferred_batch_size": [preferred],
                                 "max_queue_delay_microseconds": QUEUE_DELAY_US[graph]},
            "instance_group": [{"count": 1, "kind": Symbol(kind)}],
        }
    words = m["max_words"]
    frames, size = m["max_frames"], m["preprocessing"]["size"]
    configs["tokenizer"] = {
        "name": "tokenizer", "backend": "python", "max_batch_size": batch["text"],
        "input": [{"name": "text", "data_type": Symbol("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": "input_ids", "data_type": Symbol("TYPE_INT64"), "dims": [words]}],
        "instance_group": [{"count": 1, "kind": Symbol("KIND_CPU")}],
        "parameters": [_param("context_length", str(words)),
                       _param("vocabulary", Path(m["tokenizer"]["file"]).name)],
    }
    configs["video_preprocess"] = {
        "name": "video_preprocess", "backend": "python", "max_batch_size": batch["video"],
        "input": [{"name": "video", "data_type": Symbol("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": "pixels", "data_type": Symbol("TYPE_FP32"), "dims": [frames, 3, size, size]},
                   {"name": "frame_mask", "data_type": Symbol("TYPE_FP32"), "dims": [frames]}],
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
        "instance_group": [{"count": preprocess_instances, "kind": Symbol("KIND_CPU")}],
        "parameters": [_param("max_frames", str(frames)), _param("sampling", m["sampling"]),
                       _param("preprocessing", m["preprocessing"]), _param("mode", mode),
                       _param("decode_workers", str(decode_workers))],
    }
    configs["text_ensemble"] = _ensemble(
        "text_ensemble", batch["text"], configs["tokenizer"]["input"], text["outputs"],
        [("tokenizer", ["text"], ["input_ids"]),
         ("text_encoder", ["input_ids"], [o["name"] for o in text["outputs"]])])
    configs["video_ensemble"] = _ensemble(
        "video_ensemble", batch["video"], configs["video_preprocess"]["input"],
        [*video["outputs"], configs["video_preprocess"]["output"][1]],
        [("video_preprocess", ["video"], ["pixels", "frame_mask"]),
         ("video_encoder", ["pixels", "frame_mask"], [o["name"] for o in video["outputs"]])])
    return configs


def _scorer_config(spec: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The scorer graph as an onnxruntime model: every named axis dynamic (-1), no Triton batching."""
    def tensor(name: str, axes: Sequence[int | str]) -> dict[str, Any]:
        return {"name": name, "data_type": Symbol("TYPE_FP32"), "dims": [a if isinstance(a, int) else -1 for a in axes]}

    return {
        "name": SCORER, "platform": ONNX_PLATFORM, "max_batch_size": 0,
        "input": [tensor(k, v) for k, v in {**spec["text_inputs"], **spec["video_inputs"]}.items()],
        "output": [tensor(spec["output"], ["queries", "videos"])],
        "instance_group": [{"count": 1, "kind": Symbol(kind)}],
    }


def _ensemble(name: str, max_batch: int, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
              steps: list[tuple[str, list[str], list[str]]]) -> dict[str, Any]:
    """An ensemble whose steps pass tensors under their own names (each step's input and output
    names are the ensemble's tensor names)."""
    return {
        "name": name, "platform": "ensemble", "max_batch_size": max_batch,
        "input": inputs, "output": outputs,
        "ensemble_scheduling": {"step": [
            {"model_name": model, "model_version": -1,
             "input_map": [{"key": t, "value": t} for t in ins],
             "output_map": [{"key": t, "value": t} for t in outs]}
            for model, ins, outs in steps]},
    }


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


class _staging:
    """A temporary sibling folder that replaces `out` when the block completes, and is removed if it fails."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; a server in a container may run as another user
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)


def _readme(out: Path, bundle: Bundle, engine: Engine | None, configs: Mapping[str, Mapping[str, Any]],
            kind: str) -> str:
    m = bundle.manifest
    plan = configs["text_encoder"]["platform"] == PLAN_PLATFORM
    if engine is None:
        source = "the bundle's own fp32 ONNX graphs"
    else:
        source = f"{engine.describe()}"
    rows = []
    for name, config in configs.items():
        where = config.get("backend") or config["platform"]
        need = {"python": "Triton's Python backend, with vlrt installed in the Python it runs",
                ONNX_PLATFORM: "Triton's onnxruntime backend",
                PLAN_PLATFORM: "Triton's tensorrt backend, on the GPU the plan was built for",
                "ensemble": "nothing of its own (Triton's ensemble scheduler)"}[where]
        rows.append(f"| `{name}` | `{where}` | {config['max_batch_size']} | {need} |")
    lines = [
        "# Triton model repository (written by `vlrt triton`)",
        "",
        f"Bundle: `{bundle.root.resolve()}` ({m.get('family')}, {m.get('head')} head, embed_dim {bundle.embed_dim}, "
        f"{bundle.max_frames} frames, {bundle.max_words} words); encoders: {source}, as `{kind}` instances.",
        "",
        "Start it:",
        "",
        "```",
        f"tritonserver --model-repository={out}",
        "```",
        "",
        "In NVIDIA's container, which has every backend below, once vlrt is installed in it (an image built "
        "`FROM nvcr.io/nvidia/tritonserver:<yy.mm>-py3` with `RUN pip install <this vlrt's wheel or source>`), "
        "with this folder mounted at /models:",
        "",
        "```",
        f"docker run --rm {'--gpus all ' if kind == 'KIND_GPU' else ''}--shm-size=1g -p 8000:8000 -p 8001:8001 "
        f"-p 8002:8002 -v {out}:/models IMAGE tritonserver --model-repository=/models",
        "```",
        "",
        "| model | backend / platform | max batch | needs |",
        "|---|---|---|---|",
        *rows,
        "",
        "`tokenizer` and `video_preprocess` import vlrt (`vlrt.runtime.tokenizer`, `vlrt.runtime.pipeline`): "
        f"install the vlrt version that wrote this repository (vlrt {_vlrt_version()}) into the Python environment "
        "Triton's Python backend runs.",
        "",
        "Requests (KServe v2 protocol):",
        "",
        "- `text_ensemble`: input `text`, BYTES, shape [N, 1] (UTF-8 texts); outputs "
        + ", ".join(f"`{o['name']}`" for o in configs["text_ensemble"]["output"]) + " (FP32).",
        "- `video_ensemble`: input `video`, BYTES, shape [N, 1] (whole video files; send them as binary tensor "
        "data); outputs " + ", ".join(f"`{o['name']}`" for o in configs["video_ensemble"]["output"])
        + " (FP32; frame_mask marks the sampled frames).",
        "- The four models inside can be called alone as well (tokenizer: `text` -> `input_ids`; "
        "video_preprocess: `video` -> `pixels`, `frame_mask`).",
        *([f"- `{SCORER}`: the model's scorer: the text ensemble's "
           + ", ".join(f"`{k}`" for k in m["scorer"]["text_inputs"]) + " for Q captions and the video ensemble's "
           + ", ".join(f"`{k}`" for k in m["scorer"]["video_inputs"]) + " for N videos (first axis: Q, N) -> "
           f"`{m['scorer']['output']}` (Q, N); it runs fp32, whatever the encoders' precision."]
          if SCORER in configs else []),
        "",
        "A text, as JSON:",
        "",
        "```",
        "curl -s localhost:8000/v2/models/text_ensemble/infer -d '{\"inputs\": [{\"name\": \"text\", "
        "\"shape\": [1, 1], \"datatype\": \"BYTES\", \"data\": [\"a dog runs on the beach\"]}], "
        f"\"outputs\": [{{\"name\": \"{bundle.outputs('text')[0]}\"}}]}}'",
        "```",
        "",
        "A video file, with tritonclient (`pip install 'tritonclient[http]'`):",
        "",
        "```python",
        "import numpy as np",
        "import tritonclient.http as httpclient",
        "",
        "client = httpclient.InferenceServerClient(\"localhost:8000\")",
        "video = httpclient.InferInput(\"video\", [1, 1], \"BYTES\")",
        "video.set_data_from_numpy(np.array([[open(\"clip.mp4\", \"rb\").read()]], dtype=object), binary_data=True)",
        f"embedding = client.infer(\"video_ensemble\", [video]).as_numpy(\"{bundle.outputs('video')[0]}\")  "
        "# (1, D), L2-normalised",
        "```",
        "",
    ]
    if plan:
        versions = engine.manifest.get("versions", {})
        gpu = engine.manifest.get("machine", {}).get("gpu", {})
        lines += [f"The TensorRT plans were built with TensorRT {versions.get('tensorrt', '?')} for "
                  f"{gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')}): Triton's "
                  "tensorrt backend loads them only with that TensorRT version, on that GPU model.", ""]
        plugins = [p["path"] for p in engine.options().get("plugins", [])]
        if plugins:
            lines += ["They use TensorRT plugin libraries, which Triton loads through LD_PRELOAD:", "", "```",
                      f"LD_PRELOAD={':'.join(plugins)} tritonserver --model-repository={out}", "```", ""]
    return "\n".join(lines)


def _vlrt_version() -> str:
    from vlrt import __version__

    return __version__
