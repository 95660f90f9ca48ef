"""Indexes built in parts and merged (vlrt/runtime/merge.py): which files a part takes, what must
agree between the parts, a part being written refused, the last part winning a path given twice,
stored records copied bit for bit, errors kept for files with no row, re-runs (after an
interruption, or finished) giving the same live rows, merging into an existing index and into
a part; and `vlrt embed --part` end to end against one `vlrt embed` of every file."""
import hashlib
import json

import numpy as np
import pytest
from cli_support import vlrt
from video_assets import write_video

from vlrt.errors import VlrtError
from vlrt.runtime import index as index_module
from vlrt.runtime.bundle import sha256_file
from vlrt.runtime.corpus import drop_deleted
from vlrt.runtime.index import Index, IndexWriter, load_shards, read_errors, scan
from vlrt.runtime.merge import check_part, in_part, merge, parse_part, recorded_part

D = 16
ENCODER = {"engine": None, "skip_similar": None, "mode": "exact", "keep_frames": False}
ENGINE = {"backend": "ort-cpu", "precision": "fp32", "engine": None, "options": {}, "skip_similar": None,
          "packed": True}


def unit(rng, n, d=D):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "vlrt.json").write_text("{}")
    return path


def part_index(root, bundle, shards, *, part=None, encoder=ENCODER, engine=ENGINE, dim=D, frames=None, mtime=1):
    """An index whose shards hold `shards`: [(paths, embeddings), ...], its files of mtime `mtime`;
    per-frame records from `frames(paths)` when given."""
    enc = {**encoder, **({"part": part} if part else {})}
    with IndexWriter(root, bundle=bundle, manifest_sha256=sha256_file(bundle / "vlrt.json"), embed_dim=dim,
                     encoder=enc, engine=engine) as w:
        for paths, emb in shards:
            w.append(emb, [{"path": p, "file_size": 1, "mtime_ns": mtime} for p in paths],
                     frames(paths) if frames else None)
    return root


def live(root):
    emb, rows = load_shards(root)
    return dict(zip((r["path"] for r in rows), emb))


def test_a_part_takes_the_paths_of_its_hash():
    paths = [f"/videos/{i:03d}.mp4" for i in range(300)]
    for n in (1, 2, 3, 7):
        takers = [[i for i in range(n) if in_part(p, (i, n))] for p in paths]
        assert all(len(t) == 1 for t in takers)  # every path in exactly one part
        if n > 1:
            assert len({t[0] for t in takers}) == n
    digest = int(hashlib.sha256(b"/videos/007.mp4").hexdigest(), 16)  # stable: sha256, not hash()
    assert in_part("/videos/007.mp4", (digest % 5, 5)) and in_part("/x", None)
    assert parse_part("1/4") == (1, 4) == check_part([1, 4])
    for bad, message in (("4/4", r"numbered from 0 to 3 \(0/4 ... 3/4\)"), ("-1/2", "numbered from 0 to 1"),
                         ("0/0", "at least 1"), ("1", "give I/N"), ("a/b", "give I/N")):
        with pytest.raises(VlrtError, match=message):
            parse_part(bad)


def test_a_part_drops_only_its_own_deleted_files(tmp_path, bundle):
    gone = [str(tmp_path / f"gone{i}.mp4") for i in range(12)]
    mine = [p for p in gone if in_part(p, (0, 2))]
    assert mine and len(mine) < len(gone)
    part_index(tmp_path / "p0", bundle, [(gone, unit(np.random.default_rng(0), len(gone)))], part="0/2")
    with IndexWriter(tmp_path / "p0", bundle=None, manifest_sha256=sha256_file(bundle / "vlrt.json"),
                     embed_dim=D) as w:
        assert recorded_part(w.meta) == (0, 2)
        assert sorted(drop_deleted(w, part=(0, 2))) == sorted(mine)
        assert sorted(w.done_paths()) == sorted(set(gone) - set(mine))


