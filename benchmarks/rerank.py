"""Multi-grained scoring measured: the embedded models side by side, and two-stage search with a
scorer against brute-force exact scoring.

1. Retrieval on the embedded models, the 243 held-out synthetic test clips (H.264, the real
   pipeline, `Index.create` / `add`): the default model (single vector; frame selection, k=2)
   and its multi-grained sibling (X-CLIP's scorer, `vlrt demo --model xclip`): its sentence-video
   dot product alone, its scorer over every clip, the scorer on the 5 / 10 / 20 best by the dot
   product (two-stage), and frame selection on its frame features; text->video R@1/5, R@1 on the
   captions with motion, and the direction and speed probes (own caption against the twin
   caption, chance 50%; a probe scores one clip, so a rerank row's probes are the scorer's).
2. For each scorer (X-CLIP, DRL), at ViT-B/32's geometry (512 dims, 32 word slots, 12 frame slots),
on 10,000 generated videos (features generated, not decoded) around 1,000 topics:
- brute force: the scorer graph (ONNX Runtime, fp32, as `Runtime.score` runs it) over every
  video, per query;
- two-stage: FAISS flat inner product on the video vector for the `depth` best, the scorer on
  those: recall of the exact top 10 at depths 50, 100 and 200, and the time per query;
- storage: the index keeps per-frame records in fp16, or in int8 with `--frames-dtype int8`; the
  same exact search on fp16 features and on int8 ones (symmetric, one scale per vector, as
  vlrt/runtime/records.py stores them) against fp32: top-10 overlap and max |score difference|.

The scorers' weights are random (identity plus noise for X-CLIP's matrices; DRL's scorer has
none, its weights are generated with the features), so the figures measure search speed and
agreement between search methods, not retrieval quality.

  python benchmarks/rerank.py -o benchmarks/results/rerank-cpu.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, stages, write_result

from vlrt.bench.metrics import ranks, recall_report
from vlrt.runtime.scoring import frame_scores, two_stage

DIM, WORDS, FRAMES = 512, 32, 12
CHUNK = 1024  # videos per scorer call, as Runtime.score


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def scorer_graph(family: str, out: Path):
    """The family's scorer graph at ViT-B/32 geometry, exported as `vlrt export` exports it."""
    import torch
    from torch import nn

    from vlrt.export.onnx import export_scorer
    from vlrt.families import get_family
    from vlrt.models import ScorerConfig
    from vlrt.models.scorers import SCORERS

    torch.manual_seed(0)
    holder = nn.Module()
    holder.scorer = SCORERS[family](ScorerConfig(family, words=WORDS if family == "xclip" else 0,
                                                 frames=FRAMES if family == "xclip" else 0), DIM)
    with torch.no_grad():
        for p in holder.scorer.parameters():
            p.add_(0.02 * torch.randn_like(p))
    spec = get_family(family).scorer(embed_dim=DIM, words=WORDS, frames=FRAMES)
    export_scorer(holder, spec, out, frames=FRAMES, words=WORDS)
    return spec


