"""Text-query latency: one query string through `Runtime.encode_text`, and a query string to
ranked paths on a 100,000-video index, on ViT-B/32's text tower (random-weight full-size bundle).

(a) `Runtime.encode_text(query)`, batch 1, per backend, engine and thread count (2 and 1):
      ort-cpu fp32                      the bundle's text.onnx
      ort-cpu int8 dynamic              build_engine(precision="int8", int8_mode="dynamic")
      ort-cpu int8 dynamic + fused attention    ... fuse_attention=True
      openvino fp32, openvino int8      when `openvino` is in vlrt.runtime.backends.names() (checked at
                                        run time; skipped with a note otherwise); its int8 engine is
                                        build_engine(backend="openvino", precision="int8", calib=DIR)
    Three figures per call, p50 and p99 over --calls calls after --warmup, all from the same
    `encode_text` call: the whole call; its tokenization (`Runtime.tokenize`, which encode_text
    calls, timed by a wrapper set on the Runtime instance; the CLIP BPE with its per-word cache
    warm, as in a running service); and the rest of the call, the text graph (its run through the
    backend's runner, and taking the output). The text graph has a fixed (1, max_words) input, so
    its time does not depend on the query's length. Configurations are interleaved call by call (a
    burst of load from elsewhere falls on all of them alike), with --gap seconds idle between
    calls, as between queries arriving one at a time.

(b) Search on an index of --vectors random unit vectors of the bundle's embedding dimension. The
    index is written through vlrt's own writer: `vlrt.runtime.index.IndexWriter`, the class
    `Index.create` opens, takes precomputed embeddings (`append(embeddings, rows)`, one metadata
    row per embedding, committed as a shard) and writes faiss.index (`build_faiss()`); index.json
    records the bundle and the int8 dynamic engine as `Index.create` would, so `Index.open` +
    `Index.search` run exactly as on an index `vlrt embed` made. Timed, p50/p99 over --calls:
      query -> paths    `index.search(text, k)`: tokenize, encode_text with the recorded engine,
                        faiss inner-product search over all rows, (path, score) pairs
      search step       `index.search(embedding, k)`: the same call given the query's embedding
      faiss alone       `faiss.IndexFlatIP.search` on an index built from `index.embeddings`, as
                        Index.search builds its own: what the search step costs without vlrt
    and the one-time costs: `Index.open` (reads the shards), loading the query runtime
    (`Index.runtime`) and the first search (builds the in-memory faiss index).

Load averages and the CPU time used outside this process are recorded for each part.

    python benchmarks/query_latency.py                  # full run: ~4 min when the workdir holds the bundle
                                                        # and engines (profile_int8.py makes the same bundle and
                                                        # ort-cpu engines); exporting and building them adds ~5 min
    python benchmarks/query_latency.py --quick          # smoke run: tiny model, 1,000 vectors, few calls

Writes benchmarks/results/query-latency-cpu.json and .md (with --quick: into the workdir).
"""
from __future__ import annotations

import argparse
import platform
import shutil
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

SUBJECTS = ["a man", "a woman", "two children", "a dog", "a chef", "a cyclist", "a band", "an old car"]
ACTIONS = ["riding a horse", "cooking pasta", "playing guitar", "running", "talking to a crowd", "swimming",
           "dancing", "driving"]
PLACES = ["on a beach at sunset", "in a small kitchen", "on a busy street", "in the snow", "at a stadium",
          "in a forest", "on stage", "under the rain"]


def queries(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{SUBJECTS[rng.integers(8)]} {ACTIONS[rng.integers(8)]} {PLACES[rng.integers(8)]}" for _ in range(n)]


def pct(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()),
            "max_ms": float(a.max()), "calls": len(a)}


# ---------------------------------------------------------------------------------------------
# (a) encode_text


