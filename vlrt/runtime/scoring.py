"""Scoring beyond one dot product: query-time frame selection, and the two-stage search that
multi-grained models (a scorer graph: `Runtime.score`) and frame selection share.

A dual encoder's video embedding averages its frames. Frame selection scores a video instead by
the mean cosine of its `k` frames that best match the query (k = 2 to 4 is typical): a short
moment inside a long video is not diluted by the rest. It reads each frame on its own, so what
only the order of frames shows (direction of motion) is lost where the temporal head would
have seen it.

`frame_scores` scores every given video (exact); `two_stage` ranks by the video embedding first
and rescores the top `depth` candidates (with the frames, or with the model's scorer), which is
what `Index.search` does with `rerank`.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vlrt.errors import VlrtError

CHUNK = 4096  # videos per block: bounds the (queries, videos, frames) similarity array


def frame_scores(queries: np.ndarray, frames: np.ndarray, k: int) -> np.ndarray:
    """(Q, D) L2-normalised queries x (N, T, D) per-frame embeddings (zero rows: padding) ->
    (Q, N) float32: per video, the mean cosine of its k best-matching real frames (all its real
    frames when it has fewer than k; -inf for a video with none)."""
    if k < 1:
        raise VlrtError(f"frame selection needs k >= 1 frames, got {k}")
    queries = np.asarray(queries, np.float32)
    out = np.empty((len(queries), len(frames)), np.float32)
    for start in range(0, len(frames), CHUNK):
        block = np.asarray(frames[start:start + CHUNK], np.float32)  # (n, T, D)
        real = np.any(block != 0, axis=-1)  # (n, T)
        sims = np.einsum("qd,ntd->qnt", queries, block)
        sims[:, ~real] = -np.inf
        take = min(k, block.shape[1])
        top = -np.partition(-sims, take - 1, axis=-1)[..., :take] if take < block.shape[1] else sims
        count = np.minimum(real.sum(1), k)  # (n,)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, start:start + len(block)] = np.where(count > 0, top.sum(-1) / count, -np.inf)
    return out


def two_stage(queries: np.ndarray, videos: np.ndarray, rescore: Callable[[int, np.ndarray], np.ndarray], *,
              k: int, depth: int, first=None) -> tuple[np.ndarray, np.ndarray]:
    """Top `k` of each query: the `depth` best by video embedding (at least k; `first(queries,
    depth)` -> (scores, ids), e.g. a FAISS search; by default exact dot products), rescored by
    `rescore(query row, candidate ids)` -> their scores. Returns (scores (Q, k'), ids (Q, k')),
    best first, k' = min(k, N)."""
    depth = min(max(depth, k), len(videos))
    if first is None:
        sims = np.asarray(queries, np.float32) @ np.asarray(videos, np.float32).T
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
    else:
        ids = first(np.asarray(queries, np.float32), depth)[1]
    keep = min(k, depth)
    out_scores = np.full((len(queries), keep), -np.inf, np.float32)
    out_ids = np.full((len(queries), keep), -1, np.int64)
    for q, cand in enumerate(ids):
        cand = cand[cand >= 0]
        scores = rescore(q, cand)
        order = np.lexsort((cand, -scores))[:keep]  # ties: the earlier video first, as the exact search
        out_scores[q, :len(order)], out_ids[q, :len(order)] = scores[order], cand[order]
    return out_scores, out_ids


def frame_rescorer(queries: np.ndarray, frames: np.ndarray, k: int) -> Callable[[int, np.ndarray], np.ndarray]:
    """`two_stage`'s rescoring by frame selection (`frame_scores` with k frames)."""
    return lambda q, cand: frame_scores(queries[q:q + 1], frames[cand], k)[0]