def test_two_parts_merge_into_a_new_index(tmp_path, bundle):
    rng = np.random.default_rng(1)
    emb = unit(rng, 6)
    a = part_index(tmp_path / "a", bundle, [(["a", "b"], emb[:2]), (["c"], emb[2:3])], part="0/3")
    b = part_index(tmp_path / "b", bundle, [(["d", "e", "f"], emb[3:])], part="1/3")
    with IndexWriter(a, bundle=None, manifest_sha256=sha256_file(bundle / "vlrt.json"), embed_dim=D) as w:
        w.drop(["c"])  # a dropped row is not merged
        w.report_error("x", "x: cannot decode")  # no row anywhere: kept
        w.report_error("d", "d: permission denied")  # live in the other part: not kept
        w.save_errors()
    events = []
    summary = merge(tmp_path / "m", [a, b], shard_rows=2, progress=events.append)
    assert (summary.copied, summary.unchanged, summary.duplicates, summary.replaced) == (5, 0, 0, 0)
    assert (summary.total_in_index, summary.errors, summary.missing_parts) == (5, 1, ["2/3"])
    assert [p["part"] for p in summary.parts] == ["0/3", "1/3"] and [p["live"] for p in summary.parts] == [2, 3]
    assert [(e.total, e.copied) for e in events] == [(5, 0), (5, 2), (5, 4), (5, 5)]
    assert scan(tmp_path / "m").counts == [2, 2, 1]  # at most shard_rows a shard, across input shards
    got = live(tmp_path / "m")
    assert list(got) == ["a", "b", "d", "e", "f"]
    assert all(np.array_equal(got[p], emb[i]) for i, p in enumerate("abcdef") if p != "c")
    assert list(read_errors(tmp_path / "m")) == ["x"]
    meta = json.loads((tmp_path / "m" / "index.json").read_text())
    assert meta["encoder"] == ENCODER and meta["engine"] == ENGINE  # no part: the whole index
    assert meta["bundle_absolute"] == str(bundle) and meta["ann"]["rows"] == 5
    index = Index.open(tmp_path / "m")
    assert index.bundle_path() == bundle and index.search(emb[4], k=1)[0][0] == "e"
    IndexWriter(a, bundle=None, manifest_sha256=sha256_file(bundle / "vlrt.json"), embed_dim=D).close()  # unlocked


def test_parts_that_differ_are_refused(tmp_path, bundle):
    rng = np.random.default_rng(2)
    a = part_index(tmp_path / "a", bundle, [(["a"], unit(rng, 1))], part="0/2")
    cases = {
        "mode": (dict(encoder={**ENCODER, "mode": "fast"}), r"other encoding options .*mode=fast against exact"),
        "frames": (dict(encoder={**ENCODER, "keep_frames": True}, frames=lambda p: np.zeros((len(p), 2, D))),
                   "keep_frames=True against False"),
        "engine": (dict(engine={**ENGINE, "precision": "int8", "engine": "ort-int8"}),
                   r"other engine record .*engine=ort-int8 against None, precision=int8 against fp32"),
        "dim": (dict(dim=8), "holds 8-d embeddings"),
    }
    for name, (options, message) in cases.items():
        dim = options.get("dim", D)
        other = part_index(tmp_path / name, bundle, [(["b"], unit(rng, 1, dim))], part="1/2", **options)
        with pytest.raises(VlrtError, match=message):
            merge(tmp_path / "m", [a, other])
        assert not (tmp_path / "m").exists()
    with pytest.raises(VlrtError, match=f"{a} was embedded with other encoding options than {tmp_path / 'mode'}"):
        merge(tmp_path / "mode", [a])  # an existing index must agree too
    elsewhere = tmp_path / "other-bundle"
    elsewhere.mkdir()
    (elsewhere / "vlrt.json").write_text('{"other": 1}')
    other = part_index(tmp_path / "other", elsewhere, [(["b"], unit(rng, 1))], part="1/2")
    with pytest.raises(VlrtError, match=f"{other} was embedded with another bundle than {a}"):
        merge(tmp_path / "m", [a, other])
    packed = part_index(tmp_path / "packed", bundle, [(["b"], unit(rng, 1))], engine={**ENGINE, "packed": False})
    assert merge(tmp_path / "m", [a, packed]).total_in_index == 2  # the same embeddings, packed or not
    with pytest.raises(VlrtError, match="is given twice"):
        merge(tmp_path / "n", [a, packed, tmp_path / "a"])
    with pytest.raises(VlrtError, match="is the output index too"):
        merge(a, [packed, a])
    with pytest.raises(VlrtError, match="not a vlrt index"):
        merge(tmp_path / "n", [a, tmp_path])


def test_a_part_being_written_is_refused(tmp_path, bundle):
    rng = np.random.default_rng(3)
    a = part_index(tmp_path / "a", bundle, [(["a"], unit(rng, 1))], part="0/2")
    b = part_index(tmp_path / "b", bundle, [(["b"], unit(rng, 1))], part="1/2")
    with IndexWriter(b, bundle=None, manifest_sha256=sha256_file(bundle / "vlrt.json"), embed_dim=D):
        with pytest.raises(VlrtError, match=f"{b} is being written by .*; a part is merged once no run writes it"):
            merge(tmp_path / "m", [a, b])
    assert not (tmp_path / "m").exists()
    IndexWriter(a, bundle=None, manifest_sha256=sha256_file(bundle / "vlrt.json"), embed_dim=D).close()  # released
    assert list(live(merge(tmp_path / "m", [a, b]).index)) == ["a", "b"]


