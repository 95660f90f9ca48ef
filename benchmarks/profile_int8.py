"""Where the time of the int8 video encoder goes, per op, on ViT-B/32 geometry (ONNX Runtime CPU).

One random-weight full-size bundle (ViT-B/32 + seqTransf head, made once per workdir by
e2e.make_bundle), one video of 12 frames per call, 2 intra-op threads. Each configuration is an
`onnxruntime.InferenceSession` on a graph file of the bundle or of an engine `vlrt build` made
(`BuildResult.engine_dir`), with ORT_ENABLE_ALL (what vlrt's ort-cpu runtime uses) unless said:

  fp32                             the bundle's video.onnx
  int8 dynamic                     build_engine(precision="int8", int8_mode="dynamic"): ort-cpu's default
  int8 dynamic + fused attention   ... fuse_attention=True (com.microsoft.Attention, quantized to QAttention)
  int8 static (QDQ)                build_engine(int8_mode="static", calib=DIR), calibrated on generated videos

then session-option variants of the fastest int8 engine, timed in rounds of their own with that
engine's default session repeated among them:

  intra-op spinning off            session.intra_op.allow_spinning = 0
  1 intra-op thread                intra_op_num_threads = 1
  ORT_ENABLE_EXTENDED              fusions, but no NCHWc layout transformation (the patch Conv)
  ORT_ENABLE_BASIC                 no fusions: DynamicQuantizeLinear, MatMulInteger, Cast and the scale
                                   Mul run as separate nodes, which shows what the fused
                                   DynamicQuantizeMatMul node spends its time on
  dynamic_block_base = 4           session.dynamic_block_base (thread-pool work split in shrinking blocks)

Not tried: session.qdqisint8allowed (it matters when saving ORT-format models for ARM; the static
engine's activations are uint8 already), session.x64quantprecision (U8U8 kernels instead of U8S8;
vlrt's int8 engines use 7-bit weights on x86 without VNNI instead, see vlrt/build/engine.py) and
mlas.enable_gemm_fastmath_arm64_bfloat16 (ARM only).

What is measured per configuration:
  wall time   median of --repeats calls after --warmup, profiler off. Configurations are
              interleaved round by round, so load from elsewhere on the machine falls on all of
              them alike, with --gap seconds idle between calls so that one session's spinning
              pool threads are not running while the next session is timed.
  per op      a second session with enable_profiling: the trace's Node events ("cat": "Node",
              "<node>_kernel_time") of --profile-runs calls after one warm-up, `dur` summed per
              `args.op_name`. These are the op types ORT runs after its graph optimizations:
              DynamicQuantizeMatMul is DynamicQuantizeLinear + MatMulInteger + scale Mul (+ bias
              Add) fused, QuickGelu is x * Sigmoid(1.702 x), FusedMatMul a MatMul with a folded
              Transpose or scale. Framework overhead: the calls' `model_run` time minus the kernels'.
  GOP/s       multiply-adds of the MatMul-type nodes (MatMul, FusedMatMul, MatMulInteger,
              DynamicQuantizeMatMul, MatMulIntegerToFloat, QLinearMatMul, Gemm, QAttention and
              Attention), counted from the shapes the profiler records, 2 ops per MAC; divided by
              those nodes' kernel time (their rate) and by the wall time (the whole encoder).
  ceiling     micro-benchmarks built with onnx.helper at the encoder's MLP shape (M = frames x
              tokens, K = width, N = MLP width). The int8 ceiling each row is compared with is a
              MatMulInteger-only graph (u8 x s8, pre-quantized input: the int8 GEMM alone) at the
              row's thread count, timed inside the same interleaved rounds as the encoder (5
              products per round), so that both see the same load from elsewhere. For reference,
              also MatMulInteger, DynamicQuantizeMatMul (the node the int8 encoder runs),
              DynamicQuantizeLinear alone and fp32 MatMul, best and median of --micro-repeats
              calls at the start and at the end of the run. The patch-embedding Conv is fp32 in
              every engine (vlrt quantizes MatMul and Attention) and is not counted among the
              MatMul-type nodes.

Load averages and the CPU time used outside this process are recorded for each phase.

    python benchmarks/profile_int8.py                        # full run: ~3 min with the workdir's
                                                             # bundle and engines, ~7 min from a fresh one
    python benchmarks/profile_int8.py --quick                # smoke run: tiny model, few calls, not in results/

Writes benchmarks/results/profile-int8-cpu.json and .md (with --quick: into the workdir).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from common import (
    calibration_videos,
    contention,
    contention_line,
    load_snapshot,
    machine,
    random_bundle,
    run_workload,
    stages,
    workload_args,
)

MATMUL_OPS = {"MatMul", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
              "QLinearMatMul", "Gemm", "QGemm"}
ATTENTION_OPS = {"Attention", "QAttention"}
LEVELS = {"ALL": "ORT_ENABLE_ALL", "EXTENDED": "ORT_ENABLE_EXTENDED", "BASIC": "ORT_ENABLE_BASIC"}


@dataclasses.dataclass
class Config:
    name: str
    graph: str  # "fp32" or an engine's name in `engines`
    threads: int
    level: str = "ALL"
    entries: dict[str, str] = dataclasses.field(default_factory=dict)  # session config entries

    def describe(self) -> dict:
        return {"graph": self.graph, "threads": self.threads, "graph_optimization_level": LEVELS[self.level],
                "session_config": self.entries}


def session(path: Path, config: Config, profile_prefix: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = config.threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[config.level])
    for key, value in config.entries.items():
        opts.add_session_config_entry(key, value)
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def build_engines(bundle: Path, calib: Path, progress) -> dict[str, dict]:
    from vlrt.build.engine import build_engine

    settings = {
        "int8 dynamic": {"precision": "int8", "int8_mode": "dynamic"},
        "int8 dynamic + fused attention": {"precision": "int8", "int8_mode": "dynamic", "fuse_attention": True},
        "int8 static (QDQ)": {"precision": "int8", "int8_mode": "static", "calib": calib},
    }
    out = {}
    for name, kw in settings.items():
        t0 = time.perf_counter()
        built = build_engine(bundle, backend="ort-cpu", gate=False, progress=progress, **kw)
        out[name] = {"key": built.key, "path": built.engine_dir / built.manifest["graphs"]["video"]["file"],
                     "options": built.manifest["options"], "reused": built.reused,
                     "build_s": round(time.perf_counter() - t0, 1),
                     "validation_min_cosine": built.manifest["validation"]["min_cosine"]}
    return out


# ---------------------------------------------------------------------------------------------
# timing


def time_interleaved(calls: dict[str, object], *, warmup: int, repeats: int, gap: float) -> tuple[dict, dict]:
    """{name: seconds per call} over `repeats` rounds, each round calling every configuration once;
    also the last output of each (for the cosine check)."""
    outputs = {}
    for _ in range(warmup):
        for name, fn in calls.items():
            outputs[name] = fn()
            time.sleep(gap)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            time.sleep(gap)
    return times, outputs


def min_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    return float(((r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))).min())


def ceiling_call(threads: int, m: int, k: int, n: int, calls: int):
    """A callable running one (m x k) u8 @ (k x n) s8 MatMulInteger `calls` times: the int8 GEMM
    ceiling, timed among the encoder's calls in the same rounds."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "ceiling",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                              [numpy_helper.from_array(rng.integers(-63, 64, (k, n), dtype=np.int8), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {"a": rng.integers(0, 256, (m, k), dtype=np.uint8)}

    def run():
        for _ in range(calls):
            sess.run(None, feeds)

    return run


