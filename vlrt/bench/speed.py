"""Speed of a bundle's configurations, side by side in one run: `vlrt bench BUNDLE --speed`.

Configurations (one row each), all on the same frames, threads and videos:

    eager PyTorch fp32            the reference model (needs torch and the source checkpoint)
    ORT fp32, plain export        the bundle's video.onnx, default SessionOptions
    ORT fp32 + fused attention    `vlrt build --precision fp32`
    int8 dynamic                  `vlrt build` (the default engine on ort-cpu)
    int8 dynamic + fused attention   `vlrt build --fuse-attention`
    int8 dynamic + token merge R  `vlrt build --token-merge R`, per requested R (opt-in, lossy)
    ... + skip similar T          the default engine with frame skipping (end-to-end, quality)

Columns: encoder frames/s (video graph, batch x frames of random pixels: speed does not depend on
the values), its ratio to the plain ORT export and to eager PyTorch, GFLOP/s achieved (vision
tower FLOPs, counted analytically, token merging included) against this machine's matmul ceiling
measured in the same run (an ORT MatMul, fp32, and MatMulInteger, u8 x s8), min cosine of the
video embeddings to the plain export, end-to-end videos/s (decode + sample + preprocess +
encode through vlrt's pipeline on real files) and, with a quality set, Recall@1/5 and top-1
agreement with the plain export's ranking. Timing: warm-up rounds, then the median of the
repeated rounds; each round times every configuration once (interleaved), so load from elsewhere
on the machine falls on all of them alike.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlrt.errors import VlrtError


@dataclasses.dataclass
class Config:
    name: str
    build: dict[str, Any] | None  # build_engine settings; None: not a built engine
    kind: str = "engine"  # "eager" | "plain" | "engine"
    skip_similar: float | None = None  # runtime frame skipping (end-to-end and quality columns only)


def default_configs(token_merge: Sequence[int], skip_similar: Sequence[float] = ()) -> list[Config]:
    configs = [
        Config("eager PyTorch fp32", None, "eager"),
        Config("ORT fp32, plain export", None, "plain"),
        Config("ORT fp32 + fused attention", {"precision": "fp32", "fuse_attention": True}),
        Config("int8 dynamic", {"precision": "int8", "int8_mode": "dynamic"}),
        Config("int8 dynamic + fused attention", {"precision": "int8", "int8_mode": "dynamic", "fuse_attention": True}),
    ]
    configs += [Config(f"int8 dynamic + token merge {r}",
                       {"precision": "int8", "int8_mode": "dynamic", "token_merge": r}) for r in token_merge]
    configs += [Config(f"int8 dynamic + skip similar {t:g}", {"precision": "int8", "int8_mode": "dynamic"},
                       skip_similar=t) for t in skip_similar]
    return configs


def vision_flops(manifest: dict[str, Any], token_merge: int = 0) -> float:
    """Multiply-adds x 2 of the vision tower for one frame (patch embedding, blocks, projection)."""
    from vlrt.ops.token_merge import merge_counts

    v = manifest["model"]["vision"]
    c, layers, patches = v["width"], v["layers"], (v["image_size"] // v["patch_size"]) ** 2
    mlp = v.get("mlp_width") or 4 * c  # bundles before mlp_width was recorded had 4x MLPs only
    n = patches + 1
    flops = 2 * patches * (3 * v["patch_size"] ** 2) * c
    counts = merge_counts(n, layers, token_merge) if token_merge else [0] * layers
    for merged in counts:
        flops += 2 * n * c * c * 3 + 2 * 2 * n * n * c + 2 * n * c * c  # qkv, q.k and attn.v, out proj
        n -= merged  # the MLP runs after the merge
        flops += 2 * n * c * mlp * 2
    return float(flops + 2 * c * manifest["embed_dim"])


def matmul_ceiling(threads: int, size: int = 768, repeats: int = 7) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of a square MatMul through ONNX Runtime on this CPU, best run."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out = {}
    for name, op, a_type, y_type, b in [
        ("fp32", "MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((size, size), dtype=np.float32)),
        ("int8 (u8 x s8)", "MatMulInteger", TensorProto.UINT8, TensorProto.INT32,
         rng.integers(-127, 128, (size, size), dtype=np.int8)),
    ]:
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], "ceiling",
                                  [helper.make_tensor_value_info("a", a_type, [size, size])],
                                  [helper.make_tensor_value_info("y", y_type, [size, size])],
                                  [numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 10  # ORT 1.30-1.32 reads ir_version <= 13
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        a = (rng.standard_normal((size, size), dtype=np.float32) if a_type == TensorProto.FLOAT
             else rng.integers(0, 256, (size, size), dtype=np.uint8))
        _, times = timed(lambda s=sess, x=a: s.run(None, {"a": x}), warmup=2, repeats=repeats)
        out[name] = 2 * size**3 / min(times) / 1e9  # a ceiling: the best run
    return out


def timed(fn: Callable[[], Any], *, warmup: int, repeats: int) -> tuple[Any, list[float]]:
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def min_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    return float(((r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))).min())


def ort_session(path: Path, threads: int, *, plain: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not plain:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _eager_model(bundle, checkpoint: str | None):
    """The PyTorch reference of the bundle's model, or a reason it is not available."""
    source = checkpoint or bundle.manifest.get("source", {}).get("path")
    try:
        import torch

        from vlrt.export import load_checkpoint
    except ImportError:
        return None, "torch is not installed (pip install 'vlrt[export]')"
    if not source or not Path(source).exists():
        return None, f"source checkpoint {source!r} not found (pass --checkpoint)"
    return load_checkpoint(source).model.eval(), torch