def engine_settings(bundle: Path, calib: Path, progress) -> tuple[list[dict], list[str]]:
    """(backend, precision name, engine key or None) per row, and notes on what was skipped."""
    from vlrt.build.engine import build_engine
    from vlrt.runtime import backends

    rows = [{"name": "ort-cpu fp32", "backend": "ort-cpu", "engine": None}]
    for name, kw in (("ort-cpu int8 dynamic", {}), ("ort-cpu int8 dynamic + fused attention", {"fuse_attention": True})):
        built = build_engine(bundle, backend="ort-cpu", precision="int8", int8_mode="dynamic", gate=False,
                             progress=progress, **kw)
        rows.append({"name": name, "backend": "ort-cpu", "engine": built.key})
    notes = []
    if "openvino" not in backends.names():
        notes.append("openvino: not registered in this checkout (vlrt.runtime.backends.names() = "
                     f"{', '.join(backends.names())}); its rows were skipped")
        return rows, notes
    spec = backends.get("openvino")
    for precision, kw in (("fp32", {}), ("int8", {"calib": calib})):
        name = f"openvino {precision}"
        try:
            if precision == "fp32" and not spec.needs_engine:
                rows.append({"name": name, "backend": "openvino", "engine": None})
                continue
            built = build_engine(bundle, backend="openvino", precision=precision, gate=False, progress=progress, **kw)
            rows.append({"name": name, "backend": "openvino", "engine": built.key})
        except Exception as exc:  # a backend being written may refuse; the note says how
            notes.append(f"{name}: not built ({type(exc).__name__}: {exc})")
    return rows, notes


def load_config(bundle: Path, setting: dict, threads: int):
    """The Runtime, with its tokenize timed: (runtime, list the durations are appended to)."""
    from vlrt import Runtime

    rt = Runtime.load(bundle, backend=setting["backend"], engine=setting["engine"], threads=threads)
    spent: list[float] = []
    tokenize = rt.tokenize

    def timed_tokenize(texts):
        t0 = time.perf_counter()
        ids = tokenize(texts)
        spent.append(time.perf_counter() - t0)
        return ids

    rt.tokenize = timed_tokenize  # encode_text calls self.tokenize: this instance's, timed
    return rt, spent


def text_latency(bundle: Path, settings: list[dict], threads_list: list[int], texts: list[str], *, warmup: int,
                 calls: int, gap: float, progress) -> tuple[list[dict], list[str]]:
    configs, notes = [], []
    for setting in settings:
        for threads in threads_list:
            name = f"{setting['name']}, {threads} thread{'s' if threads > 1 else ''}"
            try:
                rt, spent = load_config(bundle, setting, threads)
            except Exception as exc:
                notes.append(f"{name}: not loaded ({type(exc).__name__}: {exc})")
                continue
            configs.append({"name": name, "backend": setting["backend"], "engine": setting["engine"],
                            "threads": threads, "rt": rt, "spent": spent,
                            "tokenize": [], "graph": [], "encode_text": []})
    ref = {}
    progress(f"encode_text: {len(configs)} configurations x {calls} calls, interleaved")
    for i in range(warmup + calls):
        text = texts[i % len(texts)]
        for c in configs:
            c["spent"].clear()
            t0 = time.perf_counter()
            emb = c["rt"].encode_text(text)
            total = time.perf_counter() - t0
            time.sleep(gap)
            if len(c["spent"]) != 1:
                raise SystemExit("Runtime.encode_text no longer calls Runtime.tokenize once per call; "
                                 "this benchmark's tokenization timing needs updating")
            if i >= warmup:
                c["tokenize"].append(c["spent"][0])
                c["graph"].append(total - c["spent"][0])
                c["encode_text"].append(total)
            elif i == 0:
                ref[c["name"]] = emb
    base = ref[configs[0]["name"]] if configs else None
    rows = []
    for c in configs:
        emb = ref[c["name"]]
        rows.append({"name": c["name"], "backend": c["backend"], "engine": c["engine"], "threads": c["threads"],
                     "engine_line": c["rt"].engine_line(),
                     "tokenize": pct(c["tokenize"]), "graph": pct(c["graph"]), "encode_text": pct(c["encode_text"]),
                     "cos_vs_first_row": float((emb[0] * base[0]).sum() / np.linalg.norm(emb[0]) / np.linalg.norm(base[0]))})
    return rows, notes