def generate(family: str, n: int, queries: int, rng: np.random.Generator):
    """Videos around topics (frames: topic + per-video offset + per-frame noise) and captions of
    a target video (sentence near its frames, words near the sentence), shaped as the family's
    encoders write them, with the sentence vector for the first stage."""
    topics = unit(rng.standard_normal((n // 10, DIM)))
    base = topics[rng.integers(0, len(topics), n)] + 0.5 * unit(rng.standard_normal((n, DIM)))
    frames = unit(base[:, None, :] + 0.6 * unit(rng.standard_normal((n, FRAMES, DIM))))
    real = rng.integers(4, FRAMES + 1, n)
    mask = np.arange(FRAMES)[None, :] < real[:, None]
    video = unit((frames * mask[..., None]).sum(1))
    if family == "xclip":  # padded slots hold one vector: an all-zero image's features
        frames[~mask] = unit(rng.standard_normal(DIM))
        videos = {"video_embeds": video, "frame_embeds": frames}
    else:
        frames[~mask] = 0
        w = np.where(mask, rng.standard_normal((n, FRAMES)), -np.inf)
        videos = {"video_embeds": video, "frame_embeds": frames,
                  "frame_weights": (np.exp(w - w.max(1, keepdims=True)) /
                                    np.exp(w - w.max(1, keepdims=True)).sum(1, keepdims=True)).astype(np.float32)}
    targets = rng.integers(0, n, queries)
    sentence = unit(video[targets] + 0.8 * unit(rng.standard_normal((queries, DIM))))
    tokens = unit(sentence[:, None, :] + 1.0 * unit(rng.standard_normal((queries, WORDS, DIM))))
    length = rng.integers(5, 16, queries)
    wmask = np.arange(WORDS)[None, :] < length[:, None]
    if family == "xclip":
        texts = {"text_embeds": sentence, "token_embeds": tokens}
    else:
        tokens[~wmask] = 0
        w = np.where(wmask, rng.standard_normal((queries, WORDS)), -np.inf)
        weights = np.exp(w - w.max(1, keepdims=True))
        texts = {"text_embeds": sentence, "token_embeds": tokens,
                 "token_weights": (weights / weights.sum(1, keepdims=True)).astype(np.float32)}
    return videos, texts


class Scorer:
    """The scorer graph on ONNX Runtime CPU, in chunks of videos as `Runtime.score` runs it."""

    def __init__(self, path: Path, spec) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.spec = spec

    def __call__(self, text: dict, videos: dict, ids: np.ndarray | None = None) -> np.ndarray:
        feeds_q = {k: text[k] for k in self.spec.text_inputs}
        n = len(ids) if ids is not None else len(videos["video_embeds"])
        out = np.empty((1, n), np.float32)
        for start in range(0, n, CHUNK):
            rows = ids[start:start + CHUNK] if ids is not None else slice(start, start + CHUNK)
            feeds = {k: np.asarray(videos[k][rows], np.float32) for k in self.spec.video_inputs}
            out[:, start:start + CHUNK] = self.session.run([self.spec.output], {**feeds_q, **feeds})[0]
        return out


def quantized(videos: dict, kind: str) -> dict:
    """The per-frame features as an index would store them: fp16, or int8 with one scale per vector
    (DRL's frame weights are left as they are)."""
    out = dict(videos)
    f = videos["frame_embeds"]
    if kind == "fp16":
        out["frame_embeds"] = f.astype(np.float16).astype(np.float32)
    else:
        from vlrt.runtime.records import Int8Records, quantize

        out["frame_embeds"] = Int8Records(*quantize(f, DIM))[np.arange(len(f))]
    return out


def run_family(family: str, n: int, queries: int, work: Path, say) -> dict:
    import faiss

    spec = scorer_graph(family, work / f"{family}-scorer.onnx")
    scorer = Scorer(work / f"{family}-scorer.onnx", spec)
    videos, texts = generate(family, n, queries, np.random.default_rng(7))
    first_queries = texts["text_embeds"]  # the sentence vector: the first stage, as in Index.search
    flat = faiss.IndexFlatIP(DIM)
    flat.add(videos["video_embeds"])
    one = lambda q: {k: v[q:q + 1] for k, v in texts.items()}  # noqa: E731

    say(f"{family}: brute force over {n:,} videos x {queries} queries ...")
    t0 = time.perf_counter()
    exact = np.concatenate([scorer(one(q), videos) for q in range(queries)])
    brute_ms = 1000 * (time.perf_counter() - t0) / queries
    top = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    out = {"family": family, "videos": n, "queries": queries, "brute_force_ms_per_query": round(brute_ms, 1),
           "depths": [], "storage": []}
    for depth in (50, 100, 200):
        say(f"{family}: two-stage, depth {depth} ...")
        t0 = time.perf_counter()
        ids = np.stack([two_stage(first_queries[q:q + 1], videos["video_embeds"],
                                  lambda _, cand, q=q: scorer(one(q), videos, cand)[0], k=10, depth=depth,
                                  first=lambda x, m: flat.search(x, m))[1][0] for q in range(queries)])
        ms = 1000 * (time.perf_counter() - t0) / queries
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, top)])
        out["depths"].append({"depth": depth, "recall_of_exact_top10": round(100 * float(recall), 2),
                              "ms_per_query": round(ms, 2)})
    for kind in ("fp16", "int8"):
        say(f"{family}: exact search on {kind} frame features ...")
        stored = quantized(videos, kind)
        got = np.concatenate([scorer(one(q), stored) for q in range(queries)])
        got_top = np.argsort(-got, axis=1, kind="stable")[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_top, top)])
        scalars = FRAMES * 2 * sum(1 for k, axes in spec.video_inputs.items()  # DRL's frame weights: a column
                                   if len(axes) == 2 and k != "video_embeds")
        out["storage"].append({"frames": kind, "bytes_per_video": scalars + FRAMES * DIM * (2 if kind == "fp16" else 1)
                               + (FRAMES * 4 if kind == "int8" else 0),
                               "top10_overlap_with_fp32": round(100 * float(overlap), 2),
                               "max_abs_score_diff": float(np.abs(got - exact).max())})
    return out


