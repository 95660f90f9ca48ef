"""Index shards: append-only, partial shards discarded, search returns the nearest rows."""
import json

import numpy as np
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime.index import Index, IndexWriter


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def writer(root, sha="a" * 64):
    return IndexWriter(root, bundle=root, manifest_sha256=sha, embed_dim=16)


def test_append_search_and_reopen(tmp_path):
    rng = np.random.default_rng(0)
    emb = unit(rng, 10, 16)
    w = writer(tmp_path)
    w.append(emb[:6], [{"path": f"v{i}.mp4"} for i in range(6)])
    w.append(emb[6:], [{"path": f"v{i}.mp4"} for i in range(6, 10)])
    assert w.build_faiss() == 10
    index = Index.open(tmp_path)
    assert len(index) == 10 and index.paths == [f"v{i}.mp4" for i in range(10)]
    hits = index.search(emb[7], k=3)
    assert hits[0][0] == "v7.mp4" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    want = np.argsort(-(emb @ emb[7]))[:3]
    assert [h[0] for h in hits] == [f"v{i}.mp4" for i in want]
    assert writer(tmp_path).done_paths() == {f"v{i}.mp4" for i in range(10)}


def test_interrupted_shard_is_discarded(tmp_path):
    rng = np.random.default_rng(1)
    w = writer(tmp_path)
    w.append(unit(rng, 2, 16), [{"path": "a"}, {"path": "b"}])
    # A kill between the embeddings and the metadata commit leaves an orphan .npy (and a temp file).
    np.save(tmp_path / "shards" / "000001.npy", unit(rng, 3, 16))
    (tmp_path / "shards" / ".000001.jsonl.tmp").write_text('{"path": "c"}\n')
    w2 = writer(tmp_path)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000000.jsonl", "000000.npy"]
    assert w2.done_paths() == {"a", "b"} and w2.next_shard == 1


def test_stale_faiss_file_is_rebuilt(tmp_path):
    rng = np.random.default_rng(2)
    emb = unit(rng, 4, 16)
    w = writer(tmp_path)
    w.append(emb[:2], [{"path": "a"}, {"path": "b"}])
    w.build_faiss()
    w.append(emb[2:], [{"path": "c"}, {"path": "d"}])  # killed before the final FAISS build
    assert Index.open(tmp_path).search(emb[3], k=1)[0][0] == "d"


def test_other_bundle_is_refused(tmp_path):
    writer(tmp_path)
    with pytest.raises(VlrtError, match="another bundle"):
        writer(tmp_path, sha="b" * 64)


def test_not_an_index(tmp_path):
    with pytest.raises(VlrtError, match="not a vlrt index"):
        Index.open(tmp_path)


def test_errors_are_appended(tmp_path):
    w = writer(tmp_path)
    w.report_error("x.mp4", "x.mp4: no video stream")
    w.report_error("y.mp4", "y.mp4: empty file")
    lines = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert [entry["path"] for entry in lines] == ["x.mp4", "y.mp4"]
