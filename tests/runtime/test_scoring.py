"""Query-time frame selection: the mean of the k best frames, padding ignored; the two-stage search
agrees with the exact one when its first stage keeps everything; Index.search, `vlrt search` take
it, and an index without per-frame embeddings says how to get them."""
import json

import numpy as np
import pytest
from video_assets import write_video

import vlrt
from vlrt.cli.main import main
from vlrt.errors import VlrtError
from vlrt.runtime.scoring import frame_rescorer, frame_scores, two_stage


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def gallery(n=40, t=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = unit(rng.standard_normal((n, t, d)))
    counts = rng.integers(1, t + 1, n)
    frames[np.arange(t)[None, :] >= counts[:, None]] = 0  # padded frames: zero rows
    videos = unit(frames.sum(1))
    return frames, videos, counts, unit(rng.standard_normal((5, d)))


def naive(query, frames, counts, k):
    out = []
    for f, c in zip(frames, counts):
        sims = sorted((float(query @ f[i]) for i in range(c)), reverse=True)[:k]
        out.append(sum(sims) / len(sims))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2, 4, 6, 9])
def test_frame_scores_are_the_mean_of_the_k_best_real_frames(k):
    frames, _, counts, queries = gallery()
    got = frame_scores(queries, frames, k)
    for q in range(len(queries)):
        np.testing.assert_allclose(got[q], naive(queries[q], frames, counts, k), atol=1e-5)


def test_frame_scores_in_blocks_and_fp16(monkeypatch):
    import vlrt.runtime.scoring as scoring

    frames, _, _, queries = gallery(n=50)
    whole = frame_scores(queries, frames, 3)
    monkeypatch.setattr(scoring, "CHUNK", 7)
    np.testing.assert_allclose(frame_scores(queries, frames, 3), whole, atol=1e-6)
    np.testing.assert_allclose(frame_scores(queries, frames.astype(np.float16), 3), whole, atol=2e-3)


def test_a_video_without_frames_ranks_last_and_k_must_be_positive():
    frames, _, _, queries = gallery(n=4)
    frames[2] = 0
    got = frame_scores(queries, frames, 2)
    assert np.isneginf(got[:, 2]).all() and np.isfinite(np.delete(got, 2, axis=1)).all()
    with pytest.raises(VlrtError, match="k >= 1"):
        frame_scores(queries, frames, 0)


def test_two_stage_equals_exact_with_a_full_first_stage_and_stays_within_it():
    frames, videos, _, queries = gallery(n=60)
    exact = frame_scores(queries, frames, 2)
    scores, ids = two_stage(queries, videos, frame_rescorer(queries, frames, 2), k=5, depth=60)
    np.testing.assert_array_equal(ids, np.argsort(-exact, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, axis=1), atol=1e-6)
    _, shallow = two_stage(queries, videos, frame_rescorer(queries, frames, 2), k=5, depth=8)
    first = np.argsort(-(queries @ videos.T), axis=1)[:, :8]
    assert all(set(s) <= set(f) for s, f in zip(shallow, first))


@pytest.fixture(scope="module")
def frame_index(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    paths = []
    for i in range(4):
        write_video(root / f"v{i}.mp4", frames=12 * (i + 1))
        paths.append(str(root / f"v{i}.mp4"))
    with vlrt.Index.create(root / "idx", tiny_bundle, backend="ort-cpu", keep_frames=True) as index:
        index.add(paths)
    with vlrt.Index.create(root / "plain", tiny_bundle, backend="ort-cpu") as index:
        index.add(paths[:2])
    return root


def test_index_search_by_frames_exact_and_reranked(frame_index):
    index = vlrt.Index.open(frame_index / "idx")
    query = index.runtime().encode_text(["a test pattern"])
    want = frame_scores(query, index.frames, 2)[0]
    order = np.argsort(-want, kind="stable")
    hits = index.search("a test pattern", k=3, frames=2)
    assert [p for p, _ in hits] == [index.paths[i] for i in order[:3]]
    np.testing.assert_allclose([s for _, s in hits], want[order[:3]], atol=1e-6)
    # the first stage keeps all 4; a first stage has at least k: the same hits, scores up to float rounding
    for rerank in (4, 1):
        deep = index.search("a test pattern", k=3, frames=2, rerank=rerank)
        assert [p for p, _ in deep] == [p for p, _ in hits]
        np.testing.assert_allclose([s for _, s in deep], [s for _, s in hits], rtol=0, atol=1e-6)
    with pytest.raises(VlrtError, match="give frames=K too"):
        index.search("a test pattern", rerank=2)
    with pytest.raises(VlrtError, match="keeps no per-frame embeddings.*--keep-frames"):
        vlrt.Index.open(frame_index / "plain").search("a test pattern", frames=2)


def test_vlrt_search_takes_frames_and_rerank(frame_index, capsys):
    assert main(["search", str(frame_index / "idx"), "a test pattern", "-k", "2", "--frames", "3", "--rerank", "3",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = vlrt.Index.open(frame_index / "idx").search("a test pattern", k=2, frames=3, rerank=3)
    assert [(r["path"], r["score"]) for r in out["results"]] == [(p, s) for p, s in want]