def embedded_models(work: Path, say) -> dict:
    from vlrt.assets import unpack_default_bundle
    from vlrt.bench import synth
    from vlrt.bench.quality import write_gallery
    from vlrt.runtime.index import Index

    paths, scenes = write_gallery(work / "clips", None)
    moving = [i for i, s in enumerate(scenes) if s.motion != "still"]
    probes = synth.probes([scenes[i] for i in moving])
    captions = [s.caption for s in scenes]
    rows_out = []

    def report(model: str, name: str, score) -> None:
        """`score(texts, clip ids) -> (len(texts), len(ids))` for this method."""
        s = score(captions, np.arange(len(paths)))
        r = ranks(s)
        row = {"model": model, "method": name, **{k: v for k, v in recall_report(s).items() if k.startswith("t2v_R@")},
               "motion_t2v_R@1": round(100 * float((r[moving] == 1).mean()), 2)}
        own = np.array([score([captions[i]], np.array([i]))[0, 0] for i in moving])
        for probe, twins in probes.items():
            other = np.array([score([twins[j]], np.array([i]))[0, 0] for j, i in enumerate(moving)])
            row[f"{probe}_probe"] = round(100 * float((own > other).mean()), 2)
        rows_out.append(row)
        say(f"{model}: {name}: R@1 {row['t2v_R@1']}")

    def one_model(model: str) -> None:
        bundle = unpack_default_bundle(work / f"bundle-{model}", model)
        say(f"{model}: embedding {len(paths)} clips ...")
        with Index.create(work / f"index-{model}", bundle, keep_frames=True) as index:
            index.add(paths)
        index = Index.open(work / f"index-{model}")
        order = [index.paths.index(str(Path(p).resolve())) for p in paths]  # caption i <-> clip i
        rt = index.runtime()
        videos = index.embeddings[order]
        frames = np.asarray(index.frames[order], np.float32)
        single = lambda texts, ids: rt.encode_text(texts) @ videos[ids].T  # noqa: E731
        report(model, "video vector (single vector)", single)
        report(model, "frame selection, k=2, every clip",
               lambda texts, ids: frame_scores(rt.encode_text(texts), frames[ids], 2))
        if not rt.multi_vector:
            return
        features = {"video_embeds": videos, **rt.split_frame_record(np.asarray(index.frame_records[order]))}
        exact = lambda texts, ids: rt.score(rt.encode_text_outputs(texts), {k: v[ids] for k, v in features.items()})  # noqa: E731
        report(model, "scorer, every clip", exact)
        for depth in (5, 10, 20):
            def reranked(texts, ids, depth=depth):
                first = single(texts, ids)
                if len(ids) <= 1:  # a probe scores one clip: the rerank decides nothing there
                    return exact(texts, ids)
                out = first.copy()
                for row in range(len(texts)):
                    cand = np.argsort(-first[row], kind="stable")[:depth]
                    out[row, cand] = 10.0 + exact(texts[row:row + 1], ids[cand])[0]  # above the rest
                return out
            report(model, f"scorer on the best {depth} by video vector (two-stage)", reranked)

    for model in ("default", "xclip"):
        one_model(model)
    return {"clips": len(paths), "moving": len(moving), "rows": rows_out}


