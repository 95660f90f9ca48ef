"""Packed frames: the vision tower runs on the real frames of a batch only, and the embeddings
are those of the whole graph over the padded batch."""
import dataclasses
import shutil
import sys

import numpy as np
import pytest
from checkpoint_writers import TINY_C4C, write_clip4clip

from vlrt import Runtime
from vlrt.build import build_engine
from vlrt.export import export_checkpoint
from vlrt.runtime import backends
from vlrt.runtime.bundle import Bundle


@pytest.fixture(scope="module", params=["meanP", "seqTransf", "seqLSTM"])
def bundle(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    ckpt = write_clip4clip(root / "pytorch_model.bin.0", TINY_C4C, seed=3, head=request.param)
    return export_checkpoint(ckpt, root / "b", max_frames=6).bundle


def frames(n=5, t=6, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((n, t, 3, 32, 32)).astype(np.float32)
    mask = np.zeros((n, t), np.float32)
    for i, length in enumerate([1, 6, 3, 2, 6][:n]):
        mask[i, :length] = 1
    pixels[mask == 0] = 0  # padding as the pipeline makes it
    return pixels, mask


class Recording:
    """A runner wrapper that records the pixel batches the tower is given."""

    def __init__(self, runner):
        self.runner, self.shapes = runner, []

    def infer(self, feeds):
        self.shapes.append(feeds["pixels"].shape)
        return self.runner.infer(feeds)


def cosines(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_packed_equals_the_whole_graph(bundle):
    pixels, mask = frames()
    whole = Runtime.load(bundle, pack=False)
    packed = Runtime.load(bundle)
    assert packed.packed and not whole.packed and packed.engine_info["packed"] is True
    tower = packed._runners["video_frames"] = Recording(packed._runners["video_frames"])
    want, want_frames = whole.encode_frames(pixels, mask, return_frames=True)
    got, got_frames = packed.encode_frames(pixels, mask, return_frames=True)
    assert tower.shapes == [(1, int(mask.sum()), 3, 32, 32)]  # 18 real frames of 30 slots
    assert cosines(got, want).min() >= 0.99999
    real = mask > 0
    assert cosines(got_frames[real], want_frames[real]).min() >= 0.99999
    np.testing.assert_array_equal(got_frames[~real], 0.0)


def test_batches_are_packed_per_call(bundle):
    pixels, mask = frames()
    packed = Runtime.load(bundle)
    tower = packed._runners["video_frames"] = Recording(packed._runners["video_frames"])
    packed.encode_frames(pixels, mask, batch_size=2)
    assert [s[1] for s in tower.shapes] == [7, 5, 6]  # (1 + 6), (3 + 2), 6


def test_int8_engine_is_packed(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "b", ignore=shutil.ignore_patterns("engines"))
    built = build_engine(copy, backend="ort-cpu", precision="int8")
    rt = Runtime.load(copy, precision="int8")
    assert rt.engine.key == built.key and rt.packed
    pixels, mask = frames(t=4)
    whole = Runtime.load(copy, precision="int8", pack=False).encode_frames(pixels, mask)
    fp32 = Runtime.load(copy).encode_frames(pixels, mask)
    got = rt.encode_frames(pixels, mask)
    # dynamic int8 scales activations per tensor, and the packed tower batch holds other frames
    # than the padded one: equal to the whole graph within int8's own error, not bit for bit
    assert cosines(got, whole).min() >= 0.999 and cosines(got, fp32).min() >= 0.99


def test_backend_without_split_runs_every_slot(tiny_bundle):
    whole_only = dataclasses.replace(backends.get("ort-cpu"), split_video=None)
    rt = Runtime(Bundle.open(tiny_bundle), backend=whole_only)
    assert not rt.packed and "not split" in rt.pack_note
    pixels, mask = frames(n=2, t=4)
    assert rt.encode_frames(pixels, mask).shape == (2, TINY_C4C.embed_dim)


def test_without_onnx_every_slot_runs_and_says_why(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached split to fall back on
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    rt = Runtime.load(tiny_bundle)
    assert not rt.packed and "pip install 'vlrt[build]'" in rt.pack_note
    pixels, mask = frames(n=2, t=4)
    assert rt.encode_frames(pixels, mask).shape == (2, TINY_C4C.embed_dim)


def spinning(runner) -> str:
    runner.activate()
    try:
        return runner._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, which spins
        return "default"


def test_cpu_sessions_do_not_spin(bundle):
    """A runtime's ONNX Runtime CPU sessions block when idle instead of spinning, packed or not:
    spinning workers take the cores from the other sessions and the decode threads."""
    packed, whole = Runtime.load(bundle, threads=2), Runtime.load(bundle, threads=2, pack=False)
    assert packed.packed and not whole.packed
    runners = [packed._runners[k] for k in ("video_frames", "video_head", "text")] + [whole._runners["video"]]
    assert [spinning(r) for r in runners] == ["0"] * 4
