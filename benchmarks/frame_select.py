"""Query-time frame selection and the two-stage search, measured.

1. Retrieval on the embedded model, the 243 held-out synthetic test clips (H.264, the real
   pipeline, an index that keeps per-frame embeddings): the video embedding (single vector)
   against frame selection with k = 1..4 over every video, and reranking the 50 best by video
   embedding with k = 2; text->video R@1/5, R@1 on the captions with motion, and the direction
   and speed probes (own caption against the twin caption, chance 50%).
2. Two-stage against brute force on generated features (no decoding): 10,000 videos x 12
   frames x 512 dims (fp16, as an index stores them) around 1,000 topics, 200 queries: the
   recall of the exact frame-selection top 10 at rerank depths 50, 100 and 200 (first stage:
   FAISS flat inner product on the video embedding), and the time per query of each.

  python benchmarks/frame_select.py -o benchmarks/results/frame-select-cpu.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, stages, write_result

from vlrt.bench.metrics import ranks, recall_report
from vlrt.runtime.scoring import frame_rescorer, frame_scores, two_stage


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embedded_model(work: Path, say) -> dict:
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench import synth
    from vlrt.bench.quality import write_gallery
    from vlrt.runtime.index import Index

    bundle = work / "bundle"
    if not (bundle / "vlrt.json").is_file():
        unpack_default_bundle(bundle)
    paths, scenes = write_gallery(work / "clips", None)
    index_dir = work / "index-frames"
    say(f"embedding {len(paths)} clips with per-frame embeddings ...")
    with Index.create(index_dir, bundle, keep_frames=True) as index:
        index.add(paths)
    index = Index.open(index_dir)
    order = [index.paths.index(str(Path(p).resolve())) for p in paths]  # caption i <-> clip i
    videos, frames = index.embeddings[order], np.asarray(index.frames[order], np.float32)
    rt = index.runtime()
    text = rt.encode_text([s.caption for s in scenes])
    moving = [i for i, s in enumerate(scenes) if s.motion != "still"]
    probes = synth.probes([scenes[i] for i in moving])
    twins = {name: rt.encode_text(caps) for name, caps in probes.items()}

    def report(name: str, score) -> dict:
        """`score(queries (Q, D), clip ids) -> (Q, len(ids))` for this method."""
        s = score(text, np.arange(len(paths)))
        r = ranks(s)
        out = {"method": name, **{k: v for k, v in recall_report(s).items() if k.startswith("t2v_R@")},
               "motion_t2v_R@1": round(100 * float((r[moving] == 1).mean()), 2)}
        own = np.array([score(text[i:i + 1], np.array([i]))[0, 0] for i in moving])
        for probe, vecs in twins.items():
            other = np.array([score(vecs[j:j + 1], np.array([i]))[0, 0] for j, i in enumerate(moving)])
            out[f"{probe}_probe"] = round(100 * float((own > other).mean()), 2)
        return out

    rows = [report("video embedding (single vector)", lambda q, ids: q @ videos[ids].T)]
    for k in (1, 2, 3, 4):
        rows.append(report(f"frame selection, k={k}, every video", lambda q, ids, k=k: frame_scores(q, frames[ids], k)))

    def reranked(q, ids, depth=50, k=2):
        single = q @ videos[ids].T
        if len(ids) <= 1:  # a probe scores one clip: the rerank decides nothing there
            return frame_scores(q, frames[ids], k)
        out = single.copy()
        for row in range(len(q)):
            cand = np.argsort(-single[row])[:depth]
            out[row, cand] = 10.0 + frame_scores(q[row:row + 1], frames[ids][cand], k)[0]  # above the rest
        return out
    rows.append(report("frame selection, k=2, rerank of the best 50", reranked))
    return {"clips": len(paths), "moving": len(moving), "rows": rows}


def generated(say, *, n: int = 10_000, t: int = 12, d: int = 512, topics: int = 1000, queries: int = 200,
              seed: int = 0) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    centre = unit(rng.standard_normal((topics, d)))
    topic = rng.integers(topics, size=n)
    moments = unit(centre[topic][:, None, :] + 0.6 * unit(rng.standard_normal((n, t, d))))  # frames near its topic
    counts = rng.integers(4, t + 1, n)
    moments[np.arange(t)[None, :] >= counts[:, None]] = 0
    frames = moments.astype(np.float16)
    videos = unit(frames.astype(np.float32).sum(1)).astype(np.float32)
    pick = rng.integers(n, size=queries)
    q = unit(frames[pick, 0].astype(np.float32) + 0.8 * unit(rng.standard_normal((queries, d)))).astype(np.float32)
    flat = faiss.IndexFlatIP(d)
    flat.add(videos)
    say("brute force over every video ...")
    t0 = time.perf_counter()
    exact = np.stack([frame_scores(q[i:i + 1], frames, 2)[0] for i in range(queries)])
    brute_ms = 1000 * (time.perf_counter() - t0) / queries
    top = np.argsort(-exact, axis=1)[:, :10]
    out = {"videos": n, "frames": t, "dim": d, "queries": queries, "frames_k": 2,
           "brute_force_ms_per_query": round(brute_ms, 2), "depths": []}
    for depth in (50, 100, 200):
        say(f"two-stage, depth {depth} ...")
        t0 = time.perf_counter()
        ids = np.stack([two_stage(q[i:i + 1], videos, frame_rescorer(q[i:i + 1], frames, 2), k=10, depth=depth,
                                  first=lambda x, m: flat.search(x, m))[1][0] for i in range(queries)])
        ms = 1000 * (time.perf_counter() - t0) / queries
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, top)])
        out["depths"].append({"depth": depth, "recall_of_exact_top10": round(100 * float(recall), 2),
                              "ms_per_query": round(ms, 2)})
    return out


def markdown(r: dict) -> str:
    e, g = r["embedded"], r["generated"]
    lines = ["# Query-time frame selection and the two-stage search", "", f"Machine: {r['machine']}.", "",
             f"## The embedded model, {e['clips']} held-out synthetic test clips ({e['moving']} with motion)", "",
             "Text->video; probes: own caption against the opposite-direction / other-speed twin (chance 50%).", "",
             "| method | R@1 | R@5 | R@1, captions with motion | direction probe | speed probe |",
             "|---|---|---|---|---|---|"]
    for row in e["rows"]:
        lines.append(f"| {row['method']} | {row['t2v_R@1']} | {row['t2v_R@5']} | {row['motion_t2v_R@1']} | "
                     f"{row['direction_probe']} | {row['speed_probe']} |")
    lines += ["", f"## Two-stage against brute force: {g['videos']:,} generated videos x {g['frames']} frames x "
              f"{g['dim']} dims (fp16), k={g['frames_k']}, {g['queries']} queries", "",
              f"Brute force (frame selection over every video): {g['brute_force_ms_per_query']} ms per query.", "",
              "| rerank depth | recall of the exact top 10 (%) | ms per query |", "|---|---|---|"]
    for d in g["depths"]:
        lines.append(f"| {d['depth']} | {d['recall_of_exact_top10']} | {d['ms_per_query']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/vlrt-frame-select")
    p.add_argument("-o", "--out", default=str(RESULTS / "frame-select-cpu.json"))
    args = p.parse_args()
    say = stages()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "embedded": embedded_model(work, say), "generated": generated(say)}
    write_result(args.out, result, markdown(result))
    print(json.dumps(result["generated"]["depths"]))


if __name__ == "__main__":
    main()
