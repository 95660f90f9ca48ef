"""Videos -> embeddings: the pipeline equals decoding and preprocessing by hand; bad files are
reported by name while the good ones are embedded."""
import os

import numpy as np
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip
from video_assets import write_audio_only, write_image, write_video

from vlrt import Runtime
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.pipeline import ClipLoader, encode_stream, sample_indices
from vlrt.runtime.preprocess import Preprocess
from vlrt.runtime.video import probe, read_frames


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=0, head="seqTransf")
    export_checkpoint(ckpt, root / "b", max_frames=4)
    return Runtime.load(root / "b")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good = []
    for i, (frames, fps) in enumerate([(48, 24), (120, 24), (30, 10)]):
        write_video(root / f"good{i}.mp4", frames=frames, fps=fps)
        good.append(str(root / f"good{i}.mp4"))
    write_video(root / "one_frame.mp4", frames=1)
    write_image(root / "still.png")
    good += [str(root / "one_frame.mp4"), str(root / "still.png")]
    bad = {"empty.mp4": b"", "noise.mp4": os.urandom(5000)}
    for name, data in bad.items():
        (root / name).write_bytes(data)
    full = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(full[:300])
    write_audio_only(root / "audio.m4a")
    bad_paths = [str(root / n) for n in [*bad, "truncated.mp4", "audio.m4a", "missing.mp4"]]
    return good, bad_paths


def test_sampling_follows_the_manifest(rt, corpus):
    good, _ = corpus
    # 120 frames at 24 fps: frames 0, 24, 48, 72, 96; linspace(0, 4, 4) = 0, 1.33, 2.67, 4 -> 0, 1, 2, 4.
    info = probe(good[1])
    assert sample_indices(info, rt.bundle.manifest["sampling"], 4) == [0, 24, 48, 96]


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
    assert mask.sum(1).tolist() == [2, 4, 3, 1, 1]


def test_bad_files_are_reported_and_good_ones_embedded(rt, corpus):
    good, bad = corpus
    order = [bad[0], good[0], bad[1], bad[2], good[1], bad[3], bad[4], good[2]]
    loader = ClipLoader(rt.bundle.manifest)
    encode = lambda px, m: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
    results = list(encode_stream(order, loader, encode, batch_size=2))
    assert [r.path for r in results] == order
    for r in results:
        if r.path in bad:
            assert r.error and os.path.basename(r.path) in r.error and r.embedding is None
        else:
            assert r.error is None and r.embedding.shape == (TINY_C4C.embed_dim,)
    assert np.abs(np.stack([r.embedding for r in results if r.path in good]) - rt.encode_videos(good[:3])).max() < 1e-5


def test_encode_videos_names_the_bad_file(rt, corpus):
    good, bad = corpus
    with pytest.raises(VlrtError, match="noise.mp4"):
        rt.encode_videos([good[0], bad[1]])


def test_fast_mode_is_close_to_exact(rt, corpus):
    good, _ = corpus
    exact = rt.encode_videos(good[:3])
    fast = rt.encode_videos(good[:3], mode="fast")
    cos = (exact * fast).sum(1)
    assert cos.min() > 0.99 and not np.array_equal(exact, fast)