def ceiling_name(threads: int) -> str:
    return f"ceiling: MatMulInteger, {threads} threads"


def micro_ceiling(threads: int, m: int, k: int, n: int, repeats: int) -> dict[str, dict]:
    """Best-of-`repeats` time and GOP/s of one (m x k) @ (k x n) product per op, built with onnx.helper."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-63, 64, (k, n), dtype=np.int8)  # 7-bit, as vlrt's engines on x86 without VNNI
    scale = numpy_helper.from_array(np.full(n, 0.01, np.float32), "scale")
    zero = numpy_helper.from_array(np.zeros(n, np.int8), "zero")
    bias = numpy_helper.from_array(np.zeros(n, np.float32), "bias")
    a_f32 = rng.standard_normal((m, k), dtype=np.float32)
    a_u8 = rng.integers(0, 256, (m, k), dtype=np.uint8)
    vi = helper.make_tensor_value_info
    cases = {
        "MatMulInteger (u8 x s8)": ([helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
                                    vi("a", TensorProto.UINT8, [m, k]), [vi("y", TensorProto.INT32, [m, n])],
                                    [numpy_helper.from_array(w, "w")], a_u8, True),
        "DynamicQuantizeMatMul": ([helper.make_node("DynamicQuantizeMatMul", ["a", "w", "scale", "zero", "bias"], ["y"],
                                                    domain="com.microsoft")],
                                  vi("a", TensorProto.FLOAT, [m, k]), [vi("y", TensorProto.FLOAT, [m, n])],
                                  [numpy_helper.from_array(w, "w"), scale, zero, bias], a_f32, True),
        "DynamicQuantizeLinear": ([helper.make_node("DynamicQuantizeLinear", ["a"], ["q", "s", "z"])],
                                  vi("a", TensorProto.FLOAT, [m, k]),
                                  [vi("q", TensorProto.UINT8, [m, k]), vi("s", TensorProto.FLOAT, []),
                                   vi("z", TensorProto.UINT8, [])], [], a_f32, False),
        "MatMul fp32": ([helper.make_node("MatMul", ["a", "w"], ["y"])], vi("a", TensorProto.FLOAT, [m, k]),
                        [vi("y", TensorProto.FLOAT, [m, n])], [numpy_helper.from_array(w.astype(np.float32), "w")],
                        a_f32, True),
    }
    out = {}
    for name, (nodes, a_info, outputs, inits, feed, is_gemm) in cases.items():
        graph = helper.make_graph(nodes, "ceiling", [a_info], outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10  # ORT 1.30-1.32 reads ir_version <= 13
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, {"a": feed})
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, {"a": feed})
            times.append(time.perf_counter() - t0)
        best = min(times)
        med = statistics.median(times)
        out[name] = {"ms_best": best * 1e3, "ms_median": med * 1e3,
                     "gop_s": 2 * m * k * n / best / 1e9 if is_gemm else None,
                     "gop_s_median": 2 * m * k * n / med / 1e9 if is_gemm else None}
    return out


# ---------------------------------------------------------------------------------------------
# profiles


def node_macs(op: str, inputs: list, outputs: list) -> tuple[int, tuple[int, int, int]] | None:
    """Multiply-adds of one MatMul-type node from its recorded shapes, and its (M, K, N), M
    counting every batched row. Prepacked constant weights are not in the recorded inputs, so K
    comes from the first input and the output: K = size(A) * N / size(Y), whatever A's layout."""
    shapes_in = [next(iter(t.values())) for t in inputs]
    shapes_out = [next(iter(t.values())) for t in outputs]
    if not shapes_in or not shapes_out or not shapes_in[0] or not shapes_out[0]:
        return None
    a, y = shapes_in[0], shapes_out[0]
    if op in MATMUL_OPS:
        n = y[-1]
        rows = math.prod(y) // n
        k = math.prod(a) * n // math.prod(y)
        return rows * k * n, (rows, k, n)
    if op in ATTENTION_OPS and len(a) == 3:  # (batch, sequence, hidden): q/k/v projection, q.k and attn.v
        b, s, c = a
        return b * s * c * 3 * c + 2 * b * s * s * c, (b * s, c, 3 * c)
    return None


