"""The vector index at scale: flat against HNSW against IVF-PQ (vlrt/runtime/ann.py) on generated
vectors: recall of the exact top 10, query latency (one query at a time, as a search service
sends them), build time and memory.

Vectors: n unit vectors of d dims around n/50 topics (a topic's videos share a direction, with
noise), queries: random vectors plus noise of half their length; the exact top 10 comes from the flat index.

  python benchmarks/ann.py -o benchmarks/results/ann-cpu.json              # 1,000,000 x 512
  python benchmarks/ann.py --n 100000 -o /tmp/ann.json                     # a smaller run
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import RESULTS, machine, stages, write_result

from vlrt.runtime import ann


def generate(n: int, d: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = max(1, n // 50)
    centre = rng.standard_normal((topics, d), dtype=np.float32)
    x = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):  # in blocks: bounded temporaries
        m = min(100_000, n - start)
        block = centre[rng.integers(topics, size=m)] + 0.8 * rng.standard_normal((m, d), dtype=np.float32)
        x[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    noise = rng.standard_normal((queries, d), dtype=np.float32)
    q = x[rng.integers(n, size=queries)] + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    import faiss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("-o", "--out", default=str(RESULTS / "ann-cpu.json"))
    args = p.parse_args()
    say = stages()
    say(f"generating {args.n:,} x {args.d} ...")
    x, q = generate(args.n, args.d, args.queries)
    result = {"machine": machine(), "n": args.n, "d": args.d, "queries": args.queries, "faiss": faiss.__version__,
              "faiss_threads": faiss.omp_get_max_threads(), "kinds": []}
    exact = None
    for kind in ("flat", "hnsw", "ivfpq"):
        say(f"building {kind} ...")
        t0 = time.perf_counter()
        index = ann.build(x, kind)
        build_s = time.perf_counter() - t0
        if exact is None:  # the flat index, all queries at once: the ground truth
            exact = ann.search(index, x, q, 10)[1]
        say(f"querying {kind} ...")
        times, ids = [], []
        for i in range(len(q)):
            t0 = time.perf_counter()
            ids.append(ann.search(index, x, q[i:i + 1], 10)[1][0])
            times.append(time.perf_counter() - t0)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
        ms = np.asarray(times) * 1000
        size = len(faiss.serialize_index(index))
        result["kinds"].append({
            "kind": kind, "recall_at_10": round(100 * float(recall), 2), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "build_s": round(build_s, 1),
            "index_mb": round(size / 2**20, 1), "mb_per_million": round(size / 2**20 * 1e6 / args.n, 1)})
        say(str(result["kinds"][-1]))
        del index
    write_result(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# The vector index: {r['n']:,} generated vectors x {r['d']} dims", "",
             f"Machine: {r['machine']}; FAISS {r['faiss']} on {r['faiss_threads']} threads. Recall: of the exact top 10 "
             f"(flat), over {r['queries']} queries sent one at a time. IVF-PQ rescores its {ann.REFINE}x10 candidates "
             "exactly with the float vectors, which vlrt's Index holds in memory anyway (not counted in its size).", "",
             "| index | recall@10 (%) | p50 ms | p99 ms | build s | index MiB | MiB per million vectors |",
             "|---|---|---|---|---|---|---|"]
    for k in r["kinds"]:
        lines.append(f"| {k['kind']} | {k['recall_at_10']} | {k['p50_ms']} | {k['p99_ms']} | {k['build_s']} | "
                     f"{k['index_mb']} | {k['mb_per_million']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
