"""GpuPipeline end to end on the embedded default model and the demo's held-out clips: the same
embeddings and the same ranking as the CPU path (decode -> sample -> PIL preprocessing -> ONNX
Runtime fp32).

On the CPU (device "cpu", fp32) the two paths differ only in the preprocessing implementation;
on a GPU, also in NVDEC + the GPU colour conversion and fp16. Ranking: every caption's top video
is the CPU path's, wherever the CPU path's top two scores are more than 0.01 apart (a closer pair
is a tie that fp16 may order either way, and is counted, not asserted).
"""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from video_assets import write_video

from vlrt import Runtime
from vlrt.assets import default_checkpoint as shipped_model
from vlrt.bench.quality import write_gallery
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint
from vlrt.gpu.encode import GpuEncoder
from vlrt.gpu.pipeline import GpuClip, GpuPipeline
from vlrt.runtime.pipeline import ClipLoader, encode_stream


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-demo")
    paths, scenes = write_gallery(root / "videos", 48)
    rt = Runtime.load(export_checkpoint(shipped_model(), root / "bundle").bundle, backend="ort-cpu")
    encode = lambda px, m: rt.encode_frames(px, m, return_frames=True)  # noqa: E731
    cpu = np.stack([r.embedding for r in encode_stream(paths, ClipLoader(rt.bundle.manifest), encode, batch_size=16)])
    text = rt.encode_text([s.caption for s in scenes])
    return paths, text, cpu


def check_same_ranking(text, gpu, cpu):
    cpu_scores, gpu_scores = text @ cpu.T, text @ gpu.T  # (captions, videos)
    top2 = np.sort(cpu_scores, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.01
    agree = cpu_scores.argmax(1) == gpu_scores.argmax(1)
    assert clear.sum() >= len(clear) // 2, "too few clear-cut captions for the check to mean anything"
    assert agree[clear].all(), np.flatnonzero(clear & ~agree)
    return float(agree.mean())


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cpu_device_equals_the_cpu_path(demo):
    paths, text, cpu = demo
    enc = GpuEncoder.from_checkpoint(shipped_model(), device="cpu", precision="fp32")
    results = list(GpuPipeline(enc, batch_size=8, workers=2).run(paths[:24]))
    assert all(r.error is None and r.stats.decoder == "cpu" and "device is cpu" in r.stats.fallback for r in results)
    gpu = np.stack([r.embedding for r in results])
    assert cosines(gpu, cpu[:24]).min() >= 0.99999
    check_same_ranking(text[:24], gpu, cpu[:24])


def test_bad_files_are_reported_and_the_rest_embedded(demo, tmp_path):
    paths, _, cpu = demo
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    enc = GpuEncoder.from_checkpoint(shipped_model(), device="cpu", precision="fp32")
    results = list(GpuPipeline(enc, batch_size=2, workers=2).run([paths[0], str(empty), paths[1]]))
    assert [r.path for r in results] == [paths[0], str(empty), paths[1]]
    assert results[1].error == f"{empty}: file is empty (0 bytes)" and results[1].embedding is None
    assert cosines(np.stack([results[0].embedding, results[2].embedding]), cpu[:2]).min() >= 0.99999


def test_frames_of_other_sizes_and_rotations_go_through(tmp_path):
    """A 320x180 rotated H.264 video: resized and cropped to the model's 64x64 like the CPU path."""
    path = tmp_path / "rot.mp4"
    write_video(path, codec="libx264", width=320, height=180, frames=48, rotation=90)
    enc = GpuEncoder.from_checkpoint(shipped_model(), device="cpu", precision="fp32")
    (result,) = GpuPipeline(enc).run([str(path)])
    assert result.error is None and result.frames.shape == (8, enc.embed_dim)
    root = tmp_path / "b"
    rt = Runtime.load(export_checkpoint(shipped_model(), root).bundle, backend="ort-cpu")
    assert cosines(result.embedding[None], rt.encode_videos([str(path)])).min() >= 0.99999


class _FakeEncoder:
    """encode_frames on torch tensors: a clip's embedding is its first pixel value (D = 3)."""

    settings = {"max_frames": 2, "sampling": {"rule": "segment_middle"}, "preprocessing": {}}
    device, precision, embed_dim = torch.device("cpu"), "fp32", 3

    def encode_frames(self, pixels, mask, return_frames=True):
        return pixels[:, 0, :, 0, 0], pixels[:, :, :, 0, 0]  # (B, D), (B, T, D)


def test_errors_and_clips_in_flight_stay_bounded():
    """The GPU pipeline is encode_stream: 600 paths, 4 in 5 bad in runs of 40, keep both of its
    bounds (clips loaded and not yet yielded; paths read ahead of the results)."""
    batch, in_flight, n = 4, 6, 600
    lock = threading.Lock()
    count = {"pulled": 0, "yielded": 0, "ahead": 0, "live": 0, "peak_live": 0}

    def paths():
        for i in range(n):
            count["pulled"] += 1
            count["ahead"] = max(count["ahead"], count["pulled"] - count["yielded"])
            yield str(i)

    def loader(path):
        if int(path) % 50 < 40:
            raise VlrtError(f"{path}: bad")
        with lock:
            count["live"] += 1
            count["peak_live"] = max(count["peak_live"], count["live"])
        pixels = torch.full((2, 3, 1, 1), float(path))  # (T, 3, S, S)
        return GpuClip(path, pixels, 2, [0, 1], None, None)

    pipe = GpuPipeline(_FakeEncoder(), decoder=SimpleNamespace(), preprocess=SimpleNamespace(),
                       batch_size=batch, workers=3, in_flight=in_flight)
    pipe.loader = loader
    results = []
    for r in pipe.run(paths()):
        count["yielded"] += 1
        with lock:
            count["live"] -= r.clip is not None
        results.append((r.path, r.error, None if r.embedding is None else float(r.embedding[0])))
    assert results == [(str(i), f"{i}: bad", None) if i % 50 < 40 else (str(i), None, i) for i in range(n)]
    assert batch <= count["peak_live"] <= in_flight + batch - 1
    assert in_flight <= count["ahead"] <= in_flight + 2 * batch - 1


@pytest.mark.cuda
def test_cuda_fp16_pipeline_gives_the_cpu_paths_ranking(demo):
    paths, text, cpu = demo
    results = list(GpuPipeline(GpuEncoder.from_checkpoint(shipped_model()), batch_size=16).run(paths))
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    assert all(r.stats.decoder == "nvdec" for r in results), {r.stats.fallback for r in results}
    gpu = np.stack([r.embedding for r in results])
    assert cosines(gpu, cpu).min() >= 0.999
    check_same_ranking(text, gpu, cpu)