def parse_trace(path: Path, skip_runs: int) -> dict:
    """Per-op kernel time (ms per call) of the runs after the first `skip_runs`, MatMul-type
    MACs and time, and framework overhead."""
    events = json.loads(Path(path).read_text())
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip_runs:]
    windows = [(r["ts"], r["ts"] + r["dur"]) for r in runs]
    ops: dict[str, dict] = collections.defaultdict(lambda: {"us": 0.0, "nodes": 0})
    shapes: dict[tuple, dict] = collections.defaultdict(lambda: {"us": 0.0, "nodes": 0, "macs": 0})
    mm_us = mm_macs = 0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(lo <= e["ts"] <= hi for lo, hi in windows):
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        ops[op]["us"] += e["dur"]
        ops[op]["nodes"] += 1
        macs = node_macs(op, args.get("input_type_shape", []), args.get("output_type_shape", []))
        if macs is not None:
            mm_us += e["dur"]
            mm_macs += macs[0]
            group = shapes[(op, *macs[1])]
            group["us"] += e["dur"]
            group["nodes"] += 1
            group["macs"] += macs[0]
    n = max(1, len(runs))
    kernel_ms = sum(v["us"] for v in ops.values()) / n / 1e3
    run_ms = statistics.median([r["dur"] for r in runs]) / 1e3 if runs else float("nan")
    per_op = sorted(({"op": op, "ms": v["us"] / n / 1e3, "share_pct": 100 * v["us"] / n / 1e3 / kernel_ms,
                      "nodes": v["nodes"] // n} for op, v in ops.items()), key=lambda r: -r["ms"])
    by_shape = sorted(({"op": key[0], "m": key[1], "k": key[2], "n": key[3], "nodes": v["nodes"] // n,
                        "ms": v["us"] / n / 1e3, "gop_s": 2 * v["macs"] / v["us"] / 1e3}
                       for key, v in shapes.items() if v["us"]), key=lambda r: -r["ms"])
    return {"runs": len(runs), "model_run_ms_median": run_ms, "kernel_ms": kernel_ms,
            "overhead_ms": sum(r["dur"] for r in runs) / n / 1e3 - kernel_ms, "ops": per_op,
            "matmul": {"gop_per_call": 2 * mm_macs / n / 1e9, "ms": mm_us / n / 1e3,
                       "share_pct": 100 * mm_us / n / 1e3 / kernel_ms if kernel_ms else 0.0,
                       "kernel_gop_s": 2 * mm_macs / mm_us / 1e3 if mm_us else None},
            "matmul_by_shape": by_shape}


def profile(path: Path, config: Config, feeds: dict, runs: int, folder: Path) -> dict:
    sess = session(path, config, profile_prefix=folder / config.name.replace(" ", "_").replace("/", "_"))
    sess.run(None, feeds)  # warm-up, dropped from the figures below
    for _ in range(runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    out = parse_trace(trace, skip_runs=1)
    out["trace"] = str(trace)
    return out


# ---------------------------------------------------------------------------------------------


def timed_phase(configs: list[Config], paths: dict, outputs, feeds, ceiling_calls: dict, args):
    """Sessions for `configs`, timed in interleaved rounds with the matmul-ceiling calls: (times,
    outputs, the contention seen meanwhile); the sessions are freed after."""
    snap = load_snapshot()
    sessions = {c.name: session(paths[c.graph], c) for c in configs}
    calls = {name: (lambda s=s: s.run(outputs, feeds)) for name, s in sessions.items()}
    calls.update(ceiling_calls)
    times, outs = time_interleaved(calls, warmup=args.warmup, repeats=args.repeats, gap=args.gap)
    return times, outs, contention(snap, load_snapshot())


def run(args) -> dict:
    import onnx
    import onnxruntime

    from vlrt.runtime.bundle import Bundle

    progress = stages()
    t_start, snap_start = time.perf_counter(), load_snapshot()
    work = Path(args.workdir)
    progress(f"bundle ({args.config}) in {work}")
    bundle_dir = random_bundle(work, args.config)
    bundle = Bundle.open(bundle_dir)
    calib = calibration_videos(work / "calib", args.calib_videos)
    engines = build_engines(bundle_dir, calib, progress)
    t_prepared = time.perf_counter()
    snap_measure = load_snapshot()

    v = bundle.manifest["model"]["vision"]
    frames = args.frames or bundle.manifest["max_frames"]
    tokens = (v["image_size"] // v["patch_size"]) ** 2 + 1
    size = bundle.manifest["preprocessing"]["size"]
    rng = np.random.default_rng(0)
    feeds = {"pixels": rng.standard_normal((args.videos, frames, 3, size, size), dtype=np.float32),
             "frame_mask": np.ones((args.videos, frames), np.float32)}
    paths = {"fp32": bundle.graph_path("video"), **{name: e["path"] for name, e in engines.items()}}
    outputs = list(bundle.outputs("video"))
    mlp = v.get("mlp_width") or 4 * v["width"]
    micro_shape = (args.videos * frames * tokens, v["width"], mlp)

    progress(f"matmul ceiling at M x K x N = {micro_shape}, {args.threads} threads")
    ceiling_runs = [micro_ceiling(args.threads, *micro_shape, args.micro_repeats)]
    per_round = 5  # products per ceiling sample in each round
    ceiling_calls = {ceiling_name(t): ceiling_call(t, *micro_shape, per_round) for t in sorted({args.threads, 1})}

    # Phase 1: the engines, default session options
    configs = [Config("fp32", "fp32", args.threads)] + [Config(name, name, args.threads) for name in engines]
    progress(f"timing {len(configs)} graphs, {args.repeats} interleaved rounds")
    times1, out1, phase1 = timed_phase(configs, paths, outputs, feeds, ceiling_calls, args)
    reference = out1["fp32"][0]
    median = {name: statistics.median(t) for name, t in times1.items()}
    best_engine = min(engines, key=lambda name: median[name])

    # Phase 2: session-option variants of the fastest int8 engine, its default session among them
    base = f"{best_engine} (default options)"
    variants = [Config(base, best_engine, args.threads),
                Config(f"{best_engine}, intra-op spinning off", best_engine, args.threads,
                       entries={"session.intra_op.allow_spinning": "0"}),
                Config(f"{best_engine}, 1 intra-op thread", best_engine, 1),
                Config(f"{best_engine}, ORT_ENABLE_EXTENDED", best_engine, args.threads, "EXTENDED"),
                Config(f"{best_engine}, ORT_ENABLE_BASIC (unfused)", best_engine, args.threads, "BASIC"),
                Config(f"{best_engine}, dynamic_block_base=4", best_engine, args.threads,
                       entries={"session.dynamic_block_base": "4"})]
    progress(f"timing {len(variants)} session variants of {best_engine}, {args.repeats} interleaved rounds")
    times2, out2, phase2 = timed_phase(variants, paths, outputs, feeds, ceiling_calls, args)
    gop = 2 * math.prod(micro_shape) / 1e9
    in_rounds = {phase: {t: {"gop_s_median": gop * per_round / statistics.median(times[ceiling_name(t)]),
                             "gop_s_best": gop * per_round / min(times[ceiling_name(t)])}
                         for t in sorted({args.threads, 1})}
                 for phase, times in ((1, times1), (2, times2))}

    n_frames = args.videos * frames
    rows = []
    for phase, cfgs, times, outs in ((1, configs, times1, out1), (2, variants, times2, out2)):
        for c in cfgs:
            t = times[c.name]
            med = statistics.median(t)
            rows.append({"name": c.name, "phase": phase, "config": c.describe(),
                         "frames_per_s": n_frames / med, "median_s": med, "min_s": min(t), "max_s": max(t),
                         "runs": len(t), "min_cos_video_vs_fp32": min_cosine(reference, outs[c.name][0])})
    fp32_fps = next(r["frames_per_s"] for r in rows if r["name"] == "fp32")
    base_fps = next(r["frames_per_s"] for r in rows if r["name"] == base)
    for r in rows:
        r["vs_fp32"] = r["frames_per_s"] / fp32_fps
        if r["phase"] == 2:
            r["vs_best_engine_default_same_rounds"] = r["frames_per_s"] / base_fps
    best = max((r for r in rows if r["phase"] == 2), key=lambda r: r["frames_per_s"])["name"]

    progress(f"profiling {len(configs) + len(variants) - 1} configurations, {args.profile_runs} calls each")
    snap = load_snapshot()
    traces = work / "traces"
    traces.mkdir(exist_ok=True)
    profiles = {}
    for c in configs + variants[1:]:
        profiles[c.name] = profile(paths[c.graph], c, feeds, args.profile_runs, traces)
    profiles[base] = profiles[best_engine]  # the same session settings
    phase3 = contention(snap, load_snapshot())

    progress("matmul ceiling again")
    ceiling_runs.append(micro_ceiling(args.threads, *micro_shape, args.micro_repeats))
    # per op: the faster of the start and end runs, by best call and by median call
    ceiling = {name: {**min((run[name] for run in ceiling_runs), key=lambda x: x["ms_best"]),
                      "ms_median": min(run[name]["ms_median"] for run in ceiling_runs),
                      "gop_s_median": max((run[name]["gop_s_median"] or 0 for run in ceiling_runs)) or None}
               for name in ceiling_runs[0]}
    ceiling_1t = micro_ceiling(1, *micro_shape, args.micro_repeats)
    for r in rows:
        p = profiles[r["name"]]
        ceil = in_rounds[r["phase"]][r["config"]["threads"]]  # same rounds, same threads
        r["matmul_gop_per_call"] = p["matmul"]["gop_per_call"]
        r["matmul_kernel_gop_s"] = p["matmul"]["kernel_gop_s"]
        r["encoder_gop_s"] = p["matmul"]["gop_per_call"] / r["median_s"]
        r["encoder_gop_s_best_call"] = p["matmul"]["gop_per_call"] / r["min_s"]
        r["int8_ceiling_same_rounds_gop_s"] = ceil["gop_s_median"]
        r["encoder_pct_of_int8_ceiling"] = 100 * r["encoder_gop_s"] / ceil["gop_s_median"]  # median / median
        r["encoder_pct_of_int8_ceiling_best"] = 100 * r["encoder_gop_s_best_call"] / ceil["gop_s_best"]  # best / best
    snap_end = load_snapshot()
    return {
        "benchmark": "profile-int8", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "setup": {"model": f"{args.config} + seqTransf head, random weights", "videos": args.videos, "frames": frames,
                  "tokens_per_frame": tokens, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                  "gap_s": args.gap, "profile_runs": args.profile_runs, "micro_repeats": args.micro_repeats,
                  "inputs": "standard normal pixels, seed 0", "calibration_videos": args.calib_videos},
        "engines": {name: {k: (str(v) if isinstance(v, Path) else v) for k, v in e.items()} for name, e in engines.items()},
        "seconds": {"prepare (bundle, videos, engines)": round(t_prepared - t_start, 1),
                    "measure": round(time.perf_counter() - t_prepared, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "contention": {"whole run": contention(snap_start, snap_end), "measurement": contention(snap_measure, snap_end),
                       "timing engines": phase1, "timing session variants": phase2, "profiling": phase3},
        "ceiling": {"shape_mkn": list(micro_shape), "threads": args.threads, "best_of_start_and_end": ceiling,
                    "runs": ceiling_runs, "one_thread": ceiling_1t, "products_per_round_sample": per_round,
                    "matmulinteger_in_rounds": {f"phase {ph}": {f"{t} thread{'s' if t > 1 else ''}": v for t, v in d.items()}
                                                for ph, d in in_rounds.items()}},
        "best_engine": best_engine, "before": "int8 dynamic", "after": best,
        "rows": rows,
        "profiles": profiles,
    }


# ---------------------------------------------------------------------------------------------
# markdown


def op_ms(profile: dict, *ops: str) -> float:
    return sum(r["ms"] for r in profile["ops"] if r["op"] in ops)


def op_share(profile: dict, *ops: str) -> float:
    return sum(r["share_pct"] for r in profile["ops"] if r["op"] in ops)


def op_table(profile: dict, top: int) -> list[str]:
    lines = ["| op (as ORT runs it) | ms per call | share of kernel time | nodes |", "|---|---|---|---|"]
    for r in profile["ops"][:top]:
        lines.append(f"| {r['op']} | {r['ms']:.1f} | {r['share_pct']:.1f}% | {r['nodes']} |")
    rest = profile["ops"][top:]
    if rest:
        lines.append(f"| other ({len(rest)} op types) | {sum(r['ms'] for r in rest):.1f} | "
                     f"{sum(r['share_pct'] for r in rest):.1f}% | {sum(r['nodes'] for r in rest)} |")
    lines.append(f"| **kernels, total** | **{profile['kernel_ms']:.1f}** | 100% | {sum(r['nodes'] for r in profile['ops'])} |")
    lines.append(f"| framework overhead (model_run - kernels) | {profile['overhead_ms']:.1f} | - | - |")
    return lines


def shape_table(profile: dict, top: int) -> list[str]:
    lines = ["| MatMul-type op | M x K x N | nodes | ms per call | GOP/s |", "|---|---|---|---|---|"]
    for r in profile["matmul_by_shape"][:top]:
        lines.append(f"| {r['op']} | {r['m']} x {r['k']} x {r['n']} | {r['nodes']} | {r['ms']:.1f} | {r['gop_s']:.0f} |")
    return lines


def summary(result: dict) -> list[str]:
    """The 'what this says' paragraph, every figure taken from the result."""
    rows = {r["name"]: r for r in result["rows"]}
    prof = result["profiles"]
    before, after = result["before"], result["after"]
    pb, pa = prof[before], prof[after]
    c = result["ceiling"]["best_of_start_and_end"]
    ceil_i8, ceil_dq, ceil_f = (c["MatMulInteger (u8 x s8)"]["gop_s_median"], c["DynamicQuantizeMatMul"]["gop_s_median"],
                                c["MatMul fp32"]["gop_s_median"])
    m, k, n = result["ceiling"]["shape_mkn"]
    rb, ra = rows[before], rows[after]
    dqmm = next((r for r in pb["ops"] if r["op"] == "DynamicQuantizeMatMul"), None)
    s = []
    s.append(f"The int8 dynamic engine encodes {rb['frames_per_s']:.1f} frames/s ({rb['vs_fp32']:.2f}x fp32). "
             f"Its MatMul-type nodes do {pb['matmul']['gop_per_call']:.1f} GOP per call and take "
             f"{pb['matmul']['share_pct']:.0f}% of the kernel time, at {pb['matmul']['kernel_gop_s']:.0f} GOP/s while "
             f"they run; over the whole call the encoder reaches {rb['encoder_gop_s']:.0f} GOP/s, "
             f"{rb['encoder_pct_of_int8_ceiling']:.0f}% of the int8 GEMM ceiling timed in the same rounds "
             f"({rb['int8_ceiling_same_rounds_gop_s']:.0f} GOP/s; {rb['encoder_pct_of_int8_ceiling_best']:.0f}% best call "
             f"to best round). Alone, at {m} x {k} x {n} (median calls): MatMulInteger u8 x s8 {ceil_i8:.0f} GOP/s, "
             f"the fused DynamicQuantizeMatMul "
             f"at that shape {ceil_dq:.0f} GOP/s"
             + (", so quantizing the activations on the fly costs little by itself" if ceil_dq >= 0.9 * ceil_i8 else "")
             + f"; fp32 MatMul {ceil_f:.0f} GFLOP/s.")
    if dqmm:
        s.append(f"DynamicQuantizeMatMul alone takes {dqmm['share_pct']:.0f}% ({dqmm['ms']:.0f} ms per call, "
                 f"{dqmm['nodes']} nodes).")
    basic = next((name for name in prof if name.endswith("ORT_ENABLE_BASIC (unfused)")), None)
    if basic and any(r["op"] == "MatMulInteger" for r in prof[basic]["ops"]):
        pu = prof[basic]
        s.append(f"Unfused (ORT_ENABLE_BASIC, {result['best_engine']}), the same work splits into MatMulInteger "
                 f"{op_share(pu, 'MatMulInteger'):.0f}%, DynamicQuantizeLinear {op_share(pu, 'DynamicQuantizeLinear'):.1f}%, "
                 f"Cast {op_share(pu, 'Cast'):.1f}% and Mul {op_share(pu, 'Mul'):.1f}% (the dequantizing scale "
                 f"multiplications and QuickGelu's x * sigmoid); DynamicQuantizeLinear alone on a {m} x {k} input "
                 f"takes {c['DynamicQuantizeLinear']['ms_best']:.2f} ms in the micro-benchmark.")
    elif basic:
        s.append(f"Unfused (ORT_ENABLE_BASIC, {result['best_engine']}), its largest ops are " +
                 ", ".join(f"{r['op']} {r['share_pct']:.0f}%" for r in prof[basic]["ops"][:5]) + ".")
    others = [(op, op_share(pb, op)) for op in ("Conv", "QuickGelu", "Transpose", "MatMul", "FusedMatMul",
                                                "LayerNormalization", "Softmax", "Split", "Add")]
    others = [f"{op} {share:.1f}%" for op, share in sorted(others, key=lambda x: -x[1]) if share >= 0.5]
    if others:
        s.append(f"Outside the int8 products, int8 dynamic spends: {', '.join(others)} of its kernel time "
                 "(Conv is the fp32 patch embedding, MatMul/FusedMatMul the fp32 attention products q.k and attn.v), "
                 f"and {pb['overhead_ms']:.0f} ms per call in the framework between kernels.")
    one = next((r for name, r in rows.items() if name.endswith(", 1 intra-op thread")), None)
    if one is not None and one.get("vs_best_engine_default_same_rounds", 0) > 1:
        busy = result["contention"]["timing session variants"].get("busy_outside_this_process_pct")
        s.append(f"One intra-op thread beat {result['setup']['threads']} by "
                 f"{100 * (one['vs_best_engine_default_same_rounds'] - 1):.0f}% in the same rounds"
                 + (f", while {busy}% of the machine's CPU time went to other processes, consistent with a second "
                    "pool thread waiting for a core and every parallel section waiting for it; on an idle machine "
                    "this should be measured again" if busy is not None else "") + ".")
    s.append(f"The fastest configuration found is {after}: {ra['frames_per_s']:.1f} frames/s "
             f"({ra['vs_fp32']:.2f}x fp32; {ra.get('vs_best_engine_default_same_rounds', 1):.2f}x its engine's default "
             f"session in the same rounds), {ra['encoder_gop_s']:.0f} GOP/s, {ra['encoder_pct_of_int8_ceiling']:.0f}% of "
             f"the int8 ceiling at its thread count in the same rounds ({ra['int8_ceiling_same_rounds_gop_s']:.0f} GOP/s); "
             "its largest ops: " +
             ", ".join(f"{r['op']} {r['share_pct']:.0f}%" for r in pa["ops"][:4]) + ".")
    return [" ".join(s)]


def markdown(result: dict) -> str:
    s, v = result["setup"], result["versions"]
    lines = [f"# Where the int8 video encoder's time goes, per op, CPU ({result['date']})", "",
             f"{result['machine']}. {s['model']}; {s['videos']} video x {s['frames']} frames ({s['tokens_per_frame']} "
             f"tokens each) per call; {s['threads']} intra-op threads unless said; {s['inputs']}. onnxruntime "
             f"{v['onnxruntime']}, onnx {v['onnx']}. Wall time: median of {s['repeats']} calls after {s['warmup']} "
             f"warm-up, profiler off, configurations interleaved round by round ({s['gap_s']} s idle between calls); "
             f"engines in one set of rounds, session variants of the fastest engine ({result['best_engine']}) in "
             f"another, its default session among them. Per op: {s['profile_runs']} profiled calls after 1 warm-up, "
             "separate sessions.", "",
             contention_line(result["contention"]["whole run"]) + " Per phase: " + "; ".join(
                 f"{name} {c['loadavg_start'][0]} -> {c['loadavg_end'][0]}"
                 + (f" ({c['busy_outside_this_process_pct']}% busy elsewhere)" if "busy_outside_this_process_pct" in c else "")
                 for name, c in result["contention"].items() if name not in ("whole run", "measurement")) + ".", "",
             f"Run time: {result['seconds']['total']:.0f} s ({result['seconds']['prepare (bundle, videos, engines)']:.0f} s "
             f"making the bundle, videos and engines, engines "
             f"{'reused' if all(e['reused'] for e in result['engines'].values()) else 'built'}; "
             f"{result['seconds']['measure']:.0f} s measuring).", "",
             "## Wall time per call", "",
             "| configuration | frames/s | × fp32 | × engine default, same rounds | median ms (min-max, runs) | "
             "MatMul-type GOP/s while running | encoder GOP/s, median / best call | int8 ceiling, same rounds and "
             "threads, GOP/s | % of int8 ceiling, median / best | min cos vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        same = f"{r['vs_best_engine_default_same_rounds']:.2f}" if "vs_best_engine_default_same_rounds" in r else "-"
        kernel = f"{r['matmul_kernel_gop_s']:.0f}" if r["matmul_kernel_gop_s"] else "-"
        mark = " **(before)**" if r["name"] == result["before"] else (" **(after)**" if r["name"] == result["after"] else "")
        lines.append(f"| {r['name']}{mark} | {r['frames_per_s']:.1f} | {r['vs_fp32']:.2f} | {same} | "
                     f"{1e3 * r['median_s']:.0f} ({1e3 * r['min_s']:.0f}-{1e3 * r['max_s']:.0f}, {r['runs']}) | {kernel} | "
                     f"{r['encoder_gop_s']:.0f} / {r['encoder_gop_s_best_call']:.0f} | "
                     f"{r['int8_ceiling_same_rounds_gop_s']:.0f} | "
                     f"{r['encoder_pct_of_int8_ceiling']:.0f}% / {r['encoder_pct_of_int8_ceiling_best']:.0f}% | "
                     f"{r['min_cos_video_vs_fp32']:.6f} |")
    m, k, n = result["ceiling"]["shape_mkn"]
    lines += ["", "× fp32 compares with the fp32 row of the first rounds; × engine default compares a session variant "
              "with the engine's default session timed in the same rounds. GOP/s: 2 x multiply-adds of the MatMul-type "
              "nodes (counted from the profiled shapes) per second of those nodes' kernel time, or of the call's wall time "
              "(median call, best call). Int8 ceiling: a MatMulInteger-only graph at the encoder's MLP shape (below), "
              "timed in the same interleaved rounds as the row, at the row's thread count (median round); % of int8 "
              "ceiling: the encoder's median call over that, and best call over the ceiling's best round.",
              "", f"## Ceiling: one {m} x {k} x {n} product (the encoder's MLP shape), same threads", "",
              f"| op | {result['ceiling']['threads']} threads: best ms | GOP/s | median ms | GOP/s | 1 thread: best ms | GOP/s |",
              "|---|---|---|---|---|---|---|"]
    for name, c in result["ceiling"]["best_of_start_and_end"].items():
        one = result["ceiling"]["one_thread"][name]
        fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        lines.append(f"| {name} | {c['ms_best']:.2f} | {fmt(c['gop_s'])} | {c['ms_median']:.2f} | {fmt(c['gop_s_median'])} | "
                     f"{one['ms_best']:.2f} | {fmt(one['gop_s'])} |")
    lines += ["", f"Best and median of {result['setup']['micro_repeats']} calls, the better of the runs at the start and "
              "at the end of the benchmark (1 thread: at the end). In the interleaved rounds (the ceiling the table "
              f"above divides by; {result['ceiling']['products_per_round_sample']} products per round, median / best "
              "round): " + "; ".join(f"{ph}: " + ", ".join(f"{t} {v['gop_s_median']:.0f} / {v['gop_s_best']:.0f} GOP/s"
                                                        for t, v in d.items())
                                  for ph, d in result["ceiling"]["matmulinteger_in_rounds"].items()) + ".",
              "", "## What this says", ""]
    lines += summary(result)
    lines += ["", "## Per op", "", "Kernel time per call summed per op type from ONNX Runtime's profiler, top 12.", ""]
    order = [result["before"], result["after"]] + [r["name"] for r in result["rows"]
                                                   if r["name"] not in (result["before"], result["after"])]
    rows = {r["name"]: r for r in result["rows"]}
    seen: dict[str, str] = {}  # session settings -> the configuration shown with them
    for name in order:
        key = json.dumps(rows[name]["config"], sort_keys=True)
        tag = " (before)" if name == result["before"] else (" (after: the fastest configuration)" if name == result["after"] else "")
        if key in seen:
            if tag:
                lines += [f"### {name}{tag}", "", f"The same session settings as {seen[key]} above.", ""]
            continue
        seen[key] = name
        p = result["profiles"][name]
        lines += [f"### {name}{tag}", "", *op_table(p, 12), ""]
        if tag:
            lines += ["MatMul-type nodes by shape (M counts every batched row):", "", *shape_table(p, 8), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_args(p, "profile-int8", "smoke run: tiny model, 1 warm-up + 2 rounds, results in the workdir")
    p.add_argument("--videos", type=int, default=1)
    p.add_argument("--frames", type=int, default=0, help="frames per video (default: the bundle's max_frames, 12)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--gap", type=float, default=0.05, help="idle seconds between timed calls")
    p.add_argument("--profile-runs", type=int, default=2)
    p.add_argument("--micro-repeats", type=int, default=15)
    p.add_argument("--calib-videos", type=int, default=8)
    args = p.parse_args()
    run_workload(p, args, "profile-int8", dict(warmup=1, repeats=2, profile_runs=1, micro_repeats=3, calib_videos=2),
                 run, markdown)


if __name__ == "__main__":
    main()
