"""Milvus (Lite, in this process) behind the same Index interface: the same top k as exact search,
k past the rows, an empty index, reopened and moved indexes, a store that no longer matches the
rows never read (an append, a rebuild by another Index in the same process), connections closed
so that another process can open the store, refused options, and `vlrt embed --ann milvus`."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from cli_support import vlrt  # noqa: E402
from video_assets import write_video  # noqa: E402

from vlrt.errors import VlrtError  # noqa: E402
from vlrt.runtime import milvus  # noqa: E402
from vlrt.runtime.index import Index, IndexWriter  # noqa: E402

DIM = 32


def unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def paths(n, start=0):
    return [{"path": f"/videos/{i}.mp4"} for i in range(start, start + n)]


def make_index(root, x, **milvus_args):
    with IndexWriter(root, bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, ann="milvus",
                     **milvus_args) as writer:
        if len(x):
            writer.append(x, paths(len(x)))
        assert writer.build_faiss() == len(x)


def assert_exact(index, x, q, k):
    """`_search` (Milvus or its fallback) gives exact search's top k: ids, and scores within 1e-5."""
    scores, ids = index._search(q, k)
    sims = q @ x.T
    exact = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    found = min(k, len(x))
    assert ids.shape == (len(q), k) and ids.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids[:, :found], exact)
    np.testing.assert_allclose(scores[:, :found], np.take_along_axis(sims, exact, axis=1), atol=1e-5)
    assert (ids[:, found:] == -1).all() and np.isneginf(scores[:, found:]).all()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return unit(rng, 300), unit(rng, 8)


@pytest.fixture(autouse=True)
def no_open_connections():
    yield
    assert not milvus._clients  # every Store closed: Milvus Lite's file is free for another process


def test_same_answers_as_exact_search_and_k_past_the_rows(tmp_path, data):
    x, q = data
    make_index(tmp_path / "idx", x)
    record = json.loads((tmp_path / "idx" / "index.json").read_text())["ann"]
    assert {k: record[k] for k in ("requested", "kind", "uri", "collection", "index_type", "rows")} == \
        {"requested": "milvus", "kind": "milvus", "uri": "milvus.db", "collection": "vlrt_videos",
         "index_type": "FLAT", "rows": 300}
    assert not (tmp_path / "idx" / "faiss.index").exists()
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus"
        assert_exact(index, x, q, 10)
        assert_exact(index, x, q, 400)  # more than the rows: -1 padded, like FAISS
        hits = index.search(q[0], k=1000)
        assert [h[0] for h in hits] == [f"/videos/{i}.mp4" for i in np.argsort(-(x @ q[0]), kind="stable")]
        assert index.search(x[17], k=1)[0] == ("/videos/17.mp4", pytest.approx(1.0, abs=1e-5))
        assert index.ann_kind == "milvus"  # still Milvus: nothing fell back


def test_past_milvus_top_k_limit_one_search_runs_exactly(tmp_path, data, monkeypatch):
    x, q = data
    make_index(tmp_path / "idx", x)
    monkeypatch.setattr(milvus, "MAX_TOPK", 5)
    with Index.open(tmp_path / "idx") as index:
        assert_exact(index, x, q, 10)
        assert index.ann_kind == "milvus"


def test_empty_index(tmp_path):
    make_index(tmp_path / "idx", np.zeros((0, DIM), np.float32))
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus" and index.search(np.ones(DIM, np.float32), k=5) == []


def test_ivf_flat_by_size(tmp_path, data, monkeypatch):
    x, _ = data
    monkeypatch.setattr(milvus, "IVF_FROM", 100)
    make_index(tmp_path / "idx", x)
    with Index.open(tmp_path / "idx") as index:
        assert index.meta["ann"]["index_type"] == "IVF_FLAT" and index.ann_kind == "milvus"
        ids = index._search(x[:50], 1)[1][:, 0]
        assert (ids == np.arange(50)).mean() >= 0.95


def test_reopened_and_moved_index(tmp_path, data):
    x, q = data
    make_index(tmp_path / "idx", x)
    for _ in range(2):  # the Lite server of this process stopped and started again
        with Index.open(tmp_path / "idx") as index:
            assert index.ann_kind == "milvus"
            assert_exact(index, x, q, 10)
    shutil.move(tmp_path / "idx", tmp_path / "moved")
    with Index.open(tmp_path / "moved") as index:
        assert index.ann_kind == "milvus"
        assert_exact(index, x, q, 10)


def test_append_leaves_the_store_stale_and_searches_go_exact(tmp_path, data):
    x, q = data
    make_index(tmp_path / "idx", x[:299])
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus"
        assert index.append(x[299:], paths(1, 299)) == 300  # the collection is not rebuilt
        assert index.ann_kind == "flat" and index.meta["ann"]["rows"] == 299
        assert index.search(x[299], k=1)[0][0] == "/videos/299.mp4"
        assert_exact(index, x, q, 10)
    with IndexWriter(tmp_path / "idx", bundle=None, manifest_sha256="0" * 64, embed_dim=DIM) as writer:
        writer.build_faiss()  # as the next `vlrt embed` run ends: Milvus again, over the 300 rows
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus" and index.meta["ann"]["rows"] == 300
        assert_exact(index, x, q, 10)