# ---------------------------------------------------------------------------------------------
# (b) index search


def write_index(root: Path, bundle: Path, engine_info: dict, n: int, shard_size: int, dim: int) -> dict:
    """An index of `n` random unit vectors through IndexWriter, recorded as Index.create records
    an index embedded with `engine_info`'s engine (exact preprocessing, no per-frame embeddings)."""
    from vlrt.runtime.bundle import MANIFEST, sha256_file
    from vlrt.runtime.index import IndexWriter

    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    encoder = {"engine": engine_info["engine"], "skip_similar": None, "mode": "exact", "keep_frames": False}
    with IndexWriter(root, bundle=bundle, manifest_sha256=sha256_file(bundle / MANIFEST), embed_dim=dim,
                     encoder=encoder, engine=engine_info) as writer:
        for start in range(0, n, shard_size):
            count = min(shard_size, n - start)
            emb = rng.standard_normal((count, dim), dtype=np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            rows = [{"path": f"/videos/{start + i:06d}.mp4", "frames": list(range(0, 360, 30)), "num_frames": 360,
                     "fps": 30.0, "duration": 12.0, "width": 640, "height": 360, "codec": "h264",
                     "file_size": 3_000_000 + start + i, "mtime_ns": 1_700_000_000_000_000_000 + start + i}
                    for i in range(count)]
            writer.append(emb, rows)
        total = writer.build_faiss("flat")  # the exact search its figures were recorded with (benchmarks/ann.py: the others)
    return {"vectors": total, "dim": dim, "shards": -(-n // shard_size), "shard_size": shard_size,
            "write_s": time.perf_counter() - t0,
            "bytes_on_disk": sum(p.stat().st_size for p in root.rglob("*") if p.is_file())}


def search_latency(root: Path, texts: list[str], *, threads: int, k: int, warmup: int, calls: int, gap: float) -> dict:
    import faiss

    from vlrt import Index

    t0 = time.perf_counter()
    index = Index.open(root)
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.runtime(threads=threads)  # the recorded engine, with these threads
    runtime_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = index.search(texts[0], k=k)
    first_s = time.perf_counter() - t0
    # one at a time, as the text queries are: dynamic int8 quantizes each call's activations with one
    # scale for the whole batch, so a query encoded within a batch gets a slightly different embedding
    vectors = [index.runtime().encode_text(text)[0] for text in texts]
    flat = faiss.IndexFlatIP(index.embeddings.shape[1])
    flat.add(np.ascontiguousarray(index.embeddings, np.float32))
    e2e, step, raw, agree = [], [], [], 0
    for i in range(warmup + calls):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        hits = index.search(text, k=k)
        t1 = time.perf_counter()
        time.sleep(gap)
        t2 = time.perf_counter()
        by_vector = index.search(vectors[i % len(texts)], k=k)
        t3 = time.perf_counter()
        time.sleep(gap)
        t4 = time.perf_counter()
        flat.search(vectors[i % len(texts)][None], k)
        t5 = time.perf_counter()
        time.sleep(gap)
        if i >= warmup:
            e2e.append(t1 - t0)
            step.append(t3 - t2)
            raw.append(t5 - t4)
            agree += [p for p, _ in hits] == [p for p, _ in by_vector]
    return {"vectors": len(index), "k": k, "threads": threads, "engine_line": index.runtime().engine_line(),
            "faiss_omp_threads": faiss.omp_get_max_threads(), "open_s": open_s, "runtime_load_s": runtime_s,
            "first_search_s": first_s,
            "first_result": first[:3], "query_to_paths": pct(e2e), "search_step": pct(step), "faiss_alone": pct(raw),
            "encode_share_of_p50_pct": 100 * (1 - statistics.median(step) / statistics.median(e2e)),
            "same_top_k_text_vs_vector": f"{agree}/{calls}"}


# ---------------------------------------------------------------------------------------------


def run(args) -> dict:
    import onnxruntime

    from vlrt.runtime import backends
    from vlrt.runtime.bundle import Bundle

    progress = stages()
    t_start, snap_start = time.perf_counter(), load_snapshot()
    work = Path(args.workdir)
    progress(f"bundle ({args.config}) in {work}")
    bundle_dir = random_bundle(work, args.config)
    bundle = Bundle.open(bundle_dir)
    calib = calibration_videos(work / "calib", args.calib_videos)
    settings, notes = engine_settings(bundle_dir, calib, progress)
    t_prepared = time.perf_counter()
    texts = queries(64)
    threads = [int(t) for t in args.threads.split(",")]

    snap = load_snapshot()
    text_rows, load_notes = text_latency(bundle_dir, settings, threads, texts, warmup=args.warmup, calls=args.calls,
                                         gap=args.gap, progress=progress)
    part_a = contention(snap, load_snapshot())
    notes += load_notes

    progress(f"index of {args.vectors} vectors")
    snap = load_snapshot()
    int8 = next(s for s in settings if s["name"] == "ort-cpu int8 dynamic")
    from vlrt import Runtime

    info = Runtime.load(bundle_dir, backend="ort-cpu", engine=int8["engine"]).engine_info
    index_root = work / f"index-{args.vectors}"
    written = write_index(index_root, bundle_dir, info, args.vectors, args.shard_size, bundle.embed_dim)
    progress(f"search: {args.calls} queries, k={args.k}")
    search = search_latency(index_root, texts, threads=threads[0], k=args.k, warmup=args.warmup, calls=args.calls,
                            gap=args.gap)
    part_b = contention(snap, load_snapshot())
    snap_end = load_snapshot()
    import faiss

    return {
        "benchmark": "query-latency", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
        "versions": {"onnxruntime": onnxruntime.__version__, "faiss": faiss.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "backends": list(backends.names())},
        "setup": {"model": f"{args.config} + seqTransf head, random weights", "max_words": bundle.max_words,
                  "embed_dim": bundle.embed_dim, "queries": f"{len(texts)} generated captions, cycled",
                  "warmup": args.warmup, "calls": args.calls, "gap_s": args.gap, "threads": threads},
        "seconds": {"prepare (bundle, videos, engines)": round(t_prepared - t_start, 1),
                    "measure": round(time.perf_counter() - t_prepared, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "contention": {"whole run": contention(snap_start, snap_end), "encode_text": part_a, "index search": part_b},
        "notes": notes,
        "encode_text": text_rows,
        "index": written,
        "search": search,
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    v = result["versions"]
    ct = result["contention"]
    lines = [f"# Text-query latency, CPU ({result['date']})", "",
             f"{result['machine']}. {s['model']}: text tower, {s['max_words']} tokens per query, embedding dim "
             f"{s['embed_dim']}. Queries: {s['queries']}, one per call (batch 1). p50/p99 over {s['calls']} calls after "
             f"{s['warmup']} warm-up; configurations interleaved call by call, {s['gap_s']} s idle between calls. "
             f"onnxruntime {v['onnxruntime']}, faiss {v['faiss']}; backends registered: {', '.join(v['backends'])}.", "",
             contention_line(ct["whole run"]) + " Per part: " + "; ".join(
                 f"{name} {c['loadavg_start'][0]} -> {c['loadavg_end'][0]}"
                 + (f" ({c['busy_outside_this_process_pct']}% busy elsewhere)" if "busy_outside_this_process_pct" in c else "")
                 for name, c in ct.items() if name != "whole run") + ".", "",
             f"Run time: {result['seconds']['total']:.0f} s ({result['seconds']['prepare (bundle, videos, engines)']:.0f} s "
             f"making or reusing the bundle and engines, {result['seconds']['measure']:.0f} s measuring).", ""]
    if result["notes"]:
        lines += ["Skipped: " + "; ".join(result["notes"]) + ".", ""]
    lines += ["## Runtime.encode_text, one query", "",
              "| backend, engine, threads | tokenize p50 / p99 ms | text graph p50 / p99 ms | encode_text p50 / p99 ms | "
              "cos vs first row |", "|---|---|---|---|---|"]
    for r in result["encode_text"]:
        t, g, e = r["tokenize"], r["graph"], r["encode_text"]
        lines.append(f"| {r['name']} | {t['p50_ms']:.2f} / {t['p99_ms']:.2f} | {g['p50_ms']:.1f} / {g['p99_ms']:.1f} | "
                     f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f} | {r['cos_vs_first_row']:.6f} |")
    lines += ["", "All three from the same `encode_text` calls: tokenize is `Runtime.tokenize` inside the call (CLIP "
              "BPE, per-word cache warm), text graph the rest of the call (the graph run through the backend's "
              "runner). p50 and p99 are taken per column, so the columns' p99s need not add up. Cosine of the query "
              "embedding to the first row's (random weights: it shows the engines agree, not a trained model's "
              "accuracy).", ""]
    w, q = result["index"], result["search"]
    e2e, step, raw = q["query_to_paths"], q["search_step"], q["faiss_alone"]
    lines += [f"## Search, {w['vectors']:,} vectors, k = {q['k']}", "",
              f"Index written through IndexWriter: {w['shards']} shards of {w['shard_size']:,}, "
              f"{w['bytes_on_disk'] / 1e6:.0f} MB on disk, {w['write_s']:.1f} s to write (with faiss.index). Queries "
              f"encoded by the recorded engine: {q['engine_line']}, {q['threads']} threads; faiss IndexFlatIP "
              f"(exact inner product), {q['faiss_omp_threads']} OpenMP threads.", "",
              "| step | p50 ms | p99 ms | mean ms | max ms |", "|---|---|---|---|---|",
              f"| query string -> encode_text -> search top {q['k']} -> paths (`Index.search(text)`) | "
              f"{e2e['p50_ms']:.1f} | {e2e['p99_ms']:.1f} | {e2e['mean_ms']:.1f} | {e2e['max_ms']:.1f} |",
              f"| search step alone (`Index.search(embedding)`) | {step['p50_ms']:.2f} | {step['p99_ms']:.2f} | "
              f"{step['mean_ms']:.2f} | {step['max_ms']:.2f} |",
              f"| faiss IndexFlatIP.search alone (no vlrt) | {raw['p50_ms']:.2f} | {raw['p99_ms']:.2f} | "
              f"{raw['mean_ms']:.2f} | {raw['max_ms']:.2f} |", "",
              f"One-time: `Index.open` {q['open_s']:.2f} s (reads the shards); loading the query runtime "
              f"{q['runtime_load_s']:.2f} s; first search {q['first_search_s']:.2f} s "
              f"(builds the in-memory faiss index from the loaded rows). Encoding is {q['encode_share_of_p50_pct']:.0f}% "
              f"of the p50 query; text and embedding queries returned the same top {q['k']} in "
              f"{q['same_top_k_text_vs_vector']} calls."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_args(p, "query-latency", "smoke run: tiny model, 1,000 vectors, 20 calls, results in the workdir")
    p.add_argument("--threads", default="2,1", help="intra-op thread counts, comma-separated; the first one searches")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.005, help="idle seconds between calls")
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--shard-size", type=int, default=10_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--calib-videos", type=int, default=8, help="calibration videos for the openvino int8 engine")
    args = p.parse_args()
    run_workload(p, args, "query-latency", dict(warmup=2, calls=20, vectors=1000, shard_size=400, calib_videos=2),
                 run, markdown)


if __name__ == "__main__":
    main()
