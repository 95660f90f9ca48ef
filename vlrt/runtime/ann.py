"""Vector search structures for an index's video embeddings, chosen by size.

- `flat` (exact inner product): every query reads every vector. Below `HNSW_FROM` vectors it is
  fast enough and exact.
- `hnsw` (FAISS IndexHNSWFlat, M=32): a graph over the vectors; a query visits a few thousand.
  Memory: the vectors plus ≈ 2·M·4 bytes of links each.
- `ivfpq` (FAISS IndexIVFPQ, trained on a sample): vectors compressed to d/8 bytes, a query scans
  the `nprobe` nearest of ≈ 4·√n lists; its candidates (4k of them) are then rescored exactly
  with the float vectors the index already holds, which recovers most of what compression loses.
  From `IVFPQ_FROM` vectors: at a million 512-d vectors on 2 cores HNSW took 18.6 minutes to
  build (rebuilt at the end of every `vlrt embed` run) against 2.4 for IVF-PQ, for 99.2% against
  95.2% of the exact top 10.

`build(vectors, kind)` makes one; `search(ann, vectors, queries, k)` queries it. The recall each
reaches against exact search, and its memory, are measured in benchmarks/ann.py. One more kind,
`milvus`, keeps the vectors in a Milvus collection instead of a FAISS index (vlrt/runtime/milvus.py).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from vlrt.errors import VlrtError

KINDS = ("auto", "flat", "hnsw", "ivfpq", "milvus")
HNSW_FROM = 50_000
IVFPQ_FROM = 1_000_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE, REFINE = 32, 4
TRAIN_SAMPLE = 200_000


def choose(n: int, kind: str = "auto") -> str:
    """The structure for n vectors: `kind` itself unless "auto"."""
    if kind not in KINDS:
        raise VlrtError(f"unknown vector index {kind!r}; choose one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n < HNSW_FROM else "hnsw" if n < IVFPQ_FROM else "ivfpq"


def build(vectors: np.ndarray, kind: str = "auto", *, seed: int = 0) -> Any:
    """A FAISS index over `vectors` (n, d) float32 (L2-normalised: inner product = cosine), ids =
    row positions."""
    import faiss

    vectors = np.ascontiguousarray(vectors, np.float32)
    n, d = vectors.shape
    kind = choose(n, kind)
    if kind == "flat" or n == 0:
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        if d % 8:
            raise VlrtError(f"ivfpq needs a dimension divisible by 8, got {d}")
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39))  # FAISS wants >= 39 training points a list
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, lists, d // 8, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, min(n, TRAIN_SAMPLE), replace=False))]
        index.train(sample)
    index.add(vectors)
    return index


def kind_of(index: Any) -> str:
    import faiss

    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    return "flat"


def search(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), ids (Q, k)), best first; -1 ids where fewer than k were found. `vectors`:
    the float vectors the index was built from (ivfpq rescores its candidates with them)."""
    import faiss

    queries = np.ascontiguousarray(queries, np.float32)
    kind = kind_of(index)
    if kind == "hnsw":
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
        return index.search(queries, k)
    if kind != "ivfpq":
        return index.search(queries, k)
    faiss.extract_index_ivf(index).nprobe = IVF_NPROBE
    _, cand = index.search(queries, k * REFINE)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for q, row in enumerate(cand):
        row = row[row >= 0]
        exact = vectors[row] @ queries[q]
        order = np.argsort(-exact, kind="stable")[:k]
        scores[q, :len(order)], ids[q, :len(order)] = exact[order], row[order]
    return scores, ids
