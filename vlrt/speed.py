"""Speed of a bundle's configurations, side by side in one run: `vlrt bench BUNDLE --speed`.

Configurations (one row each), all on the same frames, threads and videos:

    eager PyTorch fp32            the reference model (needs torch and the source checkpoint)
    ORT fp32, plain export        the bundle's video.onnx, default SessionOptions
    ORT fp32 + fused attention    `vlrt build --precision fp32`
    int8 dynamic                  `vlrt build --no-fuse-attention`
    int8 dynamic + fused attention   `vlrt build` (the default engine)
    ... + token merge R           `vlrt build --token-merge R`, per requested R (opt-in, lossy)

Columns: encoder frames/s (video graph, batch x frames of random pixels: speed does not depend on
the values), its ratio to the plain ORT export and to eager PyTorch, GFLOP/s achieved (vision
tower FLOPs, counted analytically, token merging included) against this machine's matmul ceiling
measured in the same run (an ORT MatMul, fp32, and MatMulInteger, u8 x s8), min cosine of the
video embeddings to the plain export, end-to-end videos/s (decode + sample + preprocess +
encode through vlrt's pipeline on real files) and, with a quality set, Recall@1/5 and top-1
agreement with the plain export's ranking. Timing: warm-up runs, then the median of the repeats.
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
        Config("int8 dynamic", {"precision": "int8", "int8_mode": "dynamic", "fuse_attention": False}),
        Config("int8 dynamic + fused attention", {"precision": "int8", "int8_mode": "dynamic"}),
    ]
    configs += [Config(f"int8 dynamic + fused + token merge {r}",
                       {"precision": "int8", "int8_mode": "dynamic", "token_merge": r}) for r in token_merge]
    configs += [Config(f"int8 dynamic + fused + skip similar {t:g}", {"precision": "int8", "int8_mode": "dynamic"},
                       skip_similar=t) for t in skip_similar]
    return configs


def vision_flops(manifest: dict[str, Any], token_merge: int = 0) -> float:
    """Multiply-adds x 2 of the vision tower for one frame (patch embedding, blocks, projection)."""
    from vlrt.ops.token_merge import merge_counts

    v = manifest["model"]["vision"]
    c, layers, patches = v["width"], v["layers"], (v["image_size"] // v["patch_size"]) ** 2
    n = patches + 1
    flops = 2 * patches * (3 * v["patch_size"] ** 2) * c
    counts = merge_counts(n, layers, token_merge) if token_merge else [0] * layers
    for merged in counts:
        flops += 2 * n * c * c * 3 + 2 * 2 * n * n * c + 2 * n * c * c  # qkv, q.k and attn.v, out proj
        n -= merged  # the MLP runs after the merge
        flops += 2 * n * c * 4 * c * 2
    return float(flops + 2 * c * manifest["embed_dim"])


def matmul_ceiling(threads: int, size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of one square MatMul through ONNX Runtime on this CPU."""
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
        model.ir_version = 10  # ORT 1.30-1.32 reads ir_version <= 13 (FACTS.md)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        a = (rng.standard_normal((size, size), dtype=np.float32) if a_type == TensorProto.FLOAT
             else rng.integers(0, 256, (size, size), dtype=np.uint8))
        _, times = timed(lambda: sess.run(None, {"a": a}), warmup=2, repeats=repeats)
        out[name] = 2 * size**3 / statistics.median(times) / 1e9
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