def test_the_last_part_wins_and_replaces_rows_of_an_existing_index(tmp_path, bundle):
    rng = np.random.default_rng(4)
    emb = unit(rng, 8)
    out = part_index(tmp_path / "m", bundle, [(["old", "x"], emb[:2])])  # an existing, whole index
    a = part_index(tmp_path / "a", bundle, [(["x", "y", "z"], emb[2:5])], part="0/2", mtime=2)  # x changed since
    b = part_index(tmp_path / "b", bundle, [(["y", "w"], emb[5:7])], part="1/2", mtime=3)
    summary = merge(out, [a, b])
    assert (summary.duplicates, summary.replaced, summary.copied, summary.total_in_index) == (1, 1, 4, 5)
    got = live(out)
    assert sorted(got) == ["old", "w", "x", "y", "z"] and len(scan(out).live) == 5
    for path, row in (("old", 0), ("x", 2), ("y", 5), ("z", 4), ("w", 6)):
        assert np.array_equal(got[path], emb[row]), path
    more = part_index(tmp_path / "c", bundle, [(["v", "z"], emb[6:8])], part="1/2", mtime=4)
    again = merge(out, [more])  # more parts later
    assert (again.copied, again.replaced, again.total_in_index) == (2, 1, 6) and np.array_equal(live(out)["z"], emb[7])


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_per_frame_records_are_copied_as_stored(tmp_path, bundle, dtype):
    rng = np.random.default_rng(5)
    encoder = {**ENCODER, "keep_frames": True, **({"frames_dtype": "int8"} if dtype == "int8" else {})}
    records = {f"v{i}": rng.standard_normal((3, D + 1)).astype(np.float32) for i in range(5)}  # + a scalar column
    frames = lambda paths: np.stack([records[p] for p in paths])  # noqa: E731
    emb = unit(rng, 5)
    a = part_index(tmp_path / "a", bundle, [(["v0", "v1"], emb[:2]), (["v2"], emb[2:3])], part="0/2",
                   encoder=encoder, frames=frames)
    b = part_index(tmp_path / "b", bundle, [(["v3", "v4"], emb[3:])], part="1/2", encoder=encoder, frames=frames)
    merge(tmp_path / "m", [a, b], shard_rows=2)

    def stored(root):
        rows = load_shards(root)[1]
        got = load_shards(root, frames=True)[0]
        arrays = (got.q, got.scale, got.extra) if dtype == "int8" else (got,)
        return {r["path"]: [arr[i] for arr in arrays] for i, r in enumerate(rows)}

    want = {**stored(a), **stored(b)}
    got = stored(tmp_path / "m")
    assert sorted(got) == sorted(want) == sorted(records)
    for path in records:
        for g, w in zip(got[path], want[path]):
            assert g.dtype == w.dtype and np.array_equal(g, w)  # bit for bit, never converted
    shards = sorted(p.name for p in (tmp_path / "m" / "shards").iterdir())
    suffixes = ([".frames.npy", ".frames_extra.npy", ".frames_scale.npy"] if dtype == "int8" else [".frames.npy"])
    assert shards == sorted(f"00000{i}{s}" for i in range(3) for s in [".jsonl", ".npy", *suffixes])
    assert Index.open(tmp_path / "m").frame_records.shape == (5, 3, D + 1)


def test_a_rerun_merge_gives_the_same_live_rows(tmp_path, bundle, monkeypatch):
    rng = np.random.default_rng(6)
    emb = unit(rng, 7)
    a = part_index(tmp_path / "a", bundle, [(list("abcd"), emb[:4])], part="0/2")
    b = part_index(tmp_path / "b", bundle, [(list("efg"), emb[4:])], part="1/2")
    merge(tmp_path / "whole", [a, b])
    want = live(tmp_path / "whole")
    real_write = index_module._atomic_write
    commits = []

    def crashing(path, write):
        if path.name.endswith(".jsonl") and path.parent.name == "shards":
            if len(commits) == 2:  # the third shard's commit: its arrays are on disk, its rows are not
                raise KeyboardInterrupt
            commits.append(path)
        real_write(path, write)

    monkeypatch.setattr(index_module, "_atomic_write", crashing)
    with pytest.raises(KeyboardInterrupt):
        merge(tmp_path / "m", [a, b], shard_rows=2)
    monkeypatch.setattr(index_module, "_atomic_write", real_write)
    assert list(live(tmp_path / "m")) == list("abcd")  # complete shards only
    summary = merge(tmp_path / "m", [a, b], shard_rows=2)
    assert (summary.unchanged, summary.copied) == (4, 3)
    got = live(tmp_path / "m")
    assert list(got) == list(want) and all(np.array_equal(got[p], want[p]) for p in want)
    before = scan(tmp_path / "m")
    assert before.dead == 0  # nothing copied twice
    again = merge(tmp_path / "m", [a, b], shard_rows=2)  # finished: nothing to copy
    assert (again.copied, again.unchanged, again.total_in_index) == (0, 7, 7)
    assert scan(tmp_path / "m").stems == before.stems