def markdown(r: dict) -> str:
    e = r["embedded"]
    lines = ["# Multi-grained scoring: the embedded models, and two-stage search against brute force", "",
             f"Machine: {r['machine']}.", "",
             f"## The embedded models, {e['clips']} held-out synthetic test clips ({e['moving']} with motion)", "",
             "Text->video; probes: own caption against the opposite-direction / other-speed twin (chance 50%). "
             "`default`: the default model; `xclip`: its multi-grained sibling.", "",
             "| model | method | R@1 | R@5 | R@1, captions with motion | direction probe | speed probe |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['model']} | {x['method']} | {x['t2v_R@1']} | {x['t2v_R@5']} | {x['motion_t2v_R@1']} | "
              f"{x['direction_probe']} | {x['speed_probe']} |" for x in e["rows"]]
    lines += ["", "## Two-stage search with a scorer against brute force", "",
             f"{r['videos']:,} generated videos x {FRAMES} frame slots x {DIM} dims, captions of {WORDS} word "
             f"slots, {r['queries']} queries; scorer graphs at ViT-B/32 geometry with random weights (the "
             "figures compare search methods, not retrieval quality). First stage: FAISS flat inner product on "
             "the video vector; second: the scorer graph on ONNX Runtime CPU (fp32), as `Index.search(rerank=N)`.", ""]
    for f in r["families"]:
        lines += [f"### {f['family']}", "",
                  f"Brute force (the scorer over every video): {f['brute_force_ms_per_query']} ms per query.", "",
                  "| rerank depth | recall of the exact top 10 (%) | ms per query |", "|---|---|---|"]
        lines += [f"| {d['depth']} | {d['recall_of_exact_top10']} | {d['ms_per_query']} |" for d in f["depths"]]
        lines += ["", "Stored per-frame features against fp32 (exact search over every video):", "",
                  "| frames stored as | bytes per video | top-10 overlap with fp32 (%) | max abs score difference |",
                  "|---|---|---|---|"]
        lines += [f"| {s['frames']} | {s['bytes_per_video']:,} | {s['top10_overlap_with_fp32']} | "
                  f"{s['max_abs_score_diff']:.2e} |" for s in f["storage"]]
        lines.append("")
    lines += ["An index stores fp16 by default; `vlrt embed --frames-dtype int8` (`frames_dtype=\"int8\"`) stores "
              "int8 as measured here, with DRL's frame weights kept in fp16."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--work", default="/tmp/vlrt-rerank", help="where the clips and indexes go (kept)")
    p.add_argument("-o", "--out", default=str(RESULTS / "rerank-cpu.json"))
    args = p.parse_args()
    say = stages()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    embedded = embedded_models(work, say)
    with tempfile.TemporaryDirectory() as tmp:
        families = [run_family(f, args.videos, args.queries, Path(tmp), say) for f in ("xclip", "drl")]
    result = {"machine": machine(), "embedded": embedded, "videos": args.videos, "queries": args.queries,
              "families": families}
    write_result(args.out, result, markdown(result))
    print(json.dumps([[f["family"], f["depths"]] for f in families]))


if __name__ == "__main__":
    main()
