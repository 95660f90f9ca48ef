"""Videos -> embeddings: the pipeline equals decoding and preprocessing by hand; every kind of
bad file is reported by name and reason while the good ones are embedded; memory stays bounded
and decoding overlaps encoding."""
import json
import threading
from fractions import Fraction
from itertools import zip_longest

import av
import numpy as np
import pytest
from bad_corpus import cost_in_child, write_corpus
from checkpoint_writers import TINY_C4C, write_clip4clip
from stream_bounds import BATCH, IN_FLIGHT, BoundedCorpus
from video_assets import write_packed_avi, write_video

from vlrt import Runtime
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.pipeline import Clip, ClipLoader, encode_stream, sample_indices
from vlrt.runtime.preprocess import Preprocess
from vlrt.runtime.sampling import clip4clip_indices, fixed_fps_indices, segment_middle_indices
from vlrt.runtime.video import probe, read_frames


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    export_checkpoint(ckpt, root / "b", max_frames=4)
    return Runtime.load(root / "b")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_sampling_follows_the_manifest(rt, corpus):
    good, _ = corpus
    # 120 frames at 24 fps: frames 0, 24, 48, 72, 96; linspace(0, 4, 4) = 0, 1.33, 2.67, 4 -> 0, 1, 2, 4.
    info = probe(good[1])
    assert rt.bundle.manifest["sampling"]["rule"] == "fps_timeline"  # the families' default
    assert sample_indices(info, rt.bundle.manifest["sampling"], 4) == [0, 24, 48, 96]


C4C = {"fps": 1.0, "slice_framepos": 2}


def test_the_default_rule_follows_the_timeline_of_29_97_fps_and_vfr_files(tmp_path):
    """Hand-computed in tests/runtime/test_sampling.py: on 29.97 fps the frame shown at second t is
    floor(29.97 t); on the VFR pattern, seconds 1..6 show frames 29, 57, 86, 115, 144, 173.
    "clip4clip" keeps CLIP4Clip's index arithmetic (29 frames a second, 28 at 28.7 fps)."""
    ntsc, vfr = tmp_path / "ntsc.mp4", tmp_path / "vfr.mp4"
    write_video(ntsc, fps=Fraction(30000, 1001), frames=300, gop=30)
    write_video(vfr, vfr=True, frames=200)
    ntsc_info, vfr_info = probe(ntsc), probe(vfr)
    assert ntsc_info.pts[:3] == (0, 1001, 2002) and ntsc_info.duration == pytest.approx(10.01)
    timeline = {"rule": "fps_timeline", **C4C}
    assert sample_indices(ntsc_info, timeline, 12) == [0, 29, 59, 89, 119, 149, 179, 209, 239, 269, 299]
    assert sample_indices(vfr_info, timeline, 12) == [0, 29, 57, 86, 115, 144, 173]
    assert sample_indices(vfr_info, timeline, 3) == [0, 86, 173]
    by_index = {"rule": "clip4clip", **C4C}
    assert sample_indices(ntsc_info, by_index, 12) == [29 * s for s in range(11)]
    assert int(vfr_info.fps) == 28 and sample_indices(vfr_info, by_index, 12) == [28 * s for s in range(8)]


def test_every_rule_by_name(corpus):
    good, _ = corpus
    info = probe(good[1])  # 120 frames at 24 fps
    assert sample_indices(info, {"rule": "clip4clip", "fps": 2, "slice_framepos": 0}, 4) == \
        clip4clip_indices(120, 24.0, max_frames=4, sample_fps=2, slice="head") == [0, 12, 24, 36]
    assert sample_indices(info, {"rule": "segment_middle"}, 4) == segment_middle_indices(120, num_segments=4)
    assert sample_indices(info, {"rule": "fps", "fps": 2.0}, 4) == \
        fixed_fps_indices(info.timestamps, fps=2.0, max_frames=4) == [0, 12, 24, 36]
    with pytest.raises(VlrtError, match="unknown sampling rule 'uniform'.*known: fps_timeline, clip4clip, "
                                        "segment_middle, fps"):
        sample_indices(info, {"rule": "uniform"}, 4)


def test_a_packed_b_frame_avi_loads_its_sampled_frames(rt, tmp_path):
    """A DivX/Xvid-style AVI whose decoded frames carry shuffled pts: the loader's pixels are those
    of a sequential decode at the sampled frames."""
    path = tmp_path / "packed.avi"
    write_packed_avi(path, frames=72)
    loader = ClipLoader(rt.bundle.manifest)
    clip = loader(str(path))
    assert clip.indices == [0, 24, 48] and clip.n_frames == 3  # 3 s at 24 fps
    pre = Preprocess.from_manifest(rt.bundle.manifest["preprocessing"])
    with av.open(str(path)) as c:
        ref = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for t, i in enumerate(clip.indices):
        np.testing.assert_array_equal(clip.pixels[t], pre.exact(ref[i]))


