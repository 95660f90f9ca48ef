"""The vector index by size: flat is exact, HNSW and IVF-PQ (rescored exactly) find nearly the
same top 10; an index records which it built over which rows, and a stale one is not used."""
import json

import numpy as np
import pytest

import vlrt
from vlrt.errors import VlrtError
from vlrt.runtime import ann
from vlrt.runtime.index import IndexWriter


def clustered(n, d=64, topics=50, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((topics, d))
    x = centre[rng.integers(topics, size=n)] + 0.7 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.integers(n, size=50)] + 0.3 * rng.standard_normal((50, d)).astype(np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_choice_by_size():
    assert [ann.choose(n) for n in (0, 49_999, 50_000, 999_999, 1_000_000)] == \
        ["flat", "flat", "hnsw", "hnsw", "ivfpq"]
    assert ann.choose(10, "ivfpq") == "ivfpq"
    with pytest.raises(VlrtError, match="unknown vector index 'annoy'"):
        ann.choose(10, "annoy")


@pytest.mark.parametrize("kind, least", [("flat", 1.0), ("hnsw", 0.95), ("ivfpq", 0.9)])
def test_recall_of_the_exact_top10(kind, least):
    x, q = clustered(4000)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    index = ann.build(x, kind)
    assert ann.kind_of(index) == kind and index.ntotal == len(x)
    scores, ids = ann.search(index, x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= least, recall
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), atol=1e-4)  # cosines
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def make_index(root, x, requested):
    with IndexWriter(root, bundle=None, manifest_sha256="0" * 64, embed_dim=x.shape[1], ann=requested) as writer:
        writer.append(x, [{"path": f"/videos/{i}.mp4"} for i in range(len(x))])
        writer.build_faiss()


def test_an_index_uses_what_its_writer_built_over_the_same_rows(tmp_path):
    x, q = clustered(3000)
    make_index(tmp_path / "h", x, "hnsw")
    index = vlrt.Index.open(tmp_path / "h")
    assert index.ann_kind == "hnsw" and index.meta["ann"]["rows"] == 3000
    assert index.search(x[17], k=1)[0][0] == "/videos/17.mp4"
    meta = json.loads((tmp_path / "h" / "index.json").read_text())
    meta["ann"]["rows_sha256"] = "stale"  # as if rows changed after it was built
    (tmp_path / "h" / "index.json").write_text(json.dumps(meta))
    assert vlrt.Index.open(tmp_path / "h").ann_kind == "flat"
    make_index(tmp_path / "auto", x, "auto")
    assert vlrt.Index.open(tmp_path / "auto").ann_kind == "flat"  # 3000 vectors: exact is fast enough


def test_an_append_leaves_the_approximate_index_stale_and_searches_go_exact(tmp_path):
    x, _ = clustered(2001)
    make_index(tmp_path / "h", x[:2000], "hnsw")
    index = vlrt.Index.open(tmp_path / "h")
    assert index.ann_kind == "hnsw"
    assert index.append(x[2000:], [{"path": "/videos/new.mp4"}]) == 2001  # no HNSW rebuild here
    assert index.ann_kind == "flat" and index.search(x[2000], k=1)[0][0] == "/videos/new.mp4"
    index.close()