def run_speed(bundle_dir: str | Path, *, configs: list[Config], threads: int, batch: int, frames: int,
              warmup: int, repeats: int, videos: list[str], checkpoint: str | None = None,
              quality: tuple[list[str], list[str]] | None = None,
              progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Measure every configuration; see the module docstring. `videos`: files for the end-to-end
    column; `quality`: (video files, their captions) for the retrieval columns.

    Encoder timings are interleaved: each round times every configuration once, so a burst of
    other load on the machine hits all of them alike; the median over rounds is reported."""
    import onnxruntime

    from vlrt import __version__
    from vlrt.runtime.bundle import Bundle, machine_fingerprint

    try:
        import onnx  # noqa: F401  (the engines are built here, and the ceiling graph made)
    except ImportError:
        raise VlrtError("vlrt bench --speed builds engines and needs the build extra: pip install 'vlrt[build]'") from None
    bundle = Bundle.open(bundle_dir)
    size = bundle.manifest["preprocessing"]["size"]
    rng = np.random.default_rng(0)
    feeds = {"pixels": rng.standard_normal((batch, frames, 3, size, size), dtype=np.float32),
             "frame_mask": np.ones((batch, frames), np.float32)}
    rows, subjects = [], []
    for config in configs:
        row: dict[str, Any] = {"name": config.name, "build": config.build}
        subject = _prepare(bundle, config, feeds, threads, checkpoint, progress)
        if isinstance(subject, str):
            row["skipped"] = subject
        else:
            row.update(subject.get("row", {}))
            subjects.append((row, subject))
        rows.append(row)
    progress(f"matmul ceiling ({threads} threads)")
    ceiling = matmul_ceiling(threads)
    timed_subjects = [(row, subject) for row, subject in subjects if subject["config"].skip_similar is None]
    progress(f"timing {len(timed_subjects)} configurations, {repeats} interleaved rounds")
    outputs = {}
    for _ in range(warmup):
        for row, subject in timed_subjects:
            outputs[row["name"]] = subject["video"]()
    times: dict[str, list[float]] = {row["name"]: [] for row, _ in timed_subjects}
    for _ in range(repeats):
        for row, subject in timed_subjects:
            t0 = time.perf_counter()
            subject["video"]()
            times[row["name"]].append(time.perf_counter() - t0)
    reference = next((outputs[row["name"]] for row, s in timed_subjects if s["config"].kind == "plain"), None)
    for row, subject in timed_subjects:
        t = times[row["name"]]
        med = statistics.median(t)
        flops = vision_flops(bundle.manifest, (subject["config"].build or {}).get("token_merge", 0))
        row.update(frames_per_s=batch * frames / med, median_s=med, min_s=min(t), max_s=max(t), runs=len(t),
                   gflops_per_frame=flops / 1e9, achieved_gflop_s=flops * batch * frames / med / 1e9)
        if reference is not None:
            row["min_cos_video_vs_plain"] = min_cosine(reference[0], outputs[row["name"]][0])
    ref_scores = None
    for row, subject in subjects:
        if videos:
            progress(f"end to end: {row['name']}")
            row.update(_end_to_end(bundle, subject, videos))
        if quality is not None and subject["text"] is not None:
            progress(f"retrieval: {row['name']}")
            scores = _scores(bundle, subject, *quality)
            if subject["config"].kind == "plain":
                ref_scores = scores
            row["quality"] = _quality(scores, ref_scores)
    baseline = {s["config"].kind: row for row, s in timed_subjects if s["config"].kind in ("plain", "eager")}
    for row, _ in timed_subjects:
        if "plain" in baseline:
            row["vs_plain_ort"] = row["frames_per_s"] / baseline["plain"]["frames_per_s"]
        if "eager" in baseline:
            row["vs_eager"] = row["frames_per_s"] / baseline["eager"]["frames_per_s"]
    m = machine_fingerprint()
    return {
        "benchmark": "speed", "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{m['cpu']} ({m['arch']}; {', '.join(m['isa'])}), {os.cpu_count()} cores, no GPU",
        "versions": {"vlrt": __version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "bundle": {"path": str(bundle.root), "model": bundle.manifest["model"], "head": bundle.manifest["head"]},
        "setup": {"threads": threads, "batch": f"{batch} videos x {frames} frames", "warmup": warmup,
                  "repeats": repeats, "e2e_videos": len(videos), "quality_videos": len(quality[0]) if quality else 0},
        "matmul_ceiling_gflop_s": ceiling,
        "rows": rows,
    }


def _prepare(bundle, config: Config, feeds, threads: int, checkpoint: str | None, progress) -> dict[str, Any] | str:
    """What measuring one configuration needs: its video-graph call, frame encoder, text encoder;
    or the reason it cannot run here."""
    from vlrt import Runtime
    from vlrt.build.engine import build_engine

    if config.kind == "eager":
        model, torch_or_reason = _eager_model(bundle, checkpoint)
        if model is None:
            return torch_or_reason
        torch = torch_or_reason
        torch.set_num_threads(threads)

        def encode(px, mask):
            with torch.inference_mode():
                v, f = model.encode_video(torch.from_numpy(px), torch.from_numpy(mask))
            return v.numpy(), f.numpy()

        return {"config": config, "video": lambda: encode(feeds["pixels"], feeds["frame_mask"]), "encode": encode,
                "text": None, "runtime": None}
    row, key = {}, None
    if config.kind == "plain":
        path = bundle.graph_path("video")
    else:
        progress(f"building: {config.name}")
        built = build_engine(bundle.root, backend="ort-cpu", gate=False, **config.build)
        key, path = built.key, built.engine_dir / built.manifest["graphs"]["video"]["file"]
        row = {"engine": built.key, "validation_min_cosine": built.manifest["validation"]["min_cosine"]}
    sess = ort_session(path, threads, plain=config.kind == "plain")
    rt = Runtime.load(bundle.root, backend="ort-cpu", threads=threads, engine=key, skip_similar=config.skip_similar)
    return {"config": config, "row": row, "runtime": rt, "text": rt.encode_text,
            "video": lambda: tuple(sess.run(list(bundle.outputs("video")), feeds)),
            "encode": lambda px, m: rt.encode_frames(px, m, return_frames=True)}


def _end_to_end(bundle, subject: dict[str, Any], videos: list[str]) -> dict[str, Any]:
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    rt = subject["runtime"]
    if rt is not None and rt.skip_stats is not None:
        rt.skip_stats.frames = rt.skip_stats.encoded = 0
    t0 = time.perf_counter()
    for result in encode_stream(videos, ClipLoader(bundle.manifest), subject["encode"], batch_size=8, workers=2):
        if result.error:
            raise VlrtError(result.error)
    out: dict[str, Any] = {"e2e_videos_per_s": len(videos) / (time.perf_counter() - t0)}
    if rt is not None and rt.skip_stats is not None:
        out["e2e_frames"] = {"sampled": rt.skip_stats.frames, "encoded": rt.skip_stats.encoded}
    return out


def _scores(bundle, subject: dict[str, Any], paths: list[str], captions: list[str]) -> np.ndarray:
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    embeds = []
    for result in encode_stream(paths, ClipLoader(bundle.manifest), subject["encode"], batch_size=8, workers=2):
        if result.error:
            raise VlrtError(result.error)
        embeds.append(result.embedding)
    return subject["text"](captions) @ np.stack(embeds).T


def _quality(scores: np.ndarray, ref_scores: np.ndarray | None) -> dict[str, float]:
    from vlrt.bench.metrics import recall_report, top1_agreement

    q = recall_report(scores)
    out = {k: q[k] for k in ("t2v_R@1", "t2v_R@5", "v2t_R@1", "v2t_R@5")}
    if ref_scores is not None:
        out["top1_agreement_t2v"] = top1_agreement(scores, ref_scores)
    return out


def markdown(result: dict[str, Any], title: str) -> str:
    s = result["setup"]
    ceiling = ", ".join(f"{k} {v:.0f}" for k, v in result["matmul_ceiling_gflop_s"].items())
    lines = [f"# {title} ({result['date']})", "",
             f"{result['machine']}. {s['threads']} threads; encoder batch {s['batch']}; median of {s['repeats']} "
             f"rounds after {s['warmup']} warm-up, configurations interleaved round by round. Matmul ceiling "
             f"measured in the same run (ONNX Runtime, 768^3, best of 7): {ceiling} GFLOP/s. End-to-end: "
             f"{s['e2e_videos']} videos through decode, sampling, "
             "preprocessing and encoding. Cosine: video embeddings vs the plain ORT export.", "",
             "| configuration | frames/s | × plain ORT | × eager | GFLOP/frame | GFLOP/s | min cos | videos/s e2e "
             "| t2v R@1 | t2v R@5 | v2t R@1 | top-1 agree t2v % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * 10)
            continue
        q = r.get("quality", {})
        cell = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        e2e = cell(r.get("e2e_videos_per_s"), ".2f")
        if "e2e_frames" in r:
            e2e += f" ({r['e2e_frames']['encoded']}/{r['e2e_frames']['sampled']} frames encoded)"
        lines.append(
            f"| {r['name']} | {cell(r.get('frames_per_s'), '.1f')} | {cell(r.get('vs_plain_ort'), '.2f')} | "
            f"{cell(r.get('vs_eager'), '.2f')} | {cell(r.get('gflops_per_frame'), '.2f')} | "
            f"{cell(r.get('achieved_gflop_s'), '.0f')} | "
            f"{cell(r.get('min_cos_video_vs_plain'), '.6f')} | {e2e} | "
            f"{cell(q.get('t2v_R@1'), '.2f')} | {cell(q.get('t2v_R@5'), '.2f')} | {cell(q.get('v2t_R@1'), '.2f')} | "
            f"{cell(q.get('top1_agreement_t2v'), '.2f')} |")
    return "\n".join(lines) + "\n"


def plot(results: list[tuple[str, dict[str, Any]]], out: Path) -> Path | None:
    """Bar chart of encoder frames/s (× plain ORT annotated), one panel per result; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)), squeeze=False)
    for ax, (title, result) in zip(axes[:, 0], results):
        rows = [r for r in result["rows"] if "frames_per_s" in r]
        names = [r["name"] for r in rows]
        values = [r["frames_per_s"] for r in rows]
        bars = ax.barh(names[::-1], values[::-1], color="#4a7ab5")
        for bar, r in zip(bars, rows[::-1]):
            ratio = r.get("vs_plain_ort")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {r['frames_per_s']:.0f}" + (f" ({ratio:.2f}x ORT)" if ratio else ""), va="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("encoder frames/s (higher is better)")
        ax.set_xlim(0, max(values) * 1.35)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