def test_encode_videos_equals_manual_decode(rt, corpus):
    good, _ = corpus
    pre = Preprocess.from_manifest(rt.bundle.manifest["preprocessing"])
    pixels = np.zeros((len(good), 4, 3, 32, 32), np.float32)
    mask = np.zeros((len(good), 4), np.float32)
    for b, path in enumerate(good):
        info = probe(path)
        idx = sample_indices(info, rt.bundle.manifest["sampling"], 4)
        for t, rgb in enumerate(read_frames(path, idx, info=info)):
            pixels[b, t] = pre.exact(rgb)
        mask[b, :len(idx)] = 1
    want = rt.encode_frames(pixels, mask)
    got = rt.encode_videos(good, batch_size=2)
    assert np.abs(got - want).max() < 1e-5
    assert mask.sum(1).tolist() == [2, 4, 3, 1, 1, 1]


def test_bad_files_are_reported_and_good_ones_embedded(rt, corpus):
    good, bad = corpus
    order = [p for pair in zip_longest(bad, good) for p in pair if p]  # every batch of 2 mixes both
    loader = ClipLoader(rt.bundle.manifest)
    encode = lambda px, m: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
    results = list(encode_stream(order, loader, encode, batch_size=2))
    assert [r.path for r in results] == order
    for r in results:
        if r.path in bad:
            assert r.embedding is None and r.error.startswith(r.path + ": ") and bad[r.path] in r.error, r.error
        else:
            assert r.error is None, r.error
    got = {r.path: r.embedding for r in results if r.path in good}
    alone = np.concatenate([rt.encode_videos([p]) for p in good])  # (6, D)
    assert sorted(got) == sorted(good) and np.abs(np.stack([got[p] for p in good]) - alone).max() < 1e-5


def test_absurd_sizes_are_refused_before_allocating(rt, corpus):
    """Measured in a fresh process: FFmpeg's allocations are outside tracemalloc's sight. Unlimited,
    the 250 KB bomb.png cost this loader 2 GB and 8 s, the 384 MB big.y4m 2 GB and 5 s."""
    _, bad = corpus
    oversized = [p for p in bad if p.endswith(("wide.y4m", "huge.y4m", "big.y4m", "bomb.png"))]
    setup = ("import json\nfrom vlrt.runtime.pipeline import ClipLoader\n"
             f"call = ClipLoader(json.loads({json.dumps(rt.bundle.manifest)!r}))")
    seconds, mb, errors = cost_in_child(setup, oversized)
    assert len(errors) == len(oversized)
    for path, error in zip(oversized, errors):
        assert error.startswith(path + ": ") and bad[path] in error, error
    assert mb < 100 and seconds < 3, (mb, seconds)  # one RGB frame of 60000x4000 would be 720 MB


def test_encode_videos_names_the_bad_file(rt, corpus):
    good, bad = corpus
    noise = next(p for p in bad if p.endswith("noise.mp4"))
    with pytest.raises(VlrtError, match="noise.mp4: cannot open"):
        rt.encode_videos([good[0], noise])


def test_fast_mode_is_close_to_exact(rt, corpus):
    good, _ = corpus
    exact = rt.encode_videos(good[:3])
    fast = rt.encode_videos(good[:3], mode="fast")
    cos = (exact * fast).sum(1)
    assert cos.min() > 0.99 and not np.array_equal(exact, fast)


def _fake_clip(path: str) -> Clip:
    return Clip(path, np.full((2, 3, 1, 1), float(path), np.float32), 2, [0, 1], None)  # (T, 3, S, S)


def _fake_encode(pixels, mask):
    return pixels[:, 0, :, 0, 0], pixels[:, :, :, 0, 0]  # (B, D=3), (B, T, D)


def test_memory_stays_bounded_whatever_the_corpus_size():
    """600 paths, 4 in 5 of them bad in runs of 40: clips loaded but not yet yielded, and paths
    read ahead of the output, stay within encode_stream's documented bounds."""
    corpus = BoundedCorpus(_fake_clip)
    corpus.check(encode_stream(corpus.paths(), corpus.loader, _fake_encode, batch_size=BATCH, workers=3,
                               in_flight=IN_FLIGHT))


def test_unexpected_errors_are_reported_in_words_without_errno():
    """An FFmpeg error escaping a loader (here from swscale) is named by type and reason, and the
    errno number and C function PyAV puts in its text are left out."""
    def loader(path):
        if path == "1":
            raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input", "sws_scale()")
        return _fake_clip(path)

    results = list(encode_stream(["0", "1", "2"], loader, _fake_encode, batch_size=2))
    assert [r.error for r in results] == [
        None, "1: InvalidDataError: invalid data found when processing input", None]
    assert [float(r.embedding[0]) for r in results if r.embedding is not None] == [0.0, 2.0]


def test_decoding_overlaps_encoding():
    """Encoding batch 1 and loading the first clip of batch 2 meet at a barrier: a pipeline that
    decoded only between encoder calls would break it."""
    meet = threading.Barrier(2, timeout=10)
    calls = []

    def loader(path):
        if path == "2":
            meet.wait()
        return _fake_clip(path)

    def encode(pixels, mask):
        if not calls:
            try:
                meet.wait()
            except threading.BrokenBarrierError:
                pytest.fail("no clip of batch 2 was loading while batch 1 was encoded")
        calls.append(len(pixels))
        return _fake_encode(pixels, mask)

    results = list(encode_stream(map(str, range(6)), loader, encode, batch_size=2, workers=2))
    assert calls == [2, 2, 2] and [r.embedding[0] for r in results] == [0, 1, 2, 3, 4, 5]
