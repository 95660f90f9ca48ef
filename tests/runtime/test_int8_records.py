"""Per-frame records stored in int8 (vlrt/runtime/records.py): what is read back, and an index
made with them searches as the fp16 one does, within the quantisation's error."""
from __future__ import annotations

import numpy as np
import pytest
from checkpoint_writers import TINY_C4C, write_drl
from video_assets import write_video

from vlrt.assets import unpack_default_bundle
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.index import Index
from vlrt.runtime.records import Int8Records, quantize


def test_quantize_and_read_back():
    rng = np.random.default_rng(0)
    record = rng.standard_normal((5, 4, 17)).astype(np.float32)
    record[1, 2:] = 0  # padded frames stay zero
    records = Int8Records(*quantize(record, 16))
    assert records.q.dtype == np.int8 and records.shape == (5, 4, 17) and len(records) == 5
    assert records.nbytes < record.astype(np.float16).nbytes
    back = records[np.arange(5)]
    step = np.abs(record[..., :16]).max(-1, keepdims=True) / 127
    assert np.all(np.abs(back[..., :16] - record[..., :16]) <= step * 0.5 + 1e-3 * step + 1e-7)
    assert np.all(back[1, 2:] == 0)
    np.testing.assert_array_equal(back[..., 16], record[..., 16].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(records[1:3], back[1:3])
    embeddings = records[..., :16]
    assert isinstance(embeddings, Int8Records) and embeddings.shape == (5, 4, 16)
    np.testing.assert_array_equal(records[..., 16], record[..., 16].astype(np.float16))
    with pytest.raises(IndexError):
        records[..., :8]
    again = Int8Records(*quantize(back, 16))  # requantising (a compaction) changes nothing
    np.testing.assert_array_equal(again.q, records.q)


def test_an_int8_index_searches_like_the_fp16_one(tmp_path):
    bundle = export_checkpoint(write_drl(tmp_path / "drl.bin", TINY_C4C, seed=5), tmp_path / "drl").bundle
    videos = []
    for i in range(6):
        videos.append(str(tmp_path / f"v{i}.mp4"))
        write_video(tmp_path / f"v{i}.mp4", frames=8 + 8 * i, width=64 + 16 * i)
    with pytest.raises(VlrtError, match="int8 per-frame records need an index that keeps them"):
        Index.create(tmp_path / "none", unpack_default_bundle(tmp_path / "default"), frames_dtype="int8")
    with pytest.raises(VlrtError, match="stored as fp16 or int8"):
        Index.create(tmp_path / "none", bundle, frames_dtype="int9")
    assert not (tmp_path / "none").exists()
    for dtype in ("fp16", "int8"):
        with Index.create(tmp_path / dtype, bundle, frames_dtype=dtype) as index:
            index.add(videos[:4])
            index.add(videos[4:])  # two shards
    fp16, int8 = Index.open(tmp_path / "fp16"), Index.open(tmp_path / "int8")
    assert isinstance(int8.frame_records, Int8Records) and int8.frame_records.shape == fp16.frame_records.shape
    disk = {d: sum(p.stat().st_size for p in (tmp_path / d / "shards").glob("*frames*")) for d in ("fp16", "int8")}
    assert disk["int8"] < 0.6 * disk["fp16"]
    query = "a red circle moves to the left"
    want, got = fp16.search(query, k=6), int8.search(query, k=6)
    assert sorted(p for p, _ in got) == sorted(p for p, _ in want)
    by_path = dict(want)
    assert max(abs(s - by_path[p]) for p, s in got) < 2e-2
    assert [p for p, _ in int8.search(query, k=3, rerank=6)] == [p for p, _ in got[:3]]
    assert len(int8.search(query, k=3, frames=2)) == 3
    with Index.open(tmp_path / "int8") as index:  # dropping a file and compacting keeps int8 records
        (tmp_path / "v0.mp4").unlink()
        index.prune()
    after = Index.open(tmp_path / "int8")
    assert isinstance(after.frame_records, Int8Records) and len(after) == 5
    assert [p for p, _ in after.search(query, k=5)] == [p for p, _ in got if not p.endswith("v0.mp4")][:5]
