"""Index shards: append-only, partial shards discarded, replaced and dropped rows, compaction, the
bundle found after moves, search returns the nearest rows; one writer at a time, readers racing a
compaction, recorded options, damaged records and impossible directories named."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlrt.errors import VlrtError
from vlrt.runtime import index as index_module
from vlrt.runtime.bundle import sha256_file
from vlrt.runtime.index import Index, IndexWriter, load_shards, scan


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
    w.close()
    assert writer(tmp_path).done_paths() == {f"v{i}.mp4" for i in range(10)}


def test_interrupted_shard_is_discarded(tmp_path):
    rng = np.random.default_rng(1)
    w = writer(tmp_path)
    w.append(unit(rng, 2, 16), [{"path": "a"}, {"path": "b"}])
    # A kill between the embeddings and the metadata commit leaves an orphan .npy (and a temp file).
    np.save(tmp_path / "shards" / "000001.npy", unit(rng, 3, 16))
    (tmp_path / "shards" / ".000001.jsonl.tmp").write_text('{"path": "c"}\n')
    w.close()
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


def view(root):
    index = Index.open(root)
    return index.paths, index.embeddings.copy()


def test_replaced_rows_and_drops(tmp_path):
    rng = np.random.default_rng(3)
    emb = unit(rng, 6, 16)
    w = writer(tmp_path)
    w.append(emb[:3], [{"path": "a"}, {"path": "b"}, {"path": "c"}])
    w.append(emb[3:4], [{"path": "b"}])  # b re-embedded: the later row wins
    w.drop(["c", "never-indexed"])
    paths, got = view(tmp_path)
    assert paths == ["a", "b"] and np.array_equal(got, emb[[0, 3]])
    w.append(emb[4:5], [{"path": "c"}])  # a drop removes earlier rows only
    paths, got = view(tmp_path)
    assert paths == ["a", "b", "c"] and np.array_equal(got, emb[[0, 3, 4]])
    s = scan(tmp_path)
    assert (s.stored, s.dead, s.counts) == (5, 2, [3, 1, 0, 1])
    assert Index.open(tmp_path).search(emb[3], k=1)[0] == ("b", pytest.approx(1.0, abs=1e-5))


def test_interrupted_replacement_loses_and_duplicates_nothing(tmp_path):
    rng = np.random.default_rng(4)
    emb = unit(rng, 4, 16)
    w = writer(tmp_path)
    w.append(emb[:2], [{"path": "a"}, {"path": "b"}])
    # killed after writing a shard that drops a and re-embeds b, before its commit
    np.save(tmp_path / "shards" / "000001.npy", emb[2:3])
    (tmp_path / "shards" / ".000001.jsonl.tmp").write_text('{"drop": "a"}\n{"path": "b"}\n')
    w.close()
    w2 = writer(tmp_path)
    paths, got = view(tmp_path)
    assert paths == ["a", "b"] and np.array_equal(got, emb[:2]) and w2.next_shard == 1


class Crash(Exception):
    pass


def test_compaction_survives_a_crash_at_every_step(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    emb = unit(rng, 7, 16)
    src = tmp_path / "src"
    w = writer(src)
    w.append(emb[:3], [{"path": "a"}, {"path": "b"}, {"path": "c"}], frames=emb[:3, None].repeat(2, 1))
    w.append(emb[3:5], [{"path": "b"}, {"path": "d"}], frames=emb[3:5, None].repeat(2, 1))
    w.drop(["a"])
    w.append(emb[5:7], [{"path": "a"}, {"path": "e"}], frames=emb[5:7, None].repeat(2, 1))
    want_paths, want = view(src)
    assert want_paths == ["c", "b", "d", "a", "e"]
    real_unlink, steps = Path.unlink, 0
    for crash_after in range(13):  # 4 shards x 3 files, then no crash
        root = tmp_path / f"run{crash_after}"
        shutil.copytree(src, root)
        calls = [0]

        def unlink(self, missing_ok=False, _limit=crash_after, _calls=calls):
            if _calls[0] == _limit:
                raise Crash
            _calls[0] += 1
            return real_unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", unlink)
        try:
            writer(root).compact()
        except Crash:
            steps += 1
        monkeypatch.setattr(Path, "unlink", real_unlink)
        paths, got = view(writer(root).root)
        assert paths == want_paths and np.array_equal(got, want), crash_after
    assert steps == 12
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["000004.frames.npy", "000004.jsonl", "000004.npy"]
    frames, _ = load_shards(root, frames=True)
    assert np.array_equal(frames[:, 0].astype(np.float32), want.astype(np.float16).astype(np.float32))
    assert writer(root).compact() is False  # nothing dead any more


def test_errors_keep_one_line_per_failing_file(tmp_path):
    w = writer(tmp_path)
    w.report_error("/v/x.mp4", "x.mp4: empty", given="x.mp4")
    w.report_error("/v/y.mp4", "y.mp4: no video stream")
    w.report_error("/v/x.mp4", "x.mp4: truncated", given="x.mp4")
    assert len((tmp_path / "errors.jsonl").read_text().splitlines()) == 3  # appended during a run
    w.append(unit(np.random.default_rng(6), 1, 16), [{"path": "/v/y.mp4"}])  # y was fixed and embedded
    assert w.save_errors() == 1
    lines = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert lines == [{"path": "/v/x.mp4", "error": "x.mp4: truncated", "given": "x.mp4"}]
    w.close()
    assert writer(tmp_path).errors == {"/v/x.mp4": lines[0]}


def fake_bundle(path, text="{}"):
    path.mkdir(parents=True)
    (path / "vlrt.json").write_text(text)
    return sha256_file(path / "vlrt.json")


def test_bundle_is_found_after_moves(tmp_path):
    sha = fake_bundle(tmp_path / "a" / "b")
    IndexWriter(tmp_path / "a" / "idx", bundle=tmp_path / "a" / "b", manifest_sha256=sha, embed_dim=16)
    meta = json.loads((tmp_path / "a" / "idx" / "index.json").read_text())
    assert (meta["bundle"], meta["bundle_absolute"], meta["version"]) == ("../b", str(tmp_path / "a" / "b"), 2)
    shutil.move(tmp_path / "a", tmp_path / "moved")  # both together: found relative to the index
    assert Index.open(tmp_path / "moved" / "idx").bundle_path() == tmp_path / "moved" / "b"
    shutil.move(tmp_path / "moved" / "b", tmp_path / "elsewhere")
    with pytest.raises(VlrtError) as err:
        Index.open(tmp_path / "moved" / "idx").bundle_path()
    assert f"tried {tmp_path / 'moved' / 'b'} (no such directory); {tmp_path / 'a' / 'b'} (no such directory)" \
        in str(err.value) and "--bundle DIR" in str(err.value)
    assert Index.open(tmp_path / "moved" / "idx", bundle=tmp_path / "elsewhere").bundle_path() == tmp_path / "elsewhere"
    fake_bundle(tmp_path / "other", text='{"another": 1}')
    with pytest.raises(VlrtError, match="a different bundle: its manifest differs"):
        Index.open(tmp_path / "moved" / "idx", bundle=tmp_path / "other").bundle_path()


def test_version_1_index_with_an_absolute_bundle_path(tmp_path):
    sha = fake_bundle(tmp_path / "b")
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "index.json").write_text(json.dumps(
        {"version": 1, "bundle": str(tmp_path / "b"), "bundle_manifest_sha256": sha, "embed_dim": 16,
         "encoder": {"engine": "abc", "skip_similar": None, "mode": "exact"}}))
    index = Index.open(tmp_path / "idx")
    assert index.bundle_path() == tmp_path / "b" and index.engine["engine"] == "abc" and len(index) == 0


def test_empty_query_is_refused(tmp_path):
    writer(tmp_path)
    with pytest.raises(VlrtError, match="the query is empty"):
        Index.open(tmp_path).search(" \t")


def test_one_writer_at_a_time(tmp_path):
    w = writer(tmp_path)
    in_flight = tmp_path / "shards" / ".000000.npy.tmp"  # w's shard being written
    in_flight.write_bytes(b"")
    with pytest.raises(VlrtError, match="being written by another Index or IndexWriter in this process"):
        writer(tmp_path)
    assert in_flight.exists()  # the refused writer discarded nothing
    child = ("import sys; from vlrt.runtime.index import IndexWriter\n"
             "try:\n    IndexWriter(sys.argv[1], bundle=None, manifest_sha256='a' * 64, embed_dim=16)\n"
             "except Exception as exc:\n    print(type(exc).__name__, exc)")
    res = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True, check=True)
    assert res.stdout == f"VlrtError {tmp_path} is being written by another process (pid {os.getpid()})\n"
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    w.close()
    with pytest.raises(VlrtError, match="this IndexWriter is closed"):
        w.drop(["a"])
    with Index.open(tmp_path) as index:
        index.compact()  # an Index writes through a writer of its own, holding the lock
        assert not in_flight.exists()  # which discarded the unfinished shard of the closed one
        with pytest.raises(VlrtError, match="in this process; close it first"):
            writer(tmp_path)
    writer(tmp_path).close()  # released by `with`
    index = Index.open(tmp_path)
    index.prune()
    del index  # released when collected
    writer(tmp_path).close()


def test_a_reader_racing_a_compaction_reads_again(tmp_path, monkeypatch):
    emb = unit(np.random.default_rng(7), 3, 16)
    with writer(tmp_path) as w:
        w.append(emb[:2], [{"path": "a"}, {"path": "b"}])
        w.append(emb[2:], [{"path": "a"}])
    want_paths, want = view(tmp_path)
    real_scan = index_module.scan

    def racing(root):
        listed = real_scan(root)
        monkeypatch.setattr(index_module, "scan", real_scan)  # for the compaction's own reads
        with writer(tmp_path) as w:
            w.compact()  # deletes the shards just listed (the first time: then nothing is dead)
        monkeypatch.setattr(index_module, "scan", racing)
        return listed

    monkeypatch.setattr(index_module, "scan", racing)
    paths, got = view(tmp_path)
    assert paths == want_paths == ["b", "a"] and np.array_equal(got, want)
    assert [p.name for p in sorted((tmp_path / "shards").iterdir())] == ["000002.jsonl", "000002.npy"]
    monkeypatch.setattr(index_module, "scan", lambda root: index_module.Scan(["000000"], {"a": (0, 0, {})}, [1]))
    with pytest.raises(VlrtError, match=r"the index changed while it was being read \(.*000000.npy vanished"):
        Index.open(tmp_path)


def test_keep_frames_is_a_recorded_option(tmp_path):
    def resume(root, keep):
        return IndexWriter(root, bundle=None, manifest_sha256="a" * 64, embed_dim=16,
                           encoder={"mode": "exact", "keep_frames": keep})

    resume(tmp_path / "new", True).close()
    with pytest.raises(VlrtError, match="embedded with keep_frames=True, mode=exact, not keep_frames=False"):
        resume(tmp_path / "new", False)
    old = tmp_path / "old"  # made before keep_frames was recorded: what its last shard did counts
    with IndexWriter(old, bundle=None, manifest_sha256="a" * 64, embed_dim=16, encoder={"mode": "exact"}) as w:
        e = unit(np.random.default_rng(8), 1, 16)
        w.append(e, [{"path": "a"}], frames=e[:, None])
    with pytest.raises(VlrtError, match="resume with the same options"):
        resume(old, False)
    resume(old, True).close()
    assert json.loads((old / "index.json").read_text())["encoder"] == {"mode": "exact", "keep_frames": True}
    empty = tmp_path / "empty"
    IndexWriter(empty, bundle=None, manifest_sha256="a" * 64, embed_dim=16, encoder={"mode": "exact"}).close()
    resume(empty, False).close()  # no rows yet: either is consistent


def test_a_file_that_now_fails_keeps_its_error_line(tmp_path):
    e = unit(np.random.default_rng(9), 2, 16)
    with writer(tmp_path) as w:
        w.append(e[:1], [{"path": "/v/a.mp4"}])
        w.report_error("/v/a.mp4", "a.mp4: permission denied: cannot read it", given="a.mp4")
        assert w.save_errors() == 1  # its older embedding stays, and so does the error
    with writer(tmp_path) as w:
        assert list(w.errors) == ["/v/a.mp4"] and w.done_paths() == {"/v/a.mp4"}
        w.clear_errors(["/v/a.mp4"])  # found readable and unchanged
        assert w.save_errors() == 0


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "{}"])
def test_a_damaged_index_json_is_named(tmp_path, text):
    writer(tmp_path).close()
    (tmp_path / "index.json").write_text(text)
    for attempt in (lambda: Index.open(tmp_path), lambda: writer(tmp_path)):
        with pytest.raises(VlrtError, match=rf"^{tmp_path / 'index.json'}: (cannot read|not a vlrt index record)"):
            attempt()


def test_an_impossible_index_directory_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(VlrtError, match=rf"^{tmp_path / 'file'}: not a directory"):
        writer(tmp_path / "file")
    with pytest.raises(VlrtError, match=rf"^{tmp_path / 'file' / 'idx'}: cannot make the index directory: not a directory$"):
        writer(tmp_path / "file" / "idx")
