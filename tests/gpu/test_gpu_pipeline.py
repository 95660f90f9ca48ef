"""GpuPipeline end to end on the embedded default model and the demo's held-out clips: the same
embeddings and the same ranking as the CPU path (decode -> sample -> PIL preprocessing -> ONNX
Runtime fp32).

On the CPU (device "cpu", fp32) the two paths differ only in the preprocessing implementation;
on a GPU, also in NVDEC + the GPU colour conversion and fp16. Ranking: every caption's top video
is the CPU path's, wherever the CPU path's top two scores are more than 0.01 apart (a closer pair
is a tie that fp16 may order either way, and is counted, not asserted).

The ordering rules are checked on the CPU with stand-ins for the driver and torch.cuda
(tests/gpu/cuda_standins.py): building the pipeline sets the CUDA primary context's flags before
anything touches CUDA, a clip records an event on its decode stream, and the encoder's stream
waits for every clip's event before the batch is read.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cuda_standins import BLOCKING_SYNC, FakeStream, install
from stream_bounds import BATCH, IN_FLIGHT, BoundedCorpus
from video_assets import write_video

from vlrt import Runtime
from vlrt.assets import default_checkpoint as shipped_model
from vlrt.bench.quality import write_gallery
from vlrt.export import export_checkpoint
from vlrt.families import get_family
from vlrt.gpu.encode import GpuEncoder
from vlrt.gpu.pipeline import GpuClip, GpuClipLoader, GpuPipeline
from vlrt.gpu.preprocess import GpuPreprocess
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
    device, precision, embed_dim, stream = torch.device("cpu"), "fp32", 3, None

    def encode_frames(self, pixels, mask, return_frames=True):
        return pixels[:, 0, :, 0, 0], pixels[:, :, :, 0, 0]  # (B, D), (B, T, D)


def test_errors_and_clips_in_flight_stay_bounded():
    """The GPU pipeline is encode_stream: 600 paths, 4 in 5 bad in runs of 40, keep both of its
    bounds (clips loaded and not yet yielded; paths read ahead of the results)."""
    def clip(path):
        pixels = torch.full((2, 3, 1, 1), float(path))  # (T, 3, S, S)
        return GpuClip(path, pixels, 2, [0, 1], None, None)

    corpus = BoundedCorpus(clip)
    pipe = GpuPipeline(_FakeEncoder(), decoder=SimpleNamespace(), preprocess=SimpleNamespace(),
                       batch_size=BATCH, workers=3, in_flight=IN_FLIGHT)
    pipe.loader = corpus.loader
    corpus.check(pipe.run(corpus.paths()))


SETTINGS = {"max_frames": 4, "max_words": 32, "sampling": dict(get_family("clip4clip").sampling),
            "preprocessing": get_family("clip4clip").preprocessing(32)}


class _CudaModel:
    """A model whose move to the GPU is written to the log (the first CUDA tensors it would make)."""

    config = SimpleNamespace(embed_dim=8)

    def __init__(self, log):
        self.log = log

    def to(self, device):
        self.log.append(f"model to {device}")
        return self

    def eval(self):
        return self


@pytest.mark.parametrize("device", [None, "cuda:0"])
def test_building_the_pipeline_sets_the_context_flags_before_cuda_is_touched(monkeypatch, device):
    """FFmpeg shares torch's CUDA context with NVDEC only if its flags were set first."""
    log = []
    install(monkeypatch, log, flags=0)
    enc = GpuEncoder(_CudaModel(log), device=device, precision="fp16", settings=SETTINGS)
    pipe = GpuPipeline(enc, batch_size=2, workers=1)
    flags = log.index(f"set flags {BLOCKING_SYNC:#x}")
    touched = [i for i, entry in enumerate(log) if entry in ("cuda init", "model to cuda:0") or entry.startswith("new ")]
    assert touched and flags < min(touched), log
    assert log.count(f"set flags {BLOCKING_SYNC:#x}") == 1  # later calls find the flags set
    assert pipe.loader.decoder.device == enc.device == torch.device("cuda", 0)
    assert "new stream1 (priority -1)" in log and enc.stream.name == "stream1"  # never a decode thread's


