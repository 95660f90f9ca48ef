"""Redundant-frame skipping: which frames are encoded, and that every pooling rule still gives the
video embedding it gives without skipping."""
import json
import subprocess
import sys

import numpy as np
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip

from vlrt import Runtime
from vlrt.bench import synth
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.runtime.frameskip import representatives

STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)  # CLIP's


@pytest.fixture(autouse=True)
def split_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module", params=["meanP", "seqTransf", "seqLSTM"])
def bundle(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=2, head=request.param)
    return export_checkpoint(ckpt, root / "b", max_frames=6).bundle


def levels(value):
    """A pixel offset of `value` 8-bit levels in every channel, in normalised units."""
    return (value / (255.0 * STD)).reshape(3, 1, 1).astype(np.float32)


def test_representatives_follow_the_last_encoded_frame():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 8, 8)).astype(np.float32)
    pixels = np.stack([base, base + levels(0.5), base + levels(1.0), base + levels(1.6), base + levels(2.5),
                       rng.standard_normal((3, 8, 8)).astype(np.float32)])[None]  # (1, 6, 3, 8, 8)
    mask = np.array([[1, 1, 1, 1, 1, 0]], np.float32)
    rep = representatives(pixels, mask, 1.0, STD)
    # 0.5 and 1.0 level from frame 0: reuse it; 1.6: new; 2.5 is 0.9 from frame 3: reuses 3; masked: -1
    assert rep.tolist() == [[0, 0, 0, 3, 3, -1]]
    assert representatives(pixels, mask, 0.0, STD).tolist() == [[0, 1, 2, 3, 4, -1]]


def test_every_head_gives_the_same_video_embedding(bundle):
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((3, 6, 3, 32, 32)).astype(np.float32)
    pixels[0, 1:] = pixels[0, 0]  # a static shot: one frame to encode
    pixels[1, 3:] = pixels[1, 2] + levels(0.3)  # frozen after frame 2, with a little noise
    mask = np.ones((3, 6), np.float32)
    mask[2, 4:] = 0
    plain = Runtime.load(bundle)
    skipping = Runtime.load(bundle, skip_similar=1.0)
    want, want_frames = plain.encode_frames(pixels, mask, return_frames=True)
    got, got_frames = skipping.encode_frames(pixels, mask, return_frames=True)
    assert (skipping.skip_stats.frames, skipping.skip_stats.encoded) == (16, 1 + 3 + 4)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)  # identical frames: the same result
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)  # nothing skipped
    assert float(got[1] @ want[1]) > 0.999  # 0.3 levels of difference ignored
    np.testing.assert_allclose(got_frames[2, 4:], 0.0)  # padded frames stay zero


def test_refused_on_negative_threshold(bundle):
    with pytest.raises(VlrtError, match=">= 0"):
        Runtime.load(bundle, skip_similar=-1.0)


def test_embed_reports_encoded_frames(tmp_path, bundle):
    """Real files: a still scene (H.264 noise only) is encoded from one frame, a moving one from
    all; the index agrees with a run without skipping."""
    still = next(s for s, _ in synth.gallery("test") if s.motion == "still")
    moving = next(s for s, _ in synth.gallery("test") if s.motion != "still")
    folder = tmp_path / "videos"
    folder.mkdir()
    synth.write_mp4(folder / "still.mp4", synth.render(still, seed=0))
    synth.write_mp4(folder / "moving.mp4", synth.render(moving, seed=0))
    runs = {}
    for name, extra in [("plain", []), ("skip", ["--skip-similar", "1.0"])]:
        res = subprocess.run([sys.executable, "-m", "vlrt", "embed", str(bundle), str(folder), "-o",
                              str(tmp_path / name), "--json", *extra], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        runs[name] = json.loads(res.stdout)
    # 2 s clips sampled at 1 fps: 2 frames each; the still one is encoded once
    assert runs["skip"]["frames"] == {"sampled": 4, "encoded": 3}
    assert runs["plain"]["frames"] is None  # no frame skipping, no frame counts
    from vlrt import Index

    a, b = Index.open(tmp_path / "plain"), Index.open(tmp_path / "skip")
    assert float((a.embeddings * b.embeddings).sum(1).min()) > 0.999
