"""Videos -> embeddings on the GPU: decode (NVDEC) -> sample -> preprocess -> encode, with the
frames on the GPU from the decoder to the model.

The same two units of work as the CPU pipeline (`vlrt.runtime.pipeline`), each a plain callable a
worker builds once: `GpuClipLoader` (one path -> sampled, preprocessed frames on the device) and
`GpuEncoder.encode_frames` (a batch -> embeddings). `GpuPipeline.run` is the CPU path's own
scheduler, `vlrt.runtime.pipeline.encode_stream` (loaders on a thread pool -- PyAV releases the GIL
while demuxing and decoding, NVDEC runs many decode sessions at once -- full batches to the encoder
on the calling thread, bounded clips in flight and bounded runs of errors), given GPU clips and a
torch batcher. Sampling is the CPU path's own `sample_indices`, so both paths see the same frame
indices.

Streams: a loader decodes and preprocesses a clip on its thread's decode stream and records an
event there; the batcher, on the encoder's stream, waits for each clip's event before it reads the
clip, and the encoder runs on that stream too. Decoding threads and the encoder thus overlap, and
nothing waits on the legacy default stream, where NVDEC's copies are queued.

UNVERIFIED ON A GPU: the pipeline runs end to end on the CPU here (device "cpu": CPU decoding,
PyTorch preprocessing and encoding), which is how its plumbing is tested; the CUDA run is the GPU
session's job (docs/gpu.md).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from vlrt.errors import VlrtError
from vlrt.gpu.decode import Fallback, GpuDecoder, GpuDecodeStats
from vlrt.gpu.device import on_stream, record_event, require_torch, wait_event
from vlrt.gpu.encode import GpuEncoder
from vlrt.gpu.preprocess import GpuPreprocess
from vlrt.runtime.pipeline import encode_stream, prefix_mask, sample_indices
from vlrt.runtime.video import VideoInfo, probe


@dataclasses.dataclass
class GpuClip:
    path: str
    pixels: Any  # (T, 3, S, S) on the device, T = max_frames, zero after n_frames
    n_frames: int
    indices: list[int]
    info: VideoInfo
    stats: GpuDecodeStats
    ready: Any = None  # event on the decode stream after the clip's last kernel; None on the CPU


@dataclasses.dataclass
class GpuResult:
    path: str
    embedding: np.ndarray | None = None  # (D,) float32
    frames: np.ndarray | None = None  # (T, D) float32, zero after the clip's frames
    clip: GpuClip | None = None
    error: str | None = None

    @property
    def stats(self) -> GpuDecodeStats | None:
        return self.clip.stats if self.clip is not None else None


class GpuClipLoader:
    """Decode, sample and preprocess one video as `settings` (a manifest, or a checkpoint's
    settings: max_frames, sampling, preprocessing) say, leaving the frames on the decoder's device."""

    def __init__(self, settings: dict[str, Any], *, decoder: GpuDecoder,
                 preprocess: GpuPreprocess | None = None) -> None:
        self.sampling = settings["sampling"]
        self.max_frames = int(settings["max_frames"])
        self.decoder = decoder
        self.preprocess = preprocess or GpuPreprocess.from_manifest(settings["preprocessing"])

    def __call__(self, path: str | os.PathLike) -> GpuClip:
        torch = require_torch()
        path = os.fspath(path)
        info = probe(path)
        indices = sample_indices(info, self.sampling, self.max_frames)
        if not indices:
            raise VlrtError(f"{path}: no frames to sample")
        stats = GpuDecodeStats()
        stream = self.decoder.stream()
        with on_stream(stream):  # the whole clip on this thread's decode stream
            frames = self.decoder.read_frames(path, indices, info=info, stats=stats)  # n x (3, H, W) uint8
            pixels = self.preprocess.frames_list(frames)  # (n, 3, S, S)
            size = self.preprocess.pre.size
            padded = torch.zeros((self.max_frames, 3, size, size), dtype=pixels.dtype, device=pixels.device)
            padded[:len(indices)] = pixels  # (T, 3, S, S)
        return GpuClip(path, padded, len(indices), indices, info, stats, ready=record_event(stream))


class GpuPipeline:
    """Decode -> sample -> preprocess -> encode for many videos, frames kept on the device."""

    def __init__(self, encoder: GpuEncoder, *, decoder: GpuDecoder | None = None,
                 preprocess: GpuPreprocess | None = None, fallback: Fallback = "cpu",
                 batch_size: int = 16, workers: int = 4, in_flight: int | None = None) -> None:
        if batch_size < 1 or workers < 1:
            raise VlrtError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
        missing = [k for k in ("max_frames", "sampling", "preprocessing") if k not in encoder.settings]
        if missing:
            raise VlrtError(f"the encoder's settings lack {', '.join(missing)}; build it with "
                            "GpuEncoder.from_checkpoint or pass settings=")
        self.encoder = encoder
        decoder = decoder or GpuDecoder(device=encoder.device, fallback=fallback)
        torch = require_torch()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(encoder.precision, torch.float32)
        preprocess = preprocess or GpuPreprocess.from_manifest(encoder.settings["preprocessing"], dtype=dtype)
        self.loader = GpuClipLoader(encoder.settings, decoder=decoder, preprocess=preprocess)
        self.batch_size, self.workers = batch_size, workers
        self.in_flight = in_flight or max(2 * batch_size, 2 * workers)

    def run(self, paths: Iterable[str | os.PathLike]) -> Iterator[GpuResult]:
        """One GpuResult per path, in input order; a bad video yields its error and the rest go on.
        Bounds on clips in flight and paths read ahead: `encode_stream`'s."""
        return encode_stream(map(os.fspath, paths), self.loader, self._encode, batch_size=self.batch_size,
                             workers=self.workers, in_flight=self.in_flight, result=GpuResult,
                             collate=self._collate)

    def encode_videos(self, paths: Iterable[str | os.PathLike]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings; VlrtError naming the first file that fails."""
        out = []
        for result in self.run(paths):
            if result.error:
                raise VlrtError(result.error)
            out.append(result.embedding)
        return np.stack(out) if out else np.zeros((0, self.encoder.embed_dim), np.float32)

    def _collate(self, clips: list[GpuClip]) -> tuple[Any, Any]:
        """A batch: pixels (B, T, 3, S, S) stacked on the encoder's stream once each clip's
        decode-side work is done, and the prefix mask (B, T) on the host, where the encoder checks
        it without waiting for the device."""
        torch = require_torch()
        stream = self.encoder.stream
        with on_stream(stream):
            for c in clips:
                wait_event(stream, c.ready, [c.pixels])
            pixels = torch.stack([c.pixels for c in clips])  # (B, T, 3, S, S)
        mask = torch.from_numpy(prefix_mask([c.n_frames for c in clips], pixels.shape[1]))  # (B, T)
        return pixels, mask

    def _encode(self, pixels: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
        # On the encoder's stream itself: no other stream waits for the encoder, and the copies to
        # the host wait for it (they synchronise with that stream).
        with on_stream(self.encoder.stream):
            video, frames = self.encoder.encode_frames(pixels, mask, return_frames=True)  # (B, D), (B, T, D)
            return video.cpu().numpy(), frames.cpu().numpy()