class _StreamDecoder:
    """read_frames on the CPU that says which stream was current while it ran."""

    def __init__(self, log, cuda, stream):
        self.log, self.cuda, self._stream = log, cuda, stream

    def stream(self):
        return self._stream

    def read_frames(self, path, indices, *, info, stats):
        self.log.append(f"decode {path} on {self.cuda.current_stream().name}")
        return [torch.full((3, 40, 60), 7 * i, dtype=torch.uint8) for i in indices]


def test_a_clip_is_made_on_its_decode_stream_and_marked_ready(monkeypatch, tmp_path):
    log = []
    cuda, _ = install(monkeypatch, log)
    path = tmp_path / "v.mp4"
    write_video(path, codec="libx264", width=160, height=96, frames=48)
    decoder = _StreamDecoder(log, cuda, FakeStream(log, "decode"))
    preprocess = GpuPreprocess.from_manifest(SETTINGS["preprocessing"], dtype=torch.float32)
    clip = GpuClipLoader(SETTINGS, decoder=decoder, preprocess=preprocess)(str(path))
    assert log == [f"decode {path} on decode", "decode records event1@decode"]
    assert clip.ready.name == "event1@decode" and clip.pixels.shape == (4, 3, 32, 32)
    assert cuda.current_stream() is cuda.legacy


class _StreamEncoder(_FakeEncoder):
    def __init__(self, log, cuda):
        self.log, self.cuda, self.stream = log, cuda, FakeStream(log, "encoder")

    def encode_frames(self, pixels, mask, return_frames=True):
        assert mask.device.type == "cpu" and mask.sum(1).tolist() == [2.0] * len(mask)  # checked on the host
        self.log.append(f"encode {len(pixels)} on {self.cuda.current_stream().name}")
        return super().encode_frames(pixels, mask)


def test_the_encoder_stream_waits_for_every_clip_of_its_batch(monkeypatch):
    log = []
    cuda, _ = install(monkeypatch, log)
    producer = FakeStream(log, "decode")

    def loader(path):
        ready = cuda.Event()
        ready.record(producer)
        return GpuClip(path, torch.full((2, 3, 1, 1), float(path)), 2, [0, 1], None, None, ready=ready)

    pipe = GpuPipeline(_StreamEncoder(log, cuda), decoder=SimpleNamespace(), preprocess=SimpleNamespace(),
                       batch_size=2, workers=1, in_flight=2)
    pipe.loader = loader
    results = list(pipe.run(["1", "2", "3"]))
    assert [float(r.embedding[0]) for r in results] == [1.0, 2.0, 3.0]
    encodes = [i for i, entry in enumerate(log) if entry.startswith("encode ")]
    assert [log[i] for i in encodes] == ["encode 2 on encoder", "encode 1 on encoder"]
    for event, batch in (("event1@decode", 0), ("event2@decode", 0), ("event3@decode", 1)):
        assert log.index(f"decode records {event}") < log.index(f"encoder waits for {event}") < encodes[batch]
    assert log.count("(2, 3, 1, 1) used on encoder") == 3  # the allocator keeps them until the encoder is done


@pytest.mark.cuda
def test_cuda_fp16_pipeline_gives_the_cpu_paths_ranking(demo):
    paths, text, cpu = demo
    results = list(GpuPipeline(GpuEncoder.from_checkpoint(shipped_model()), batch_size=16).run(paths))
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    assert all(r.stats.decoder == "nvdec" for r in results), {r.stats.fallback for r in results}
    gpu = np.stack([r.embedding for r in results])
    assert cosines(gpu, cpu).min() >= 0.999
    check_same_ranking(text, gpu, cpu)