def test_two_indexes_of_one_index_in_one_process(tmp_path, data):
    x, q = data
    make_index(tmp_path / "idx", x[:299])
    reader = Index.open(tmp_path / "idx")
    writer = Index.open(tmp_path / "idx")
    assert reader.ann_kind == writer.ann_kind == "milvus"  # one connection, shared
    writer.append(x[299:], paths(1, 299))
    assert reader.ann_kind == "milvus"  # its rows are still the ones the collection holds
    assert_exact(reader, x[:299], q, 10)
    writer._writer.build_faiss()  # the collection is dropped and made again over 300 rows
    assert_exact(reader, x[:299], q, 10)  # hits of another build are not read as its rows
    assert reader.ann_kind == "flat"
    assert_exact(writer, x, q, 10)
    reader.close()
    writer.close()
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus" and len(index) == 300
        assert_exact(index, x, q, 10)
    # closed: another process can open the Milvus Lite store
    script = ("import sys; from vlrt.runtime.index import Index; i = Index.open(sys.argv[1]); "
              "print(i.ann_kind, i.search(i.embeddings[5], k=1)[0][0]); i.close()")
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "idx")], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.split() == ["milvus", "/videos/5.mp4"], res.stderr


def test_a_store_held_by_another_process(tmp_path, data, caplog):
    x, q = data
    make_index(tmp_path / "idx", x)
    script = ("import sys; from vlrt.runtime.index import Index; i = Index.open(sys.argv[1]); "
              "print(i.ann_kind, flush=True); sys.stdin.read(); i.close()")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "idx")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["milvus"]
        with Index.open(tmp_path / "idx") as index:  # Milvus Lite: one process at a time
            assert index.ann_kind == "flat"
            assert_exact(index, x, q, 10)
        assert "Milvus Lite serves one process at a time" in caplog.text
        with IndexWriter(tmp_path / "idx", bundle=None, manifest_sha256="0" * 64, embed_dim=DIM) as writer:
            with pytest.raises(VlrtError, match="Milvus Lite serves one process at a time"):
                writer.build_faiss()
    finally:
        child.communicate("", timeout=60)
    assert child.returncode == 0
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus"


def test_an_unusable_store_means_exact_search(tmp_path, data, caplog):
    x, q = data
    make_index(tmp_path / "idx", x)
    meta_path = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta["ann"]["uri"] = "http://127.0.0.1:1"  # nothing listens there
    meta_path.write_text(json.dumps(meta))
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "flat"
        assert_exact(index, x, q, 10)
    assert "cannot reach the Milvus server at http://127.0.0.1:1" in caplog.text
    shutil.rmtree(tmp_path / "idx" / "milvus.db")
    meta["ann"]["uri"] = "milvus.db"
    meta_path.write_text(json.dumps(meta))
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "flat"
        assert_exact(index, x, q, 10)
    assert not (tmp_path / "idx" / "milvus.db").exists()  # a missing store is not made by a reader


def test_without_pymilvus(tmp_path, data, monkeypatch, caplog):
    x, q = data
    make_index(tmp_path / "idx", x)
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if not installed
    with pytest.raises(VlrtError, match=r"pip install 'vlrt\[milvus\]'"):
        IndexWriter(tmp_path / "new", bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, ann="milvus")
    with Index.open(tmp_path / "idx") as index:  # an index built elsewhere: searched exactly
        assert index.ann_kind == "flat"
        assert_exact(index, x, q, 10)
    assert "pip install 'vlrt[milvus]'" in caplog.text


def test_options_recorded_and_refused(tmp_path, data):
    x, _ = data
    root = tmp_path / "idx"
    make_index(root, x[:10], milvus_uri=str(tmp_path / "shared.db"), milvus_collection="my_videos")
    record = json.loads((root / "index.json").read_text())["ann"]
    assert (record["uri"], record["collection"]) == ("../shared.db", "my_videos")  # relative to the index
    with IndexWriter(root, bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, ann="milvus") as writer:
        assert writer.meta["ann"] == record  # asked again without a place: kept, build and all
    with IndexWriter(root, bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, ann="milvus",
                     milvus_uri="http://milvus.example:19530") as writer:
        assert writer.meta["ann"]["collection"].startswith("vlrt_") and len(writer.meta["ann"]["collection"]) == 21
    for kwargs, message in [({"ann": "hnsw", "milvus_uri": "x.db"}, "go with --ann milvus"),
                            ({"ann": None, "milvus_collection": "c"}, "go with --ann milvus"),
                            ({"ann": "milvus", "milvus_uri": "videos.sqlite"}, "Milvus Lite file ending in .db"),
                            ({"ann": "milvus", "milvus_collection": "my-videos"}, "letters, digits and underscores")]:
        with pytest.raises(VlrtError, match=message):
            IndexWriter(tmp_path / "other", bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, **kwargs)
    with IndexWriter(tmp_path / "down", bundle=None, manifest_sha256="0" * 64, embed_dim=DIM, ann="milvus",
                     milvus_uri="http://127.0.0.1:1") as writer:
        writer.append(x[:2], paths(2))
        with pytest.raises(VlrtError, match="cannot reach the Milvus server at http://127.0.0.1:1"):
            writer.build_faiss()


def test_embed_and_search_cli(tiny_bundle, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_video(videos / f"v{i}.mp4", frames=24 + 24 * i)
    res = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / "idx", "--ann", "milvus", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["total_in_index"] == 2
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["ann"]["kind"] == "milvus"
    res = vlrt("search", tmp_path / "idx", "a moving square", "-k", 5, "--json")
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)["results"]
    with Index.open(tmp_path / "idx") as index:
        assert index.ann_kind == "milvus"
        assert sorted(h["path"] for h in hits) == sorted(index.paths)