def _session(path: Path, threads: int, *, plain: bool):
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
    column; `quality`: (video files, their captions) for the retrieval columns."""
    import onnxruntime

    from vlrt import Runtime, __version__
    from vlrt.export.build import build_engine
    from vlrt.metrics import recall_report, top1_agreement
    from vlrt.runtime.bundle import Bundle, machine_fingerprint
    from vlrt.runtime.pipeline import ClipLoader, encode_stream

    bundle = Bundle.open(bundle_dir)
    size = bundle.manifest["preprocessing"]["size"]
    rng = np.random.default_rng(0)
    feeds = {"pixels": rng.standard_normal((batch, frames, 3, size, size), dtype=np.float32),
             "frame_mask": np.ones((batch, frames), np.float32)}
    progress(f"matmul ceiling ({threads} threads)")
    ceiling = matmul_ceiling(threads)
    rows, reference, ref_scores = [], None, None
    for config in configs:
        row: dict[str, Any] = {"name": config.name, "build": config.build}
        engine_key, merge = None, (config.build or {}).get("token_merge", 0)
        if config.kind == "eager":
            model, torch_or_reason = _eager_model(bundle, checkpoint)
            if model is None:
                rows.append({**row, "skipped": torch_or_reason})
                continue
            torch = torch_or_reason
            torch.set_num_threads(threads)

            def encode(px, mask, model=model, torch=torch):
                with torch.inference_mode():
                    v, f = model.encode_video(torch.from_numpy(px), torch.from_numpy(mask))
                return v.numpy(), f.numpy()

            run_video = lambda: encode(feeds["pixels"], feeds["frame_mask"])  # noqa: E731
            e2e_encode, text, rt = encode, None, None
        else:
            if config.kind == "plain":
                path = bundle.graph_path("video")
            else:
                progress(f"building: {config.name}")
                built = build_engine(bundle.root, backend="ort-cpu", gate=False, **config.build)
                engine_key = built.key
                path = built.engine_dir / built.manifest["graphs"]["video"]["file"]
                row["engine"] = built.key
                row["validation_min_cosine"] = built.manifest["validation"]["min_cosine"]
            sess = _session(path, threads, plain=config.kind == "plain")
            run_video = lambda s=sess: tuple(s.run(["video_embeds", "frame_embeds"], feeds))  # noqa: E731
            rt = Runtime.load(bundle.root, backend="ort-cpu", threads=threads, engine=engine_key,
                              skip_similar=config.skip_similar)
            e2e_encode = lambda px, m, rt=rt: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
            text = rt.encode_text
        if config.skip_similar is None:  # skipping changes how many frames reach the encoder, not its speed
            progress(f"timing: {config.name}")
            out, times = timed(run_video, warmup=warmup, repeats=repeats)
            med = statistics.median(times)
            flops = vision_flops(bundle.manifest, merge)
            row.update(frames_per_s=batch * frames / med, median_s=med, min_s=min(times), max_s=max(times),
                       runs=len(times), gflops_per_frame=flops / 1e9,
                       achieved_gflop_s=flops * batch * frames / med / 1e9)
            if config.kind == "plain":
                reference = out
            if reference is not None:
                row["min_cos_video_vs_plain"] = min_cosine(reference[0], out[0])
        if videos:
            loader = ClipLoader(bundle.manifest)
            t0 = time.perf_counter()
            for result in encode_stream(videos, loader, e2e_encode, batch_size=8, workers=2):
                if result.error:
                    raise VlrtError(result.error)
            row["e2e_videos_per_s"] = len(videos) / (time.perf_counter() - t0)
            if rt is not None and rt.skip_stats is not None:
                row["e2e_frames"] = {"sampled": rt.skip_stats.frames, "encoded": rt.skip_stats.encoded}
        if quality is not None and text is not None:
            progress(f"retrieval: {config.name}")
            paths, captions = quality
            embeds = np.stack([r.embedding for r in encode_stream(paths, ClipLoader(bundle.manifest), e2e_encode,
                                                                   batch_size=8, workers=2)])
            scores = text(captions) @ embeds.T
            q = recall_report(scores)
            row["quality"] = {k: q[k] for k in ("t2v_R@1", "t2v_R@5", "v2t_R@1", "v2t_R@5")}
            if config.kind == "plain":
                ref_scores = scores
            if ref_scores is not None:
                row["quality"]["top1_agreement_t2v"] = top1_agreement(scores, ref_scores)
        rows.append(row)
        if "frames_per_s" in row:
            progress(f"{config.name}: {row['frames_per_s']:.1f} frames/s")
    timed_rows = {r["name"]: r for r in rows if "frames_per_s" in r}
    plain = next((r for r in rows if r["name"] == "ORT fp32, plain export"), None)
    eager = next((r for r in timed_rows.values() if r["name"] == "eager PyTorch fp32"), None)
    for r in timed_rows.values():
        if plain:
            r["vs_plain_ort"] = r["frames_per_s"] / plain["frames_per_s"]
        if eager:
            r["vs_eager"] = r["frames_per_s"] / eager["frames_per_s"]
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


def markdown(result: dict[str, Any], title: str) -> str:
    s = result["setup"]
    ceiling = ", ".join(f"{k} {v:.0f}" for k, v in result["matmul_ceiling_gflop_s"].items())
    lines = [f"# {title} ({result['date']})", "",
             f"{result['machine']}. {s['threads']} threads; encoder batch {s['batch']}; median of {s['repeats']} "
             f"runs after {s['warmup']} warm-up. Matmul ceiling measured in the same run (ONNX Runtime, "
             f"1024^3): {ceiling} GFLOP/s. End-to-end: {s['e2e_videos']} videos through decode, sampling, "
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