def test_merging_into_a_part_makes_it_whole(tmp_path, bundle):
    rng = np.random.default_rng(7)
    a = part_index(tmp_path / "a", bundle, [(["a"], unit(rng, 1))], part="0/2")
    b = part_index(tmp_path / "b", bundle, [(["b"], unit(rng, 1))], part="1/2")
    assert merge(a, [b]).total_in_index == 2
    meta = json.loads((a / "index.json").read_text())
    assert "part" not in meta["encoder"] and recorded_part(meta) is None
    sha = sha256_file(bundle / "vlrt.json")
    IndexWriter(a, bundle=None, manifest_sha256=sha, embed_dim=D, encoder=ENCODER).close()  # resumed whole
    with pytest.raises(VlrtError, match="resume with the same options"):
        IndexWriter(a, bundle=None, manifest_sha256=sha, embed_dim=D, encoder={**ENCODER, "part": "0/2"})


def test_embed_in_parts_and_merge_matches_one_embed(tiny_bundle, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    names = [f"v{i}.mp4" for i in range(40)]
    by_part = [[n for n in names if in_part(str((videos / n).resolve()), (i, 2))][:3] for i in range(2)]
    for k, name in enumerate(sorted(by_part[0] + by_part[1])):  # three videos in each part, all different
        write_video(videos / name, width=64 + 16 * k, height=48, frames=12 + 6 * k)
    whole = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / "whole", "--json")
    assert whole.returncode == 0, whole.stderr
    for i in range(2):
        res = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / f"p{i}", "--part", f"{i}/2", "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert (out["part"], out["embedded"], out["other_parts"]) == (f"{i}/2", 3, 3)
    res = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / "p0", "--part", "1/2")
    assert res.returncode == 1 and "part=0/2" in res.stderr and "resume with the same options" in res.stderr
    res = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / "p9", "--part", "2/2")
    assert res.returncode == 1 and "part 2/2: parts are numbered from 0 to 1" in res.stderr
    res = vlrt("embed", tiny_bundle, "-o", tmp_path / "p0", "--prune", "--part", "1/2")
    assert res.returncode == 1 and "this index is part 0/2, not part 1/2" in res.stderr
    with Index.open(tmp_path / "p0") as index:  # an opened part adds the files of its part only
        more = index.add([str(videos)])
    assert (more.part, more.embedded, more.already_indexed, more.other_parts) == ("0/2", 0, 3, 3)
    res = vlrt("merge", tmp_path / "p0", tmp_path / "p1", "-o", tmp_path / "merged")
    assert res.returncode == 0, res.stderr
    assert "merged 2 parts" in res.stdout and "6 rows copied" in res.stdout and "part 1/2, 3 videos" in res.stdout
    again = json.loads(vlrt("merge", tmp_path / "p0", tmp_path / "p1", "-o", tmp_path / "merged", "--json").stdout)
    assert (again["copied"], again["unchanged"], again["total_in_index"]) == (0, 6, 6)
    want, got = Index.open(tmp_path / "whole"), Index.open(tmp_path / "merged")
    assert sorted(got.paths) == sorted(want.paths) and len(got) == 6
    by_path = dict(zip(want.paths, want.embeddings))
    for path, emb in zip(got.paths, got.embeddings):
        np.testing.assert_allclose(emb, by_path[path], atol=1e-6)
    for query in ("a moving square", "a red square in the corner"):
        w, g = want.search(query, k=5), got.search(query, k=5)
        assert [p for p, _ in g] == [p for p, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=1e-6)
    res = vlrt("embed", tiny_bundle, videos, "-o", tmp_path / "merged", "--json")  # a plain embed resumes it
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["embedded"], out["already_indexed"], out["total_in_index"], out["part"]) == (0, 6, 6, None)
